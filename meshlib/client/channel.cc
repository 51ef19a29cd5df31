#include "meshlib/client/channel.h"

#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "meshlib/core/deadline_context.h"
#include "meshlib/core/fast_time.h"
#include "meshlib/core/sync.h"
#include "meshlib/core/log.h"
#include "meshlib/tls/tls_stream.h"
#include "meshlib/transport/connection.h"
#include "meshlib/transport/socket.h"

namespace meshlib::client {

class ClientCall;
class ClientConnection;
class Subchannel;

// The subchannel whose reply is being delivered on this thread, if any.
static thread_local Subchannel* dispatching_subchannel = nullptr;
// While this thread reads a connection inline (see CallBlocking), the call it
// waits for. Other calls' replies read meanwhile go to the reactor to be
// delivered, so callbacks keep running on reactor threads.
static thread_local const ClientCall* inline_reader_call = nullptr;

// State of one call, shared by the caller's handle, the deadline timer and
// the connection. Whoever flips `completed` first delivers the result.
class ClientCall final : public Cancellable {
 public:
  void Cancel() override;
  std::string method;
  std::string address;
  absl::Duration timeout;
  absl::Time deadline;
  CallCallback done;
  runtime::EventLoop* loop = nullptr;
  runtime::TimerId timer;
  // Set by CallBlocking: the caller wants to read its reply itself.
  bool want_inline_read = false;
  // The caller's thread owns inline reading of the call's connection.
  std::atomic<bool> inline_reading{false};
  // Kept only while the call waits for a connection.
  std::string queued_request;
  Metadata queued_metadata;
  // Place in its connection's deadline list (ClientConnection::StartCall),
  // guarded by that connection's lock. A listed call has no timer of its own.
  ClientCall* deadline_prev = nullptr;
  ClientCall* deadline_next = nullptr;
  uint32_t listed_id = 0;  // its stream id, while listed
  bool listed = false;

  // Returns false if the call had already completed. Takes `result` by
  // reference: it is moved once, into the callback.
  bool Complete(CallResult&& result, bool from_timer = false) {
    if (completed_.exchange(true, std::memory_order_acq_rel)) return false;
    if (!from_timer && timer.valid()) loop->Cancel(timer);
    CallCallback cb = std::move(done);
    cb(std::move(result));
    return true;
  }
  bool completed() const { return completed_.load(std::memory_order_acquire); }

  // `conn`: the ClientConnection the call was sent on (held weakly as its
  // base, which costs no reference count taken and dropped per call).
  void SetWire(std::weak_ptr<transport::FramedConnection> conn, uint32_t stream_id) {
    std::lock_guard<core::SpinLock> lock(mu_);
    conn_ = std::move(conn);
    stream_id_ = stream_id;
  }
  // Forgets the call on its connection and tells the server to stop.
  void AbandonOnWire();
  // The connection the call was sent on, if it was sent.
  std::shared_ptr<ClientConnection> WireConnection();

 private:
  std::atomic<bool> completed_{false};
  // A spin lock: one is made per call, and it guards only the copy of a
  // weak pointer and an id (core::Mutex registers itself with its deadlock
  // detector on destruction, which costs more than the call).
  core::SpinLock mu_;
  std::weak_ptr<transport::FramedConnection> conn_;  // guarded by mu_
  uint32_t stream_id_ = 0;                // guarded by mu_
};

namespace {

CallResult Failure(absl::Status status, bool not_processed) {
  CallResult r;
  r.status = std::move(status);
  r.not_processed = not_processed;
  return r;
}

// What a call whose deadline passed ends with, whichever timer noticed.
CallResult DeadlinePassed(const ClientCall& c) {
  return Failure(absl::DeadlineExceededError(absl::StrCat("deadline of ",
                                                          absl::FormatDuration(c.timeout),
                                                          " exceeded calling ", c.method, " on ",
                                                          c.address)),
                 false);
}

// Gives a call a deadline timer of its own, on its loop: a call that waits
// for a connection, or one whose deadline does not fit its connection's list
// (see ClientConnection::StartCall). Coarse timers make arming and
// cancelling O(1), at a millisecond's precision. A call without a deadline
// needs none. The loop's lock is a leaf: this may run under other locks.
void ArmCallTimer(const std::shared_ptr<ClientCall>& call) {
  if (call->deadline == absl::InfiniteFuture()) return;
  std::weak_ptr<ClientCall> weak = call;
  call->timer = call->loop->RunAtCoarse(call->deadline, [weak] {
    auto c = weak.lock();
    if (!c) return;
    if (c->Complete(DeadlinePassed(*c), /*from_timer=*/true)) c->AbandonOnWire();
  });
}

}  // namespace

class Subchannel;

// Connections a channel opened and saw closed, shared with its connections
// (which can outlive it by a moment).
struct ConnectionCounters {
  std::atomic<int64_t> opened{0};
  std::atomic<int64_t> closed{0};
};

class ClientConnection final : public transport::FramedConnection {
 public:
  ClientConnection(std::shared_ptr<Subchannel> owner, runtime::EventLoop* loop,
                   std::unique_ptr<transport::ByteStream> stream,
                   transport::ConnectionOptions options,
                   std::shared_ptr<ConnectionCounters> counters, bool tls)
      : FramedConnection(loop, std::move(stream), options),
        owner_(owner),
        owner_raw_(owner.get()),
        counters_(std::move(counters)),
        tls_(tls) {
    counters_->opened.fetch_add(1, std::memory_order_relaxed);
  }

