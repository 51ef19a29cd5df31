#include "meshlib/grpc/grpc_channel.h"

#include <nghttp2/nghttp2.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "meshlib/core/backoff.h"
#include "meshlib/core/deadline_context.h"
#include "meshlib/core/log.h"
#include "meshlib/core/sync.h"
#include "meshlib/grpc/session_io.h"
#include "meshlib/grpc/wire.h"
#include "meshlib/tls/tls_stream.h"
#include "meshlib/transport/byte_stream.h"
#include "meshlib/transport/socket.h"

namespace meshlib::grpc {

using client::CallCallback;
using client::CallHandle;
using client::CallOptions;
using client::CallResult;

namespace {

CallResult Failure(absl::Status status, bool not_processed) {
  CallResult r;
  r.status = std::move(status);
  r.not_processed = not_processed;
  return r;
}

// Windows we advertise: a 3 MiB message arrives without waiting for a
// WINDOW_UPDATE, and many streams share the connection's window.
constexpr int32_t kStreamWindow = 8 << 20;
constexpr int32_t kConnectionWindow = 32 << 20;
constexpr size_t kMaxResponseHeaders = 64;

}  // namespace

struct GrpcChannelShared {
  std::string address;
  transport::SocketAddress socket_address;
  client::ChannelOptions options;
  std::atomic<size_t> outstanding{0};
  std::atomic<int64_t> opened{0};
  std::atomic<int64_t> closed{0};
};

// One unary call. Shared by the caller's handle, the deadline timer and the
// connection that carries it; it completes exactly once, by whoever claims
// it first (the stream's end, the timer, Cancel, the connection's loss).
struct GrpcCall final : public client::Cancellable,
                         public std::enable_shared_from_this<GrpcCall> {
  // Immutable once submitted.
  std::string method;
  std::string path;
  std::string body;  // the framed request
  client::Metadata metadata;
  absl::Time deadline;
  absl::Duration timeout;
  // Shared, not borrowed: a handle may be cancelled after the channel is gone.
  std::shared_ptr<GrpcChannelShared> shared;
  std::weak_ptr<GrpcConnection> connection;
  runtime::EventLoop* loop = nullptr;
  runtime::TimerId timer;

  std::atomic<bool> claimed{false};
  CallCallback done;  // touched only by the claimer

  // Connection-loop state.
  int32_t stream_id = 0;
  bool headers_sent = false;
  size_t body_offset = 0;
  int http_status = 0;
  std::string content_type;
  bool has_grpc_status = false;
  absl::StatusCode code = absl::StatusCode::kUnknown;
  std::string message;
  std::string response;
  client::Metadata response_metadata;
  absl::Status local_failure;  // set when this side ends the stream (too large, bad metadata)

  bool Claim() { return !claimed.exchange(true, std::memory_order_acq_rel); }
  // Completes the call when nobody has yet; true if this did. The deadline
  // timer passes `from_timer` (it is over, and `timer` may still be being
  // set by the caller's thread).
  bool Complete(CallResult r, bool from_timer = false) {
    if (!Claim()) return false;
    if (!from_timer) loop->Cancel(timer);
    CallCallback cb = std::move(done);
    shared->outstanding.fetch_sub(1, std::memory_order_relaxed);
    cb(std::move(r));
    return true;
  }
  void Cancel() override;
};

class GrpcConnection final : public runtime::FdHandler,
                             public std::enable_shared_from_this<GrpcConnection> {
 public:
  enum State { kIdle, kConnecting, kReady, kBackoff, kClosed };

  GrpcConnection(std::shared_ptr<GrpcChannelShared> shared, runtime::EventLoop* loop,
                 uint64_t seed)
      : shared_(std::move(shared)), loop_(loop), backoff_(shared_->options.reconnect_backoff, seed) {}
  ~GrpcConnection() override { DeleteSession(); }

  runtime::EventLoop* loop() const { return loop_; }
  State state() const { return state_.load(std::memory_order_acquire); }

  // Entry points. Each takes the connection's lock for its work and runs
  // the callbacks of the calls it ended after releasing it.
  // Loop thread:
  void Submit(std::shared_ptr<GrpcCall> call);
  void Abandon(const std::shared_ptr<GrpcCall>& call);
  void StartConnecting();
  void Shutdown();
  void OnFdEvents(uint32_t events) override;
  // Any thread: submits and writes `call` on the calling thread when the
  // connection is ready (no hand-off to the reactor, which a blocking
  // caller would wait for); false when it is not, and the caller posts
  // Submit instead.
  bool TrySubmitNow(const std::shared_ptr<GrpcCall>& call);

 private:
  using Completions = std::vector<std::pair<std::shared_ptr<GrpcCall>, CallResult>>;
  static void RunAll(Completions batch) {
    for (auto& [call, result] : batch) call->Complete(std::move(result));
  }
  Completions TakeCompletions() {
    Completions out;
    out.swap(completions_);
    return out;
  }
  void Fail(const std::shared_ptr<GrpcCall>& call, CallResult r) {
    completions_.emplace_back(call, std::move(r));
  }
  // Runs `work` under mu_, then the callbacks of the calls it ended.
  template <typename Work>
  void Locked(Work work) {
    Completions done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      work();
      done = TakeCompletions();
    }
    RunAll(std::move(done));
  }

