// random: an endpoint drawn at random for each call, in proportion to its
// weight (or uniformly). Statistically even, with no shared state between
// picks, so it suits many clients of a small service where round robin's
// counters would all move in step.
//
//   "load_balancer": [{"random": {"weighted": true}}]
//
// Config:
//   weighted  bool, default true: draw in proportion to the endpoints'
//             weights (Vose's alias table: O(1) per pick); false: uniformly.
//
// Unhealthy endpoints are skipped (all of them are used when none is
// healthy); weight-0 endpoints are used only when every usable endpoint has
// weight 0 (then uniformly), whatever `weighted` says. Each pick costs one
// draw from the thread's generator (ThreadRandom) and touches no shared
// writable memory.
#ifndef MESHLIB_LB_RANDOM_RANDOM_H_
#define MESHLIB_LB_RANDOM_RANDOM_H_

#include <memory>

#include "meshlib/lb/policy.h"

namespace meshlib::lb {

std::unique_ptr<PolicyFactory> MakeRandomFactory();

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_RANDOM_RANDOM_H_
