// Every policy that ships with meshlib, registered in PolicyRegistry::Global().
#include "meshlib/lb/policy.h"
#include "meshlib/lb/round_robin.h"
#include "meshlib/lb/ring_hash.h"
#include "meshlib/lb/maglev.h"
#include "meshlib/lb/weighted_round_robin.h"
#include "meshlib/lb/random.h"
#include "meshlib/lb/least_request.h"
#include "meshlib/lb/p2c_peak_ewma.h"
#include "meshlib/lb/locality.h"
#include "meshlib/lb/aperture.h"

namespace meshlib::lb {

void PolicyRegistry::RegisterBuiltins(PolicyRegistry& r) {
  r.Register(MakeRoundRobinFactory());
  r.Register(MakeRingHashFactory());
  r.Register(MakeMaglevFactory());
  r.Register(MakeWeightedRoundRobinFactory());
  r.Register(MakeRandomFactory());
  r.Register(MakeLeastRequestFactory());
  r.Register(MakeP2cPeakEwmaFactory());
  r.Register(MakeLocalityFactory());
  r.Register(MakeApertureFactory());
}

const PolicyRegistry& PolicyRegistry::Global() {
  static const PolicyRegistry* const registry = [] {
    auto* r = new PolicyRegistry();
    RegisterBuiltins(*r);
    return r;
  }();
  return *registry;
}

}  // namespace meshlib::lb
