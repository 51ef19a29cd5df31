// Backoff: jittered exponential delays for reconnects (and, later, retries).
//
//   Backoff b(BackoffOptions{}, /*seed=*/42);
//   absl::Duration d1 = b.Next();  // ~initial, +-jitter
//   absl::Duration d2 = b.Next();  // ~initial * multiplier
//   b.Reset();                      // after a success
//
// Randomness is seeded by the caller so that tests are deterministic.
// Threading: not thread-safe; each owner keeps its own.
#ifndef MESHLIB_CORE_BACKOFF_H_
#define MESHLIB_CORE_BACKOFF_H_

#include <cstdint>
#include <random>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace meshlib::core {

struct BackoffOptions {
  // First delay. Default 100ms.
  absl::Duration initial = absl::Milliseconds(100);
  // Growth per attempt. Default 1.6 (as gRPC's connection backoff).
  double multiplier = 1.6;
  // Each delay is scaled by a uniform factor in [1-jitter, 1+jitter], so that
  // clients that lost a server together do not reconnect together.
  // Default 0.2; range [0, 1].
  double jitter = 0.2;
  // Cap before jitter. Default 5s.
  absl::Duration max = absl::Seconds(5);

  absl::Status Validate() const;
};

class Backoff {
 public:
  Backoff(const BackoffOptions& options, uint64_t seed)
      : options_(options), rng_(seed), current_(options.initial) {}

  absl::Duration Next();
  void Reset() { current_ = options_.initial; }

 private:
  BackoffOptions options_;
  std::mt19937_64 rng_;
  absl::Duration current_;
};

}  // namespace meshlib::core

#endif  // MESHLIB_CORE_BACKOFF_H_
