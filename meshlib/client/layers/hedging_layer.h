// HedgingLayer: sends an idempotent call that has not answered after the
// hedge delay once more, to an endpoint not tried yet; the first good answer
// wins and the others are cancelled (resilience::HedgingPolicy, the
// service's `hedging` section). The delay is fixed, or a percentile of
// recent attempts' latency (resilience::LatencyTracker). Hedges draw on a
// budget of their own (`max_extra_load`) and on the retry budget. Below
// retry (a retry starts a new round, which may be hedged again), above the
// breaker (each hedge is admitted there).
#ifndef MESHLIB_CLIENT_LAYERS_HEDGING_LAYER_H_
#define MESHLIB_CLIENT_LAYERS_HEDGING_LAYER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "meshlib/client/layer.h"
#include "meshlib/resilience/hedging_policy.h"
#include "meshlib/resilience/latency_tracker.h"
#include "meshlib/resilience/retry_budget.h"

namespace meshlib::client {

class HedgingLayer final : public Layer {
 public:
  // With hedging enabled, `hedge_budget` must be set; `latency` when the
  // policy tracks a percentile.
  HedgingLayer(resilience::HedgingPolicy policy,
               std::shared_ptr<resilience::RetryBudget> hedge_budget,
               std::shared_ptr<resilience::RetryBudget> retry_budget,
               std::shared_ptr<resilience::LatencyTracker> latency)
      : policy_(policy),
        hedge_budget_(std::move(hedge_budget)),
        retry_budget_(std::move(retry_budget)),
        latency_(std::move(latency)) {}
  absl::string_view role() const override { return "hedging"; }
  std::string Describe() const override;
  uint32_t hooks() const override {
    uint32_t h = 0;
    if (policy_.enabled) h |= kAdmit;
    if (latency_ != nullptr) h |= kAttemptEnd;
    return h;
  }
  // A hedged call earns its share of the hedge budget.
  absl::Status Admit(const CallInfo& call) override {
    if (call.hedged) hedge_budget_->Deposit(call.start);
    return absl::OkStatus();
  }
  // Feeds the percentile. A hedge cancelled because another attempt won
  // took at least this long: keeping that lower bound keeps the slow tail
  // in the percentile.
  void OnAttemptEnd(const AttemptInfo& attempt, const CallResult& result) override {
    if (result.status.ok() || result.status.code() == absl::StatusCode::kCancelled) {
      latency_->Record(attempt.latency, attempt.end);
    }
  }

  bool Applies(const CallOptions& options) const { return policy_.enabled && options.idempotent; }
  // The wait before the next hedge; nullopt: none (the percentile is not
  // known yet and no fallback delay is set).
  std::optional<absl::Duration> NextDelay() const;
  // Attempts in flight at most.
  int max_in_flight() const { return policy_.max_attempts; }
  // A hedge is due: true if both budgets allow it (counted either way).
  bool TryStartHedge();

  const resilience::HedgingPolicy& policy() const { return policy_; }
  const std::shared_ptr<resilience::RetryBudget>& hedge_budget() const { return hedge_budget_; }
  const std::shared_ptr<resilience::LatencyTracker>& latency() const { return latency_; }
  uint64_t hedges() const { return hedges_.load(std::memory_order_relaxed); }
  uint64_t denied() const { return denied_.load(std::memory_order_relaxed); }

 private:
  const resilience::HedgingPolicy policy_;
  const std::shared_ptr<resilience::RetryBudget> hedge_budget_;
  const std::shared_ptr<resilience::RetryBudget> retry_budget_;
  const std::shared_ptr<resilience::LatencyTracker> latency_;
  std::atomic<uint64_t> hedges_{0};
  std::atomic<uint64_t> denied_{0};
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYERS_HEDGING_LAYER_H_
