#include "meshlib/discovery/resolver.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/core/log.h"

namespace meshlib::discovery {

using json = nlohmann::json;

void ResolverRegistry::Register(std::unique_ptr<ResolverFactory> factory) {
  core::MutexLock lock(&mu_);
  std::string kind = factory->kind();
  factories_[kind] = std::move(factory);
}

const ResolverFactory* ResolverRegistry::Find(absl::string_view kind) const {
  core::MutexLock lock(&mu_);
  auto it = factories_.find(kind);
  return it == factories_.end() ? nullptr : it->second.get();
}

std::vector<std::string> ResolverRegistry::Kinds() const {
  core::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [k, v] : factories_) out.push_back(k);
  return out;
}

absl::Status ResolverRegistry::ValidateDiscovery(const json& discovery,
                                                 absl::string_view path) const {
  if (!discovery.is_object() || discovery.size() != 1) {
    return core::FieldError(path, absl::StrCat("must be an object with exactly one kind (",
                                                 absl::StrJoin(Kinds(), ", "), ")"));
  }
  auto it = discovery.begin();
  std::string kind_path = core::JoinPath(path, it.key());
  const ResolverFactory* f = Find(it.key());
  if (f == nullptr) {
    return core::FieldError(kind_path, absl::StrCat("unknown discovery kind (known: ",
                                                      absl::StrJoin(Kinds(), ", "), ")"));
  }
  return f->Validate(it.value(), kind_path);
}

// Receives a resolver's reports on the control loop.
class Discovery::Sink final : public ResolverSink {
 public:
  explicit Sink(Discovery* d) : d_(d) {}

  void Publish(std::vector<Endpoint> endpoints) override {
    std::shared_ptr<const EndpointSet> set = EndpointSet::Create(std::move(endpoints));
    std::vector<std::shared_ptr<Subscriber>> subs;
    {
      core::MutexLock lock(&d_->mu_);
      d_->current_ = set;
      ++d_->stats_.updates;
      d_->stats_.last_update = absl::Now();
      for (const auto& [id, s] : d_->subscribers_) subs.push_back(s);
    }
    d_->cv_.notify_all();
    if (core::LogEnabled(core::LogLevel::kDebug)) {
      core::Log(core::LogLevel::kDebug, absl::StrCat("discovery ", d_->service_, ": ",
                                                     set->size(), " endpoints from ", d_->kind_));
    }
    for (const auto& s : subs) {
      s->delivered = set.get();
      s->cb(set);
    }
  }

  void ReportError(absl::Status error) override {
    {
      core::MutexLock lock(&d_->mu_);
      ++d_->stats_.errors;
      d_->stats_.last_error = error;
      d_->stats_.last_error_time = absl::Now();
    }
    core::Log(core::LogLevel::kWarning,
              absl::StrCat("discovery ", d_->service_, " (", d_->kind_, "): ", error.ToString(),
                           "; keeping the last good endpoint set"));
  }

 private:
  Discovery* const d_;
};

Discovery::Discovery(std::string service, std::string kind, runtime::EventLoop* loop)
    : service_(std::move(service)), kind_(std::move(kind)), loop_(loop) {}

absl::StatusOr<std::unique_ptr<Discovery>> Discovery::Create(std::string service,
                                                             const json& discovery,
                                                             runtime::EventLoop* loop,
                                                             std::string path,
                                                             const ResolverRegistry& registry,
                                                             uint64_t seed) {
  if (loop == nullptr) return absl::InvalidArgumentError("discovery needs a control loop");
  if (path.empty()) path = absl::StrCat("services.", service, ".discovery");
  if (auto st = registry.ValidateDiscovery(discovery, path); !st.ok()) return st;
  auto it = discovery.begin();
  const ResolverFactory* factory = registry.Find(it.key());
  ResolverArgs args;
  args.service = service;
  args.config = it.value();
  args.path = core::JoinPath(path, it.key());
  args.loop = loop;
  args.seed = seed;
  auto resolver = factory->Create(args);
  if (!resolver.ok()) return resolver.status();
  std::unique_ptr<Discovery> d(new Discovery(std::move(service), it.key(), loop));
  d->sink_ = std::make_unique<Sink>(d.get());
  d->resolver_ = *std::move(resolver);
  Discovery* raw = d.get();
  loop->Post([raw] { raw->resolver_->Start(raw->sink_.get()); });
  return d;
}

Discovery::~Discovery() {
  // The resolver and every pending delivery run on the loop: finishing there
  // means none is running once this returns.
  loop_->RunAndWait([this] { resolver_.reset(); });
}

std::shared_ptr<const EndpointSet> Discovery::Current() const {
  core::MutexLock lock(&mu_);
  return current_;
}

DiscoveryStats Discovery::stats() const {
  core::MutexLock lock(&mu_);
  return stats_;
}

uint64_t Discovery::Subscribe(Callback cb) {
  auto sub = std::make_shared<Subscriber>();
  sub->cb = std::move(cb);
  uint64_t id;
  {
    core::MutexLock lock(&mu_);
    id = next_id_++;
    subscribers_.emplace(id, sub);
  }
  loop_->Post([this, id] {
    std::shared_ptr<Subscriber> s;
    std::shared_ptr<const EndpointSet> set;
    {
      core::MutexLock lock(&mu_);
      auto it = subscribers_.find(id);
      if (it == subscribers_.end() || current_ == nullptr) return;
      s = it->second;
      set = current_;
    }
    if (s->delivered == set.get()) return;  // a Publish got there first
    s->delivered = set.get();
    s->cb(set);
  });
  return id;
}

void Discovery::Unsubscribe(uint64_t id) {
  auto erase = [this, id] {
    core::MutexLock lock(&mu_);
    subscribers_.erase(id);
  };
  if (loop_->InExecutorThread()) {
    erase();
  } else {
    loop_->RunAndWait(erase);
  }
}

bool Discovery::WaitForEndpoints(absl::Duration timeout) const {
  std::unique_lock<std::mutex> lock(mu_.native());
  return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                      [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return current_ != nullptr; });
}

}  // namespace meshlib::discovery
