#include "meshlib/server/concurrency_limiter.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace meshlib::server {
namespace {

// A slot holds the low 24 bits of its window's generation and a latency of
// up to 2^40 ns (about 18 minutes; longer ones are clamped).
constexpr int kLatencyBits = 40;
constexpr int64_t kMaxLatencyNanos = (int64_t{1} << kLatencyBits) - 1;
constexpr uint64_t kTagMask = (uint64_t{1} << 24) - 1;

uint64_t PackSample(uint32_t generation, int64_t latency_ns) {
  return ((generation & kTagMask) << kLatencyBits) | static_cast<uint64_t>(latency_ns);
}

absl::Status FieldError(absl::string_view field, absl::string_view rule, absl::string_view got) {
  return absl::InvalidArgumentError(
      absl::StrCat("adaptive_concurrency.", field, ": must be ", rule, ", got ", got));
}

}  // namespace

absl::Status AdaptiveConcurrencyOptions::Validate() const {
  constexpr int kLimitCap = 1000000;
  if (min_limit < 1) return FieldError("min_limit", ">= 1", absl::StrCat(min_limit));
  if (max_limit > kLimitCap) {
    return FieldError("max_limit", absl::StrCat("<= ", kLimitCap), absl::StrCat(max_limit));
  }
  if (max_limit < min_limit) {
    return FieldError("max_limit", absl::StrCat(">= min_limit (", min_limit, ")"),
                      absl::StrCat(max_limit));
  }
  if (initial_limit < min_limit || initial_limit > max_limit) {
    return FieldError("initial_limit",
                      absl::StrCat("between min_limit (", min_limit, ") and max_limit (",
                                   max_limit, ")"),
                      absl::StrCat(initial_limit));
  }
  // Negated comparisons also reject NaN.
  if (!(tolerance >= 1.0 && tolerance <= 10.0)) {
    return FieldError("tolerance", "between 1 and 10", absl::StrCat(tolerance));
  }
  if (!(smoothing > 0.0 && smoothing <= 1.0)) {
    return FieldError("smoothing", "in (0, 1]", absl::StrCat(smoothing));
  }
  if (window < absl::Milliseconds(1) || window > absl::Minutes(1)) {
    return FieldError("window", "between 1ms and 1m", absl::FormatDuration(window));
  }
  if (min_window_samples < 1) {
    return FieldError("min_window_samples", ">= 1", absl::StrCat(min_window_samples));
  }
  if (!(percentile > 0.0 && percentile <= 1.0)) {
    return FieldError("percentile", "in (0, 1]", absl::StrCat(percentile));
  }
  if (probe_interval < absl::Seconds(1)) {
    return FieldError("probe_interval", ">= 1s (or infinite)", absl::FormatDuration(probe_interval));
  }
  if (!(probe_jitter >= 0.0 && probe_jitter < 1.0)) {
    return FieldError("probe_jitter", "in [0, 1)", absl::StrCat(probe_jitter));
  }
  if (probe_samples < 1 || probe_samples > 10000) {
    return FieldError("probe_samples", "between 1 and 10000", absl::StrCat(probe_samples));
  }
  if (probe_timeout < absl::Milliseconds(1) || probe_timeout > absl::Minutes(1)) {
    return FieldError("probe_timeout", "between 1ms and 1m", absl::FormatDuration(probe_timeout));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ConcurrencyLimiter>> ConcurrencyLimiter::Create(
    const AdaptiveConcurrencyOptions& options, runtime::Clock& clock) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  return std::unique_ptr<ConcurrencyLimiter>(new ConcurrencyLimiter(options, clock));
}

ConcurrencyLimiter::ConcurrencyLimiter(const AdaptiveConcurrencyOptions& options,
                                       runtime::Clock& clock)
    : options_(options),
      clock_(clock),
      limit_(options.min_limit),
      rng_(options.seed != 0 ? options.seed : std::random_device{}()) {
  std::lock_guard<std::mutex> lock(mu_);
  limit_value_ = options_.initial_limit;
  // No no-load latency is known yet, and the first calls may already be an
  // overload: measure it before anything else.
  StartProbe(clock_.Now());
}

bool ConcurrencyLimiter::TryAcquire() {
  int64_t cur = in_flight_.load(std::memory_order_relaxed);
  for (;;) {
    if (cur >= limit_.load(std::memory_order_relaxed)) {
      // Refusals also drive updates, so that a probe times out and windows
      // end even while every admitted call is stuck.
      const absl::Time now = clock_.Now();
      if (absl::ToUnixNanos(now) >= next_update_ns_.load(std::memory_order_acquire)) {
        MaybeUpdate(now);
      }
      return false;
    }
    if (in_flight_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
      break;
    }
  }
  const int64_t now_in_flight = cur + 1;
  int64_t max = window_max_in_flight_.load(std::memory_order_relaxed);
  while (now_in_flight > max &&
         !window_max_in_flight_.compare_exchange_weak(max, now_in_flight,
                                                      std::memory_order_relaxed)) {
  }
  return true;
}

void ConcurrencyLimiter::Release(absl::Duration latency) {
  in_flight_.fetch_sub(1, std::memory_order_acq_rel);
  const absl::Time now = clock_.Now();
  const int64_t now_ns = absl::ToUnixNanos(now);
  const int64_t latency_ns =
      std::clamp<int64_t>(absl::ToInt64Nanoseconds(latency), 1, kMaxLatencyNanos);
  const bool stale = probing_.load(std::memory_order_acquire) &&
                     now_ns - latency_ns < probe_start_ns_.load(std::memory_order_acquire);
  if (!stale) Record(latency_ns);
  if (now_ns >= next_update_ns_.load(std::memory_order_acquire)) MaybeUpdate(now);
}

void ConcurrencyLimiter::ReleaseWithoutSample() {
  in_flight_.fetch_sub(1, std::memory_order_acq_rel);
}

void ConcurrencyLimiter::Record(int64_t latency_ns) {
  const uint64_t w = window_.fetch_add(1, std::memory_order_acq_rel);
  const uint32_t index = static_cast<uint32_t>(w);
  if (index < kSlots) {
    slots_[index].store(PackSample(static_cast<uint32_t>(w >> 32), latency_ns),
                        std::memory_order_release);
  }
}

std::vector<int64_t> ConcurrencyLimiter::DrainWindow() {
  uint64_t w = window_.load(std::memory_order_acquire);
  while (!window_.compare_exchange_weak(w, ((w >> 32) + 1) << 32, std::memory_order_acq_rel)) {
  }
  const uint64_t tag = (w >> 32) & kTagMask;
  const uint32_t n = std::min<uint32_t>(static_cast<uint32_t>(w), kSlots);
  std::vector<int64_t> samples;
  samples.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    // A writer that took slot i may not have stored yet: its sample is lost
    // (and, tagged with this generation, ignored when it lands later).
    const uint64_t v = slots_[i].exchange(0, std::memory_order_acq_rel);
    if (v != 0 && (v >> kLatencyBits) == tag) {
      samples.push_back(static_cast<int64_t>(v & static_cast<uint64_t>(kMaxLatencyNanos)));
    }
  }
  return samples;
}

