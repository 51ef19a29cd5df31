#include "meshlib/resilience/hedging_policy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"

namespace meshlib::resilience {

std::optional<absl::Duration> HedgingPolicy::DelayFor(
    std::optional<absl::Duration> tracked) const {
  if (!enabled) return std::nullopt;
  if (percentile > 0 && tracked.has_value()) return std::max(*tracked, min_delay);
  if (delay > absl::ZeroDuration()) return delay;
  return std::nullopt;
}

absl::StatusOr<HedgingPolicy> ParseHedgingPolicy(const nlohmann::json& j,
                                                 absl::string_view path) {
  if (auto st = core::CheckObject(
          j, path,
          {"delay", "percentile", "max_attempts", "min_delay", "min_samples", "max_extra_load"});
      !st.ok()) {
    return st;
  }
  HedgingPolicy p;
  p.enabled = true;
  int64_t attempts = p.max_attempts;
  if (auto st = core::OptionalInt(j, path, "max_attempts", 2, 5, &attempts); !st.ok()) {
    return st;
  }
  p.max_attempts = static_cast<int>(attempts);
  if (auto st = core::OptionalDuration(j, path, "delay", absl::Microseconds(100),
                                         absl::Minutes(1), &p.delay);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDouble(j, path, "percentile", 50, 99.99, &p.percentile);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(j, path, "min_delay", absl::Microseconds(100),
                                         absl::Minutes(1), &p.min_delay);
      !st.ok()) {
    return st;
  }
  int64_t samples = p.min_samples;
  if (auto st = core::OptionalInt(j, path, "min_samples", 10, 1000000, &samples); !st.ok()) {
    return st;
  }
  p.min_samples = static_cast<int>(samples);
  if (p.percentile == 0 && p.delay == absl::ZeroDuration()) {
    return core::FieldError(path, "needs \"delay\" (fixed) or \"percentile\" (tracked)");
  }
  p.max_extra_load = p.percentile > 0 ? std::max(0.01, 1 - p.percentile / 100) : 0.05;
  if (auto st = core::OptionalDouble(j, path, "max_extra_load", 0.0001, 1, &p.max_extra_load);
      !st.ok()) {
    return st;
  }
  return p;
}

}  // namespace meshlib::resilience
