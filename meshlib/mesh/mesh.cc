#include "meshlib/mesh/mesh.h"

#include <sys/stat.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/client/channel.h"
#include "meshlib/client/service_channel.h"
#include "meshlib/config/routing_config.h"
#include "meshlib/core/log.h"
#include "meshlib/etcd/etcd_client.h"
#include "meshlib/lb/policy.h"
#include "meshlib/runtime/event_loop.h"

namespace meshlib::mesh {

using client::CallHandle;
using client::CallOptions;
using client::CallResult;
using json = nlohmann::json;

namespace {
CallResult Failed(absl::Status status) {
  CallResult r;
  r.status = std::move(status);
  return r;
}
CallResult NotInConfiguration(const std::string& service, uint64_t generation) {
  return Failed(absl::NotFoundError(absl::StrCat(
      "service ", service, " is not in the configuration (generation ", generation, ")")));
}
}  // namespace

namespace internal {

// Counters of one Client that outlive its stacks.
struct Counters {
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> unrouted{0};
  std::mutex mu;
  // By route name, and by "route/subset".
  std::map<std::string, std::shared_ptr<std::atomic<uint64_t>>> hits;
  // Channel counters of stacks already replaced.
  ClientStats retired;

  std::shared_ptr<std::atomic<uint64_t>> Hits(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu);
    auto& p = hits[key];
    if (p == nullptr) p = std::make_shared<std::atomic<uint64_t>>(0);
    return p;
  }
};

// Connections by endpoint address (and connection count), shared by every
// channel of every stack, so that subsets and reloads do not open their
// own. Held by the channel factories of the stacks, which can outlive the
// mesh's core by a moment.
class ConnectionPool {
 public:
  absl::StatusOr<std::shared_ptr<client::EndpointChannel>> Get(
      const std::string& address, const client::ChannelOptions& options) {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) {
      return absl::CancelledError(absl::StrCat("mesh closed: no new connection to ", address));
    }
    auto& slot = pool_[absl::StrCat(address, "#", options.connections)];
    if (auto ch = slot.lock()) return std::shared_ptr<client::EndpointChannel>(ch);
    auto created = client::Channel::Create(address, options);
    if (!created.ok()) return created.status();
    std::shared_ptr<client::Channel> ch = runtime::ShareOffLoop(std::move(*created));
    slot = ch;
    // Forget addresses whose channels are gone, now and then.
    if (pool_.size() > 64) {
      for (auto it = pool_.begin(); it != pool_.end();) {
        it = it->second.expired() ? pool_.erase(it) : std::next(it);
      }
    }
    return std::shared_ptr<client::EndpointChannel>(ch);
  }
  // Closes every pooled connection: calls in flight on them (blocking ones
  // included) end with CANCELLED; no new connection is made.
  void Shutdown() {
    std::vector<std::shared_ptr<client::Channel>> live;
    {
      std::lock_guard<std::mutex> lock(mu_);
      shut_down_ = true;
      for (auto& [key, weak] : pool_) {
        if (auto ch = weak.lock()) live.push_back(std::move(ch));
      }
    }
    for (auto& ch : live) ch->Shutdown();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::weak_ptr<client::Channel>> pool_;  // guarded by mu_
  bool shut_down_ = false;                                       // guarded by mu_
};

struct SubsetChannel {
  const config::SubsetConfig* config;
  std::shared_ptr<client::ServiceChannel> channel;
};

struct RouteRuntime {
  const config::RouteConfig* config;
  std::vector<int> subset_of_split;  // index into Stack::subsets, per split entry
  std::shared_ptr<std::atomic<uint64_t>> hits;
  std::vector<std::shared_ptr<std::atomic<uint64_t>>> split_hits;
};

// One immutable configuration of a Client's layers.
struct Stack {
  uint64_t generation = 0;
  std::shared_ptr<const config::MeshConfig> mesh_config;
  const config::ServiceConfig* service = nullptr;  // null: not in the configuration
  std::vector<std::shared_ptr<Interceptor>> interceptors;
  std::shared_ptr<client::ServiceChannel> all;  // every endpoint
  std::vector<SubsetChannel> subsets;           // parallel to service->subsets
  std::vector<RouteRuntime> routes;             // parallel to service->routes
  std::shared_ptr<Counters> counters;

