#include "meshlib/resilience/retry_budget.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace meshlib::resilience {

namespace {
constexpr int kSlices = 10;
}

absl::Status RetryBudgetOptions::Validate() const {
  if (!std::isfinite(ratio) || ratio < 0 || ratio > 1000) {
    return absl::InvalidArgumentError("ratio: must be a number between 0 and 1000");
  }
  if (!std::isfinite(min_per_second) || min_per_second < 0 || min_per_second > 1e9) {
    return absl::InvalidArgumentError("min_per_second: must be a number between 0 and 1e9");
  }
  if (ttl < absl::Seconds(1) || ttl > absl::Hours(1)) {
    return absl::InvalidArgumentError("ttl: must be between 1s and 1h");
  }
  return absl::OkStatus();
}

RetryBudget::RetryBudget(const RetryBudgetOptions& options, runtime::Clock* clock)
    : options_(options), clock_(clock), slice_(options.ttl / kSlices), slices_(kSlices) {
  current_start_ = clock_->Now();
  slice_end_ns_.store(absl::ToUnixNanos(current_start_ + slice_), std::memory_order_relaxed);
}

void RetryBudget::FoldLocked() {
  int64_t fresh = fresh_deposits_.exchange(0, std::memory_order_acq_rel);
  slices_[current_].deposits += fresh;
  deposits_ += fresh;
}

void RetryBudget::AdvanceLocked(absl::Time now) {
  FoldLocked();
  // Age out whole slices that ended more than `ttl` ago.
  int64_t steps = (now - current_start_) / slice_;
  if (steps <= 0) return;
  int64_t clear = std::min<int64_t>(steps, kSlices);
  for (int64_t i = 0; i < clear; ++i) {
    current_ = (current_ + 1) % kSlices;
    deposits_ -= slices_[current_].deposits;
    withdrawals_ -= slices_[current_].withdrawals;
    slices_[current_] = Slice{};
  }
  current_start_ += slice_ * steps;
  slice_end_ns_.store(absl::ToUnixNanos(current_start_ + slice_), std::memory_order_release);
}

double RetryBudget::BalanceLocked() const {
  double floor = options_.min_per_second * absl::ToDoubleSeconds(options_.ttl);
  return static_cast<double>(deposits_) * options_.ratio + floor -
         static_cast<double>(withdrawals_);
}

void RetryBudget::Deposit() { Deposit(clock_->Now()); }

void RetryBudget::Deposit(absl::Time now) {
  if (absl::ToUnixNanos(now) < slice_end_ns_.load(std::memory_order_acquire)) {
    fresh_deposits_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  core::MutexLock lock(&mu_);
  AdvanceLocked(now);
  ++slices_[current_].deposits;
  ++deposits_;
}

bool RetryBudget::TryWithdraw() {
  absl::Time now = clock_->Now();
  core::MutexLock lock(&mu_);
  AdvanceLocked(now);
  if (BalanceLocked() < 1) return false;
  ++slices_[current_].withdrawals;
  ++withdrawals_;
  return true;
}

double RetryBudget::Balance() {
  absl::Time now = clock_->Now();
  core::MutexLock lock(&mu_);
  AdvanceLocked(now);
  return BalanceLocked();
}

}  // namespace meshlib::resilience
