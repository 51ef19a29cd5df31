// weighted_round_robin: each endpoint in turn, as often as its weight says,
// spread evenly (earliest deadline first, as Envoy's round robin does with
// weights): with weights 1:2:7 every 10 consecutive picks hold exactly 1, 2
// and 7 of them, and the 7 are interleaved with the others rather than
// bunched.
//
//   "load_balancer": [{"weighted_round_robin": {}}]
//
// No parameters. Unhealthy endpoints are skipped (all of them are used when
// none is healthy); weight-0 endpoints are used only when every usable
// endpoint has weight 0 (then evenly).
//
// Build() lays out one period of the schedule: weights are divided by their
// greatest common divisor, and the k-th turn (k = 0 .. w-1) of an endpoint
// of weight w is due at (k + 1/2) / w; turns are sorted by due time (ties
// in endpoint order, so equal weights give plain round robin). Pick() walks
// that array with one relaxed atomic counter, from a random offset so that
// clients do not all start on the same endpoint.
//
// The period is sum(weights) slots (after dividing by the gcd), 4 bytes
// each, capped at max(65536, 64 x endpoints). Above the cap, weights are
// scaled to it and rounded, each endpoint keeping at least one slot; an
// endpoint's share is then off by at most one slot of the period plus 1/63
// of its due share (what the one-slot minimums take from the others), and
// "every window of a period" holds for the scaled weights. Building costs
// O(period + endpoints).
#ifndef MESHLIB_LB_WEIGHTED_ROUND_ROBIN_WEIGHTED_ROUND_ROBIN_H_
#define MESHLIB_LB_WEIGHTED_ROUND_ROBIN_WEIGHTED_ROUND_ROBIN_H_

#include <memory>

#include "meshlib/lb/policy.h"

namespace meshlib::lb {

std::unique_ptr<PolicyFactory> MakeWeightedRoundRobinFactory();

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_WEIGHTED_ROUND_ROBIN_WEIGHTED_ROUND_ROBIN_H_
