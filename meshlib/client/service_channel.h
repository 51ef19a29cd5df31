// ServiceChannel: calls to a service whose endpoints come from discovery,
// spread by a load-balancing policy.
//
// It subscribes to the service's Discovery and keeps one Channel (and one
// lb::EndpointStats of load signals) per endpoint. An update is applied on
// the control loop, off the request path: channels for new endpoints start
// connecting, the policy builds a new immutable picker, and a snapshot of
// {picker, channels} replaces the old one through an RcuPtr, so a pick takes
// no lock. A removed endpoint's channel leaves the snapshot at once but lives
// on until its outstanding calls have completed (or `drain_timeout`
// passes), so an update never fails a call in flight.
//
//   client::ServiceChannelOptions o;
//   o.load_balancer = nlohmann::json::parse(R"([{"p2c_peak_ewma": {}}])");
//   auto sc = client::ServiceChannel::Create(
//       "echo", nlohmann::json::parse(R"({"dns": {"name": "_echo._tcp.mesh.test"}})"),
//       o).value();
//   sc->WaitForEndpoints(absl::Seconds(5));
//   client::CallResult r = sc->CallBlocking("Echo/Say", "hi");
//
// Every call's outcome and latency feed its endpoint's EndpointStats
// (in-flight count, peak EWMA, failures), which the policies read.
//
// A call refused before any handler saw it (a draining server's refusal, a
// connection that could not be set up: CallResult::not_processed) is sent
// once more to another endpoint within its deadline (drawing on the retry
// budget, so that with every endpoint unreachable calls fail fast rather
// than double), as gRPC's transparent
// retry does; that is what keeps a deregistering, draining instance from
// failing the calls that raced its removal. Beyond that, the service's
// retry policy (resilience::RetryPolicy) retries failed attempts on its
// status codes for idempotent calls, after a full-jitter backoff, on an
// endpoint not tried yet, within the call's deadline and the retry budget.
// A server's retry pushback (transport::kRetryPushbackKey in the reply)
// overrides the backoff, or forbids the retry when negative.
//
// Idempotent calls of a service with a hedging policy that have not
// answered after the hedge delay are sent again to another endpoint (the
// first good answer wins, the others are cancelled); hedges draw on the
// retry budget. A `fault` config delays or fails a share of calls before
// they are sent.
//
// Deadlines: a call ends at the earliest of its timeout, CallOptions::
// deadline and the deadline of the call being served on this thread
// (core::CurrentDeadline), and every attempt sends what is left of it.
//
// Endpoint health signals count only failures that say something about the
// endpoint (IsEndpointFailure): UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL,
// UNKNOWN, DATA_LOSS and DEADLINE_EXCEEDED; an application's NOT_FOUND or
// INVALID_ARGUMENT, or a hedge cancelled because another attempt won, do
// not.
//
// Lifetime: Create returns a shared_ptr whose last reference may drop on
// any thread, including inside a callback. When it goes, the channel
// closes: every asynchronous call still in flight (or waiting on a timer)
// ends with CANCELLED, exactly once, before that returns; calls made
// afterwards fail at once with CANCELLED. Close() does the same while
// references remain. Attempts in flight hold an internal reference, so a
// late answer (a losing hedge, a cancelled attempt) never touches freed
// memory; the memory goes with the last of them, off any reactor thread
// (see runtime::ShareOffLoop).
//
// Threading: all methods are thread-safe. Callbacks run on reactor threads
// and must not block. A blocking call made on a reactor thread (inside a
// callback, or an async handler) fails at once with FAILED_PRECONDITION:
// it would wait for a reply that this very thread has to read.
#ifndef MESHLIB_CLIENT_SERVICE_CHANNEL_H_
#define MESHLIB_CLIENT_SERVICE_CHANNEL_H_

#include <atomic>
#include <functional>
#include <condition_variable>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/client/channel.h"
#include "meshlib/client/endpoint_channel.h"
#include "meshlib/client/endpoint_state.h"
#include "meshlib/client/layers/endpoint_health_layer.h"
#include "meshlib/client/layers/retry_layer.h"
#include "meshlib/core/rcu.h"
#include "meshlib/discovery/resolver.h"
#include "meshlib/lb/policy.h"
#include "meshlib/client/layers/tracing_layer.h"
#include "meshlib/metrics/metrics.h"
#include "meshlib/resilience/circuit_breaker.h"
#include "meshlib/resilience/fault_injection.h"
#include "meshlib/resilience/health_check.h"
#include "meshlib/resilience/hedging_policy.h"
#include "meshlib/resilience/latency_tracker.h"
#include "meshlib/resilience/outlier_detection.h"
#include "meshlib/resilience/retry_budget.h"
#include "meshlib/resilience/retry_policy.h"
#include "nlohmann/json.hpp"

