#include "meshlib/server/internal/grpc_server_connection.h"

#include <sys/epoll.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "meshlib/core/log.h"
#include "meshlib/grpc/wire.h"

namespace meshlib::server {

namespace {

constexpr int32_t kStreamWindow = 8 << 20;
constexpr int32_t kConnectionWindow = 32 << 20;

nghttp2_nv Header(absl::string_view k, absl::string_view v) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(k.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), k.size(), v.size(),
          NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

// One request stream and, once answered, its reply.
struct GrpcServerConnection::Stream {
  int32_t id = 0;
  // Request.
  std::string path;
  std::string http_method;
  std::string content_type;
  std::string encoding;
  std::string timeout;  // grpc-timeout as sent
  bool has_timeout = false;
  Metadata metadata;
  size_t metadata_bytes = 0;
  std::string body;
  bool rejected = false;    // answered before the request ended (too large)
  bool dispatched = false;  // handed to CallHost::Dispatch
  // Reply.
  std::string reply_body;  // framed message
  size_t reply_offset = 0;
  std::string status_code;
  std::string status_message;
};

GrpcServerConnection::GrpcServerConnection(Server* server, std::shared_ptr<CallCounter> counter,
                                           runtime::EventLoop* loop,
                                           std::unique_ptr<transport::ByteStream> stream,
                                           std::string peer_identity, Options options)
    : CallHost(server, std::move(counter), std::move(peer_identity)),
      loop_(loop),
      peer_(stream->peer()),
      options_(options),
      io_(loop, std::move(stream)) {}

GrpcServerConnection::~GrpcServerConnection() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

void GrpcServerConnection::Start() {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &OnHeader);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &OnDataChunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &OnFrameRecv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &OnStreamClose);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // The protections against abusive clients: rapid resets (CVE-2023-44487),
  // CONTINUATION floods (CVE-2024-27316 and kin), SETTINGS and PING floods
  // that make us queue acknowledgements.
  nghttp2_option_set_stream_reset_rate_limit(opt, /*burst=*/1000, /*rate=*/33);
  nghttp2_option_set_max_continuations(opt, 8);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_send_header_block_length(opt, 64 << 10);
  const int rv = nghttp2_session_server_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    session_ = nullptr;
    Close(absl::ResourceExhaustedError(absl::StrCat("HTTP/2 session: ", nghttp2_strerror(rv))));
    return;
  }
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 64 << 10},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings,
                          sizeof(settings) / sizeof(settings[0]));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
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
    absl::Status s = io_.Read(session_, [this] { DispatchReady(); });
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
  if (absl::Status s = io_.Flush(session_); !s.ok()) {
    Close(s);
    return;
  }
  if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_) &&
      !io_.WritePending()) {
    Close(absl::UnavailableError(absl::StrCat("HTTP/2 session with ", peer_, " ended")));
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
    if (!self->HasCalls() && self->streams_.empty() && idle >= self->options_.idle_timeout) {
      // GOAWAY says no stream was lost; then close.
      nghttp2_submit_goaway(self->session_, NGHTTP2_FLAG_NONE,
                            nghttp2_session_get_last_proc_stream_id(self->session_),
                            NGHTTP2_NO_ERROR, nullptr, 0);
      self->Flush();
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
  // The session is deleted with the connection: a Close from inside
  // SessionIo::Read must not pull it from under nghttp2's caller.
  CancelAllCalls();
  streams_.clear();
  ready_.clear();
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
    if (self->host_closed() || self->goaway_sent_) return;
    self->goaway_sent_ = true;
    // Streams the client opened up to now are served; later ones were not
    // processed, and the client may send them elsewhere.
    nghttp2_submit_goaway(self->session_, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(self->session_),
                          NGHTTP2_NO_ERROR, reinterpret_cast<const uint8_t*>(why.data()),
                          why.size());
    self->Flush();
  };
  if (loop_->InExecutorThread()) {
    send();
  } else {
    loop_->Post(std::move(send));
  }
}

// --- Requests ---

