#include "meshlib/core/backoff.h"

#include <algorithm>

namespace meshlib::core {

absl::Status BackoffOptions::Validate() const {
  if (initial <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("backoff.initial: must be > 0");
  }
  if (max < initial) return absl::InvalidArgumentError("backoff.max: must be >= initial");
  if (!(multiplier >= 1.0)) return absl::InvalidArgumentError("backoff.multiplier: must be >= 1");
  if (!(jitter >= 0.0 && jitter <= 1.0)) {
    return absl::InvalidArgumentError("backoff.jitter: must be between 0 and 1");
  }
  return absl::OkStatus();
}

absl::Duration Backoff::Next() {
  absl::Duration base = current_;
  current_ = std::min(options_.max, current_ * options_.multiplier);
  if (options_.jitter <= 0) return base;
  std::uniform_real_distribution<double> u(1.0 - options_.jitter, 1.0 + options_.jitter);
  return base * u(rng_);
}

}  // namespace meshlib::core
