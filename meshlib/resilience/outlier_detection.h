// OutlierDetector: passive health checking from the results of real calls,
// with Envoy's outlier detection and Finagle's failure-accrual probation:
//
//   "outlier_detection": {"consecutive_failures": 5, "interval": "10s",
//                         "base_ejection_time": "30s", "max_ejection_time": "300s",
//                         "max_ejection_percent": 10,
//                         "success_rate": {"stdev_factor": 1.9, "minimum_hosts": 5,
//                                          "request_volume": 100},
//                         "failure_percentage": {"threshold": 85, "minimum_hosts": 5,
//                                                "request_volume": 50}}
//
// One detector per service; one Host handle per endpoint:
//
//   resilience::OutlierDetector od(options, &clock);
//   std::shared_ptr<OutlierDetector::Host> h = od.AddHost("10.0.0.7:7001");  // control
//   ...
//   // Request path, any thread, lock-free:
//   if (h->state() == OutlierState::kProbation && !h->TryTakeProbe()) PickAnother();
//   ...
//   if (h->Record(/*failure=*/!status.ok())) PostToControl([&] { OnEvaluate(); });
//   ...
//   // Control thread, at od.NextEvaluation() and whenever Record said so:
//   if (od.Evaluate()) RebuildPicker();  // some host changed state
//   ScheduleAt(od.NextEvaluation());
//
// States. kHealthy: takes traffic. kEjected: takes none until its ejection
// ends. kProbation: its ejection ended; it takes a single probe request at a
// time (TryTakeProbe) before full return. The probe's success returns it to
// kHealthy; its failure ejects it again at once, for longer.
//
// Detection (all three feed the same ejection):
//  - consecutive failures: `consecutive_failures` failed attempts in a row
//    (Record returns true on reaching it, so the caller can run Evaluate()
//    at once rather than at the next interval, as Envoy ejects inline);
//  - success rate, every `interval`: among healthy hosts with at least
//    `request_volume` attempts in the interval, if there are at least
//    `minimum_hosts` of them, eject those whose success rate is below
//    mean - stdev_factor * stdev (population standard deviation);
//  - failure percentage, every `interval`: among hosts with at least its
//    `request_volume` attempts, if at least `minimum_hosts`, eject those whose
//    failure percentage is >= `threshold`.
//
// Ejection time is base_ejection_time * the host's ejection multiplier (the
// number of times it was ejected in a row), at most max(base_ejection_time,
// max_ejection_time). The multiplier goes down by one at each interval sweep
// that finds the host healthy for at least a whole interval (Envoy's decay).
//
// max_ejection_percent caps the hosts out of full rotation (ejected or in
// probation): a new ejection happens only if afterwards at most
// max_ejection_percent of the hosts are out, or if no host is out at all (so
// a percentage that rounds down to zero hosts still lets one go: gRPC's rule,
// and Envoy's before `always_eject_one_host`; a 3-host service with the
// default 10% can still eject its one bad host). 0 means never eject:
// detections are only counted (`ejections_over_limit`). A failed probe's
// re-ejection is never refused: the host is already counted as out.
//
// What counts as a failure is the caller's decision (meshlib: the attempt's
// status says the endpoint failed: UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL,
// ...; not a cancellation by the caller, nor an application error).
//
// Threading: Host's methods are lock-free (atomics) and may be called from
// any thread; the detector's methods are thread-safe (a mutex) and meant for
// the control thread. A Host handle stays valid after RemoveHost or after the
// detector is destroyed; it is then simply no longer evaluated.
#ifndef MESHLIB_RESILIENCE_OUTLIER_DETECTION_H_
#define MESHLIB_RESILIENCE_OUTLIER_DETECTION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/core/sync.h"
#include "meshlib/runtime/executor.h"
#include "nlohmann/json.hpp"

