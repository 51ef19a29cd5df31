// Which endpoints a consistent-hashing policy (ring_hash, maglev) places,
// and with what weight. Shared so that both policies agree on health,
// weight 0 and ordering.
//
//   std::vector<lb_internal::HashMember> m = lb_internal::HashMembers(endpoints);
//   for (const auto& x : m) Place(endpoints[x.index].endpoint.address, x.weight);
//
// Threading: stateless, thread-safe.
#ifndef MESHLIB_LB_INTERNAL_HASH_MEMBERS_H_
#define MESHLIB_LB_INTERNAL_HASH_MEMBERS_H_

#include <cstdint>
#include <vector>

#include "meshlib/lb/policy.h"

namespace meshlib::lb_internal {

struct HashMember {
  int index;        // into the endpoint list
  uint64_t weight;  // > 0
};

// The healthy endpoints (all of them when none is healthy); among those,
// weight 0 ("only if nothing else") is left out unless every one has weight
// 0, and then each counts as 1. Sorted by address (ties by index), so that
// what a policy builds does not depend on the order of the endpoint list and
// every client of a service builds the same thing.
std::vector<HashMember> HashMembers(const std::vector<lb::LbEndpoint>& endpoints);

}  // namespace meshlib::lb_internal

#endif  // MESHLIB_LB_INTERNAL_HASH_MEMBERS_H_