  void ForEachChannel(const std::function<void(const client::ServiceChannel&)>& fn) const {
    if (all != nullptr) fn(*all);
    for (const SubsetChannel& s : subsets) fn(*s.channel);
  }
  // Ends the calls in flight on this stack's channels (CANCELLED).
  void CloseChannels(absl::string_view reason) const {
    for (const SubsetChannel& s : subsets) s.channel->Close(reason);
    if (all != nullptr) all->Close(reason);
  }
  // Adds the channels' retry, hedge, breaker and ejection counters.
  void AddChannelCounters(ClientStats* out) const {
    ForEachChannel([out](const client::ServiceChannel& ch) {
      client::ServiceChannelStats c = ch.stats();
      out->retries += c.retries;
      out->transparent_retries += c.transparent_retries;
      out->retries_denied += c.retries_denied;
      out->hedges += c.hedges;
      out->hedges_denied += c.hedges_denied;
      out->breaker_overflows += c.breaker_overflows;
      out->pushback_stops += c.pushback_stops;
      out->faults_delayed += c.faults_delayed;
      out->faults_aborted += c.faults_aborted;
      out->ejections += c.outliers.ejections_consecutive_failures +
                        c.outliers.ejections_success_rate +
                        c.outliers.ejections_failure_percentage +
                        c.outliers.ejections_failed_probe;
    });
  }
};

// Adds the channel counters of `add` to `to`.
inline void AddCounters(const ClientStats& add, ClientStats* to) {
  to->retries += add.retries;
  to->transparent_retries += add.transparent_retries;
  to->retries_denied += add.retries_denied;
  to->hedges += add.hedges;
  to->hedges_denied += add.hedges_denied;
  to->breaker_overflows += add.breaker_overflows;
  to->pushback_stops += add.pushback_stops;
  to->faults_delayed += add.faults_delayed;
  to->faults_aborted += add.faults_aborted;
  to->ejections += add.ejections;
}

struct MeshCore {
  MeshOptions options;
  std::shared_ptr<runtime::Runtime> runtime;
  std::shared_ptr<runtime::EventLoop> control;

  std::mutex apply_mu;  // one Apply or Client build at a time
  mutable std::mutex mu;
  std::shared_ptr<const config::MeshConfig> config;  // guarded by mu
  ReloadStats reload;                                // guarded by mu
  std::map<std::string, std::weak_ptr<mesh::Client>> clients;  // guarded by mu
  std::map<std::string, std::shared_ptr<Counters>> counters;   // guarded by mu

  struct DiscoveryEntry {
    json source;
    std::shared_ptr<discovery::Discovery> discovery;
  };
  std::mutex discovery_mu;
  std::map<std::string, DiscoveryEntry> discoveries;  // guarded by discovery_mu

  const std::shared_ptr<ConnectionPool> pool = std::make_shared<ConnectionPool>();

  // Stacks replaced by a reload (or whose Client went away), closed on the
  // control loop once no call holds them, or when the mesh's drain_timeout
  // passes (their calls then end with CANCELLED).
  struct Retiring {
    std::shared_ptr<const Stack> stack;
    absl::Time deadline;
    bool owns_channels;  // false: a newer stack shares them (AddInterceptor)
  };
  std::mutex retire_mu;
  std::vector<Retiring> retiring;  // guarded by retire_mu
  runtime::TimerId reap_timer;     // guarded by retire_mu
  bool closing = false;            // guarded by retire_mu
  // Set by Close(): calls fail at once, nothing new is built.
  std::atomic<bool> closed{false};

  ~MeshCore() {
    Close();
    control->RunAndWait([this] {
      std::lock_guard<std::mutex> lock(retire_mu);
      control->Cancel(reap_timer);
    });
    retiring.clear();
    discoveries.clear();
  }

  absl::Status Apply(config::MeshConfig config);  // Mesh::Apply
  void Rejected(absl::Status status);              // a document that did not parse

  // Ends every call in flight on every stack (CANCELLED), closes the pooled
  // connections (which ends blocking calls too) and refuses what comes
  // after. Any thread, including a call's callback; waits for nothing.
  void Close() {
    std::vector<std::shared_ptr<const Stack>> stacks;
    {
      std::lock_guard<std::mutex> lock(retire_mu);
      if (closing) return;
      closing = true;
      closed.store(true, std::memory_order_release);
      control->Cancel(reap_timer);
      for (Retiring& r : retiring) {
        if (r.owns_channels) stacks.push_back(r.stack);
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto& [name, weak] : clients) {
        if (auto c = weak.lock()) stacks.push_back(c->stack());
      }
    }
    for (const auto& s : stacks) s->CloseChannels("mesh closed");
    pool->Shutdown();
  }

  // The service's Discovery for `source`: the existing one when the
  // source is unchanged (a reload then does not restart it), else a new one.
  absl::StatusOr<std::shared_ptr<discovery::Discovery>> DiscoveryFor(const std::string& service,
                                                                    const json& source) {
    std::lock_guard<std::mutex> lock(discovery_mu);
    auto it = discoveries.find(service);
    if (it != discoveries.end() && it->second.source == source) return it->second.discovery;
    auto d = discovery::Discovery::Create(service, source, control.get(),
                                          absl::StrCat("services.", service, ".discovery"));
    if (!d.ok()) return d.status();
    std::shared_ptr<discovery::Discovery> shared = runtime::ShareOffLoop(std::move(*d));
    discoveries[service] = {source, shared};
    return shared;
  }

  std::shared_ptr<Counters> CountersFor(const std::string& service) {
    std::lock_guard<std::mutex> lock(mu);
    auto& c = counters[service];
    if (c == nullptr) c = std::make_shared<Counters>();
    return c;
  }

  void Retire(std::shared_ptr<const Stack> stack, bool owns_channels = true) {
    if (stack == nullptr) return;
    std::lock_guard<std::mutex> lock(retire_mu);
    if (closing) return;  // Close() ended its calls
    absl::Duration drain =
        stack->mesh_config != nullptr ? stack->mesh_config->mesh.drain_timeout : absl::ZeroDuration();
    retiring.push_back({std::move(stack), absl::Now() + drain, owns_channels});
    if (!reap_timer.valid()) {
      reap_timer = control->RunAfter(absl::Milliseconds(50), [this] { Reap(); });
    }
  }