  std::shared_ptr<ClientConnection> self() {
    return std::static_pointer_cast<ClientConnection>(shared_from_this());
  }

  // Sends the call. On error nothing was sent (the caller fails the call).
  // `now`: the time the caller just read (the remaining time on the wire is
  // counted from it), or InfinitePast() to read it here.
  absl::Status StartCall(const std::shared_ptr<ClientCall>& call, absl::string_view request,
                         const Metadata& metadata, absl::Time now = absl::InfinitePast()) {
    if (now == absl::InfinitePast()) now = loop()->Now();
    absl::Duration remaining = core::TimeBetween(call->deadline, now);
    if (remaining <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "deadline of ", absl::FormatDuration(call->timeout), " exceeded calling ",
          call->method, " on ", call->address, " before it was sent"));
    }
    uint32_t id;
    absl::Time arm_at = absl::InfiniteFuture();
    {
      core::SpinLockHolder lock(&mu_);
      if (closed_ || goaway_) {
        return absl::UnavailableError(absl::StrCat("connection to ", peer(),
                                                   closed_ ? " is closed" : " is draining"));
      }
      do {
        id = next_stream_id_++;
        if (next_stream_id_ == 0) next_stream_id_ = 1;
      } while (pending_.contains(id));
      // The deadline: calls that leave in deadline order (nearly all: one
      // timeout per method, and the clock moves forward) join the
      // connection's list, watched by one timer for its head, instead of a
      // timer armed and cancelled per call. A call that waited for the
      // connection has its timer already; one that would jump the queue
      // gets its own, before anyone can see the call.
      if (!call->timer.valid() && call->deadline != absl::InfiniteFuture()) {
        if (deadline_tail_ == nullptr || call->deadline >= deadline_tail_->deadline) {
          LinkLocked(call.get(), id);
          if (call->deadline < deadline_timer_at_) {
            deadline_timer_at_ = call->deadline;
            arm_at = call->deadline;
          }
        } else {
          ArmCallTimer(call);
        }
      }
      pending_.emplace(id, call);
    }
    if (arm_at != absl::InfiniteFuture()) ArmDeadlineTimer(arm_at);
    call->SetWire(weak_from_this(), id);
    if (call->completed()) {  // the deadline fired meanwhile
      Forget(id);
      return absl::OkStatus();
    }
    // A blocking caller takes over reading before its request leaves, so
    // that even a reply faster than our return from Send is not read (and
    // handed over) by the reactor.
    if (call->want_inline_read && BeginInlineRead()) {
      call->inline_reading.store(true, std::memory_order_release);
    }
    absl::Status s = Send([&](std::string* out) {
      transport::AppendRequest(out, id, call->method, remaining, metadata, request);
    });
    if (!s.ok()) {
      Forget(id);
      if (call->inline_reading.exchange(false, std::memory_order_acq_rel)) EndInlineRead();
    }
    return s;
  }

  // Drops a call from the table; returns true if it was there.
  bool Forget(uint32_t id) {
    core::SpinLockHolder lock(&mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return false;
    UnlinkLocked(it->second.get());
    pending_.erase(it);
    MaybeCloseAfterGoAwayLocked();
    return true;
  }

  size_t pending_count() {
    core::SpinLockHolder lock(&mu_);
    return pending_.size();
  }

  void SendCancel(uint32_t id) {
    Send([&](std::string* out) { transport::AppendCancel(out, id); }).IgnoreError();
  }


 protected:
  void OnFrame(const transport::FrameView& frame) override;
  void OnClosed(const absl::Status& reason) override;

 private:
  void OnResponse(const transport::FrameView& frame);
  void OnGoAway(const transport::FrameView& frame);
  // The deadline list: calls in pending_ without a timer of their own, in
  // the order of their deadlines. Every call leaves it when it leaves
  // pending_, so its pointers stay valid.
  void LinkLocked(ClientCall* c, uint32_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    c->listed = true;
    c->listed_id = id;
    c->deadline_prev = deadline_tail_;
    c->deadline_next = nullptr;
    (deadline_tail_ != nullptr ? deadline_tail_->deadline_next : deadline_head_) = c;
    deadline_tail_ = c;
  }
  void UnlinkLocked(ClientCall* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!c->listed) return;
    (c->deadline_prev != nullptr ? c->deadline_prev->deadline_next : deadline_head_) =
        c->deadline_next;
    (c->deadline_next != nullptr ? c->deadline_next->deadline_prev : deadline_tail_) =
        c->deadline_prev;
    c->deadline_prev = c->deadline_next = nullptr;
    c->listed = false;
  }
  // A timer for the list's head, due at `at`. Timers are never cancelled:
  // one that finds nothing due re-arms for the head, if no earlier one will
  // run, and one that outlives the connection does nothing.
  void ArmDeadlineTimer(absl::Time at) {
    std::weak_ptr<transport::FramedConnection> weak = weak_from_this();
    loop()->RunAtCoarse(at, [weak, at] {
      if (auto conn = weak.lock()) static_cast<ClientConnection*>(conn.get())->ExpireDeadlines(at);
    });
  }
  // On the loop thread, from the timer due at `at`: ends the listed calls
  // whose deadline passed, and tells the server to stop working on them.
  void ExpireDeadlines(absl::Time at);
  void MaybeCloseAfterGoAwayLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (goaway_ && pending_.empty() && !closed_ && !close_posted_) {
      // Posted: closing runs OnClosed, which takes mu_.
      close_posted_ = true;
      loop()->Post([self = self()] {
        self->Close(absl::UnavailableError(
            absl::StrCat("connection to ", self->peer(), " drained after GOAWAY")));
      });
    }
  }

  const std::weak_ptr<Subchannel> owner_;
  Subchannel* const owner_raw_;  // identity only, for dispatching_subchannel
  const std::shared_ptr<ConnectionCounters> counters_;
  const bool tls_;
  // Held briefly by the caller starting a call and by the reactor reading
  // its reply (a map lookup), once each per call: a spin lock.
  core::SpinLock mu_;
  absl::flat_hash_map<uint32_t, std::shared_ptr<ClientCall>> pending_ ABSL_GUARDED_BY(mu_);
  uint32_t next_stream_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool goaway_ ABSL_GUARDED_BY(mu_) = false;
  bool close_posted_ ABSL_GUARDED_BY(mu_) = false;
  ClientCall* deadline_head_ ABSL_GUARDED_BY(mu_) = nullptr;  // earliest deadline
  ClientCall* deadline_tail_ ABSL_GUARDED_BY(mu_) = nullptr;
  // When the earliest list timer not yet run is due (InfiniteFuture: none).
  absl::Time deadline_timer_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  uint64_t unknown_replies_ = 0;  // loop thread
  std::atomic<bool> received_frame_{false};
};

