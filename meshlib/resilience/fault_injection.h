// FaultInjection: deliberate failures for testing a system's resilience in
// staging, parsed from a service's `fault` object (Envoy's fault filter, on
// the client side):
//
//   "fault": {"delay": {"percent": 10, "duration": "100ms"},
//             "abort": {"percent": 1, "code": "UNAVAILABLE"}}
//
// Each call independently: with probability delay.percent/100 it waits
// `duration` before its first attempt (still within its deadline, so a
// delay longer than the time left ends it with DEADLINE_EXCEEDED); with
// probability abort.percent/100 it fails at once with `code` (default
// UNAVAILABLE) and a message saying the failure was injected, without
// reaching any endpoint and without retries: it tests the caller's
// handling, not the mesh's. Both may apply to one call (delay, then abort).
//
// Threading: an immutable value.
#ifndef MESHLIB_RESILIENCE_FAULT_INJECTION_H_
#define MESHLIB_RESILIENCE_FAULT_INJECTION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace meshlib::resilience {

struct FaultInjection {
  double delay_percent = 0;  // 0-100
  absl::Duration delay = absl::ZeroDuration();
  double abort_percent = 0;  // 0-100
  absl::StatusCode abort_code = absl::StatusCode::kUnavailable;

  bool enabled() const { return delay_percent > 0 || abort_percent > 0; }

  struct Decision {
    absl::Duration delay = absl::ZeroDuration();  // zero: none
    bool abort = false;
  };
  // The faults for one call, from two uniformly random 64-bit values.
  Decision Decide(uint64_t random_delay, uint64_t random_abort) const;
  // The status an aborted call ends with.
  absl::Status AbortStatus() const;
};

// Parses a `fault` object at `path`; errors name the field and the rule.
absl::StatusOr<FaultInjection> ParseFaultInjection(const nlohmann::json& j,
                                                   absl::string_view path);

}  // namespace meshlib::resilience

#endif  // MESHLIB_RESILIENCE_FAULT_INJECTION_H_
