#include "meshlib/server/server.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <shared_mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/admin/admin_server.h"
#include "meshlib/admin/live.h"
#include "meshlib/core/deadline_context.h"
#include "meshlib/core/log.h"
#include "meshlib/core/sync.h"
#include "meshlib/core/trace_context.h"
#include "meshlib/server/internal/call_host.h"
#include "meshlib/server/internal/grpc_server_connection.h"
#include "meshlib/tls/credentials.h"
#include "meshlib/tls/tls_stream.h"
#include "meshlib/transport/connection.h"
#include "meshlib/transport/socket.h"
#include "nlohmann/json.hpp"

namespace meshlib::server {

using transport::FrameType;
using transport::FrameView;

class ServerConnection final : public transport::FramedConnection, public CallHost {
 public:
  ServerConnection(Server* server, std::shared_ptr<CallCounter> counter,
                   runtime::EventLoop* loop, std::unique_ptr<transport::ByteStream> stream,
                   transport::ConnectionOptions options, std::string peer_identity)
      : FramedConnection(loop, std::move(stream), options),
        CallHost(server, std::move(counter), std::move(peer_identity)) {}

  std::shared_ptr<ServerConnection> self() {
    return std::static_pointer_cast<ServerConnection>(shared_from_this());
  }

  runtime::EventLoop* host_loop() const override { return loop(); }
  const std::string& host_peer() const override { return peer(); }
  bool host_closed() const override { return closed(); }
  std::shared_ptr<CallHost> host_self() override { return self(); }
  void CloseHost(absl::Status reason) override { Close(std::move(reason)); }

  void StartIdleCheck(absl::Duration idle_timeout) {
    idle_timeout_ = idle_timeout;
    goaway_grace_ = std::min(idle_timeout, absl::Seconds(1));
    ScheduleIdleCheck();
  }

  // Asks the client to send new calls elsewhere. Any thread. Calls that
  // cross the GOAWAY on the wire are still served (the frame promises every
  // stream id), so none is lost to the race; the connection closes once it
  // is quiet.
  void SendGoAway(std::string why) override {
    auto send = [self = self(), why = std::move(why)] {
      if (self->goaway_sent_ || self->closed()) return;
      self->goaway_sent_ = true;
      self->Send([&](std::string* out) {
        transport::AppendGoAway(out, /*last_stream_id=*/0xffffffffu,
                                absl::StatusCode::kUnavailable, why);
      }).IgnoreError();
    };
    if (loop()->InExecutorThread()) {
      send();
    } else {
      loop()->Post(std::move(send));
    }
  }

  void SendReply(uint32_t stream_id, uint16_t flags, const absl::Status& status,
                 const Metadata& md, absl::string_view payload) override {
    absl::Status s = Send([&](std::string* out) {
      transport::AppendResponse(out, stream_id, flags, status.code(), status.message(), md,
                                payload);
    });
    if (!s.ok() && !closed()) {
      core::Log(core::LogLevel::kWarning,
                absl::StrCat("reply on stream ", stream_id, " to ", peer(), " dropped: ",
                             s.ToString()));
    }
  }

 protected:
  void OnFrame(const FrameView& frame) override {
    switch (static_cast<FrameType>(frame.header.type)) {
      case FrameType::kRequest:
        OnRequest(frame);
        return;
      case FrameType::kCancel:
        // A cancel racing with our reply is normal: unknown ids are ignored.
        CancelCall(frame.header.stream_id);
        return;
      case FrameType::kPing:
        return;  // answered by FramedConnection
      case FrameType::kGoAway:
        return;  // the client is going away; its calls finish as usual
      case FrameType::kResponse:
        Close(absl::InvalidArgumentError(absl::StrCat(
            "protocol error from ", peer(), ": RESPONSE frame sent to a server")));
        return;
    }
    // Unknown frame type: its length is trustworthy, so skip just this frame.
    core::Log(core::LogLevel::kWarning,
              absl::StrCat("skipping frame of unknown type ", frame.header.type, " (",
                           frame.header.length, " bytes) from ", peer()));
  }

  void OnClosed(const absl::Status& reason) override {
    // Clients come and go: only a misbehaving one is worth a warning.
    core::LogLevel level = reason.code() == absl::StatusCode::kUnavailable ||
                                   reason.code() == absl::StatusCode::kCancelled
                               ? core::LogLevel::kDebug
                               : core::LogLevel::kWarning;
    core::Log(level, absl::StrCat("closed connection from ", peer(), ": ", reason.ToString()));
    CancelAllCalls();
    loop()->Cancel(idle_timer_);
    server_->OnConnectionClosed(this);
  }

 private:
  void ScheduleIdleCheck() {
    std::weak_ptr<ServerConnection> weak = self();
    absl::Duration period = std::max(idle_timeout_ / 4, absl::Milliseconds(10));
    idle_timer_ = loop()->RunAfter(period, [weak] {
      auto self = weak.lock();
      if (!self || self->closed()) return;
      absl::Duration idle = self->loop()->Now() - self->last_read_time();
      if (!self->HasCalls() && idle >= self->idle_timeout_ + self->goaway_grace_) {
        self->Close(absl::DeadlineExceededError(absl::StrCat(
            "connection from ", self->peer(), " idle for ", absl::FormatDuration(idle),
            " with no call in flight (idle_timeout ",
            absl::FormatDuration(self->idle_timeout_), ")")));
        return;
      }
      if (!self->HasCalls() && idle >= self->idle_timeout_ && !self->goaway_sent_) {
        // GOAWAY first and close a little later, so that a healthy client
        // moves to a new connection without losing a call sent meanwhile.
        self->SendGoAway("idle connection closed by the server");
      }
      self->ScheduleIdleCheck();
    });
  }