namespace meshlib::client {

class ServiceChannel;
namespace client_internal {
struct Stack;
}  // namespace client_internal

struct ServiceChannelOptions {
  // For every endpoint's channel. `channel.runtime` is shared by all of them
  // (created once here when not given).
  ChannelOptions channel;
  // The service's `load_balancer` list ([{name: config}, ...]; the first
  // name this build knows is used). Null: round_robin.
  nlohmann::json load_balancer;
  // The service's `retry` object (see resilience::RetryPolicy). Null: no
  // retries beyond the transparent one.
  nlohmann::json retry;
  // The service's `circuit_breaker` object (see resilience::CircuitBreaker).
  // Null: Envoy's defaults (1024 / 1024 / 3).
  nlohmann::json circuit_breaker;
  // The service's `hedging` object (see resilience::HedgingPolicy). Null: no
  // hedging.
  nlohmann::json hedging;
  // The service's `fault` object (see resilience::FaultInjection). Null: none.
  nlohmann::json fault;
  // The service's `outlier_detection` object (see
  // resilience::OutlierDetector). Null: no outlier detection.
  nlohmann::json outlier_detection;
  // The service's `health_check` object (see resilience::HealthChecker).
  // Null: no active health checks.
  nlohmann::json health_check;
  // Given to the policy (zone-aware routing, aperture).
  lb::PolicyContext lb_context;
  // The control-plane loop for discovery and updates; default: own one.
  std::shared_ptr<runtime::EventLoop> control_loop;
  // How long a removed endpoint's channel may keep calls in flight before it
  // is closed (and they fail with CANCELLED). Default: channel.default_timeout
  // (no call can outlive it anyway), at most 5 minutes.
  absl::Duration drain_timeout = absl::ZeroDuration();
  // Path of the service in the config, for messages. Default
  // "services.<service>".
  std::string config_path;
  // Share a Discovery instead of creating one from the `discovery` JSON
  // (which may then be null): several channels over one service (subsets,
  // a configuration reload) then watch the source once. `control_loop`
  // must be the loop the Discovery runs on.
  std::shared_ptr<discovery::Discovery> shared_discovery;
  // Take endpoint health (outlier detection, active health checks) from
  // this channel over the same service instead of judging it again: a
  // service's subsets then see one verdict per endpoint, and probe it once.
  // `outlier_detection` and `health_check` are then ignored. It must use
  // the same `control_loop`.
  std::shared_ptr<ServiceChannel> health_source;
  // The service's policies, already parsed and validated: a mesh passes its
  // typed configuration, which is then the only parse. When set, the JSON
  // sections above (retry, hedging, circuit_breaker, fault,
  // outlier_detection, health_check) are ignored.
  struct Policies {
    resilience::RetryPolicy retry;
    resilience::HedgingPolicy hedging;
    resilience::CircuitBreakerOptions circuit_breaker;
    resilience::FaultInjection fault;
    std::optional<resilience::OutlierDetectionOptions> outlier_detection;
    std::optional<resilience::HealthCheckOptions> health_check;
  };
  std::optional<Policies> policies;
  // The channel this one replaces (a configuration reload of the same
  // service), to take over what it learned: endpoints both know keep their
  // load signals (latency estimate, in-flight count; when the balancer's
  // stats settings are the same), their outlier state (ejections and their
  // growing multiplier) and their health-check verdict; the retry budget,
  // circuit-breaker counts, hedge budget and latency tracker carry over
  // when their settings are unchanged. Held until the first endpoint set is
  // applied. Must use the same control_loop.
  std::shared_ptr<ServiceChannel> predecessor;
  // Where the service's golden metrics go (requests by method and code,
  // their latency, attempts by endpoint and code: see
  // layers/metrics_layer.h), labelled `metrics_service` (default: the
  // service's name). Null: none recorded. Must outlive the channel.
  metrics::Registry* metrics = nullptr;
  std::string metrics_service;
  // Receives a span for each call and each attempt as it ends
  // (layers/tracing_layer.h). Empty: none.
  SpanExporter span_exporter;
  // Keep only the endpoints this accepts (a subset of the service, e.g. by
  // metadata). Null: all.
  std::function<bool(const discovery::Endpoint&)> endpoint_filter;
  // Makes the channel to one endpoint. Null: a client::Channel with
  // `channel`'s options. Tests and benchmarks plug in other transports.
  std::function<absl::StatusOr<std::shared_ptr<EndpointChannel>>(const std::string& address)>
      channel_factory;
  uint64_t seed = 0;
  // Where calls wait (a retry's backoff, a hedge delay, an injected delay)
  // and the clock the call path reads (deadlines, latencies, budgets,
  // outlier sweeps): tests pass a testing::FakeExecutor as both and move
  // time by hand. Null: the runtime's reactors and the wall clock. Both
  // must outlive the channel. The control plane (discovery, health probes,
  // drains) stays on `control_loop`.
  runtime::Executor* timers = nullptr;
  runtime::Clock* clock = nullptr;
};

struct ServiceChannelStats {
  uint64_t endpoint_updates = 0;  // discovery sets applied
  size_t endpoints = 0;           // in the current snapshot
  size_t draining = 0;            // removed channels still finishing calls
  uint64_t transparent_retries = 0;
  uint64_t retries = 0;           // by the retry policy
  uint64_t retries_denied = 0;    // wanted, but the budget was spent
  uint64_t breaker_overflows = 0; // calls or retries refused by the circuit breaker
  uint64_t hedges = 0;            // hedged attempts sent
  uint64_t hedges_denied = 0;     // hedges due but refused by the retry budget
  uint64_t pushback_stops = 0;    // retries not made because the server said so
  uint64_t faults_delayed = 0;    // calls delayed by fault injection
  uint64_t faults_aborted = 0;    // calls failed by fault injection
  size_t ejected = 0;             // endpoints ejected by outlier detection now
  size_t unhealthy = 0;           // endpoints failing active health checks now
  resilience::OutlierDetectorStats outliers;  // empty without outlier detection
  std::string policy;             // the policy in use
  discovery::DiscoveryStats discovery;
};


class ServiceChannel final : public Caller {
 public:
  static absl::StatusOr<std::shared_ptr<ServiceChannel>> Create(
      std::string service, const nlohmann::json& discovery, ServiceChannelOptions options);
  ~ServiceChannel();