void ConcurrencyLimiter::MaybeUpdate(absl::Time now) {
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another caller is updating
  if (absl::ToUnixNanos(now) < next_update_ns_.load(std::memory_order_acquire)) return;
  if (probing_.load(std::memory_order_relaxed)) {
    UpdateProbe(now);
  } else {
    UpdateLimit(now);
  }
}

void ConcurrencyLimiter::UpdateLimit(absl::Time now) {
  if (now >= next_probe_) {
    StartProbe(now);
    return;
  }
  const uint32_t offered = static_cast<uint32_t>(window_.load(std::memory_order_acquire));
  // Too few samples: keep the window open (the next Release tries again).
  if (offered < static_cast<uint32_t>(options_.min_window_samples)) return;
  std::vector<int64_t> samples = DrainWindow();
  const int64_t max_in_flight =
      window_max_in_flight_.exchange(in_flight_.load(std::memory_order_relaxed),
                                     std::memory_order_relaxed);
  next_update_ns_.store(absl::ToUnixNanos(now + options_.window), std::memory_order_release);
  if (samples.empty()) return;
  recent_ = Percentile(samples);

  const double limit = limit_value_;
  const double gradient = std::clamp(
      options_.tolerance * absl::FDivDuration(no_load_, std::max(recent_, absl::Nanoseconds(1))),
      0.5, 1.0);
  double target = limit * gradient + std::sqrt(limit);
  // Growing on a window that never came near the limit would let the limit
  // run far ahead of any concurrency it was tested at.
  if (target > limit && static_cast<double>(max_in_flight) < limit / 2) target = limit;
  SetLimit((1 - options_.smoothing) * limit + options_.smoothing * target);
  ++limit_updates_;
}