  // The rest runs with mu_ held.
  void SetState(State s) { state_.store(s, std::memory_order_release); }
  void SubmitLocked(std::shared_ptr<GrpcCall> call);
  void AbandonLocked(const std::shared_ptr<GrpcCall>& call);
  void ShutdownLocked();
  void StartConnectingLocked();
  void OnConnected();
  void StartSession(std::unique_ptr<transport::ByteStream> stream);
  void SubmitStream(std::shared_ptr<GrpcCall> call);
  void FailPending(const absl::Status& status, bool not_processed);
  void ConnectFailed(absl::Status status);
  void ConnectTimedOut();
  void HandshakeDone(absl::StatusOr<std::unique_ptr<tls::TlsStream>> s);
  // Ends the session: streams still open fail with `status`; queued calls
  // reconnect.
  void CloseSession(const absl::Status& status);
  void DeleteSession();
  // Runs the callbacks of calls ended so far with `lock` released.
  void ReadAvailable(std::unique_lock<std::mutex>& lock);
  void Flush();
  void ScheduleFlush();
  void MaybeFinishDraining();
  void FinishStream(GrpcCall* call, uint32_t error_code);

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                      void* user_data);
  static int OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                         const uint8_t* data, size_t len, void* user_data);
  static int OnStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                           void* user_data);
  static int OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);
  static int OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);
  static ssize_t ReadBody(nghttp2_session* session, int32_t stream_id, uint8_t* buf,
                          size_t length, uint32_t* data_flags, nghttp2_data_source* source,
                          void* user_data);

  const std::shared_ptr<GrpcChannelShared> shared_;
  runtime::EventLoop* const loop_;
  std::atomic<State> state_{kIdle};

  // Guards everything below: the reactor and callers' threads (TrySubmitNow)
  // take turns on the session. Never held while a call's callback runs.
  std::mutex mu_;
  core::Backoff backoff_;
  absl::Status last_error_;
  int fd_ = -1;  // while connecting
  runtime::TimerId connect_timer_;
  runtime::TimerId backoff_timer_;
  std::shared_ptr<tls::Handshake> handshake_;
  // The session's connection; closed (not destroyed) when the session ends,
  // since that may happen inside its own Read.
  std::unique_ptr<SessionIo> io_;
  nghttp2_session* session_ = nullptr;
  bool draining_ = false;  // GOAWAY received: no new streams on this session
  bool flush_scheduled_ = false;
  std::deque<std::shared_ptr<GrpcCall>> pending_;
  std::unordered_map<int32_t, std::shared_ptr<GrpcCall>> streams_;
  Completions completions_;  // ended under mu_, their callbacks run after it
  uint64_t session_generation_ = 0;
};

void GrpcCall::Cancel() {
  if (claimed.load(std::memory_order_acquire)) return;
  if (!Complete(Failure(absl::CancelledError(absl::StrCat("call to ", method, " on ",
                                                          shared->address, " cancelled")),
                        false))) {
    return;
  }
  // The connection's loop resets the stream, or drops the queued call.
  if (auto conn = connection.lock()) {
    std::shared_ptr<GrpcCall> self = shared_from_this();
    loop->Post([conn = std::move(conn), self = std::move(self)] { conn->Abandon(self); });
  }
}

// --- GrpcConnection: connecting ---

void GrpcConnection::StartConnecting() {
  Locked([&] { StartConnectingLocked(); });
}

