// FramedConnection: protocol frames over a ByteStream, driven by one EventLoop.
//
// The server's and the client's connections derive from it and implement
// OnFrame/OnClosed. It owns reading (decode, dispatch), writing (coalesced:
// frames sent during one reactor iteration leave in one syscall) and closing
// (exactly once, with a reason that is logged and handed to OnClosed). It
// answers PING frames itself (they are still passed to OnFrame).
//
//   class MyConn : public FramedConnection { ... OnFrame(...) override; ... };
//   auto c = std::make_shared<MyConn>(loop, std::move(stream), limits);
//   c->Start();
//   c->Send([&](std::string* out) { AppendPing(out, false, 42); });
//
// Threading: Send and Close are thread-safe. OnFrame and OnClosed run on the
// loop thread. The connection keeps itself alive while its fd is watched.
#ifndef MESHLIB_TRANSPORT_CONNECTION_H_
#define MESHLIB_TRANSPORT_CONNECTION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "meshlib/core/sync.h"
#include "absl/time/time.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/transport/byte_stream.h"
#include "meshlib/transport/frame.h"

namespace meshlib::transport {

struct ConnectionOptions {
  FrameLimits limits;
  // Bytes queued for writing beyond which Send fails with RESOURCE_EXHAUSTED
  // (a peer that stops reading must not grow memory without bound).
  // Default 64 MiB.
  size_t max_pending_write_bytes = 64u << 20;
};

class FramedConnection : public runtime::FdHandler,
                         public std::enable_shared_from_this<FramedConnection> {
 public:
  FramedConnection(runtime::EventLoop* loop, std::unique_ptr<ByteStream> stream,
                   ConnectionOptions options);
  ~FramedConnection() override;

  // Starts watching the stream. Call once; any thread.
  void Start();

  // Appends frames under the write lock via `encode` and schedules a flush.
  // Returns UNAVAILABLE if closed, RESOURCE_EXHAUSTED if the write queue is
  // over its limit (nothing is appended then).
  absl::Status Send(absl::FunctionRef<void(std::string*)> encode);

  // Closes the connection (once) with `reason`; any thread.
  void Close(absl::Status reason);

  bool closed() const { return closed_flag_.load(std::memory_order_acquire); }

  // Inline reads: a thread that blocks for a reply on this connection may
  // read it itself instead of having the reactor read it and wake the
  // thread: one thread hand-off less per call. While one thread reads
  // inline, the reactor stops watching for input; frames that arrive are
  // dispatched (OnFrame) on the reading thread. Not for reactor threads.
  // BeginInlineRead returns false if another thread already reads inline or
  // the connection is not (or no longer) watched; then just wait normally.
  bool BeginInlineRead();
  // Waits up to `timeout` (zero: just checks) for input and dispatches what
  // arrived. Returns false once the connection is closed.
  bool ReadInline(absl::Duration timeout);
  // Hands reading back to the reactor. Call once after a successful Begin.
  void EndInlineRead();
  runtime::EventLoop* loop() const { return loop_; }
  const std::string& peer() const { return stream_->peer(); }
  absl::Time last_read_time() const { return last_read_time_; }  // loop thread

 protected:
  // A whole frame. `frame.body` is valid only during the call.
  virtual void OnFrame(const FrameView& frame) = 0;
  // Exactly once, on the loop thread, after the stream is closed.
  virtual void OnClosed(const absl::Status& reason) = 0;

  const ConnectionOptions& options() const { return options_; }

 private:
  void OnFdEvents(uint32_t events) final;
  void HandleReadable();
  // Reads what is available and dispatches whole frames; a non-OK result is
  // the reason the connection must close.
  absl::Status ReadAndDispatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu_);
  uint32_t InterestLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(interest_mu_);

  // Holds read_mu_ and records the holder, so that a close started from
  // inside a dispatch does not wait for itself.
  class ABSL_SCOPED_LOCKABLE ReadLock {
   public:
    explicit ReadLock(FramedConnection* c) ABSL_EXCLUSIVE_LOCK_FUNCTION(c->read_mu_) : c_(c) {
      c_->read_mu_.Lock();
      c_->reader_thread_.store(std::this_thread::get_id(), std::memory_order_release);
    }
    ~ReadLock() ABSL_UNLOCK_FUNCTION() {
      c_->reader_thread_.store(std::thread::id(), std::memory_order_release);
      c_->read_mu_.Unlock();
    }

   private:
    FramedConnection* const c_;
  };
  void AnswerPing(const FrameView& frame);
  void FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void FlushFromLoop();
  void CloseOnLoop(absl::Status reason);
  void UpdateInterest(bool want_write);

  runtime::EventLoop* const loop_;
  const std::unique_ptr<ByteStream> stream_;
  const ConnectionOptions options_;
  std::atomic<bool> closed_flag_{false};

  // Loop-thread state.
  std::shared_ptr<FramedConnection> self_;  // set while watched
  bool close_done_ = false;

  // The read side: the reactor, or a thread reading inline.
  core::Mutex read_mu_;
  std::atomic<std::thread::id> reader_thread_{};
  std::vector<char> in_ ABSL_GUARDED_BY(read_mu_);
  size_t in_begin_ ABSL_GUARDED_BY(read_mu_) = 0;
  size_t in_end_ ABSL_GUARDED_BY(read_mu_) = 0;
  absl::Time last_read_time_;  // written under read_mu_; read on the loop by servers

  // What the reactor watches for.
  core::Mutex interest_mu_;
  bool watched_ ABSL_GUARDED_BY(interest_mu_) = false;
  bool unwatched_ ABSL_GUARDED_BY(interest_mu_) = false;
  bool watching_write_ ABSL_GUARDED_BY(interest_mu_) = false;
  bool inline_reader_ ABSL_GUARDED_BY(interest_mu_) = false;
  int inline_fd_ = -1;  // set by BeginInlineRead, read by the inline reader

  core::Mutex write_mu_;
  std::string out_ ABSL_GUARDED_BY(write_mu_);
  size_t out_offset_ ABSL_GUARDED_BY(write_mu_) = 0;
  bool write_closed_ ABSL_GUARDED_BY(write_mu_) = false;
  bool flush_scheduled_ ABSL_GUARDED_BY(write_mu_) = false;
  // The socket is full; the loop waits for EPOLLOUT and owns flushing.
  bool blocked_ ABSL_GUARDED_BY(write_mu_) = false;
};

}  // namespace meshlib::transport

#endif  // MESHLIB_TRANSPORT_CONNECTION_H_