void ClientCall::AbandonOnWire() {
  std::shared_ptr<ClientConnection> conn;
  uint32_t id;
  {
    std::lock_guard<core::SpinLock> lock(mu_);
    conn = std::static_pointer_cast<ClientConnection>(conn_.lock());
    id = stream_id_;
  }
  if (conn && conn->Forget(id)) conn->SendCancel(id);
}

std::shared_ptr<ClientConnection> ClientCall::WireConnection() {
  std::lock_guard<core::SpinLock> lock(mu_);
  return std::static_pointer_cast<ClientConnection>(conn_.lock());
}

void ClientCall::Cancel() {
  if (Complete(Failure(absl::CancelledError(absl::StrCat("call to ", method, " on ", address,
                                                         " cancelled by the caller")),
                       false))) {
    AbandonOnWire();
  }
}

// One pooled connection slot: connects, reconnects with backoff, queues
// calls while connecting.
class Subchannel : public std::enable_shared_from_this<Subchannel> {
 public:
  enum class State { kIdle, kConnecting, kReady, kBackoff, kShutdown };

  Subchannel(std::string address, transport::SocketAddress addr, const ChannelOptions& options,
             runtime::EventLoop* loop, uint64_t seed,
             std::shared_ptr<ConnectionCounters> counters)
      : address_(std::move(address)),
        addr_(addr),
        options_(WithoutRuntime(options)),
        loop_(loop),
        backoff_(options.reconnect_backoff, seed),
        watcher_(this),
        counters_(std::move(counters)) {}

  runtime::EventLoop* loop() const { return loop_; }
  bool ready() const { return state_view_.load(std::memory_order_acquire) == State::kReady; }
  bool in_backoff() const {
    return state_view_.load(std::memory_order_acquire) == State::kBackoff;
  }
  size_t CallsInFlight() {
    std::shared_ptr<ClientConnection> conn;
    {
      core::SpinLockHolder lock(&mu_);
      conn = conn_;
    }
    return conn ? conn->pending_count() : 0;
  }
  // In flight plus queued for a connection being set up.
  size_t CallsOutstanding() {
    std::shared_ptr<ClientConnection> conn;
    size_t queued;
    {
      core::SpinLockHolder lock(&mu_);
      conn = conn_;
      queued = queued_.size();
    }
    return queued + (conn ? conn->pending_count() : 0);
  }

  void RequestConnect() {
    core::SpinLockHolder lock(&mu_);
    if (state_ == State::kIdle) BeginConnectLocked();
  }

  // `now`: when the call's deadline was computed (see ClientConnection).
  void StartCall(const std::shared_ptr<ClientCall>& call, absl::string_view request,
                 const Metadata& metadata, absl::Time now) {
    std::shared_ptr<ClientConnection> conn;
    absl::Status fail;
    // A call that will wait for the connection keeps its own copy of the
    // request, made here rather than under the lock (a request may be
    // megabytes, and the reactor and other callers spin on that lock).
    std::string request_copy;
    Metadata metadata_copy;
    bool copied = false;
    if (!ready()) {
      request_copy.assign(request.data(), request.size());
      metadata_copy = metadata;
      copied = true;
    }
    {
      core::SpinLockHolder lock(&mu_);
      switch (state_) {
        case State::kReady:
          conn = conn_;
          break;
        case State::kIdle:
          BeginConnectLocked();
          [[fallthrough]];
        case State::kConnecting:
          if (queued_.size() >= options_.max_queued_calls) {
            fail = absl::ResourceExhaustedError(absl::StrCat(
                "max_queued_calls (", options_.max_queued_calls, ") calls already wait for ",
                "a connection to ", address_));
            break;
          }
          if (copied) {
            call->queued_request = std::move(request_copy);
            call->queued_metadata = std::move(metadata_copy);
          } else {  // the connection went away since the check above: rare
            call->queued_request.assign(request.data(), request.size());
            call->queued_metadata = metadata;
          }
          ArmCallTimer(call);  // before the queue can send it
          queued_.push_back(call);
          return;
        case State::kBackoff:
          fail = absl::UnavailableError(absl::StrCat(
              "no connection to ", address_, " (last error: ", last_error_.message(),
              "); reconnecting in ",
              absl::FormatDuration(absl::Ceil(next_attempt_ - loop_->Now(),
                                              absl::Milliseconds(1)))));
          break;
        case State::kShutdown:
          fail = absl::CancelledError(absl::StrCat("channel to ", address_, " is shut down"));
          break;
      }
    }
    if (conn) {
      absl::Status s = conn->StartCall(call, request, metadata, now);
      if (s.ok()) return;
      fail = std::move(s);
    }
    bool deadline = fail.code() == absl::StatusCode::kDeadlineExceeded;
    call->Complete(Failure(std::move(fail), /*not_processed=*/!deadline));
  }