void GrpcConnection::StartConnectingLocked() {
  if (state() != kIdle) return;
  SetState(kConnecting);
  absl::StatusOr<int> fd = transport::StartConnect(shared_->socket_address);
  if (!fd.ok()) {
    ConnectFailed(fd.status());
    return;
  }
  fd_ = *fd;
  if (absl::Status s = loop_->Watch(fd_, EPOLLOUT, this); !s.ok()) {
    close(fd_);
    fd_ = -1;
    ConnectFailed(s);
    return;
  }
  std::weak_ptr<GrpcConnection> weak = shared_from_this();
  connect_timer_ = loop_->RunAt(loop_->Now() + shared_->options.connect_timeout, [weak] {
    if (auto self = weak.lock()) self->Locked([&] { self->ConnectTimedOut(); });
  });
}

void GrpcConnection::ConnectTimedOut() {
  if (state() != kConnecting) return;
  if (handshake_) {
    handshake_->Cancel(absl::UnavailableError(
        absl::StrCat("TLS handshake with ", shared_->address, " did not finish within ",
                     absl::FormatDuration(shared_->options.connect_timeout))));
    return;
  }
  if (fd_ >= 0) {
    loop_->Unwatch(fd_);
    close(fd_);
    fd_ = -1;
  }
  ConnectFailed(absl::UnavailableError(
      absl::StrCat("connecting to ", shared_->address, " timed out after ",
                   absl::FormatDuration(shared_->options.connect_timeout))));
}

void GrpcConnection::OnConnected() {
  loop_->Unwatch(fd_);
  const int fd = fd_;
  fd_ = -1;
  if (absl::Status s = transport::FinishConnect(fd, shared_->address); !s.ok()) {
    close(fd);
    ConnectFailed(s);
    return;
  }
  transport::SetTcpNoDelay(fd);
  if (!shared_->options.tls) {
    StartSession(std::make_unique<transport::TcpStream>(fd, shared_->address));
    return;
  }
  std::weak_ptr<GrpcConnection> weak = shared_from_this();
  handshake_ = tls::Handshake::Start(
      loop_, fd, shared_->address, *shared_->options.tls, tls::Role::kClient,
      [weak](absl::StatusOr<std::unique_ptr<tls::TlsStream>> s) {
        if (auto self = weak.lock()) self->Locked([&] { self->HandshakeDone(std::move(s)); });
      },
      tls::kAlpnH2);
}

void GrpcConnection::HandshakeDone(absl::StatusOr<std::unique_ptr<tls::TlsStream>> s) {
  handshake_.reset();
  if (state() != kConnecting) return;  // shut down meanwhile
  if (!s.ok()) {
    ConnectFailed(s.status());
    return;
  }
  if ((*s)->peer_info().alpn != tls::kAlpnH2) {
    ConnectFailed(absl::UnavailableError(absl::StrCat(
        "TLS with ", shared_->address, ": the server did not agree to HTTP/2 (ALPN \"",
        (*s)->peer_info().alpn, "\"), which gRPC requires")));
    return;
  }
  StartSession(*std::move(s));
}

void GrpcConnection::ConnectFailed(absl::Status status) {
  loop_->Cancel(connect_timer_);
  last_error_ = absl::UnavailableError(
      absl::StrCat("cannot reach ", shared_->address, " (gRPC): ", status.message()));
  SetState(kBackoff);
  FailPending(last_error_, /*not_processed=*/true);
  std::weak_ptr<GrpcConnection> weak = shared_from_this();
  backoff_timer_ = loop_->RunAt(loop_->Now() + backoff_.Next(), [weak] {
    auto self = weak.lock();
    if (!self) return;
    self->Locked([&] {
      if (self->state() != kBackoff) return;
      self->SetState(kIdle);
      if (!self->pending_.empty()) self->StartConnectingLocked();
    });
  });
}

void GrpcConnection::FailPending(const absl::Status& status, bool not_processed) {
  std::deque<std::shared_ptr<GrpcCall>> pending;
  pending.swap(pending_);
  for (auto& call : pending) Fail(call, Failure(status, not_processed));
}

