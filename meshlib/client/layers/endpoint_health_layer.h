// EndpointHealthLayer: which endpoints may be picked. Passive outlier
// detection (resilience::OutlierDetector, the `outlier_detection` section)
// ejects endpoints whose answers fail, for a growing time, then lets one
// probe call through before taking them back; active health checks
// (resilience::HealthChecker, `health_check`) probe each endpoint on the
// control loop. Only failures that say something about the endpoint count
// (IsEndpointFailure). Subsets of one service share one verdict per
// endpoint (ServiceChannelOptions::health_source). Below the balancer,
// whose picker it filters; above the pool.
#ifndef MESHLIB_CLIENT_LAYERS_ENDPOINT_HEALTH_LAYER_H_
#define MESHLIB_CLIENT_LAYERS_ENDPOINT_HEALTH_LAYER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "meshlib/client/layer.h"
#include "meshlib/resilience/health_check.h"
#include "meshlib/resilience/outlier_detection.h"

namespace meshlib::client {

// Whether a failed attempt counts against the endpoint that answered it (in
// its load-balancing signals and health): UNAVAILABLE, RESOURCE_EXHAUSTED,
// INTERNAL, UNKNOWN, DATA_LOSS and DEADLINE_EXCEEDED, as opposed to an
// answer about the request (NOT_FOUND, INVALID_ARGUMENT, ...) or a
// cancellation by the caller.
bool IsEndpointFailure(const CallResult& r);

class EndpointHealthLayer final : public Layer {
 public:
  // `outliers`: null without outlier detection (or when `shared_from` judges
  // for us); `on_outlier_signal` runs (on the request path) when an
  // endpoint's record suggests an evaluation is due. `shared_from`: the
  // channel whose verdicts this one takes, for Describe; empty if none.
  EndpointHealthLayer(std::unique_ptr<resilience::OutlierDetector> outliers,
                      std::optional<resilience::HealthCheckOptions> health,
                      std::string shared_from, std::function<void()> on_outlier_signal)
      : outliers_(std::move(outliers)),
        health_(std::move(health)),
        shared_from_(std::move(shared_from)),
        on_outlier_signal_(std::move(on_outlier_signal)) {}
  absl::string_view role() const override { return "endpoint health"; }
  std::string Describe() const override;
  uint32_t hooks() const override { return kAttemptEnd; }
  void OnAttemptEnd(const AttemptInfo& attempt, const CallResult& result) override;

  // Control loop (the detector's own methods say which are thread-safe).
  resilience::OutlierDetector* outliers() const { return outliers_.get(); }
  const std::optional<resilience::HealthCheckOptions>& health_checks() const { return health_; }
  // What the last picker saw (control loop writes, any thread reads).
  void SetCounts(size_t ejected, size_t unhealthy) {
    ejected_.store(ejected, std::memory_order_relaxed);
    unhealthy_.store(unhealthy, std::memory_order_relaxed);
  }
  size_t ejected() const { return ejected_.load(std::memory_order_relaxed); }
  size_t unhealthy() const { return unhealthy_.load(std::memory_order_relaxed); }

 private:
  const std::unique_ptr<resilience::OutlierDetector> outliers_;
  const std::optional<resilience::HealthCheckOptions> health_;
  const std::string shared_from_;
  const std::function<void()> on_outlier_signal_;
  std::atomic<size_t> ejected_{0};
  std::atomic<size_t> unhealthy_{0};
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYERS_ENDPOINT_HEALTH_LAYER_H_
