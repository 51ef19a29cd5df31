// GrpcChannel: unary gRPC calls to one endpoint over HTTP/2, on meshlib's
// own reactor (nghttp2 does the framing; it does no I/O of its own).
//
// It is an EndpointChannel, so a ServiceChannel puts the whole stack on top
// of it (discovery, balancing, retries, hedging, breakers, outlier
// detection) exactly as it does over client::Channel; the mesh picks it for
// services configured with "protocol": "grpc". Methods are gRPC paths
// without the leading slash ("Echo/Say" calls "/Echo/Say"); requests and
// replies are the message bytes as they are (no protobuf here).
//
//   auto ch = grpc::GrpcChannel::Create("127.0.0.1:50051", client::ChannelOptions{}).value();
//   client::CallResult r = ch->CallBlocking("Echo/Say", "hello", {});
//
// On the wire (docs/grpc.md): prior-knowledge cleartext HTTP/2, or TLS with
// ALPN "h2" when ChannelOptions::tls is set; grpc-timeout from the call's
// deadline; metadata both ways ("-bin" keys base64-encoded); the status
// from grpc-status and grpc-message, else from the HTTP status or the
// RST_STREAM code as gRPC maps them. A stream the server refused
// (REFUSED_STREAM, or above a GOAWAY's last stream id) and a call never
// sent end with not_processed set, so a retry layer may repeat them.
//
// Threading: as client::Channel. Callbacks run on the reactor threads (or
// on the caller's thread when the call fails before it is sent, or is
// cancelled) and must not block.
#ifndef MESHLIB_GRPC_GRPC_CHANNEL_H_
#define MESHLIB_GRPC_GRPC_CHANNEL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/client/call_types.h"
#include "meshlib/client/channel.h"
#include "meshlib/client/endpoint_channel.h"
#include "meshlib/runtime/event_loop.h"

namespace meshlib::grpc {

class GrpcConnection;
struct GrpcChannelShared;

class GrpcChannel final : public client::EndpointChannel {
 public:
  // Uses of ChannelOptions: runtime or io_threads, connections,
  // connect_timeout, default_timeout, reconnect_backoff, max_queued_calls,
  // limits.max_frame_size (the largest message either way), tls, seed.
  static absl::StatusOr<std::unique_ptr<GrpcChannel>> Create(std::string address,
                                                             client::ChannelOptions options);
  // Calls still in flight complete with CANCELLED before this returns.
  ~GrpcChannel() override;
  GrpcChannel(const GrpcChannel&) = delete;
  GrpcChannel& operator=(const GrpcChannel&) = delete;

  client::CallHandle Call(absl::string_view method, absl::string_view request,
                          const client::CallOptions& options, client::CallCallback done) override;
  client::CallResult CallBlocking(absl::string_view method, absl::string_view request,
                                  const client::CallOptions& options = {}) override;

  const std::string& address() const override;
  int ReadyConnections() const override;
  bool Unreachable() const override;
  size_t CallsOutstanding() const override;
  void Connect() override;
  void Shutdown() override;
  ConnectionCounts connection_counts() const override;

 private:
  GrpcChannel(std::shared_ptr<GrpcChannelShared> shared);

  const std::shared_ptr<GrpcChannelShared> shared_;
  std::shared_ptr<runtime::Runtime> runtime_;
  std::vector<std::shared_ptr<GrpcConnection>> connections_;
  std::atomic<uint32_t> next_{0};
};

}  // namespace meshlib::grpc

#endif  // MESHLIB_GRPC_GRPC_CHANNEL_H_
