#include "meshlib/transport/connection.h"

#include <poll.h>
#include <sys/epoll.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/core/log.h"

namespace meshlib::transport {
namespace {
constexpr size_t kReadChunk = 64 * 1024;
constexpr int kMaxReadsPerEvent = 8;  // fairness between connections of a loop
}  // namespace

FramedConnection::FramedConnection(runtime::EventLoop* loop,
                                   std::unique_ptr<ByteStream> stream,
                                   ConnectionOptions options)
    : loop_(loop), stream_(std::move(stream)), options_(options) {}

FramedConnection::~FramedConnection() = default;

namespace {

// TLS records (an alert, a handshake) where frames should be: the peer
// speaks TLS and this side does not.
bool LooksLikeTls(absl::string_view bytes) {
  return bytes.size() >= 3 && bytes[0] >= 0x14 && bytes[0] <= 0x17 && bytes[1] == 0x03 &&
         static_cast<uint8_t>(bytes[2]) <= 0x04;
}

constexpr char kTlsHint[] =
    " (the peer speaks TLS: does this side need TLS settings for it?)";

}  // namespace

void FramedConnection::Start() {
  loop_->Post([self = shared_from_this()] {
    if (self->closed()) return;
    self->last_read_time_ = self->loop_->Now();
    absl::Status s = self->loop_->Watch(self->stream_->fd(), EPOLLIN | EPOLLRDHUP, self.get());
    if (!s.ok()) {
      self->CloseOnLoop(s);
      return;
    }
    self->self_ = self;
    {
      core::MutexLock lock(&self->interest_mu_);
      self->watched_ = true;
    }
    core::MutexLock lock(&self->write_mu_);
    if (self->out_.size() > self->out_offset_ && !self->flush_scheduled_) {
      // Frames were queued before the stream was watched.
      self->flush_scheduled_ = true;
      self->loop_->DeferToEndOfIteration([self] { self->FlushFromLoop(); });
    }
  });
}

absl::Status FramedConnection::Send(absl::FunctionRef<void(std::string*)> encode) {
  core::MutexLock lock(&write_mu_);
  if (write_closed_) {
    return absl::UnavailableError(absl::StrCat("connection to ", peer(), " is closed"));
  }
  if (out_.size() - out_offset_ > options_.max_pending_write_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "connection to ", peer(), ": more than max_pending_write_bytes (",
        options_.max_pending_write_bytes, ") queued; the peer is not reading"));
  }
  encode(&out_);
  if (flush_scheduled_ || blocked_) return absl::OkStatus();
  if (loop_->InExecutorThread()) {
    // Coalesce: everything sent during this iteration leaves in one write.
    flush_scheduled_ = true;
    loop_->DeferToEndOfIteration(
        [self = shared_from_this()] { self->FlushFromLoop(); });
    return absl::OkStatus();
  }
  // Another thread: write now, saving a thread hop on the latency path.
  FlushLocked();
  return absl::OkStatus();
}

void FramedConnection::FlushLocked() {
  while (out_offset_ < out_.size()) {
    iovec iov{out_.data() + out_offset_, out_.size() - out_offset_};
    IoResult r = stream_->Write(&iov, 1);
    if (r.kind == IoResult::kOk) {
      out_offset_ += r.bytes;
      continue;
    }
    if (r.kind == IoResult::kWouldBlock) {
      if (!blocked_) {
        blocked_ = true;
        // The loop owns writing until the socket drains.
        loop_->Post([self = shared_from_this()] { self->UpdateInterest(true); });
      }
      return;
    }
    // Error: hand the close to the loop; nothing more can be written.
    write_closed_ = true;
    loop_->Post([self = shared_from_this(), err = r.error]() mutable {
      self->CloseOnLoop(std::move(err));
    });
    return;
  }
  out_.clear();
  out_offset_ = 0;
  if (out_.capacity() > 4 * kReadChunk) out_.shrink_to_fit();
}

void FramedConnection::FlushFromLoop() {
  core::MutexLock lock(&write_mu_);
  flush_scheduled_ = false;
  if (write_closed_ || close_done_) return;
  bool was_blocked = blocked_;
  blocked_ = false;
  FlushLocked();
  if (was_blocked && !blocked_) UpdateInterest(false);
}

