// RetryBudget: how many retries (and hedges) a client may add on top of its
// calls, with Finagle's and Linkerd's semantics, so that retries cannot
// multiply the load on a struggling service.
//
//   resilience::RetryBudget budget(resilience::RetryBudgetOptions{}, &clock);
//   budget.Deposit();                       // every call (first attempt)
//   if (budget.TryWithdraw()) Retry();      // every retry or hedge
//
// Over the last `ttl` (default 10s), retries may add up to `ratio` (default
// 0.2) of the calls made, plus a floor of `min_per_second` (default 10)
// retries per second so that a client with little traffic can still retry.
// Calls and retries are counted in a ring of one-second-or-shorter slices
// that age out as the clock moves, so the budget follows the recent rate.
//
// Threading: thread-safe (a mutex: retries are off the fast path, and a
// call's first attempt costs one locked increment).
#ifndef MESHLIB_RESILIENCE_RETRY_BUDGET_H_
#define MESHLIB_RESILIENCE_RETRY_BUDGET_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "meshlib/core/sync.h"
#include "meshlib/runtime/executor.h"

namespace meshlib::resilience {

struct RetryBudgetOptions {
  // Retries allowed as a fraction of recent calls. Default 0.2; 0-1000.
  double ratio = 0.2;
  // Retries always allowed per second, whatever the call rate. Default 10.
  double min_per_second = 10;
  // The window calls and retries are remembered over. Default 10s; 1s-1h.
  absl::Duration ttl = absl::Seconds(10);

  absl::Status Validate() const;
};

class RetryBudget {
 public:
  // `clock` must outlive the budget.
  RetryBudget(const RetryBudgetOptions& options, runtime::Clock* clock);

  // Records a call (a first attempt): it earns `ratio` of a retry. Lock-free
  // except once per slice (ttl / 10). `now` saves a clock read when the
  // caller has it.
  void Deposit();
  void Deposit(absl::Time now);
  // Takes one retry from the budget; false (and nothing taken) when the
  // budget is spent.
  bool TryWithdraw();
  // Retries available now (may be fractional).
  double Balance();

  const RetryBudgetOptions& options() const { return options_; }

 private:
  void AdvanceLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves deposits made without the lock into the current slice.
  void FoldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  double BalanceLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RetryBudgetOptions options_;
  runtime::Clock* const clock_;
  const absl::Duration slice_;
  core::Mutex mu_;
  struct Slice {
    int64_t deposits = 0;
    int64_t withdrawals = 0;
  };
  std::vector<Slice> slices_ ABSL_GUARDED_BY(mu_);
  size_t current_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time current_start_ ABSL_GUARDED_BY(mu_);
  int64_t deposits_ ABSL_GUARDED_BY(mu_) = 0;     // sum over the window
  int64_t withdrawals_ ABSL_GUARDED_BY(mu_) = 0;  // sum over the window
  // Deposits made since the last fold, and the end of the current slice
  // (unix ns) before which a deposit needs no lock.
  std::atomic<int64_t> fresh_deposits_{0};
  std::atomic<int64_t> slice_end_ns_{0};
};

}  // namespace meshlib::resilience

#endif  // MESHLIB_RESILIENCE_RETRY_BUDGET_H_
