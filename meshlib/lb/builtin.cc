// Every policy that ships with meshlib, registered in PolicyRegistry::Global().
#include <atomic>

#include "absl/strings/str_cat.h"
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

namespace {

// The global registry, sealed at its first read.
struct GlobalPolicies {
  PolicyRegistry registry;
  std::atomic<bool> sealed{false};
};

GlobalPolicies& Globals() {
  static GlobalPolicies* const g = [] {
    auto* g = new GlobalPolicies();
    PolicyRegistry::RegisterBuiltins(g->registry);
    return g;
  }();
  return *g;
}

}  // namespace

const PolicyRegistry& PolicyRegistry::Global() {
  GlobalPolicies& g = Globals();
  g.sealed.store(true, std::memory_order_release);
  return g.registry;
}

absl::Status PolicyRegistry::AddToGlobal(std::unique_ptr<PolicyFactory> factory) {
  GlobalPolicies& g = Globals();
  if (g.sealed.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "load balancing policy ", factory->name(),
        ": the global registry is in use already; add policies at start-up, before any "
        "configuration is parsed or channel made"));
  }
  g.registry.Register(std::move(factory));
  return absl::OkStatus();
}

}  // namespace meshlib::lb