namespace meshlib::resilience {

// Statistical detection by success rate relative to the other hosts
// (Envoy's success_rate_*). On unless disabled.
struct SuccessRateOptions {
  // `"enabled": false` turns it off. Default true.
  bool enabled = true;
  // Eject below mean - stdev_factor * stdev. Default 1.9 (Envoy's 1900/1000);
  // 0-100.
  double stdev_factor = 1.9;
  // Hosts with enough volume needed before anything is judged. Default 5;
  // 1-1000000.
  int64_t minimum_hosts = 5;
  // Attempts a host needs in the interval to be judged. Default 100;
  // 1-1000000000.
  int64_t request_volume = 100;
};

// Detection by an absolute failure percentage (Envoy's failure_percentage_*).
// Off unless the `failure_percentage` object is present.
struct FailurePercentageOptions {
  // True when the object is present, unless it says `"enabled": false`.
  bool enabled = false;
  // Eject at or above this failure percentage. Default 85; 0-100.
  int64_t threshold = 85;
  // As SuccessRateOptions. Defaults 5 and 50.
  int64_t minimum_hosts = 5;
  int64_t request_volume = 50;
};

struct OutlierDetectionOptions {
  // Failed attempts in a row that eject a host. Default 5; 0 disables this
  // detection; 0-1000000.
  int64_t consecutive_failures = 5;
  // Time between sweeps (statistical detection, multiplier decay). Default
  // 10s; 10ms-1h.
  absl::Duration interval = absl::Seconds(10);
  // First ejection's length; the n-th in a row lasts n times this. Default
  // 30s; 1ms-24h.
  absl::Duration base_ejection_time = absl::Seconds(30);
  // Longest ejection (when below base_ejection_time, base_ejection_time is
  // the cap). Default 300s; 1ms-24h.
  absl::Duration max_ejection_time = absl::Seconds(300);
  // Most hosts out of rotation at once, in percent of the hosts (at least
  // one when > 0, see above). Default 10; 0-100.
  int64_t max_ejection_percent = 10;
  SuccessRateOptions success_rate;
  FailurePercentageOptions failure_percentage;

  // The options' ranges, as ParseOutlierDetection checks them; errors name
  // the field (without a path prefix).
  absl::Status Validate() const;
};

// Parses an `outlier_detection` object at `path` (e.g.
// "services.echo.outlier_detection"); unknown keys are rejected and errors
// name the field: `<path>.max_ejection_percent: must be an integer between
// 0 and 100`.
absl::StatusOr<OutlierDetectionOptions> ParseOutlierDetection(const nlohmann::json& j,
                                                              absl::string_view path);

enum class OutlierState : uint8_t { kHealthy = 0, kEjected = 1, kProbation = 2 };
// "healthy", "ejected", "probation".
absl::string_view OutlierStateName(OutlierState state);

enum class EjectionReason : uint8_t {
  kNone = 0,
  kConsecutiveFailures,
  kSuccessRate,
  kFailurePercentage,
  kFailedProbe,
};
// "none", "consecutive_failures", "success_rate", "failure_percentage",
// "failed_probe".
absl::string_view EjectionReasonName(EjectionReason reason);

struct OutlierHostStats {
  std::string address;
  OutlierState state = OutlierState::kHealthy;
  // Ejections over the host's life, and in a row (the current multiplier).
  uint64_t times_ejected = 0;
  int64_t ejection_multiplier = 0;
  EjectionReason last_ejection_reason = EjectionReason::kNone;
  // When the current ejection ends; InfinitePast when not ejected.
  absl::Time ejected_until = absl::InfinitePast();
  // Attempts and success rate (0-100) in the last completed interval;
  // no rate when there were no attempts.
  uint64_t last_interval_attempts = 0;
  std::optional<double> last_interval_success_rate;
};

struct OutlierDetectorStats {
  uint64_t ejections_consecutive_failures = 0;
  uint64_t ejections_success_rate = 0;
  uint64_t ejections_failure_percentage = 0;
  uint64_t ejections_failed_probe = 0;
  // Outliers detected but left in rotation by max_ejection_percent.
  uint64_t ejections_over_limit = 0;
  uint64_t probes_ok = 0;
  uint64_t probes_failed = 0;
  // Probes taken but never recorded within a whole interval; released.
  uint64_t probes_lost = 0;
  // Hosts currently ejected / in probation.
  int64_t ejected = 0;
  int64_t in_probation = 0;
  std::vector<OutlierHostStats> hosts;  // by address
};

class OutlierDetector {
 public:
  // One endpoint as the request path sees it. Cheap to keep in the
  // per-endpoint struct; all methods lock-free.
  class Host {
   public:
    const std::string& address() const { return address_; }
    OutlierState state() const {
      return static_cast<OutlierState>(state_.load(std::memory_order_acquire));
    }

    // Records one completed attempt. Returns true when the control thread
    // should run Evaluate() soon: this failure made `consecutive_failures`
    // in a row (true once per run), or this result is the outcome of the
    // probation probe. Results of a host that is ejected are ignored, as are
    // those of a host in probation other than its probe's.
    bool Record(bool failure);