  void Shutdown() {  // loop thread
    std::shared_ptr<ClientConnection> conn;
    std::vector<std::shared_ptr<ClientCall>> queued;
    {
      core::SpinLockHolder lock(&mu_);
      SetStateLocked(State::kShutdown);
      conn = std::move(conn_);
      queued.swap(queued_);
    }
    loop_->Cancel(timer_);
    CloseConnectFd();
    if (handshake_ != nullptr) {
      handshake_->Cancel(absl::CancelledError(absl::StrCat("channel to ", address_, " destroyed")));
      handshake_.reset();
    }
    if (conn) conn->Close(absl::CancelledError("channel destroyed"));
    for (auto& c : queued) {
      c->Complete(Failure(absl::CancelledError(absl::StrCat(
                              "channel to ", address_, " destroyed before the call was sent")),
                          true));
    }
  }

  // From the connection, on the loop thread. `worked` is true when the
  // connection ended gracefully (GOAWAY) or after exchanging frames: then the
  // next call reconnects at once. A connection that dies before any frame (a
  // server that accepts and closes) counts as a failed attempt and backs off,
  // so it cannot turn into a reconnect loop.
  void OnConnectionLost(ClientConnection* conn, const absl::Status& reason, bool worked) {
    core::SpinLockHolder lock(&mu_);
    if (conn_.get() != conn || state_ == State::kShutdown) return;
    conn_.reset();
    if (worked) {
      backoff_.Reset();
      SetStateLocked(State::kIdle);  // reconnect lazily, on the next call
    } else {
      EnterBackoffLocked(reason);
    }
  }

 private:
  static ChannelOptions WithoutRuntime(ChannelOptions o) {
    o.runtime.reset();
    return o;
  }

  class ConnectWatcher final : public runtime::FdHandler {
   public:
    explicit ConnectWatcher(Subchannel* sc) : sc_(sc) {}
    void OnFdEvents(uint32_t) override { sc_->OnConnectWritable(); }

   private:
    Subchannel* sc_;
  };

  void SetStateLocked(State s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    state_ = s;
    state_view_.store(s, std::memory_order_release);
  }

