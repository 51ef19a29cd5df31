#include "meshlib/client/service_channel.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/client/layer.h"
#include "meshlib/client/layers/balancer_layer.h"
#include "meshlib/client/layers/breaker_layer.h"
#include "meshlib/client/layers/deadline_layer.h"
#include "meshlib/client/layers/fault_layer.h"
#include "meshlib/client/layers/hedging_layer.h"
#include "meshlib/client/layers/metrics_layer.h"
#include "meshlib/client/layers/pool_layer.h"
#include "meshlib/core/deadline_context.h"
#include "meshlib/core/fast_time.h"
#include "meshlib/core/log.h"
#include "meshlib/core/sync.h"

namespace meshlib::client {

namespace {

constexpr absl::Duration kDrainCheck = absl::Milliseconds(50);

CallResult Cancelled(std::string message) {
  CallResult r;
  r.status = absl::CancelledError(std::move(message));
  return r;
}

}  // namespace

// Keeps timers from touching a ServiceChannel that is gone: they hold this,
// and run only under a shared lock while `sc` is set.
struct ServiceChannel::Lifeline {
  std::shared_mutex mu;
  ServiceChannel* sc = nullptr;
};

struct ServiceChannel::HealthProbe {
  explicit HealthProbe(const resilience::HealthCheckOptions& o) : checker(o) {}
  resilience::HealthChecker checker;  // control loop
  std::atomic<bool> healthy{true};    // checker.healthy(), for any thread
  std::weak_ptr<EndpointChannel> channel;
  runtime::TimerId timer;             // control loop
  bool stopped = false;               // control loop: the endpoint left
};

ServiceChannel::ServiceChannel(std::string service, ServiceChannelOptions options)
    : service_(std::move(service)), options_(std::move(options)) {}

namespace {

// The JSON policy sections of `o`, parsed (errors name their path).
absl::StatusOr<ServiceChannelOptions::Policies> ParsePolicies(const ServiceChannelOptions& o) {
  ServiceChannelOptions::Policies p;
  auto path = [&](const char* key) { return absl::StrCat(o.config_path, ".", key); };
  if (!o.circuit_breaker.is_null()) {
    auto parsed = resilience::ParseCircuitBreaker(o.circuit_breaker, path("circuit_breaker"));
    if (!parsed.ok()) return parsed.status();
    p.circuit_breaker = *parsed;
  }
  if (!o.retry.is_null()) {
    auto parsed = resilience::ParseRetryPolicy(o.retry, path("retry"));
    if (!parsed.ok()) return parsed.status();
    p.retry = *std::move(parsed);
  }
  if (!o.hedging.is_null()) {
    auto parsed = resilience::ParseHedgingPolicy(o.hedging, path("hedging"));
    if (!parsed.ok()) return parsed.status();
    p.hedging = *parsed;
  }
  if (!o.outlier_detection.is_null()) {
    auto parsed = resilience::ParseOutlierDetection(o.outlier_detection, path("outlier_detection"));
    if (!parsed.ok()) return parsed.status();
    p.outlier_detection = *parsed;
  }
  if (!o.health_check.is_null()) {
    auto parsed = resilience::ParseHealthCheck(o.health_check, path("health_check"));
    if (!parsed.ok()) return parsed.status();
    p.health_check = *parsed;
  }
  if (!o.fault.is_null()) {
    auto parsed = resilience::ParseFaultInjection(o.fault, path("fault"));
    if (!parsed.ok()) return parsed.status();
    p.fault = *parsed;
  }
  return p;
}

bool SameBudget(const resilience::RetryBudgetOptions& a, const resilience::RetryBudgetOptions& b) {
  return a.ratio == b.ratio && a.min_per_second == b.min_per_second && a.ttl == b.ttl;
}
bool SameBreaker(const resilience::CircuitBreakerOptions& a,
                 const resilience::CircuitBreakerOptions& b) {
  return a.max_pending == b.max_pending && a.max_requests == b.max_requests &&
         a.max_retries == b.max_retries;
}
bool SameStats(const lb::EndpointStatsOptions& a, const lb::EndpointStatsOptions& b) {
  return a.decay == b.decay && a.initial == b.initial && a.failure_penalty == b.failure_penalty;
}

}  // namespace

namespace client_internal {

// The layers of one ServiceChannel, top to bottom. Shared with its calls
// (through LiveCalls), which release what they were admitted to after the
// channel may have gone.
struct Stack {
  std::unique_ptr<FaultLayer> fault;
  std::unique_ptr<DeadlineLayer> deadline;
  std::unique_ptr<RetryLayer> retry;
  std::unique_ptr<HedgingLayer> hedging;
  std::unique_ptr<BreakerLayer> breaker;
  std::unique_ptr<BalancerLayer> balancer;
  std::unique_ptr<EndpointHealthLayer> health;
  std::unique_ptr<PoolLayer> pool;
  std::vector<Layer*> layers;     // top to bottom: what Describe() prints
  std::vector<Layer*> admitters;  // with Layer::kAdmit, bottom to top
  std::vector<Layer*> observers;  // with Layer::kAttemptEnd, top to bottom
  std::vector<Layer*> finishers;  // with Layer::kCallEnd, top to bottom
  std::unique_ptr<Layer> metrics;  // the metrics recorder, when asked for
  std::unique_ptr<Layer> tracing;  // the span exporter's layer, when asked for
  // The clock call latencies are read from (the channel's).
  runtime::Clock* clock = nullptr;