  void OnRequest(const FrameView& frame) {
    const uint32_t id = frame.header.stream_id;
    if (id == 0) {
      Close(absl::InvalidArgumentError(
          absl::StrCat("protocol error from ", peer(), ": REQUEST on stream 0")));
      return;
    }
    if (HasCall(id)) {
      Close(absl::InvalidArgumentError(absl::StrCat(
          "protocol error from ", peer(), ": REQUEST reuses stream ", id,
          " which is still in flight")));
      return;
    }
    if (id > last_stream_id_) last_stream_id_ = id;
    // The caller's timeout runs from when its request was read, not from
    // when the reactor got to it (it may have decoded a large batch first).
    const absl::Time arrival = last_read_time();
    transport::Request req;
    if (absl::Status parsed = transport::ParseRequestBody(frame.body, options().limits, &req);
        !parsed.ok()) {
      // The frame boundary is intact: reject this call, keep the connection.
      absl::Status err =
          absl::InvalidArgumentError(absl::StrCat("malformed request: ", parsed.message()));
      core::Log(core::LogLevel::kWarning,
                absl::StrCat("stream ", id, " from ", peer(), ": ", err.message()));
      SendReply(id, 0, err, {}, {});
      return;
    }
    Dispatch(id, std::move(req), arrival);
  }