  // Ends every asynchronous call in flight (and every call waiting on a
  // retry backoff, hedge delay or injected delay) with CANCELLED and
  // `reason` in its message; later calls fail at once. Blocking calls in
  // flight end when their attempt does (a pool closing its connections
  // ends them at once). Idempotent; any thread, including a callback's.
  void Close(absl::string_view reason = "service channel closed");
  bool closed() const { return closing_.load(std::memory_order_acquire); }
  ServiceChannel(const ServiceChannel&) = delete;
  ServiceChannel& operator=(const ServiceChannel&) = delete;

  // The handle cancels the call: it completes with CANCELLED and every
  // attempt in flight is cancelled on its server.
  CallHandle Call(absl::string_view method, absl::string_view request,
                  const CallOptions& options, CallCallback done) override;
  CallResult CallBlocking(absl::string_view method, absl::string_view request,
                          const CallOptions& options = {}) override;
  // The same with `fault` in place of the channel's own fault injection
  // (nullptr: none), for a routing layer above whose routes have their own.
  // `fault` must outlive the call, or be owned by `keep_alive`, which the
  // call holds until it completes. An empty `done` sends nothing.
  CallHandle CallWithFault(absl::string_view method, absl::string_view request,
                           const CallOptions& options, const resilience::FaultInjection* fault,
                           CallCallback done, std::shared_ptr<const void> keep_alive = nullptr);
  CallResult CallBlockingWithFault(absl::string_view method, absl::string_view request,
                                   const CallOptions& options,
                                   const resilience::FaultInjection* fault);

  // A call refused above the channel (a mesh's routing or interceptors, a
  // closed mesh) is counted like the channel's own calls (its metrics, its
  // span) with no attempt.
  void RecordUnsent(absl::string_view method, const CallOptions& options, const CallResult& r);