  void BeginConnectLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    SetStateLocked(State::kConnecting);
    loop_->Post([self = shared_from_this()] { self->ConnectOnLoop(); });
  }

  void ConnectOnLoop() {
    {
      core::SpinLockHolder lock(&mu_);
      if (state_ != State::kConnecting) return;
    }
    absl::StatusOr<int> fd = transport::StartConnect(addr_);
    if (!fd.ok()) {
      OnConnectFailed(fd.status());
      return;
    }
    connect_fd_ = *fd;
    absl::Status s = loop_->Watch(connect_fd_, EPOLLOUT, &watcher_);
    if (!s.ok()) {
      OnConnectFailed(s);
      return;
    }
    std::weak_ptr<Subchannel> weak = shared_from_this();
    timer_ = loop_->RunAfter(options_.connect_timeout, [weak] {
      if (auto self = weak.lock()) {
        self->OnConnectFailed(absl::DeadlineExceededError(
            absl::StrCat("connect to ", self->address_, " timed out after ",
                         absl::FormatDuration(self->options_.connect_timeout))));
      }
    });
  }

  void CloseConnectFd() {
    if (connect_fd_ < 0) return;
    loop_->Unwatch(connect_fd_);
    close(connect_fd_);
    connect_fd_ = -1;
  }

  void OnConnectWritable() {
    loop_->Cancel(timer_);
    int fd = connect_fd_;
    loop_->Unwatch(fd);
    connect_fd_ = -1;
    absl::Status s = transport::FinishConnect(fd, address_);
    if (!s.ok()) {
      close(fd);
      OnConnectFailed(s);
      return;
    }
    if (options_.tls != nullptr) {
      // The handshake comes first; calls stay queued until it is done.
      std::weak_ptr<Subchannel> weak = shared_from_this();
      handshake_ = tls::Handshake::Start(
          loop_, fd, address_, *options_.tls, tls::Role::kClient,
          [weak](absl::StatusOr<std::unique_ptr<tls::TlsStream>> r) {
            auto self = weak.lock();
            if (self == nullptr) return;  // the stream, if any, closes here
            self->handshake_.reset();
            if (!r.ok()) {
              self->OnConnectFailed(r.status());
              return;
            }
            self->OnTransportReady(*std::move(r));
          });
      return;
    }
    OnTransportReady(std::make_unique<transport::TcpStream>(fd, address_));
  }

  // A connected stream (TCP, or TLS after its handshake): the connection
  // starts, and the calls that waited for it go.
  void OnTransportReady(std::unique_ptr<transport::ByteStream> stream) {
    transport::ConnectionOptions copts;
    copts.limits = options_.limits;
    auto conn = std::make_shared<ClientConnection>(shared_from_this(), loop_, std::move(stream),
                                                   copts, counters_, options_.tls != nullptr);
    conn->Start();
    std::vector<std::shared_ptr<ClientCall>> queued;
    bool abandoned = false;
    {
      core::SpinLockHolder lock(&mu_);
      if (state_ != State::kConnecting) {
        abandoned = true;
      } else {
        conn_ = conn;
        SetStateLocked(State::kReady);
        queued.swap(queued_);
      }
    }
    if (abandoned) {
      conn->Close(absl::CancelledError("channel destroyed"));
      return;
    }
    for (auto& c : queued) {
      std::string req = std::move(c->queued_request);
      Metadata md = std::move(c->queued_metadata);
      absl::Status st = conn->StartCall(c, req, md);
      if (!st.ok()) {
        c->Complete(Failure(st, st.code() != absl::StatusCode::kDeadlineExceeded));
      }
    }
  }

  void OnConnectFailed(absl::Status status) {
    CloseConnectFd();
    loop_->Cancel(timer_);
    std::vector<std::shared_ptr<ClientCall>> queued;
    {
      core::SpinLockHolder lock(&mu_);
      if (state_ != State::kConnecting) return;
      queued.swap(queued_);
      EnterBackoffLocked(status);
    }
    core::Log(core::LogLevel::kDebug, absl::StrCat("subchannel ", address_, ": ",
                                                   status.message()));
    for (auto& c : queued) {
      c->Complete(Failure(absl::UnavailableError(status.message()), /*not_processed=*/true));
    }
  }

  void EnterBackoffLocked(absl::Status reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    SetStateLocked(State::kBackoff);
    last_error_ = std::move(reason);
    absl::Duration delay = backoff_.Next();
    next_attempt_ = loop_->Now() + delay;
    std::weak_ptr<Subchannel> weak = shared_from_this();
    timer_ = loop_->RunAfter(delay, [weak] {
      auto self = weak.lock();
      if (!self) return;
      core::SpinLockHolder lock(&self->mu_);
      if (self->state_ == State::kBackoff) self->BeginConnectLocked();
    });
  }

  const std::string address_;
  const transport::SocketAddress addr_;
  // A copy without the runtime: a subchannel kept alive by a queued task must
  // not keep the runtime (whose thread runs that task) alive.
  const ChannelOptions options_;
  runtime::EventLoop* const loop_;
  std::atomic<State> state_view_{State::kIdle};

  // Loop-thread state.
  core::Backoff backoff_;
  ConnectWatcher watcher_;
  const std::shared_ptr<ConnectionCounters> counters_;
  int connect_fd_ = -1;
  std::shared_ptr<tls::Handshake> handshake_;  // while a TLS handshake runs
  runtime::TimerId timer_;

  // Held for a state check on every call, briefly otherwise: a spin lock.
  core::SpinLock mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kIdle;
  std::shared_ptr<ClientConnection> conn_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<ClientCall>> queued_ ABSL_GUARDED_BY(mu_);
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  absl::Time next_attempt_ ABSL_GUARDED_BY(mu_);
};

// --- ClientConnection frame handling ---

void ClientConnection::OnFrame(const transport::FrameView& frame) {
  received_frame_.store(true, std::memory_order_relaxed);
  switch (static_cast<transport::FrameType>(frame.header.type)) {
    case transport::FrameType::kResponse:
      OnResponse(frame);
      return;
    case transport::FrameType::kGoAway:
      OnGoAway(frame);
      return;
    case transport::FrameType::kPing:
      return;  // answered by FramedConnection
    case transport::FrameType::kRequest:
    case transport::FrameType::kCancel:
      Close(absl::InvalidArgumentError(
          absl::StrCat("protocol error from ", peer(), ": ",
                       transport::FrameTypeName(frame.header.type), " frame sent to a client")));
      return;
  }
  core::Log(core::LogLevel::kWarning,
            absl::StrCat("skipping frame of unknown type ", frame.header.type, " (",
                         frame.header.length, " bytes) from ", peer()));
}

void ClientConnection::OnResponse(const transport::FrameView& frame) {
  std::shared_ptr<ClientCall> call;
  {
    core::SpinLockHolder lock(&mu_);
    auto it = pending_.find(frame.header.stream_id);
    if (it != pending_.end()) {
      call = std::move(it->second);
      UnlinkLocked(call.get());
      pending_.erase(it);
      MaybeCloseAfterGoAwayLocked();
    }
  }
  if (!call) {
    // A reply after the call's deadline or cancellation, or a bogus id:
    // safe to drop, since frame boundaries are intact.
    ++unknown_replies_;
    core::Log(core::LogLevel::kDebug,
              absl::StrCat("dropping reply for unknown stream ", frame.header.stream_id,
                           " from ", peer(), " (late or bogus; ", unknown_replies_,
                           " so far)"));
    return;
  }
  CallResult r;
  transport::ResponseView resp;
  resp.metadata = &r.metadata;
  if (absl::Status parsed = transport::ParseResponseBody(frame.body, options().limits, &resp);
      !parsed.ok()) {
    r.metadata.clear();
    r.status = absl::InternalError(absl::StrCat("malformed response from ", peer(), " to ",
                                                call->method, ": ", parsed.message()));
    core::Log(core::LogLevel::kWarning, r.status.message());
  } else {
    if (resp.code != absl::StatusCode::kOk) r.status = absl::Status(resp.code, resp.message);
    r.payload.assign(resp.payload.data(), resp.payload.size());
    r.not_processed = (frame.header.flags & transport::kFlagRefused) != 0;
    r.endpoint = call->address;
  }
  if (inline_reader_call != nullptr && inline_reader_call != call.get()) {
    loop()->Post([call = std::move(call), r = std::move(r), sc = owner_raw_]() mutable {
      Subchannel* outer = dispatching_subchannel;
      dispatching_subchannel = sc;
      call->Complete(std::move(r));
      dispatching_subchannel = outer;
    });
    return;
  }
  Subchannel* outer = dispatching_subchannel;
  dispatching_subchannel = owner_raw_;
  call->Complete(std::move(r));
  dispatching_subchannel = outer;
}

