#include "meshlib/grpc/server_session.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "meshlib/grpc/wire.h"

namespace meshlib::grpc {

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
struct ServerSession::Stream {
  int32_t id = 0;
  // Request.
  std::string path;
  std::string http_method;
  std::string content_type;
  std::string encoding;
  std::string timeout;  // grpc-timeout as sent
  bool has_timeout = false;
  transport::Metadata metadata;
  std::string body;
  bool answered = false;   // a reply was submitted
  bool reset_after_reply = false;  // the client is still sending: stop it after the reply
  bool delivered = false;  // complete (queued for DeliverReady)
  // Reply.
  std::string reply_body;  // framed message
  size_t reply_offset = 0;
  std::string status_code;
  std::string status_message;
};

ServerSession::ServerSession(Options options, Callbacks callbacks)
    : options_(options), callbacks_(std::move(callbacks)) {}

ServerSession::~ServerSession() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

absl::StatusOr<std::unique_ptr<ServerSession>> ServerSession::Create(Options options,
                                                                     Callbacks callbacks) {
  std::unique_ptr<ServerSession> s(new ServerSession(options, std::move(callbacks)));
  nghttp2_session_callbacks* cbs = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0) {
    return absl::ResourceExhaustedError("HTTP/2 session: out of memory");
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &OnHeader);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &OnDataChunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &OnFrameRecv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &OnStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &OnFrameSend);
  nghttp2_option* opt = NewSessionOptions(/*server=*/true);
  const int rv = nghttp2_session_server_new2(&s->session_, cbs, s.get(), opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    s->session_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat("HTTP/2 session: ", nghttp2_strerror(rv)));
  }
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 64 << 10},
  };
  nghttp2_submit_settings(s->session_, NGHTTP2_FLAG_NONE, settings,
                          sizeof(settings) / sizeof(settings[0]));
  nghttp2_session_set_local_window_size(s->session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  return s;
}

bool ServerSession::Done() const {
  return !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_);
}

void ServerSession::GoAway(absl::string_view why) {
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        reinterpret_cast<const uint8_t*>(why.data()), why.size());
}

// --- Requests ---

int ServerSession::OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame,
                                  void* user_data) {
  auto* self = static_cast<ServerSession*>(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto stream = std::make_unique<Stream>();
  stream->id = frame->hd.stream_id;
  self->streams_[frame->hd.stream_id] = std::move(stream);
  return 0;
}

int ServerSession::OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                            size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                            void* user_data) {
  auto* self = static_cast<ServerSession*>(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto it = self->streams_.find(frame->hd.stream_id);
  if (it == self->streams_.end() || it->second->delivered) return 0;  // trailers: ignored
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
  } else if (!IsReservedHeader(k)) {
    AddReceivedMetadata(&s.metadata, k, v, self->options_.max_metadata_entries);
  }
  return 0;
}

int ServerSession::OnDataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                               size_t len, void* user_data) {
  auto* self = static_cast<ServerSession*>(user_data);
  auto it = self->streams_.find(stream_id);
  if (it == self->streams_.end() || it->second->answered) return 0;
  Stream& s = *it->second;
  if (s.body.size() + len > self->options_.max_message + kMessagePrefix) {
    // Answered now; RST_STREAM NO_ERROR once the reply is out tells the
    // client to stop sending the rest (sent earlier, it would drop the
    // reply).
    s.body.clear();
    s.body.shrink_to_fit();
    self->Reply(stream_id,
                absl::ResourceExhaustedError(absl::StrCat(
                    "request larger than the server's limit of ", self->options_.max_message,
                    " bytes")),
                {}, {}, false);
    s.reset_after_reply = true;
    return 0;
  }
  s.body.append(reinterpret_cast<const char*>(data), len);
  return 0;
}

int ServerSession::OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
  auto* self = static_cast<ServerSession*>(user_data);
  if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
    auto it = self->streams_.find(frame->hd.stream_id);
    if (it != self->streams_.end() && !it->second->answered && !it->second->delivered) {
      it->second->delivered = true;
      self->ready_.push_back(frame->hd.stream_id);
    }
  }
  return 0;
}

int ServerSession::OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t,
                                 void* user_data) {
  auto* self = static_cast<ServerSession*>(user_data);
  if (self->streams_.erase(stream_id) > 0) self->closed_.push_back(stream_id);
  return 0;
}

int ServerSession::OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame,
                               void* user_data) {
  auto* self = static_cast<ServerSession*>(user_data);
  if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
    // INTERNAL_ERROR with no text is also how nghttp2 ends a session that
    // reset streams faster than its rapid-reset limit allows.
    const absl::string_view why(reinterpret_cast<const char*>(frame->goaway.opaque_data),
                                frame->goaway.opaque_data_len);
    self->protocol_error_ =
        absl::StrCat("HTTP/2 protocol error (", nghttp2_http2_strerror(frame->goaway.error_code),
                     ")", why.empty() ? "" : ": ", why);
  }
  if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
    auto it = self->streams_.find(frame->hd.stream_id);
    if (it != self->streams_.end() && it->second->reset_after_reply) {
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                NGHTTP2_NO_ERROR);
    }
  }
  return 0;
}

