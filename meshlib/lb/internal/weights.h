// Shared by the weighted pickers (random, least_request, p2c_peak_ewma,
// weighted_round_robin): which endpoints a picker serves, and drawing one in
// proportion to its weight in O(1).
//
//   lb_internal::Usable u = lb_internal::SelectUsable(endpoints);
//   lb_internal::AliasTable table(u.weights);
//   int i = u.indices[table.Sample(lb::ThreadRandom())];
//
// Threading: SelectUsable is a pure function; an AliasTable is immutable
// after construction, so Sample may run on any number of threads at once
// (each with its own FastRandom).
#ifndef MESHLIB_LB_INTERNAL_WEIGHTS_H_
#define MESHLIB_LB_INTERNAL_WEIGHTS_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "meshlib/lb/policy.h"

namespace meshlib::lb_internal {

// The endpoints a picker serves, in Build() order.
struct Usable {
  std::vector<int> indices;       // into the vector given to Build()
  std::vector<uint32_t> weights;  // parallel to `indices`; every one > 0
  bool equal_weights = true;      // all of `weights` are the same
};

// The healthy endpoints (all of them when none is healthy, as round_robin
// does: everyone rather than no one). Of those, the ones with weight > 0;
// weight 0 means "only if nothing else", so when every one of them has
// weight 0 they are all served with weight 1. Health is decided first: a
// healthy weight-0 endpoint is preferred to an ejected one.
Usable SelectUsable(const std::vector<lb::LbEndpoint>& endpoints);

// Draws an index in [0, n) with probability weights[i] / sum(weights)
// (Vose's alias method: one random number, one table slot per draw). The
// table is built with integer arithmetic, so the probabilities are exact to
// 2^-32 per slot.
class AliasTable {
 public:
  // `weights`: non-empty, fewer than 2^31 entries, sum > 0.
  explicit AliasTable(const std::vector<uint32_t>& weights);

  uint32_t Sample(lb::FastRandom& random) const {
    uint64_t r = random.Next();
    // High half chooses the slot, low half the coin; independent bits of
    // one 64-bit draw.
    uint32_t slot = static_cast<uint32_t>(((r >> 32) * slots_.size()) >> 32);
    const Slot& s = slots_[slot];
    return static_cast<uint32_t>(r) < s.threshold ? slot : s.alias;
  }
  size_t size() const { return slots_.size(); }
  // The probability of drawing `i`, summed over the slots.
  double ProbabilityForTesting(uint32_t i) const;

 private:
  struct Slot {
    uint32_t threshold;  // P(keep this slot) * 2^32; full slots alias themselves
    uint32_t alias;
  };
  std::vector<Slot> slots_;
};

// Two distinct indices in [0, n), uniformly, from one random number. n >= 2.
inline std::pair<uint32_t, uint32_t> DistinctPair(lb::FastRandom& random, uint32_t n) {
  uint64_t r = random.Next();
  uint32_t a = static_cast<uint32_t>(((r >> 32) * n) >> 32);
  uint32_t b = static_cast<uint32_t>(((r & 0xFFFFFFFFull) * (n - 1)) >> 32);
  if (b >= a) ++b;
  return {a, b};
}

// Uniform in [0, 1), 53 bits.
inline double Uniform01(lb::FastRandom& random) {
  return static_cast<double>(random.Next() >> 11) * 0x1.0p-53;
}

}  // namespace meshlib::lb_internal

#endif  // MESHLIB_LB_INTERNAL_WEIGHTS_H_
