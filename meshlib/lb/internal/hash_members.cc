#include "meshlib/lb/internal/hash_members.h"

#include <algorithm>
#include <string>

namespace meshlib::lb_internal {

std::vector<HashMember> HashMembers(const std::vector<lb::LbEndpoint>& endpoints) {
  std::vector<HashMember> m;
  m.reserve(endpoints.size());
  const bool any_healthy = std::any_of(endpoints.begin(), endpoints.end(),
                                       [](const lb::LbEndpoint& e) { return e.healthy; });
  bool any_weighted = false;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    if (any_healthy && !endpoints[i].healthy) continue;
    m.push_back({static_cast<int>(i), endpoints[i].endpoint.weight});
    any_weighted = any_weighted || endpoints[i].endpoint.weight > 0;
  }
  if (any_weighted) {
    m.erase(std::remove_if(m.begin(), m.end(), [](const HashMember& x) { return x.weight == 0; }),
            m.end());
  } else {
    for (HashMember& x : m) x.weight = 1;
  }
  std::sort(m.begin(), m.end(), [&](const HashMember& a, const HashMember& b) {
    const std::string& aa = endpoints[a.index].endpoint.address;
    const std::string& ba = endpoints[b.index].endpoint.address;
    return aa != ba ? aa < ba : a.index < b.index;
  });
  return m;
}

}  // namespace meshlib::lb_internal