void GrpcConnection::StartSession(std::unique_ptr<transport::ByteStream> stream) {
  loop_->Cancel(connect_timer_);
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &GrpcConnection::OnHeader);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &GrpcConnection::OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &GrpcConnection::OnStreamClose);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &GrpcConnection::OnFrameRecv);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &GrpcConnection::OnFrameSend);
  nghttp2_option* opt = NewSessionOptions(/*server=*/false);
  const int rv = nghttp2_session_client_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    session_ = nullptr;
    ConnectFailed(absl::ResourceExhaustedError(
        absl::StrCat("HTTP/2 session: ", nghttp2_strerror(rv))));
    return;
  }
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 64 << 10},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings,
                          sizeof(settings) / sizeof(settings[0]));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  io_ = std::make_unique<SessionIo>(loop_, std::move(stream));
  if (absl::Status s = io_->Watch(this); !s.ok()) {
    DeleteSession();
    io_->Close();
    ConnectFailed(s);
    return;
  }
  draining_ = false;
  ++session_generation_;
  backoff_.Reset();
  shared_->opened.fetch_add(1, std::memory_order_relaxed);
  SetState(kReady);
  std::deque<std::shared_ptr<GrpcCall>> pending;
  pending.swap(pending_);
  for (auto& call : pending) SubmitStream(std::move(call));
  Flush();
  // A TLS stream may already hold the server's first bytes; the fd will
  // not say so.
  if (state() == kReady && io_->BufferedBytes() > 0) {
    loop_->Post([self = shared_from_this()] { self->OnFdEvents(EPOLLIN); });
  }
}

// --- GrpcConnection: calls ---

void GrpcConnection::Submit(std::shared_ptr<GrpcCall> call) {
  Locked([&] { SubmitLocked(std::move(call)); });
}

bool GrpcConnection::TrySubmitNow(const std::shared_ptr<GrpcCall>& call) {
  Completions done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state() != kReady || draining_ || !pending_.empty() || session_ == nullptr ||
        io_ == nullptr || io_->closed()) {
      return false;
    }
    SubmitStream(call);
    Flush();
    done = TakeCompletions();
  }
  RunAll(std::move(done));
  return true;
}

void GrpcConnection::SubmitLocked(std::shared_ptr<GrpcCall> call) {
  if (call->claimed.load(std::memory_order_acquire)) return;
  switch (state()) {
    case kReady:
      if (!draining_) {
        SubmitStream(std::move(call));
        ScheduleFlush();
        return;
      }
      [[fallthrough]];
    case kIdle:
    case kConnecting:
      if (pending_.size() >= shared_->options.max_queued_calls) {
        Fail(call, Failure(
            absl::ResourceExhaustedError(absl::StrCat(
                pending_.size(), " calls already wait for a connection to ", shared_->address)),
            true));
        return;
      }
      pending_.push_back(std::move(call));
      if (state() == kIdle) StartConnectingLocked();
      return;
    case kBackoff:
      Fail(call, Failure(last_error_, /*not_processed=*/true));
      return;
    case kClosed:
      Fail(call, Failure(absl::CancelledError(absl::StrCat("channel to ", shared_->address,
                                                               " shut down")),
                             true));
      return;
  }
}

void GrpcConnection::SubmitStream(std::shared_ptr<GrpcCall> call) {
  if (call->claimed.load(std::memory_order_acquire)) return;
  const std::string scheme = shared_->options.tls ? "https" : "http";
  const std::string timeout = EncodeTimeout(call->deadline - loop_->Now());
  std::vector<std::string> encoded;  // binary metadata values, kept alive for the submit
  encoded.reserve(call->metadata.size());
  std::vector<nghttp2_nv> nv;
  nv.reserve(8 + call->metadata.size());
  // Values that differ from call to call are never indexed: entering each
  // into HPACK's dynamic table would only evict the headers that repeat.
  auto add = [&nv](absl::string_view k, absl::string_view v, bool varies = false) {
    nv.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(k.data())),
                  reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), k.size(), v.size(),
                  static_cast<uint8_t>(varies ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE)});
  };
  add(":method", "POST");
  add(":scheme", scheme);
  add(":path", call->path);
  add(":authority", shared_->address);
  add("te", "trailers");
  add("content-type", "application/grpc");
  add("user-agent", "meshlib-grpc/1");
  add("grpc-timeout", timeout, /*varies=*/true);
  for (const auto& [k, v] : call->metadata) {
    if (IsReservedHeader(k)) continue;
    if (IsBinaryKey(k)) {
      encoded.push_back(EncodeBinaryValue(v));
      add(k, encoded.back(), /*varies=*/true);
    } else {
      add(k, v);
    }
  }
  nghttp2_data_provider body;
  body.source.ptr = call.get();
  body.read_callback = &GrpcConnection::ReadBody;
  const int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), &body,
                                            call.get());
  if (id < 0) {
    // NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE: this session has used up its
    // stream ids; finish it and carry on over a new one.
    if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE || id == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED) {
      draining_ = true;
      pending_.push_back(std::move(call));
      MaybeFinishDraining();
      return;
    }
    Fail(call, Failure(absl::InternalError(absl::StrCat(
                               "HTTP/2 request to ", shared_->address, ": ", nghttp2_strerror(id))),
                           true));
    return;
  }
  call->stream_id = id;
  streams_.emplace(id, std::move(call));
}

