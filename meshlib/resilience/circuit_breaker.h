// CircuitBreaker: per-service limits that make a call fail fast instead of
// queueing behind a service that cannot keep up (Envoy's thresholds):
//
//   "circuit_breaker": {"max_pending": 1024, "max_requests": 1024, "max_retries": 64}
//
//   max_requests  calls active at once (from start to final answer, retries
//                 included). Default 1024.
//   max_pending   attempts waiting for a connection to their endpoint (sent
//                 to an endpoint with no ready connection; counted until the
//                 attempt completes). Default 1024.
//   max_retries   retries outstanding at once (waiting out their backoff or
//                 in flight). Default: no limit of its own: the retry
//                 budget (`retry.budget`) bounds retries, as Envoy lets a
//                 retry budget replace max_retries. Set it to cap retries
//                 on top of the budget. Over it, a failed attempt is not
//                 retried: its failure is the answer.
//
// Over max_requests or max_pending a call fails at once with UNAVAILABLE and
// a message naming the limit, e.g.
//   service echo: circuit breaker open: max_requests (1024) calls already active
//
// Threading: thread-safe, lock-free (atomic counters).
#ifndef MESHLIB_RESILIENCE_CIRCUIT_BREAKER_H_
#define MESHLIB_RESILIENCE_CIRCUIT_BREAKER_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace meshlib::resilience {

struct CircuitBreakerOptions {
  int64_t max_pending = 1024;
  int64_t max_requests = 1024;
  // kNoRetryLimit: only the retry budget bounds retries.
  static constexpr int64_t kNoRetryLimit = INT64_MAX / 2;
  int64_t max_retries = kNoRetryLimit;
};

// Parses a `circuit_breaker` object at `path`; errors name the field.
absl::StatusOr<CircuitBreakerOptions> ParseCircuitBreaker(const nlohmann::json& j,
                                                          absl::string_view path);

class CircuitBreaker {
 public:
  CircuitBreaker(const CircuitBreakerOptions& options, std::string service);

  // A new call. OK (and counted until EndRequest) or UNAVAILABLE naming the
  // limit.
  absl::Status TryStartRequest();
  void EndRequest() { requests_.fetch_sub(1, std::memory_order_relaxed); }
  // An attempt that has to wait for a connection.
  absl::Status TryStartPending();
  void EndPending() { pending_.fetch_sub(1, std::memory_order_relaxed); }
  // A retry; false when max_retries are already outstanding.
  bool TryStartRetry();
  void EndRetry() { retries_.fetch_sub(1, std::memory_order_relaxed); }

  int64_t active_requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t overflows() const { return overflows_.load(std::memory_order_relaxed); }
  const CircuitBreakerOptions& options() const { return options_; }

 private:
  bool TryAcquire(std::atomic<int64_t>& counter, int64_t limit);

  const CircuitBreakerOptions options_;
  const std::string service_;
  std::atomic<int64_t> requests_{0};
  std::atomic<int64_t> pending_{0};
  std::atomic<int64_t> retries_{0};
  std::atomic<uint64_t> overflows_{0};
};

}  // namespace meshlib::resilience

#endif  // MESHLIB_RESILIENCE_CIRCUIT_BREAKER_H_
