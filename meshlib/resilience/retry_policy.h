// RetryPolicy: when a failed call is tried again, parsed from a service's
// `retry` object in mesh.json:
//
//   "retry": {"max_attempts": 3, "retry_on": ["UNAVAILABLE"],
//             "per_try_timeout": "300ms",
//             "backoff": {"base": "25ms", "max": "250ms"},
//             "budget": {"ratio": 0.2, "min_per_second": 10, "ttl": "10s"}}
//
// A failed attempt is retried when its status code is in `retry_on` and the
// call is marked idempotent, or whatever the code when the failure proves
// the request never reached a handler (CallResult::not_processed); while
// attempts remain (`max_attempts` counts the first one), the call's deadline
// has time left, and the retry budget allows. Each retry waits a backoff
// with full jitter: uniform in [0, min(max, base * 2^(retry-1))] (Envoy's
// defaults 25ms / 250ms), and goes to an endpoint not tried yet where one
// exists.
//
// Threading: an immutable value.
#ifndef MESHLIB_RESILIENCE_RETRY_POLICY_H_
#define MESHLIB_RESILIENCE_RETRY_POLICY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/resilience/retry_budget.h"
#include "nlohmann/json.hpp"

namespace meshlib::resilience {

struct RetryPolicy {
  // Attempts in all, the first included. Default 1 (no retries) when there
  // is no `retry` object; 1-10.
  int max_attempts = 1;
  std::vector<absl::StatusCode> retry_on = {absl::StatusCode::kUnavailable};
  // Deadline of each attempt (never beyond the call's). Zero: the call's.
  absl::Duration per_try_timeout = absl::ZeroDuration();
  absl::Duration backoff_base = absl::Milliseconds(25);
  absl::Duration backoff_max = absl::Milliseconds(250);
  RetryBudgetOptions budget;

  bool RetriesOn(absl::StatusCode code) const;
  // Full-jitter backoff before retry number `retry` (1 = the first retry),
  // from `random64` (a uniformly random 64-bit value).
  absl::Duration Backoff(int retry, uint64_t random64) const;
};

// Parses a `retry` object at `path`; errors name the field and the rule.
absl::StatusOr<RetryPolicy> ParseRetryPolicy(const nlohmann::json& j, absl::string_view path);

// "UNAVAILABLE" -> kUnavailable; error for unknown names.
absl::StatusOr<absl::StatusCode> StatusCodeFromName(absl::string_view name);

}  // namespace meshlib::resilience

#endif  // MESHLIB_RESILIENCE_RETRY_POLICY_H_
