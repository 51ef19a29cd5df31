// SessionIo: moves bytes between an nghttp2 session and a ByteStream on a
// reactor, for both sides of gRPC (GrpcChannel's connections, and the
// server's GrpcServerConnection). nghttp2 does no I/O; this does it the way
// meshlib's own connections do: reads bounded per wake-up, output gathered
// and written in one go, EPOLLOUT watched only while the socket is full.
//
// Threading: loop thread only.
#ifndef MESHLIB_GRPC_SESSION_IO_H_
#define MESHLIB_GRPC_SESSION_IO_H_

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/transport/byte_stream.h"

namespace meshlib::grpc {

class SessionIo {
 public:
  SessionIo(runtime::EventLoop* loop, std::unique_ptr<transport::ByteStream> stream)
      : loop_(loop), stream_(std::move(stream)) {}
  ~SessionIo() { Close(); }

  // Starts watching the stream for input, with `handler` told of events.
  absl::Status Watch(runtime::FdHandler* handler);

  // Reads what the stream has (bounded, so one busy connection cannot
  // starve the others on the loop) and feeds it to `session`;
  // `after_chunk` runs after each chunk, outside nghttp2's callbacks. Not
  // OK: the connection is over (closed by the peer, lost, or a protocol
  // error), and the status says which.
  absl::Status Read(nghttp2_session* session, absl::FunctionRef<void()> after_chunk);

  // Sends what `session` has queued; watches EPOLLOUT while the socket is
  // full. Not OK: the connection is over.
  absl::Status Flush(nghttp2_session* session);

  // True while bytes wait for the socket to drain.
  bool WritePending() const { return out_offset_ != out_.size(); }
  // Bytes the stream holds that the fd will not signal (TLS).
  size_t BufferedBytes() { return stream_ ? stream_->BufferedBytes() : 0; }

  // Stops watching and closes the stream. Idempotent.
  void Close();
  bool closed() const { return stream_ == nullptr; }
  const std::string& peer() const { return peer_; }

 private:
  runtime::EventLoop* const loop_;
  std::unique_ptr<transport::ByteStream> stream_;
  std::string peer_ = stream_ ? stream_->peer() : std::string();
  bool watched_ = false;
  bool watching_out_ = false;
  std::string out_;
  size_t out_offset_ = 0;
};

}  // namespace meshlib::grpc

#endif  // MESHLIB_GRPC_SESSION_IO_H_
