// HealthChecker: the state machine of active health checks for one endpoint,
// from a service's optional `health_check` object in mesh.json:
//
//   "health_check": {"interval": "5s", "timeout": "1s", "unhealthy_threshold": 3,
//                    "healthy_threshold": 2, "method": "meshlib.Health/Check",
//                    "jitter": 0.1}
//
// Absent: no active checks. The caller sends each probe (a call of `method`
// with `timeout` as its deadline) and reports whether it succeeded; this
// class only decides the endpoint's health and when to probe next:
//
//   resilience::HealthChecker hc(options);
//   ScheduleAfter(hc.FirstProbeDelay(rng()), SendProbe);
//   // when the probe completes:
//   if (hc.OnProbeResult(status.ok())) RebuildPicker();  // health flipped
//   ScheduleAfter(hc.NextProbeDelay(rng()), SendProbe);
//
// Thresholds as Envoy's: a healthy endpoint turns unhealthy after
// `unhealthy_threshold` failed probes in a row, an unhealthy one healthy
// again after `healthy_threshold` good probes in a row; any other result
// resets the opposite run.
//
// An endpoint starts healthy (unlike Envoy, which holds a new host out until
// its first good check): discovery just said it exists, and starting
// unhealthy would leave a freshly started client, or a service whose every
// endpoint was just replaced, with nothing to call for a whole probe round.
// A dead endpoint is caught by its failing calls (outlier detection, retries
// to another endpoint) before its probes catch it.
//
// Threading: OnProbeResult from one thread at a time (the control loop);
// healthy() from any thread; the rest is immutable or read by that thread.
#ifndef MESHLIB_RESILIENCE_HEALTH_CHECK_H_
#define MESHLIB_RESILIENCE_HEALTH_CHECK_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/transport/frame.h"
#include "nlohmann/json.hpp"

namespace meshlib::resilience {

struct HealthCheckOptions {
  // Time between the end of a probe and the start of the next, before
  // jitter. Default 5s (Envoy requires it and has no default; brpc uses 3s,
  // Kubernetes 10s); 10ms-1h.
  absl::Duration interval = absl::Seconds(5);
  // Deadline of each probe; a probe past it has failed. Default 1s (as
  // Kubernetes probes); 1ms up to `interval`.
  absl::Duration timeout = absl::Seconds(1);
  // Failed probes in a row that make a healthy endpoint unhealthy. Default 3;
  // 1-1000.
  int64_t unhealthy_threshold = 3;
  // Good probes in a row that make an unhealthy endpoint healthy. Default 2;
  // 1-1000.
  int64_t healthy_threshold = 2;
  // The method called; every meshlib server answers it (OK "SERVING", or
  // UNAVAILABLE while draining). Default "meshlib.Health/Check".
  std::string method = transport::kHealthCheckMethod;
  // Each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter], so
  // that the clients of a service do not probe it in step. Default 0.1;
  // 0-1.
  double jitter = 0.1;

  // The ranges ParseHealthCheck checks; errors name the field (no path).
  absl::Status Validate() const;
};

// Whether a probe's successful reply says the endpoint serves. For
// kGrpcHealthCheckMethod the reply is a grpc.health.v1.HealthCheckResponse
// (protobuf: field 1, the status, SERVING = 1): anything else (NOT_SERVING,
// UNKNOWN, an empty or garbled reply) is a failed probe. Any other method:
// true (the call's OK status is the answer).
bool ProbeReplySaysServing(absl::string_view method, absl::string_view reply);

// Parses a `health_check` object at `path` (e.g. "services.echo.health_check");
// unknown keys are rejected, errors name the field:
// `<path>.timeout: must be <= interval (5s)`.
absl::StatusOr<HealthCheckOptions> ParseHealthCheck(const nlohmann::json& j,
                                                    absl::string_view path);

class HealthChecker {
 public:
  // `options` must be valid (as ParseHealthCheck returns them).
  explicit HealthChecker(const HealthCheckOptions& options);

  // One probe's outcome. Returns true when it flipped the endpoint's health
  // (read the new value from healthy()).
  bool OnProbeResult(bool ok);
  bool healthy() const { return healthy_.load(std::memory_order_acquire); }
  // Takes over `other`'s verdict and its run of successes or failures (the
  // checker of a configuration this one replaces). Same thread rules as
  // OnProbeResult, for both.
  void Adopt(const HealthChecker& other) {
    healthy_.store(other.healthy(), std::memory_order_release);
    successes_ = other.successes_;
    failures_ = other.failures_;
  }

  // Delay before the first probe: uniform in [0, interval], so that the
  // probes of many endpoints (and clients) start spread out. `random64` is a
  // uniformly random 64-bit value.
  absl::Duration FirstProbeDelay(uint64_t random64) const;
  // Delay before the next probe: interval scaled by a factor uniform in
  // [1 - jitter, 1 + jitter].
  absl::Duration NextProbeDelay(uint64_t random64) const;

  // The current run of good / failed probes (one of them is 0).
  int64_t consecutive_successes() const { return successes_; }
  int64_t consecutive_failures() const { return failures_; }
  uint64_t probes_ok() const { return probes_ok_; }
  uint64_t probes_failed() const { return probes_failed_; }
  // Health flips so far.
  uint64_t transitions() const { return transitions_; }
  const HealthCheckOptions& options() const { return options_; }

 private:
  const HealthCheckOptions options_;
  std::atomic<bool> healthy_{true};
  int64_t successes_ = 0;
  int64_t failures_ = 0;
  uint64_t probes_ok_ = 0;
  uint64_t probes_failed_ = 0;
  uint64_t transitions_ = 0;
};

}  // namespace meshlib::resilience

#endif  // MESHLIB_RESILIENCE_HEALTH_CHECK_H_
