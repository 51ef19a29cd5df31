#include "meshlib/resilience/retry_policy.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "meshlib/core/json_fields.h"

namespace meshlib::resilience {

using json = nlohmann::json;

absl::StatusOr<absl::StatusCode> StatusCodeFromName(absl::string_view name) {
  for (int c = 1; c <= 16; ++c) {
    auto code = static_cast<absl::StatusCode>(c);
    std::string n = absl::AsciiStrToUpper(absl::StatusCodeToString(code));
    absl::StrReplaceAll({{" ", "_"}}, &n);
    if (n == name) return code;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("\"", name, "\" is not a status code name (e.g. UNAVAILABLE, ",
                   "DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)"));
}

bool RetryPolicy::RetriesOn(absl::StatusCode code) const {
  return std::find(retry_on.begin(), retry_on.end(), code) != retry_on.end();
}

absl::Duration RetryPolicy::Backoff(int retry, uint64_t random64) const {
  absl::Duration cap = backoff_base;
  for (int i = 1; i < retry && cap < backoff_max; ++i) cap *= 2;
  cap = std::min(cap, backoff_max);
  double u = static_cast<double>(random64 >> 11) / static_cast<double>(1ull << 53);
  return cap * u;
}

absl::StatusOr<RetryPolicy> ParseRetryPolicy(const json& j, absl::string_view path) {
  if (auto st = core::CheckObject(
          j, path, {"max_attempts", "retry_on", "per_try_timeout", "backoff", "budget"});
      !st.ok()) {
    return st;
  }
  RetryPolicy p;
  p.max_attempts = 3;  // a retry object without max_attempts means retries
  int64_t attempts = p.max_attempts;
  if (auto st = core::OptionalInt(j, path, "max_attempts", 1, 10, &attempts); !st.ok()) {
    return st;
  }
  p.max_attempts = static_cast<int>(attempts);
  std::vector<std::string> names;
  if (auto st = core::OptionalStringList(j, path, "retry_on", &names); !st.ok()) return st;
  if (!names.empty()) {
    p.retry_on.clear();
    for (size_t i = 0; i < names.size(); ++i) {
      auto code = StatusCodeFromName(names[i]);
      if (!code.ok()) {
        return core::FieldError(absl::StrCat(core::JoinPath(path, "retry_on"), "[", i, "]"),
                                  code.status().message());
      }
      p.retry_on.push_back(*code);
    }
  }
  if (auto st = core::OptionalDuration(j, path, "per_try_timeout", absl::Milliseconds(1),
                                         absl::Hours(1), &p.per_try_timeout);
      !st.ok()) {
    return st;
  }
  if (auto b = j.find("backoff"); b != j.end()) {
    std::string bp = core::JoinPath(path, "backoff");
    if (auto st = core::CheckObject(*b, bp, {"base", "max"}); !st.ok()) return st;
    if (auto st = core::OptionalDuration(*b, bp, "base", absl::Milliseconds(1),
                                           absl::Minutes(1), &p.backoff_base);
        !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalDuration(*b, bp, "max", absl::Milliseconds(1),
                                           absl::Minutes(10), &p.backoff_max);
        !st.ok()) {
      return st;
    }
    if (p.backoff_max < p.backoff_base) {
      return core::FieldError(core::JoinPath(bp, "max"), "must be >= base");
    }
  }
  if (auto b = j.find("budget"); b != j.end()) {
    std::string bp = core::JoinPath(path, "budget");
    if (auto st = core::CheckObject(*b, bp, {"ratio", "min_per_second", "ttl"}); !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalDouble(*b, bp, "ratio", 0, 1000, &p.budget.ratio); !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalDouble(*b, bp, "min_per_second", 0, 1e9,
                                         &p.budget.min_per_second);
        !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalDuration(*b, bp, "ttl", absl::Seconds(1), absl::Hours(1),
                                           &p.budget.ttl);
        !st.ok()) {
      return st;
    }
  }
  return p;
}

}  // namespace meshlib::resilience
