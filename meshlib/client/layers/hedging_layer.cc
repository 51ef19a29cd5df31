#include "meshlib/client/layers/hedging_layer.h"

#include "absl/strings/str_cat.h"

namespace meshlib::client {

std::optional<absl::Duration> HedgingLayer::NextDelay() const {
  std::optional<absl::Duration> tracked;
  if (latency_ != nullptr) tracked = latency_->Percentile(policy_.percentile);
  return policy_.DelayFor(tracked);
}

bool HedgingLayer::TryStartHedge() {
  if (!hedge_budget_->TryWithdraw() || !retry_budget_->TryWithdraw()) {
    denied_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  hedges_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

std::string HedgingLayer::Describe() const {
  if (!policy_.enabled) return "off";
  std::string when =
      policy_.percentile > 0
          ? absl::StrCat("p", policy_.percentile, " of recent attempts",
                         policy_.delay > absl::ZeroDuration()
                             ? absl::StrCat(" (", absl::FormatDuration(policy_.delay),
                                            " until known)")
                             : "")
          : absl::FormatDuration(policy_.delay);
  return absl::StrCat("idempotent calls after ", when, ", up to ", policy_.max_attempts,
                      " in flight, at most ", policy_.max_extra_load * 100, "% extra load");
}

}  // namespace meshlib::client