void GrpcConnection::Abandon(const std::shared_ptr<GrpcCall>& call) {
  Locked([&] { AbandonLocked(call); });
}

void GrpcConnection::AbandonLocked(const std::shared_ptr<GrpcCall>& call) {
  if (call->stream_id == 0) {
    auto it = std::find(pending_.begin(), pending_.end(), call);
    if (it != pending_.end()) pending_.erase(it);
    return;
  }
  auto it = streams_.find(call->stream_id);
  if (it == streams_.end() || it->second != call || session_ == nullptr) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
  ScheduleFlush();
}

void GrpcConnection::Shutdown() {
  Locked([&] { ShutdownLocked(); });
}

void GrpcConnection::ShutdownLocked() {
  if (state() == kClosed) return;
  const State before = state();
  SetState(kClosed);
  loop_->Cancel(connect_timer_);
  loop_->Cancel(backoff_timer_);
  if (handshake_) {
    handshake_->Cancel(absl::CancelledError("channel shut down"));
    handshake_.reset();
  }
  if (fd_ >= 0) {
    loop_->Unwatch(fd_);
    close(fd_);
    fd_ = -1;
  }
  const absl::Status cancelled =
      absl::CancelledError(absl::StrCat("channel to ", shared_->address, " shut down"));
  FailPending(cancelled, true);
  if (before == kReady) CloseSession(cancelled);
}

// --- GrpcConnection: I/O ---

void GrpcConnection::OnFdEvents(uint32_t events) {
  Completions done;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (state() == kConnecting && fd_ >= 0) {
      OnConnected();
    } else if (state() == kReady && io_ != nullptr && !io_->closed()) {
      if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ReadAvailable(lock);
      if (state() == kReady && (events & EPOLLOUT)) Flush();
    }
    done = TakeCompletions();
  }
  RunAll(std::move(done));
}

void GrpcConnection::ReadAvailable(std::unique_lock<std::mutex>& lock) {
  absl::Status s = io_->Read(session_, [&] {
    // Replies read so far are delivered now, without the lock: a callback
    // may call again (TrySubmitNow) or shut the channel down. If it did,
    // the stream is closed when Read looks again, and it stops.
    Completions batch = TakeCompletions();
    if (!batch.empty()) {
      lock.unlock();
      RunAll(std::move(batch));
      lock.lock();
    }
    if (draining_) MaybeFinishDraining();
  });
  if (!s.ok()) {
    if (state() == kReady) CloseSession(absl::UnavailableError(s.message()));
    return;
  }
  if (state() == kReady) Flush();
}

void GrpcConnection::ScheduleFlush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  std::weak_ptr<GrpcConnection> weak = shared_from_this();
  loop_->DeferToEndOfIteration([weak] {
    auto self = weak.lock();
    if (!self) return;
    self->Locked([&] {
      self->flush_scheduled_ = false;
      if (self->state() == kReady) self->Flush();
    });
  });
}

void GrpcConnection::Flush() {
  if (session_ == nullptr || io_ == nullptr || io_->closed()) return;
  absl::Status s = io_->Flush(session_);
  if (!s.ok()) {
    CloseSession(s);
    return;
  }
  // nghttp2 is done with the session (it sent GOAWAY after a protocol error
  // of the server's, or took the server's last word).
  if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_) &&
      !io_->WritePending()) {
    CloseSession(absl::UnavailableError(
        absl::StrCat("HTTP/2 session with ", shared_->address, " ended")));
    return;
  }
  MaybeFinishDraining();
}

