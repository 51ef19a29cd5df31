// EndpointState: one endpoint as a client sees it, for visibility
// (ServiceChannel::EndpointStates, mesh::Client::EndpointStates).
#ifndef MESHLIB_CLIENT_ENDPOINT_STATE_H_
#define MESHLIB_CLIENT_ENDPOINT_STATE_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace meshlib::client {

// One endpoint as the client sees it, for visibility.
struct EndpointState {
  std::string address;
  bool healthy = true;            // the balancer may pick it
  std::string outlier = "healthy";  // healthy, ejected or probation
  bool health_check_ok = true;    // true without active checks
  bool connected = false;         // has a ready connection now
  bool unreachable = false;       // its last connection attempts failed (in backoff)
  int64_t in_flight = 0;
  uint64_t calls = 0;
  uint64_t failures = 0;
  absl::Duration latency_ewma;
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_ENDPOINT_STATE_H_