  // Control loop: closes retired stacks no call holds any longer. A stack
  // still busy when its drain_timeout passes has its calls ended
  // (CANCELLED), as documented for drain_timeout.
  void Reap() {
    std::vector<std::shared_ptr<const Stack>> done, expired;
    {
      std::lock_guard<std::mutex> lock(retire_mu);
      reap_timer = {};
      absl::Time now = absl::Now();
      for (auto it = retiring.begin(); it != retiring.end();) {
        if (it->stack.use_count() == 1) {
          done.push_back(std::move(it->stack));
          it = retiring.erase(it);
          continue;
        }
        if (now >= it->deadline) {
          if (it->owns_channels) expired.push_back(it->stack);
          it->deadline = absl::InfiniteFuture();
        }
        ++it;
      }
      if (!retiring.empty() && !closing) {
        reap_timer = control->RunAfter(absl::Milliseconds(50), [this] { Reap(); });
      }
    }
    for (auto& s : expired) {
      core::Log(core::LogLevel::kWarning,
                absl::StrCat("mesh: a replaced configuration of ",
                             s->service ? s->service->name : "a service",
                             " still had calls in flight after its drain_timeout; they end now"));
      s->CloseChannels("configuration replaced and drain_timeout passed");
    }
    for (auto& s : done) AddToRetiredTotals(*s);
    done.clear();  // channels close here (or, if a call still holds one, after it)
  }

  static void AddToRetiredTotals(const Stack& s) {
    // A stack that shares its channels with a newer one (AddInterceptor)
    // leaves their counters to it.
    if (s.counters == nullptr || s.all == nullptr || s.all.use_count() > 1) return;
    ClientStats add;
    s.AddChannelCounters(&add);
    std::lock_guard<std::mutex> lock(s.counters->mu);
    AddCounters(add, &s.counters->retired);  }
};

namespace {

// Builds a service's stack from its configuration, top to bottom (see
// mesh.h). Not on the control loop: it waits for the new channels to take
// their first endpoints, so that a reload never swaps in a stack that
// would fail calls for having none yet.
//
// `previous` (the stack being replaced, or null) hands what its channels
// learned to the new ones: each new channel takes over from the old one of
// the same role (every endpoint, or the subset of the same name).
absl::StatusOr<std::shared_ptr<Stack>> BuildStack(
    MeshCore& core, const std::string& name, std::shared_ptr<const config::MeshConfig> cfg,
    uint64_t generation, std::vector<std::shared_ptr<Interceptor>> interceptors,
    const Stack* previous) {
  auto stack = std::make_shared<Stack>();
  stack->generation = generation;
  stack->mesh_config = cfg;
  stack->interceptors = std::move(interceptors);
  stack->counters = core.CountersFor(name);
  const config::ServiceConfig* svc = cfg->Find(name);
  stack->service = svc;
  if (svc == nullptr) return stack;  // calls fail with NOT_FOUND

  // Pool, endpoint health, balancer, circuit breaker, hedging, retry and
  // deadline: one ServiceChannel per subset (and one over every endpoint).
  auto d = core.DiscoveryFor(name, svc->discovery);
  if (!d.ok()) return d.status();
  client::ServiceChannelOptions o;
  o.channel.runtime = core.runtime;
  o.channel.default_timeout = svc->timeout;
  o.channel.connections = cfg->mesh.connections_per_endpoint;
  o.load_balancer = svc->load_balancer_list;
  // The typed configuration is the only parse of the policies.
  client::ServiceChannelOptions::Policies policies;
  policies.retry = svc->retry;
  policies.hedging = svc->hedging;
  policies.circuit_breaker = svc->circuit_breaker;
  policies.outlier_detection = svc->outlier_detection;
  policies.health_check = svc->health_check;
  // Fault injection is applied above, by the routing layer (a route's own
  // fault replaces the service's).
  o.policies = policies;
  const bool same_service = previous != nullptr && previous->service != nullptr;
  if (same_service) o.predecessor = previous->all;
  o.lb_context.local_zone = cfg->mesh.zone;
  o.control_loop = core.control;
  o.shared_discovery = *d;
  o.config_path = absl::StrCat("services.", name);
  client::ChannelOptions channel_options = o.channel;
  if (core.options.channel_factory) {
    o.channel_factory = core.options.channel_factory;
  } else {
    o.channel_factory = [pool = core.pool, channel_options](const std::string& address) {
      return pool->Get(address, channel_options);
    };
  }
  auto all = client::ServiceChannel::Create(name, json(), o);
  if (!all.ok()) return all.status();
  stack->all = std::shared_ptr<client::ServiceChannel>(std::move(*all));
  for (const config::SubsetConfig& subset : svc->subsets) {
    client::ServiceChannelOptions so = o;
    // One verdict per endpoint for the whole service: the subsets take
    // outlier detection and health checks from the channel over every
    // endpoint.
    so.health_source = stack->all;
    so.policies->outlier_detection.reset();
    so.policies->health_check.reset();
    so.predecessor = nullptr;
    if (same_service) {
      for (const SubsetChannel& old : previous->subsets) {
        if (old.config->name == subset.name) so.predecessor = old.channel;
      }
    }
    so.endpoint_filter = [&subset](const discovery::Endpoint& e) {
      return config::SubsetMatches(subset, e);
    };
    so.config_path = absl::StrCat("services.", name, ".subsets.", subset.name);
    auto ch = client::ServiceChannel::Create(name, json(), so);
    if (!ch.ok()) return ch.status();
    stack->subsets.push_back({&subset, std::shared_ptr<client::ServiceChannel>(std::move(*ch))});
  }
  // Routing.
  for (const config::RouteConfig& route : svc->routes) {
    RouteRuntime r;
    r.config = &route;
    r.hits = stack->counters->Hits(route.name);
    for (const auto& [subset_name, weight] : route.split) {
      int index = -1;
      for (size_t i = 0; i < svc->subsets.size(); ++i) {
        if (svc->subsets[i].name == subset_name) index = static_cast<int>(i);
      }
      r.subset_of_split.push_back(index);
      r.split_hits.push_back(stack->counters->Hits(absl::StrCat(route.name, "/", subset_name)));
    }
    stack->routes.push_back(std::move(r));
  }
  // Ready: every channel has applied the source's current set. A source
  // that has produced none yet (just started) gets ready_timeout to do so;
  // calls made before fail with a status that names discovery.
  if ((*d)->Current() != nullptr || (*d)->WaitForEndpoints(core.options.ready_timeout)) {
    stack->ForEachChannel([&](const client::ServiceChannel& ch) {
      const_cast<client::ServiceChannel&>(ch).WaitForFirstUpdate(core.options.ready_timeout);
    });
  }
  return stack;
}

// What routing decided for one call.
struct Routed {
  client::ServiceChannel* target = nullptr;
  const resilience::FaultInjection* fault = nullptr;
  absl::Status error;  // not OK: fail the call with it
};

Routed Route(const Stack& s, absl::string_view method, const CallOptions& options) {
  Routed out;
  out.target = s.all.get();
  const config::ServiceConfig& svc = *s.service;
  if (svc.fault.enabled()) out.fault = &svc.fault;
  if (s.routes.empty()) return out;
  const config::RouteConfig* route =
      config::FirstMatchingRoute(svc.routes, method, options.metadata);
  if (route == nullptr) {
    s.counters->unrouted.fetch_add(1, std::memory_order_relaxed);
    return out;
  }
  const RouteRuntime& rt = s.routes[route - svc.routes.data()];
  rt.hits->fetch_add(1, std::memory_order_relaxed);
  int k = config::PickSplit(*route, lb::ThreadRandom().Next(), [&](int i) {
    int subset = rt.subset_of_split[i];
    return subset >= 0 && s.subsets[subset].channel->endpoint_count() > 0;
  });
  if (k < 0) {
    std::vector<std::string> names;
    for (const auto& [n, w] : route->split) names.push_back(n);
    out.error = absl::UnavailableError(
        absl::StrCat("service ", svc.name, ": route ", route->name, ": no endpoints in subset",
                     names.size() > 1 ? "s " : " ", absl::StrJoin(names, ", ")));
    return out;
  }
  rt.split_hits[k]->fetch_add(1, std::memory_order_relaxed);
  out.target = s.subsets[rt.subset_of_split[k]].channel.get();
  if (route->fault.has_value()) out.fault = route->fault->enabled() ? &*route->fault : nullptr;
  return out;
}

}  // namespace
}  // namespace internal