  // Blocks until discovery has produced endpoints and they are applied.
  bool WaitForEndpoints(absl::Duration timeout);
  // Addresses in the current snapshot, sorted.
  std::vector<std::string> Endpoints() const;
  // How many there are (no lock).
  size_t endpoint_count() const { return endpoint_count_.load(std::memory_order_relaxed); }
  // Blocks until the first endpoint set (possibly empty after filtering)
  // has been applied, or `timeout` passes.
  bool WaitForFirstUpdate(absl::Duration timeout);
  ServiceChannelStats stats() const;
  const std::string& service() const { return service_; }
  const discovery::Discovery& discovery() const { return *discovery_; }
  // The load signals of an endpoint in the current set (nullptr if absent).
  std::shared_ptr<lb::EndpointStats> EndpointStatsFor(absl::string_view address) const;
  // Every endpoint of the current set with its health, sorted by address.
  std::vector<EndpointState> EndpointStates() const;
  // The layers a call goes through, top to bottom, each as {role, its
  // effective settings}, as composed (see BuildLayers in
  // service_channel.cc): fault, deadline, retry, hedging, circuit breaker,
  // balancer, endpoint health, pool.
  std::vector<std::pair<std::string, std::string>> Describe() const;

 private:
  struct HealthProbe;
  struct Member {
    std::shared_ptr<EndpointChannel> channel;
    std::shared_ptr<lb::EndpointStats> stats;
    std::shared_ptr<resilience::OutlierDetector::Host> outlier;  // null: no detection
    std::shared_ptr<HealthProbe> health;                         // null: no checks
  };
  struct Snapshot {
    std::shared_ptr<const discovery::EndpointSet> set;
    std::vector<Member> members;  // parallel to set->endpoints()
    std::vector<bool> ejected;    // parallel to members: ejected when this was built
    std::unique_ptr<lb::Picker> picker;
  };
  // What a call holds after the pick: keeps the channel alive without the
  // snapshot (a blocking call must not hold a read guard while it waits).
  // CallBlockingWithFault's attempts, on this thread, from `now`;
  // `*attempts_sent` counts them.
  CallResult CallBlockingAttempts(absl::string_view method, absl::string_view request,
                                  const CallOptions& options, absl::Time now,
                                  int* attempts_sent);
  struct Picked {
    std::shared_ptr<EndpointChannel> channel;
    std::shared_ptr<lb::EndpointStats> stats;
    std::shared_ptr<resilience::OutlierDetector::Host> outlier;
    bool probe = false;  // this attempt is the endpoint's probation probe
    // Gives the probe back when the attempt is not sent after all.
    void Unused() {
      if (probe) outlier->ReleaseProbe();
      probe = false;
    }
  };