int GrpcServerConnection::OnBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame,
                                         void* user_data) {
  auto* self = static_cast<GrpcServerConnection*>(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto stream = std::make_unique<Stream>();
  stream->id = frame->hd.stream_id;
  self->streams_[frame->hd.stream_id] = std::move(stream);
  (void)session;
  return 0;
}

int GrpcServerConnection::OnHeader(nghttp2_session*, const nghttp2_frame* frame,
                                   const uint8_t* name, size_t namelen, const uint8_t* value,
                                   size_t valuelen, uint8_t, void* user_data) {
  auto* self = static_cast<GrpcServerConnection*>(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto it = self->streams_.find(frame->hd.stream_id);
  if (it == self->streams_.end()) return 0;
  Stream& s = *it->second;
  const absl::string_view k(reinterpret_cast<const char*>(name), namelen);
  const absl::string_view v(reinterpret_cast<const char*>(value), valuelen);
  if (k == ":path") {
    s.path.assign(v.data(), v.size());
  } else if (k == ":method") {
    s.http_method.assign(v.data(), v.size());
  } else if (k == "content-type") {
    s.content_type.assign(v.data(), v.size());
  } else if (k == "grpc-timeout") {
    s.timeout.assign(v.data(), v.size());
    s.has_timeout = true;
  } else if (k == "grpc-encoding") {
    s.encoding.assign(v.data(), v.size());
  } else if (!grpc::IsReservedHeader(k)) {
    if (s.metadata.size() >= self->options_.limits.max_metadata_entries) return 0;
    if (grpc::IsBinaryKey(k)) {
      absl::StatusOr<std::string> decoded = grpc::DecodeBinaryValue(v);
      if (!decoded.ok()) return 0;  // dropped, as gRPC does
      s.metadata.emplace_back(std::string(k), *std::move(decoded));
    } else {
      s.metadata.emplace_back(std::string(k), std::string(v));
    }
  }
  return 0;
}

int GrpcServerConnection::OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                                      const uint8_t* data, size_t len, void* user_data) {
  auto* self = static_cast<GrpcServerConnection*>(user_data);
  auto it = self->streams_.find(stream_id);
  if (it == self->streams_.end() || it->second->rejected) return 0;
  Stream& s = *it->second;
  const size_t limit = self->options_.limits.max_frame_size + grpc::kMessagePrefix;
  if (s.body.size() + len > limit) {
    // Answered now, and the rest of the request refused (RST_STREAM
    // NO_ERROR after the reply tells the client to stop sending).
    s.rejected = true;
    s.body.clear();
    s.body.shrink_to_fit();
    s.status_code = absl::StrCat(static_cast<int>(absl::StatusCode::kResourceExhausted));
    s.status_message = grpc::PercentEncode(
        absl::StrCat("request larger than the server's limit of ",
                     self->options_.limits.max_frame_size, " bytes"));
    const nghttp2_nv hdrs[] = {Header(":status", "200"),
                               Header("content-type", "application/grpc"),
                               Header("grpc-status", s.status_code),
                               Header("grpc-message", s.status_message)};
    nghttp2_submit_response(session, stream_id, hdrs, 4, nullptr);
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_NO_ERROR);
    return 0;
  }
  s.body.append(reinterpret_cast<const char*>(data), len);
  return 0;
}

int GrpcServerConnection::OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame,
                                      void* user_data) {
  auto* self = static_cast<GrpcServerConnection*>(user_data);
  if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
    auto it = self->streams_.find(frame->hd.stream_id);
    if (it != self->streams_.end() && !it->second->rejected && !it->second->dispatched) {
      it->second->dispatched = true;
      self->ready_.push_back(frame->hd.stream_id);
    }
  }
  return 0;
}

int GrpcServerConnection::OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t,
                                        void* user_data) {
  auto* self = static_cast<GrpcServerConnection*>(user_data);
  // The client reset the stream (or the reply is done): a call still
  // running is cancelled.
  self->streams_.erase(stream_id);
  self->CancelCall(static_cast<uint32_t>(stream_id));
  return 0;
}