uint32_t FramedConnection::InterestLocked() const {
  // While a caller reads inline, the reactor keeps only hang-up and error
  // events (and EPOLLOUT when it must), so a reply does not wake it too.
  return EPOLLRDHUP | (inline_reader_ ? 0u : uint32_t{EPOLLIN}) |
         (watching_write_ ? uint32_t{EPOLLOUT} : 0u);
}

void FramedConnection::UpdateInterest(bool want_write) {
  if (close_done_ || !self_) return;
  absl::Status s;
  {
    core::MutexLock lock(&interest_mu_);
    if (unwatched_ || watching_write_ == want_write) return;
    watching_write_ = want_write;
    s = loop_->Rewatch(stream_->fd(), InterestLocked());
  }
  if (!s.ok()) CloseOnLoop(s);
}

bool FramedConnection::BeginInlineRead() {
  if (runtime::EventLoop::Current() != nullptr) return false;  // never on a reactor
  core::MutexLock lock(&interest_mu_);
  if (inline_reader_ || unwatched_ || !watched_) return false;
  inline_reader_ = true;
  inline_fd_ = stream_->fd();
  if (!loop_->Rewatch(inline_fd_, InterestLocked()).ok()) {
    inline_reader_ = false;
    return false;
  }
  return true;
}

void FramedConnection::EndInlineRead() {
  core::MutexLock lock(&interest_mu_);
  inline_reader_ = false;
  // Level-triggered: bytes that arrived since the last inline read wake the
  // reactor at once.
  if (!unwatched_) loop_->Rewatch(inline_fd_, InterestLocked()).IgnoreError();
}

bool FramedConnection::ReadInline(absl::Duration timeout) {
  if (closed()) return false;
  // Unlocked on purpose: the fd may be closed meanwhile, which at worst wakes
  // us early; nothing is read from it unless the connection is still open.
  pollfd p{inline_fd_, POLLIN, 0};
  int ms = timeout <= absl::ZeroDuration()
               ? 0
               : static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(timeout, absl::Milliseconds(1))));
  // Bytes a TLS stream already holds do not show on the fd.
  if (stream_->BufferedBytes() == 0 && poll(&p, 1, ms) <= 0) return !closed();
  absl::Status status;
  {
    ReadLock lock(this);
    if (closed()) return false;
    status = ReadAndDispatchLocked();
  }
  if (!status.ok()) Close(std::move(status));  // posted: we are not the reactor
  return !closed();
}

void FramedConnection::OnFdEvents(uint32_t events) {
  auto keep = shared_from_this();
  if (events & EPOLLOUT) FlushFromLoop();
  if (close_done_) return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) HandleReadable();
}

void FramedConnection::HandleReadable() {
  absl::Status status;
  {
    ReadLock lock(this);
    if (closed()) return;
    status = ReadAndDispatchLocked();
  }
  if (!status.ok()) {
    CloseOnLoop(std::move(status));
    return;
  }
  if (close_done_) return;
  if (stream_->BufferedBytes() > 0) {
    // Read but not handed out (the read cap was reached inside a TLS
    // record): the socket will not wake us for it.
    loop_->Post([self = shared_from_this()] {
      if (!self->close_done_) self->HandleReadable();
    });
  }
  // What this batch of frames made us send (replies, or the next calls of
  // pipelined callers) leaves at the end of the iteration, with the writes
  // of every other connection served in it, right before the loop sleeps.
  // Sent back to back, they find the peer awake after the first: flushing
  // each connection right after its read batch instead let the peer go
  // back to sleep between them, and waking it again is the largest cost of
  // a write on a virtual machine (5-8% fewer calls/s through the mesh, 32 in
  // flight over 4 connections, pinned or not; benchmarks/README.md).
}