    // In probation: true for exactly one caller until that probe's result is
    // recorded (the next Record on this host is taken as the probe's), the
    // probe is released, or, never recorded, it is presumed lost at the
    // second sweep after it was taken (a whole interval at least). Always
    // false in other states.
    bool TryTakeProbe();
    // Gives back a probe taken but not sent (the call was cancelled or went
    // elsewhere), so that another request may probe. Only its taker calls
    // this.
    void ReleaseProbe();

    // Made by OutlierDetector::AddHost.
    Host(std::string address, int64_t consecutive_failures);

   private:
    friend class OutlierDetector;

    // probe_ word: low 2 bits the phase, the rest a generation that makes a
    // late result of a released or lost probe miss its CAS.
    static constexpr uint32_t kProbeIdle = 0, kProbeInFlight = 1, kProbeSucceeded = 2,
                              kProbeFailed = 3;
    static constexpr uint32_t kPhaseMask = 3;
    // counts_: attempts in the low 32 bits, failures in the high 32, so one
    // atomic exchange reads and resets both consistently.
    static constexpr uint64_t kFailureUnit = uint64_t{1} << 32;

    const std::string address_;
    const uint32_t consecutive_threshold_;  // 0: off
    std::atomic<uint8_t> state_{0};         // OutlierState; written by the detector
    std::atomic<uint32_t> consecutive_{0};
    std::atomic<uint64_t> counts_{0};
    std::atomic<uint32_t> probe_{kProbeIdle};
  };

  // `clock` must outlive the detector. `options` must be valid (as
  // ParseOutlierDetection returns them).
  OutlierDetector(const OutlierDetectionOptions& options, runtime::Clock* clock);

  // Starts tracking `address` (healthy). Returns its handle; the existing
  // handle when `address` is already tracked.
  std::shared_ptr<Host> AddHost(absl::string_view address);
  // The same, taking over what `previous` (another detector, e.g. of the
  // configuration this one replaces; may be null) knows of `address`: its
  // state (ejected, in probation), ejection count and multiplier, when the
  // ejection ends, and its failures in a row.
  std::shared_ptr<Host> AddHost(absl::string_view address, const OutlierDetector* previous);
  // Stops tracking `address`; false if it was not tracked. Removal does not
  // count as a state change for Evaluate().
  bool RemoveHost(absl::string_view address);

  // Applies probe outcomes, expires ejections into probation, ejects hosts
  // over `consecutive_failures`, and, when an interval has passed, runs the
  // sweep (statistical detection, multiplier decay, lost-probe release,
  // counter reset). Returns true when any host's state changed, i.e. the
  // picker must be rebuilt.
  bool Evaluate();
  // When Evaluate() must run next: the next sweep or the earliest end of an
  // ejection, whichever comes first.
  absl::Time NextEvaluation() const;

  OutlierDetectorStats Stats() const;
  const OutlierDetectionOptions& options() const { return options_; }

 private:
  struct Entry {
    std::shared_ptr<Host> host;
    int64_t multiplier = 0;
    uint64_t times_ejected = 0;
    EjectionReason last_reason = EjectionReason::kNone;
    absl::Time ejected_until = absl::InfinitePast();
    absl::Time healthy_since;
    // The probe word seen in probation at the last sweep (lost-probe check).
    uint32_t probe_seen = 0;
    uint64_t last_attempts = 0;
    std::optional<double> last_success_rate;
  };

  bool CanEjectLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EjectLocked(Entry& e, EjectionReason reason, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ejects `e` if the cap allows; counts the refusal otherwise.
  bool TryEjectLocked(Entry& e, EjectionReason reason, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetStateLocked(Entry& e, OutlierState s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SweepLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const OutlierDetectionOptions options_;
  runtime::Clock* const clock_;
  mutable core::Mutex mu_;
  absl::btree_map<std::string, Entry, std::less<>> hosts_ ABSL_GUARDED_BY(mu_);
  int64_t out_ ABSL_GUARDED_BY(mu_) = 0;  // hosts ejected or in probation
  absl::Time next_sweep_ ABSL_GUARDED_BY(mu_);
  OutlierDetectorStats totals_ ABSL_GUARDED_BY(mu_);  // hosts left empty
};

}  // namespace meshlib::resilience

#endif  // MESHLIB_RESILIENCE_OUTLIER_DETECTION_H_
