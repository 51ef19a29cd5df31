// Channel: calls to one endpoint over a small pool of multiplexed connections.
//
// It connects with a timeout, reconnects with jittered exponential backoff,
// enforces per-call deadlines (DEADLINE_EXCEEDED; the call's state is freed at
// once and a late reply dropped), and supports cancellation, blocking and
// callback calls, and many calls in flight per connection. It is the bottom
// of the client stack: balancers and retries (later layers) hold one Channel
// per endpoint.
//
//   auto ch = client::Channel::Create("127.0.0.1:7001", client::ChannelOptions{}).value();
//   client::CallOptions opts;
//   opts.timeout = absl::Milliseconds(250);
//   client::CallResult r = ch->CallBlocking("Echo/Say", "hello", opts);
//   if (r.status.ok()) Use(r.payload);
//
//   client::CallHandle h = ch->Call("Echo/Say", "hi", opts, [](client::CallResult r) {
//     // runs on a reactor thread: do not block here
//   });
//   h.Cancel();  // completes the call with CANCELLED unless it already finished
//
// Threading: all methods are thread-safe. Callbacks run on the channel's
// reactor threads (or on the caller's thread when a call fails before it is
// sent) and must not block, nor destroy the channel that runs them.
#ifndef MESHLIB_CLIENT_CHANNEL_H_
#define MESHLIB_CLIENT_CHANNEL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/core/backoff.h"
#include "meshlib/core/sync.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/client/call_types.h"
#include "meshlib/client/caller.h"
#include "meshlib/client/endpoint_channel.h"
#include "meshlib/transport/frame.h"

namespace meshlib::tls {
class CredentialsWatcher;
}  // namespace meshlib::tls

namespace meshlib::client {

struct ChannelOptions {
  // Reactor threads when no runtime is given. Default 1.
  int io_threads = 1;
  // Share a runtime with other channels or a server; default: own one.
  std::shared_ptr<runtime::Runtime> runtime;
  // Reactor busy polling of the channel's own runtime (see
  // runtime::EventLoopOptions). Default off.
  absl::Duration busy_poll = absl::ZeroDuration();
  // TCP connections to the endpoint; calls spread over them round-robin.
  // Default 1; range 1-64.
  int connections = 1;
  // Giving up on one connection attempt. Default 2s.
  absl::Duration connect_timeout = absl::Seconds(2);
  // Used when CallOptions::timeout is zero. Default 30s.
  absl::Duration default_timeout = absl::Seconds(30);
  // Delays between failed connection attempts.
  core::BackoffOptions reconnect_backoff;
  // Calls queued while a connection is being set up, per connection; more
  // fail with RESOURCE_EXHAUSTED. Default 4096.
  size_t max_queued_calls = 4096;
  transport::FrameLimits limits;
  // Seed for reconnect jitter; 0 = from the address and time.
  uint64_t seed = 0;
  // TLS for every connection (tls/credentials.h): a handshake with the
  // credentials current at connect time, before any call is sent; one that
  // fails fails the waiting calls with UNAVAILABLE naming the reason. Null:
  // plaintext.
  std::shared_ptr<tls::CredentialsWatcher> tls;
  // How long CallBlocking waits for its reply without sleeping (yielding the
  // CPU to anything runnable) before it blocks. Keeps a fast reply from
  // paying a wake-up of an idle CPU, which on VMs costs tens of
  // microseconds, at the price of that much CPU per call. Default 50us;
  // zero disables.
  absl::Duration blocking_spin = absl::Microseconds(50);
  // Let a blocking call read its own reply from the connection instead of
  // waiting for the reactor to read it and wake it (one thread hand-off
  // less). Replies of other calls on that connection read meanwhile are
  // handed to the reactor, whose thread runs their callbacks as usual.
  // Default true.
  bool read_replies_inline = true;

