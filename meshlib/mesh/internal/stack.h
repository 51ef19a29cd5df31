// One immutable configuration of a mesh Client's layers, how it is built
// from the configuration, and how a call is routed through it
// (meshlib::mesh internals).
#ifndef MESHLIB_MESH_INTERNAL_STACK_H_
#define MESHLIB_MESH_INTERNAL_STACK_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/client/service_channel.h"
#include "meshlib/config/config.h"
#include "meshlib/mesh/mesh.h"

namespace meshlib::mesh::internal {

struct MeshCore;

// Counters of one Client that outlive its stacks.
struct Counters {
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> unrouted{0};
  std::mutex mu;
  // By route name, and by "route/subset".
  std::map<std::string, std::shared_ptr<std::atomic<uint64_t>>> hits;
  // Channel counters of stacks already replaced.
  ClientStats retired;

  std::shared_ptr<std::atomic<uint64_t>> Hits(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu);
    auto& p = hits[key];
    if (p == nullptr) p = std::make_shared<std::atomic<uint64_t>>(0);
    return p;
  }
};

struct SubsetChannel {
  const config::SubsetConfig* config;
  std::shared_ptr<client::ServiceChannel> channel;
};

struct RouteRuntime {
  const config::RouteConfig* config;
  std::vector<int> subset_of_split;  // index into Stack::subsets, per split entry
  std::shared_ptr<std::atomic<uint64_t>> hits;
  std::vector<std::shared_ptr<std::atomic<uint64_t>>> split_hits;
};

// One immutable configuration of a Client's layers.
struct Stack {
  uint64_t generation = 0;
  std::shared_ptr<const config::MeshConfig> mesh_config;
  const config::ServiceConfig* service = nullptr;  // null: not in the configuration
  std::vector<std::shared_ptr<Interceptor>> interceptors;
  std::shared_ptr<client::ServiceChannel> all;  // every endpoint
  std::vector<SubsetChannel> subsets;           // parallel to service->subsets
  std::vector<RouteRuntime> routes;             // parallel to service->routes
  std::shared_ptr<Counters> counters;

  void ForEachChannel(const std::function<void(const client::ServiceChannel&)>& fn) const {
    if (all != nullptr) fn(*all);
    for (const SubsetChannel& s : subsets) fn(*s.channel);
  }
  // Ends the calls in flight on this stack's channels (CANCELLED).
  void CloseChannels(absl::string_view reason) const {
    for (const SubsetChannel& s : subsets) s.channel->Close(reason);
    if (all != nullptr) all->Close(reason);
  }
  // Adds the channels' retry, hedge, breaker and ejection counters.
  void AddChannelCounters(ClientStats* out) const {
    ForEachChannel([out](const client::ServiceChannel& ch) {
      client::ServiceChannelStats c = ch.stats();
      out->retries += c.retries;
      out->transparent_retries += c.transparent_retries;
      out->retries_denied += c.retries_denied;
      out->hedges += c.hedges;
      out->hedges_denied += c.hedges_denied;
      out->breaker_overflows += c.breaker_overflows;
      out->pushback_stops += c.pushback_stops;
      out->faults_delayed += c.faults_delayed;
      out->faults_aborted += c.faults_aborted;
      out->ejections += c.outliers.ejections_consecutive_failures +
                        c.outliers.ejections_success_rate +
                        c.outliers.ejections_failure_percentage +
                        c.outliers.ejections_failed_probe;
    });
  }
};

// Adds the channel counters of `add` to `to`.
inline void AddCounters(const ClientStats& add, ClientStats* to) {
  to->retries += add.retries;
  to->transparent_retries += add.transparent_retries;
  to->retries_denied += add.retries_denied;
  to->hedges += add.hedges;
  to->hedges_denied += add.hedges_denied;
  to->breaker_overflows += add.breaker_overflows;
  to->pushback_stops += add.pushback_stops;
  to->faults_delayed += add.faults_delayed;
  to->faults_aborted += add.faults_aborted;
  to->ejections += add.ejections;
}

// Builds a service's stack (see stack.cc).
absl::StatusOr<std::shared_ptr<Stack>> BuildStack(
    MeshCore& core, const std::string& name, std::shared_ptr<const config::MeshConfig> cfg,
    uint64_t generation, std::vector<std::shared_ptr<Interceptor>> interceptors,
    const Stack* previous);

// What routing decided for one call.
struct Routed {
  client::ServiceChannel* target = nullptr;
  const resilience::FaultInjection* fault = nullptr;
  absl::Status error;  // not OK: fail the call with it
};

// The channel (every endpoint, or a route's subset) and the fault
// injection for a call of `method` with `options`.
Routed Route(const Stack& s, absl::string_view method, const client::CallOptions& options);

}  // namespace meshlib::mesh::internal

#endif  // MESHLIB_MESH_INTERNAL_STACK_H_
