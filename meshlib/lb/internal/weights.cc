#include "meshlib/lb/internal/weights.h"

#include <cassert>

namespace meshlib::lb_internal {

Usable SelectUsable(const std::vector<lb::LbEndpoint>& endpoints) {
  bool any_healthy = false;
  for (const lb::LbEndpoint& e : endpoints) any_healthy = any_healthy || e.healthy;
  Usable u;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const lb::LbEndpoint& e = endpoints[i];
    if ((e.healthy || !any_healthy) && e.endpoint.weight > 0) {
      u.indices.push_back(static_cast<int>(i));
      u.weights.push_back(e.endpoint.weight);
    }
  }
  if (u.indices.empty()) {  // only weight-0 ones: serve them alike
    for (size_t i = 0; i < endpoints.size(); ++i) {
      if (endpoints[i].healthy || !any_healthy) {
        u.indices.push_back(static_cast<int>(i));
        u.weights.push_back(1);
      }
    }
  }
  for (uint32_t w : u.weights) u.equal_weights = u.equal_weights && w == u.weights.front();
  return u;
}

AliasTable::AliasTable(const std::vector<uint32_t>& weights) {
  const uint64_t n = weights.size();
  assert(n > 0 && n < (1ull << 31));
  // Every slot holds `total` units; item i brings weights[i] * n of them
  // (< 2^63 for n < 2^31), so filling slots is exact integer arithmetic.
  uint64_t total = 0;
  for (uint32_t w : weights) total += w;
  assert(total > 0);
  std::vector<uint64_t> units(n);
  std::vector<uint32_t> small, large;
  for (uint64_t i = 0; i < n; ++i) {
    units[i] = weights[i] * n;
    (units[i] < total ? small : large).push_back(static_cast<uint32_t>(i));
  }
  slots_.assign(n, Slot{0, 0});
  while (!small.empty() && !large.empty()) {
    uint32_t s = small.back();
    small.pop_back();
    uint32_t g = large.back();
    slots_[s].threshold = static_cast<uint32_t>(
        (static_cast<unsigned __int128>(units[s]) << 32) / total);
    slots_[s].alias = g;
    units[g] -= total - units[s];  // g tops up s's slot
    if (units[g] < total) {
      large.pop_back();
      small.push_back(g);
    }
  }
  // What is left holds exactly `total` units (the arithmetic is exact).
  for (uint32_t i : large) slots_[i] = Slot{0, i};
  for (uint32_t i : small) slots_[i] = Slot{0, i};
}

double AliasTable::ProbabilityForTesting(uint32_t i) const {
  double p = 0;
  for (uint32_t slot = 0; slot < slots_.size(); ++slot) {
    const Slot& s = slots_[slot];
    double keep = s.alias == slot ? 1.0 : s.threshold * 0x1.0p-32;
    if (slot == i) p += keep;
    if (s.alias == i && s.alias != slot) p += 1 - keep;
  }
  return p / static_cast<double>(slots_.size());
}

}  // namespace meshlib::lb_internal
