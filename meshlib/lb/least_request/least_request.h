// least_request: the less busy of a few endpoints drawn at random (power of
// N choices; Envoy's and gRPC's least_request), using the calls in flight
// that the client reports through EndpointStats.
//
//   "load_balancer": [{"least_request": {"choice_count": 2, "active_request_bias": 1.0}}]
//
// Config:
//   choice_count         int, default 2, 2..10: how many endpoints each pick
//                        compares (gRPC clamps to the same range; here a
//                        value outside it is a config error).
//   active_request_bias  number, default 1.0, 0..100: when weights differ,
//                        how strongly calls in flight lower an endpoint's
//                        effective weight, Envoy's
//                          weight / (in_flight + 1) ^ active_request_bias.
//                        0 ignores load (weighted random). Unused when all
//                        weights are equal.
//
// All weights equal (Envoy's O(1) mode): choice_count distinct endpoints
// drawn uniformly, the one with the fewest calls in flight wins (ties: the
// first drawn). An endpoint busier than every other one gets no new call
// until it drains. With no more than choice_count endpoints, all of them are
// compared.
//
// Weights differ: Envoy recomputes an EDF schedule on every pick, which
// needs a lock. Here each pick draws choice_count candidates in proportion
// to weight (with replacement) and takes one of them with probability
// proportional to (in_flight + 1) ^ -active_request_bias. With equal loads
// the result is exactly in proportion to weight; a busier endpoint gets less,
// never nothing; as choice_count grows the pick distribution tends to
// Envoy's weight / (in_flight + 1) ^ bias (with 2 choices the load signal is
// weaker than Envoy's: raise choice_count for a stronger one).
//
// Unhealthy endpoints are skipped (all of them are used when none is
// healthy); weight-0 endpoints are used only when every usable endpoint has
// weight 0.
#ifndef MESHLIB_LB_LEAST_REQUEST_LEAST_REQUEST_H_
#define MESHLIB_LB_LEAST_REQUEST_LEAST_REQUEST_H_

#include <memory>

#include "meshlib/lb/policy.h"

namespace meshlib::lb {

std::unique_ptr<PolicyFactory> MakeLeastRequestFactory();

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_LEAST_REQUEST_LEAST_REQUEST_H_
