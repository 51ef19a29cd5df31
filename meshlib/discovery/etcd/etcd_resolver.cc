#include "meshlib/discovery/etcd/etcd_resolver.h"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/core/backoff.h"
#include "meshlib/etcd/etcd_client.h"
#include "meshlib/transport/socket.h"

namespace meshlib::discovery {
namespace {

using json = nlohmann::json;
using core::FieldError;
using core::JoinPath;

struct EtcdResolverConfig {
  etcd::EtcdClientOptions client;
  std::string prefix;
  core::BackoffOptions backoff;
};

absl::StatusOr<EtcdResolverConfig> ParseConfig(const json& c, absl::string_view path) {
  if (auto st = core::CheckObject(
          c, path, {"endpoints", "prefix", "dial_timeout", "request_timeout", "retry_backoff"});
      !st.ok()) {
    return st;
  }
  EtcdResolverConfig out;
  if (!c.contains("endpoints")) return FieldError(JoinPath(path, "endpoints"), "required");
  if (auto st = core::OptionalStringList(c, path, "endpoints", &out.client.endpoints); !st.ok()) {
    return st;
  }
  for (size_t i = 0; i < out.client.endpoints.size(); ++i) {
    auto a = transport::ParseHostPort(out.client.endpoints[i]);
    if (!a.ok() || a->port() == 0) {
      return FieldError(absl::StrCat(JoinPath(path, "endpoints"), "[", i, "]"),
                        a.ok() ? "port must be between 1 and 65535" : a.status().message());
    }
  }
  if (!c.contains("prefix")) return FieldError(JoinPath(path, "prefix"), "required");
  if (auto st = core::OptionalString(c, path, "prefix", &out.prefix); !st.ok()) return st;
  if (auto st = core::OptionalDuration(c, path, "dial_timeout", absl::Milliseconds(1),
                                         absl::Minutes(1), &out.client.dial_timeout);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(c, path, "request_timeout", absl::Milliseconds(1),
                                         absl::Minutes(10), &out.client.request_timeout);
      !st.ok()) {
    return st;
  }
  out.backoff.initial = absl::Milliseconds(100);
  out.backoff.max = absl::Seconds(5);
  if (auto it = c.find("retry_backoff"); it != c.end()) {
    std::string bp = JoinPath(path, "retry_backoff");
    if (auto st = core::CheckObject(*it, bp, {"base", "max"}); !st.ok()) return st;
    if (auto st = core::OptionalDuration(*it, bp, "base", absl::Milliseconds(1),
                                           absl::Minutes(1), &out.backoff.initial);
        !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalDuration(*it, bp, "max", absl::Milliseconds(1),
                                           absl::Minutes(10), &out.backoff.max);
        !st.ok()) {
      return st;
    }
    if (out.backoff.max < out.backoff.initial) {
      return FieldError(JoinPath(bp, "max"), "must be >= base");
    }
  }
  return out;
}

class EtcdResolver final : public Resolver {
 public:
  EtcdResolver(EtcdResolverConfig config, const ResolverArgs& args)
      : config_(std::move(config)),
        loop_(args.loop),
        range_end_(etcd::PrefixRangeEnd(config_.prefix)),
        backoff_(config_.backoff, args.seed != 0
                                      ? args.seed
                                      : static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()))) {}

  ~EtcdResolver() override {
    loop_->Cancel(retry_timer_);
    call_.reset();  // before the client it uses
  }

  void Start(ResolverSink* sink) override {
    sink_ = sink;
    auto client = etcd::EtcdClient::Create(loop_, config_.client);
    if (!client.ok()) {  // the config was validated: not expected
      Report(client.status(), "");
      return;
    }
    client_ = *std::move(client);
    List();
  }

 private:
  void Report(const absl::Status& st, absl::string_view then) {
    sink_->ReportError(absl::Status(st.code(), absl::StrCat("etcd prefix \"", config_.prefix,
                                                            "\": ", st.message(), then)));
  }

  void List() {
    call_ = client_->Range(config_.prefix, range_end_,
                           [this](absl::StatusOr<etcd::RangeResponse> r) { OnList(std::move(r)); });
  }

  void OnList(absl::StatusOr<etcd::RangeResponse> r) {
    if (!r.ok()) {
      Retry(r.status(), "listing", &EtcdResolver::List);
      return;
    }
    backoff_.Reset();
    entries_.clear();
    for (const etcd::KeyValue& kv : r->kvs) Apply(kv.key, kv.value);
    revision_ = r->revision;
    MaybePublish();
    Watch();
  }

  void Watch() {
    etcd::EtcdClient::WatchRequest req;
    req.key = config_.prefix;
    req.range_end = range_end_;
    req.start_revision = revision_ + 1;
    call_ = client_->Watch(
        std::move(req), [this](const etcd::WatchResponse& w) { OnWatch(w); },
        [this](absl::Status st) { Retry(st, "watching", &EtcdResolver::Watch); });
  }

