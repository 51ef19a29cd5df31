// BreakerLayer: bounds what one client asks of a service at once
// (resilience::CircuitBreaker: requests, calls waiting for a connection,
// retries outstanding), refusing the excess at once as Envoy's circuit
// breakers do. Below retry and hedging, so that their extra attempts are
// counted too; above the balancer, so that a refused call picks nothing.
#ifndef MESHLIB_CLIENT_LAYERS_BREAKER_LAYER_H_
#define MESHLIB_CLIENT_LAYERS_BREAKER_LAYER_H_

#include <memory>
#include <string>

#include "meshlib/client/layer.h"
#include "meshlib/resilience/circuit_breaker.h"

namespace meshlib::client {

class BreakerLayer final : public Layer {
 public:
  explicit BreakerLayer(std::shared_ptr<resilience::CircuitBreaker> breaker)
      : breaker_(std::move(breaker)) {}
  absl::string_view role() const override { return "circuit breaker"; }
  std::string Describe() const override;
  uint32_t hooks() const override { return kAdmit; }
  absl::Status Admit(const CallInfo&) override { return breaker_->TryStartRequest(); }
  void Release() override { breaker_->EndRequest(); }

  resilience::CircuitBreaker& breaker() const { return *breaker_; }
  // Shared with the stack of a reload whose limits are the same.
  const std::shared_ptr<resilience::CircuitBreaker>& shared() const { return breaker_; }

 private:
  const std::shared_ptr<resilience::CircuitBreaker> breaker_;
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYERS_BREAKER_LAYER_H_