  // Admission runs from the bottom up: the layer nearest the wire refuses
  // first, so those above count only calls that go ahead (a call refused
  // by the breaker earns no retry budget).
  absl::Status Admit(const CallInfo& call) {
    for (size_t i = 0; i < admitters.size(); ++i) {
      absl::Status st = admitters[i]->Admit(call);
      if (st.ok()) continue;
      for (size_t j = 0; j < i; ++j) admitters[j]->Release();
      return st;
    }
    return absl::OkStatus();
  }
  void Release() {
    for (Layer* l : admitters) l->Release();
  }
  void AttemptEnded(const AttemptInfo& attempt, const CallResult& r) {
    for (Layer* l : observers) l->OnAttemptEnd(attempt, r);
  }
  // A call that started at `start` ends with `r`, at `end` (read from the
  // clock when InfinitePast(): the caller had no fresh reading).
  void CallEnded(absl::string_view method, absl::Time start, const CallResult& r, int attempts,
                 const Metadata* metadata, absl::Time end = absl::InfinitePast()) {
    if (finishers.empty()) return;
    CallEndInfo info;
    info.method = method;
    info.end = end == absl::InfinitePast() ? clock->Now() : end;
    info.latency = core::TimeBetween(info.end, start);
    info.attempts = attempts;
    info.metadata = metadata;
    for (Layer* l : finishers) l->OnCallEnd(info, r);
  }
};

}  // namespace client_internal

namespace {

// What a stack may take over from the one it replaces.
struct Shared {
  std::shared_ptr<resilience::RetryBudget> budget;
  std::shared_ptr<resilience::CircuitBreaker> breaker;
  std::shared_ptr<resilience::RetryBudget> hedge_budget;  // with hedging
  std::shared_ptr<resilience::LatencyTracker> latency;    // with percentile hedging
};

// The one place the client's layers are composed, top to bottom. Each is
// one unit with one job (meshlib/client/layers/); a layer that only admits
// or observes calls is one line here.
std::shared_ptr<client_internal::Stack> BuildLayers(
    const ServiceChannelOptions& o, std::unique_ptr<lb::Policy> policy,
    const resilience::RetryPolicy& retry, const resilience::HedgingPolicy& hedging,
    const resilience::FaultInjection& fault, Shared shared,
    std::unique_ptr<resilience::OutlierDetector> outliers,
    std::optional<resilience::HealthCheckOptions> health, std::string health_source,
    std::function<void()> on_outlier_signal) {
  auto s = std::make_shared<client_internal::Stack>();
  // Fault first: an injected failure or delay is what the caller sees,
  // before any deadline starts or any budget is earned.
  s->fault = std::make_unique<FaultLayer>(fault);
  // The deadline covers every attempt below it: retries and hedges share it.
  s->deadline = std::make_unique<DeadlineLayer>(o.channel.default_timeout, retry.per_try_timeout);
  // Retry above hedging: a retry starts a new round of attempts, which may
  // be hedged again.
  s->retry = std::make_unique<RetryLayer>(retry, shared.budget, shared.breaker);
  s->hedging = std::make_unique<HedgingLayer>(hedging, shared.hedge_budget, shared.budget,
                                              shared.latency);
  // The breaker below both, so that their extra attempts count against it;
  // above the balancer, so that a refused call picks nothing.
  s->breaker = std::make_unique<BreakerLayer>(shared.breaker);
  // The balancer picks among the endpoints that endpoint health lets
  // through; the pool below holds their connections.
  s->balancer = std::make_unique<BalancerLayer>(std::move(policy));
  s->health = std::make_unique<EndpointHealthLayer>(std::move(outliers), std::move(health),
                                                    std::move(health_source),
                                                    std::move(on_outlier_signal));
  s->pool = std::make_unique<PoolLayer>(o.channel, o.channel_factory, o.drain_timeout);
  s->layers = {s->fault.get(),    s->deadline.get(), s->retry.get(),  s->hedging.get(),
               s->breaker.get(),  s->balancer.get(), s->health.get(), s->pool.get()};
  // Metrics on top: they see each call as its caller does, and each attempt.
  if (o.metrics != nullptr) {
    s->metrics = std::make_unique<MetricsLayer>(*o.metrics, o.metrics_service);
    s->layers.insert(s->layers.begin(), s->metrics.get());
  }
  // Tracing on top too: spans of calls as their callers saw them.
  if (o.span_exporter) {
    s->tracing = std::make_unique<TracingLayer>(o.span_exporter, o.metrics_service);
    s->layers.insert(s->layers.begin(), s->tracing.get());
  }
  s->clock = o.clock != nullptr ? o.clock : &runtime::RealClock();
  for (auto it = s->layers.rbegin(); it != s->layers.rend(); ++it) {
    if ((*it)->hooks() & Layer::kAdmit) s->admitters.push_back(*it);
  }
  for (Layer* l : s->layers) {
    if (l->hooks() & Layer::kAttemptEnd) s->observers.push_back(l);
    if (l->hooks() & Layer::kCallEnd) s->finishers.push_back(l);
  }
  return s;
}

}  // namespace

absl::StatusOr<std::shared_ptr<ServiceChannel>> ServiceChannel::Create(
    std::string service, const nlohmann::json& discovery, ServiceChannelOptions options) {
  if (auto st = options.channel.Validate(); !st.ok()) return st;
  if (options.metrics_service.empty()) options.metrics_service = service;
  if (options.drain_timeout <= absl::ZeroDuration()) {
    options.drain_timeout = std::min(options.channel.default_timeout, absl::Minutes(5));
  }
  if (options.config_path.empty()) options.config_path = absl::StrCat("services.", service);
  if (options.clock == nullptr) options.clock = &runtime::RealClock();
  if (options.lb_context.clock == nullptr) options.lb_context.clock = options.clock;
  if (options.lb_context.seed == 0) options.lb_context.seed = options.seed;
  auto choice = lb::PolicyRegistry::Global().Select(
      options.load_balancer, absl::StrCat(options.config_path, ".load_balancer"));
  if (!choice.ok()) return choice.status();
  auto policy = choice->factory->Create(choice->config, choice->path, options.lb_context);
  if (!policy.ok()) return policy.status();
  absl::StatusOr<ServiceChannelOptions::Policies> parsed =
      options.policies.has_value() ? *options.policies : ParsePolicies(options);
  if (!parsed.ok()) return parsed.status();
  const resilience::CircuitBreakerOptions& breaker = parsed->circuit_breaker;
  const resilience::RetryPolicy& retry = parsed->retry;
  const resilience::HedgingPolicy& hedging = parsed->hedging;
  std::optional<resilience::OutlierDetectionOptions> outlier = parsed->outlier_detection;
  std::optional<resilience::HealthCheckOptions> health = parsed->health_check;
  const resilience::FaultInjection& fault = parsed->fault;

  if (options.channel.runtime == nullptr) {
    auto rt = runtime::Runtime::Create(options.channel.io_threads, absl::StrCat(service, "-io"),
                                       runtime::EventLoopOptions{options.channel.busy_poll});
    if (!rt.ok()) return rt.status();
    options.channel.runtime = *std::move(rt);
  }
  std::unique_ptr<ServiceChannel> sc(new ServiceChannel(service, options));
  sc->clock_ = options.clock;
  // What the replaced channel learned carries over where its settings are
  // the same (see ServiceChannelOptions::predecessor).
  const ServiceChannel* prev = options.predecessor.get();
  const Stack* was = prev != nullptr ? prev->stack_.get() : nullptr;
  sc->predecessor_ = options.predecessor;
  // Only predecessor_ holds it, and only until the first update: a chain of
  // replaced channels must not stay alive through the options.
  sc->options_.predecessor.reset();
  Shared shared;
  if (was != nullptr && SameBudget(was->retry->policy().budget, retry.budget)) {
    shared.budget = was->retry->budget();
  } else {
    shared.budget = std::make_shared<resilience::RetryBudget>(retry.budget, options.clock);
  }
  if (was != nullptr && SameBreaker(was->breaker->breaker().options(), breaker)) {
    shared.breaker = was->breaker->shared();
  } else {
    shared.breaker = std::make_shared<resilience::CircuitBreaker>(breaker, service);
  }
  if (hedging.enabled) {
    if (was != nullptr && was->hedging->hedge_budget() != nullptr &&
        was->hedging->policy().max_extra_load == hedging.max_extra_load &&
        was->retry->policy().budget.ttl == retry.budget.ttl) {
      shared.hedge_budget = was->hedging->hedge_budget();
    } else {
      resilience::RetryBudgetOptions hb;
      hb.ratio = hedging.max_extra_load;
      hb.min_per_second = 1;
      hb.ttl = retry.budget.ttl;
      shared.hedge_budget = std::make_shared<resilience::RetryBudget>(hb, options.clock);
    }
  }
  if (hedging.enabled && hedging.percentile > 0) {
    if (was != nullptr && was->hedging->latency() != nullptr &&
        was->hedging->policy().min_samples == hedging.min_samples) {
      shared.latency = was->hedging->latency();
    } else {
      resilience::LatencyTrackerOptions lt;
      lt.min_samples = hedging.min_samples;
      shared.latency = std::make_shared<resilience::LatencyTracker>(lt, options.clock);
    }
  }
  sc->health_source_ = options.health_source;
  if (sc->health_source_ != nullptr) {
    outlier.reset();  // judged by the source
    health.reset();
  }
  std::unique_ptr<resilience::OutlierDetector> outliers;
  if (outlier.has_value()) {
    outliers = std::make_unique<resilience::OutlierDetector>(*outlier, options.clock);
  }
  ServiceChannel* self = sc.get();
  sc->stack_ = BuildLayers(sc->options_, *std::move(policy), parsed->retry, parsed->hedging, fault,
                           std::move(shared), std::move(outliers), std::move(health),
                           sc->health_source_ != nullptr ? sc->health_source_->service_ : "",
                           [self] { self->RequestOutlierEvaluation(); });
  sc->stats_options_ = sc->stack_->balancer->policy().StatsOptions();
  sc->lifeline_ = std::make_shared<Lifeline>();
  sc->live_ = std::make_shared<LiveCalls>(sc->stack_);
  sc->lifeline_->sc = sc.get();
  if (options.control_loop != nullptr) {
    sc->control_ = options.control_loop;
  } else {
    auto loop = runtime::EventLoop::Create(absl::StrCat(service, "-ctl"));
    if (!loop.ok()) return loop.status();
    sc->control_ = runtime::ShareOffLoop(std::move(*loop));
  }
  if (options.shared_discovery != nullptr) {
    sc->discovery_ = options.shared_discovery;
  } else {
    auto d = discovery::Discovery::Create(service, discovery, sc->control_.get(),
                                          absl::StrCat(options.config_path, ".discovery"),
                                          discovery::ResolverRegistry::Global(), options.seed);
    if (!d.ok()) return d.status();
    sc->discovery_ = *std::move(d);
  }
  ServiceChannel* raw = sc.get();
  if (sc->health_source_ != nullptr) {
    ServiceChannel* source = sc->health_source_.get();
    source->control_->RunAndWait([source, raw] { source->dependents_.push_back(raw); });
  }
  sc->subscription_ = sc->discovery_->Subscribe(
      [raw](std::shared_ptr<const discovery::EndpointSet> set) { raw->Apply(std::move(set)); });
  // Two references: the owners' (what Create returns; the last one going
  // closes the channel, ending its calls) and the internal one, which
  // attempts in flight share, so that the memory stays until the last
  // attempt's callback has run.
  std::shared_ptr<ServiceChannel> internal = runtime::ShareOffLoop(std::move(sc));
  internal->self_ = internal;
  return std::shared_ptr<ServiceChannel>(
      raw, [internal = std::move(internal)](ServiceChannel* p) mutable {
        p->Close("service channel released");
        internal.reset();
      });
}

namespace {

// The callbacks of one channel's calls running on this thread (nested: a
// callback that makes a call that completes at once), so that a channel
// destroyed from inside one of its own callbacks does not wait for it.
struct ThreadFinishing {
  const void* live = nullptr;
  int depth = 0;
};
thread_local ThreadFinishing thread_finishing;

class FinishingHere {
 public:
  explicit FinishingHere(const void* live) : saved_(thread_finishing) {
    if (thread_finishing.live == live) {
      ++thread_finishing.depth;
    } else {
      thread_finishing = {live, 1};
    }
  }
  ~FinishingHere() { thread_finishing = saved_; }
  FinishingHere(const FinishingHere&) = delete;
  FinishingHere& operator=(const FinishingHere&) = delete;

