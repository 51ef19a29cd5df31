// aperture: deterministic subsetting (Finagle's deterministic aperture)
// around a child policy: each client of a large fleet talks to a small,
// deterministic arc of it, and the arcs of all clients cover the fleet
// evenly, so connection counts stay small and load stays even.
//
//   "load_balancer": [{"aperture": {
//       "size": 12,                        // fewest endpoints per client
//       "client_id": 7, "peer_count": 100, // this client's coordinate
//       "policy": [{"weighted_round_robin": {}}, {"round_robin": {}}]}}]
//
// The ring. Endpoints are placed on a unit ring in the order of
// Hash64(address) (ties by address), endpoint j owning [j/S, (j+1)/S) of S.
// The order depends only on each endpoint's own address, so every client
// computes the same ring, a rebuild with the same set gives the same
// subset, and adding or removing one endpoint shifts the others by at most
// one slot. (Hashing rather than sorting the addresses keeps neighbours in
// an address range, often one rack, from landing in the same arcs.)
//
// The arc. Client k of P (client_id mod peer_count; config overrides
// PolicyContext) starts at k/P, as Finagle's ProcessCoordinate, and spans
//   width = max(size / S, 1 / P)
// so each arc holds `size` endpoints' worth (size or size + 1 endpoints,
// the edges partly) and the arcs of all P clients cover the whole ring.
// The subset is every endpoint whose slot overlaps the arc; size >= S means
// all of them.
//
// Evenness. Client starts are 1/P apart, so every point of the ring is
// covered by q or q + 1 arcs (q = floor(width * P)); each endpoint is in
// the subsets of between c - 1 and c clients for some c (connection counts
// differ by at most one; with 100 clients, 1000 endpoints and size 10,
// every endpoint is in exactly one subset). Load is made exactly even by
// weights: a member's weight is the integral, over its overlap with the
// arc, of 1 / coverage, which every client can compute from (P, S, size);
// summed over the clients that cover an endpoint it is the same for every
// endpoint. Weights are passed to the child as endpoint.weight x
// 1000 x share (share in (0, 1], 1 for a full slot covered q times; at
// least 1 unless the weight is 0), so a weight-aware child (e.g.
// weighted_round_robin) spreads load evenly across the fleet; a child that
// ignores weights (round_robin) gives each member an equal share, and the
// partly covered edges then carry somewhat more than their due.
//
// Difference from Finagle: Finagle rounds the width up to a whole number of
// client slices, ceil(size * P / S) / P, which makes coverage uniform
// without weights but makes the width jump: with 100 clients and size 10, a
// fleet going from 1000 to 999 endpoints doubles every subset (10 -> 20
// endpoints). Here the width is continuous in S, so removing or adding one
// endpoint changes each subset by one or two members, and the weights
// above restore even load.
//
// Unknown peers (peer_count 0 in both config and context): Finagle's random
// aperture; the coordinate is drawn once per policy instance (from
// PolicyContext::seed when set, else at random) on a ring of 2^20 virtual
// peers, and the arc spans size / S. Subsets are still stable across
// rebuilds, but clients are spread only statistically.
//
// Health: the subset ignores health (so ejections do not reshuffle it and
// open connections elsewhere); the child skips unhealthy members as it
// always does. If no member of the subset is healthy but some endpoint
// outside it is, the child is built over the whole set until one is.
//
// Threading: as every Policy (one control thread); the picker is the
// child's plus an index map.
#ifndef MESHLIB_LB_APERTURE_APERTURE_H_
#define MESHLIB_LB_APERTURE_APERTURE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "meshlib/lb/policy.h"

namespace meshlib::lb {

std::unique_ptr<PolicyFactory> MakeApertureFactory();

// The parsed config, with its defaults.
struct ApertureOptions {
  // "size": fewest endpoints in a subset (Finagle's minimum deterministic
  // aperture). Default 12, range [1, 2^31).
  int64_t size = 12;
  // "client_id": this client's index among its peers, in [0, peer_count);
  // a larger value is taken mod peer_count. Default: PolicyContext's. -1 =
  // not set.
  int64_t client_id = -1;
  // "peer_count": how many clients share the fleet. Default:
  // PolicyContext's; 0 there too means unknown (random aperture). Range
  // [1, 2^31).
  int64_t peer_count = 0;
};

struct ApertureMember {
  int index = 0;       // into the endpoint vector
  double share = 1.0;  // its weight factor, (0, 1]
};

// The subset of client `client` of `peers` (taken mod peers; peers 0 counts
// as 1) with at least `size` (>= 1) endpoints' worth, on the ring of
// `endpoints`, in ring order. Pure function.
std::vector<ApertureMember> ApertureSubset(const std::vector<LbEndpoint>& endpoints,
                                           uint64_t client, uint64_t peers, int64_t size);

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_APERTURE_APERTURE_H_