void ClientConnection::ExpireDeadlines(absl::Time at) {
  // Everything due by this timer's time is due, whatever the clock says now.
  const absl::Time now = std::max(at, loop()->Now());
  absl::InlinedVector<std::pair<uint32_t, std::shared_ptr<ClientCall>>, 4> expired;
  absl::Time arm_at = absl::InfiniteFuture();
  {
    core::SpinLockHolder lock(&mu_);
    // This timer, or an earlier one, has run.
    if (deadline_timer_at_ <= now) deadline_timer_at_ = absl::InfiniteFuture();
    while (deadline_head_ != nullptr && deadline_head_->deadline <= now) {
      ClientCall* c = deadline_head_;
      const uint32_t id = c->listed_id;
      UnlinkLocked(c);
      auto it = pending_.find(id);
      if (it != pending_.end()) {
        expired.emplace_back(id, std::move(it->second));
        pending_.erase(it);
      }
    }
    if (!expired.empty()) MaybeCloseAfterGoAwayLocked();
    if (deadline_head_ != nullptr && deadline_head_->deadline < deadline_timer_at_) {
      deadline_timer_at_ = deadline_head_->deadline;
      arm_at = deadline_timer_at_;
    }
  }
  if (arm_at != absl::InfiniteFuture()) ArmDeadlineTimer(arm_at);
  for (auto& [id, call] : expired) {
    if (call->Complete(DeadlinePassed(*call), /*from_timer=*/true)) SendCancel(id);
  }
}

void ClientConnection::OnGoAway(const transport::FrameView& frame) {
  absl::StatusOr<transport::GoAway> g = transport::ParseGoAwayBody(frame.body);
  if (!g.ok()) {
    Close(absl::InvalidArgumentError(
        absl::StrCat("protocol error from ", peer(), ": ", g.status().message())));
    return;
  }
  std::vector<std::shared_ptr<ClientCall>> unprocessed;
  {
    core::SpinLockHolder lock(&mu_);
    goaway_ = true;
    for (auto it = pending_.begin(); it != pending_.end();) {
      auto cur = it++;
      if (cur->first > g->last_stream_id) {
        UnlinkLocked(cur->second.get());
        unprocessed.push_back(std::move(cur->second));
        pending_.erase(cur);
      }
    }
  }
  core::Log(core::LogLevel::kDebug,
            absl::StrCat("GOAWAY from ", peer(), ": ", g->message,
                         "; moving new calls to a new connection"));
  if (auto owner = owner_.lock()) {
    owner->OnConnectionLost(this, absl::UnavailableError(g->message), /*worked=*/true);
  }
  for (auto& c : unprocessed) {
    c->Complete(Failure(absl::UnavailableError(absl::StrCat(
                            peer(), " is going away and did not process the call: ", g->message)),
                        true));
  }
  core::SpinLockHolder lock(&mu_);
  MaybeCloseAfterGoAwayLocked();
}

void ClientConnection::OnClosed(const absl::Status& reason) {
  absl::flat_hash_map<uint32_t, std::shared_ptr<ClientCall>> pending;
  {
    core::SpinLockHolder lock(&mu_);
    if (!closed_) counters_->closed.fetch_add(1, std::memory_order_relaxed);
    closed_ = true;
    for (auto& [id, call] : pending_) UnlinkLocked(call.get());
    pending.swap(pending_);
  }
  const bool answered = received_frame_.load(std::memory_order_relaxed);
  if (auto owner = owner_.lock()) owner->OnConnectionLost(this, reason, answered);
  // A TLS-only server closes a plaintext client before answering anything.
  const bool hint = !answered && !tls_ && reason.code() != absl::StatusCode::kCancelled &&
                    !absl::StrContains(reason.message(), "speaks TLS");
  absl::Status status =
      reason.code() == absl::StatusCode::kCancelled
          ? absl::CancelledError(absl::StrCat("call cancelled: ", reason.message()))
          : absl::UnavailableError(absl::StrCat(
                "connection to ", peer(), " lost: ", reason.message(),
                hint ? " before anything was answered (a TLS-only server does that to "
                       "plaintext clients: does the service need TLS settings?)"
                     : ""));
  for (auto& [id, call] : pending) call->Complete(Failure(status, false));
}

// --- Channel ---

absl::Status ChannelOptions::Validate() const {
  if (connections < 1 || connections > 64) {
    return absl::InvalidArgumentError("connections: must be between 1 and 64");
  }
  if (blocking_spin < absl::ZeroDuration() || blocking_spin > absl::Milliseconds(10)) {
    return absl::InvalidArgumentError("blocking_spin: must be between 0 and 10ms");
  }
  if (connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("connect_timeout: must be > 0");
  }
  if (default_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("default_timeout: must be > 0");
  }
  return reconnect_backoff.Validate();
}

