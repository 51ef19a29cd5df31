// ServerSession: the server side of gRPC over HTTP/2, without I/O. It owns
// an nghttp2 server session, turns complete request streams into Requests
// (method from :path, grpc-timeout, metadata with "-bin" values decoded,
// the one message), answers malformed ones itself (405 for a method other
// than POST, 415 for a content-type that is not gRPC, INVALID_ARGUMENT
// for a bad grpc-timeout, INTERNAL or RESOURCE_EXHAUSTED for a bad or too
// large message, UNIMPLEMENTED for compression), and queues replies (a
// refused one as RST_STREAM REFUSED_STREAM). The caller moves bytes in and
// out (SessionIo on a reactor; a fuzzer from memory).
//
//   grpc::ServerSession::Callbacks cb;
//   cb.on_request = [&](grpc::ServerSession::Request r) { Serve(std::move(r)); };
//   cb.on_stream_closed = [&](int32_t id) { CancelIfRunning(id); };
//   auto s = grpc::ServerSession::Create(options, std::move(cb)).value();
//   nghttp2_session_mem_recv(s->session(), bytes, n);
//   s->DeliverReady();                    // outside nghttp2: runs on_request
//   s->Reply(id, absl::OkStatus(), {}, "answer", /*refused=*/false);
//
// nghttp2's protections are on: the rapid-reset limit (CVE-2023-44487),
// CONTINUATION frames per header block, SETTINGS per frame, and queued
// acknowledgements (SETTINGS and PING floods).
//
// Threading: one thread at a time (the connection's loop).
#ifndef MESHLIB_GRPC_SERVER_SESSION_H_
#define MESHLIB_GRPC_SERVER_SESSION_H_

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/transport/frame.h"

namespace meshlib::grpc {

class ServerSession {
 public:
  struct Options {
    // The largest request message accepted (bigger: RESOURCE_EXHAUSTED).
    size_t max_message = 16 << 20;
    // Request metadata entries kept; more are dropped.
    size_t max_metadata_entries = 64;
    // SETTINGS_MAX_CONCURRENT_STREAMS.
    uint32_t max_concurrent_streams = 1000;
  };
  struct Request {
    int32_t stream_id = 0;
    std::string method;  // ":path" without its leading '/'
    absl::Duration timeout = absl::InfiniteDuration();
    transport::Metadata metadata;
    std::string payload;
  };
  struct Callbacks {
    // A complete, well-formed request; answer it with Reply (now or later).
    absl::AnyInvocable<void(Request)> on_request;
    // The stream ended (answered, or reset by the client): a call still
    // running for it should be cancelled.
    absl::AnyInvocable<void(int32_t stream_id)> on_stream_closed;
  };

  static absl::StatusOr<std::unique_ptr<ServerSession>> Create(Options options,
                                                               Callbacks callbacks);
  ~ServerSession();
  ServerSession(const ServerSession&) = delete;
  ServerSession& operator=(const ServerSession&) = delete;

  nghttp2_session* session() { return session_; }

  // Runs on_request for the requests completed by the bytes fed so far.
  // Call after each nghttp2_session_mem_recv, outside nghttp2.
  void DeliverReady();

  // Answers stream `stream_id` (ignored when it is gone). `refused`: the call
  // never ran, sent as RST_STREAM REFUSED_STREAM so the client may retry it.
  void Reply(int32_t stream_id, const absl::Status& status, const transport::Metadata& md,
             absl::string_view payload, bool refused);

  // GOAWAY: streams opened so far are served, later ones are not.
  void GoAway(absl::string_view why);

  // nghttp2 has nothing more to read or write: the connection can close.
  bool Done() const;
  // Streams open (requests being received or served).
  size_t open_streams() const { return streams_.size(); }
  // Why this side ended the session with a GOAWAY carrying an error (the
  // client broke the protocol: garbage, oversized frames, floods); "" if it
  // did not.
  const std::string& protocol_error() const { return protocol_error_; }

 private:
  struct Stream;

  ServerSession(Options options, Callbacks callbacks);
  void Answer(int32_t id, int http_status);

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user_data);
  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                      void* user_data);
  static int OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                         const uint8_t* data, size_t len, void* user_data);
  static int OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);
  static int OnStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                           void* user_data);
  static int OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);
  static ssize_t ReadReply(nghttp2_session* session, int32_t stream_id, uint8_t* buf,
                           size_t length, uint32_t* data_flags, nghttp2_data_source* source,
                           void* user_data);

  const Options options_;
  Callbacks callbacks_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  std::vector<int32_t> ready_;   // requests complete, delivered by DeliverReady
  std::vector<int32_t> closed_;  // streams ended, reported by DeliverReady
  std::string protocol_error_;
};

}  // namespace meshlib::grpc

#endif  // MESHLIB_GRPC_SERVER_SESSION_H_
