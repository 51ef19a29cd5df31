// EndpointStats: the load signals of one endpoint, shared by the balancer's
// policies and the client stack that reports each call's outcome.
//
//   auto stats = std::make_shared<EndpointStats>(policy->StatsOptions());
//   stats->OnCallStart();
//   ... the call ...
//   stats->OnCallEnd(latency, /*success=*/r.status.ok(), clock.Now());
//   int64_t busy = stats->in_flight();
//   double cost = stats->PeakEwmaNanos(now);   // decays toward zero when idle
//
// Threading: every method is thread-safe and lock-free (relaxed atomics). The
// latency EWMA is a read-modify-write of two atomics without a lock, so two
// completions racing on the same endpoint may lose one sample; for a
// load-balancing signal that is noise, and it keeps the call path free of
// locks.
#ifndef MESHLIB_LB_ENDPOINT_STATS_H_
#define MESHLIB_LB_ENDPOINT_STATS_H_

#include <atomic>
#include <string>
#include <cstdint>

#include "absl/time/time.h"

namespace meshlib::lb {

// How the client should make an endpoint's EndpointStats; a policy states
// its wishes through Policy::StatsOptions().
struct EndpointStatsOptions {
  // The latency EWMA's time constant. Default 10s (Finagle's). > 0.
  absl::Duration decay = absl::Seconds(10);
  // The latency assumed for an endpoint nothing is known about yet.
  // Default 1ms. >= 0.
  absl::Duration initial = absl::Milliseconds(1);
  // Latency charged for a failed call (see set_failure_penalty). Default 0
  // (off). >= 0.
  absl::Duration failure_penalty = absl::ZeroDuration();
};

class EndpointStats {
 public:
  // `decay`: the EWMA's time constant (Finagle's default 10s); `initial`:
  // the latency assumed for an endpoint nothing is known about yet.
  explicit EndpointStats(absl::Duration decay = absl::Seconds(10),
                         absl::Duration initial = absl::Milliseconds(1));
  explicit EndpointStats(const EndpointStatsOptions& options);

  void OnCallStart() { in_flight_.fetch_add(1, std::memory_order_relaxed); }
  // `latency` from the call's start to its end. A failure counts as a
  // sample too (with the failure penalty, see below).
  void OnCallEnd(absl::Duration latency, bool success, absl::Time now);
  // A call given up on after `elapsed` without an answer (a hedge that lost
  // to another attempt): not a call outcome, so neither a success nor a
  // failure; its elapsed time is a lower bound on its latency, so it can
  // only raise the latency estimate.
  void OnCallAbandoned(absl::Duration elapsed, absl::Time now);

  // The endpoint's address, as discovery gave it: set once by whoever makes
  // the stats, before they are shared (for labels: metrics, logs).
  void set_address(std::string address) { address_ = std::move(address); }
  const std::string& address() const { return address_; }

  int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  uint64_t calls() const { return calls_.load(std::memory_order_relaxed); }
  uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }
  // Failures in a row since the last success.
  uint64_t consecutive_failures() const {
    return consecutive_failures_.load(std::memory_order_relaxed);
  }

  // Peak-sensitive EWMA of latency, in nanoseconds, decayed to `now`: a
  // sample above the average replaces it at once (the peak), one below
  // pulls it down with weight 1 - exp(-elapsed / decay). A failed call is
  // recorded as max(latency, failure_penalty) so that an endpoint that
  // fails fast does not look fast.
  double PeakEwmaNanos(absl::Time now) const;
  // The raw stored EWMA without decay (for tests and Describe()).
  double EwmaNanosForTesting() const { return ewma_ns_.load(std::memory_order_relaxed); }
  // The parts of PeakEwmaNanos(now): the stored average, when it was last
  // updated (unix ns; 0 = never, and then it does not decay) and the decay
  // constant, so that PeakEwmaNanos(now) = ewma_nanos() *
  // exp(-(now - last_update_unix_nanos()) / decay_nanos()). A picker that
  // compares two endpoints can then use the ratio of their costs: one exp,
  // no clock read (p2c_peak_ewma).
  double ewma_nanos() const { return ewma_ns_.load(std::memory_order_relaxed); }
  int64_t last_update_unix_nanos() const { return stamp_ns_.load(std::memory_order_relaxed); }
  double decay_nanos() const { return decay_ns_; }

  // Latency charged for a failed call; default 0 (off). Policies that rank
  // by latency set it (p2c_peak_ewma: its "failure_penalty").
  void set_failure_penalty(absl::Duration d) {
    failure_penalty_ns_.store(absl::ToInt64Nanoseconds(d), std::memory_order_relaxed);
  }
  absl::Duration failure_penalty() const {
    return absl::Nanoseconds(failure_penalty_ns_.load(std::memory_order_relaxed));
  }

 private:
  const double decay_ns_;
  std::string address_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<uint64_t> consecutive_failures_{0};
  std::atomic<double> ewma_ns_;
  std::atomic<int64_t> stamp_ns_{0};  // when ewma_ns_ was last updated (unix ns; 0 = never)
  std::atomic<int64_t> failure_penalty_ns_{0};
};

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_ENDPOINT_STATS_H_
