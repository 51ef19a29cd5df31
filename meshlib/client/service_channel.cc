#include "meshlib/client/service_channel.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/core/log.h"

namespace meshlib::client {

namespace {
constexpr absl::Duration kDrainCheck = absl::Milliseconds(50);
}

ServiceChannel::ServiceChannel(std::string service, ServiceChannelOptions options)
    : service_(std::move(service)), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<ServiceChannel>> ServiceChannel::Create(
    std::string service, const nlohmann::json& discovery, ServiceChannelOptions options) {
  if (auto st = options.channel.Validate(); !st.ok()) return st;
  if (options.drain_timeout <= absl::ZeroDuration()) {
    options.drain_timeout = std::min(options.channel.default_timeout, absl::Minutes(5));
  }
  if (options.channel.runtime == nullptr) {
    auto rt = runtime::Runtime::Create(options.channel.io_threads, absl::StrCat(service, "-io"),
                                       runtime::EventLoopOptions{options.channel.busy_poll});
    if (!rt.ok()) return rt.status();
    options.channel.runtime = *std::move(rt);
  }
  std::unique_ptr<ServiceChannel> sc(new ServiceChannel(service, options));
  if (options.control_loop != nullptr) {
    sc->control_ = options.control_loop;
  } else {
    auto loop = runtime::EventLoop::Create(absl::StrCat(service, "-ctl"));
    if (!loop.ok()) return loop.status();
    sc->control_ = std::shared_ptr<runtime::EventLoop>(std::move(*loop));
  }
  auto d = discovery::Discovery::Create(service, discovery, sc->control_.get(),
                                        options.config_path,
                                        discovery::ResolverRegistry::Global(), options.seed);
  if (!d.ok()) return d.status();
  sc->discovery_ = *std::move(d);
  ServiceChannel* raw = sc.get();
  sc->subscription_ = sc->discovery_->Subscribe(
      [raw](std::shared_ptr<const discovery::EndpointSet> set) { raw->Apply(std::move(set)); });
  return sc;
}

ServiceChannel::~ServiceChannel() {
  discovery_->Unsubscribe(subscription_);
  discovery_.reset();
  control_->RunAndWait([this] {
    control_->Cancel(drain_timer_);
    // Channels close here, off the request path; calls still in flight on
    // them complete with CANCELLED.
    std::atomic_store(&snapshot_, std::shared_ptr<const Snapshot>());
    channels_.clear();
    draining_.clear();
  });
}

void ServiceChannel::Apply(std::shared_ptr<const discovery::EndpointSet> set) {
  auto snap = std::make_shared<Snapshot>();
  snap->channels.reserve(set->size());
  std::map<std::string, std::shared_ptr<Channel>, std::less<>> next;
  for (const discovery::Endpoint& e : set->endpoints()) {
    std::shared_ptr<Channel> ch;
    if (auto it = channels_.find(e.address); it != channels_.end()) {
      ch = it->second;
    } else {
      auto created = Channel::Create(e.address, options_.channel);
      if (!created.ok()) {
        // Discovery validated the address; this is a resource failure.
        core::Log(core::LogLevel::kWarning,
                  absl::StrCat(service_, ": cannot open a channel to ", e.address, ": ",
                               created.status().ToString()));
        continue;
      }
      ch = std::shared_ptr<Channel>(std::move(*created));
      ch->Connect();
    }
    snap->channels.push_back(ch);
    next.emplace(e.address, std::move(ch));
  }
  // Keep the set consistent with the channels actually held.
  if (snap->channels.size() != set->size()) {
    std::vector<discovery::Endpoint> kept;
    for (const discovery::Endpoint& e : set->endpoints()) {
      if (next.count(e.address)) kept.push_back(e);
    }
    set = discovery::EndpointSet::Create(std::move(kept));
  }
  snap->set = std::move(set);
  for (auto& [addr, ch] : channels_) {
    if (!next.count(addr)) draining_.push_back({ch, absl::Now() + options_.drain_timeout});
  }
  channels_ = std::move(next);
  {
    core::MutexLock lock(&mu_);
    std::atomic_store(&snapshot_, std::shared_ptr<const Snapshot>(std::move(snap)));
  }
  cv_.notify_all();
  updates_.fetch_add(1, std::memory_order_relaxed);
  CollectDrained();
}

void ServiceChannel::CollectDrained() {
  absl::Time now = absl::Now();
  // A draining channel is closed once nothing can start a call on it (no
  // snapshot holds it: use_count 1) and none is outstanding, or when its
  // drain time is up.
  draining_.erase(std::remove_if(draining_.begin(), draining_.end(),
                                 [now](const Draining& d) {
                                   return (d.channel.use_count() == 1 &&
                                           d.channel->CallsOutstanding() == 0) ||
                                          now >= d.deadline;
                                 }),
                  draining_.end());
  draining_count_.store(draining_.size(), std::memory_order_relaxed);
  if (!draining_.empty() && !drain_timer_.valid()) {
    drain_timer_ = control_->RunAfter(kDrainCheck, [this] {
      drain_timer_ = {};
      CollectDrained();
    });
  }
}

Channel* ServiceChannel::Pick(const Snapshot& s) {
  size_t n = s.channels.size();
  uint32_t start = next_.fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < n; ++i) {
    const auto& ch = s.channels[(start + i) % n];
    if (ch->ReadyConnections() > 0) return ch.get();
  }
  return s.channels[start % n].get();  // none ready yet: the call waits for a connect
}