// --- Client ---

Client::Client(std::string service, std::shared_ptr<internal::MeshCore> core,
               std::shared_ptr<const internal::Stack> stack)
    : service_(std::move(service)),
      core_(std::move(core)),
      stack_(std::make_unique<std::shared_ptr<const internal::Stack>>(std::move(stack))) {}

Client::~Client() { core_->Retire(stack()); }

std::shared_ptr<const internal::Stack> Client::stack() const {
  core::RcuReadGuard guard(stack_);
  return *stack_.Get(guard);
}

void Client::Replace(std::shared_ptr<const internal::Stack> next, bool shares_channels) {
  // Callers hold MeshCore::apply_mu: one replacement at a time.
  std::shared_ptr<const internal::Stack> old = stack();
  stack_.Update(std::make_unique<std::shared_ptr<const internal::Stack>>(std::move(next)));
  core_->Retire(std::move(old), /*owns_channels=*/!shares_channels);
}

void Client::AddInterceptor(std::shared_ptr<Interceptor> interceptor) {
  std::lock_guard<std::mutex> lock(core_->apply_mu);
  auto next = std::make_shared<internal::Stack>(*stack());
  next->interceptors.push_back(std::move(interceptor));
  Replace(std::move(next), /*shares_channels=*/true);
}

namespace {
CallResult MeshClosed(const std::string& service, absl::string_view method) {
  return Failed(absl::CancelledError(
      absl::StrCat("mesh closed: call to ", service, " ", method, " not sent")));
}
}  // namespace

