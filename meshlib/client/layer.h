// Layer: one job in a ServiceChannel's stack (fault injection, deadline,
// retry, hedging, circuit breaker, balancer, endpoint health, pool).
//
// ServiceChannel::Create composes the layers once, top to bottom (see
// BuildLayers in service_channel.cc, which says why each sits where it
// does); Describe() prints exactly that list. The call engine drives the
// decisions that shape a call (a fault's delay, a retry, a hedge, a pick)
// through each layer's own methods, and every layer can also take part in
// every call through the generic hooks below: a layer that admits or
// observes calls (a rate limiter, a metrics recorder) is one file and one
// line in BuildLayers.
//
//   class CountingLayer final : public Layer {
//    public:
//     absl::string_view role() const override { return "counting"; }
//     std::string Describe() const override { return "counts attempts"; }
//     uint32_t hooks() const override { return kAttemptEnd; }
//     void OnAttemptEnd(const AttemptInfo&, const CallResult&) override { ++n_; }
//    private:
//     std::atomic<uint64_t> n_{0};
//   };
//
// Threading: hooks run on the calling thread or a reactor thread, for many
// calls at once; they must be thread-safe and must not block.
#ifndef MESHLIB_CLIENT_LAYER_H_
#define MESHLIB_CLIENT_LAYER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/client/call_types.h"
#include "meshlib/lb/endpoint_stats.h"
#include "meshlib/resilience/outlier_detection.h"

namespace meshlib::client {

// A call as the layers see it when it starts.
struct CallInfo {
  absl::string_view method;
  const CallOptions* options = nullptr;
  absl::Time start;
  bool hedged = false;  // hedging applies to it
};

// One finished attempt of a call.
struct AttemptInfo {
  absl::string_view method;
  absl::Duration latency;
  absl::Time end;
  // The endpoint's load signals and outlier state (null without outlier
  // detection); `probe`: the attempt was its probation probe.
  lb::EndpointStats* stats = nullptr;
  resilience::OutlierDetector::Host* outlier = nullptr;
  bool probe = false;
  // The endpoint's address, as discovery gave it.
  absl::string_view endpoint;
  // 1 for the call's first attempt, then 2, 3, ... in the order sent
  // (retries and hedges alike).
  int number = 0;
  // The call's request metadata (its trace context among it); null when
  // not known.
  const Metadata* metadata = nullptr;
};

// A call that completed, as its caller hears of it.
struct CallEndInfo {
  absl::string_view method;
  absl::Duration latency;  // from the call's start, every attempt and wait included
  absl::Time end;
  // Attempts sent (0: refused before any was).
  int attempts = 0;
  // The call's request metadata; null when not known.
  const Metadata* metadata = nullptr;
};

class Layer {
 public:
  // Which generic hooks a layer takes part in (a bit set), so that the
  // engine calls only those that do.
  enum Hook : uint32_t {
    kAdmit = 1,       // Admit, and Release for every admitted call
    kAttemptEnd = 2,  // OnAttemptEnd
    kCallEnd = 4,     // OnCallEnd
  };

  virtual ~Layer() = default;
  // The layer's place in the stack, as Describe() prints it.
  virtual absl::string_view role() const = 0;
  // Its effective settings, in one line.
  virtual std::string Describe() const = 0;
  virtual uint32_t hooks() const { return 0; }

  // Before a call starts, in stack order. Not OK refuses the call with that
  // status (never sent: it may be retried elsewhere); layers above that
  // admitted it are released.
  virtual absl::Status Admit(const CallInfo& call) { return absl::OkStatus(); }
  // Once for every admitted call, when it has completed.
  virtual void Release() {}
  // After every attempt (answered, failed, or cancelled as a losing hedge).
  virtual void OnAttemptEnd(const AttemptInfo& attempt, const CallResult& result) {}
  // Once for every call this stack admitted or refused, when its caller is
  // told the outcome (right before).
  virtual void OnCallEnd(const CallEndInfo& call, const CallResult& result) {}
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYER_H_