CallResult ServiceChannel::NoEndpoints() const {
  discovery::DiscoveryStats ds = discovery_->stats();
  std::string why = ds.updates == 0 ? "discovery has produced no endpoints yet"
                                    : "the endpoint set is empty";
  if (!ds.last_error.ok()) absl::StrAppend(&why, " (last discovery error: ", ds.last_error.message(), ")");
  CallResult r;
  r.status = absl::UnavailableError(absl::StrCat("service ", service_, ": ", why));
  r.not_processed = true;
  return r;
}

namespace {

// Whether a failed attempt may go once more to another endpoint without any
// retry policy: the request provably never reached a handler (refused by a
// draining server, connection never established), so even a call that is
// not idempotent is safe to send again. gRPC calls this a transparent retry.
bool TransparentlyRetryable(const CallResult& r) { return !r.status.ok() && r.not_processed; }

absl::Duration Remaining(const CallOptions& o, absl::Duration default_timeout, absl::Time start) {
  absl::Duration total = o.timeout > absl::ZeroDuration() ? o.timeout : default_timeout;
  return total - (absl::Now() - start);
}

}  // namespace

Channel* ServiceChannel::PickOther(const Snapshot& s, const std::string& avoid) {
  size_t n = s.channels.size();
  uint32_t start = next_.fetch_add(1, std::memory_order_relaxed);
  Channel* fallback = nullptr;
  for (size_t i = 0; i < n; ++i) {
    Channel* ch = s.channels[(start + i) % n].get();
    if (ch->address() == avoid) continue;
    if (ch->ReadyConnections() > 0) return ch;
    if (fallback == nullptr) fallback = ch;
  }
  return fallback;
}

CallHandle ServiceChannel::Call(absl::string_view method, absl::string_view request,
                                const CallOptions& options, CallCallback done) {
  std::shared_ptr<const Snapshot> s = std::atomic_load(&snapshot_);
  if (s == nullptr || s->channels.empty()) {
    done(NoEndpoints());
    return CallHandle();
  }
  Channel* first = Pick(*s);
  if (s->channels.size() == 1) return first->Call(method, request, options, std::move(done));
  // Keep what a second attempt needs; only used when the first is refused.
  struct Retry {
    std::string method, request, first_endpoint;
    CallOptions options;
    absl::Time start;
  };
  auto retry = std::make_shared<Retry>(
      Retry{std::string(method), std::string(request), first->address(), options, absl::Now()});
  return first->Call(
      method, request, options,
      [this, retry, done = std::move(done)](CallResult r) mutable {
        if (!TransparentlyRetryable(r)) return done(std::move(r));
        std::shared_ptr<const Snapshot> now = std::atomic_load(&snapshot_);
        Channel* other = now ? PickOther(*now, retry->first_endpoint) : nullptr;
        absl::Duration left = Remaining(retry->options, options_.channel.default_timeout,
                                        retry->start);
        if (other == nullptr || left <= absl::ZeroDuration()) return done(std::move(r));
        transparent_retries_.fetch_add(1, std::memory_order_relaxed);
        retry->options.timeout = left;
        other->Call(retry->method, retry->request, retry->options, std::move(done));
      });
}

CallResult ServiceChannel::CallBlocking(absl::string_view method, absl::string_view request,
                                        const CallOptions& options) {
  std::shared_ptr<const Snapshot> s = std::atomic_load(&snapshot_);
  if (s == nullptr || s->channels.empty()) return NoEndpoints();
  absl::Time start = absl::Now();
  Channel* first = Pick(*s);
  CallResult r = first->CallBlocking(method, request, options);
  if (!TransparentlyRetryable(r) || s->channels.size() == 1) return r;
  s = std::atomic_load(&snapshot_);
  Channel* other = s ? PickOther(*s, first->address()) : nullptr;
  absl::Duration left = Remaining(options, options_.channel.default_timeout, start);
  if (other == nullptr || left <= absl::ZeroDuration()) return r;
  transparent_retries_.fetch_add(1, std::memory_order_relaxed);
  CallOptions again = options;
  again.timeout = left;
  return other->CallBlocking(method, request, again);
}

bool ServiceChannel::WaitForEndpoints(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_.native());
  return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] {
    auto s = std::atomic_load(&snapshot_);
    return s != nullptr && !s->channels.empty();
  });
}

std::vector<std::string> ServiceChannel::Endpoints() const {
  std::vector<std::string> out;
  auto s = std::atomic_load(&snapshot_);
  if (s == nullptr) return out;
  for (const auto& e : s->set->endpoints()) out.push_back(e.address);
  return out;
}

ServiceChannelStats ServiceChannel::stats() const {
  ServiceChannelStats st;
  st.endpoint_updates = updates_.load(std::memory_order_relaxed);
  auto s = std::atomic_load(&snapshot_);
  st.endpoints = s ? s->channels.size() : 0;
  st.draining = draining_count_.load(std::memory_order_relaxed);
  st.transparent_retries = transparent_retries_.load(std::memory_order_relaxed);
  st.discovery = discovery_->stats();
  return st;
}

}  // namespace meshlib::client