void GrpcConnection::MaybeFinishDraining() {
  if (!draining_ || session_ == nullptr || !streams_.empty()) return;
  if (io_ != nullptr && io_->WritePending()) return;
  CloseSession(absl::UnavailableError(
      absl::StrCat("connection to ", shared_->address, " drained after GOAWAY")));
}

void GrpcConnection::DeleteSession() {
  if (session_ != nullptr) {
    nghttp2_session_del(session_);
    session_ = nullptr;
  }
}

void GrpcConnection::CloseSession(const absl::Status& status) {
  if (session_ == nullptr && (io_ == nullptr || io_->closed())) return;
  DeleteSession();
  if (io_ != nullptr) io_->Close();
  shared_->closed.fetch_add(1, std::memory_order_relaxed);
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, call] : streams) {
    // A stream whose HEADERS never left cannot have reached the server.
    Fail(call, Failure(status, /*not_processed=*/!call->headers_sent));
  }
  if (state() == kClosed) return;
  SetState(kIdle);
  if (!pending_.empty()) StartConnectingLocked();
}

// --- GrpcConnection: nghttp2 callbacks (no session changes beyond nghttp2's own) ---

int GrpcConnection::OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                             size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                             void* user_data) {
  auto* self = static_cast<GrpcConnection*>(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto it = self->streams_.find(frame->hd.stream_id);
  if (it == self->streams_.end()) return 0;
  GrpcCall* call = it->second.get();
  const absl::string_view k(reinterpret_cast<const char*>(name), namelen);
  const absl::string_view v(reinterpret_cast<const char*>(value), valuelen);
  if (k == ":status") {
    int status = 0;
    if (absl::SimpleAtoi(v, &status)) call->http_status = status;
  } else if (k == "content-type") {
    call->content_type.assign(v.data(), v.size());
  } else if (k == "grpc-status") {
    call->has_grpc_status = true;
    call->code = ParseStatusCode(v);
  } else if (k == "grpc-message") {
    call->message = PercentDecode(v);
  } else if (!IsReservedHeader(k)) {
    AddReceivedMetadata(&call->response_metadata, k, v, kMaxResponseHeaders);
  }
  return 0;
}

int GrpcConnection::OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                                const uint8_t* data, size_t len, void* user_data) {
  auto* self = static_cast<GrpcConnection*>(user_data);
  auto it = self->streams_.find(stream_id);
  if (it == self->streams_.end()) return 0;
  GrpcCall* call = it->second.get();
  if (!call->local_failure.ok()) return 0;
  const size_t limit = self->shared_->options.limits.max_frame_size + kMessagePrefix;
  if (call->response.size() + len > limit) {
    call->local_failure = absl::ResourceExhaustedError(absl::StrCat(
        "gRPC response from ", self->shared_->address, " exceeds the limit of ",
        self->shared_->options.limits.max_frame_size, " bytes"));
    call->response.clear();
    call->response.shrink_to_fit();
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
    return 0;
  }
  call->response.append(reinterpret_cast<const char*>(data), len);
  return 0;
}

int GrpcConnection::OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
  auto* self = static_cast<GrpcConnection*>(user_data);
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    // nghttp2 closes the streams above last_stream_id with REFUSED_STREAM
    // (not processed); the rest may finish. New calls wait for a new
    // connection.
    self->draining_ = true;
  }
  return 0;
}

int GrpcConnection::OnFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
  auto* self = static_cast<GrpcConnection*>(user_data);
  if (frame->hd.type == NGHTTP2_HEADERS) {
    auto it = self->streams_.find(frame->hd.stream_id);
    if (it != self->streams_.end()) it->second->headers_sent = true;
  }
  return 0;
}

ssize_t GrpcConnection::ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                                 uint32_t* data_flags, nghttp2_data_source* source, void*) {
  auto* call = static_cast<GrpcCall*>(source->ptr);
  const size_t n = std::min(length, call->body.size() - call->body_offset);
  std::memcpy(buf, call->body.data() + call->body_offset, n);
  call->body_offset += n;
  if (call->body_offset == call->body.size()) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

int GrpcConnection::OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                                  void* user_data) {
  auto* self = static_cast<GrpcConnection*>(user_data);
  auto it = self->streams_.find(stream_id);
  if (it == self->streams_.end()) return 0;
  std::shared_ptr<GrpcCall> call = std::move(it->second);
  self->streams_.erase(it);
  self->FinishStream(call.get(), error_code);
  return 0;
}

