// ring_hash: consistent hashing on a ring of virtual nodes (Envoy's
// RING_HASH, i.e. ketama). Calls that carry the same hash key reach the same
// endpoint, and when an endpoint leaves only the keys it held move.
//
//   "load_balancer": [{"ring_hash": {"minimum_ring_size": 1024,
//                                    "maximum_ring_size": 8388608}}]
//
//   minimum_ring_size  default 1024, range 1..8388608 (8M). The ring gets at
//                      least this many points: the lightest endpoint gets
//                      ceil(min * w_min / W) points and every other one
//                      proportionally more (W = total weight). More points,
//                      better balance: at 100 equal endpoints the default
//                      gives 11 points each, and the busiest endpoint takes
//                      about 1.8x the mean; 102400 (1024 each) brings that
//                      to about 1.08x (hash_policies_test.cc measures both).
//   maximum_ring_size  default 8388608 (8M), range 1..8388608, >= minimum.
//                      Caps the ring when weights are very uneven.
//   Neither can be overridden per call. Both are Envoy's names and defaults.
//
// Each endpoint's points are Hash64("<address>_<i>"), i = 0, 1, ...; a call
// goes to the first point >= its PickArgs::hash (wrapping to the first
// point). Calls without a hash (has_hash false) get a random point. The ring
// holds the healthy endpoints only (all of them when none is healthy), and
// endpoints of weight 0 only when every candidate has weight 0. Endpoints
// are laid out in address order, so the ring does not depend on the order of
// the endpoint list.
#ifndef MESHLIB_LB_RING_HASH_RING_HASH_H_
#define MESHLIB_LB_RING_HASH_RING_HASH_H_

#include <memory>

#include "meshlib/lb/policy.h"

namespace meshlib::lb {

std::unique_ptr<PolicyFactory> MakeRingHashFactory();

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_RING_HASH_RING_HASH_H_