 private:
  const ThreadFinishing saved_;
};

int FinishingOnThisThread(const void* live) {
  return thread_finishing.live == live ? thread_finishing.depth : 0;
}

}  // namespace

ServiceChannel::~ServiceChannel() {
  // Calls in flight or waiting on a timer (a retry's backoff, a hedge
  // delay, an injected delay) end with CANCELLED now; a timer running right
  // now is waited for.
  Close("service channel destroyed");
  WaitForCallbacksElsewhere();
  {
    // Waits for timer callbacks running now.
    std::unique_lock<std::shared_mutex> lock(lifeline_->mu);
    lifeline_->sc = nullptr;
  }
  discovery_->Unsubscribe(subscription_);
  discovery_.reset();
  control_->RunAndWait([this] {
    control_->Cancel(drain_timer_);
    control_->Cancel(outlier_timer_);
    if (health_source_ != nullptr) {
      auto& deps = health_source_->dependents_;
      deps.erase(std::remove(deps.begin(), deps.end(), this), deps.end());
    } else {
      for (auto& [addr, m] : members_) {
        if (m.health != nullptr) control_->Cancel(m.health->timer);
      }
    }
    // Channels close here, off the request path; calls still in flight on
    // them complete with CANCELLED.
    snapshot_.Update(nullptr);
    members_.clear();
    stack_->pool->Clear();
  });
}


void ServiceChannel::Apply(std::shared_ptr<const discovery::EndpointSet> set) {
  std::map<std::string, Member, std::less<>> next;
  std::vector<discovery::Endpoint> kept;
  kept.reserve(set->size());
  bool filtered = false;
  for (const discovery::Endpoint& e : set->endpoints()) {
    if (options_.endpoint_filter && !options_.endpoint_filter(e)) {
      filtered = true;
      continue;
    }
    Member m;
    if (auto it = members_.find(e.address); it != members_.end()) {
      m = it->second;
    } else {
      absl::StatusOr<std::shared_ptr<EndpointChannel>> created = stack_->pool->Open(e.address);
      if (!created.ok()) {
        // Discovery validated the address; this is a resource failure.
        core::Log(core::LogLevel::kWarning,
                  absl::StrCat(service_, ": cannot open a channel to ", e.address, ": ",
                               created.status().ToString()));
        continue;
      }
      m.channel = *std::move(created);
      if (stack_->balancer->policy().ConnectsToEveryEndpoint()) m.channel->Connect();
      // An endpoint the replaced channel knew keeps what was learned of it.
      const Member* known = nullptr;
      if (predecessor_ != nullptr) {
        if (auto it = predecessor_->members_.find(e.address); it != predecessor_->members_.end()) {
          known = &it->second;
        }
      }
      if (known != nullptr && SameStats(predecessor_->stats_options_, stats_options_)) {
        m.stats = known->stats;
      } else {
        m.stats = std::make_shared<lb::EndpointStats>(stats_options_);
        m.stats->set_address(e.address);
      }
      if (resilience::OutlierDetector* outliers = stack_->health->outliers()) {
        m.outlier = outliers->AddHost(
            e.address, known != nullptr ? predecessor_->stack_->health->outliers() : nullptr);
      }
      if (health_source_ != nullptr) {
        if (auto it = health_source_->members_.find(e.address);
            it != health_source_->members_.end()) {
          m.outlier = it->second.outlier;
          m.health = it->second.health;
        }
      }
      if (stack_->health->health_checks().has_value()) {
        m.health = std::make_shared<HealthProbe>(*stack_->health->health_checks());
        if (known != nullptr && known->health != nullptr) {
          m.health->checker.Adopt(known->health->checker);
          m.health->healthy.store(m.health->checker.healthy(), std::memory_order_relaxed);
        }
        m.health->channel = m.channel;
        StartHealthProbe(e.address, m.health,
                         m.health->checker.FirstProbeDelay(lb::ThreadRandom().Next()));
      }
    }
    kept.push_back(e);
    next.emplace(e.address, std::move(m));
  }
  if (filtered || kept.size() != set->size()) {
    set = discovery::EndpointSet::Create(std::move(kept));
  }
  for (auto& [addr, m] : members_) {
    if (next.count(addr)) continue;
    stack_->pool->Drain(m.channel, clock_->Now());
    if (stack_->health->outliers() != nullptr) stack_->health->outliers()->RemoveHost(addr);
    if (m.health != nullptr && health_source_ == nullptr) {
      m.health->stopped = true;
      control_->Cancel(m.health->timer);
    }
  }
  members_ = std::move(next);
  set_ = std::move(set);
  predecessor_.reset();  // what it knew is taken over
  std::map<std::string, std::shared_ptr<lb::EndpointStats>, std::less<>> stats;
  std::vector<std::string> addresses;
  for (const auto& [addr, m] : members_) {
    addresses.push_back(addr);
    stats.emplace(addr, m.stats);
  }
  Rebuild();
  {
    core::MutexLock lock(&mu_);
    addresses_ = std::move(addresses);
    stats_by_address_ = std::move(stats);
  }
  {
    core::MutexLock lock(&mu_);
    updates_.fetch_add(1, std::memory_order_relaxed);
  }
  cv_.notify_all();
  CollectDrained();
  if (stack_->health->outliers() != nullptr && !outlier_timer_.valid()) EvaluateOutliers();
}

void ServiceChannel::Rebuild() {
  auto snap = std::make_unique<Snapshot>();
  std::vector<lb::LbEndpoint> lb_endpoints;
  lb_endpoints.reserve(set_->size());
  snap->members.reserve(set_->size());
  std::vector<std::pair<std::string, Member>> view;
  size_t ejected = 0, unhealthy = 0;
  for (const discovery::Endpoint& e : set_->endpoints()) {
    const Member& m = members_.find(e.address)->second;
    bool healthy = true;
    const bool is_ejected =
        m.outlier != nullptr && m.outlier->state() == resilience::OutlierState::kEjected;
    if (is_ejected) {
      healthy = false;
      ++ejected;
    }
    snap->ejected.push_back(is_ejected);
    if (m.health != nullptr && !m.health->healthy.load(std::memory_order_relaxed)) {
      healthy = false;
      ++unhealthy;
    }
    lb_endpoints.push_back(lb::LbEndpoint{e, m.stats, healthy});
    snap->members.push_back(m);
    view.emplace_back(e.address, m);
  }
  snap->set = set_;
  snap->picker = stack_->balancer->policy().Build(lb_endpoints);
  size_t count = snap->members.size();
  // Waits (briefly) for calls still picking from the old snapshot.
  snapshot_.Update(std::move(snap));
  endpoint_count_.store(count, std::memory_order_relaxed);
  stack_->health->SetCounts(ejected, unhealthy);
  stack_->pool->SetCounts(count, ejected, unhealthy);
  {
    core::MutexLock lock(&mu_);
    view_ = std::move(view);
  }
  for (ServiceChannel* d : dependents_) d->OnSourceHealthChanged();
}

void ServiceChannel::OnSourceHealthChanged() {
  if (set_ == nullptr) return;
  for (auto& [addr, m] : members_) {
    if (auto it = health_source_->members_.find(addr); it != health_source_->members_.end()) {
      m.outlier = it->second.outlier;
      m.health = it->second.health;
    }
  }
  Rebuild();
}

void ServiceChannel::RequestOutlierEvaluation() {
  if (health_source_ != nullptr) return health_source_->RequestOutlierEvaluation();
  if (outlier_evaluation_posted_.exchange(true, std::memory_order_acq_rel)) return;
  control_->Post([life = lifeline_] {
    std::shared_lock<std::shared_mutex> lock(life->mu);
    if (life->sc == nullptr) return;
    life->sc->outlier_evaluation_posted_.store(false, std::memory_order_release);
    life->sc->EvaluateOutliers();
  });
}

void ServiceChannel::EvaluateOutliers() {
  resilience::OutlierDetector* outliers = stack_->health->outliers();
  if (outliers == nullptr || set_ == nullptr) return;
  if (outliers->Evaluate()) Rebuild();
  control_->Cancel(outlier_timer_);
  // The sweep's time is on clock_, which may not be the control loop's.
  outlier_timer_ = control_->RunAfter(outliers->NextEvaluation() - clock_->Now(), [this] {
    outlier_timer_ = {};
    EvaluateOutliers();
  });
}

void ServiceChannel::StartHealthProbe(const std::string& address,
                                      const std::shared_ptr<HealthProbe>& hp,
                                      absl::Duration delay) {
  hp->timer = control_->RunAfter(delay, [this, address, hp] {
    hp->timer = {};
    std::shared_ptr<EndpointChannel> channel = hp->channel.lock();
    if (hp->stopped || channel == nullptr) return;
    if (!stack_->balancer->policy().ConnectsToEveryEndpoint() &&
        channel->ReadyConnections() == 0) {
      // Outside the balancer's subset (never picked, so never connected): a
      // probe would open the connection the subset exists to avoid.
      return StartHealthProbe(address, hp, hp->checker.NextProbeDelay(lb::ThreadRandom().Next()));
    }
    CallOptions o;
    o.timeout = hp->checker.options().timeout;
    core::ScopedNoDeadline no_deadline;
    channel->Call(hp->checker.options().method, "", o,
                  [life = lifeline_, hp, address](CallResult r) {
                    bool ok = r.status.ok() && resilience::ProbeReplySaysServing(
                                                   hp->checker.options().method, r.payload);
                    std::shared_lock<std::shared_mutex> lock(life->mu);
                    if (life->sc == nullptr) return;
                    ServiceChannel* sc = life->sc;
                    sc->control_->Post([life, hp, address, ok] {
                      std::shared_lock<std::shared_mutex> lock(life->mu);
                      if (life->sc == nullptr || hp->stopped) return;
                      life->sc->OnHealthProbeResult(hp, ok);
                      life->sc->StartHealthProbe(
                          address, hp, hp->checker.NextProbeDelay(lb::ThreadRandom().Next()));
                    });
                  });
  });
}

void ServiceChannel::OnHealthProbeResult(const std::shared_ptr<HealthProbe>& hp, bool ok) {
  if (!hp->checker.OnProbeResult(ok)) return;
  hp->healthy.store(hp->checker.healthy(), std::memory_order_relaxed);
  Rebuild();
}

void ServiceChannel::CollectDrained() {
  if (stack_->pool->CollectDrained(clock_->Now()) && !drain_timer_.valid()) {
    drain_timer_ = control_->RunAfter(kDrainCheck, [this] {
      drain_timer_ = {};
      CollectDrained();
    });
  }
}

bool ServiceChannel::PickMember(const CallOptions& options,
                                absl::Span<const std::string> avoid, Picked* out) const {
  core::RcuReadGuard guard(snapshot_);
  const Snapshot* s = snapshot_.Get(guard);
  if (s == nullptr || s->members.empty()) return false;
  auto avoided = [&](int i) {
    return std::find(avoid.begin(), avoid.end(), s->members[i].channel->address()) != avoid.end();
  };
  // An endpoint that cannot be reached right now (its connections wait out
  // a reconnect backoff) is skipped like a tried one, as gRPC's balancers
  // pick only READY subchannels: a call there would fail at once. So is one
  // ejected since this snapshot was built: the ejection is visible at once,
  // the rebuilt balancer a moment later (a subset's channel, which shares
  // the ejection, rebuilds after the whole service's). One ejected when it
  // was built is the balancer's business (it may use it when too few are
  // left).
  auto skip = [&](int i) {
    const auto& o = s->members[i].outlier;
    return avoided(i) || s->members[i].channel->Unreachable() ||
           (!s->ejected[i] && o != nullptr && o->state() == resilience::OutlierState::kEjected);
  };
  lb::PickArgs args;
  args.hash = options.hash_key;
  args.has_hash = options.has_hash_key;
  int i = s->picker->Pick(args);
  if (s->members.size() > 1 && (i < 0 || skip(i))) {
    // Ask the policy again a few times, then take the next endpoint in
    // order that is neither tried nor unreachable; failing that, one not
    // tried; failing that, the policy's pick.
    int first = i;
    for (int tries = 0; tries < 3 && (i < 0 || skip(i)); ++tries) {
      args.has_hash = false;
      i = s->picker->Pick(args);
    }
    int n = static_cast<int>(s->members.size());
    int from = i < 0 ? 0 : i;
    for (auto bad : {std::function<bool(int)>(skip), std::function<bool(int)>(avoided)}) {
      if (i >= 0 && !bad(i)) break;
      for (int k = 1; k <= n; ++k) {
        int j = (from + k) % n;
        if (!bad(j)) {
          i = j;
          break;
        }
      }
    }
    if (i < 0) i = first;
  }
  if (i < 0 || static_cast<size_t>(i) >= s->members.size()) return false;
  // An endpoint back from ejection takes one probe at a time until its
  // result is known; other calls go elsewhere.
  auto in_probation = [&](int j) {
    const auto& o = s->members[j].outlier;
    return o != nullptr && o->state() == resilience::OutlierState::kProbation;
  };
  bool probe = false;
  if (in_probation(i)) {
    probe = s->members[i].outlier->TryTakeProbe();
    if (!probe) {
      int n = static_cast<int>(s->members.size());
      for (int k = 1; k < n; ++k) {
        int j = (i + k) % n;
        if (!skip(j) && !in_probation(j)) {
          i = j;
          break;
        }
      }
    }
  }
  out->channel = s->members[i].channel;
  out->stats = s->members[i].stats;
  out->outlier = s->members[i].outlier;
  out->probe = probe;
  return true;
}

CallResult ServiceChannel::NoEndpoints() const {
  discovery::DiscoveryStats ds = discovery_->stats();
  std::string why = ds.updates == 0 ? "discovery has produced no endpoints yet"
                                    : "the endpoint set is empty";
  if (!ds.last_error.ok()) {
    absl::StrAppend(&why, " (last discovery error: ", ds.last_error.message(), ")");
  }
  CallResult r;
  r.status = absl::UnavailableError(absl::StrCat("service ", service_, ": ", why));
  r.not_processed = true;
  return r;
}

ServiceChannel::Next ServiceChannel::Decide(const CallResult& r, const CallOptions& options,
                                            int attempts, bool* transparent_used,
                                            absl::Time deadline, absl::Duration* delay) {
  if (r.status.ok() || clock_->Now() >= deadline) return Next::kDone;
  if (closing_.load(std::memory_order_acquire)) return Next::kDone;
  bool several = endpoint_count_.load(std::memory_order_relaxed) > 1;
  return stack_->retry->Decide(r, options.idempotent, attempts, several, transparent_used, delay);
}

void ServiceChannel::RecordAttempt(absl::string_view method, const Picked& picked,
                                   const CallResult& r, absl::Duration latency, absl::Time now,
                                   int number, const Metadata* metadata) {
  AttemptInfo a;
  a.method = method;
  a.number = number;
  a.metadata = metadata;
  a.latency = latency;
  a.end = now;
  a.stats = picked.stats.get();
  a.outlier = picked.outlier.get();
  a.probe = picked.probe;
  // The channel is not held by an asynchronous attempt's callback; the
  // stats (which carry the address) are.
  if (picked.stats != nullptr) a.endpoint = picked.stats->address();
  stack_->AttemptEnded(a, r);
}

// One attempt of an asynchronous call: a slot in its CallState, reused
// once the attempt's callback has run. The callback holds a shared_ptr to
// the slot that shares the call's ownership (an aliasing shared_ptr): small
// enough to live inside the callback without an allocation.
struct ServiceChannel::AttemptSlot {
  CallState* call = nullptr;
  // The fields below are guarded by call->mu, except `self`, `picked`,
  // `start` and `pending`: written before the attempt is sent, read by its
  // callback.
  bool busy = false;
  uint64_t generation = 0;  // which use of the slot `handle` belongs to
  CallHandle handle;
  bool retry_slot = false;  // holds a circuit-breaker max_retries slot
  bool pending = false;     // holds a circuit-breaker max_pending slot
  absl::Time start;
  int number = 0;  // the attempt's number in its call (1, 2, ...)
  Picked picked;  // the endpoint's signals (not its channel)
  // Keeps the channel alive until the callback has run, so a late answer
  // (a losing hedge, a cancelled attempt) finds it.
  std::shared_ptr<ServiceChannel> self;
};

// A request kept for the call's attempts: inside the call's own allocation
// when small (most are), on the heap otherwise.
class ServiceChannel::RequestBytes {
 public:
  void Assign(absl::string_view bytes) {
    size_ = bytes.size();
    if (size_ <= kInline) {
      if (size_ > 0) std::memcpy(inline_, bytes.data(), size_);
      return;
    }
    heap_ = std::make_unique<char[]>(size_);
    std::memcpy(heap_.get(), bytes.data(), size_);
  }
  absl::string_view view() const {
    return absl::string_view(size_ <= kInline ? inline_ : heap_.get(), size_);
  }

