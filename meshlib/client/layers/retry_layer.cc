#include "meshlib/client/layers/retry_layer.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/lb/policy.h"
#include "meshlib/transport/frame.h"

namespace meshlib::client {

namespace {

// The server's retry pushback in a reply: nullopt when absent; a negative
// duration for "do not retry".
std::optional<absl::Duration> Pushback(const CallResult& r) {
  for (const auto& [k, v] : r.metadata) {
    if (k != transport::kRetryPushbackKey) continue;
    int64_t ms = 0;
    if (!absl::SimpleAtoi(v, &ms) || ms < 0) return absl::Milliseconds(-1);
    return absl::Milliseconds(std::min<int64_t>(ms, 3600 * 1000));
  }
  return std::nullopt;
}

}  // namespace

RetryLayer::Next RetryLayer::Decide(const CallResult& r, bool idempotent, int attempts,
                                    bool several, bool* transparent_used,
                                    absl::Duration* delay) {
  // The request provably never reached a handler, so even a call that is
  // not idempotent is safe to send again.
  const bool unsent = !r.status.ok() && r.not_processed;
  bool transparent = unsent && !*transparent_used && several;
  // An attempt that ran out of its per-try timeout while the call still has
  // time left is retried like a code in retry_on (gRPC and Envoy do the
  // same): the endpoint is slow or stalled, another may answer in time.
  bool per_try_expired = r.status.code() == absl::StatusCode::kDeadlineExceeded &&
                         policy_.per_try_timeout > absl::ZeroDuration();
  bool retryable =
      ((idempotent && (policy_.RetriesOn(r.status.code()) || per_try_expired)) || unsent) &&
      attempts < policy_.max_attempts;
  if (!transparent && !retryable) return Next::kDone;
  std::optional<absl::Duration> pushback = Pushback(r);
  if (pushback.has_value() && *pushback < absl::ZeroDuration()) {
    pushback_stops_.fetch_add(1, std::memory_order_relaxed);
    return Next::kDone;  // the server asked for no retry
  }
  if (transparent) {
    // Cheap (nothing reached a handler), but it draws on the budget too, so
    // that with every endpoint unreachable calls fail fast instead of
    // doubling.
    if (!budget_->TryWithdraw()) {
      denied_.fetch_add(1, std::memory_order_relaxed);
      return Next::kDone;
    }
    *transparent_used = true;
    transparent_.fetch_add(1, std::memory_order_relaxed);
    *delay = absl::ZeroDuration();
    return Next::kTransparent;
  }
  if (!breaker_->TryStartRetry()) return Next::kDone;  // max_retries outstanding
  if (!budget_->TryWithdraw()) {
    breaker_->EndRetry();
    denied_.fetch_add(1, std::memory_order_relaxed);
    return Next::kDone;
  }
  retries_.fetch_add(1, std::memory_order_relaxed);
  *delay = pushback.has_value() ? *pushback
                                : policy_.Backoff(attempts, lb::ThreadRandom().Next());
  return Next::kRetry;
}

std::string RetryLayer::Describe() const {
  std::vector<std::string> codes;
  for (absl::StatusCode c : policy_.retry_on) codes.push_back(absl::StatusCodeToString(c));
  const resilience::RetryBudgetOptions& b = policy_.budget;
  std::string budget = absl::StrCat("budget ", b.ratio * 100, "% of calls + ", b.min_per_second,
                                    "/s over ", absl::FormatDuration(b.ttl));
  if (policy_.max_attempts > 1) {
    return absl::StrCat("idempotent calls up to ", policy_.max_attempts, " attempts on [",
                        absl::StrJoin(codes, ", "), "], backoff ",
                        absl::FormatDuration(policy_.backoff_base), "..",
                        absl::FormatDuration(policy_.backoff_max), " full jitter; ", budget,
                        "; unsent calls once more elsewhere");
  }
  return absl::StrCat("unsent calls once more elsewhere (", budget, ")");
}

}  // namespace meshlib::client
