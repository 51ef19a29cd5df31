#include "meshlib/client/layers/deadline_layer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "meshlib/core/deadline_context.h"
#include "meshlib/core/fast_time.h"

namespace meshlib::client {

std::string DeadlineLayer::Describe() const {
  return absl::StrCat("timeout ", absl::FormatDuration(default_timeout_),
                      " unless the call sets one; the caller's deadline is inherited",
                      per_try_timeout_ > absl::ZeroDuration()
                          ? absl::StrCat("; each attempt at most ",
                                         absl::FormatDuration(per_try_timeout_))
                          : "");
}

absl::Time DeadlineLayer::DeadlineOf(const CallOptions& options, absl::Time now) const {
  absl::Time deadline = core::TimePlus(
      now, options.timeout > absl::ZeroDuration() ? options.timeout : default_timeout_);
  return std::min({deadline, options.deadline, core::CurrentDeadline()});
}

void DeadlineLayer::ShapeAttempt(const CallOptions& call, absl::Time deadline,
                                 absl::Duration left, CallOptions* attempt) const {
  *attempt = call;
  attempt->deadline = deadline;
  attempt->timeout = AttemptTimeout(left);
}

}  // namespace meshlib::client