 private:
  static constexpr size_t kInline = 256;
  size_t size_ = 0;
  char inline_[kInline];
  std::unique_ptr<char[]> heap_;
};

// One asynchronous call across its attempts (one at a time, or several when
// hedged). If it is destroyed before it completed (its timer dropped with a
// stopping runtime), the caller still hears of it: CANCELLED.
struct ServiceChannel::CallState final : public Cancellable,
                                         public std::enable_shared_from_this<CallState> {
  using CallLock = core::SpinLock;
  // Hedging allows at most this many attempts in flight
  // (resilience::ParseHedgingPolicy); retries go one at a time.
  static constexpr int kMaxInFlight = 5;
  // Slots inside the call; a call hedged wider gets the rest on the heap.
  static constexpr int kInlineSlots = 2;

  // `max_in_flight`: attempts the call may have in flight at once.
  explicit CallState(int max_in_flight) {
    for (AttemptSlot& s : slots) s.call = this;
    extra_slots = std::max(0, std::min(max_in_flight, kMaxInFlight) - kInlineSlots);
    if (extra_slots > 0) {
      extra = std::make_unique<AttemptSlot[]>(extra_slots);
      for (int i = 0; i < extra_slots; ++i) extra[i].call = this;
    }
  }
  // Every slot, inline first.
  template <typename Fn>
  void ForEachSlot(Fn fn) {
    for (AttemptSlot& s : slots) fn(s);
    for (int i = 0; i < extra_slots; ++i) fn(extra[i]);
  }

  // By the caller, through the CallHandle.
  void Cancel() override {
    CancelWith(absl::CancelledError(absl::StrCat("call to ", method, " cancelled by the caller")));
  }
  // Decides the outcome, stops every attempt in flight, then completes the
  // call with `status` (unless it was already decided).
  void CancelWith(absl::Status status) {
    absl::InlinedVector<CallHandle, 2> attempts;
    {
      std::lock_guard<CallLock> lock(mu);
      if (over) return;
      over = true;
      CollectInFlight(&attempts);
    }
    for (CallHandle& h : attempts) h.Cancel();  // their results are dropped
    CallResult r;
    r.status = std::move(status);
    Finish(std::move(r));
  }
  // Under mu: the handles of the attempts in flight.
  void CollectInFlight(absl::InlinedVector<CallHandle, 2>* out) {
    if (in_flight == 0) return;
    ForEachSlot([out](AttemptSlot& s) {
      if (s.busy) out->push_back(s.handle);
    });
  }
  // Under mu: a slot for a new attempt (null if all are taken, which the
  // bound on hedges rules out).
  AttemptSlot* TakeSlot() {
    AttemptSlot* free = nullptr;
    ForEachSlot([&free](AttemptSlot& s) {
      if (free == nullptr && !s.busy) free = &s;
    });
    if (free == nullptr) return nullptr;
    free->busy = true;
    ++free->generation;
    ++in_flight;
    return free;
  }
  // Under mu: the attempt in `s` is over.
  void ReleaseSlot(AttemptSlot* s);

  std::string method;
  RequestBytes request;
  CallOptions options;
  absl::Time deadline;
  absl::Time start;  // by the channel's clock
  // The loop of the call's timers (backoff, hedge, injected delay); chosen
  // at the first timer (TimerLoopOf), most calls never need one.
  std::atomic<runtime::Executor*> timer_loop{nullptr};
  bool hedged = false;  // hedging applies to this call
  // What the caller asked to keep until the call completes (a mesh's
  // stack, which owns the fault in use).
  std::shared_ptr<const void> keep_alive;

  // Held for a few hundred instructions at most: an attempt prepared (a
  // pick), a slot taken or released, an outcome claimed. The retry budget's
  // own lock, taken under it when a failure is decided, is as short. A spin
  // lock that yields its CPU when the holder was preempted: uncontended, it
  // costs one atomic exchange where a mutex costs a call and two.
  CallLock mu;
  CallCallback done;     // guarded by mu; empty once finished
  // Guarded by mu: the outcome is decided (an answer won, the caller
  // cancelled, the channel closed); no attempt starts any more, and those
  // in flight are being cancelled.
  bool over = false;
  int attempts = 1;      // counted against the retry policy's max_attempts
  bool transparent_used = false;
  absl::InlinedVector<std::string, 2> tried;
  AttemptSlot slots[kInlineSlots];  // guarded by mu (see AttemptSlot)
  std::unique_ptr<AttemptSlot[]> extra;
  int extra_slots = 0;
  int in_flight = 0;                // busy slots
  // Keys of the call's timers in ServiceChannel::timers_ (guarded by mu),
  // cancelled when an answer ends the call: a hedge timer must not keep a
  // finished call alive until it fires.
  absl::InlinedVector<uint64_t, 1> timer_keys;
  bool next_holds_retry_slot = false;  // the next attempt is a policy retry

  // Registration in the channel's LiveCalls (links guarded by its shard's
  // mutex); also how the call reaches the circuit breaker that counts it.
  std::shared_ptr<LiveCalls> live;
  CallState* live_prev = nullptr;
  CallState* live_next = nullptr;
  bool live_linked = false;
  // Set by LiveCalls::CloseAndTakeAll for a call it found being destroyed
  // (its destructor ends it): counted as finishing until the destructor is
  // done. Guarded by the shard's lock.
  bool close_counted = false;

  bool finished() const { return over; }
  // Ends the call; call without `mu` held. Runs the callback at most once.
  void Finish(CallResult&& r) {
    std::unique_lock<CallLock> lock(mu);
    FinishLocked(lock, std::move(r), {});
  }
  // The same for a caller holding `mu` (released here, before anything
  // else runs): the attempts in `stop_first` are cancelled, then the caller
  // hears.
  // `end`: when the answer arrived, if the caller read the clock for it.
  void FinishLocked(std::unique_lock<CallLock>& lock, CallResult&& r,
                    absl::Span<CallHandle> stop_first, absl::Time end = absl::InfinitePast());
  ~CallState();
};

// The asynchronous calls of a channel not yet completed, so that Close()
// can end them. Sharded intrusive lists: registering a call costs one
// uncontended lock.
struct ServiceChannel::LiveCalls {
  static constexpr size_t kShards = 16;
  struct alignas(64) Shard {
    core::SpinLock mu;
    CallState* head = nullptr;
    // Calls of this shard taken out to complete whose callback has not
    // returned yet: the channel's destructor waits for them (on the shard's
    // own cache line, which completing touches anyway).
    std::atomic<int> finishing{0};
  };
  explicit LiveCalls(std::shared_ptr<Stack> s) : stack(std::move(s)) {}
  Shard shards[kShards];
  std::atomic<bool> closed{false};
  // What admitted the calls, which they release when they complete; it
  // outlives the channel while calls do.
  const std::shared_ptr<Stack> stack;

