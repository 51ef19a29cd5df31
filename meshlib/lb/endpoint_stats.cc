#include "meshlib/lb/endpoint_stats.h"

#include <algorithm>
#include <cmath>

#include "meshlib/core/fast_time.h"

namespace meshlib::lb {

EndpointStats::EndpointStats(absl::Duration decay, absl::Duration initial)
    : decay_ns_(std::max<double>(1.0, absl::ToDoubleNanoseconds(decay))),
      ewma_ns_(absl::ToDoubleNanoseconds(initial)) {}

EndpointStats::EndpointStats(const EndpointStatsOptions& options)
    : EndpointStats(options.decay, options.initial) {
  set_failure_penalty(options.failure_penalty);
}

void EndpointStats::OnCallEnd(absl::Duration latency, bool success, absl::Time now) {
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  calls_.fetch_add(1, std::memory_order_relaxed);
  double sample = std::max(0.0, core::DoubleNanosOf(latency));
  if (success) {
    consecutive_failures_.store(0, std::memory_order_relaxed);
  } else {
    failures_.fetch_add(1, std::memory_order_relaxed);
    consecutive_failures_.fetch_add(1, std::memory_order_relaxed);
    sample = std::max(sample, static_cast<double>(
                                  failure_penalty_ns_.load(std::memory_order_relaxed)));
  }
  int64_t now_ns = core::UnixNanos(now);
  int64_t last = stamp_ns_.exchange(now_ns, std::memory_order_relaxed);
  double prev = ewma_ns_.load(std::memory_order_relaxed);
  double next;
  if (sample > prev || last == 0) {
    next = sample;  // the peak, or the first sample
  } else {
    double elapsed = static_cast<double>(std::max<int64_t>(0, now_ns - last));
    double x = elapsed / decay_ns_;
    // Samples of a busy endpoint are microseconds apart against a decay of
    // seconds: there exp(-x) is 1 - x + x^2/2 to within x^3/6 (below 2e-10
    // for x < 1e-3), and the polynomial saves a libm call on every answer.
    double w = x < 1e-3 ? 1 - x + 0.5 * x * x : std::exp(-x);
    next = prev * w + sample * (1 - w);
  }
  ewma_ns_.store(next, std::memory_order_relaxed);
}

void EndpointStats::OnCallAbandoned(absl::Duration elapsed, absl::Time now) {
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  double sample = std::max(0.0, absl::ToDoubleNanoseconds(elapsed));
  // The call would have taken at least `elapsed`: that can raise the
  // estimate (a peak) but says nothing that could lower it.
  if (sample > PeakEwmaNanos(now)) {
    stamp_ns_.store(absl::ToUnixNanos(now), std::memory_order_relaxed);
    ewma_ns_.store(sample, std::memory_order_relaxed);
  }
}

double EndpointStats::PeakEwmaNanos(absl::Time now) const {
  double v = ewma_ns_.load(std::memory_order_relaxed);
  int64_t last = stamp_ns_.load(std::memory_order_relaxed);
  if (last == 0) return v;
  double elapsed = static_cast<double>(std::max<int64_t>(0, absl::ToUnixNanos(now) - last));
  // With no new sample the average decays toward zero, so an endpoint that
  // was slow once is tried again eventually (Finagle's behaviour).
  return v * std::exp(-elapsed / decay_ns_);
}

}  // namespace meshlib::lb
