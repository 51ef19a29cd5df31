// Every policy that ships with meshlib, registered in PolicyRegistry::Global().
#include "meshlib/lb/policy.h"
#include "meshlib/lb/round_robin.h"

namespace meshlib::lb {

PolicyRegistry& PolicyRegistry::Global() {
  static PolicyRegistry* registry = [] {
    auto* r = new PolicyRegistry();
    r->Register(MakeRoundRobinFactory());
    return r;
  }();
  return *registry;
}

}  // namespace meshlib::lb
