// BalancerLayer: which endpoint an attempt goes to. The service's policy
// (lb::Policy, the `load_balancer` section) builds an immutable picker on
// the control loop whenever the endpoints or their health change; the
// request path picks without a lock. Endpoints that cannot be reached right
// now (reconnecting after a failure) are skipped, as gRPC's balancers pick
// only READY subchannels. Every attempt's outcome and latency feed its
// endpoint's load signals (lb::EndpointStats: in-flight count, peak EWMA),
// which the policies read. Below the breaker (a refused call picks
// nothing), above endpoint health (which decides who may be picked).
#ifndef MESHLIB_CLIENT_LAYERS_BALANCER_LAYER_H_
#define MESHLIB_CLIENT_LAYERS_BALANCER_LAYER_H_

#include <memory>
#include <string>

#include "meshlib/client/layer.h"
#include "meshlib/lb/policy.h"

namespace meshlib::client {

class BalancerLayer final : public Layer {
 public:
  explicit BalancerLayer(std::unique_ptr<lb::Policy> policy) : policy_(std::move(policy)) {}
  absl::string_view role() const override { return "balancer"; }
  std::string Describe() const override { return policy_->Describe(); }
  uint32_t hooks() const override { return kAttemptEnd; }
  void OnAttemptEnd(const AttemptInfo& attempt, const CallResult& result) override;

  // Build() on the control loop only; the rest from any thread.
  lb::Policy& policy() const { return *policy_; }

 private:
  const std::unique_ptr<lb::Policy> policy_;
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYERS_BALANCER_LAYER_H_
