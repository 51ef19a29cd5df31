// GrpcServerConnection: a meshlib Server's connection from a gRPC client
// (meshlib::server internals). The server tells such a client apart by the
// HTTP/2 connection preface (plaintext) or by ALPN "h2" (TLS), and serves
// every registered method on it with the same handlers, deadlines
// (grpc-timeout), cancellation (RST_STREAM), limits and metrics as over
// meshlib's protocol; CallHost does all of that, this class only speaks
// HTTP/2 and gRPC's framing (grpc::ServerSession) on the reactor. docs/grpc.md describes the mapping.
//
// Threading: everything on the connection's loop thread, except the
// CallHost methods documented as any-thread (they post to the loop).
#ifndef MESHLIB_SERVER_INTERNAL_GRPC_SERVER_CONNECTION_H_
#define MESHLIB_SERVER_INTERNAL_GRPC_SERVER_CONNECTION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "meshlib/grpc/server_session.h"
#include "meshlib/grpc/session_io.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/server/internal/call_host.h"
#include "meshlib/transport/byte_stream.h"

namespace meshlib::server {

// The HTTP/2 client connection preface, which every gRPC client sends first.
inline constexpr char kHttp2Preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
inline constexpr size_t kHttp2PrefaceSize = sizeof(kHttp2Preface) - 1;

class GrpcServerConnection final : public runtime::FdHandler,
                                   public CallHost,
                                   public std::enable_shared_from_this<GrpcServerConnection> {
 public:
  struct Options {
    transport::FrameLimits limits;
    uint32_t max_concurrent_streams = 1000;
    absl::Duration idle_timeout = absl::Minutes(5);
  };

  GrpcServerConnection(Server* server, std::shared_ptr<CallCounter> counter,
                       runtime::EventLoop* loop, std::unique_ptr<transport::ByteStream> stream,
                       std::string peer_identity, Options options);
  ~GrpcServerConnection() override;

  // Starts the session (SETTINGS out, input watched). Loop thread.
  void Start();

  runtime::EventLoop* host_loop() const override { return loop_; }
  const std::string& host_peer() const override { return peer_; }
  bool host_closed() const override { return closed_.load(std::memory_order_acquire); }
  std::shared_ptr<CallHost> host_self() override { return shared_from_this(); }
  void SendReply(uint32_t stream_id, uint16_t flags, const absl::Status& status,
                 const Metadata& md, absl::string_view payload) override;
  void SendGoAway(std::string why) override;
  void CloseHost(absl::Status reason) override;

  void OnFdEvents(uint32_t events) override;

 private:
  void Close(const absl::Status& reason);
  void Reply(uint32_t id, uint16_t flags, const absl::Status& status, const Metadata& md,
             std::string payload);
  void Flush();
  void ScheduleFlush();
  void ScheduleIdleCheck();

  runtime::EventLoop* const loop_;
  const std::string peer_;
  const Options options_;
  std::atomic<bool> closed_{false};
  // Loop-thread state.
  grpc::SessionIo io_;
  std::unique_ptr<grpc::ServerSession> session_;
  bool flush_scheduled_ = false;
  bool goaway_sent_ = false;
  absl::Time last_read_;
  runtime::TimerId idle_timer_;
};

}  // namespace meshlib::server

#endif  // MESHLIB_SERVER_INTERNAL_GRPC_SERVER_CONNECTION_H_
