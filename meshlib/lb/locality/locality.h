// locality: priority failover, panic threshold and zone-aware routing around
// a child policy (Envoy's LoadBalancerBase / ZoneAwareLoadBalancerBase
// semantics, integer arithmetic included, with the differences listed below).
//
//   "load_balancer": [{"locality": {
//       "policy": [{"least_request": {}}, {"round_robin": {}}],  // the child
//       "panic_threshold": 50, "overprovisioning_factor": 1.4,
//       "zone_aware": true, "local_zone": "us-east-1a", "min_cluster_size": 6}}]
//
// For each Build() the endpoints are grouped into priority levels and each
// level into zones; the child policy (first known name of "policy", default
// round_robin) builds one picker per subset, and its index is mapped back to
// the full endpoint vector. A pick first chooses a level, then (zone-aware)
// a zone, then asks that subset's child picker.
//
// 1. Priority levels. Endpoints are grouped by `priority`, lower first; the
//    values only order the levels (priorities {0, 5} are levels 0 and 1).
//    With OPF = round(100 * overprovisioning_factor) (140 by default):
//      health[i]  = min(100, floor(OPF * healthy[i] / total[i]))
//      normalized = min(100, sum(health))
//      load[i]    = min(remaining, floor(health[i] * 100 / normalized)),
//                   remaining = 100 - load[0] - ... - load[i-1]
//    and what rounding leaves over goes to the first level with health > 0.
//    So priority 0 keeps all traffic while >= 1/1.4 (71.4%) of it is healthy,
//    then spills: 10 + 10 endpoints with 7 of priority 0 healthy give 98/2,
//    5 healthy give 70/30, none 0/100.
//
// 2. Panic threshold (percent, default 50; Envoy's healthy_panic_threshold),
//    judged per level, and only when normalized < 100 (the levels together
//    cannot carry the load on healthy endpoints): a level whose healthy
//    share 100 * healthy / total is below the threshold serves its share of
//    the traffic from ALL of its endpoints, health ignored. When every
//    level is in panic (so also when nothing is healthy), load follows the
//    endpoint counts instead: load[i] = floor(100 * total[i] / sum(total)),
//    remainder to the first level. Example: 10 + 10 endpoints, 1 of
//    priority 0 healthy and 6 of priority 1: health 14 and 84, normalized
//    98, load 15/85 (14 + the rounding remainder, 85); priority 0 (10%
//    healthy) is in panic, so its 15% is spread over its 10 endpoints.
//    panic_threshold 0 turns panic off: only healthy endpoints are used,
//    and when none is, Pick returns kNoEndpoint (the call fails fast).
//
// 3. Zone-aware routing (when zone_aware and a local zone is known: config
//    "local_zone", else PolicyContext::local_zone), within each level that
//    is not in panic. Envoy compares the share of the *client* fleet in the
//    local zone with the share of the healthy upstream endpoints there; a
//    library does not know the client fleet, so it assumes the clients are
//    spread over the zones as this level's endpoints are (counting the
//    unhealthy ones: the deployment, not the current health). In 1/10000:
//      client[z]   = floor(10000 * total[z] / total)
//      upstream[z] = floor(10000 * healthy[z] / healthy)
//    - upstream[local] >= client[local]: every pick stays in the local zone.
//    - otherwise a fraction floor(10000 * upstream[local] / client[local])
//      stays local, and the rest goes to the other zones in proportion to
//      their residual capacity max(0, upstream[z] - client[z]).
//    With all zones healthy this keeps all traffic local; when ejections
//    shrink the local zone it sends just enough elsewhere that, with every
//    zone's clients doing the same, each healthy endpoint keeps an equal
//    share, instead of piling the local clients onto the survivors. There
//    is no zone routing (the level's healthy endpoints are used whatever
//    their zone) when the local zone has no healthy endpoint, when fewer
//    than two zones have healthy endpoints, or when the level has fewer
//    than min_cluster_size healthy endpoints (Envoy's default 6: small
//    clusters have too coarse zone shares to balance).
//
// Differences from Envoy: the client fleet is assumed to be shaped like the
// upstream (above); zone routing applies at every level, not only at
// priority 0; there are no "degraded" endpoints; with panic off and no
// level's health above 0 (e.g. 1 healthy of 1000) traffic goes to the first
// level with a healthy endpoint rather than nowhere.
//
// Picking: one 64-bit value h, args.hash when the call has one (so that a
// key keeps its level and zone, and a ring_hash or maglev child keeps it on
// its endpoint, as Envoy's hashing balancers choose the priority from the
// hash), else a random draw. The level is the first whose cumulative load
// exceeds h % 100; the zone draw is (h / 100) % 10000.
//
// Outlier ejection: outlier detection and health checks mark endpoints
// unhealthy (LbEndpoint::healthy). Each ejection lowers its level's health,
// and the overprovisioning factor decides when traffic starts to spill to
// the next priority; zone routing stops leaning on a shrinking local zone.
// Priority load and the panic threshold together bound what ejection can
// do: an outlier detector that ejects too much (a bad deploy, a detector
// tuned too tight, a client-side fault that makes every endpoint look bad)
// cannot pile the traffic onto a few survivors. While the other levels can
// take the load, a level gets at most its health, so each of its healthy
// endpoints carries at most overprovisioning_factor times an even share;
// when they cannot, a level with fewer than panic_threshold% healthy is
// served by all of its endpoints, ejected or not. Whatever is ejected, an
// endpoint of a level of n gets at most
//   max(overprovisioning_factor, 100 / panic_threshold) / n
// of all traffic (2/n with the defaults), plus the rounding remainder
// (under 1% per extra level), with a child that spreads evenly and without
// zone routing (which keeps that fleet-wide, under its assumption about
// where the clients are). An outlier detector's max-ejection percentage
// above 100 - panic_threshold therefore buys nothing once the other levels
// are short too: the level goes into panic instead.
//
// Threading: as every Policy (one control thread); the picker is immutable
// and lock-free (one random draw, or none with a hash, per pick plus the
// child's pick).
#ifndef MESHLIB_LB_LOCALITY_LOCALITY_H_
#define MESHLIB_LB_LOCALITY_LOCALITY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "meshlib/lb/policy.h"