  static Shard& ShardOf(LiveCalls* l, const CallState* st) {
    return l->shards[(reinterpret_cast<uintptr_t>(st) >> 6) % kShards];
  }
  // False once closed: the call must not start.
  bool Add(CallState* st) {
    Shard& s = ShardOf(this, st);
    std::lock_guard<core::SpinLock> lock(s.mu);
    if (closed.load(std::memory_order_acquire)) return false;
    st->live_prev = nullptr;
    st->live_next = s.head;
    if (s.head != nullptr) s.head->live_prev = st;
    s.head = st;
    st->live_linked = true;
    return true;
  }
  // A call whose outcome is claimed: counted as finishing until
  // Finished(shard), after its callback returned.
  Shard* BeginFinishing(CallState* st) {
    Shard& s = ShardOf(this, st);
    s.finishing.fetch_add(1, std::memory_order_acq_rel);
    return &s;
  }
  // Takes a call out of the set.
  void Unlink(CallState* st) {
    Shard& s = ShardOf(this, st);
    std::lock_guard<core::SpinLock> lock(s.mu);
    if (!st->live_linked) return;
    if (st->live_prev != nullptr) st->live_prev->live_next = st->live_next;
    else s.head = st->live_next;
    if (st->live_next != nullptr) st->live_next->live_prev = st->live_prev;
    st->live_prev = st->live_next = nullptr;
    st->live_linked = false;
  }
  static void Finished(Shard* s) { s->finishing.fetch_sub(1, std::memory_order_release); }
  // The end of a call's destructor, after the channel closed: if the close
  // counted it as finishing, it is done now.
  void DestroyedAfterClose(CallState* st) {
    Shard& s = ShardOf(this, st);
    bool counted;
    {
      std::lock_guard<core::SpinLock> lock(s.mu);
      counted = st->close_counted;
      st->close_counted = false;
    }
    if (counted) Finished(&s);
  }
  // Callbacks running now, on any thread.
  int FinishingNow() const {
    int n = 0;
    for (const Shard& s : shards) n += s.finishing.load(std::memory_order_acquire);
    return n;
  }
  // Refuses new calls and returns those not yet completed.
  std::vector<std::shared_ptr<CallState>> CloseAndTakeAll() {
    closed.store(true, std::memory_order_release);
    std::vector<std::shared_ptr<CallState>> out;
    for (Shard& s : shards) {
      std::lock_guard<core::SpinLock> lock(s.mu);
      for (CallState* c = s.head; c != nullptr;) {
        CallState* next = c->live_next;
        c->live_prev = c->live_next = nullptr;
        c->live_linked = false;
        if (auto held = c->weak_from_this().lock()) {
          out.push_back(std::move(held));
        } else {
          // Being destroyed right now, on another thread: it completes in
          // its destructor, which the channel's destructor waits for.
          c->close_counted = true;
          s.finishing.fetch_add(1, std::memory_order_acq_rel);
        }
        c = next;
      }
      s.head = nullptr;
    }
    return out;
  }
};


ServiceChannel::CallState::~CallState() {
  if (done) {
    CallResult r;
    r.status = absl::CancelledError("call abandoned while waiting for a timer");
    Finish(std::move(r));
  }
  // A close can have counted this call only while it was linked, which
  // implies the channel was closed by then (and Finish above unlinked it
  // under the same lock): a channel never closed costs no lock here.
  if (live != nullptr && live->closed.load(std::memory_order_acquire)) {
    live->DestroyedAfterClose(this);
  }
}

void ServiceChannel::CallState::ReleaseSlot(AttemptSlot* s) {
  if (s->retry_slot) live->stack->retry->EndRetry();
  s->retry_slot = false;
  s->handle = CallHandle();
  s->busy = false;
  --in_flight;
}

void ServiceChannel::CallState::FinishLocked(std::unique_lock<CallLock>& lock, CallResult&& r,
                                             absl::Span<CallHandle> stop_first, absl::Time end) {
  if (!done) {
    lock.unlock();
    return;
  }
  CallCallback d = std::move(done);
  done = nullptr;
  over = true;
  // Counted as finishing from the moment the outcome is claimed, under the
  // call's lock: a destructor that then finds the call over (CancelWith
  // takes this lock) also finds it counted, and waits for its callback.
  LiveCalls::Shard* shard = live->BeginFinishing(this);
  if (next_holds_retry_slot) {
    next_holds_retry_slot = false;
    live->stack->retry->EndRetry();
  }
  lock.unlock();
  for (CallHandle& h : stop_first) h.Cancel();  // their results are dropped
  live->Unlink(this);
  live->stack->Release();
  live->stack->CallEnded(method, start, r, static_cast<int>(tried.size()), &options.metadata,
                         end);
  std::shared_ptr<const void> held = std::move(keep_alive);
  {
    FinishingHere here(live.get());
    d(std::move(r));
  }
  LiveCalls::Finished(shard);
}

// A call that completed on another thread just before the channel closed
// may still be in its callback: it ends before the destructor returns too.
// (Callbacks of this channel running on this thread are the ones
// destroying it.)
void ServiceChannel::WaitForCallbacksElsewhere() {
  const int own = FinishingOnThisThread(live_.get());
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  for (int spins = 0; live_->FinishingNow() > own; ++spins) {
    if (absl::Now() > give_up) {
      core::Log(core::LogLevel::kWarning,
                absl::StrCat("service ", service_,
                             ": a call's callback has not returned for 10s; the channel is "
                             "destroyed without waiting for it"));
      break;
    }
    if (spins < 100) {
      std::this_thread::yield();
    } else {
      absl::SleepFor(absl::Microseconds(50));
    }
  }
}

void ServiceChannel::RecordUnsent(absl::string_view method, const CallOptions& options,
                                  const CallResult& r) {
  stack_->CallEnded(method, clock_->Now(), r, 0, &options.metadata);
}

void ServiceChannel::Close(absl::string_view reason) {
  EndWaitingCalls(reason);
  for (std::shared_ptr<CallState>& st : live_->CloseAndTakeAll()) {
    st->CancelWith(absl::CancelledError(
        absl::StrCat("service ", service_, ": ", reason, "; call to ", st->method, " ended")));
  }
}

runtime::Executor* ServiceChannel::TimerLoopOf(CallState& st) {
  if (options_.timers != nullptr) return options_.timers;
  // Chosen once: a hedge timer and a retry's backoff may be armed from two
  // threads at once, and must agree.
  runtime::Executor* loop = st.timer_loop.load(std::memory_order_acquire);
  if (loop != nullptr) return loop;
  runtime::Executor* chosen = &options_.channel.runtime->NextLoop();
  if (st.timer_loop.compare_exchange_strong(loop, chosen, std::memory_order_acq_rel)) {
    return chosen;
  }
  return loop;  // another thread chose first
}

void ServiceChannel::EndWaitingCalls(absl::string_view reason) {
  std::map<uint64_t, WaitingCall> waiting;
  {
    std::lock_guard<std::mutex> lock(timers_mu_);
    closing_.store(true, std::memory_order_release);
    waiting.swap(timers_);
  }
  // Every call waiting on a timer ends now, before the destructor returns,
  // like the calls in flight on the channels.
  for (auto& [key, w] : waiting) {
    if (w.timer.valid()) w.loop->Cancel(w.timer);
    w.call->CancelWith(absl::CancelledError(
        absl::StrCat("service ", service_, ": ", reason, " while the call waited")));
  }
}

void ServiceChannel::RunLater(
    runtime::Executor* loop, absl::Duration delay, std::shared_ptr<CallState> st,
    absl::AnyInvocable<void(ServiceChannel*, std::shared_ptr<CallState>)> fn) {
  uint64_t key;
  {
    std::lock_guard<std::mutex> lock(timers_mu_);
    if (closing_.load(std::memory_order_acquire)) {
      key = 0;
    } else {
      key = next_timer_key_++;
      timers_.emplace(key, WaitingCall{loop, runtime::TimerId(), st});
    }
  }
  if (key == 0) {
    return st->CancelWith(
        absl::CancelledError(absl::StrCat("service ", service_, ": channel closed")));
  }
  bool over;
  {
    std::lock_guard<CallState::CallLock> lock(st->mu);
    over = st->over;
    if (!over) st->timer_keys.push_back(key);
  }
  if (over) {  // ended meanwhile: nothing to wait for
    std::lock_guard<std::mutex> lock(timers_mu_);
    timers_.erase(key);
    return;
  }
  runtime::TimerId id = loop->RunAfter(
      delay, [life = lifeline_, key, st = std::move(st), fn = std::move(fn)]() mutable {
        std::shared_ptr<ServiceChannel> self;
        {
          std::shared_lock<std::shared_mutex> lock(life->mu);
          ServiceChannel* sc = life->sc;
          if (sc == nullptr) return;  // the destructor ended the call
          {
            std::lock_guard<std::mutex> timers(sc->timers_mu_);
            if (sc->timers_.erase(key) == 0) return;  // taken by Close or cancelled
          }
          self = sc->self_.lock();
        }
        // Not under the lifeline's lock: `fn` may end the call, and the
        // caller's callback may drop the channel's last reference.
        if (self == nullptr) {
          return st->CancelWith(absl::CancelledError("service channel destroyed"));
        }
        fn(self.get(), std::move(st));
      });
  bool cancelled;
  {
    std::lock_guard<std::mutex> lock(timers_mu_);
    auto it = timers_.find(key);
    cancelled = it == timers_.end();
    if (!cancelled) it->second.timer = id;
  }
  // Taken before its id was known (the call ended, or Close): stop it now.
  if (cancelled) loop->Cancel(id);
}

void ServiceChannel::CancelTimers(absl::Span<const uint64_t> keys) {
  for (uint64_t key : keys) {
    WaitingCall w;
    {
      std::lock_guard<std::mutex> lock(timers_mu_);
      auto it = timers_.find(key);
      if (it == timers_.end()) continue;  // fired, or taken by Close
      w = std::move(it->second);
      timers_.erase(it);
    }
    // A timer firing now finds its key gone and does nothing.
    if (w.timer.valid()) w.loop->Cancel(w.timer);
  }
}

std::optional<CallResult> ServiceChannel::PrepareAttempt(const CallOptions& options,
                                                         absl::Span<const std::string> tried,
                                                         absl::Time deadline, int attempts,
                                                         absl::Time now, Picked* picked,
                                                         absl::Duration* attempt_timeout,
                                                         bool* pending) {
  absl::Duration left = core::TimeBetween(deadline, now);
  if (left <= absl::ZeroDuration()) {
    CallResult r;
    r.status = absl::DeadlineExceededError(
        absl::StrCat("deadline passed after ", attempts, " attempt(s)"));
    return r;
  }
  if (!PickMember(options, tried, picked)) return NoEndpoints();
  *pending = picked->channel->ReadyConnections() == 0;
  if (*pending) {
    if (absl::Status over = stack_->breaker->breaker().TryStartPending(); !over.ok()) {
      picked->Unused();
      CallResult r;
      r.status = std::move(over);
      r.not_processed = true;
      return r;
    }
  }
  *attempt_timeout = stack_->deadline->AttemptTimeout(left);
  return std::nullopt;
}

void ServiceChannel::Attempt(const std::shared_ptr<CallState>& st, absl::Time start) {
  Picked picked;
  absl::Duration attempt_timeout;
  AttemptSlot* slot;
  uint64_t generation;
  int attempt_number = 0;
  bool pending;
  {
    std::unique_lock<CallState::CallLock> lock(st->mu);
    if (st->finished()) return;
    if (start == absl::InfinitePast()) start = clock_->Now();
    if (std::optional<CallResult> failed = PrepareAttempt(st->options, st->tried, st->deadline,
                                                          st->attempts, start, &picked,
                                                          &attempt_timeout, &pending)) {
      // With other attempts in flight (a hedge too late, or with nowhere to
      // go) those decide; otherwise this ends the call.
      if (st->in_flight > 0) return;
      lock.unlock();
      return st->Finish(*std::move(failed));
    }
    slot = st->TakeSlot();
    if (slot == nullptr) {  // more hedges than the policy allows: none
      picked.Unused();
      lock.unlock();
      if (pending) stack_->breaker->breaker().EndPending();
      return;
    }
    generation = slot->generation;
    st->tried.push_back(picked.channel->address());
    attempt_number = static_cast<int>(st->tried.size());
    slot->retry_slot = st->next_holds_retry_slot;
    st->next_holds_retry_slot = false;
  }
  // None while the channel is being destroyed: its destructor ends the call.
  slot->self = self_.lock();
  if (slot->self == nullptr) {
    picked.Unused();
    if (pending) stack_->breaker->breaker().EndPending();
    {
      std::lock_guard<CallState::CallLock> lock(st->mu);
      st->ReleaseSlot(slot);
    }
    return st->CancelWith(
        absl::CancelledError(absl::StrCat("service ", service_, ": channel destroyed")));
  }
  picked.stats->OnCallStart();
  // The callback keeps the endpoint's signals, not its channel: a callback
  // must never hold the last reference to the channel that runs it.
  std::shared_ptr<EndpointChannel> channel = std::move(picked.channel);
  slot->picked = std::move(picked);
  slot->start = start;
  slot->pending = pending;
  slot->number = attempt_number;
  // `start` is this channel's clock reading: the attempt's deadline counts
  // from it, as the call's own does.
  CallHandle handle = channel->CallAttempt(
      start, attempt_timeout, st->method, st->request.view(), st->options,
      [slot = std::shared_ptr<AttemptSlot>(st, slot)](CallResult r) mutable {
        AttemptDone(std::move(slot), std::move(r));
      });
  bool cancel = false;
  {
    std::lock_guard<CallState::CallLock> lock(st->mu);
    // Finished meanwhile (another attempt won): this one is not needed.
    cancel = st->finished();
    // Unless the attempt already ended (its callback ran inline).
    if (!cancel && slot->busy && slot->generation == generation) {
      slot->handle = std::move(handle);
    }
  }
  if (cancel) handle.Cancel();
}

void ServiceChannel::AttemptDone(std::shared_ptr<AttemptSlot>&& slot, CallResult&& r) {
  std::shared_ptr<ServiceChannel> self = std::move(slot->self);
  absl::Time now = self->clock_->Now();
  self->RecordAttempt(slot->call->method, slot->picked, r, core::TimeBetween(now, slot->start),
                      now, slot->number,
                      &slot->call->options.metadata);
  slot->picked = Picked();
  if (slot->pending) self->stack_->breaker->breaker().EndPending();
  AttemptSlot* s = slot.get();
  // The same ownership, as the call.
  std::shared_ptr<CallState> st(std::move(slot), s->call);
  self->OnAttemptDone(std::move(st), s, std::move(r), now);
}

void ServiceChannel::OnAttemptDone(std::shared_ptr<CallState> st, AttemptSlot* slot,
                                   CallResult&& r, absl::Time now) {
  absl::InlinedVector<CallHandle, 2> losers;
  std::unique_lock<CallState::CallLock> lock(st->mu);
  st->ReleaseSlot(slot);
  if (st->finished()) return;  // a hedge that lost, or a call cancelled
  bool closing = closing_.load(std::memory_order_acquire);
  if (r.status.ok() || closing) {
    // Decided: the other attempts are stopped before the caller hears.
    st->CollectInFlight(&losers);
    absl::InlinedVector<uint64_t, 1> timers;
    timers.swap(st->timer_keys);
    st->FinishLocked(lock, std::move(r), absl::MakeSpan(losers), now);
    CancelTimers(timers);
    return;
  }
  // A failed attempt while another is in flight: that one may still answer.
  if (st->in_flight > 0) return;
  bool transparent_before = st->transparent_used;
  absl::Duration delay;
  Next next = Decide(r, st->options, st->attempts, &st->transparent_used, st->deadline, &delay);
  if (next == Next::kDone) {
    absl::InlinedVector<uint64_t, 1> timers;
    timers.swap(st->timer_keys);
    st->FinishLocked(lock, std::move(r), {}, now);
    return CancelTimers(timers);
  }
  if (next == Next::kTransparent && !transparent_before) {
    lock.unlock();
    return Attempt(st);
  }
  ++st->attempts;
  st->next_holds_retry_slot = true;  // Decide took a max_retries slot
  lock.unlock();
  runtime::Executor* loop = TimerLoopOf(*st);
  RunLater(loop, delay, std::move(st), [](ServiceChannel* sc, std::shared_ptr<CallState> s) {
    sc->Attempt(s);
    if (s->hedged) sc->ArmHedge(s);
  });
}

void ServiceChannel::ArmHedge(const std::shared_ptr<CallState>& st) {
  {
    std::lock_guard<CallState::CallLock> lock(st->mu);
    if (st->finished()) return;  // the attempt just made ended the call
  }
  std::optional<absl::Duration> delay = stack_->hedging->NextDelay();
  if (!delay.has_value()) return;
  if (st->deadline - clock_->Now() <= *delay) return;  // no time for it to help
  RunLater(TimerLoopOf(*st), *delay, st, [](ServiceChannel* sc, std::shared_ptr<CallState> s) {
    sc->OnHedgeTimer(std::move(s));
  });
}

void ServiceChannel::OnHedgeTimer(std::shared_ptr<CallState> st) {
  {
    std::lock_guard<CallState::CallLock> lock(st->mu);
    // Finished, or between attempts (a retry's backoff re-arms it).
    if (st->finished() || st->in_flight == 0) return;
    if (st->in_flight >= std::min(stack_->hedging->max_in_flight(), CallState::kMaxInFlight)) {
      return;
    }
    if (endpoint_count_.load(std::memory_order_relaxed) <= st->tried.size()) return;
  }
  if (!stack_->hedging->TryStartHedge()) return;
  Attempt(st);
  ArmHedge(st);  // the next one, if max_attempts allows
}

void ServiceChannel::StartAsync(std::shared_ptr<CallState> st, absl::Time now) {
  Attempt(st, now);
  if (st->hedged) {
    bool finished;
    {
      std::lock_guard<CallState::CallLock> lock(st->mu);
      finished = st->finished();
    }
    if (!finished) ArmHedge(st);  // an answer already in hand needs no timer
  }
}

CallHandle ServiceChannel::Call(absl::string_view method, absl::string_view request,
                                const CallOptions& options, CallCallback done) {
  return CallWithFault(method, request, options, stack_->fault->fault(), std::move(done));
}

CallResult ServiceChannel::CallBlocking(absl::string_view method, absl::string_view request,
                                        const CallOptions& options) {
  return CallBlockingWithFault(method, request, options, stack_->fault->fault());
}

CallHandle ServiceChannel::CallWithFault(absl::string_view method, absl::string_view request,
                                         const CallOptions& options,
                                         const resilience::FaultInjection* fault,
                                         CallCallback done,
                                         std::shared_ptr<const void> keep_alive) {
  if (!done) return CallHandle();  // nobody to tell: nothing is sent
  if (closing_.load(std::memory_order_acquire)) {
    done(Cancelled(absl::StrCat("service ", service_, ": channel closed; ", method, " not sent")));
    return CallHandle();
  }
  const absl::Time now = clock_->Now();
  CallInfo info;
  info.method = method;
  info.options = &options;
  info.start = now;
  info.hedged = stack_->hedging->Applies(options);
  if (absl::Status admitted = stack_->Admit(info); !admitted.ok()) {
    CallResult r;
    r.status = std::move(admitted);
    r.not_processed = true;
    stack_->CallEnded(method, now, r, 0, &options.metadata);
    done(std::move(r));
    return CallHandle();
  }
  auto st = std::make_shared<CallState>(info.hedged ? stack_->hedging->max_in_flight() : 1);
  st->keep_alive = std::move(keep_alive);
  st->method = std::string(method);
  st->request.Assign(request);
  st->options = options;
  st->done = std::move(done);
  st->deadline = stack_->deadline->DeadlineOf(options, now);
  st->start = now;
  st->hedged = info.hedged;
  st->live = live_;
  if (!live_->Add(st.get())) {
    st->Finish(
        Cancelled(absl::StrCat("service ", service_, ": channel closed; ", method, " not sent")));
    return CallHandle();
  }
  if (fault != nullptr && fault->enabled()) {
    resilience::FaultInjection::Decision f =
        fault->Decide(lb::ThreadRandom().Next(), lb::ThreadRandom().Next());
    absl::Status abort = f.abort ? fault->AbortStatus() : absl::OkStatus();
    if (f.delay > absl::ZeroDuration()) {
      stack_->fault->CountDelayed();
      runtime::Executor* loop = TimerLoopOf(*st);
      absl::Duration wait = std::min(f.delay, st->deadline - clock_->Now());
      CallHandle handle(st);
      RunLater(loop, wait, std::move(st),
               [abort](ServiceChannel* sc, std::shared_ptr<CallState> s) {
                 if (!abort.ok()) {
                   sc->stack_->fault->CountAborted();
                   CallResult r;
                   r.status = abort;
                   return s->Finish(std::move(r));
                 }
                 sc->StartAsync(std::move(s));
               });
      return handle;
    }
    if (!abort.ok()) {
      stack_->fault->CountAborted();
      CallResult r;
      r.status = abort;
      st->Finish(std::move(r));
      return CallHandle();
    }
  }
  CallHandle handle(st);
  StartAsync(std::move(st), now);
  return handle;
}

CallResult ServiceChannel::CallBlockingWithFault(absl::string_view method,
                                                 absl::string_view request,
                                                 const CallOptions& options,
                                                 const resilience::FaultInjection* fault) {
  if (std::optional<CallResult> refused = RefuseBlockingOnReactor(method)) return *refused;
  if (closing_.load(std::memory_order_acquire)) {
    return Cancelled(absl::StrCat("service ", service_, ": channel closed; ", method, " not sent"));
  }
  if (stack_->hedging->Applies(options) || (fault != nullptr && fault->enabled())) {
    // Several attempts at once, or a timer: the asynchronous path does it.
    CallResult result;
    core::Notification done;
    CallHandle handle = CallWithFault(method, request, options, fault, [&](CallResult r) {
      result = std::move(r);
      done.Notify();
    });
    if (options.interrupt_fd >= 0) {
      while (!done.WaitForNotificationWithTimeout(absl::Milliseconds(1))) {
        if (InterruptRequested(options.interrupt_fd)) handle.Cancel();
      }
    } else {
      done.WaitForNotification();
    }
    return result;
  }
  const absl::Time now = clock_->Now();
  int attempts = 0;
  CallResult r = CallBlockingAttempts(method, request, options, now, &attempts);
  stack_->CallEnded(method, now, r, attempts, &options.metadata);
  return r;
}

CallResult ServiceChannel::CallBlockingAttempts(absl::string_view method,
                                                absl::string_view request,
                                                const CallOptions& options, absl::Time now,
                                                int* attempts_sent) {
  CallInfo info;
  info.method = method;
  info.options = &options;
  info.start = now;
  if (absl::Status admitted = stack_->Admit(info); !admitted.ok()) {
    CallResult r;
    r.status = std::move(admitted);
    r.not_processed = true;
    return r;
  }
  struct Active {
    Stack* s;
    bool retry = false;
    ~Active() {
      if (retry) s->retry->EndRetry();
      s->Release();
    }
  } active{stack_.get()};
  absl::Time deadline = stack_->deadline->DeadlineOf(options, now);
  absl::InlinedVector<std::string, 2> tried;
  bool transparent_used = false;
  int attempts = 1;
  for (;;) {
    const absl::Time start = clock_->Now();
    Picked picked;
    absl::Duration attempt_timeout;
    bool pending;
    if (std::optional<CallResult> failed = PrepareAttempt(options, tried, deadline, attempts,
                                                          start, &picked, &attempt_timeout,
                                                          &pending)) {
      return *std::move(failed);
    }
    CallOptions attempt;
    stack_->deadline->ShapeAttempt(options, deadline, attempt_timeout, &attempt);
    tried.push_back(picked.channel->address());
    picked.stats->OnCallStart();
    CallResult r = picked.channel->CallBlocking(method, request, attempt);
    absl::Time end = clock_->Now();
    if (attempts_sent != nullptr) *attempts_sent = static_cast<int>(tried.size());
    RecordAttempt(method, picked, r, end - start, end, static_cast<int>(tried.size()),
                  &options.metadata);
    if (pending) stack_->breaker->breaker().EndPending();
    if (active.retry) {
      active.retry = false;
      stack_->retry->EndRetry();
    }
    bool transparent_before = transparent_used;
    absl::Duration delay;
    Next next = Decide(r, options, attempts, &transparent_used, deadline, &delay);
    if (next == Next::kDone) return r;
    if (next == Next::kTransparent && !transparent_before) continue;
    active.retry = true;  // Decide took a max_retries slot
    ++attempts;
    const absl::Duration wait = std::min(delay, deadline - clock_->Now());
    if (options.interrupt_fd < 0) {
      absl::SleepFor(wait);
    } else {
      // In slices, so that the caller can interrupt the backoff.
      const absl::Time until = absl::Now() + wait;
      for (absl::Time t = absl::Now(); t < until; t = absl::Now()) {
        if (InterruptRequested(options.interrupt_fd)) {
          return Cancelled(absl::StrCat("service ", service_, ": ", method,
                                        " interrupted between attempts"));
        }
        absl::SleepFor(std::min(until - t, absl::Milliseconds(1)));
      }
    }
  }
}

bool ServiceChannel::WaitForEndpoints(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_.native());
  return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                      [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !addresses_.empty(); });
}

