#include "meshlib/client/layers/balancer_layer.h"

#include "meshlib/client/layers/endpoint_health_layer.h"

namespace meshlib::client {

void BalancerLayer::OnAttemptEnd(const AttemptInfo& attempt, const CallResult& result) {
  if (result.status.code() == absl::StatusCode::kCancelled) {
    attempt.stats->OnCallAbandoned(attempt.latency, attempt.end);  // a losing hedge
  } else {
    attempt.stats->OnCallEnd(attempt.latency, !IsEndpointFailure(result), attempt.end);
  }
}

}  // namespace meshlib::client
