#include "meshlib/resilience/latency_tracker.h"

#include <algorithm>
#include <cmath>

namespace meshlib::resilience {

namespace {
int64_t Nanos(absl::Time t) { return absl::ToUnixNanos(t); }
}  // namespace

int LatencyTracker::BucketOf(uint64_t micros) {
  if (micros < 16) return static_cast<int>(micros);
  int msb = 63 - __builtin_clzll(micros);
  int shift = msb - 4;
  int index = (msb - 3) * 16 + static_cast<int>((micros >> shift) & 15);
  return std::min(index, kBuckets - 1);
}

uint64_t LatencyTracker::BucketUpperMicros(int bucket) {
  if (bucket < 16) return static_cast<uint64_t>(bucket) + 1;
  int msb = bucket / 16 + 3;
  uint64_t sub = static_cast<uint64_t>(bucket % 16);
  int shift = msb - 4;
  // Values in the bucket: [(16 + sub) << shift, (17 + sub) << shift).
  return (17 + sub) << shift;
}

LatencyTracker::LatencyTracker(LatencyTrackerOptions options, runtime::Clock* clock)
    : options_(options), clock_(clock) {
  window_end_ns_.store(Nanos(clock_->Now() + options_.window), std::memory_order_relaxed);
}

void LatencyTracker::MaybeRotate(absl::Time now) {
  int64_t now_ns = Nanos(now);
  if (now_ns < window_end_ns_.load(std::memory_order_acquire)) return;
  std::unique_lock<std::mutex> lock(rotate_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another thread rotates
  int64_t end = window_end_ns_.load(std::memory_order_acquire);
  if (now_ns < end) return;
  const int64_t window_ns = absl::ToInt64Nanoseconds(options_.window);
  int cur = current_.load(std::memory_order_relaxed);
  int next = 1 - cur;
  Window& w = windows_[next];
  // The window before last is cleared and becomes current. If more than one
  // window went by with no sample, the previous window is stale too.
  for (auto& c : w.counts) c.store(0, std::memory_order_relaxed);
  w.total.store(0, std::memory_order_relaxed);
  if (now_ns >= end + window_ns) {
    Window& old = windows_[cur];
    for (auto& c : old.counts) c.store(0, std::memory_order_relaxed);
    old.total.store(0, std::memory_order_relaxed);
  }
  current_.store(next, std::memory_order_release);
  int64_t periods = (now_ns - end) / window_ns + 1;
  window_end_ns_.store(end + periods * window_ns, std::memory_order_release);
  cached_at_ns_.store(INT64_MIN, std::memory_order_release);
}

void LatencyTracker::Record(absl::Duration latency) { Record(latency, clock_->Now()); }

void LatencyTracker::Record(absl::Duration latency, absl::Time now) {
  MaybeRotate(now);
  int64_t us = absl::ToInt64Microseconds(latency);
  if (us < 0) us = 0;
  Window& w = windows_[current_.load(std::memory_order_acquire)];
  w.counts[BucketOf(static_cast<uint64_t>(us))].fetch_add(1, std::memory_order_relaxed);
  w.total.fetch_add(1, std::memory_order_relaxed);
}

int64_t LatencyTracker::SampleCount() {
  MaybeRotate(clock_->Now());
  return windows_[0].total.load(std::memory_order_relaxed) +
         windows_[1].total.load(std::memory_order_relaxed);
}

std::optional<absl::Duration> LatencyTracker::Compute(double p) {
  int64_t total = windows_[0].total.load(std::memory_order_relaxed) +
                  windows_[1].total.load(std::memory_order_relaxed);
  if (total < options_.min_samples || total <= 0) return std::nullopt;
  // The rank of the sample at percentile p, 1-based.
  int64_t rank = static_cast<int64_t>(std::ceil(p / 100.0 * static_cast<double>(total)));
  rank = std::clamp<int64_t>(rank, 1, total);
  int64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += windows_[0].counts[b].load(std::memory_order_relaxed) +
            windows_[1].counts[b].load(std::memory_order_relaxed);
    if (seen >= rank) return absl::Microseconds(BucketUpperMicros(b));
  }
  return absl::Microseconds(BucketUpperMicros(kBuckets - 1));
}

std::optional<absl::Duration> LatencyTracker::Percentile(double p) {
  absl::Time now = clock_->Now();
  MaybeRotate(now);
  int64_t now_ns = Nanos(now);
  int64_t at = cached_at_ns_.load(std::memory_order_acquire);
  if (at != INT64_MIN && now_ns - at < absl::ToInt64Nanoseconds(options_.refresh) &&
      cached_p_.load(std::memory_order_relaxed) == p) {
    int64_t v = cached_ns_.load(std::memory_order_relaxed);
    if (v < 0) return std::nullopt;
    return absl::Nanoseconds(v);
  }
  std::optional<absl::Duration> v = Compute(p);
  cached_ns_.store(v ? absl::ToInt64Nanoseconds(*v) : -1, std::memory_order_relaxed);
  cached_p_.store(p, std::memory_order_relaxed);
  cached_at_ns_.store(now_ns, std::memory_order_release);
  return v;
}

}  // namespace meshlib::resilience
