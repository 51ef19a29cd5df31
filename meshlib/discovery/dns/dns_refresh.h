// When the "dns" discovery kind re-resolves: after the records' TTL, clamped
// and jittered, or after a growing backoff when resolution failed.
//
//   RefreshPolicy p;  // min 5s, max 300s, jitter 0.1
//   absl::Duration next = RefreshDelay(absl::Seconds(ttl), p, uniform01(rng));
//   core::Backoff retry(FailureBackoff(p), seed);
//
// Internal to the "dns" kind (not part of meshlib's API).
// Threading: stateless functions, thread-safe.
#ifndef MESHLIB_DISCOVERY_DNS_DNS_REFRESH_H_
#define MESHLIB_DISCOVERY_DNS_DNS_REFRESH_H_

#include "absl/time/time.h"
#include "meshlib/core/backoff.h"

namespace meshlib::discovery_internal {

struct RefreshPolicy {
  // Bounds on the TTL-driven interval. Config "min_refresh" / "max_refresh";
  // defaults 5s and 300s; min_refresh <= max_refresh.
  absl::Duration min_refresh = absl::Seconds(5);
  absl::Duration max_refresh = absl::Seconds(300);
  // The interval is multiplied by a uniform factor in [1 - jitter, 1], so
  // that clients that resolved together do not all re-resolve together.
  // Config "jitter"; default 0.1; range [0, 0.5].
  double jitter = 0.1;
};

// `ttl` clamped to [min_refresh, max_refresh], times (1 - jitter * u), where
// `u` is a uniform draw in [0, 1] (clamped into it when outside).
absl::Duration RefreshDelay(absl::Duration ttl, const RefreshPolicy& policy, double u);

// Retry delays after a failed resolution: first min(min_refresh / 4, 250ms),
// then growing by 1.6x per failure, capped at max_refresh (before jitter;
// the resolver also caps after it).
core::BackoffOptions FailureBackoff(const RefreshPolicy& policy);

}  // namespace meshlib::discovery_internal

#endif  // MESHLIB_DISCOVERY_DNS_DNS_REFRESH_H_
