#include "meshlib/resilience/circuit_breaker.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"

namespace meshlib::resilience {

absl::StatusOr<CircuitBreakerOptions> ParseCircuitBreaker(const nlohmann::json& j,
                                                          absl::string_view path) {
  if (auto st = core::CheckObject(j, path, {"max_pending", "max_requests", "max_retries"});
      !st.ok()) {
    return st;
  }
  CircuitBreakerOptions o;
  constexpr int64_t kMax = 1 << 30;
  if (auto st = core::OptionalInt(j, path, "max_pending", 1, kMax, &o.max_pending); !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalInt(j, path, "max_requests", 1, kMax, &o.max_requests);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalInt(j, path, "max_retries", 0, kMax, &o.max_retries); !st.ok()) {
    return st;
  }
  return o;
}

CircuitBreaker::CircuitBreaker(const CircuitBreakerOptions& options, std::string service)
    : options_(options), service_(std::move(service)) {}

bool CircuitBreaker::TryAcquire(std::atomic<int64_t>& counter, int64_t limit) {
  int64_t now = counter.fetch_add(1, std::memory_order_relaxed);
  if (now < limit) return true;
  counter.fetch_sub(1, std::memory_order_relaxed);
  overflows_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

absl::Status CircuitBreaker::TryStartRequest() {
  if (TryAcquire(requests_, options_.max_requests)) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("service ", service_,
                                             ": circuit breaker open: max_requests (",
                                             options_.max_requests, ") calls already active"));
}

absl::Status CircuitBreaker::TryStartPending() {
  if (TryAcquire(pending_, options_.max_pending)) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(
      "service ", service_, ": circuit breaker open: max_pending (", options_.max_pending,
      ") calls already waiting for a connection"));
}

bool CircuitBreaker::TryStartRetry() { return TryAcquire(retries_, options_.max_retries); }

}  // namespace meshlib::resilience