CallHandle Client::Call(absl::string_view method, absl::string_view request,
                        const CallOptions& options, client::CallCallback done) {
  if (core_->closed.load(std::memory_order_acquire)) {
    done(MeshClosed(service_, method));
    return CallHandle();
  }
  std::shared_ptr<const internal::Stack> s = stack();
  if (s->service == nullptr) {
    done(NotInConfiguration(service_, s->generation));
    return CallHandle();
  }
  s->counters->calls.fetch_add(1, std::memory_order_relaxed);
  if (s->interceptors.empty()) {
    // The common path: no copy of the options, no wrapper around `done`.
    internal::Routed routed = internal::Route(*s, method, options);
    if (!routed.error.ok()) {
      done(Failed(routed.error));
      return CallHandle();
    }
    // The fault (the route's, else the service's) is applied by the
    // channel, whose timers end with it; the call holds the stack (and so
    // the fault) until it ends.
    client::ServiceChannel* target = routed.target;
    return target->CallWithFault(method, request, options, routed.fault, std::move(done),
                                 std::move(s));
  }
  // Interceptors are told each call's latency.
  absl::Time start = absl::Now();
  CallOptions opts = options;
  // Interceptors, in order; one that fails the call ends it here, and those
  // before it see the failure.
  for (size_t i = 0; i < s->interceptors.size(); ++i) {
    if (absl::Status st = s->interceptors[i]->Before(method, opts); !st.ok()) {
      CallResult r = Failed(std::move(st));
      for (size_t j = i; j-- > 0;) s->interceptors[j]->After(method, opts, r, absl::Now() - start);
      done(std::move(r));
      return CallHandle();
    }
  }
  internal::Routed routed = internal::Route(*s, method, opts);
  if (!routed.error.ok()) {
    CallResult r = Failed(routed.error);
    for (size_t j = s->interceptors.size(); j-- > 0;) {
      s->interceptors[j]->After(method, opts, r, absl::Now() - start);
    }
    done(std::move(r));
    return CallHandle();
  }
  // As above; the stack, held by the completion, keeps the fault alive.
  client::ServiceChannel* target = routed.target;
  return target->CallWithFault(
      method, request, opts, routed.fault,
      [s, method = std::string(method), opts, start, done = std::move(done)](CallResult r) mutable {
        for (size_t j = s->interceptors.size(); j-- > 0;) {
          s->interceptors[j]->After(method, opts, r, absl::Now() - start);
        }
        done(std::move(r));
      });
}

CallResult Client::CallBlocking(absl::string_view method, absl::string_view request,
                                const CallOptions& options) {
  if (core_->closed.load(std::memory_order_acquire)) return MeshClosed(service_, method);
  if (std::optional<CallResult> refused = client::RefuseBlockingOnReactor(method)) {
    return *refused;
  }
  std::shared_ptr<const internal::Stack> s = stack();
  if (s->service == nullptr) {
    return NotInConfiguration(service_, s->generation);
  }
  s->counters->calls.fetch_add(1, std::memory_order_relaxed);
  // Interceptors are told each call's latency; without any, no clock read.
  absl::Time start = s->interceptors.empty() ? absl::InfinitePast() : absl::Now();
  CallOptions opts = options;
  size_t ran = 0;
  CallResult r;
  for (; ran < s->interceptors.size(); ++ran) {
    if (absl::Status st = s->interceptors[ran]->Before(method, opts); !st.ok()) {
      r = Failed(std::move(st));
      break;
    }
  }
  if (ran == s->interceptors.size()) {
    internal::Routed routed = internal::Route(*s, method, opts);
    r = routed.error.ok()
            ? routed.target->CallBlockingWithFault(method, request, opts, routed.fault)
            : Failed(routed.error);
  }
  for (size_t j = ran; j-- > 0;) s->interceptors[j]->After(method, opts, r, absl::Now() - start);
  return r;
}