Channel::Channel(std::string address, ChannelOptions options)
    : address_(std::move(address)),
      options_(std::move(options)),
      connection_counters_(std::make_shared<ConnectionCounters>()) {}

absl::StatusOr<std::unique_ptr<Channel>> Channel::Create(std::string address,
                                                         ChannelOptions options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  absl::StatusOr<transport::SocketAddress> addr = transport::ParseHostPort(address);
  if (!addr.ok()) return addr.status();
  std::unique_ptr<Channel> ch(new Channel(std::move(address), std::move(options)));
  auto rt = RuntimeFor(ch->options_, "client-io");
  if (!rt.ok()) return rt.status();
  ch->runtime_ = *std::move(rt);
  uint64_t seed = ch->options_.seed;
  if (seed == 0) {
    seed = absl::HashOf(ch->address_, absl::ToUnixNanos(absl::Now()));
  }
  for (int i = 0; i < ch->options_.connections; ++i) {
    ch->subchannels_.push_back(std::make_shared<Subchannel>(ch->address_, *addr, ch->options_,
                                                            &ch->runtime_->NextLoop(), seed + i,
                                                            ch->connection_counters_));
  }
  return ch;
}

Channel::ConnectionCounts Channel::connection_counts() const {
  ConnectionCounts c;
  c.opened = connection_counters_->opened.load(std::memory_order_relaxed);
  c.closed = connection_counters_->closed.load(std::memory_order_relaxed);
  return c;
}

Channel::~Channel() {
  for (auto& sc : subchannels_) {
    sc->loop()->RunAndWait([&] { sc->Shutdown(); });
  }
  // Let posted closes run before the subchannels (and maybe the runtime) go.
  for (auto& sc : subchannels_) sc->loop()->RunAndWait([] {});
}

void Channel::Shutdown() {
  const bool on_loop = runtime::EventLoop::Current() != nullptr;
  for (auto& sc : subchannels_) {
    if (on_loop && !sc->loop()->InExecutorThread()) {
      sc->loop()->Post([sc] { sc->Shutdown(); });
    } else {
      sc->loop()->RunAndWait([&] { sc->Shutdown(); });
    }
  }
}

std::optional<CallResult> RefuseBlockingOnReactor(absl::string_view method) {
  runtime::EventLoop* loop = runtime::EventLoop::Current();
  if (loop == nullptr) return std::nullopt;
  return Failure(
      absl::FailedPreconditionError(absl::StrCat(
          "blocking call to ", method, " on reactor thread ", loop->name(),
          " (inside a callback or an async handler): it would wait for a reply this thread "
          "has to read; use Call with a callback, or block on another thread")),
      /*not_processed=*/true);
}

void Channel::Connect() {
  for (auto& sc : subchannels_) sc->RequestConnect();
}

size_t Channel::CallsInFlightForTesting() const {
  size_t n = 0;
  for (const auto& sc : subchannels_) n += sc->CallsInFlight();
  return n;
}

size_t Channel::CallsOutstanding() const {
  size_t n = 0;
  for (const auto& sc : subchannels_) n += sc->CallsOutstanding();
  return n;
}

bool Channel::Unreachable() const {
  for (const auto& sc : subchannels_) {
    if (!sc->in_backoff()) return false;
  }
  return true;
}

int Channel::ReadyConnections() const {
  int n = 0;
  for (const auto& sc : subchannels_) n += sc->ready() ? 1 : 0;
  return n;
}

CallHandle Channel::Call(absl::string_view method, absl::string_view request,
                         const CallOptions& options, CallCallback done) {
  return StartCall(method, request, options, std::move(done), /*want_inline_read=*/false);
}

CallHandle Channel::CallAttempt(absl::Time now, absl::Duration timeout,
                                absl::string_view method, absl::string_view request,
                                const CallOptions& call_options, CallCallback done) {
  KnownDeadline known;
  known.now = now;
  known.deadline.deadline = core::TimePlus(now, timeout);
  known.deadline.timeout = timeout;
  return StartCall(method, request, call_options, std::move(done), /*want_inline_read=*/false,
                   &known);
}

CallHandle Channel::StartCall(absl::string_view method, absl::string_view request,
                              const CallOptions& options, CallCallback done,
                              bool want_inline_read, const KnownDeadline* known) {
  const size_t n = subchannels_.size();
  Subchannel* sc = nullptr;
  if (dispatching_subchannel != nullptr && n > 1) {
    // Called from a reply's callback (a pipeline issuing its next call): the
    // connection that carried the reply takes the call. Each connection
    // keeps its own pipeline, and the calls that one read batch triggers
    // leave in one write instead of one per connection.
    for (const auto& candidate : subchannels_) {
      if (candidate.get() == dispatching_subchannel && candidate->ready()) {
        sc = candidate.get();
        break;
      }
    }
  }
  uint32_t start = next_.fetch_add(1, std::memory_order_relaxed);
  if (sc == nullptr) sc = subchannels_[start % n].get();
  if (!sc->ready()) {
    for (size_t i = 1; i < n; ++i) {
      Subchannel* other = subchannels_[(start + i) % n].get();
      if (other->ready()) {
        sc = other;
        break;
      }
    }
  }
  auto call = std::make_shared<ClientCall>();
  call->method.assign(method.data(), method.size());
  call->address = address_;
  absl::Time now;
  if (known != nullptr) {
    now = known->now;
    call->deadline = known->deadline.deadline;
    call->timeout = known->deadline.timeout;
  } else {
    now = sc->loop()->Now();
    absl::StatusOr<CallDeadline> when =
        DeadlineOfCall(options, options_.default_timeout, now, method, address_);
    if (!when.ok()) {
      done(Failure(when.status(), /*not_processed=*/true));
      return CallHandle();
    }
    call->deadline = when->deadline;
    call->timeout = when->timeout;
  }
  call->done = std::move(done);
  call->want_inline_read = want_inline_read;
  call->loop = sc->loop();
  // The deadline is watched by the connection the call leaves on, or by a
  // timer of its own while it waits for one (Subchannel::StartCall).
  sc->StartCall(call, request, options.metadata, now);
  return CallHandle(std::move(call));
}

