// ConcurrencyLimiter: an adaptive cap on how many calls a server runs at once.
//
// A server given more work than it can do gets no more done: calls queue,
// all of them slow down, and callers time out on work the server still
// finishes. The limiter learns from the latency of the server's own calls how
// many may be in flight before they start to queue, and the server refuses
// the rest at once (RESOURCE_EXHAUSTED, marked refused, so a client can send
// them to another instance) rather than queueing them.
//
//   auto limiter = ConcurrencyLimiter::Create(options).value();
//   if (!limiter->TryAcquire()) return Refuse(limiter->limit());
//   ... serve the call ...
//   limiter->Release(absl::Now() - arrival);   // a completed call: a sample
//   limiter->ReleaseWithoutSample();            // or: cancelled, no signal
//
// The algorithm is a gradient limiter, after Netflix concurrency-limits'
// Gradient2 and Envoy's adaptive_concurrency filter:
//  - The no-load latency is measured by a probe: for a moment the limit is
//    pinned to `min_limit`, and the chosen percentile of `probe_samples` calls
//    admitted during the probe is taken. A probe runs at start and then every
//    `probe_interval`, with jitter. Envoy re-measures its minimum RTT the same
//    way. It is not a slow average of recent latency (Gradient2's long RTT)
//    because such an average follows the latency of a sustained overload up
//    and lets the limit drift upward with it.
//    The price: while a probe runs (about probe_samples * latency / min_limit,
//    plus a tenth of a window) calls beyond min_limit are refused. They are
//    marked refused, so a mesh client sends them to another instance; a
//    client that resends them to this one at once sees many refusals.
//  - Every `window` with at least `min_window_samples` completed calls, the
//    recent latency is that percentile of the window's samples, and
//      gradient  = clamp(tolerance * no_load / recent, 0.5, 1.0)
//      target    = limit * gradient + sqrt(limit)    (headroom to grow)
//      limit     = (1 - smoothing) * limit + smoothing * target
//    clamped to [min_limit, max_limit]. While fewer than half the limit's
//    calls were in flight during the window, the limit does not grow: the
//    window gave no evidence that more concurrency is safe.
//  - A queue that builds raises the recent latency, so the gradient drops
//    below 1 and the limit shrinks toward the concurrency the server can
//    serve without queueing (times `tolerance`). When latency returns to
//    normal the gradient is 1 and the headroom term grows the limit back.
//
// Threading: all methods are thread-safe. TryAcquire and Release are
// lock-free (a CAS on the in-flight count, a clock read and an atomic store
// of the sample). About once per window one caller takes a short mutex to
// update the limit; callers never wait on it (they skip the update if it is
// held).
#ifndef MESHLIB_SERVER_CONCURRENCY_LIMITER_H_
#define MESHLIB_SERVER_CONCURRENCY_LIMITER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "meshlib/runtime/executor.h"

namespace meshlib::server {

// ServerOptions::adaptive_concurrency. Defaults follow Gradient2's (initial
// limit, smoothing, tolerance) and Envoy's (probe interval, jitter, minimum
// concurrency during a probe); none of them can be overridden per call.
struct AdaptiveConcurrencyOptions {
  // Refuse calls over the limit. Default false (no limit beyond
  // ServerOptions::max_concurrent_streams).
  bool enabled = false;
  // The limit after the first probe, before any adjustment. Default 20;
  // range min_limit..max_limit.
  int initial_limit = 20;
  // The limit never goes below this; it is also the concurrency allowed while
  // a probe measures the no-load latency. Default 3; at least 1.
  int min_limit = 3;
  // The limit never goes above this. Default 1000; at most 1,000,000.
  int max_limit = 1000;
  // How much slower than the no-load latency the recent latency may be
  // before the limit shrinks: 1.5 tolerates calls 50% slower than with no
  // load (some queueing is the price of full use of the server). Default
  // 1.5; range 1..10.
  double tolerance = 1.5;
  // Weight of each new limit against the previous one. Default 0.2; range
  // (0, 1].
  double smoothing = 0.2;
  // The limit is updated at most once per window. Default 100ms; range
  // 1ms..1min.
  absl::Duration window = absl::Milliseconds(100);
  // A window ends only once this many calls completed in it (at low traffic
  // windows last longer rather than act on a handful of samples). Default
  // 10; at least 1.
  int min_window_samples = 10;
  // Which percentile of a window's latencies is its recent latency (and of a
  // probe's, its no-load latency). The median ignores a rare slow call.
  // Default 0.5; range (0, 1].
  double percentile = 0.5;
  // How often the no-load latency is measured again, so that it follows a
  // server that became faster or slower for good. InfiniteDuration: only the
  // first probe, at start. Default 60s; at least 1s.
  absl::Duration probe_interval = absl::Seconds(60);
  // Each interval is stretched or shrunk by a random factor within
  // +/- this fraction, so that a fleet's instances do not probe in step.
  // Default 0.1; range [0, 1).
  double probe_jitter = 0.1;
  // Calls a probe measures. Default 25; range 1..10000.
  int probe_samples = 25;
  // A probe that has run this long ends with the samples it has (or, with
  // none, keeps the previous no-load latency), so a slow or idle server is
  // not held at min_limit. The first probe has no previous value to keep: its
  // time runs from its first samples. Default 1s; range 1ms..1min.
  absl::Duration probe_timeout = absl::Seconds(1);
  // Seed of the probe jitter; 0 = random.
  uint64_t seed = 0;