  void OnWatch(const etcd::WatchResponse& w) {
    if (w.created) backoff_.Reset();
    if (w.compact_revision > 0) {
      // The history we would resume from is gone: read the whole prefix.
      Report(absl::OutOfRangeError(absl::StrCat("watch from revision ", revision_ + 1,
                                                ": etcd compacted its history up to revision ",
                                                w.compact_revision)),
             "; listing the prefix again");
      List();  // replaces (and so closes) this watch
      return;
    }
    if (w.canceled) {
      Retry(absl::AbortedError(absl::StrCat("etcd canceled the watch",
                                            w.cancel_reason.empty() ? "" : ": ",
                                            w.cancel_reason)),
            "watching", &EtcdResolver::List);
      return;
    }
    for (const etcd::WatchEvent& ev : w.events) {
      revision_ = std::max(revision_, ev.kv.mod_revision);
      if (ev.type == etcd::WatchEvent::Type::kPut) {
        Apply(ev.kv.key, ev.kv.value);
      } else {
        entries_.erase(ev.kv.key);
      }
    }
    // A progress notification: everything up to its revision was sent.
    if (w.events.empty() && !w.created) revision_ = std::max(revision_, w.revision);
    MaybePublish();
  }

  // Adds or replaces one entry; a bad one is reported and removed.
  void Apply(const std::string& key, const std::string& value) {
    absl::StatusOr<Endpoint> e = ParseEtcdRegistration(config_.prefix, key, value);
    if (!e.ok()) {
      entries_.erase(key);
      Report(absl::InvalidArgumentError(absl::StrCat("key \"", absl::CHexEscape(key),
                                                     "\" skipped: ", e.status().message())),
             "");
      return;
    }
    entries_[key] = *std::move(e);
  }

  void MaybePublish() {
    if (published_ && entries_ == published_entries_) return;
    published_ = true;
    published_entries_ = entries_;
    std::vector<Endpoint> v;
    v.reserve(entries_.size());
    for (const auto& [key, e] : entries_) v.push_back(e);
    sink_->Publish(std::move(v));
  }

  // Reports `st` and runs `next` after a backoff; the set stays as it is.
  void Retry(const absl::Status& st, absl::string_view doing, void (EtcdResolver::*next)()) {
    call_.reset();  // may be the caller's own call: it copes
    absl::Duration delay = backoff_.Next();
    Report(st, absl::StrCat(" (while ", doing, "); keeping ", entries_.size(),
                            " endpoints, retrying in ", absl::FormatDuration(delay)));
    retry_timer_ = loop_->RunAfter(delay, [this, next] {
      retry_timer_ = {};
      (this->*next)();
    });
  }

  const EtcdResolverConfig config_;
  runtime::EventLoop* const loop_;
  const std::string range_end_;
  ResolverSink* sink_ = nullptr;
  std::unique_ptr<etcd::EtcdClient> client_;
  std::unique_ptr<etcd::EtcdCall> call_;
  core::Backoff backoff_;
  runtime::TimerId retry_timer_;
  // Revision of the last list, or of the last event or progress seen: a
  // watch resumes just after it.
  int64_t revision_ = 0;
  std::map<std::string, Endpoint> entries_;  // key -> endpoint, good ones only
  std::map<std::string, Endpoint> published_entries_;
  bool published_ = false;
};

class EtcdResolverFactory final : public ResolverFactory {
 public:
  std::string kind() const override { return "etcd"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    return ParseConfig(config, path).status();
  }
  absl::StatusOr<std::unique_ptr<Resolver>> Create(const ResolverArgs& args) const override {
    if (args.loop == nullptr) return absl::InvalidArgumentError("etcd discovery needs a loop");
    auto config = ParseConfig(args.config, args.path);
    if (!config.ok()) return config.status();
    return std::make_unique<EtcdResolver>(*std::move(config), args);
  }
};

}  // namespace

absl::StatusOr<Endpoint> ParseEtcdRegistration(absl::string_view prefix, absl::string_view key,
                                               absl::string_view value) {
  if (!absl::StartsWith(key, prefix)) {
    return absl::InvalidArgumentError("key is not under the prefix");
  }
  absl::string_view suffix = key.substr(prefix.size());
  absl::StatusOr<std::string> address = CanonicalAddress(suffix);
  if (!address.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the key does not end in a host:port address (",
                                                   address.status().message(), ")"));
  }
  json j = json::parse(value.begin(), value.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "value is not valid JSON: \"", absl::CHexEscape(value.substr(0, 100)),
        value.size() > 100 ? "...\"" : "\""));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        "value must be a JSON object {\"address\": \"host:port\", \"weight\": ..., \"zone\": "
        "..., \"metadata\": {...}}");
  }
  absl::StatusOr<Endpoint> e = EndpointFromJson(j, "value");
  if (!e.ok()) return e.status();
  if (e->address != *address) {
    return absl::InvalidArgumentError(absl::StrCat("value.address \"", e->address,
                                                   "\" does not match the key's \"", *address,
                                                   "\""));
  }
  return e;
}

std::unique_ptr<ResolverFactory> MakeEtcdResolverFactory() {
  return std::make_unique<EtcdResolverFactory>();
}

}  // namespace meshlib::discovery
