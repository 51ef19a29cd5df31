// Routing: the `subsets` and `routes` of a service in mesh.json, and the pure
// matching functions the client's routing layer uses on them.
//
//   "subsets": {"v1": {"version": "v1"}, "v2": {"version": "v2", "zone": "a"}},
//   "routes": [
//     {"name": "canary-header", "match": {"metadata": {"x-canary": "true"}}, "subset": "v2"},
//     {"name": "writes", "match": {"method": "Kv/Put"}, "subset": "v1",
//      "fault": {"abort": {"percent": 1}}},
//     {"name": "split", "split": {"v1": 95, "v2": 5}}
//   ]
//
// A subset is the endpoints whose metadata has every listed pair. A call
// takes the first route whose `match` it matches, then one subset of that
// route's `split`, drawn by weight; within the subset the service's
// load_balancer picks the endpoint. docs/configuration.md has the rules.
//
//   const RouteConfig* route = FirstMatchingRoute(service.routes, "Kv/Put", md);
//   if (route != nullptr) {
//     int i = PickSplit(*route, rng(), [&](size_t k) { return !members[k].empty(); });
//     ...  // i: index into route->split, or -1: nothing to call
//   }
//
// Threading: the structs are immutable values; the functions are pure and
// thread-safe.
#ifndef MESHLIB_CONFIG_ROUTING_CONFIG_H_
#define MESHLIB_CONFIG_ROUTING_CONFIG_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/discovery/endpoint.h"
#include "meshlib/resilience/fault_injection.h"
#include "meshlib/transport/frame.h"
#include "nlohmann/json.hpp"

namespace meshlib::config {

// One entry of `subsets`.
struct SubsetConfig {
  // Its key in `subsets`; non-empty.
  std::string name;
  // Endpoint-metadata key -> exact value; an endpoint is in the subset when
  // every pair matches (see SubsetMatches). Empty: every endpoint.
  std::map<std::string, std::string> match;
};

// A route's `match` object. A default-constructed RouteMatch matches every
// call.
struct RouteMatch {
  // `match.method`. Empty: any method. Otherwise the exact method name, or,
  // when method_prefix is true, a prefix of it (the config's "Kv/*" is
  // stored as "Kv/" with method_prefix true; "*" alone as "" = any).
  std::string method;
  bool method_prefix = false;
  // `match.metadata`: request-metadata key -> exact value, or "*" meaning
  // "present, with any value". All pairs must match. Sorted by key.
  std::vector<std::pair<std::string, std::string>> metadata;
};

// One entry of `routes`.
struct RouteConfig {
  // `name`; default "routes[<index>]". Unique within the service.
  std::string name;
  RouteMatch match;
  // Subset name -> weight (0-10000), sorted by subset name; at least one
  // weight is > 0 and every name is in the service's `subsets`. A route
  // with `"subset": "v1"` has the split {{"v1", 1}}.
  std::vector<std::pair<std::string, uint32_t>> split;
  // The route's `fault`: replaces the service's `fault` for the calls that
  // take this route. nullopt: the service's applies.
  std::optional<resilience::FaultInjection> fault;
};

// Largest weight of one split entry.
inline constexpr uint32_t kMaxSplitWeight = 10000;

// Parses a service's `subsets` object at `path` (e.g.
// "services.echo.subsets"). Errors name the field and the rule. The result
// is sorted by name.
absl::StatusOr<std::vector<SubsetConfig>> ParseSubsets(const nlohmann::json& j,
                                                       absl::string_view path);

// Parses a service's `routes` list at `path` (e.g. "services.echo.routes"),
// checking every subset name against `subsets`:
//   services.echo.routes[1].split.v3: no subset named "v3" (subsets: v1, v2)
absl::StatusOr<std::vector<RouteConfig>> ParseRoutes(const nlohmann::json& j,
                                                     absl::string_view path,
                                                     const std::vector<SubsetConfig>& subsets);

// True when `endpoint` is in `subset`: for every (key, value) of
// subset.match, endpoint.metadata[key] == value. For the key "zone", an
// endpoint whose metadata has no "zone" entry is judged by its `zone` field
// (what discovery reports as the endpoint's zone).
bool SubsetMatches(const SubsetConfig& subset, const discovery::Endpoint& endpoint);

// True when a call of `method` with `request_metadata` matches `match`.
// Keys and values compare exactly (case-sensitive); a key repeated in the
// request matches when any of its values does.
bool RouteMatches(const RouteMatch& match, absl::string_view method,
                  const transport::Metadata& request_metadata);

// The first route of `routes` that the call matches; nullptr when none
// does (the call then uses every endpoint, as without routing).
const RouteConfig* FirstMatchingRoute(const std::vector<RouteConfig>& routes,
                                      absl::string_view method,
                                      const transport::Metadata& request_metadata);

// The split entry a call takes: an index into route.split drawn with
// probability proportional to its weight among the entries for which
// `usable(index)` is true (the runtime passes "the subset has endpoints"),
// from `random64`, a uniformly random 64-bit value. -1 when no usable entry
// has a weight > 0.
int PickSplit(const RouteConfig& route, uint64_t random64,
              absl::FunctionRef<bool(size_t)> usable);

}  // namespace meshlib::config

#endif  // MESHLIB_CONFIG_ROUTING_CONFIG_H_
