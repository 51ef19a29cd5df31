// HedgingPolicy: when an idempotent call slow to answer gets a second
// attempt on another endpoint, parsed from a service's `hedging` object:
//
//   "hedging": {"delay": "50ms", "max_attempts": 2}        // fixed delay
//   "hedging": {"percentile": 95, "max_attempts": 2}       // tracked p95
//   "hedging": {"percentile": 95, "delay": "50ms"}         // p95; 50ms until known
//   "hedging": {"delay": "20ms", "max_extra_load": 0.02}   // at most 2% more attempts
//
// After `delay` (or the `percentile`-th latency of recent attempts, which
// the client tracks; see LatencyTracker) with no answer, the call is sent
// again to an endpoint not tried yet, up to `max_attempts` in flight in
// all (the first included). The first good answer wins and the others are
// cancelled. Every hedge draws on a hedge budget of `max_extra_load` of
// recent calls and on the service's retry budget, so hedging adds a bounded
// share of load ("The Tail at Scale" hedged requests, bounded the way
// Finagle bounds backup requests). Only calls marked idempotent are hedged.
//
// Threading: an immutable value.
#ifndef MESHLIB_RESILIENCE_HEDGING_POLICY_H_
#define MESHLIB_RESILIENCE_HEDGING_POLICY_H_

#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace meshlib::resilience {

struct HedgingPolicy {
  bool enabled = false;  // a `hedging` object is present
  // Attempts in flight at most, the first included. Default 2; 2-5.
  int max_attempts = 2;
  // Fixed delay before each hedge; with `percentile`, the delay used until
  // enough latencies are known (zero: no hedging until then).
  absl::Duration delay = absl::ZeroDuration();
  // 0: fixed delay. Otherwise the percentile (50-99.99) of recent attempt
  // latencies to wait for before hedging.
  double percentile = 0;
  // Floor of a tracked delay, so a very fast service is not hedged at once.
  // Default 1ms.
  absl::Duration min_delay = absl::Milliseconds(1);
  // Samples needed before the tracked percentile is used. Default 100.
  int min_samples = 100;
  // Hedges allowed as a fraction of recent calls (Finagle's maxExtraLoad),
  // on top of the retry budget they also draw on. Default: 1 - percentile
  // / 100 (at least 0.01) with a percentile, 0.05 with a fixed delay, so
  // that hedging at p95 costs at most ~5% extra attempts, as "The Tail at
  // Scale" prices it. It also keeps a percentile honest: attempts given up
  // on are recorded at the time they were given up, so hedging far more
  // than 1 - p of them would drag the tracked percentile up with the delay.
  double max_extra_load = 0.05;

  // The delay to use given the tracked percentile (nullopt: not known yet).
  // nullopt: do not hedge now.
  std::optional<absl::Duration> DelayFor(std::optional<absl::Duration> tracked) const;
};

// Parses a `hedging` object at `path`; errors name the field and the rule.
absl::StatusOr<HedgingPolicy> ParseHedgingPolicy(const nlohmann::json& j, absl::string_view path);

}  // namespace meshlib::resilience

#endif  // MESHLIB_RESILIENCE_HEDGING_POLICY_H_
