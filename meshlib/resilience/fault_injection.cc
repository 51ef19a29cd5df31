#include "meshlib/resilience/fault_injection.h"

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/resilience/retry_policy.h"

namespace meshlib::resilience {

namespace {
// Uniform in [0, 100).
double Percent(uint64_t r) {
  return static_cast<double>(r >> 11) / static_cast<double>(1ull << 53) * 100.0;
}
}  // namespace

FaultInjection::Decision FaultInjection::Decide(uint64_t random_delay,
                                                uint64_t random_abort) const {
  Decision d;
  if (delay_percent > 0 && Percent(random_delay) < delay_percent) d.delay = delay;
  if (abort_percent > 0 && Percent(random_abort) < abort_percent) d.abort = true;
  return d;
}

absl::Status FaultInjection::AbortStatus() const {
  return absl::Status(abort_code, absl::StrCat("fault injected: abort (", abort_percent,
                                               "% of calls, by the service's fault config)"));
}

absl::StatusOr<FaultInjection> ParseFaultInjection(const nlohmann::json& j,
                                                   absl::string_view path) {
  if (auto st = core::CheckObject(j, path, {"delay", "abort"}); !st.ok()) return st;
  FaultInjection f;
  if (auto d = j.find("delay"); d != j.end()) {
    std::string dp = core::JoinPath(path, "delay");
    if (auto st = core::CheckObject(*d, dp, {"percent", "duration"}); !st.ok()) return st;
    if (!d->contains("percent") || !d->contains("duration")) {
      return core::FieldError(dp, "needs both \"percent\" and \"duration\"");
    }
    if (auto st = core::OptionalDouble(*d, dp, "percent", 0, 100, &f.delay_percent);
        !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalDuration(*d, dp, "duration", absl::ZeroDuration(),
                                           absl::Hours(1), &f.delay);
        !st.ok()) {
      return st;
    }
  }
  if (auto a = j.find("abort"); a != j.end()) {
    std::string ap = core::JoinPath(path, "abort");
    if (auto st = core::CheckObject(*a, ap, {"percent", "code"}); !st.ok()) return st;
    if (!a->contains("percent")) return core::FieldError(ap, "needs \"percent\"");
    if (auto st = core::OptionalDouble(*a, ap, "percent", 0, 100, &f.abort_percent);
        !st.ok()) {
      return st;
    }
    std::string code = "UNAVAILABLE";
    if (auto st = core::OptionalString(*a, ap, "code", &code); !st.ok()) return st;
    auto parsed = StatusCodeFromName(code);
    if (!parsed.ok()) {
      return core::FieldError(core::JoinPath(ap, "code"), parsed.status().message());
    }
    f.abort_code = *parsed;
  }
  return f;
}

}  // namespace meshlib::resilience