  absl::Status Validate() const;
};

// A blocking call on a reactor thread (inside a callback, or an async
// handler) would wait for a reply that this very thread has to read: such a
// call gets FAILED_PRECONDITION at once instead of hanging. nullopt off
// reactor threads.
std::optional<CallResult> RefuseBlockingOnReactor(absl::string_view method);

// For implementations of EndpointChannel (Channel, grpc::GrpcChannel).
//
// When a call starting at `now` must end: its timeout (the channel's
// `default_timeout` when the call sets none), or earlier an explicit
// CallOptions::deadline or the deadline of the call this thread serves.
// DEADLINE_EXCEEDED, naming `method` and `address`, when that has passed.
struct CallDeadline {
  absl::Time deadline;
  absl::Duration timeout;  // deadline - now
};
absl::StatusOr<CallDeadline> DeadlineOfCall(const CallOptions& options,
                                            absl::Duration default_timeout, absl::Time now,
                                            absl::string_view method, absl::string_view address);
// The channel's own runtime when ChannelOptions::runtime is unset.
absl::StatusOr<std::shared_ptr<runtime::Runtime>> RuntimeFor(const ChannelOptions& options,
                                                             std::string name);
// The end of a blocking call: yields the CPU until `ready` or `spin_until`
// (ns, absl::GetCurrentTimeNanos), then sleeps on `done`, cancelling
// `handle` once `interrupt_fd` turns readable; returns with `ready` set.
void AwaitBlockingResult(const std::atomic<bool>& ready, core::Notification& done,
                         int64_t spin_until, int interrupt_fd, CallHandle& handle);

class Subchannel;
struct ConnectionCounters;

class Channel final : public EndpointChannel {
 public:
  static absl::StatusOr<std::unique_ptr<Channel>> Create(std::string address,
                                                         ChannelOptions options);
  // Calls still in flight complete with CANCELLED before this returns.
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  CallHandle Call(absl::string_view method, absl::string_view request,
                  const CallOptions& options, CallCallback done) override;
  CallResult CallBlocking(absl::string_view method, absl::string_view request,
                          const CallOptions& options = {}) override;
  // The attempt's deadline is `now` + `timeout`, as given (`now` must be a
  // reading of the wall clock, as the reactors' clock is).
  CallHandle CallAttempt(absl::Time now, absl::Duration timeout, absl::string_view method,
                         absl::string_view request, const CallOptions& call_options,
                         CallCallback done) override;

  const std::string& address() const override { return address_; }
  // Connections that are established right now.
  int ReadyConnections() const override;
  // Every connection's last attempt to connect failed and it waits out its
  // backoff: a call now would fail at once (gRPC's TRANSIENT_FAILURE).
  bool Unreachable() const override;
  // Calls sent and awaiting a reply, over all connections.
  size_t CallsInFlightForTesting() const;
  // Calls not yet completed: awaiting a reply, or queued while a connection
  // is set up. A channel with none can be destroyed without failing a call.
  size_t CallsOutstanding() const override;
  // Connections opened (TCP connected) and closed since the channel was made.
  ConnectionCounts connection_counts() const override;
  // Starts connecting now instead of at the first call.
  void Connect() override;
  // Closes every connection (calls in flight and queued end with
  // CANCELLED); later calls fail at once. Any thread; on a reactor thread
  // the closing is posted to the connections' loops.
  void Shutdown() override;

 private:
  Channel(std::string address, ChannelOptions options);
  // `known`: the call's start and deadline, when its caller computed them
  // (CallAttempt); null: computed here from `options` and the clock.
  struct KnownDeadline {
    absl::Time now;
    CallDeadline deadline;
  };
  CallHandle StartCall(absl::string_view method, absl::string_view request,
                       const CallOptions& options, CallCallback done, bool want_inline_read,
                       const KnownDeadline* known = nullptr);

  const std::string address_;
  const ChannelOptions options_;
  std::shared_ptr<runtime::Runtime> runtime_;
  std::vector<std::shared_ptr<Subchannel>> subchannels_;
  std::atomic<uint32_t> next_{0};
  const std::shared_ptr<ConnectionCounters> connection_counters_;
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_CHANNEL_H_