  // Errors (INVALID_ARGUMENT) name the field:
  // "adaptive_concurrency.min_limit: must be >= 1, got 0".
  absl::Status Validate() const;
};

class ConcurrencyLimiter {
 public:
  // `clock` must outlive the limiter. Errors: those of options.Validate()
  // (options.enabled is not read).
  static absl::StatusOr<std::unique_ptr<ConcurrencyLimiter>> Create(
      const AdaptiveConcurrencyOptions& options, runtime::Clock& clock = runtime::RealClock());
  ConcurrencyLimiter(const ConcurrencyLimiter&) = delete;
  ConcurrencyLimiter& operator=(const ConcurrencyLimiter&) = delete;

  // Admits a call if fewer than limit() are in flight. Every admitted call
  // must be released once, by Release or ReleaseWithoutSample.
  bool TryAcquire();
  // Ends an admitted call that completed (OK or with an application error)
  // after `latency`; the latency is a sample.
  void Release(absl::Duration latency);
  // Ends an admitted call whose latency says nothing about the server's load
  // (cancelled by the caller, cut short by its deadline or a closed
  // connection).
  void ReleaseWithoutSample();

  // Calls allowed in flight right now.
  int64_t limit() const { return limit_.load(std::memory_order_relaxed); }
  int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  struct Snapshot {
    int64_t limit = 0;
    int64_t in_flight = 0;
    // Zero before the first probe completed.
    absl::Duration no_load_latency;
    // Zero before the first window ended.
    absl::Duration recent_latency;
    bool probing = false;
    int64_t probes_completed = 0;
    int64_t limit_updates = 0;
  };
  Snapshot snapshot() const;

 private:
  ConcurrencyLimiter(const AdaptiveConcurrencyOptions& options, runtime::Clock& clock);

  // Samples are kept per window in fixed slots; calls past the last slot of
  // a window still count toward min_window_samples.
  static constexpr uint32_t kSlots = 256;

  void Record(int64_t latency_ns);
  // Ends the window: returns its samples and starts the next one. mu_ held.
  std::vector<int64_t> DrainWindow();
  void MaybeUpdate(absl::Time now);
  void UpdateLimit(absl::Time now);  // mu_ held
  void UpdateProbe(absl::Time now);  // mu_ held
  void StartProbe(absl::Time now);   // mu_ held
  void EndProbe(absl::Time now);     // mu_ held
  void SetLimit(double limit);       // mu_ held
  absl::Duration Percentile(std::vector<int64_t>& samples) const;
  absl::Duration JitteredProbeInterval();  // mu_ held

  const AdaptiveConcurrencyOptions options_;
  runtime::Clock& clock_;

  // Hot path.
  std::atomic<int64_t> limit_;
  std::atomic<int64_t> in_flight_{0};
  // Most calls in flight at once during this window.
  std::atomic<int64_t> window_max_in_flight_{0};
  // Unix nanoseconds after which a caller tries to update the limit.
  std::atomic<int64_t> next_update_ns_{0};
  // While probing, samples of calls that started before the probe (they may
  // have queued) are dropped.
  std::atomic<bool> probing_{false};
  std::atomic<int64_t> probe_start_ns_{0};
  // The window's generation (high 32 bits) and the samples offered in it
  // (low 32 bits): one fetch_add gives a writer both its slot and the
  // generation to tag the slot with, so a store that lands after its window
  // ended is recognised as stale and ignored.
  std::atomic<uint64_t> window_{0};
  std::array<std::atomic<uint64_t>, kSlots> slots_{};

  // The update, at most once per window. std::mutex for try_lock.
  mutable std::mutex mu_;
  double limit_value_ = 0;  // guarded by mu_: the unrounded limit
  absl::Duration no_load_ = absl::ZeroDuration();  // guarded by mu_
  bool have_no_load_ = false;                      // guarded by mu_
  absl::Duration recent_ = absl::ZeroDuration();   // guarded by mu_
  std::vector<int64_t> probe_samples_;             // guarded by mu_
  double saved_limit_ = 0;                         // guarded by mu_: restored after a probe
  absl::Time probe_started_;                       // guarded by mu_
  absl::Time next_probe_ = absl::InfiniteFuture(); // guarded by mu_
  std::mt19937_64 rng_;                            // guarded by mu_
  int64_t probes_completed_ = 0;                   // guarded by mu_
  int64_t limit_updates_ = 0;                      // guarded by mu_
};

}  // namespace meshlib::server

#endif  // MESHLIB_SERVER_CONCURRENCY_LIMITER_H_