absl::Status FramedConnection::ReadAndDispatchLocked() {
  for (int i = 0; i < kMaxReadsPerEvent && !closed(); ++i) {
    // Make room: compact, then grow to fit the frame in progress.
    if (in_begin_ == in_end_) {
      in_begin_ = in_end_ = 0;
    }
    size_t needed = kReadChunk;
    size_t have = in_end_ - in_begin_;
    if (have >= kFrameHeaderSize) {
      uint32_t len;
      std::memcpy(&len, in_.data() + in_begin_ + 8, 4);
      len = __builtin_bswap32(len);
      if (len <= options_.limits.max_frame_size && kFrameHeaderSize + len > have) {
        needed = std::max(needed, kFrameHeaderSize + len - have);
      }
    }
    if (in_.size() - in_end_ < needed) {
      if (in_begin_ > 0) {
        std::memmove(in_.data(), in_.data() + in_begin_, have);
        in_begin_ = 0;
        in_end_ = have;
      }
      if (in_.size() - in_end_ < needed) in_.resize(in_end_ + needed);
    }
    IoResult r = stream_->Read(in_.data() + in_end_, in_.size() - in_end_);
    if (r.kind == IoResult::kWouldBlock) break;
    if (r.kind == IoResult::kEof) {
      // A close between frames is ordinary; inside one it is a broken peer.
      return have == 0 ? absl::UnavailableError(absl::StrCat("connection closed by ", peer()))
                       : absl::DataLossError(absl::StrCat(
                             "connection closed by ", peer(), " in the middle of a frame (",
                             have, " bytes of it received)",
                             LooksLikeTls(absl::string_view(in_.data() + in_begin_, have))
                                 ? kTlsHint
                                 : ""));
    }
    if (r.kind == IoResult::kError) return r.error;
    in_end_ += r.bytes;
    last_read_time_ = absl::Now();
    bool filled = in_end_ == in_.size();
    // Decode every whole frame in the buffer.
    while (!closed()) {
      FrameView frame;
      size_t used = 0;
      absl::string_view avail(in_.data() + in_begin_, in_end_ - in_begin_);
      absl::Status s = DecodeFrame(avail, options_.limits, &frame, &used);
      if (!s.ok()) {
        return absl::Status(s.code(), absl::StrCat("protocol error from ", peer(), ": ",
                                                   s.message(), LooksLikeTls(avail) ? kTlsHint : ""));
      }
      if (used == 0) break;
      in_begin_ += used;
      if (frame.header.type == static_cast<uint8_t>(FrameType::kPing)) AnswerPing(frame);
      OnFrame(frame);
    }
    if (!filled) break;  // the socket is drained
  }
  // Do not keep a large buffer around for an idle connection.
  if (in_begin_ == in_end_ && in_.size() > 4 * kReadChunk) {
    std::vector<char>().swap(in_);
    in_begin_ = in_end_ = 0;
  }
  return absl::OkStatus();
}

void FramedConnection::AnswerPing(const FrameView& frame) {
  // Either side answers a PING with the same 8 bytes; other sizes are ignored.
  if ((frame.header.flags & kFlagPingAck) != 0 || frame.body.size() != 8) return;
  uint64_t opaque = 0;
  for (char c : frame.body) opaque = (opaque << 8) | static_cast<uint8_t>(c);
  Send([&](std::string* out) { AppendPing(out, true, opaque); }).IgnoreError();
}

void FramedConnection::Close(absl::Status reason) {
  if (loop_->InExecutorThread()) {
    CloseOnLoop(std::move(reason));
    return;
  }
  loop_->Post([self = shared_from_this(), reason = std::move(reason)]() mutable {
    self->CloseOnLoop(std::move(reason));
  });
}

void FramedConnection::CloseOnLoop(absl::Status reason) {
  if (close_done_) return;
  close_done_ = true;
  closed_flag_.store(true, std::memory_order_release);
  {
    core::MutexLock lock(&write_mu_);
    write_closed_ = true;
    // Best effort: whatever is queued (a GOAWAY, final replies) goes out.
    while (out_offset_ < out_.size()) {
      iovec iov{out_.data() + out_offset_, out_.size() - out_offset_};
      IoResult r = stream_->Write(&iov, 1);
      if (r.kind != IoResult::kOk) break;
      out_offset_ += r.bytes;
    }
    out_.clear();
    out_offset_ = 0;
  }
  {
    // An inline reader must be off the stream before the fd is closed (its
    // number may be reused at once). Inside our own dispatch we hold it.
    const bool nested = reader_thread_.load(std::memory_order_acquire) == std::this_thread::get_id();
    if (!nested) read_mu_.Lock();
    {
      core::MutexLock lock(&interest_mu_);
      unwatched_ = true;
      if (self_) loop_->Unwatch(stream_->fd());
    }
    stream_->Close();
    if (!nested) read_mu_.Unlock();
  }
  auto keep = std::move(self_);
  OnClosed(reason);
}

}  // namespace meshlib::transport