std::string Client::Describe() const {
  std::shared_ptr<const internal::Stack> s = stack();
  std::ostringstream out;
  out << "client " << service_ << ", configuration generation " << s->generation << "\n";
  if (s->service == nullptr) {
    out << "  (not in the configuration: calls fail with NOT_FOUND)\n";
    return out.str();
  }
  auto line = [&](absl::string_view role, absl::string_view text) {
    out << "  " << role << std::string(role.size() < 17 ? 17 - role.size() : 1, ' ') << text
        << "\n";
  };
  std::vector<std::string> names;
  for (const auto& i : s->interceptors) names.push_back(i->name());
  line("interceptors", names.empty() ? "none" : absl::StrJoin(names, ", "));
  const config::ServiceConfig& svc = *s->service;
  if (svc.routes.empty()) {
    line("routing", "none: every call may use every endpoint");
  } else {
    for (size_t i = 0; i < svc.routes.size(); ++i) {
      const config::RouteConfig& r = svc.routes[i];
      std::vector<std::string> conds;
      if (!r.match.method.empty() || r.match.method_prefix) {
        conds.push_back(absl::StrCat("method ", r.match.method, r.match.method_prefix ? "*" : ""));
      }
      for (const auto& [k, v] : r.match.metadata) conds.push_back(absl::StrCat(k, "=", v));
      uint32_t total = 0;
      for (const auto& [n, w] : r.split) total += w;
      std::vector<std::string> targets;
      for (const auto& [n, w] : r.split) {
        targets.push_back(r.split.size() == 1
                              ? n
                              : absl::StrCat(n, " ", total ? 100.0 * w / total : 0.0, "%"));
      }
      line(i == 0 ? "routing" : "",
           absl::StrCat(i + 1, ". ", r.name, ": ",
                        conds.empty() ? "any call" : absl::StrJoin(conds, " and "), " -> ",
                        absl::StrJoin(targets, ", "),
                        r.fault.has_value() ? " (with its own fault injection)" : ""));
    }
    line("", "otherwise: every endpoint");
  }
  for (const internal::SubsetChannel& sc : s->subsets) {
    std::vector<std::string> m;
    for (const auto& [k, v] : sc.config->match) m.push_back(absl::StrCat(k, "=", v));
    line(&sc == &s->subsets.front() ? "subsets" : "",
         absl::StrCat(sc.config->name, " {", absl::StrJoin(m, ", "), "}: ",
                      sc.channel->endpoint_count(), " endpoint(s)"));
  }
  for (const auto& [role, text] : s->all->Describe()) {
    if (role == "fault") {
      std::string f = text;
      if (svc.fault.enabled()) {
        f = absl::StrCat(svc.fault.delay_percent > 0
                             ? absl::StrCat("delay ", svc.fault.delay_percent, "% by ",
                                            absl::FormatDuration(svc.fault.delay), "; ")
                             : "",
                         svc.fault.abort_percent > 0
                             ? absl::StrCat("abort ", svc.fault.abort_percent, "% with ",
                                            absl::StatusCodeToString(svc.fault.abort_code))
                             : "");
      }
      line(role, f);
      continue;
    }
    if (role == "pool" && !core_->options.channel_factory) {
      line(role, absl::StrCat(s->all->endpoint_count(), " endpoints, ",
                              s->mesh_config->mesh.connections_per_endpoint,
                              " connection(s) each, pooled by address (shared by the subsets "
                              "and across reloads)"));
      continue;
    }
    line(role, text);
  }
  std::vector<std::string> eps;
  for (const client::EndpointState& e : s->all->EndpointStates()) {
    eps.push_back(absl::StrCat(e.address, " ", e.healthy ? "healthy" : "out", e.outlier != "healthy" ? absl::StrCat(" (", e.outlier, ")") : ""));
  }
  line("endpoints", eps.empty() ? "none yet" : absl::StrJoin(eps, "; "));
  return out.str();
}

ClientStats Client::stats() const {
  std::shared_ptr<const internal::Stack> s = stack();
  ClientStats st;
  {
    std::lock_guard<std::mutex> lock(s->counters->mu);
    st = s->counters->retired;
  }
  st.generation = s->generation;
  st.calls = s->counters->calls.load(std::memory_order_relaxed);
  st.unrouted = s->counters->unrouted.load(std::memory_order_relaxed);
  for (const internal::RouteRuntime& r : s->routes) {
    RouteStats rs;
    rs.name = r.config->name;
    rs.calls = r.hits->load(std::memory_order_relaxed);
    for (size_t i = 0; i < r.config->split.size(); ++i) {
      rs.by_subset.emplace_back(r.config->split[i].first,
                                r.split_hits[i]->load(std::memory_order_relaxed));
    }
    st.routes.push_back(std::move(rs));
  }
  s->AddChannelCounters(&st);
  if (s->all != nullptr) st.policy = s->all->stats().policy;
  return st;
}

std::vector<client::EndpointState> Client::EndpointStates() const {
  std::shared_ptr<const internal::Stack> s = stack();
  if (s->all == nullptr) return {};
  return s->all->EndpointStates();
}

bool Client::WaitForEndpoints(absl::Duration timeout) const {
  std::shared_ptr<const internal::Stack> s = stack();
  if (s->all == nullptr) return false;
  return s->all->WaitForEndpoints(timeout);
}

// --- Mesh ---

namespace internal {

// Watches the configuration's sources and applies what changes: the file
// Open was given (polled: a changed size, time or inode is read again) and
// an etcd key (range, then watch from the next revision, like discovery).
// Documents are applied on its own thread, never on the control loop.
class Watcher {
 public:
  Watcher(std::shared_ptr<internal::MeshCore> core, std::string path)
      : core_(std::move(core)), path_(std::move(path)) {
    if (!path_.empty()) last_ = Stat(path_);
    thread_ = std::thread([this] { Run(); });
    if (!core_->options.etcd_endpoints.empty()) StartEtcd();
  }
  ~Watcher() {
    if (etcd_ != nullptr) {
      core_->control->RunAndWait([this] {
        etcd_call_.reset();
        core_->control->Cancel(etcd_retry_);
        etcd_.reset();
      });
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  struct FileId {
    bool exists = false;
    int64_t size = 0, mtime_ns = 0, inode = 0;
    bool operator==(const FileId& o) const {
      return exists == o.exists && size == o.size && mtime_ns == o.mtime_ns && inode == o.inode;
    }
  };
  static FileId Stat(const std::string& path) {
    struct stat st;
    FileId id;
    if (stat(path.c_str(), &st) != 0) return id;
    id.exists = true;
    id.size = st.st_size;
    id.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    id.inode = static_cast<int64_t>(st.st_ino);
    return id;
  }

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, absl::ToChronoNanoseconds(core_->options.file_poll_interval),
                   [this] { return stop_ || !queue_.empty(); });
      if (stop_) break;
      std::deque<std::pair<std::string, std::string>> docs;
      docs.swap(queue_);
      lock.unlock();
      if (!path_.empty()) {
        FileId now = Stat(path_);
        if (!(now == last_)) {
          last_ = now;
          if (now.exists) {
            std::ifstream in(path_);
            std::stringstream text;
            text << in.rdbuf();
            docs.emplace_back(path_, text.str());
          }
        }
      }
      for (auto& [source, text] : docs) ApplyText(source, text);
      lock.lock();
    }
  }

