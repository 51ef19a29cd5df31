// Every policy that ships with meshlib, registered in PolicyRegistry::Global().
#include "absl/strings/str_cat.h"
#include "meshlib/core/seal_on_read.h"
#include "meshlib/lb/policy.h"
#include "meshlib/lb/round_robin/round_robin.h"
#include "meshlib/lb/ring_hash/ring_hash.h"
#include "meshlib/lb/maglev/maglev.h"
#include "meshlib/lb/weighted_round_robin/weighted_round_robin.h"
#include "meshlib/lb/random/random.h"
#include "meshlib/lb/least_request/least_request.h"
#include "meshlib/lb/p2c_peak_ewma/p2c_peak_ewma.h"
#include "meshlib/lb/locality/locality.h"
#include "meshlib/lb/aperture/aperture.h"

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

core::SealOnRead<PolicyRegistry>& Globals() {
  static auto* const g = new core::SealOnRead<PolicyRegistry>(&PolicyRegistry::RegisterBuiltins);
  return *g;
}

}  // namespace

const PolicyRegistry& PolicyRegistry::Global() { return Globals().Read(); }

absl::Status PolicyRegistry::AddToGlobal(std::unique_ptr<PolicyFactory> factory) {
  std::string name = factory->name();
  if (Globals().Add(std::move(factory))) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "load balancing policy ", name,
      ": the global registry is in use already; add policies at start-up, before any "
      "configuration is parsed or channel made"));
}

}  // namespace meshlib::lb
