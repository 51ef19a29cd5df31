#include "meshlib/resilience/outlier_detection.h"

#include <optional>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"

namespace meshlib::resilience {

using json = nlohmann::json;

namespace {

// Ranges shared by ParseOutlierDetection and Validate.
constexpr int64_t kMaxConsecutive = 1000000;
constexpr int64_t kMaxHosts = 1000000;
constexpr int64_t kMaxVolume = 1000000000;
constexpr double kMaxStdevFactor = 100;
const absl::Duration kMinInterval = absl::Milliseconds(10);
const absl::Duration kMaxInterval = absl::Hours(1);
const absl::Duration kMinEjection = absl::Milliseconds(1);
const absl::Duration kMaxEjection = absl::Hours(24);


}  // namespace

absl::string_view OutlierStateName(OutlierState state) {
  switch (state) {
    case OutlierState::kHealthy:
      return "healthy";
    case OutlierState::kEjected:
      return "ejected";
    case OutlierState::kProbation:
      return "probation";
  }
  return "unknown";
}

absl::string_view EjectionReasonName(EjectionReason reason) {
  switch (reason) {
    case EjectionReason::kNone:
      return "none";
    case EjectionReason::kConsecutiveFailures:
      return "consecutive_failures";
    case EjectionReason::kSuccessRate:
      return "success_rate";
    case EjectionReason::kFailurePercentage:
      return "failure_percentage";
    case EjectionReason::kFailedProbe:
      return "failed_probe";
  }
  return "unknown";
}

absl::Status OutlierDetectionOptions::Validate() const {
  if (consecutive_failures < 0 || consecutive_failures > kMaxConsecutive) {
    return core::FieldError("consecutive_failures", "must be an integer between 0 and 1000000");
  }
  if (interval < kMinInterval || interval > kMaxInterval) {
    return core::FieldError("interval", "must be between 10ms and 1h");
  }
  if (base_ejection_time < kMinEjection || base_ejection_time > kMaxEjection) {
    return core::FieldError("base_ejection_time", "must be between 1ms and 24h");
  }
  if (max_ejection_time < kMinEjection || max_ejection_time > kMaxEjection) {
    return core::FieldError("max_ejection_time", "must be between 1ms and 24h");
  }
  if (max_ejection_percent < 0 || max_ejection_percent > 100) {
    return core::FieldError("max_ejection_percent", "must be an integer between 0 and 100");
  }
  if (!std::isfinite(success_rate.stdev_factor) || success_rate.stdev_factor < 0 ||
      success_rate.stdev_factor > kMaxStdevFactor) {
    return core::FieldError("success_rate.stdev_factor", "must be a number between 0 and 100");
  }
  if (success_rate.minimum_hosts < 1 || success_rate.minimum_hosts > kMaxHosts) {
    return core::FieldError("success_rate.minimum_hosts", "must be an integer between 1 and 1000000");
  }
  if (success_rate.request_volume < 1 || success_rate.request_volume > kMaxVolume) {
    return core::FieldError("success_rate.request_volume",
                      "must be an integer between 1 and 1000000000");
  }
  if (failure_percentage.threshold < 0 || failure_percentage.threshold > 100) {
    return core::FieldError("failure_percentage.threshold", "must be an integer between 0 and 100");
  }
  if (failure_percentage.minimum_hosts < 1 || failure_percentage.minimum_hosts > kMaxHosts) {
    return core::FieldError("failure_percentage.minimum_hosts",
                      "must be an integer between 1 and 1000000");
  }
  if (failure_percentage.request_volume < 1 || failure_percentage.request_volume > kMaxVolume) {
    return core::FieldError("failure_percentage.request_volume",
                      "must be an integer between 1 and 1000000000");
  }
  return absl::OkStatus();
}

absl::StatusOr<OutlierDetectionOptions> ParseOutlierDetection(const json& j,
                                                              absl::string_view path) {
  if (auto st = core::CheckObject(
          j, path,
          {"consecutive_failures", "interval", "base_ejection_time", "max_ejection_time",
           "max_ejection_percent", "success_rate", "failure_percentage"});
      !st.ok()) {
    return st;
  }
  OutlierDetectionOptions o;
  if (auto st = core::OptionalInt(j, path, "consecutive_failures", 0, kMaxConsecutive,
                                    &o.consecutive_failures);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(j, path, "interval", kMinInterval, kMaxInterval,
                                         &o.interval);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(j, path, "base_ejection_time", kMinEjection,
                                         kMaxEjection, &o.base_ejection_time);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(j, path, "max_ejection_time", kMinEjection,
                                         kMaxEjection, &o.max_ejection_time);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalInt(j, path, "max_ejection_percent", 0, 100,
                                    &o.max_ejection_percent);
      !st.ok()) {
    return st;
  }
  if (auto sr = j.find("success_rate"); sr != j.end()) {
    std::string p = core::JoinPath(path, "success_rate");
    if (auto st = core::CheckObject(
            *sr, p, {"enabled", "stdev_factor", "minimum_hosts", "request_volume"});
        !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalBool(*sr, p, "enabled", &o.success_rate.enabled); !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalDouble(*sr, p, "stdev_factor", 0, kMaxStdevFactor,
                                         &o.success_rate.stdev_factor);
        !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalInt(*sr, p, "minimum_hosts", 1, kMaxHosts,
                                      &o.success_rate.minimum_hosts);
        !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalInt(*sr, p, "request_volume", 1, kMaxVolume,
                                      &o.success_rate.request_volume);
        !st.ok()) {
      return st;
    }
  }
  if (auto fp = j.find("failure_percentage"); fp != j.end()) {
    std::string p = core::JoinPath(path, "failure_percentage");
    if (auto st = core::CheckObject(
            *fp, p, {"enabled", "threshold", "minimum_hosts", "request_volume"});
        !st.ok()) {
      return st;
    }
    o.failure_percentage.enabled = true;  // present means on
    if (auto st = core::OptionalBool(*fp, p, "enabled", &o.failure_percentage.enabled); !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalInt(*fp, p, "threshold", 0, 100,
                                      &o.failure_percentage.threshold);
        !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalInt(*fp, p, "minimum_hosts", 1, kMaxHosts,
                                      &o.failure_percentage.minimum_hosts);
        !st.ok()) {
      return st;
    }
    if (auto st = core::OptionalInt(*fp, p, "request_volume", 1, kMaxVolume,
                                      &o.failure_percentage.request_volume);
        !st.ok()) {
      return st;
    }
  }
  return o;
}

// ---------------------------------------------------------------------------
// Host: the request path.

OutlierDetector::Host::Host(std::string address, int64_t consecutive_failures)
    : address_(std::move(address)),
      consecutive_threshold_(static_cast<uint32_t>(consecutive_failures)) {}

bool OutlierDetector::Host::Record(bool failure) {
  auto s = static_cast<OutlierState>(state_.load(std::memory_order_acquire));
  if (s == OutlierState::kHealthy) {
    counts_.fetch_add(failure ? kFailureUnit + 1 : 1, std::memory_order_relaxed);
    if (!failure) {
      // Load first: most successes find the run already at zero, and a
      // load keeps the cache line shared between threads.
      if (consecutive_.load(std::memory_order_relaxed) != 0) {
        consecutive_.store(0, std::memory_order_relaxed);
      }
      return false;
    }
    uint32_t run = consecutive_.fetch_add(1, std::memory_order_relaxed) + 1;
    return consecutive_threshold_ != 0 && run == consecutive_threshold_;
  }
  if (s == OutlierState::kProbation) {
    uint32_t v = probe_.load(std::memory_order_acquire);
    if ((v & kPhaseMask) != kProbeInFlight) return false;
    uint32_t outcome = (v & ~kPhaseMask) | (failure ? kProbeFailed : kProbeSucceeded);
    return probe_.compare_exchange_strong(v, outcome, std::memory_order_acq_rel);
  }
  return false;  // ejected: traffic that was already under way when it left
}

bool OutlierDetector::Host::TryTakeProbe() {
  if (state() != OutlierState::kProbation) return false;
  uint32_t v = probe_.load(std::memory_order_acquire);
  if ((v & kPhaseMask) != kProbeIdle) return false;
  return probe_.compare_exchange_strong(v, v | kProbeInFlight, std::memory_order_acq_rel);
}

void OutlierDetector::Host::ReleaseProbe() {
  uint32_t v = probe_.load(std::memory_order_acquire);
  if ((v & kPhaseMask) != kProbeInFlight) return;
  // A new generation, so that a result recorded late for this probe is not
  // taken for the next one's.
  probe_.compare_exchange_strong(v, (v & ~kPhaseMask) + (kPhaseMask + 1),
                                 std::memory_order_acq_rel);
}

// ---------------------------------------------------------------------------
// OutlierDetector: the control thread.

OutlierDetector::OutlierDetector(const OutlierDetectionOptions& options, runtime::Clock* clock)
    : options_(options), clock_(clock) {
  next_sweep_ = clock_->Now() + options_.interval;
}

std::shared_ptr<OutlierDetector::Host> OutlierDetector::AddHost(absl::string_view address) {
  return AddHost(address, nullptr);
}

std::shared_ptr<OutlierDetector::Host> OutlierDetector::AddHost(absl::string_view address,
                                                                const OutlierDetector* previous) {
  absl::Time now = clock_->Now();
  std::optional<Entry> carried;
  OutlierState carried_state = OutlierState::kHealthy;
  uint32_t carried_consecutive = 0;
  if (previous != nullptr && previous != this) {
    core::MutexLock lock(&previous->mu_);
    if (auto it = previous->hosts_.find(address); it != previous->hosts_.end()) {
      carried = it->second;
      carried_state = it->second.host->state();
      carried_consecutive = it->second.host->consecutive_.load(std::memory_order_relaxed);
    }
  }
  core::MutexLock lock(&mu_);
  auto it = hosts_.find(address);
  if (it != hosts_.end()) return it->second.host;
  Entry e;
  e.host = std::make_shared<Host>(std::string(address), options_.consecutive_failures);
  e.healthy_since = now;
  if (carried.has_value()) {
    e.multiplier = carried->multiplier;
    e.times_ejected = carried->times_ejected;
    e.last_reason = carried->last_reason;
    e.ejected_until = carried->ejected_until;
    e.healthy_since = carried->healthy_since;
    e.last_attempts = carried->last_attempts;
    e.last_success_rate = carried->last_success_rate;
    e.host->consecutive_.store(carried_consecutive, std::memory_order_relaxed);
    // A probe the old detector was waiting for is not ours: probation
    // starts again with a fresh probe.
    SetStateLocked(e, carried_state);
  }
  auto handle = e.host;
  hosts_.emplace(std::string(address), std::move(e));
  return handle;
}

bool OutlierDetector::RemoveHost(absl::string_view address) {
  core::MutexLock lock(&mu_);
  auto it = hosts_.find(address);
  if (it == hosts_.end()) return false;
  if (it->second.host->state() != OutlierState::kHealthy) --out_;
  hosts_.erase(it);
  return true;
}

void OutlierDetector::SetStateLocked(Entry& e, OutlierState s) {
  bool was_out = e.host->state() != OutlierState::kHealthy;
  bool is_out = s != OutlierState::kHealthy;
  out_ += static_cast<int64_t>(is_out) - static_cast<int64_t>(was_out);
  e.host->state_.store(static_cast<uint8_t>(s), std::memory_order_release);
}

bool OutlierDetector::CanEjectLocked() const {
  if (options_.max_ejection_percent == 0) return false;
  if (out_ == 0) return true;  // always at least one host
  return (out_ + 1) * 100 <= options_.max_ejection_percent * static_cast<int64_t>(hosts_.size());
}

void OutlierDetector::EjectLocked(Entry& e, EjectionReason reason, absl::Time now) {
  const absl::Duration cap = std::max(options_.base_ejection_time, options_.max_ejection_time);
  // Stop growing once at the cap, so that decay from there starts at once
  // (Envoy's rule).
  if (options_.base_ejection_time * e.multiplier < cap) ++e.multiplier;
  e.ejected_until = now + std::min(options_.base_ejection_time * e.multiplier, cap);
  ++e.times_ejected;
  e.last_reason = reason;
  SetStateLocked(e, OutlierState::kEjected);
  e.host->consecutive_.store(0, std::memory_order_relaxed);
  switch (reason) {
    case EjectionReason::kConsecutiveFailures:
      ++totals_.ejections_consecutive_failures;
      break;
    case EjectionReason::kSuccessRate:
      ++totals_.ejections_success_rate;
      break;
    case EjectionReason::kFailurePercentage:
      ++totals_.ejections_failure_percentage;
      break;
    case EjectionReason::kFailedProbe:
      ++totals_.ejections_failed_probe;
      break;
    case EjectionReason::kNone:
      break;
  }
}

bool OutlierDetector::TryEjectLocked(Entry& e, EjectionReason reason, absl::Time now) {
  if (!CanEjectLocked()) {
    ++totals_.ejections_over_limit;
    return false;
  }
  EjectLocked(e, reason, now);
  return true;
}

bool OutlierDetector::Evaluate() {
  absl::Time now = clock_->Now();
  core::MutexLock lock(&mu_);
  bool changed = false;
  for (auto& [address, e] : hosts_) {
    Host& h = *e.host;
    OutlierState s = h.state();
    if (s == OutlierState::kProbation) {
      uint32_t v = h.probe_.load(std::memory_order_acquire);
      uint32_t phase = v & Host::kPhaseMask;
      if (phase == Host::kProbeSucceeded) {
        ++totals_.probes_ok;
        SetStateLocked(e, OutlierState::kHealthy);
        e.healthy_since = now;
        h.consecutive_.store(0, std::memory_order_relaxed);
        h.probe_.store((v & ~Host::kPhaseMask) + (Host::kPhaseMask + 1),
                       std::memory_order_release);
        changed = true;
      } else if (phase == Host::kProbeFailed) {
        ++totals_.probes_failed;
        // Never refused by the cap: the host is already counted as out.
        EjectLocked(e, EjectionReason::kFailedProbe, now);
        changed = true;
      }
    } else if (s == OutlierState::kEjected && e.ejected_until <= now) {
      uint32_t v = h.probe_.load(std::memory_order_acquire);
      uint32_t idle = (v & ~Host::kPhaseMask) + (Host::kPhaseMask + 1);
      h.probe_.store(idle, std::memory_order_release);
      e.probe_seen = idle;
      e.ejected_until = absl::InfinitePast();
      SetStateLocked(e, OutlierState::kProbation);
      changed = true;
    }
  }
  if (options_.consecutive_failures > 0) {
    const auto threshold = static_cast<uint32_t>(options_.consecutive_failures);
    for (auto& [address, e] : hosts_) {
      if (e.host->state() == OutlierState::kHealthy &&
          e.host->consecutive_.load(std::memory_order_relaxed) >= threshold) {
        changed |= TryEjectLocked(e, EjectionReason::kConsecutiveFailures, now);
      }
    }
  }
  if (now >= next_sweep_) {
    changed |= SweepLocked(now);
    next_sweep_ = now + options_.interval;
  }
  return changed;
}

bool OutlierDetector::SweepLocked(absl::Time now) {
  struct Candidate {
    Entry* e;
    uint64_t attempts;
    double success_rate;  // percent
  };
  std::vector<Candidate> candidates;
  for (auto& [address, e] : hosts_) {
    Host& h = *e.host;
    uint64_t counts = h.counts_.exchange(0, std::memory_order_relaxed);
    uint64_t attempts = counts & (Host::kFailureUnit - 1);
    uint64_t failures = std::min(counts / Host::kFailureUnit, attempts);
    e.last_attempts = attempts;
    e.last_success_rate.reset();
    double rate = 0;
    if (attempts > 0) {
      rate = 100.0 * static_cast<double>(attempts - failures) / static_cast<double>(attempts);
      e.last_success_rate = rate;
    }
    OutlierState s = h.state();
    if (s == OutlierState::kHealthy) {
      if (e.multiplier > 0 && now - e.healthy_since >= options_.interval) --e.multiplier;
      if (attempts > 0) candidates.push_back(Candidate{&e, attempts, rate});
    } else if (s == OutlierState::kProbation) {
      // A probe outstanding since the last sweep (a whole interval, longer
      // than any sane call timeout) was lost: let another request probe.
      uint32_t v = h.probe_.load(std::memory_order_acquire);
      if ((v & Host::kPhaseMask) == Host::kProbeInFlight && v == e.probe_seen &&
          h.probe_.compare_exchange_strong(v, (v & ~Host::kPhaseMask) + (Host::kPhaseMask + 1),
                                           std::memory_order_acq_rel)) {
        ++totals_.probes_lost;
      }
      e.probe_seen = h.probe_.load(std::memory_order_acquire);
    }
  }

  bool changed = false;
  const SuccessRateOptions& sr = options_.success_rate;
  if (sr.enabled) {
    std::vector<Candidate> judged;
    for (const Candidate& c : candidates) {
      if (c.attempts >= static_cast<uint64_t>(sr.request_volume)) judged.push_back(c);
    }
    if (!judged.empty() && judged.size() >= static_cast<size_t>(sr.minimum_hosts)) {
      double sum = 0;
      for (const Candidate& c : judged) sum += c.success_rate;
      double mean = sum / static_cast<double>(judged.size());
      double var = 0;
      for (const Candidate& c : judged) var += (c.success_rate - mean) * (c.success_rate - mean);
      double stdev = std::sqrt(var / static_cast<double>(judged.size()));
      double threshold = mean - sr.stdev_factor * stdev;
      // Worst first, so that the cap keeps the best of the outliers.
      std::sort(judged.begin(), judged.end(), [](const Candidate& a, const Candidate& b) {
        return a.success_rate < b.success_rate;
      });
      for (const Candidate& c : judged) {
        if (c.success_rate >= threshold) break;
        changed |= TryEjectLocked(*c.e, EjectionReason::kSuccessRate, now);
      }
    }
  }
  const FailurePercentageOptions& fp = options_.failure_percentage;
  if (fp.enabled) {
    std::vector<Candidate> judged;
    for (const Candidate& c : candidates) {
      if (c.attempts >= static_cast<uint64_t>(fp.request_volume)) judged.push_back(c);
    }
    if (!judged.empty() && judged.size() >= static_cast<size_t>(fp.minimum_hosts)) {
      std::sort(judged.begin(), judged.end(), [](const Candidate& a, const Candidate& b) {
        return a.success_rate < b.success_rate;
      });
      for (const Candidate& c : judged) {
        if (100.0 - c.success_rate < static_cast<double>(fp.threshold)) break;
        // Already ejected for its success rate in this sweep.
        if (c.e->host->state() != OutlierState::kHealthy) continue;
        changed |= TryEjectLocked(*c.e, EjectionReason::kFailurePercentage, now);
      }
    }
  }
  return changed;
}

absl::Time OutlierDetector::NextEvaluation() const {
  core::MutexLock lock(&mu_);
  absl::Time next = next_sweep_;
  for (const auto& [address, e] : hosts_) {
    if (e.host->state() == OutlierState::kEjected) next = std::min(next, e.ejected_until);
  }
  return next;
}

OutlierDetectorStats OutlierDetector::Stats() const {
  core::MutexLock lock(&mu_);
  OutlierDetectorStats s = totals_;
  s.hosts.reserve(hosts_.size());
  for (const auto& [address, e] : hosts_) {
    OutlierHostStats h;
    h.address = address;
    h.state = e.host->state();
    h.times_ejected = e.times_ejected;
    h.ejection_multiplier = e.multiplier;
    h.last_ejection_reason = e.last_reason;
    h.ejected_until = h.state == OutlierState::kEjected ? e.ejected_until : absl::InfinitePast();
    h.last_interval_attempts = e.last_attempts;
    h.last_interval_success_rate = e.last_success_rate;
    if (h.state == OutlierState::kEjected) ++s.ejected;
    if (h.state == OutlierState::kProbation) ++s.in_probation;
    s.hosts.push_back(std::move(h));
  }
  return s;
}

}  // namespace meshlib::resilience