  ServiceChannel(std::string service, ServiceChannelOptions options);
  void Apply(std::shared_ptr<const discovery::EndpointSet> set);  // control loop
  // Builds and publishes a picker for the current members and their health.
  void Rebuild();                                                   // control loop
  void EvaluateOutliers();                                          // control loop
  void RequestOutlierEvaluation();                                  // any thread
  void StartHealthProbe(const std::string& address, const std::shared_ptr<HealthProbe>& hp,
                        absl::Duration delay);                      // control loop
  void OnHealthProbeResult(const std::shared_ptr<HealthProbe>& hp, bool ok);  // control loop
  // With a health_source: takes its verdicts for our members, then
  // rebuilds the picker. Called by the source when they change.
  void OnSourceHealthChanged();                                      // control loop
  void CollectDrained();                                            // control loop
  struct CallState;
  class RequestBytes;
  struct Lifeline;
  struct LiveCalls;
  void WaitForCallbacksElsewhere();
  // Runs `fn(this)` after `delay` on `loop`, unless this channel is gone by
  // then; then `st` ends with CANCELLED instead.
  // Sets closing_ and ends every call waiting on a timer (destructor).
  void EndWaitingCalls(absl::string_view reason);
  void RunLater(runtime::Executor* loop, absl::Duration delay, std::shared_ptr<CallState> st,
                absl::AnyInvocable<void(ServiceChannel*, std::shared_ptr<CallState>)> fn);
  // Cancels the timers of a call that has ended.
  void CancelTimers(absl::Span<const uint64_t> keys);
  // The loop a call's timers run on (chosen at its first timer).
  runtime::Executor* TimerLoopOf(CallState& st);
  // Starts a call's first attempt (after any injected delay); `now`, when
  // known, saves a clock read.
  void StartAsync(std::shared_ptr<CallState> st, absl::Time now = absl::InfinitePast());
  void ArmHedge(const std::shared_ptr<CallState>& st);
  void OnHedgeTimer(std::shared_ptr<CallState> st);
  struct AttemptSlot;
  // An attempt's completion; `slot` shares the ownership of its call.
  // Results travel by reference down the chain: moved once, into the
  // caller's callback.
  static void AttemptDone(std::shared_ptr<AttemptSlot>&& slot, CallResult&& r);
  // `now`: when the attempt ended (read by AttemptDone).
  void OnAttemptDone(std::shared_ptr<CallState> st, AttemptSlot* slot, CallResult&& r,
                     absl::Time now);
  // Tells the layers that observe attempts how one ended.
  void RecordAttempt(absl::string_view method, const Picked& picked, const CallResult& r,
                     absl::Duration latency, absl::Time now, int number,
                     const Metadata* metadata);
  // A pick by the policy; endpoints in `avoid` (addresses) are skipped when
  // another exists. False when the set is empty.
  bool PickMember(const CallOptions& options, absl::Span<const std::string> avoid,
                  Picked* out) const;
  CallResult NoEndpoints() const;
  // Everything an attempt needs before it is sent: time left, an endpoint
  // not in `tried` where one exists, a pending slot when it has no ready
  // connection, how long it may take (the time left, or the per-try
  // timeout). The failure that ends the call instead, if any.
  std::optional<CallResult> PrepareAttempt(const CallOptions& options,
                                           absl::Span<const std::string> tried,
                                           absl::Time deadline, int attempts, absl::Time now,
                                           Picked* picked, absl::Duration* attempt_timeout,
                                           bool* pending);
  // Starts the next attempt of an asynchronous call.
  void Attempt(const std::shared_ptr<CallState>& st, absl::Time now = absl::InfinitePast());
  // What to do after a failed attempt: retry now (transparent), after a
  // backoff, or not at all (RetryLayer::Decide, unless the call is out of
  // time or the channel closing). For kRetry, `*delay` is the wait before
  // it (backoff or pushback).
  using Next = RetryLayer::Next;
  Next Decide(const CallResult& r, const CallOptions& options, int attempts,
              bool* transparent_used, absl::Time deadline, absl::Duration* delay);
  using Stack = client_internal::Stack;

  const std::string service_;
  ServiceChannelOptions options_;
  std::shared_ptr<runtime::EventLoop> control_;
  std::shared_ptr<discovery::Discovery> discovery_;
  // The layers, composed once by Create.
  std::shared_ptr<Stack> stack_;
  uint64_t subscription_ = 0;

  // Read by every call under an RcuReadGuard; replaced by Apply.
  core::RcuPtr<Snapshot> snapshot_;

  // Control loop only.
  std::map<std::string, Member, std::less<>> members_;
  std::shared_ptr<const discovery::EndpointSet> set_;  // what members_ follows
  runtime::TimerId outlier_timer_;
  runtime::TimerId drain_timer_;
  std::atomic<uint64_t> updates_{0};
  std::atomic<size_t> endpoint_count_{0};
  std::atomic<bool> closing_{false};
  lb::EndpointStatsOptions stats_options_;       // the policy's
  std::shared_ptr<ServiceChannel> predecessor_;  // control loop
  std::shared_ptr<Lifeline> lifeline_;
  runtime::Clock* clock_ = nullptr;  // options_.clock
  // The internal reference (see Create), for attempts to hold.
  std::weak_ptr<ServiceChannel> self_;
  // Every asynchronous call not yet completed, for Close().
  std::shared_ptr<LiveCalls> live_;
  std::shared_ptr<ServiceChannel> health_source_;
  std::vector<ServiceChannel*> dependents_;  // control loop: channels using us as health_source
  // Calls waiting on a timer (retry backoff, hedge delay, injected delay),
  // ended by the destructor.
  struct WaitingCall {
    runtime::Executor* loop = nullptr;
    runtime::TimerId timer;
    std::shared_ptr<CallState> call;
  };
  std::mutex timers_mu_;
  std::map<uint64_t, WaitingCall> timers_;  // guarded by timers_mu_
  uint64_t next_timer_key_ = 1;             // guarded by timers_mu_
  std::atomic<bool> outlier_evaluation_posted_{false};

  mutable core::Mutex mu_;
  std::condition_variable cv_;  // with mu_.native(): a snapshot arrived
  std::vector<std::string> addresses_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<lb::EndpointStats>, std::less<>> stats_by_address_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, Member>> view_ ABSL_GUARDED_BY(mu_);  // for EndpointStates
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_SERVICE_CHANNEL_H_