void GrpcConnection::FinishStream(GrpcCall* call, uint32_t error_code) {
  if (call->claimed.load(std::memory_order_acquire)) return;
  CallResult r;
  r.endpoint = shared_->address;
  const std::string& peer = shared_->address;
  if (!call->local_failure.ok()) {
    r.status = call->local_failure;
  } else if (call->has_grpc_status) {
    r.metadata = std::move(call->response_metadata);
    if (call->code == absl::StatusCode::kOk) {
      absl::StatusOr<std::string> m =
          ParseUnaryMessage(call->response, shared_->options.limits.max_frame_size);
      if (m.ok()) {
        r.payload = *std::move(m);
      } else {
        r.status = absl::Status(m.status().code(),
                                absl::StrCat("from ", peer, ": ", m.status().message()));
      }
    } else {
      r.status = absl::Status(call->code, call->message);
    }
  } else if (call->http_status != 0 && call->http_status != 200) {
    r.status = absl::Status(CodeForHttpStatus(call->http_status),
                            absl::StrCat("HTTP status ", call->http_status, " from ", peer,
                                         " without grpc-status"));
  } else if (error_code != NGHTTP2_NO_ERROR) {
    r.status = StatusForReset(error_code, peer, &r.not_processed);
    r.endpoint.clear();
  } else if (call->http_status == 200 && !absl::StartsWith(call->content_type, "application/grpc")) {
    r.status = absl::UnknownError(absl::StrCat("not a gRPC response from ", peer,
                                               " (content-type \"", call->content_type, "\")"));
  } else {
    r.status = absl::InternalError(
        absl::StrCat("gRPC stream from ", peer, " ended without grpc-status"));
  }
  if (!r.status.ok()) r.payload.clear();
  completions_.emplace_back(call->shared_from_this(), std::move(r));
}

// --- GrpcChannel ---

GrpcChannel::GrpcChannel(std::shared_ptr<GrpcChannelShared> shared) : shared_(std::move(shared)) {}

absl::StatusOr<std::unique_ptr<GrpcChannel>> GrpcChannel::Create(std::string address,
                                                                 client::ChannelOptions options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  absl::StatusOr<transport::SocketAddress> addr = transport::ParseHostPort(address);
  if (!addr.ok()) return addr.status();
  auto shared = std::make_shared<GrpcChannelShared>();
  shared->address = std::move(address);
  shared->socket_address = *addr;
  shared->options = std::move(options);
  std::unique_ptr<GrpcChannel> ch(new GrpcChannel(shared));
  auto rt = client::RuntimeFor(shared->options, "grpc-client-io");
  if (!rt.ok()) return rt.status();
  ch->runtime_ = *std::move(rt);
  uint64_t seed = shared->options.seed;
  if (seed == 0) seed = absl::HashOf(shared->address, absl::ToUnixNanos(absl::Now()));
  for (int i = 0; i < shared->options.connections; ++i) {
    ch->connections_.push_back(
        std::make_shared<GrpcConnection>(shared, &ch->runtime_->NextLoop(), seed + i));
  }
  return ch;
}

GrpcChannel::~GrpcChannel() {
  for (auto& c : connections_) c->loop()->RunAndWait([&] { c->Shutdown(); });
  for (auto& c : connections_) c->loop()->RunAndWait([] {});
}

void GrpcChannel::Shutdown() {
  for (auto& c : connections_) {
    if (c->loop()->InExecutorThread()) {
      c->Shutdown();
    } else if (runtime::EventLoop::Current() != nullptr) {
      c->loop()->Post([c] { c->Shutdown(); });
    } else {
      c->loop()->RunAndWait([&] { c->Shutdown(); });
    }
  }
}

const std::string& GrpcChannel::address() const { return shared_->address; }

int GrpcChannel::ReadyConnections() const {
  int n = 0;
  for (const auto& c : connections_) n += c->state() == GrpcConnection::kReady;
  return n;
}

bool GrpcChannel::Unreachable() const {
  for (const auto& c : connections_) {
    if (c->state() != GrpcConnection::kBackoff) return false;
  }
  return true;
}

size_t GrpcChannel::CallsOutstanding() const {
  return shared_->outstanding.load(std::memory_order_relaxed);
}

client::EndpointChannel::ConnectionCounts GrpcChannel::connection_counts() const {
  ConnectionCounts c;
  c.opened = shared_->opened.load(std::memory_order_relaxed);
  c.closed = shared_->closed.load(std::memory_order_relaxed);
  return c;
}

