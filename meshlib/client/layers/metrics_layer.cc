#include "meshlib/client/layers/metrics_layer.h"

#include <array>
#include <atomic>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace meshlib::client {

namespace {

int CodeIndex(const absl::Status& s) {
  const int c = static_cast<int>(s.code());
  return c >= 0 && c < MetricsLayer::kCodes ? c : static_cast<int>(absl::StatusCode::kUnknown);
}

// Each layer's identity for the per-thread caches below (an address could
// be reused by a later layer).
std::atomic<uint64_t> next_layer_id{1};

// A one-entry cache per thread of the last name looked up: most threads
// call the same method of the same service again and again.
struct LastLookup {
  uint64_t layer = 0;
  std::string name;
  void* entry = nullptr;
};
thread_local LastLookup last_method;

// Endpoints alternate (that is what balancing does), so a thread keeps a
// few: direct-mapped by the endpoint's stats object, confirmed by name (an
// object's address may be reused for another endpoint).
struct EndpointSlot {
  uint64_t layer = 0;
  const void* stats = nullptr;
  std::string name;
  void* entry = nullptr;
};
constexpr size_t kEndpointSlots = 16;
thread_local std::array<EndpointSlot, kEndpointSlots> last_endpoints;

}  // namespace

MetricsLayer::MetricsLayer(metrics::Registry& registry, std::string service)
    : service_(std::move(service)),
      requests_(registry.AddCounter(
          "meshlib_client_requests_total",
          "Calls as the application saw them (retries and hedges inside), by outcome.",
          {"service", "method", "code"})),
      latency_(registry.AddHistogram("meshlib_client_request_duration_seconds",
                                     "How long calls took, every attempt and wait included.",
                                     {"service", "method"})),
      attempts_(registry.AddCounter(
          "meshlib_client_attempts_total",
          "Tries of calls on one endpoint (retries and hedges included), by outcome.",
          {"service", "endpoint", "code"})),
      id_(next_layer_id.fetch_add(1, std::memory_order_relaxed)) {}

std::string MetricsLayer::Describe() const {
  return absl::StrCat("requests, latency and attempts of service \"", service_,
                      "\" (meshlib_client_*)");
}

MetricsLayer::MethodMetrics& MetricsLayer::ForMethod(absl::string_view method) {
  LastLookup& last = last_method;
  if (last.layer == id_ && last.name == method) return *static_cast<MethodMetrics*>(last.entry);
  MethodMetrics* m;
  {
    std::lock_guard<core::SpinLock> lock(mu_);
    auto it = methods_.find(method);
    if (it == methods_.end() && methods_.size() >= kMaxNames) it = methods_.find("other");
    if (it != methods_.end()) {
      m = it->second.get();
    } else {
      const std::string name = methods_.size() + 1 >= kMaxNames ? "other" : std::string(method);
      auto made = std::make_unique<MethodMetrics>();
      for (int c = 0; c < kCodes; ++c) {
        made->requests[c] = &requests_.With(
            {service_, name, absl::StatusCodeToString(static_cast<absl::StatusCode>(c))});
      }
      made->latency = &latency_.With({service_, name});
      m = made.get();
      methods_.emplace(name, std::move(made));
    }
  }
  last.layer = id_;
  last.name.assign(method.data(), method.size());
  last.entry = m;
  return *m;
}

MetricsLayer::EndpointMetrics& MetricsLayer::ForEndpoint(const void* stats,
                                                         absl::string_view endpoint) {
  EndpointSlot& last =
      last_endpoints[(reinterpret_cast<uintptr_t>(stats) >> 6) % kEndpointSlots];
  if (last.layer == id_ && last.stats == stats && last.name == endpoint) {
    return *static_cast<EndpointMetrics*>(last.entry);
  }
  EndpointMetrics* e;
  {
    std::lock_guard<core::SpinLock> lock(mu_);
    auto it = endpoints_.find(endpoint);
    if (it == endpoints_.end() && endpoints_.size() >= kMaxNames) it = endpoints_.find("other");
    if (it != endpoints_.end()) {
      e = it->second.get();
    } else {
      const std::string name =
          endpoints_.size() + 1 >= kMaxNames ? "other" : std::string(endpoint);
      auto made = std::make_unique<EndpointMetrics>();
      for (int c = 0; c < kCodes; ++c) {
        made->attempts[c] = &attempts_.With(
            {service_, name, absl::StatusCodeToString(static_cast<absl::StatusCode>(c))});
      }
      e = made.get();
      endpoints_.emplace(name, std::move(made));
    }
  }
  last.layer = id_;
  last.stats = stats;
  last.name.assign(endpoint.data(), endpoint.size());
  last.entry = e;
  return *e;
}

void MetricsLayer::OnAttemptEnd(const AttemptInfo& attempt, const CallResult& result) {
  ForEndpoint(attempt.stats, attempt.endpoint).attempts[CodeIndex(result.status)]->Add();
}

void MetricsLayer::OnCallEnd(const CallEndInfo& call, const CallResult& result) {
  MethodMetrics& m = ForMethod(call.method);
  m.requests[CodeIndex(result.status)]->Add();
  m.latency->Observe(call.latency);
}

}  // namespace meshlib::client