  uint32_t last_stream_id_ = 0;
  bool goaway_sent_ = false;
  absl::Duration idle_timeout_;
  absl::Duration goaway_grace_;
  runtime::TimerId idle_timer_;
};

// --- CallHost ---

void CallHost::CallDone(uint32_t stream_id, bool on_loop) {
  counter_->active.fetch_sub(1, std::memory_order_acq_rel);
  if (host_closed()) return;  // calls_ was cleared at close
  if (on_loop) {
    calls_.erase(stream_id);
  } else {
    host_loop()->Post([self = host_self(), stream_id] { self->calls_.erase(stream_id); });
  }
}

void CallHost::CancelAllCalls() {
  auto calls = std::move(calls_);
  calls_.clear();
  for (auto& [id, call] : calls) call->Cancel();
}

void CallHost::CancelCall(uint32_t id) {
  auto it = calls_.find(id);
  if (it != calls_.end()) it->second->Cancel();
}

absl::Status CallHost::ExpiredInQueue(const ServerCall& call, absl::Time now) {
  return absl::DeadlineExceededError(absl::StrCat(
      "deadline passed before the handler of ", call.method(), " started: queued ",
      absl::FormatDuration(now - call.arrival_), " waiting for a worker (timeout ",
      absl::FormatDuration(call.deadline_ - call.arrival_), "); not run"));
}

uint32_t CallHost::max_concurrent_streams() const {
  return server_->options_.max_concurrent_streams;
}

void CallHost::Dispatch(uint32_t id, transport::Request req, absl::Time arrival) {
  // Answered here, before every limit: a health check costs less than
  // refusing it would, and a checker must see a loaded instance as alive.
  // The standard gRPC health service too (grpc.health.v1), for gRPC
  // clients and checkers: OK with a HealthCheckResponse of SERVING (1) or
  // NOT_SERVING (2), unless a handler is registered for it.
  const absl::string_view method_name = req.method;
  if (server_->builtin_health_ && method_name == transport::kGrpcHealthCheckMethod &&
      server_->FindMethod(req.method) == nullptr) {
    counter_->health_checks.fetch_add(1, std::memory_order_relaxed);
    SendReply(id, 0, absl::OkStatus(), {},
              server_->Serving() ? absl::string_view("\x08\x01", 2)
                                 : absl::string_view("\x08\x02", 2));
    return;
  }
  if (server_->builtin_health_ && method_name == transport::kHealthCheckMethod) {
    counter_->health_checks.fetch_add(1, std::memory_order_relaxed);
    if (server_->Serving()) {
      SendReply(id, 0, absl::OkStatus(), {}, "SERVING");
    } else {
      SendReply(id, 0, absl::UnavailableError("NOT_SERVING"), {}, {});
    }
    return;
  }
  if (open_streams_.load(std::memory_order_acquire) >=
      server_->options_.max_concurrent_streams) {
    SendReply(id, transport::kFlagRefused,
              absl::ResourceExhaustedError(absl::StrCat(
                  "max_concurrent_streams (", server_->options_.max_concurrent_streams,
                  ") reached on this connection; call refused")),
              {}, {});
    return;
  }
  // A connection mostly carries calls to one method: look the last one up
  // again only when the name changes (the table is frozen at Start).
  const Server::Method* method;
  if (last_method_ != nullptr && method_name == last_method_name_) {
    method = last_method_;
  } else {
    method = server_->FindMethod(method_name);
    if (method != nullptr) {
      last_method_ = method;
      last_method_name_.assign(method_name.data(), method_name.size());
    }
  }
  if (method == nullptr) {
    SendReply(id, 0,
              absl::UnimplementedError(absl::StrCat("unknown method \"", req.method, "\"")),
              {}, {});
    return;
  }
  if (server_->options_.tls != nullptr) {
    if (absl::Status denied = server_->Authorize(req.method, peer_identity_); !denied.ok()) {
      if (method->metrics) method->metrics->Record(denied, absl::ZeroDuration());
      SendReply(id, 0, denied, {}, {});
      return;
    }
  }
  counter_->calls.fetch_add(1, std::memory_order_relaxed);
  const absl::Time deadline = req.timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : arrival + req.timeout;
  const absl::Time now = host_loop()->Now();
  if (deadline <= now) {
    counter_->rejected_expired.fetch_add(1, std::memory_order_relaxed);
    if (method->metrics) method->metrics->Record(absl::DeadlineExceededError(""), now - arrival);
    SendReply(id, 0,
              absl::DeadlineExceededError(absl::StrCat(
                  "deadline passed before the handler of ", req.method,
                  " started: it arrived with ", absl::FormatDuration(req.timeout),
                  " left and waited ", absl::FormatDuration(now - arrival),
                  " to be dispatched; not run")),
              {}, {});
    return;
  }
  ConcurrencyLimiter* const limiter = counter_->limiter.get();
  if (limiter != nullptr && !limiter->TryAcquire()) {
    counter_->shed.fetch_add(1, std::memory_order_relaxed);
    if (method->metrics) method->metrics->Record(absl::ResourceExhaustedError(""), now - arrival);
    SendReply(id, transport::kFlagRefused,
              absl::ResourceExhaustedError(absl::StrCat(
                  "adaptive concurrency limit (", limiter->limit(),
                  " calls in flight) reached; ", req.method, " refused")),
              {}, {});
    return;
  }
  const bool sync = !method->async;
  auto call = std::make_shared<ServerCall>(host_self(), id, std::move(req), arrival, deadline,
                                           sync, /*holds_limiter_slot=*/limiter != nullptr);
  call->metrics_ = method->metrics;
  open_streams_.fetch_add(1, std::memory_order_acq_rel);
  counter_->active.fetch_add(1, std::memory_order_acq_rel);
  if (!sync) {
    {
      core::ScopedDeadline scope(deadline);
      const std::optional<core::TraceContext> trace =
          core::TraceContext::FromMetadata(call->metadata());
      core::ScopedTrace trace_scope(trace ? &*trace : nullptr);
      method->async(call);
    }
    // Most async handlers answer at once: only a call still open is
    // registered (for a CANCEL, or the connection closing) and given a
    // deadline timer, so the fast path pays for neither. Nothing else runs
    // on this thread meanwhile, so no CANCEL for it can have been missed; a
    // Finish racing from another thread leaves a removal posted behind us.
    if (!call->finished_.load(std::memory_order_acquire)) {
      if (host_closed()) {
        call->Cancel();  // the handler closed the connection
      } else {
        calls_.emplace(id, call);
      }
      ArmDeadline(call);
    }
  } else {
    calls_.emplace(id, call);
    ArmDeadline(call);
    const SyncHandler* handler = &method->sync;
    server_->workers_->Submit([handler, call = std::move(call), counter = counter_] {
      const absl::Time start = absl::Now();
      const bool expired = start >= call->deadline_;
      // The deadline timer may have answered the call already (it then
      // took it out of the queue): whoever leaves the queue answers.
      if (expired || call->IsCancelled()) {
        const bool mine = call->LeaveQueue(ServerCall::kNotRun);
        call->DropLimiterRef();
        if (!mine) return;
        if (expired) {
          counter->rejected_expired.fetch_add(1, std::memory_order_relaxed);
          call->FinishInternal(ExpiredInQueue(*call, start), {}, /*from_handler=*/false);
        } else {
          call->FinishInternal(absl::CancelledError("cancelled before the handler started"),
                               {}, /*from_handler=*/false);
        }
        return;
      }
      if (!call->LeaveQueue(ServerCall::kRunning)) {
        call->DropLimiterRef();
        return;
      }
      std::string out;
      absl::Status s;
      {
        core::ScopedDeadline scope(call->deadline_);
        const std::optional<core::TraceContext> trace =
            core::TraceContext::FromMetadata(call->metadata());
        core::ScopedTrace trace_scope(trace ? &*trace : nullptr);
        s = (*handler)(*call, &out);
      }
      // The worker is free: drop its hold first, so that the reply (which
      // drops the other) leaves with the call's slot already free.
      call->DropLimiterRef();
      call->FinishInternal(std::move(s), std::move(out), /*from_handler=*/true);
    });
  }
}

// Cancels and answers the call when its deadline passes, unless it is
// already finished. Loop thread.
void CallHost::ArmDeadline(const std::shared_ptr<ServerCall>& call) {
  if (call->deadline_ == absl::InfiniteFuture()) return;
  // An async handler that answered at once needs no timer: skip the lock.
  if (call->finished_.load(std::memory_order_acquire)) return;
  std::lock_guard<core::SpinLock> lock(call->mu_);
  if (call->finished_.load(std::memory_order_acquire)) return;
  std::weak_ptr<ServerCall> weak = call;
  call->deadline_timer_ = host_loop()->RunAtCoarse(call->deadline_, [weak] {
    auto c = weak.lock();
    if (!c) return;
    const bool cancelled_before = c->IsCancelled();
    c->Cancel();
    if (c->LeaveQueue(ServerCall::kNotRun)) {
      // A sync call still waiting for a worker: its handler never runs.
      if (cancelled_before) {
        c->FinishInternal(absl::CancelledError("cancelled before the handler started"), {},
                          /*from_handler=*/false);
        return;
      }
      c->conn_->counter_->rejected_expired.fetch_add(1, std::memory_order_relaxed);
      c->FinishInternal(ExpiredInQueue(*c, absl::Now()), {}, /*from_handler=*/false);
    } else if (c->stage_.load(std::memory_order_acquire) == ServerCall::kRunning) {
      c->FinishInternal(
          absl::DeadlineExceededError("deadline passed while the server was working"), {},
          /*from_handler=*/false);
    }  // else a worker took it out of the queue and answers it
  });
}


// --- ServerCall ---

ServerCall::ServerCall(std::shared_ptr<CallHost> conn, uint32_t stream_id,
                       transport::Request request, absl::Time arrival, absl::Time deadline,
                       bool sync, bool holds_limiter_slot)
    : conn_(std::move(conn)),
      stream_id_(stream_id),
      request_(std::move(request)),
      arrival_(arrival),
      deadline_(deadline),
      holds_limiter_slot_(holds_limiter_slot),
      stage_(sync ? kQueued : kRunning),
      limiter_refs_(holds_limiter_slot ? (sync ? 2 : 1) : 0) {}

ServerCall::~ServerCall() {
  // An async handler dropped its call without finishing it: give the slot
  // back rather than lose it for good.
  if (holds_limiter_slot_ && limiter_refs_.exchange(0, std::memory_order_acq_rel) > 0) {
    conn_->counter_->limiter->ReleaseWithoutSample();
  }
}

bool ServerCall::LeaveQueue(Stage to) {
  int expected = kQueued;
  return stage_.compare_exchange_strong(expected, to, std::memory_order_acq_rel);
}

void ServerCall::DropLimiterRef() {
  if (!holds_limiter_slot_ || limiter_refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  ConcurrencyLimiter& limiter = *conn_->counter_->limiter;
  if (latency_is_sample_.load(std::memory_order_relaxed)) {
    // From arrival, so that time spent queued for a worker counts: that is
    // where a sync server's overload shows.
    limiter.Release(absl::Now() - arrival_);
  } else {
    limiter.ReleaseWithoutSample();
  }
}

const std::string& ServerCall::peer() const { return conn_->host_peer(); }

const std::string& ServerCall::peer_identity() const { return conn_->peer_identity(); }

absl::string_view ServerCall::MetadataValue(absl::string_view key) const {
  for (const auto& [k, v] : request_.metadata) {
    if (k == key) return v;
  }
  return {};
}

absl::Duration ServerCall::RemainingTime() const {
  if (deadline_ == absl::InfiniteFuture()) return absl::InfiniteDuration();
  return deadline_ - absl::Now();
}

runtime::Executor& ServerCall::executor() const { return *conn_->host_loop(); }

void ServerCall::OnCancel(absl::AnyInvocable<void()> fn) {
  // A hook replaced by this one is destroyed after the lock is released:
  // what it captured may finish the call when destroyed, which takes it.
  absl::AnyInvocable<void()> replaced;
  {
    std::lock_guard<core::SpinLock> lock(mu_);
    if (!IsCancelled()) {
      replaced = std::move(on_cancel_);
      on_cancel_ = std::move(fn);
      return;
    }
  }
  fn();
}

void ServerCall::Cancel() {
  if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
  absl::AnyInvocable<void()> fn;
  {
    std::lock_guard<core::SpinLock> lock(mu_);
    fn = std::move(on_cancel_);
  }
  if (fn) fn();
}

void ServerCall::AddResponseMetadata(std::string key, std::string value) {
  std::lock_guard<core::SpinLock> lock(mu_);
  response_metadata_.emplace_back(std::move(key), std::move(value));
}

void ServerCall::SetRetryPushback(absl::Duration delay) {
  std::string value = delay < absl::ZeroDuration() || delay == absl::InfiniteDuration()
                          ? "-1"
                          : absl::StrCat(absl::ToInt64Milliseconds(
                                absl::Ceil(delay, absl::Milliseconds(1))));
  std::lock_guard<core::SpinLock> lock(mu_);
  auto& md = response_metadata_;
  md.erase(std::remove_if(md.begin(), md.end(),
                          [](const auto& kv) { return kv.first == transport::kRetryPushbackKey; }),
           md.end());
  md.emplace_back(transport::kRetryPushbackKey, std::move(value));
}

void ServerCall::Finish(absl::Status status, std::string response) {
  FinishInternal(std::move(status), std::move(response), /*from_handler=*/true);
}

void ServerMethodMetrics::Record(const absl::Status& status, absl::Duration d) {
  const int c = static_cast<int>(status.code());
  requests[c >= 0 && c < kCodes ? c : static_cast<int>(absl::StatusCode::kUnknown)]->Add();
  if (latency != nullptr) latency->Observe(d);
}

void ServerCall::FinishInternal(absl::Status status, std::string response, bool from_handler) {
  if (finished_.exchange(true, std::memory_order_acq_rel)) return;
  if (metrics_ != nullptr) metrics_->Record(status, absl::Now() - arrival_);
  // A cancelled call's latency ends when its caller gave up, not when the
  // server was done: no sample.
  latency_is_sample_.store(from_handler && !IsCancelled(), std::memory_order_relaxed);
  DropLimiterRef();
  // Compares pointers only: the loop may already be gone.
  const bool on_loop = runtime::EventLoop::Current() == conn_->host_loop();
  std::shared_lock<std::shared_mutex> guard;
  if (!on_loop) {
    guard = std::shared_lock<std::shared_mutex>(conn_->counter_->loops_mu);
    if (!conn_->counter_->loops_alive) {
      // The server has shut down: nobody is left to answer.
      conn_->counter_->active.fetch_sub(1, std::memory_order_acq_rel);
      return;
    }
  }
  Metadata md;
  runtime::TimerId timer;
  {
    std::lock_guard<core::SpinLock> lock(mu_);
    md = std::move(response_metadata_);
    timer = deadline_timer_;
  }
  if (timer.valid()) conn_->host_loop()->Cancel(timer);
  conn_->ReleaseStream();
  if (!conn_->host_closed()) conn_->SendReply(stream_id_, 0, status, md, response);
  conn_->CallDone(stream_id_, on_loop);
}

// --- Acceptor ---

class Server::Acceptor final : public runtime::FdHandler {
 public:
  Acceptor(Server* server, runtime::EventLoop* loop, int fd)
      : server_(server), loop_(loop), fd_(fd) {}
  ~Acceptor() override {
    if (fd_ >= 0) close(fd_);
  }

  void Stop() {  // loop thread
    loop_->Cancel(retry_timer_);
    loop_->Unwatch(fd_);
    close(fd_);
    fd_ = -1;
  }

  void OnFdEvents(uint32_t) override {
    for (int i = 0; i < 64; ++i) {
      sockaddr_storage ss;
      socklen_t len = sizeof(ss);
      int fd = accept4(fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        // Out of descriptors or memory: stop accepting for a moment rather
        // than spin on a level-triggered listener.
        core::Log(core::LogLevel::kError,
                  absl::StrCat("accept on ", server_->address_, ": ", strerror(errno),
                               "; pausing accepts for 100ms"));
        loop_->Unwatch(fd_);
        retry_timer_ = loop_->RunAfter(absl::Milliseconds(100), [this] {
          if (fd_ >= 0) loop_->Watch(fd_, EPOLLIN, this).IgnoreError();
        });
        return;
      }
      transport::SocketAddress peer;
      peer.storage = ss;
      peer.len = len;
      transport::SetTcpNoDelay(fd);
      server_->OnAccepted(fd, peer.ToString());
    }
  }

  int fd() const { return fd_; }

 private:
  Server* const server_;
  runtime::EventLoop* const loop_;
  int fd_;
  runtime::TimerId retry_timer_;
};

// --- Server ---

Server::Server(ServerOptions options)
    : options_(std::move(options)), counter_(std::make_shared<CallCounter>()) {
  if (options_.adaptive_concurrency.enabled) {
    auto limiter = ConcurrencyLimiter::Create(options_.adaptive_concurrency);
    if (limiter.ok()) {
      counter_->limiter = *std::move(limiter);
    } else {
      limiter_error_ = absl::InvalidArgumentError(
          absl::StrCat("ServerOptions.", limiter.status().message()));
    }
  }
}

Server::~Server() {
  Shutdown(absl::ZeroDuration());
  admin_.reset();  // also when Start failed after opening it
  if (metrics_collector_ != 0) options_.metrics->RemoveCollector(metrics_collector_);
}

absl::Status Server::RegisterAsync(std::string method, AsyncHandler handler) {
  if (started_) return absl::FailedPreconditionError("RegisterAsync after Start");
  if (!handler) return absl::InvalidArgumentError("RegisterAsync: empty handler");
  if (methods_.contains(method)) {
    return absl::AlreadyExistsError(absl::StrCat("method \"", method, "\" already registered"));
  }
  methods_[std::move(method)].async = std::move(handler);
  return absl::OkStatus();
}

absl::Status Server::RegisterSync(std::string method, SyncHandler handler) {
  if (started_) return absl::FailedPreconditionError("RegisterSync after Start");
  if (!handler) return absl::InvalidArgumentError("RegisterSync: empty handler");
  if (methods_.contains(method)) {
    return absl::AlreadyExistsError(absl::StrCat("method \"", method, "\" already registered"));
  }
  methods_[std::move(method)].sync = std::move(handler);
  return absl::OkStatus();
}

const Server::Method* Server::FindMethod(absl::string_view name) const {
  auto it = methods_.find(name);
  return it == methods_.end() ? nullptr : &it->second;
}

absl::StatusOr<int> Server::Start(absl::string_view address) {
  if (!limiter_error_.ok()) return limiter_error_;
  if (started_.exchange(true)) return absl::FailedPreconditionError("server already started");
  builtin_health_ =
      options_.health_service && !methods_.contains(transport::kHealthCheckMethod);
  absl::StatusOr<transport::SocketAddress> addr = transport::ParseHostPort(address);
  if (!addr.ok()) return addr.status();
  runtime_ = options_.runtime;
  if (!runtime_) {
    runtime::EventLoopOptions loop_options;
    loop_options.busy_poll = options_.busy_poll;
    auto rt = runtime::Runtime::Create(options_.io_threads, "server-io", loop_options);
    if (!rt.ok()) return rt.status();
    runtime_ = *std::move(rt);
  }
  bool need_workers = false;
  for (const auto& [name, m] : methods_) need_workers |= static_cast<bool>(m.sync);
  if (options_.metrics != nullptr) {
    metrics::CounterFamily& requests = options_.metrics->AddCounter(
        "meshlib_server_requests_total", "Calls served, by method and outcome.",
        {"method", "code"});
    metrics::HistogramFamily& latency = options_.metrics->AddHistogram(
        "meshlib_server_request_duration_seconds",
        "From a call's arrival to its answer, by method.", {"method"});
    for (auto& [name, m] : methods_) {
      auto made = std::make_unique<ServerMethodMetrics>();
      for (int c = 0; c < ServerMethodMetrics::kCodes; ++c) {
        made->requests[c] =
            &requests.With({name, absl::StatusCodeToString(static_cast<absl::StatusCode>(c))});
      }
      made->latency = &latency.With({name});
      m.metrics = made.get();
      counter_->method_metrics.push_back(std::move(made));
    }
  }
  workers_ = std::make_unique<runtime::ThreadPool>(need_workers ? options_.worker_threads : 1,
                                                   "server-worker");
  absl::StatusOr<int> fd = transport::ListenTcp(*addr, options_.backlog);
  if (!fd.ok()) return fd.status();
  absl::StatusOr<transport::SocketAddress> bound = transport::LocalAddress(*fd);
  if (!bound.ok()) {
    close(*fd);
    return bound.status();
  }
  address_ = bound->ToString();
  if (options_.metrics != nullptr) {
    // What the server's state says at each scrape, labelled by its address
    // (a process may run several servers).
    using metrics::Type;
    metrics_collector_ = options_.metrics->AddCollector(
        {{"meshlib_server_in_flight", "Calls being served now.", Type::kGauge},
         {"meshlib_server_shed_total", "Calls refused by the adaptive concurrency limit.",
          Type::kCounter},
         {"meshlib_server_expired_total",
          "Calls answered DEADLINE_EXCEEDED without running their handler.", Type::kCounter},
         {"meshlib_server_concurrency_limit",
          "The adaptive concurrency limit now (0: disabled).", Type::kGauge},
         {"meshlib_server_connections_opened_total", "Connections accepted.", Type::kCounter},
         {"meshlib_server_connections_closed_total", "Connections closed.", Type::kCounter},
         {"meshlib_server_connections", "Connections open now.", Type::kGauge},
         {"meshlib_server_tls_handshake_failures_total",
          "TLS handshakes that failed (untrusted or missing certificates, plaintext or garbage "
          "clients, timeouts).",
          Type::kCounter},
         {"meshlib_tls_certificate_expiry_timestamp_seconds",
          "When the certificate this side presents expires (Unix time).", Type::kGauge},
         {"meshlib_tls_reload_errors_total",
          "Changed TLS files that failed their checks (the old credentials were kept).",
          Type::kCounter}},
        [weak = std::weak_ptr<CallCounter>(counter_), address = address_,
         tls = options_.tls](std::vector<metrics::Sample>* out) {
          std::shared_ptr<CallCounter> c = weak.lock();
          if (c == nullptr) return;
          const std::vector<std::pair<std::string, std::string>> labels = {{"server", address}};
          auto add = [&](const char* name, int64_t v) {
            out->push_back({name, labels, static_cast<double>(v)});
          };
          const int64_t opened = c->connections_opened.load(std::memory_order_relaxed);
          const int64_t closed = c->connections_closed.load(std::memory_order_relaxed);
          add("meshlib_server_in_flight", c->active.load(std::memory_order_relaxed));
          add("meshlib_server_shed_total", c->shed.load(std::memory_order_relaxed));
          add("meshlib_server_expired_total", c->rejected_expired.load(std::memory_order_relaxed));
          add("meshlib_server_concurrency_limit", c->limiter ? c->limiter->limit() : 0);
          add("meshlib_server_connections_opened_total", opened);
          add("meshlib_server_connections_closed_total", closed);
          add("meshlib_server_connections", opened - closed);
          if (tls != nullptr) {
            add("meshlib_server_tls_handshake_failures_total",
                c->tls_handshake_failures.load(std::memory_order_relaxed));
            const tls::CredentialsStats st = tls->stats();
            const std::vector<std::pair<std::string, std::string>> tls_labels = {
                {"side", "server"},
                {"identity", st.identity},
                {"certificate", tls->options().cert_file},
                {"server", address}};
            if (st.not_after != absl::InfiniteFuture()) {
              out->push_back({"meshlib_tls_certificate_expiry_timestamp_seconds", tls_labels,
                              absl::ToDoubleSeconds(st.not_after - absl::UnixEpoch())});
            }
            out->push_back({"meshlib_tls_reload_errors_total", tls_labels,
                            static_cast<double>(st.reload_errors)});
          }
        });
  }
  if (!options_.admin_address.empty()) {
    admin::AdminOptions ao;
    ao.address = options_.admin_address;
    admin::AdminServer::Handlers pages = admin::StandardPages(
        options_.metrics != nullptr ? *options_.metrics : metrics::DefaultRegistry(), &ao);
    pages["/server.json"] = [this](const admin::HttpRequest&) {
      const ServerStats st = stats();
      nlohmann::json j = {{"address", address_},
                          {"serving", Serving()},
                          {"calls", st.calls},
                          {"active_calls", st.active_calls},
                          {"rejected_expired", st.rejected_expired},
                          {"shed", st.shed},
                          {"concurrency_limit", st.concurrency_limit},
                          {"health_checks", st.health_checks},
                          {"connections_opened", st.connections_opened},
                          {"connections_closed", st.connections_closed}};
      return admin::HttpResponse{200, "application/json", j.dump()};
    };
    auto started = admin::AdminServer::Start(ao, std::move(pages));
    if (!started.ok()) {
      close(*fd);
      return absl::Status(started.status().code(), absl::StrCat("ServerOptions.admin_address: ",
                                                                started.status().message()));
    }
    admin_ = *std::move(started);
  }
  runtime::EventLoop& loop = runtime_->loop(0);
  acceptor_ = std::make_unique<Acceptor>(this, &loop, *fd);
  absl::Status watched;
  loop.RunAndWait([&] { watched = loop.Watch(acceptor_->fd(), EPOLLIN, acceptor_.get()); });
  if (!watched.ok()) return watched;
  return bound->port();
}

std::string Server::address() const { return address_; }

std::string Server::admin_address() const { return admin_ != nullptr ? admin_->address() : ""; }

int64_t Server::active_calls() const { return counter_->active.load(std::memory_order_acquire); }

ServerStats Server::stats() const {
  ServerStats s;
  s.calls = counter_->calls.load(std::memory_order_relaxed);
  s.active_calls = active_calls();
  s.rejected_expired = counter_->rejected_expired.load(std::memory_order_relaxed);
  s.shed = counter_->shed.load(std::memory_order_relaxed);
  s.concurrency_limit = counter_->limiter ? counter_->limiter->limit() : 0;
  s.health_checks = counter_->health_checks.load(std::memory_order_relaxed);
  s.connections_opened = counter_->connections_opened.load(std::memory_order_relaxed);
  s.connections_closed = counter_->connections_closed.load(std::memory_order_relaxed);
  s.tls_handshake_failures = counter_->tls_handshake_failures.load(std::memory_order_relaxed);
  return s;
}

void Server::SetServing(bool serving) { serving_.store(serving, std::memory_order_release); }

bool Server::Serving() const {
  return serving_.load(std::memory_order_acquire) &&
         !shutting_down_.load(std::memory_order_acquire);
}

size_t Server::connection_count() {
  core::MutexLock lock(&mu_);
  return conns_.size();
}

// Tells a gRPC client (the HTTP/2 preface) from a meshlib one on a new
// plaintext connection by peeking at its first bytes, then hands the
// socket on. A client that sends nothing is closed after idle_timeout.
class Server::Sniffer final : public runtime::FdHandler,
                              public std::enable_shared_from_this<Sniffer> {
 public:
  Sniffer(Server* server, runtime::EventLoop* loop, int fd, std::string peer)
      : server_(server), loop_(loop), fd_(fd), peer_(std::move(peer)) {}
  ~Sniffer() override {
    if (fd_ >= 0) close(fd_);
  }

  void Begin() {  // loop thread
    if (fd_ < 0) return;
    if (!loop_->Watch(fd_, EPOLLIN, this).ok()) {
      Finish();
      return;
    }
    watched_ = true;
    std::weak_ptr<Sniffer> weak = shared_from_this();
    timer_ = loop_->RunAfter(server_->options_.idle_timeout, [weak] {
      auto self = weak.lock();
      if (!self) return;
      core::Log(core::LogLevel::kWarning,
                absl::StrCat("closed connection from ", self->peer_, ": it sent nothing for ",
                             absl::FormatDuration(self->server_->options_.idle_timeout),
                             ", with no call in flight (idle_timeout ",
                             absl::FormatDuration(self->server_->options_.idle_timeout), ")"));
      self->Finish();
    });
  }

  void OnFdEvents(uint32_t) override {
    char buf[kHttp2PrefaceSize];
    const ssize_t n = recv(fd_, buf, sizeof(buf), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
      Finish();  // closed before saying anything
      return;
    }
    const size_t got = static_cast<size_t>(n);
    if (std::memcmp(buf, kHttp2Preface, got) == 0 && got < kHttp2PrefaceSize) return;  // more
    const bool grpc = got == kHttp2PrefaceSize && std::memcmp(buf, kHttp2Preface, got) == 0;
    Unwatch();
    const int fd = fd_;
    fd_ = -1;
    auto stream = std::make_unique<transport::TcpStream>(fd, peer_);
    if (grpc) {
      server_->StartGrpcConnection(loop_, std::move(stream), "");
    } else {
      server_->StartConnection(loop_, std::move(stream), "");
    }
    server_->ForgetSniffer(this);
  }

  runtime::EventLoop* loop() const { return loop_; }

  // Closes the socket undecided (timeout, shutdown). Loop thread.
  void Finish() {
    Unwatch();
    if (fd_ >= 0) {
      close(fd_);
      fd_ = -1;
    }
    server_->ForgetSniffer(this);
  }

 private:
  void Unwatch() {
    loop_->Cancel(timer_);
    if (watched_) loop_->Unwatch(fd_);
    watched_ = false;
  }

  Server* const server_;
  runtime::EventLoop* const loop_;
  int fd_;
  const std::string peer_;
  bool watched_ = false;
  runtime::TimerId timer_;
};

void Server::ForgetSniffer(Sniffer* sniffer) {
  std::shared_ptr<Sniffer> keep;  // destroyed after the lock is released
  core::MutexLock lock(&mu_);
  auto it = sniffers_.find(sniffer);
  if (it == sniffers_.end()) return;
  keep = std::move(it->second);
  sniffers_.erase(it);
  // Destroyed on the loop after this handler returns.
  sniffer->loop()->Post([keep = std::move(keep)] {});
}

void Server::OnAccepted(int fd, std::string peer) {
  runtime::EventLoop& loop = runtime_->NextLoop();
  if (options_.tls == nullptr) {
    auto sniffer = std::make_shared<Sniffer>(this, &loop, fd, std::move(peer));
    {
      core::MutexLock lock(&mu_);
      if (shut_down_) return;  // the sniffer's destructor closes the fd
      sniffers_.emplace(sniffer.get(), sniffer);
    }
    loop.Post([sniffer] { sniffer->Begin(); });
    return;
  }
  // TLS: the handshake first, on the connection's loop. Shutdown cancels
  // the ones still running (and waits for their ends on the loops).
  struct Slot {
    tls::Handshake* handshake = nullptr;
    bool ended = false;  // guarded by mu_
  };
  auto slot = std::make_shared<Slot>();
  std::shared_ptr<tls::Handshake> hs = tls::Handshake::Start(
      &loop, fd, peer, *options_.tls, tls::Role::kServer,
      [this, loop = &loop, peer, slot](absl::StatusOr<std::unique_ptr<tls::TlsStream>> r) {
        {
          core::MutexLock lock(&mu_);
          slot->ended = true;
          if (slot->handshake != nullptr) handshakes_.erase(slot->handshake);
        }
        if (!r.ok()) {
          counter_->tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
          if (r.status().code() != absl::StatusCode::kCancelled) {
            core::Log(core::LogLevel::kInfo,
                      absl::StrCat("server ", address_, ": ", r.status().message()));
          }
          return;
        }
        std::string identity = (*r)->peer_info().identity;
        if ((*r)->peer_info().alpn == tls::kAlpnH2) {
          StartGrpcConnection(loop, *std::move(r), std::move(identity));
        } else {
          StartConnection(loop, *std::move(r), std::move(identity));
        }
      });
  core::MutexLock lock(&mu_);
  if (slot->ended) return;  // over already, on its loop
  slot->handshake = hs.get();
  if (shut_down_) {
    hs->Cancel(absl::CancelledError("server shutting down"));
    return;
  }
  handshakes_.emplace(hs.get(), std::move(hs));
}

absl::Status Server::Authorize(const std::string& method, const std::string& identity) const {
  auto it = options_.method_identities.find(method);
  const std::vector<std::string>& allowed =
      it != options_.method_identities.end() ? it->second : options_.tls->options().identities;
  if (allowed.empty()) return absl::OkStatus();
  if (identity.empty()) {
    return absl::UnauthenticatedError(absl::StrCat(
        method, " needs a caller with a SPIFFE identity (", absl::StrJoin(allowed, ", "),
        "); this one presented none"));
  }
  if (std::find(allowed.begin(), allowed.end(), identity) == allowed.end()) {
    return absl::PermissionDeniedError(absl::StrCat(identity, " may not call ", method,
                                                    " (allowed: ", absl::StrJoin(allowed, ", "),
                                                    ")"));
  }
  return absl::OkStatus();
}

void Server::StartConnection(runtime::EventLoop* loop_ptr,
                             std::unique_ptr<transport::ByteStream> stream,
                             std::string peer_identity) {
  runtime::EventLoop& loop = *loop_ptr;
  transport::ConnectionOptions copts;
  copts.limits = options_.limits;
  auto conn = std::make_shared<ServerConnection>(this, counter_, &loop, std::move(stream), copts,
                                                 std::move(peer_identity));
  {
    core::MutexLock lock(&mu_);
    if (shut_down_) return;  // conn's destructor closes the fd
    conns_.emplace(conn.get(), conn);
  }
  counter_->connections_opened.fetch_add(1, std::memory_order_relaxed);
  conn->Start();
  loop.Post([conn, idle = options_.idle_timeout] { conn->StartIdleCheck(idle); });
}

void Server::StartGrpcConnection(runtime::EventLoop* loop,
                                 std::unique_ptr<transport::ByteStream> stream,
                                 std::string peer_identity) {
  GrpcServerConnection::Options o;
  o.limits = options_.limits;
  o.max_concurrent_streams = options_.max_concurrent_streams;
  o.idle_timeout = options_.idle_timeout;
  auto conn = std::make_shared<GrpcServerConnection>(this, counter_, loop, std::move(stream),
                                                     std::move(peer_identity), o);
  {
    core::MutexLock lock(&mu_);
    if (shut_down_) return;  // conn's destructor closes the socket
    conns_.emplace(conn.get(), conn);
  }
  counter_->connections_opened.fetch_add(1, std::memory_order_relaxed);
  if (loop->InExecutorThread()) {
    conn->Start();
  } else {
    loop->Post([conn] { conn->Start(); });
  }
}

void Server::OnConnectionClosed(CallHost* conn) {
  core::MutexLock lock(&mu_);
  if (conns_.erase(conn) > 0) {
    counter_->connections_closed.fetch_add(1, std::memory_order_relaxed);
  }
}

void Server::AddPreShutdownHook(absl::AnyInvocable<void()> hook) {
  core::MutexLock lock(&mu_);
  if (!shut_down_) pre_shutdown_hooks_.push_back(std::move(hook));
}

void Server::Shutdown(absl::Duration drain_timeout) {
  // First of all, so that health checkers see a draining instance while the
  // hooks run and the calls in flight finish.
  shutting_down_.store(true, std::memory_order_release);
  std::vector<absl::AnyInvocable<void()>> hooks;
  {
    core::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    hooks.swap(pre_shutdown_hooks_);
  }
  for (auto& hook : hooks) hook();
  if (!started_ || !runtime_) return;
  if (acceptor_) {
    runtime_->loop(0).RunAndWait([&] { acceptor_->Stop(); });
  }
  {
    // TLS handshakes still running end now (their ends run on the loops,
    // which are flushed below before the runtime goes).
    core::MutexLock lock(&mu_);
    for (auto& [raw, hs] : handshakes_) hs->Cancel(absl::CancelledError("server shutting down"));
  }
  {
    // Connections still being sniffed close undecided.
    core::MutexLock lock(&mu_);
    for (auto& [raw, sn] : sniffers_) {
      sn->loop()->Post([sn = sn] { sn->Finish(); });
    }
  }
  std::vector<std::shared_ptr<CallHost>> conns;
  {
    core::MutexLock lock(&mu_);
    for (auto& [p, c] : conns_) conns.push_back(c);
  }
  for (auto& c : conns) c->SendGoAway("server is shutting down");
  absl::Time give_up = absl::Now() + drain_timeout;
  while (counter_->active.load() > 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  if (counter_->active.load() > 0) {
    core::Log(core::LogLevel::kWarning,
              absl::StrCat("server ", address_, ": drain timeout (",
                           absl::FormatDuration(drain_timeout), ") passed with ",
                           counter_->active.load(), " calls in flight; cancelling them"));
  }
  for (auto& c : conns) c->CloseHost(absl::UnavailableError("server shut down"));
  conns.clear();
  for (;;) {
    {
      core::MutexLock lock(&mu_);
      if (conns_.empty()) break;
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  workers_.reset();  // runs queued sync handlers (they see cancellation), joins
  {
    // From here on, a late Finish from a handler's own thread is a no-op.
    std::unique_lock<std::shared_mutex> lock(counter_->loops_mu);
    counter_->loops_alive = false;
  }
  acceptor_.reset();
  // Let each loop finish the tasks that the closes queued before the runtime
  // (or the caller's shared one) outlives us.
  for (size_t i = 0; i < runtime_->size(); ++i) runtime_->loop(i).RunAndWait([] {});
  runtime_.reset();
  admin_.reset();
}

}  // namespace meshlib::server
