#include "meshlib/mesh/internal/stack.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/config/routing_config.h"
#include "meshlib/lb/policy.h"
#include "meshlib/mesh/internal/mesh_core.h"
#include "nlohmann/json.hpp"

namespace meshlib::mesh::internal {

using json = nlohmann::json;

// Builds a service's stack from its configuration, top to bottom (see
// mesh.h). Not on the control loop: it waits for the new channels to take
// their first endpoints, so that a reload never swaps in a stack that
// would fail calls for having none yet.
//
// `previous` (the stack being replaced, or null) hands what its channels
// learned to the new ones: each new channel takes over from the old one of
// the same role (every endpoint, or the subset of the same name).
absl::StatusOr<std::shared_ptr<Stack>> BuildStack(
    MeshCore& core, const std::string& name, std::shared_ptr<const config::MeshConfig> cfg,
    uint64_t generation, std::vector<std::shared_ptr<Interceptor>> interceptors,
    const Stack* previous) {
  auto stack = std::make_shared<Stack>();
  stack->generation = generation;
  stack->mesh_config = cfg;
  stack->interceptors = std::move(interceptors);
  stack->counters = core.CountersFor(name);
  const config::ServiceConfig* svc = cfg->Find(name);
  stack->service = svc;
  if (svc == nullptr) return stack;  // calls fail with NOT_FOUND

  // Pool, endpoint health, balancer, circuit breaker, hedging, retry and
  // deadline: one ServiceChannel per subset (and one over every endpoint).
  auto d = core.DiscoveryFor(name, svc->discovery);
  if (!d.ok()) return d.status();
  client::ServiceChannelOptions o;
  o.channel.runtime = core.runtime;
  o.channel.default_timeout = svc->timeout;
  o.channel.connections = cfg->mesh.connections_per_endpoint;
  if (const tls::TlsOptions* t = cfg->TlsFor(*svc)) {
    auto watcher = core.TlsFor(
        *t, svc->tls.has_value() ? absl::StrCat("services.", name, ".tls") : "mesh.tls");
    if (!watcher.ok()) return watcher.status();
    o.channel.tls = *std::move(watcher);
  }
  o.load_balancer = svc->load_balancer_list;
  // The typed configuration is the only parse of the policies.
  client::ServiceChannelOptions::Policies policies;
  policies.retry = svc->retry;
  policies.hedging = svc->hedging;
  policies.circuit_breaker = svc->circuit_breaker;
  policies.outlier_detection = svc->outlier_detection;
  policies.health_check = svc->health_check;
  // Fault injection is applied above, by the routing layer (a route's own
  // fault replaces the service's).
  o.policies = policies;
  const bool same_service = previous != nullptr && previous->service != nullptr;
  if (same_service) o.predecessor = previous->all;
  o.lb_context.local_zone = cfg->mesh.zone;
  o.control_loop = core.control;
  o.timers = core.options.timers;
  o.clock = core.options.clock;
  o.metrics = core.options.metrics;
  o.metrics_service = name;
  o.span_exporter = core.options.span_exporter;
  o.shared_discovery = *d;
  o.config_path = absl::StrCat("services.", name);
  client::ChannelOptions channel_options = o.channel;
  if (core.options.channel_factory) {
    o.channel_factory = core.options.channel_factory;
  } else {
    const bool grpc = svc->protocol == config::ServiceConfig::Protocol::kGrpc;
    o.channel_factory = [pool = core.pool, channel_options, grpc](const std::string& address) {
      return pool->Get(address, channel_options, grpc);
    };
  }
  auto all = client::ServiceChannel::Create(name, json(), o);
  if (!all.ok()) return all.status();
  stack->all = std::shared_ptr<client::ServiceChannel>(std::move(*all));
  for (const config::SubsetConfig& subset : svc->subsets) {
    client::ServiceChannelOptions so = o;
    // One verdict per endpoint for the whole service: the subsets take
    // outlier detection and health checks from the channel over every
    // endpoint.
    so.health_source = stack->all;
    so.policies->outlier_detection.reset();
    so.policies->health_check.reset();
    so.predecessor = nullptr;
    if (same_service) {
      for (const SubsetChannel& old : previous->subsets) {
        if (old.config->name == subset.name) so.predecessor = old.channel;
      }
    }
    so.endpoint_filter = [&subset](const discovery::Endpoint& e) {
      return config::SubsetMatches(subset, e);
    };
    so.config_path = absl::StrCat("services.", name, ".subsets.", subset.name);
    auto ch = client::ServiceChannel::Create(name, json(), so);
    if (!ch.ok()) return ch.status();
    stack->subsets.push_back({&subset, std::shared_ptr<client::ServiceChannel>(std::move(*ch))});
  }
  // Routing.
  for (const config::RouteConfig& route : svc->routes) {
    RouteRuntime r;
    r.config = &route;
    r.hits = stack->counters->Hits(route.name);
    for (const auto& [subset_name, weight] : route.split) {
      int index = -1;
      for (size_t i = 0; i < svc->subsets.size(); ++i) {
        if (svc->subsets[i].name == subset_name) index = static_cast<int>(i);
      }
      r.subset_of_split.push_back(index);
      r.split_hits.push_back(stack->counters->Hits(absl::StrCat(route.name, "/", subset_name)));
    }
    stack->routes.push_back(std::move(r));
  }
  // Ready: every channel has applied the source's current set. A source
  // that has produced none yet (just started) gets ready_timeout to do so;
  // calls made before fail with a status that names discovery.
  if ((*d)->Current() != nullptr || (*d)->WaitForEndpoints(core.options.ready_timeout)) {
    stack->ForEachChannel([&](const client::ServiceChannel& ch) {
      const_cast<client::ServiceChannel&>(ch).WaitForFirstUpdate(core.options.ready_timeout);
    });
  }
  return stack;
}

Routed Route(const Stack& s, absl::string_view method, const client::CallOptions& options) {
  Routed out;
  out.target = s.all.get();
  const config::ServiceConfig& svc = *s.service;
  if (svc.fault.enabled()) out.fault = &svc.fault;
  if (s.routes.empty()) return out;
  const config::RouteConfig* route =
      config::FirstMatchingRoute(svc.routes, method, options.metadata);
  if (route == nullptr) {
    s.counters->unrouted.fetch_add(1, std::memory_order_relaxed);
    return out;
  }
  const RouteRuntime& rt = s.routes[route - svc.routes.data()];
  rt.hits->fetch_add(1, std::memory_order_relaxed);
  int k = config::PickSplit(*route, lb::ThreadRandom().Next(), [&](int i) {
    int subset = rt.subset_of_split[i];
    return subset >= 0 && s.subsets[subset].channel->endpoint_count() > 0;
  });
  if (k < 0) {
    std::vector<std::string> names;
    for (const auto& [n, w] : route->split) names.push_back(n);
    out.error = absl::UnavailableError(
        absl::StrCat("service ", svc.name, ": route ", route->name, ": no endpoints in subset",
                     names.size() > 1 ? "s " : " ", absl::StrJoin(names, ", ")));
    return out;
  }
  rt.split_hits[k]->fetch_add(1, std::memory_order_relaxed);
  out.target = s.subsets[rt.subset_of_split[k]].channel.get();
  if (route->fault.has_value()) out.fault = route->fault->enabled() ? &*route->fault : nullptr;
  return out;
}

}  // namespace meshlib::mesh::internal