void GrpcServerConnection::DispatchReady() {
  while (!ready_.empty() && !host_closed()) {
    std::vector<int32_t> ready;
    ready.swap(ready_);
    for (int32_t id : ready) {
      if (host_closed()) return;
      auto it = streams_.find(id);
      if (it == streams_.end()) continue;
      Stream& s = *it->second;
      if (s.http_method != "POST") {
        ReplyHttp(id, 405);
        continue;
      }
      if (!absl::StartsWith(s.content_type, "application/grpc")) {
        ReplyHttp(id, 415);
        continue;
      }
      if (s.path.size() < 2 || s.path[0] != '/') {
        Reply(id, 0, absl::UnimplementedError(absl::StrCat("malformed path \"", s.path, "\"")),
              {}, {});
        continue;
      }
      transport::Request req;
      req.method = s.path.substr(1);
      if (s.has_timeout) {
        absl::StatusOr<absl::Duration> t = grpc::ParseTimeout(s.timeout);
        if (!t.ok()) {
          Reply(id, 0, absl::InvalidArgumentError(t.status().message()), {}, {});
          continue;
        }
        req.timeout = *t;
      }
      if (!s.body.empty() && s.body[0] == 1 && !s.encoding.empty() && s.encoding != "identity") {
        Reply(id, 0,
              absl::UnimplementedError(absl::StrCat("compression \"", s.encoding,
                                                    "\" is not supported; send identity")),
              {}, {});
        continue;
      }
      absl::StatusOr<std::string> payload =
          grpc::ParseUnaryMessage(s.body, options_.limits.max_frame_size);
      if (!payload.ok()) {
        Reply(id, 0, payload.status(), {}, {});
        continue;
      }
      s.body.clear();
      s.body.shrink_to_fit();
      req.payload = *std::move(payload);
      req.metadata = std::move(s.metadata);
      Dispatch(static_cast<uint32_t>(id), std::move(req), last_read_);
    }
  }
}

// --- Replies ---

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

void GrpcServerConnection::ReplyHttp(int32_t id, int http_status) {
  const std::string code = absl::StrCat(http_status);
  const nghttp2_nv hdrs[] = {Header(":status", code)};
  nghttp2_submit_response(session_, id, hdrs, 1, nullptr);
  ScheduleFlush();
}

void GrpcServerConnection::Reply(uint32_t id, uint16_t flags, const absl::Status& status,
                                 const Metadata& md, std::string payload) {
  if (host_closed()) return;
  auto it = streams_.find(static_cast<int32_t>(id));
  if (it == streams_.end()) return;  // reset by the client meanwhile
  Stream& s = *it->second;
  if (flags & transport::kFlagRefused) {
    // Never processed: REFUSED_STREAM is how HTTP/2 says so, and gRPC
    // clients retry it by themselves.
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_REFUSED_STREAM);
    ScheduleFlush();
    return;
  }
  std::vector<std::string> keep;  // lowercased keys and encoded values
  keep.reserve(2 * md.size() + 1);
  std::vector<nghttp2_nv> hdrs;
  hdrs.reserve(md.size() + 4);
  hdrs.push_back(Header(":status", "200"));
  hdrs.push_back(Header("content-type", "application/grpc"));
  s.status_code = absl::StrCat(static_cast<int>(status.code()));
  s.status_message = grpc::PercentEncode(status.message());
  if (!status.ok()) {
    // Trailers-only: one HEADERS frame ends the stream.
    hdrs.push_back(Header("grpc-status", s.status_code));
    if (!s.status_message.empty()) hdrs.push_back(Header("grpc-message", s.status_message));
  }
  for (const auto& [k, v] : md) {
    keep.push_back(absl::AsciiStrToLower(k));
    const std::string& key = keep.back();
    if (!grpc::IsValidMetadataKey(key) || grpc::IsReservedHeader(key)) continue;
    if (grpc::IsBinaryKey(key)) {
      keep.push_back(grpc::EncodeBinaryValue(v));
      hdrs.push_back(Header(key, keep.back()));
    } else {
      hdrs.push_back(Header(key, v));
    }
  }
  if (!status.ok()) {
    nghttp2_submit_response(session_, s.id, hdrs.data(), hdrs.size(), nullptr);
  } else {
    s.reply_body.reserve(grpc::kMessagePrefix + payload.size());
    grpc::AppendMessage(&s.reply_body, payload);
    nghttp2_data_provider body;
    body.source.ptr = &s;
    body.read_callback = &ReadReply;
    nghttp2_submit_response(session_, s.id, hdrs.data(), hdrs.size(), &body);
  }
  ScheduleFlush();
}

ssize_t GrpcServerConnection::ReadReply(nghttp2_session* session, int32_t stream_id,
                                        uint8_t* buf, size_t length, uint32_t* data_flags,
                                        nghttp2_data_source* source, void*) {
  auto* s = static_cast<Stream*>(source->ptr);
  const size_t n = std::min(length, s->reply_body.size() - s->reply_offset);
  std::memcpy(buf, s->reply_body.data() + s->reply_offset, n);
  s->reply_offset += n;
  if (s->reply_offset == s->reply_body.size()) {
    // The message is out; the status follows as trailers.
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    const nghttp2_nv trailers[] = {Header("grpc-status", s->status_code)};
    nghttp2_submit_trailer(session, stream_id, trailers, 1);
  }
  return static_cast<ssize_t>(n);
}

}  // namespace meshlib::server
