// The types of a call, shared by every Caller (Channel, ServiceChannel, a
// mesh Client): its options, its result, and a handle that cancels it.
#ifndef MESHLIB_CLIENT_CALL_TYPES_H_
#define MESHLIB_CLIENT_CALL_TYPES_H_

#include <poll.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "meshlib/transport/frame.h"

namespace meshlib::client {

using transport::Metadata;

struct CallOptions {
  // How long the caller waits, from the call's start. Default: the channel's
  // default_timeout. The remaining time travels to the server.
  absl::Duration timeout = absl::ZeroDuration();
  // An absolute deadline on top of `timeout`: the call ends at the earlier of
  // the two. Pass an incoming call's deadline (server::ServerCall::deadline)
  // here when calling out from a thread where it is not installed. Calls made
  // while a handler runs take the handler's deadline by themselves (see
  // core::ScopedDeadline). A call whose deadline has already passed is not
  // sent: it fails at once with DEADLINE_EXCEEDED.
  absl::Time deadline = absl::InfiniteFuture();
  // Request metadata (key/value pairs), sent with the call.
  Metadata metadata;
  // For hash-based balancing (ring_hash, maglev): calls with the same key go
  // to the same endpoint while the set allows. See lb::Hash64 for keys made
  // of bytes. Ignored by a single Channel.
  uint64_t hash_key = 0;
  bool has_hash_key = false;
  // The call is safe to repeat (no effect beyond the first), so a
  // ServiceChannel with a retry policy may retry it on the policy's status
  // codes. Calls that provably never reached a handler are retried either
  // way. Ignored by a single Channel.
  bool idempotent = false;
  // Blocking calls only (CallBlocking): a descriptor that, once readable,
  // ends the call CANCELLED within about a millisecond, as Cancel on an
  // asynchronous call does. For callers that must stay interruptible while
  // they wait (a signal's wake-up descriptor, an eventfd); the caller
  // drains it. -1: none. Ignored by asynchronous calls.
  int interrupt_fd = -1;
};

// True when `fd` (an interrupt_fd) is readable; false for -1.
inline bool InterruptRequested(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

struct CallResult {
  absl::Status status;
  std::string payload;
  Metadata metadata;  // response metadata
  // Address of the endpoint that answered; empty when no reply was received
  // (connect failure, deadline, cancellation, lost connection).
  std::string endpoint;
  // The server (or this client) proves the request was never processed, so
  // it is safe to retry even when not idempotent: refused by the server
  // (draining, stream limit), never sent, or connection not established.
  bool not_processed = false;
};

using CallCallback = absl::AnyInvocable<void(CallResult)>;

// What a CallHandle cancels; implemented by each kind of call.
class Cancellable {
 public:
  virtual ~Cancellable() = default;
  // Completes the call with CANCELLED (if it has not completed) and stops
  // the work done for it (CANCEL to the server, attempts in flight).
  virtual void Cancel() = 0;
};

// Cancels one call. Copyable; a default-constructed handle does nothing.
class CallHandle {
 public:
  CallHandle() = default;
  explicit CallHandle(std::shared_ptr<Cancellable> call) : call_(std::move(call)) {}
  void Cancel() {
    if (call_) call_->Cancel();
  }
  // For implementations: the call this handle cancels.
  const std::shared_ptr<Cancellable>& cancellable() const { return call_; }

 private:
  std::shared_ptr<Cancellable> call_;
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_CALL_TYPES_H_
