// RetryLayer: whether a failed attempt is sent again, when, and what it
// costs.
//
// A call refused before any handler saw it (CallResult::not_processed: a
// draining server, a connection never set up) goes once more to another
// endpoint whatever the policy, as gRPC's transparent retry does. Beyond
// that the service's policy (resilience::RetryPolicy) retries idempotent
// calls on its status codes, and on an expired per-try timeout, after a
// full-jitter backoff, while attempts remain. Every retry draws on the
// retry budget (each call deposits into it), so that a failing fleet sees
// a bounded extra load; a server's retry pushback overrides the backoff or
// forbids the retry. Above hedging and the breaker: a retry is a new round
// of attempts, each admitted below.
#ifndef MESHLIB_CLIENT_LAYERS_RETRY_LAYER_H_
#define MESHLIB_CLIENT_LAYERS_RETRY_LAYER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "meshlib/client/layer.h"
#include "meshlib/resilience/circuit_breaker.h"
#include "meshlib/resilience/retry_budget.h"
#include "meshlib/resilience/retry_policy.h"

namespace meshlib::client {

class RetryLayer final : public Layer {
 public:
  // `breaker` counts retries outstanding (its max_retries).
  RetryLayer(resilience::RetryPolicy policy, std::shared_ptr<resilience::RetryBudget> budget,
             std::shared_ptr<resilience::CircuitBreaker> breaker)
      : policy_(std::move(policy)), budget_(std::move(budget)), breaker_(std::move(breaker)) {}
  absl::string_view role() const override { return "retry"; }
  std::string Describe() const override;
  uint32_t hooks() const override { return kAdmit; }
  // Every call earns its share of the budget.
  absl::Status Admit(const CallInfo& call) override {
    budget_->Deposit(call.start);
    return absl::OkStatus();
  }

  enum class Next { kDone, kTransparent, kRetry };
  // After a failed attempt (the call's `attempts` so far): done, once more
  // at once elsewhere (transparent; `*transparent_used` is then set), or a
  // retry after `*delay`, which holds a breaker retry slot the caller ends
  // with EndRetry. `several`: the service has more than one endpoint.
  Next Decide(const CallResult& r, bool idempotent, int attempts, bool several,
              bool* transparent_used, absl::Duration* delay);
  void EndRetry() { breaker_->EndRetry(); }

  const resilience::RetryPolicy& policy() const { return policy_; }
  // Shared with hedging, and with the stack of a reload whose budget
  // settings are the same.
  const std::shared_ptr<resilience::RetryBudget>& budget() const { return budget_; }

  uint64_t transparent_retries() const { return transparent_.load(std::memory_order_relaxed); }
  uint64_t retries() const { return retries_.load(std::memory_order_relaxed); }
  uint64_t denied() const { return denied_.load(std::memory_order_relaxed); }
  uint64_t pushback_stops() const { return pushback_stops_.load(std::memory_order_relaxed); }

 private:
  const resilience::RetryPolicy policy_;
  const std::shared_ptr<resilience::RetryBudget> budget_;
  const std::shared_ptr<resilience::CircuitBreaker> breaker_;
  std::atomic<uint64_t> transparent_{0};
  std::atomic<uint64_t> retries_{0};
  std::atomic<uint64_t> denied_{0};
  std::atomic<uint64_t> pushback_stops_{0};
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYERS_RETRY_LAYER_H_
