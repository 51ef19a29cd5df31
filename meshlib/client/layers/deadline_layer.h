// DeadlineLayer: when a call ends and how long each attempt may take.
//
// A call ends at the earliest of its timeout (the service's default unless
// it sets one), CallOptions::deadline and the deadline of the call being
// served on this thread (core::CurrentDeadline); each attempt carries what
// is left, capped by the retry policy's per-try timeout. Above retry and
// hedging: their attempts all fit in the one deadline.
#ifndef MESHLIB_CLIENT_LAYERS_DEADLINE_LAYER_H_
#define MESHLIB_CLIENT_LAYERS_DEADLINE_LAYER_H_

#include <string>

#include "absl/time/time.h"
#include "meshlib/client/layer.h"

namespace meshlib::client {

class DeadlineLayer final : public Layer {
 public:
  DeadlineLayer(absl::Duration default_timeout, absl::Duration per_try_timeout)
      : default_timeout_(default_timeout), per_try_timeout_(per_try_timeout) {}
  absl::string_view role() const override { return "deadline"; }
  std::string Describe() const override;

  absl::Time DeadlineOf(const CallOptions& options, absl::Time now) const;
  // The options of an attempt sent with `left` of the call's `deadline`.
  void ShapeAttempt(const CallOptions& call, absl::Time deadline, absl::Duration left,
                    CallOptions* attempt) const;
  // How long an attempt may take when `left` remains of its call.
  absl::Duration AttemptTimeout(absl::Duration left) const {
    return per_try_timeout_ > absl::ZeroDuration() && per_try_timeout_ < left ? per_try_timeout_
                                                                              : left;
  }
  absl::Duration per_try_timeout() const { return per_try_timeout_; }

 private:
  const absl::Duration default_timeout_;
  const absl::Duration per_try_timeout_;  // zero: none
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYERS_DEADLINE_LAYER_H_
