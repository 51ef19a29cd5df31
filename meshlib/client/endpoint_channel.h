// EndpointChannel: calls to one endpoint, as a ServiceChannel uses them.
// client::Channel (TCP, meshlib's protocol) and grpc::GrpcChannel (gRPC
// over HTTP/2) are the implementations; tests and benchmarks plug in
// others (an in-memory transport) through
// ServiceChannelOptions::channel_factory.
//
// Threading: implementations are thread-safe.
#ifndef MESHLIB_CLIENT_ENDPOINT_CHANNEL_H_
#define MESHLIB_CLIENT_ENDPOINT_CHANNEL_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "meshlib/client/caller.h"

namespace meshlib::client {

class EndpointChannel : public Caller {
 public:
  virtual const std::string& address() const = 0;
  // One attempt of a call made with `call_options`; the attempt ends
  // `timeout` after `now`, a time its caller just read from its clock
  // (`call_options.timeout` and `.deadline` are not read). The default
  // makes the attempt's options and calls Call. client::Channel takes `now`
  // and `timeout` as they are: no clock reading, deadline computation or
  // copy of the options per attempt.
  virtual CallHandle CallAttempt(absl::Time now, absl::Duration timeout,
                                 absl::string_view method, absl::string_view request,
                                 const CallOptions& call_options, CallCallback done) {
    CallOptions attempt = call_options;
    attempt.timeout = timeout;
    attempt.deadline = now + timeout;
    return Call(method, request, attempt, std::move(done));
  }
  // Connections established right now.
  virtual int ReadyConnections() const = 0;
  // A call now would fail at once: every connection waits out a reconnect
  // backoff after a failed attempt.
  virtual bool Unreachable() const = 0;
  // Calls not yet completed; a channel with none can be closed without
  // failing a call.
  virtual size_t CallsOutstanding() const = 0;
  // Starts connecting now instead of at the first call.
  virtual void Connect() = 0;
  // Connections opened (connected) and closed since the channel was made.
  struct ConnectionCounts {
    int64_t opened = 0;
    int64_t closed = 0;
  };
  virtual ConnectionCounts connection_counts() const { return {}; }
  // Ends every call in flight with CANCELLED and refuses new ones: for an
  // owner going away while others may still hold the channel. Any thread.
  virtual void Shutdown() {}
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_ENDPOINT_CHANNEL_H_