bool ServiceChannel::WaitForFirstUpdate(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_.native());
  return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this]() {
    return updates_.load(std::memory_order_relaxed) > 0;
  });
}

std::vector<std::string> ServiceChannel::Endpoints() const {
  core::MutexLock lock(&mu_);
  return addresses_;
}

std::shared_ptr<lb::EndpointStats> ServiceChannel::EndpointStatsFor(
    absl::string_view address) const {
  core::MutexLock lock(&mu_);
  auto it = stats_by_address_.find(address);
  return it == stats_by_address_.end() ? nullptr : it->second;
}

std::vector<EndpointState> ServiceChannel::EndpointStates() const {
  std::vector<std::pair<std::string, Member>> view;
  {
    core::MutexLock lock(&mu_);
    view = view_;
  }
  std::sort(view.begin(), view.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  absl::Time now = clock_->Now();
  std::vector<EndpointState> out;
  for (const auto& [addr, m] : view) {
    EndpointState e;
    e.address = addr;
    if (m.outlier != nullptr) {
      e.outlier = std::string(resilience::OutlierStateName(m.outlier->state()));
    }
    e.health_check_ok = m.health == nullptr || m.health->healthy.load(std::memory_order_relaxed);
    e.healthy = e.health_check_ok && e.outlier != "ejected";
    e.connected = m.channel->ReadyConnections() > 0;
    e.unreachable = m.channel->Unreachable();
    e.in_flight = m.stats->in_flight();
    e.calls = m.stats->calls();
    e.failures = m.stats->failures();
    e.latency_ewma = absl::Nanoseconds(m.stats->PeakEwmaNanos(now));
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> ServiceChannel::Describe() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Layer* l : stack_->layers) out.emplace_back(std::string(l->role()), l->Describe());
  return out;
}

ServiceChannelStats ServiceChannel::stats() const {
  const Stack& s = *stack_;
  ServiceChannelStats st;
  st.endpoint_updates = updates_.load(std::memory_order_relaxed);
  st.endpoints = endpoint_count_.load(std::memory_order_relaxed);
  st.draining = s.pool->draining();
  st.transparent_retries = s.retry->transparent_retries();
  st.retries = s.retry->retries();
  st.retries_denied = s.retry->denied();
  st.breaker_overflows = s.breaker->breaker().overflows();
  st.hedges = s.hedging->hedges();
  st.hedges_denied = s.hedging->denied();
  st.pushback_stops = s.retry->pushback_stops();
  st.faults_delayed = s.fault->delayed();
  st.faults_aborted = s.fault->aborted();
  st.ejected = s.health->ejected();
  st.unhealthy = s.health->unhealthy();
  if (s.health->outliers() != nullptr) st.outliers = s.health->outliers()->Stats();
  st.policy = s.balancer->policy().Describe();
  st.discovery = discovery_->stats();
  return st;
}

}  // namespace meshlib::client
