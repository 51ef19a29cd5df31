#include "meshlib/grpc/session_io.h"

#include <sys/epoll.h>
#include <sys/uio.h>

#include "absl/strings/str_cat.h"

namespace meshlib::grpc {

namespace {
constexpr size_t kReadChunk = 64 << 10;
constexpr int kReadsPerWakeup = 16;
constexpr size_t kGatherLimit = 256 << 10;
}  // namespace

absl::Status SessionIo::Watch(runtime::FdHandler* handler) {
  absl::Status s = loop_->Watch(stream_->fd(), EPOLLIN, handler);
  watched_ = s.ok();
  return s;
}

absl::Status SessionIo::Read(nghttp2_session* session, absl::FunctionRef<void()> after_chunk) {
  char buf[kReadChunk];
  for (int round = 0; round < kReadsPerWakeup && stream_ != nullptr; ++round) {
    transport::IoResult r = stream_->Read(buf, sizeof(buf));
    if (r.kind == transport::IoResult::kWouldBlock) break;
    if (r.kind == transport::IoResult::kEof) {
      return absl::UnavailableError(absl::StrCat("connection closed by ", peer_));
    }
    if (r.kind == transport::IoResult::kError) {
      return absl::UnavailableError(absl::StrCat("connection to ", peer_, " lost: ",
                                                 r.error.message()));
    }
    const ssize_t n =
        nghttp2_session_mem_recv(session, reinterpret_cast<const uint8_t*>(buf), r.bytes);
    after_chunk();
    if (n < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP/2 protocol error from ", peer_, ": ", nghttp2_strerror(n)));
    }
    if (r.bytes < sizeof(buf) && stream_ != nullptr && stream_->BufferedBytes() == 0) break;
  }
  return absl::OkStatus();
}

absl::Status SessionIo::Flush(nghttp2_session* session) {
  if (stream_ == nullptr) return absl::UnavailableError("connection closed");
  for (;;) {
    // Gather what nghttp2 has to send, up to a bound, then write it at once.
    while (out_.size() - out_offset_ < kGatherLimit) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session, &data);
      if (n < 0) {
        return absl::InternalError(
            absl::StrCat("HTTP/2 to ", peer_, ": ", nghttp2_strerror(static_cast<int>(n))));
      }
      if (n == 0) break;
      if (out_offset_ > 0 && out_offset_ == out_.size()) {
        out_.clear();
        out_offset_ = 0;
      }
      out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    if (out_offset_ == out_.size()) break;
    iovec iov{const_cast<char*>(out_.data() + out_offset_), out_.size() - out_offset_};
    transport::IoResult r = stream_->Write(&iov, 1);
    if (r.kind == transport::IoResult::kOk) {
      out_offset_ += r.bytes;
      if (out_offset_ == out_.size()) {
        out_.clear();
        out_offset_ = 0;
      }
      continue;
    }
    if (r.kind == transport::IoResult::kWouldBlock) {
      if (!watching_out_ && watched_) {
        watching_out_ = true;
        (void)loop_->Rewatch(stream_->fd(), EPOLLIN | EPOLLOUT);
      }
      return absl::OkStatus();
    }
    return absl::UnavailableError(absl::StrCat(
        "connection to ", peer_, " lost: ",
        r.kind == transport::IoResult::kError ? r.error.message() : "closed"));
  }
  if (watching_out_) {
    watching_out_ = false;
    (void)loop_->Rewatch(stream_->fd(), EPOLLIN);
  }
  return absl::OkStatus();
}

void SessionIo::Close() {
  if (stream_ == nullptr) return;
  if (watched_) loop_->Unwatch(stream_->fd());
  watched_ = false;
  watching_out_ = false;
  stream_->Close();
  stream_.reset();
  out_.clear();
  out_offset_ = 0;
}

}  // namespace meshlib::grpc