  void ApplyText(const std::string& source, const std::string& text) {
    absl::StatusOr<config::MeshConfig> cfg = config::ParseMeshConfig(text);
    if (!cfg.ok()) core_->Rejected(cfg.status());
    absl::Status st = cfg.ok() ? core_->Apply(*std::move(cfg)) : cfg.status();
    if (!st.ok()) {
      uint64_t generation;
      {
        std::lock_guard<std::mutex> lock(core_->mu);
        generation = core_->reload.generation;
      }
      core::Log(core::LogLevel::kWarning,
                absl::StrCat("mesh: configuration from ", source,
                             " rejected; keeping generation ", generation, ": ", st.message()));
    }
  }

  void Push(std::string source, std::string text) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.emplace_back(std::move(source), std::move(text));
    }
    cv_.notify_all();
  }

  // --- etcd (control loop) ---
  void StartEtcd() {
    core_->control->RunAndWait([this] {
      etcd::EtcdClientOptions o;
      o.endpoints = core_->options.etcd_endpoints;
      auto c = etcd::EtcdClient::Create(core_->control.get(), o);
      if (!c.ok()) {
        core::Log(core::LogLevel::kWarning,
                  absl::StrCat("mesh: etcd configuration source: ", c.status().message()));
        return;
      }
      etcd_ = *std::move(c);
      EtcdRange();
    });
  }
  void EtcdRetry() {
    etcd_call_.reset();
    etcd_retry_ = core_->control->RunAfter(absl::Seconds(1), [this] {
      etcd_retry_ = {};
      EtcdRange();
    });
  }
  void EtcdRange() {
    const std::string key = core_->options.etcd_key;
    etcd_call_ = etcd_->Range(key, "", [this, key](absl::StatusOr<etcd::RangeResponse> r) {
      if (!r.ok()) {
        core::Log(core::LogLevel::kWarning,
                  absl::StrCat("mesh: reading configuration key ", key, " from etcd: ",
                               r.status().message()));
        return EtcdRetry();
      }
      for (const etcd::KeyValue& kv : r->kvs) {
        if (kv.mod_revision != etcd_seen_) {
          etcd_seen_ = kv.mod_revision;
          Push(absl::StrCat("etcd key ", key), kv.value);
        }
      }
      etcd::EtcdClient::WatchRequest w;
      w.key = key;
      w.start_revision = r->revision + 1;
      etcd_call_ = etcd_->Watch(
          w,
          [this, key](const etcd::WatchResponse& resp) {
            if (resp.compact_revision != 0) return;  // ends; on_end re-reads
            for (const etcd::WatchEvent& e : resp.events) {
              if (e.type != etcd::WatchEvent::Type::kPut || e.kv.mod_revision == etcd_seen_) continue;
              etcd_seen_ = e.kv.mod_revision;
              Push(absl::StrCat("etcd key ", key), e.kv.value);
            }
          },
          [this](absl::Status) { EtcdRetry(); });
    });
  }

  const std::shared_ptr<internal::MeshCore> core_;
  const std::string path_;
  FileId last_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                                         // guarded by mu_
  std::deque<std::pair<std::string, std::string>> queue_;     // guarded by mu_
  std::thread thread_;
  // Control loop only.
  std::unique_ptr<etcd::EtcdClient> etcd_;
  std::unique_ptr<etcd::EtcdCall> etcd_call_;
  runtime::TimerId etcd_retry_;
  int64_t etcd_seen_ = 0;
};

}  // namespace internal

Mesh::Mesh(std::shared_ptr<internal::MeshCore> core) : core_(std::move(core)) {}

