// round_robin: each endpoint in turn, ignoring weights; unhealthy endpoints
// are skipped (all of them are used when none is healthy).
//
//   "load_balancer": [{"round_robin": {}}]
//
// The picker walks a shared atomic counter (one relaxed fetch_add per pick)
// from a random starting offset, so that many clients do not all start at
// the first endpoint.
#ifndef MESHLIB_LB_ROUND_ROBIN_ROUND_ROBIN_H_
#define MESHLIB_LB_ROUND_ROBIN_ROUND_ROBIN_H_

#include <memory>

#include "meshlib/lb/policy.h"

namespace meshlib::lb {

std::unique_ptr<PolicyFactory> MakeRoundRobinFactory();

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_ROUND_ROBIN_ROUND_ROBIN_H_
