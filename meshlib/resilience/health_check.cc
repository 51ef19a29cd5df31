#include "meshlib/resilience/health_check.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"

namespace meshlib::resilience {

using json = nlohmann::json;

namespace {

constexpr int64_t kMaxThreshold = 1000;
const absl::Duration kMinInterval = absl::Milliseconds(10);
const absl::Duration kMaxInterval = absl::Hours(1);
const absl::Duration kMinTimeout = absl::Milliseconds(1);

// Uniform in [0, 1) from the top 53 bits.
double Unit(uint64_t random64) {
  return static_cast<double>(random64 >> 11) / static_cast<double>(uint64_t{1} << 53);
}

absl::Status TimeoutWithinInterval(absl::Duration timeout, absl::Duration interval,
                                   absl::string_view field) {
  if (timeout > interval) {
    // A probe must end before the next is due; overlapping probes of one
    // endpoint would make its runs of results ambiguous.
    return core::FieldError(field, absl::StrCat("must be <= interval (",
                                                  absl::FormatDuration(interval), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status HealthCheckOptions::Validate() const {
  if (interval < kMinInterval || interval > kMaxInterval) {
    return core::FieldError("interval", "must be between 10ms and 1h");
  }
  if (timeout < kMinTimeout || timeout > kMaxInterval) {
    return core::FieldError("timeout", "must be between 1ms and 1h");
  }
  if (auto st = TimeoutWithinInterval(timeout, interval, "timeout"); !st.ok()) return st;
  if (unhealthy_threshold < 1 || unhealthy_threshold > kMaxThreshold) {
    return core::FieldError("unhealthy_threshold", "must be an integer between 1 and 1000");
  }
  if (healthy_threshold < 1 || healthy_threshold > kMaxThreshold) {
    return core::FieldError("healthy_threshold", "must be an integer between 1 and 1000");
  }
  if (method.empty()) return core::FieldError("method", "must be a non-empty string");
  if (!std::isfinite(jitter) || jitter < 0 || jitter > 1) {
    return core::FieldError("jitter", "must be a number between 0 and 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<HealthCheckOptions> ParseHealthCheck(const json& j, absl::string_view path) {
  if (auto st = core::CheckObject(j, path,
                                    {"interval", "timeout", "unhealthy_threshold",
                                     "healthy_threshold", "method", "jitter"});
      !st.ok()) {
    return st;
  }
  HealthCheckOptions o;
  if (auto st = core::OptionalDuration(j, path, "interval", kMinInterval, kMaxInterval,
                                         &o.interval);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(j, path, "timeout", kMinTimeout, kMaxInterval,
                                         &o.timeout);
      !st.ok()) {
    return st;
  }
  if (auto st = TimeoutWithinInterval(o.timeout, o.interval, core::JoinPath(path, "timeout"));
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalInt(j, path, "unhealthy_threshold", 1, kMaxThreshold,
                                    &o.unhealthy_threshold);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalInt(j, path, "healthy_threshold", 1, kMaxThreshold,
                                    &o.healthy_threshold);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalString(j, path, "method", &o.method); !st.ok()) return st;
  if (auto st = core::OptionalDouble(j, path, "jitter", 0, 1, &o.jitter); !st.ok()) return st;
  return o;
}

HealthChecker::HealthChecker(const HealthCheckOptions& options) : options_(options) {}

bool HealthChecker::OnProbeResult(bool ok) {
  bool was_healthy = healthy();
  if (ok) {
    ++probes_ok_;
    ++successes_;
    failures_ = 0;
    if (!was_healthy && successes_ >= options_.healthy_threshold) {
      healthy_.store(true, std::memory_order_release);
      ++transitions_;
      return true;
    }
    return false;
  }
  ++probes_failed_;
  ++failures_;
  successes_ = 0;
  if (was_healthy && failures_ >= options_.unhealthy_threshold) {
    healthy_.store(false, std::memory_order_release);
    ++transitions_;
    return true;
  }
  return false;
}

absl::Duration HealthChecker::FirstProbeDelay(uint64_t random64) const {
  return options_.interval * Unit(random64);
}

absl::Duration HealthChecker::NextProbeDelay(uint64_t random64) const {
  double factor = 1 + options_.jitter * (2 * Unit(random64) - 1);
  return options_.interval * factor;
}

}  // namespace meshlib::resilience