namespace meshlib::lb {

std::unique_ptr<PolicyFactory> MakeLocalityFactory();

// The parsed config, with its defaults.
struct LocalityOptions {
  // "panic_threshold": percent of healthy endpoints in a level below which
  // the level is in panic. Default 50, range [0, 100]; 0 disables panic.
  double panic_threshold = 50;
  // "overprovisioning_factor": how much more than its share a healthy
  // level is assumed to carry. Default 1.4 (Envoy's 140), range [1, 100].
  double overprovisioning_factor = 1.4;
  // "zone_aware": prefer the local zone. Default true (has no effect until
  // a local zone is known).
  bool zone_aware = true;
  // "local_zone": overrides PolicyContext::local_zone. Default "" (use the
  // context's).
  std::string local_zone;
  // "min_cluster_size": fewest healthy endpoints in a level for zone
  // routing. Default 6 (Envoy's), range [0, 2^31).
  int64_t min_cluster_size = 6;
};

// What a Build() decides, for tests and for Describe(). Exposed so that the
// arithmetic above can be checked number by number.
struct LocalityPlan {
  enum class ZoneMode {
    kNone,      // the level's healthy endpoints, any zone (or all, in panic)
    kLocal,     // only the local zone's healthy endpoints
    kResidual,  // local_share to the local zone, the rest by residual
  };
  struct Level {
    uint32_t priority = 0;
    std::vector<int> members;  // indices into the endpoint vector
    int healthy = 0;
    uint32_t health = 0;  // 0-100, with the overprovisioning factor
    uint32_t load = 0;    // percent of all traffic; levels sum to 100
    bool panic = false;   // serves from all members
    ZoneMode zone_mode = ZoneMode::kNone;
    uint32_t local_share = 0;  // kResidual: of this level's traffic, in 1/10000
    // kResidual: the other zones and their residual capacity (1/10000),
    // only zones with capacity > 0; empty when rounding left none, and then
    // the non-local share is spread over every other healthy endpoint.
    std::vector<std::pair<std::string, uint32_t>> residual;
  };
  std::vector<Level> levels;  // by priority
  // The zone used for zone routing ("" = none).
  std::string local_zone;
};

// The plan for `endpoints`; `local_zone` is the effective one (config or
// context). Pure function.
LocalityPlan PlanLocality(const std::vector<LbEndpoint>& endpoints,
                          const LocalityOptions& options, const std::string& local_zone);

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_LOCALITY_LOCALITY_H_
