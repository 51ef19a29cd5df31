// maglev: consistent hashing through a lookup table (Eisenbud et al.,
// "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI'16, as
// in Envoy's MAGLEV). Lookups are one table read; every endpoint holds an
// almost equal share of the table (counts differ by at most one, weights
// aside), and when an endpoint leaves, most keys that were not on it stay
// where they were ("minimal disruption" is close to, not exactly, minimal).
//
//   "load_balancer": [{"maglev": {"table_size": 65537}}]
//
//   table_size  default 65537; must be a prime number, at most 5000011
//               (Envoy's limit). Not overridable per call. Keep it well
//               above 100x the number of endpoints: with N endpoints each
//               gets about table_size / N entries, so a larger table evens
//               out weights and reduces disruption, at 4 bytes per entry
//               and a build time linear in it.
//
// Each endpoint's preference list is the permutation
//   offset = Hash64(address) % M, skip = Hash64(address, seed) % (M - 1) + 1,
//   permutation[j] = (offset + j * skip) % M
// and endpoints take turns claiming their next free preferred entry until
// the table is full; an endpoint of weight w takes a turn in w / w_max of
// the rounds (Envoy's weighted Maglev). A call goes to table[hash % M];
// calls without a hash (has_hash false) get a random entry. The table holds
// the healthy endpoints only (all when none is healthy), and weight-0
// endpoints only when every candidate has weight 0. Endpoints take their
// turns in address order, so the table does not depend on the order of the
// endpoint list.
#ifndef MESHLIB_LB_MAGLEV_MAGLEV_H_
#define MESHLIB_LB_MAGLEV_MAGLEV_H_

#include <memory>

#include "meshlib/lb/policy.h"

namespace meshlib::lb {

std::unique_ptr<PolicyFactory> MakeMaglevFactory();

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_MAGLEV_MAGLEV_H_