void ConcurrencyLimiter::UpdateProbe(absl::Time now) {
  // The first probe's time runs from its first samples: the server may have
  // been created long before it started serving.
  if (!have_no_load_ && probe_samples_.empty()) probe_started_ = now;
  for (int64_t s : DrainWindow()) {
    if (probe_samples_.size() < static_cast<size_t>(options_.probe_samples)) {
      probe_samples_.push_back(s);
    }
  }
  // A probe sheds most calls: check for its end often, not once a window.
  next_update_ns_.store(absl::ToUnixNanos(now + options_.window / 10),
                        std::memory_order_release);
  const bool timed_out = now - probe_started_ >= options_.probe_timeout;
  if (probe_samples_.size() >= static_cast<size_t>(options_.probe_samples) ||
      (timed_out && !probe_samples_.empty())) {
    no_load_ = Percentile(probe_samples_);
    have_no_load_ = true;
    ++probes_completed_;
    EndProbe(now);
  } else if (timed_out && have_no_load_) {
    EndProbe(now);  // keep the previous no-load latency
  }
}

void ConcurrencyLimiter::StartProbe(absl::Time now) {
  saved_limit_ = limit_value_;
  probe_samples_.clear();
  probe_started_ = now;
  probe_start_ns_.store(absl::ToUnixNanos(now), std::memory_order_release);
  probing_.store(true, std::memory_order_release);
  limit_.store(options_.min_limit, std::memory_order_relaxed);
  DrainWindow();  // samples so far measured calls admitted before the probe
  next_update_ns_.store(absl::ToUnixNanos(now + options_.window / 10),
                        std::memory_order_release);
}

void ConcurrencyLimiter::EndProbe(absl::Time now) {
  probing_.store(false, std::memory_order_release);
  probe_samples_.clear();
  SetLimit(saved_limit_);
  window_max_in_flight_.store(in_flight_.load(std::memory_order_relaxed),
                              std::memory_order_relaxed);
  DrainWindow();
  next_probe_ = now + JitteredProbeInterval();
}

void ConcurrencyLimiter::SetLimit(double limit) {
  limit_value_ = std::clamp(limit, static_cast<double>(options_.min_limit),
                            static_cast<double>(options_.max_limit));
  limit_.store(static_cast<int64_t>(limit_value_), std::memory_order_relaxed);
}

absl::Duration ConcurrencyLimiter::Percentile(std::vector<int64_t>& samples) const {
  const size_t n = samples.size();
  size_t k = static_cast<size_t>(std::ceil(options_.percentile * static_cast<double>(n)));
  k = std::clamp<size_t>(k, 1, n) - 1;
  std::nth_element(samples.begin(), samples.begin() + k, samples.end());
  return absl::Nanoseconds(samples[k]);
}

absl::Duration ConcurrencyLimiter::JitteredProbeInterval() {
  if (options_.probe_interval == absl::InfiniteDuration()) return absl::InfiniteDuration();
  std::uniform_real_distribution<double> u(-options_.probe_jitter, options_.probe_jitter);
  return options_.probe_interval * (1.0 + u(rng_));
}

ConcurrencyLimiter::Snapshot ConcurrencyLimiter::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  Snapshot s;
  s.limit = limit();
  s.in_flight = in_flight();
  s.no_load_latency = have_no_load_ ? no_load_ : absl::ZeroDuration();
  s.recent_latency = recent_;
  s.probing = probing_.load(std::memory_order_relaxed);
  s.probes_completed = probes_completed_;
  s.limit_updates = limit_updates_;
  return s;
}

}  // namespace meshlib::server
