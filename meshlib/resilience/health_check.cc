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

bool ProbeReplySaysServing(absl::string_view method, absl::string_view reply) {
  if (method != transport::kGrpcHealthCheckMethod) return true;
  // Walk the protobuf fields; the status is field 1, a varint.
  uint64_t status = 0;
  size_t i = 0;
  auto varint = [&](uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64 && i < reply.size(); shift += 7) {
      const auto b = static_cast<unsigned char>(reply[i++]);
      *v |= uint64_t{b & 0x7fu} << shift;
      if ((b & 0x80u) == 0) return true;
    }
    return false;
  };
  while (i < reply.size()) {
    uint64_t key = 0;
    if (!varint(&key)) return false;
    const uint64_t wire_type = key & 7;
    if (wire_type == 0) {
      uint64_t v = 0;
      if (!varint(&v)) return false;
      if ((key >> 3) == 1) status = v;
    } else if (wire_type == 2) {
      uint64_t len = 0;
      if (!varint(&len) || len > reply.size() - i) return false;
      i += len;
    } else if (wire_type == 1 && reply.size() - i >= 8) {
      i += 8;
    } else if (wire_type == 5 && reply.size() - i >= 4) {
      i += 4;
    } else {
      return false;
    }
  }
  return status == 1;  // SERVING
}

}  // namespace meshlib::resilience