void ServerSession::DeliverReady() {
  while (!ready_.empty() || !closed_.empty()) {
    std::vector<int32_t> ready;
    ready.swap(ready_);
    for (int32_t id : ready) {
      auto it = streams_.find(id);
      if (it == streams_.end()) continue;
      Stream& s = *it->second;
      if (s.http_method != "POST") {
        Answer(id, 405);
        continue;
      }
      if (!absl::StartsWith(s.content_type, "application/grpc")) {
        Answer(id, 415);
        continue;
      }
      if (s.path.size() < 2 || s.path[0] != '/') {
        Reply(id, absl::UnimplementedError(absl::StrCat("malformed path \"", s.path, "\"")), {},
              {}, false);
        continue;
      }
      Request req;
      req.stream_id = id;
      req.method = s.path.substr(1);
      if (s.has_timeout) {
        absl::StatusOr<absl::Duration> t = ParseTimeout(s.timeout);
        if (!t.ok()) {
          Reply(id, t.status(), {}, {}, false);
          continue;
        }
        req.timeout = *t;
      }
      if (!s.body.empty() && s.body[0] == 1 && s.encoding != "identity") {
        Reply(id,
              absl::UnimplementedError(absl::StrCat("compression \"", s.encoding,
                                                    "\" is not supported; send identity")),
              {}, {}, false);
        continue;
      }
      absl::StatusOr<std::string> payload = ParseUnaryMessage(s.body, options_.max_message);
      if (!payload.ok()) {
        Reply(id, payload.status(), {}, {}, false);
        continue;
      }
      s.body.clear();
      s.body.shrink_to_fit();
      req.payload = *std::move(payload);
      req.metadata = std::move(s.metadata);
      if (callbacks_.on_request) callbacks_.on_request(std::move(req));
    }
    std::vector<int32_t> closed;
    closed.swap(closed_);
    for (int32_t id : closed) {
      if (callbacks_.on_stream_closed) callbacks_.on_stream_closed(id);
    }
  }
}

// --- Replies ---

void ServerSession::Answer(int32_t id, int http_status) {
  auto it = streams_.find(id);
  if (it == streams_.end() || it->second->answered) return;
  it->second->answered = true;
  const std::string code = absl::StrCat(http_status);
  const nghttp2_nv hdrs[] = {Header(":status", code)};
  nghttp2_submit_response(session_, id, hdrs, 1, nullptr);
}

void ServerSession::Reply(int32_t id, const absl::Status& status, const transport::Metadata& md,
                          absl::string_view payload, bool refused) {
  auto it = streams_.find(id);
  if (it == streams_.end() || it->second->answered) return;  // reset by the client meanwhile
  Stream& s = *it->second;
  s.answered = true;
  if (refused) {
    // Never processed: REFUSED_STREAM is how HTTP/2 says so, and gRPC
    // clients retry it by themselves.
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
    return;
  }
  std::vector<std::string> keep;  // lowercased keys and encoded values
  keep.reserve(2 * md.size());
  std::vector<nghttp2_nv> hdrs;
  hdrs.reserve(md.size() + 4);
  hdrs.push_back(Header(":status", "200"));
  hdrs.push_back(Header("content-type", "application/grpc"));
  s.status_code = absl::StrCat(static_cast<int>(status.code()));
  s.status_message = PercentEncode(status.message());
  if (!status.ok()) {
    // Trailers-only: one HEADERS frame ends the stream.
    hdrs.push_back(Header("grpc-status", s.status_code));
    if (!s.status_message.empty()) hdrs.push_back(Header("grpc-message", s.status_message));
  }
  for (const auto& [k, v] : md) {
    keep.push_back(absl::AsciiStrToLower(k));
    const std::string& key = keep.back();
    if (!IsValidMetadataKey(key) || IsReservedHeader(key)) continue;
    if (IsBinaryKey(key)) {
      keep.push_back(EncodeBinaryValue(v));
      hdrs.push_back(Header(key, keep.back()));
    } else {
      hdrs.push_back(Header(key, v));
    }
  }
  if (!status.ok()) {
    nghttp2_submit_response(session_, id, hdrs.data(), hdrs.size(), nullptr);
    return;
  }
  s.reply_body.reserve(kMessagePrefix + payload.size());
  AppendMessage(&s.reply_body, payload);
  nghttp2_data_provider body;
  body.source.ptr = &s;
  body.read_callback = &ReadReply;
  nghttp2_submit_response(session_, id, hdrs.data(), hdrs.size(), &body);
}

ssize_t ServerSession::ReadReply(nghttp2_session* session, int32_t stream_id, uint8_t* buf,
                                 size_t length, uint32_t* data_flags, nghttp2_data_source* source,
                                 void*) {
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

}  // namespace meshlib::grpc
