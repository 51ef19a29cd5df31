#include "meshlib/client/layers/breaker_layer.h"

#include "absl/strings/str_cat.h"

namespace meshlib::client {

std::string BreakerLayer::Describe() const {
  const resilience::CircuitBreakerOptions& cb = breaker_->options();
  return absl::StrCat("max_requests ", cb.max_requests, ", max_pending ", cb.max_pending,
                      ", max_retries ",
                      cb.max_retries == resilience::CircuitBreakerOptions::kNoRetryLimit
                          ? std::string("none (the retry budget bounds retries)")
                          : absl::StrCat(cb.max_retries));
}

}  // namespace meshlib::client
