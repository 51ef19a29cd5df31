// MetricsLayer: the service's golden metrics, recorded as calls and
// attempts end (see docs/metrics.md):
//
//   meshlib_client_requests_total{service, method, code}            counter
//   meshlib_client_request_duration_seconds{service, method}        histogram
//   meshlib_client_attempts_total{service, endpoint, code}          counter
//
// A request is a call as its caller saw it; an attempt is one try on one
// endpoint (retries and hedges included). Each method's and endpoint's
// metrics are found once and kept: a call adds to a sharded counter and a
// sharded histogram (metrics/metrics.h), with no lock held by anyone else.
#ifndef MESHLIB_CLIENT_LAYERS_METRICS_LAYER_H_
#define MESHLIB_CLIENT_LAYERS_METRICS_LAYER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "meshlib/client/layer.h"
#include "meshlib/core/sync.h"
#include "meshlib/metrics/metrics.h"

namespace meshlib::client {

class MetricsLayer final : public Layer {
 public:
  // The number of status codes (OK .. UNAUTHENTICATED).
  static constexpr int kCodes = 17;
  // Distinct methods (and endpoints) recorded by name; past it they are
  // recorded as "other", so that a caller making up method names cannot
  // grow the registry without bound.
  static constexpr size_t kMaxNames = 1000;

  MetricsLayer(metrics::Registry& registry, std::string service);

  absl::string_view role() const override { return "metrics"; }
  std::string Describe() const override;
  uint32_t hooks() const override { return kAttemptEnd | kCallEnd; }
  void OnAttemptEnd(const AttemptInfo& attempt, const CallResult& result) override;
  void OnCallEnd(const CallEndInfo& call, const CallResult& result) override;

 private:
  struct MethodMetrics {
    std::array<metrics::Counter*, kCodes> requests{};
    metrics::Histogram* latency = nullptr;
  };
  struct EndpointMetrics {
    std::array<metrics::Counter*, kCodes> attempts{};
  };
  MethodMetrics& ForMethod(absl::string_view method);
  // `stats`: the endpoint's load signals, whose address keys a per-thread cache.
  EndpointMetrics& ForEndpoint(const void* stats, absl::string_view endpoint);

  const std::string service_;
  metrics::CounterFamily& requests_;
  metrics::HistogramFamily& latency_;
  metrics::CounterFamily& attempts_;
  const uint64_t id_;  // for per-thread lookup caches
  core::SpinLock mu_;
  // Node-based: the entries' addresses are kept by callers.
  absl::flat_hash_map<std::string, std::unique_ptr<MethodMetrics>> methods_;      // guarded by mu_
  absl::flat_hash_map<std::string, std::unique_ptr<EndpointMetrics>> endpoints_;  // guarded by mu_
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYERS_METRICS_LAYER_H_