void GrpcChannel::Connect() {
  for (auto& c : connections_) {
    c->loop()->Post([c] { c->StartConnecting(); });
  }
}

CallHandle GrpcChannel::Call(absl::string_view method, absl::string_view request,
                             const CallOptions& options, CallCallback done) {
  // Round robin over the connections, preferring one that is ready.
  const size_t n = connections_.size();
  const uint32_t start = next_.fetch_add(1, std::memory_order_relaxed);
  const std::shared_ptr<GrpcConnection>* pick = &connections_[start % n];
  if ((*pick)->state() != GrpcConnection::kReady) {
    for (size_t i = 1; i < n; ++i) {
      const std::shared_ptr<GrpcConnection>& other = connections_[(start + i) % n];
      if (other->state() == GrpcConnection::kReady) {
        pick = &other;
        break;
      }
    }
  }
  const std::shared_ptr<GrpcConnection>& owner = *pick;
  runtime::EventLoop* const loop = owner->loop();
  if (request.size() > shared_->options.limits.max_frame_size) {
    done(Failure(absl::ResourceExhaustedError(absl::StrCat(
                     "request of ", request.size(), " bytes to ", method,
                     " exceeds the limit of ", shared_->options.limits.max_frame_size)),
                 true));
    return CallHandle();
  }
  auto call = std::make_shared<GrpcCall>();
  call->method.assign(method.data(), method.size());
  call->path = absl::StrCat("/", method);
  call->shared = shared_;
  call->loop = loop;
  absl::StatusOr<client::CallDeadline> when = client::DeadlineOfCall(
      options, shared_->options.default_timeout, loop->Now(), method, shared_->address);
  if (!when.ok()) {
    done(Failure(when.status(), true));
    return CallHandle();
  }
  call->deadline = when->deadline;
  call->timeout = when->timeout;
  call->metadata = options.metadata;
  for (auto& [k, v] : call->metadata) {
    // HTTP/2 header names are lowercase; meshlib's own metadata need not be.
    for (char& c : k) c = absl::ascii_tolower(static_cast<unsigned char>(c));
    if (!IsValidMetadataKey(k)) {
      done(Failure(absl::InvalidArgumentError(absl::StrCat(
                       "metadata key \"", absl::CHexEscape(k),
                       "\" is not a valid gRPC header name (lowercase letters, digits, '-', "
                       "'_', '.')")),
                   true));
      return CallHandle();
    }
  }
  call->body.reserve(kMessagePrefix + request.size());
  AppendMessage(&call->body, request);
  call->done = std::move(done);
  shared_->outstanding.fetch_add(1, std::memory_order_relaxed);
  call->connection = owner;
  std::weak_ptr<GrpcCall> weak = call;
  call->timer = loop->RunAtCoarse(call->deadline, [weak, owner] {  // see Channel
    auto c = weak.lock();
    if (!c) return;
    if (c->Complete(Failure(
            absl::DeadlineExceededError(absl::StrCat("deadline of ",
                                                     absl::FormatDuration(c->timeout),
                                                     " exceeded calling ", c->method, " on ",
                                                     c->shared->address, " (gRPC)")),
            false),
            /*from_timer=*/true)) {
      owner->Abandon(c);
    }
  });
  if (loop->InExecutorThread()) {
    owner->Submit(call);
  } else if (!owner->TrySubmitNow(call)) {
    loop->Post([owner, call] { owner->Submit(call); });
  }
  return CallHandle(std::move(call));
}

CallResult GrpcChannel::CallBlocking(absl::string_view method, absl::string_view request,
                                     const CallOptions& options) {
  if (std::optional<CallResult> refused = client::RefuseBlockingOnReactor(method)) {
    return *refused;
  }
  CallResult result;
  std::atomic<bool> ready{false};
  core::Notification done;
  CallHandle handle = Call(method, request, options, [&](CallResult r) {
    result = std::move(r);
    done.Notify();
    ready.store(true, std::memory_order_release);
  });
  const int64_t spin_until = absl::GetCurrentTimeNanos() +
                             absl::ToInt64Nanoseconds(shared_->options.blocking_spin);
  client::AwaitBlockingResult(ready, done, spin_until, options.interrupt_fd, handle);
  return result;
}

}  // namespace meshlib::grpc
