#include "meshlib/discovery/dns/dns_refresh.h"

#include <algorithm>

namespace meshlib::discovery_internal {

absl::Duration RefreshDelay(absl::Duration ttl, const RefreshPolicy& policy, double u) {
  // Not std::clamp: that is undefined when min > max; here min wins.
  absl::Duration base = std::max(policy.min_refresh, std::min(ttl, policy.max_refresh));
  // !(u >= 0) also catches NaN.
  if (!(u >= 0.0)) u = 0.0;
  if (u > 1.0) u = 1.0;
  double jitter = std::clamp(policy.jitter, 0.0, 1.0);
  return base * (1.0 - jitter * u);
}

core::BackoffOptions FailureBackoff(const RefreshPolicy& policy) {
  core::BackoffOptions o;
  o.initial = std::min(policy.min_refresh / 4, absl::Milliseconds(250));
  if (o.initial <= absl::ZeroDuration()) o.initial = absl::Milliseconds(1);
  o.max = std::max(policy.max_refresh, o.initial);
  o.multiplier = 1.6;
  o.jitter = 0.2;
  return o;
}

}  // namespace meshlib::discovery_internal
