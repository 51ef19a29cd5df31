#include "meshlib/server/internal/grpc_server_connection.h"

#include <sys/epoll.h>

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/core/log.h"

namespace meshlib::server {

GrpcServerConnection::GrpcServerConnection(Server* server, std::shared_ptr<CallCounter> counter,
                                           runtime::EventLoop* loop,
                                           std::unique_ptr<transport::ByteStream> stream,
                                           std::string peer_identity, Options options)
    : CallHost(server, std::move(counter), std::move(peer_identity)),
      loop_(loop),
      peer_(stream->peer()),
      options_(options),
      io_(loop, std::move(stream)) {}

// The session is deleted with the connection, never in Close: a Close from
// inside SessionIo::Read must not pull it from under nghttp2's caller.
GrpcServerConnection::~GrpcServerConnection() = default;

void GrpcServerConnection::Start() {
  grpc::ServerSession::Options so;
  so.max_message = options_.limits.max_frame_size;
  so.max_metadata_entries = options_.limits.max_metadata_entries;
  so.max_concurrent_streams = options_.max_concurrent_streams;
  grpc::ServerSession::Callbacks cb;
  cb.on_request = [this](grpc::ServerSession::Request r) {
    transport::Request req;
    req.method = std::move(r.method);
    req.timeout = r.timeout;
    req.metadata = std::move(r.metadata);
    req.payload = std::move(r.payload);
    Dispatch(static_cast<uint32_t>(r.stream_id), std::move(req), last_read_);
  };
  // Answered, or reset by the client: a call still running is cancelled.
  cb.on_stream_closed = [this](int32_t id) { CancelCall(static_cast<uint32_t>(id)); };
  auto session = grpc::ServerSession::Create(so, std::move(cb));
  if (!session.ok()) {
    Close(session.status());
    return;
  }
  session_ = *std::move(session);
  if (absl::Status s = io_.Watch(this); !s.ok()) {
    Close(s);
    return;
  }
  last_read_ = loop_->Now();
  ScheduleIdleCheck();
  Flush();
  // TLS may hold the client's first bytes already; the fd will not say so.
  if (!host_closed() && io_.BufferedBytes() > 0) OnFdEvents(EPOLLIN);
}

void GrpcServerConnection::OnFdEvents(uint32_t events) {
  if (host_closed()) return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    last_read_ = loop_->Now();
    absl::Status s = io_.Read(session_->session(), [this] {
      if (!host_closed()) session_->DeliverReady();
    });
    if (host_closed()) return;
    if (!s.ok()) {
      Close(s);
      return;
    }
  }
  Flush();
}

void GrpcServerConnection::Flush() {
  if (host_closed()) return;
  absl::Status s = io_.Flush(session_->session());
  // Streams that ended as their replies went out.
  session_->DeliverReady();
  if (host_closed()) return;
  if (!s.ok()) {
    Close(s);
    return;
  }
  if (session_->Done() && !io_.WritePending()) {
    if (!session_->protocol_error().empty()) {
      Close(absl::InvalidArgumentError(
          absl::StrCat(session_->protocol_error(), " from ", peer_)));
    } else {
      Close(absl::UnavailableError(absl::StrCat("HTTP/2 session with ", peer_, " ended")));
    }
  }
}

void GrpcServerConnection::ScheduleFlush() {
  if (flush_scheduled_ || host_closed()) return;
  flush_scheduled_ = true;
  std::weak_ptr<GrpcServerConnection> weak = shared_from_this();
  loop_->DeferToEndOfIteration([weak] {
    if (auto self = weak.lock()) {
      self->flush_scheduled_ = false;
      self->Flush();
    }
  });
}

void GrpcServerConnection::ScheduleIdleCheck() {
  std::weak_ptr<GrpcServerConnection> weak = shared_from_this();
  const absl::Duration period = std::max(options_.idle_timeout / 4, absl::Milliseconds(10));
  idle_timer_ = loop_->RunAfter(period, [weak] {
    auto self = weak.lock();
    if (!self || self->host_closed()) return;
    const absl::Duration idle = self->loop_->Now() - self->last_read_;
    if (!self->HasCalls() && self->session_->open_streams() == 0 &&
        idle >= self->options_.idle_timeout) {
      // GOAWAY says no stream was lost; then close.
      self->session_->GoAway("idle connection closed by the server");
      (void)self->io_.Flush(self->session_->session());
      self->Close(absl::DeadlineExceededError(absl::StrCat(
          "gRPC connection from ", self->peer_, " idle for ", absl::FormatDuration(idle),
          " with no call in flight (idle_timeout ",
          absl::FormatDuration(self->options_.idle_timeout), ")")));
      return;
    }
    self->ScheduleIdleCheck();
  });
}

void GrpcServerConnection::Close(const absl::Status& reason) {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  const core::LogLevel level = reason.code() == absl::StatusCode::kUnavailable ||
                                       reason.code() == absl::StatusCode::kCancelled
                                   ? core::LogLevel::kDebug
                                   : core::LogLevel::kWarning;
  core::Log(level, absl::StrCat("closed gRPC connection from ", peer_, ": ", reason.ToString()));
  loop_->Cancel(idle_timer_);
  io_.Close();
  CancelAllCalls();
  server_->OnConnectionClosed(this);
}

void GrpcServerConnection::CloseHost(absl::Status reason) {
  if (loop_->InExecutorThread()) {
    Close(reason);
    return;
  }
  loop_->Post([self = shared_from_this(), reason = std::move(reason)] { self->Close(reason); });
}

void GrpcServerConnection::SendGoAway(std::string why) {
  auto send = [self = shared_from_this(), why = std::move(why)] {
    if (self->host_closed() || self->goaway_sent_ || self->session_ == nullptr) return;
    self->goaway_sent_ = true;
    // Streams the client opened up to now are served; later ones were not
    // processed, and the client may send them elsewhere.
    self->session_->GoAway(why);
    self->Flush();
  };
  if (loop_->InExecutorThread()) {
    send();
  } else {
    loop_->Post(std::move(send));
  }
}

void GrpcServerConnection::SendReply(uint32_t stream_id, uint16_t flags,
                                     const absl::Status& status, const Metadata& md,
                                     absl::string_view payload) {
  if (loop_->InExecutorThread()) {
    Reply(stream_id, flags, status, md, std::string(payload));
    return;
  }
  loop_->Post([self = shared_from_this(), stream_id, flags, status, md,
               payload = std::string(payload)]() mutable {
    self->Reply(stream_id, flags, status, md, std::move(payload));
  });
}

void GrpcServerConnection::Reply(uint32_t id, uint16_t flags, const absl::Status& status,
                                 const Metadata& md, std::string payload) {
  if (host_closed() || session_ == nullptr) return;
  session_->Reply(static_cast<int32_t>(id), status, md, payload,
                  (flags & transport::kFlagRefused) != 0);
  ScheduleFlush();
}

}  // namespace meshlib::server