namespace internal {

void MeshCore::Rejected(absl::Status status) {
  std::lock_guard<std::mutex> lock(mu);
  ++reload.rejected;
  reload.last_error = std::move(status);
}

absl::Status MeshCore::Apply(config::MeshConfig config) {
  if (std::optional<CallResult> refused = client::RefuseBlockingOnReactor("Mesh::Apply")) {
    return refused->status;
  }
  std::lock_guard<std::mutex> apply(apply_mu);
  if (closed.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("mesh closed: configuration not applied");
  }
  auto cfg = std::make_shared<const config::MeshConfig>(std::move(config));
  std::vector<std::shared_ptr<mesh::Client>> live;
  uint64_t generation;
  std::shared_ptr<const config::MeshConfig> current;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = clients.begin(); it != clients.end();) {
      if (auto c = it->second.lock()) {
        live.push_back(std::move(c));
        ++it;
      } else {
        it = clients.erase(it);
      }
    }
    generation = reload.generation + 1;
    current = this->config;
  }
  auto reject = [&](absl::Status st, std::vector<std::shared_ptr<const Stack>>* built) {
    std::lock_guard<std::mutex> lock(mu);
    ++reload.rejected;
    reload.last_error = st;
    for (auto& b : *built) Retire(std::move(b));
    return st;
  };
  std::vector<std::shared_ptr<const Stack>> next;
  // What cannot change without a restart is refused, not silently kept.
  if (cfg->mesh.io_threads != current->mesh.io_threads) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
                      "mesh.io_threads: cannot change while the mesh runs (", current->mesh.io_threads,
                      " -> ", cfg->mesh.io_threads, "); restart to apply it")),
                  &next);
  }
  // Build every new stack first: a document that fails to build for one
  // service changes nothing.
  for (const auto& c : live) {
    std::shared_ptr<const Stack> old = c->stack();
    auto s = BuildStack(*this, c->service(), cfg, generation, old->interceptors, old.get());
    if (!s.ok()) return reject(s.status(), &next);
    // A stack without endpoints replaces one with endpoints only if the
    // service left the configuration: otherwise the source is not ready (or
    // broken) and the old stack keeps serving.
    if ((*s)->service != nullptr && (*s)->all->endpoint_count() == 0 && old->all != nullptr &&
        old->all->endpoint_count() > 0) {
      next.push_back(*std::move(s));
      return reject(absl::UnavailableError(absl::StrCat(
                        "services.", c->service(), ".discovery: no endpoints within ",
                        absl::FormatDuration(options.ready_timeout),
                        " of applying the new configuration; keeping the current one")),
                    &next);
    }
    next.push_back(*std::move(s));
  }
  for (size_t i = 0; i < live.size(); ++i) live[i]->Replace(std::move(next[i]), false);
  std::lock_guard<std::mutex> lock(mu);
  this->config = cfg;
  reload.generation = generation;
  ++reload.applied;
  reload.last_applied = absl::Now();
  return absl::OkStatus();
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<Mesh>> Mesh::Create(config::MeshConfig config,
                                                   MeshOptions options) {
  if (!options.etcd_endpoints.empty() && options.etcd_key.empty()) {
    return absl::InvalidArgumentError("MeshOptions.etcd_key: needed with etcd_endpoints");
  }
  auto core = runtime::ShareOffLoop(std::make_unique<internal::MeshCore>());
  core->options = options;
  auto rt = runtime::Runtime::Create(config.mesh.io_threads, "mesh-io");
  if (!rt.ok()) return rt.status();
  core->runtime = *std::move(rt);
  auto loop = runtime::EventLoop::Create("mesh-ctl");
  if (!loop.ok()) return loop.status();
  core->control = runtime::ShareOffLoop(std::move(*loop));
  core->config = std::make_shared<const config::MeshConfig>(std::move(config));
  core->reload.generation = 1;
  core->reload.last_applied = absl::Now();
  std::unique_ptr<Mesh> mesh(new Mesh(core));
  if (!options.etcd_endpoints.empty() || !options.watch_path.empty()) {
    mesh->watcher_ = std::make_unique<internal::Watcher>(core, options.watch_path);
  }
  return mesh;
}

absl::StatusOr<std::unique_ptr<Mesh>> Mesh::Open(const std::string& path, MeshOptions options) {
  auto cfg = config::LoadMeshConfigFile(path);
  if (!cfg.ok()) return cfg.status();
  options.watch_path = path;
  return Create(*std::move(cfg), std::move(options));
}

Mesh::~Mesh() {
  // Calls end first (on this thread, whatever it is), then the watcher
  // stops and the core goes; the waiting parts of that (joining the
  // watcher's thread, the loops) move off a reactor thread.
  core_->Close();
  runtime::DestroyOffLoop([watcher = std::move(watcher_), core = std::move(core_)]() mutable {
    watcher.reset();
    core.reset();
  });
}

absl::StatusOr<std::shared_ptr<Client>> Mesh::Client(absl::string_view service) {
  if (std::optional<CallResult> refused = client::RefuseBlockingOnReactor("Mesh::Client")) {
    return refused->status;
  }
  std::lock_guard<std::mutex> apply(core_->apply_mu);
  std::shared_ptr<const config::MeshConfig> cfg;
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(core_->mu);
    auto it = core_->clients.find(std::string(service));
    if (it != core_->clients.end()) {
      if (auto c = it->second.lock()) return c;
    }
    cfg = core_->config;
    generation = core_->reload.generation;
  }
  if (cfg->Find(service) == nullptr) {
    std::vector<std::string> names;
    for (const auto& [n, s] : cfg->services) names.push_back(n);
    return absl::NotFoundError(absl::StrCat("no service \"", service,
                                            "\" in the configuration (services: ",
                                            absl::StrJoin(names, ", "), ")"));
  }
  auto stack = internal::BuildStack(*core_, std::string(service), cfg, generation, {}, nullptr);
  if (!stack.ok()) return stack.status();
  auto client = std::make_shared<mesh::Client>(std::string(service), core_, *std::move(stack));
  std::lock_guard<std::mutex> lock(core_->mu);
  core_->clients[std::string(service)] = client;
  return client;
}

absl::Status Mesh::Apply(config::MeshConfig config) { return core_->Apply(std::move(config)); }

ReloadStats Mesh::reload_stats() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  return core_->reload;
}

std::shared_ptr<const config::MeshConfig> Mesh::config() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  return core_->config;
}

}  // namespace meshlib::mesh
