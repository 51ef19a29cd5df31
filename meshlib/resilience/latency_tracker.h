// LatencyTracker: a percentile of recent call latencies, for hedging.
//
// Samples go into a log-linear histogram (16 buckets per power of two of
// microseconds, so a percentile is known to within ~6%) with two windows:
// the current one and the one before it. A percentile is read over both,
// so it always covers between one and two windows of recent calls, and
// forgets a latency shift after two windows. Recording is a few atomic adds
// and no lock; reading a percentile scans the histogram, so Percentile()
// caches its answer for `refresh` and recomputes at most that often.
//
//   resilience::LatencyTracker t({.window = absl::Seconds(5)}, &clock);
//   t.Record(absl::Milliseconds(3));
//   std::optional<absl::Duration> p95 = t.Percentile(95);  // nullopt: too few samples
//
// Threading: all methods are thread-safe.
#ifndef MESHLIB_RESILIENCE_LATENCY_TRACKER_H_
#define MESHLIB_RESILIENCE_LATENCY_TRACKER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>

#include "absl/time/time.h"
#include "meshlib/runtime/executor.h"

namespace meshlib::resilience {

struct LatencyTrackerOptions {
  // Length of one histogram window; percentiles cover one to two of them.
  absl::Duration window = absl::Seconds(5);
  // Fewer samples than this over both windows: Percentile() has no answer.
  int64_t min_samples = 100;
  // How long a computed percentile is reused.
  absl::Duration refresh = absl::Milliseconds(100);
};

class LatencyTracker {
 public:
  LatencyTracker(LatencyTrackerOptions options, runtime::Clock* clock);
  LatencyTracker(const LatencyTracker&) = delete;
  LatencyTracker& operator=(const LatencyTracker&) = delete;

  void Record(absl::Duration latency);
  void Record(absl::Duration latency, absl::Time now);  // saves a clock read
  // The `p`-th percentile (0 < p < 100) of recent samples, or nullopt when
  // there are fewer than min_samples. The value is the upper edge of its
  // histogram bucket. Cached: asking for a different `p` than the cached
  // one recomputes.
  std::optional<absl::Duration> Percentile(double p);
  // Samples in the two windows now.
  int64_t SampleCount();

  // Histogram layout, exposed for tests.
  static constexpr int kBuckets = 640;
  static int BucketOf(uint64_t micros);
  static uint64_t BucketUpperMicros(int bucket);

 private:
  struct Window {
    std::array<std::atomic<uint32_t>, kBuckets> counts{};
    std::atomic<int64_t> total{0};
  };
  void MaybeRotate(absl::Time now);
  std::optional<absl::Duration> Compute(double p);

  const LatencyTrackerOptions options_;
  runtime::Clock* const clock_;
  Window windows_[2];
  std::atomic<int> current_{0};
  std::atomic<int64_t> window_end_ns_;
  std::mutex rotate_mu_;
  // Cached answer: value in ns (-1: none), the percentile it is for, and
  // when it was computed.
  std::atomic<int64_t> cached_ns_{-1};
  std::atomic<double> cached_p_{-1};
  std::atomic<int64_t> cached_at_ns_{INT64_MIN};
};

}  // namespace meshlib::resilience

#endif  // MESHLIB_RESILIENCE_LATENCY_TRACKER_H_
