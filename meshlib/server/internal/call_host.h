// The protocol-neutral half of a server connection (meshlib::server
// internals): the calls in flight on it and how a parsed request becomes a
// call (health checks, limits, authorization, deadlines, handlers).
// ServerConnection (meshlib's framing) and GrpcServerConnection (gRPC over
// HTTP/2) add the wire.
#ifndef MESHLIB_SERVER_INTERNAL_CALL_HOST_H_
#define MESHLIB_SERVER_INTERNAL_CALL_HOST_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/server/concurrency_limiter.h"
#include "meshlib/server/server.h"
#include "meshlib/transport/frame.h"

namespace meshlib::server {

// State shared by the server, its connections and its calls; it outlives the
// Server, so that a handler finishing a call after Shutdown is safe.
struct CallCounter {
  std::atomic<int64_t> active{0};
  // ServerStats.
  std::atomic<int64_t> calls{0};
  std::atomic<int64_t> rejected_expired{0};
  std::atomic<int64_t> shed{0};
  std::atomic<int64_t> health_checks{0};
  std::atomic<int64_t> connections_opened{0};
  std::atomic<int64_t> connections_closed{0};
  std::atomic<int64_t> tls_handshake_failures{0};
  // The adaptive concurrency limit; null when disabled. Here rather than in
  // the Server because calls release their slot when they finish, which may
  // be after the Server is gone.
  std::unique_ptr<ConcurrencyLimiter> limiter;
  // The methods' metrics (Server::Method points into them): here because a
  // call counts its outcome when it finishes, which may be after the
  // Server is gone. Filled at Start, before any call.
  std::vector<std::unique_ptr<ServerMethodMetrics>> method_metrics;
  // Finishing off the reactor touches the connection's loop; Shutdown flips
  // `loops_alive` (exclusively) before the loops may be destroyed.
  std::shared_mutex loops_mu;
  bool loops_alive = true;  // guarded by loops_mu
};

// Reply flags a host understands (transport::kFlagRefused: the call was
// refused before any handler ran; safe to retry elsewhere).
class CallHost {
 public:
  CallHost(Server* server, std::shared_ptr<CallCounter> counter, std::string peer_identity)
      : server_(server), counter_(std::move(counter)), peer_identity_(std::move(peer_identity)) {}
  virtual ~CallHost() = default;

  virtual runtime::EventLoop* host_loop() const = 0;
  virtual const std::string& host_peer() const = 0;
  virtual bool host_closed() const = 0;
  virtual std::shared_ptr<CallHost> host_self() = 0;
  // Sends a call's reply. Any thread.
  virtual void SendReply(uint32_t stream_id, uint16_t flags, const absl::Status& status,
                         const Metadata& md, absl::string_view payload) = 0;
  // Asks the client to send new calls elsewhere; calls in flight finish.
  // Any thread.
  virtual void SendGoAway(std::string why) = 0;
  // Closes the connection; calls in flight are cancelled. Any thread.
  virtual void CloseHost(absl::Status reason) = 0;

  const std::string& peer_identity() const { return peer_identity_; }

  // The call's reply has been queued (or dropped). `on_loop`: called on
  // this connection's reactor thread.
  void CallDone(uint32_t stream_id, bool on_loop);
  // Frees the call's slot under max_concurrent_streams. Called before the
  // reply is sent, so that the client's next request, which may arrive
  // before this call is forgotten on the reactor, finds the slot free.
  void ReleaseStream() { open_streams_.fetch_sub(1, std::memory_order_acq_rel); }

 protected:
  friend class ServerCall;
  // A parsed request on stream `id`, read at `arrival`, becomes a call (or
  // is answered at once). Loop thread.
  void Dispatch(uint32_t id, transport::Request req, absl::Time arrival);
  // Cancels every call in flight (the connection closed). Loop thread.
  void CancelAllCalls();
  // Cancels one call (the client cancelled it). Loop thread.
  void CancelCall(uint32_t id);
  bool HasCall(uint32_t id) const { return calls_.contains(id); }
  bool HasCalls() const { return !calls_.empty(); }
  // Cancels and answers the call when its deadline passes, unless it is
  // already finished. Loop thread.
  void ArmDeadline(const std::shared_ptr<ServerCall>& call);
  // DEADLINE_EXCEEDED for a sync call whose deadline passed before a worker
  // took it.
  static absl::Status ExpiredInQueue(const ServerCall& call, absl::Time now);
  uint32_t max_concurrent_streams() const;

  Server* const server_;
  const std::shared_ptr<CallCounter> counter_;
  const std::string peer_identity_;  // proved by TLS; "" without
  // Loop-thread state.
  absl::flat_hash_map<uint32_t, std::shared_ptr<ServerCall>> calls_;
  // Calls not yet finished on this connection (calls_ may lag behind).
  std::atomic<uint32_t> open_streams_{0};
  // The method of the last call dispatched here, and its name. Loop thread.
  const Server::Method* last_method_ = nullptr;
  std::string last_method_name_;
};

}  // namespace meshlib::server

#endif  // MESHLIB_SERVER_INTERNAL_CALL_HOST_H_