CallResult Channel::CallBlocking(absl::string_view method, absl::string_view request,
                                 const CallOptions& options) {
  if (std::optional<CallResult> refused = RefuseBlockingOnReactor(method)) return *refused;
  CallResult result;
  std::atomic<bool> ready{false};
  core::Notification done;
  const bool want_inline = options_.read_replies_inline && inline_reader_call == nullptr &&
                           runtime::EventLoop::Current() == nullptr;
  CallHandle handle = StartCall(
      method, request, options,
      [&](CallResult r) {
        result = std::move(r);
        done.Notify();
        // Last touch of this frame's locals: once `ready` is seen, the
        // caller may return without taking the notification's lock.
        ready.store(true, std::memory_order_release);
      },
      want_inline);
  const int64_t spin_until =
      absl::GetCurrentTimeNanos() + absl::ToInt64Nanoseconds(options_.blocking_spin);
  // Read the reply on this thread when the call could take over reading:
  // the reactor then neither wakes for it nor has to wake us, one thread
  // hand-off less per call.
  auto* call = static_cast<ClientCall*>(handle.cancellable().get());
  if (call != nullptr && call->inline_reading.load(std::memory_order_acquire)) {
    std::shared_ptr<ClientConnection> conn = call->WireConnection();
    inline_reader_call = call;
    while (conn && !ready.load(std::memory_order_acquire)) {
      if (absl::GetCurrentTimeNanos() < spin_until) {
        if (!conn->ReadInline(absl::ZeroDuration())) break;
        if (!ready.load(std::memory_order_acquire)) sched_yield();
      } else if (InterruptRequested(options.interrupt_fd)) {
        handle.Cancel();  // completes the call: `ready` follows
        break;
      } else if (!conn->ReadInline(absl::Milliseconds(1))) {
        break;  // closed: the close completes the call
      }
    }
    inline_reader_call = nullptr;
    if (conn) conn->EndInlineRead();
  }
  AwaitBlockingResult(ready, done, spin_until, options.interrupt_fd, handle);
  return result;
}

absl::StatusOr<CallDeadline> DeadlineOfCall(const CallOptions& options,
                                            absl::Duration default_timeout, absl::Time now,
                                            absl::string_view method, absl::string_view address) {
  CallDeadline out;
  out.timeout = options.timeout > absl::ZeroDuration() ? options.timeout : default_timeout;
  out.deadline = now + out.timeout;
  // The earlier of the call's own deadline, an explicit one, and the one of
  // the call this thread is serving.
  const absl::Time inherited = std::min(options.deadline, core::CurrentDeadline());
  if (inherited < out.deadline) {
    if (inherited <= now) {
      return absl::DeadlineExceededError(absl::StrCat(
          "deadline of the calling context passed ", absl::FormatDuration(now - inherited),
          " ago; ", method, " to ", address, " not sent"));
    }
    out.deadline = inherited;
    out.timeout = inherited - now;
  }
  return out;
}

absl::StatusOr<std::shared_ptr<runtime::Runtime>> RuntimeFor(const ChannelOptions& options,
                                                             std::string name) {
  if (options.runtime) return options.runtime;
  runtime::EventLoopOptions loop_options;
  loop_options.busy_poll = options.busy_poll;
  return runtime::Runtime::Create(options.io_threads, std::move(name), loop_options);
}

void AwaitBlockingResult(const std::atomic<bool>& ready, core::Notification& done,
                         int64_t spin_until, int interrupt_fd, CallHandle& handle) {
  // A loopback or same-rack reply often arrives within tens of microseconds.
  // Waiting for it for a short, bounded time without sleeping keeps this CPU
  // from going idle, so the reply's wake-up costs no inter-processor
  // interrupt to a halted (v)CPU, which on a VM costs more than the round
  // trip itself. Yielding, not spinning: a reactor or server thread that
  // shares this CPU runs at once.
  for (;;) {
    if (ready.load(std::memory_order_acquire)) return;
    if (absl::GetCurrentTimeNanos() >= spin_until) break;
    sched_yield();
  }
  if (interrupt_fd >= 0) {
    while (!done.WaitForNotificationWithTimeout(absl::Milliseconds(1))) {
      if (InterruptRequested(interrupt_fd)) handle.Cancel();
    }
  } else {
    done.WaitForNotification();
  }
  // The callback may still be between Notify and its store to `ready`.
  while (!ready.load(std::memory_order_acquire)) sched_yield();
}

}  // namespace meshlib::client
