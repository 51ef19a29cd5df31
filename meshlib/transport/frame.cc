#include "meshlib/transport/frame.h"

#include <algorithm>
#include <cstring>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/strings/str_cat.h"
#include "meshlib/core/fast_time.h"

namespace meshlib::transport {
namespace {

// --- encoding helpers ---

void PutU16(char* p, uint16_t v) {
  p[0] = static_cast<char>(v >> 8);
  p[1] = static_cast<char>(v);
}

void PutU32(char* p, uint32_t v) {
  p[0] = static_cast<char>(v >> 24);
  p[1] = static_cast<char>(v >> 16);
  p[2] = static_cast<char>(v >> 8);
  p[3] = static_cast<char>(v);
}

uint16_t GetU16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint16_t>((u[0] << 8) | u[1]);
}

uint32_t GetU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) |
         uint32_t{u[3]};
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Writers into space already sized for them (a frame is sized once, then
// filled in place: one resize where appending field by field checks the
// capacity at every step). Each returns the position after what it wrote.
char* WriteVarint(char* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

char* WriteBytes(char* p, absl::string_view s) {
  p = WriteVarint(p, s.size());
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

char* WriteMetadata(char* p, const Metadata& md) {
  p = WriteVarint(p, md.size());
  for (const auto& [k, v] : md) {
    p = WriteBytes(p, k);
    p = WriteBytes(p, v);
  }
  return p;
}

// Grows `out` by `n` bytes and returns where they start.
char* Extend(std::string* out, size_t n) {
  const size_t at = out->size();
  out->resize(at + n);
  return &(*out)[at];
}

void PutVarint(std::string* out, uint64_t v) {
  char buf[10];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, n);
}

void PutBytes(std::string* out, absl::string_view s) {
  PutVarint(out, s.size());
  out->append(s.data(), s.size());
}

size_t BytesSize(absl::string_view s) { return VarintSize(s.size()) + s.size(); }

size_t MetadataSize(const Metadata& md) {
  size_t n = VarintSize(md.size());
  for (const auto& [k, v] : md) n += BytesSize(k) + BytesSize(v);
  return n;
}

char* WriteHeader(char* h, FrameType type, uint16_t flags, uint32_t stream_id,
                  size_t length) {
  h[0] = static_cast<char>(kProtocolVersion);
  h[1] = static_cast<char>(type);
  PutU16(h + 2, flags);
  PutU32(h + 4, stream_id);
  PutU32(h + 8, static_cast<uint32_t>(length));
  return h + kFrameHeaderSize;
}

// Appends a header; returns nothing, the caller appends exactly `length` bytes.
void PutHeader(std::string* out, FrameType type, uint16_t flags,
               uint32_t stream_id, size_t length) {
  char h[kFrameHeaderSize];
  WriteHeader(h, type, flags, stream_id, length);
  out->append(h, sizeof(h));
}

uint64_t TimeoutMicros(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return 0;
  int64_t us = core::NanosOf(timeout) / 1000;
  if (us < 1) return 1;
  // Past the protocol's range (about 142 years) a deadline is as good as none
  // to wait for; clamp rather than send what the decoder rejects.
  return std::min<uint64_t>(static_cast<uint64_t>(us), kMaxTimeoutMicros);
}

// --- decoding helpers: a cursor over a body that never reads past its end ---

// Each read returns false on malformed input and keeps the reason in
// error(), built only then: a well-formed body (the common case, on every
// call) pays for no absl::Status and no message.
class Reader {
 public:
  explicit Reader(absl::string_view in) : p_(in.data()), end_(in.data() + in.size()) {}

  bool Varint(absl::string_view field, uint64_t* v) {
    // Most varints on the wire (lengths of short strings, counts, codes)
    // are one byte.
    if (ABSL_PREDICT_TRUE(p_ != end_ && static_cast<uint8_t>(*p_) < 0x80)) {
      *v = static_cast<uint8_t>(*p_++);
      return true;
    }
    return VarintSlow(field, v);
  }

  // A length-prefixed string, viewed in place.
  bool Bytes(absl::string_view field, size_t max_len, absl::string_view* out) {
    uint64_t len;
    if (!Varint(field, &len)) return false;
    const size_t left = static_cast<size_t>(end_ - p_);
    if (ABSL_PREDICT_FALSE(len > left)) {
      return Fail(absl::StrCat(field, ": length ", len, " exceeds the ", left,
                               " bytes left in the frame"));
    }
    if (ABSL_PREDICT_FALSE(len > max_len)) {
      return Fail(absl::StrCat(field, ": length ", len, " exceeds the limit of ", max_len));
    }
    *out = absl::string_view(p_, static_cast<size_t>(len));
    p_ += len;
    return true;
  }

  bool Bytes(absl::string_view field, size_t max_len, std::string* out) {
    absl::string_view v;
    if (!Bytes(field, max_len, &v)) return false;
    out->assign(v.data(), v.size());
    return true;
  }

  bool ReadMetadata(const FrameLimits& limits, Metadata* md) {
    uint64_t n;
    if (!Varint("metadata count", &n)) return false;
    if (n == 0) return true;
    if (n > limits.max_metadata_entries) {
      return Fail(absl::StrCat("metadata count ", n, " exceeds the limit of ",
                               limits.max_metadata_entries));
    }
    // Every entry takes at least two bytes (two empty lengths): refuse a count
    // the body cannot hold before allocating for it.
    const size_t left = static_cast<size_t>(end_ - p_);
    if (n > left / 2) {
      return Fail(absl::StrCat("metadata count ", n, " cannot fit in the ", left,
                               " bytes left in the frame"));
    }
    md->reserve(md->size() + n);
    for (uint64_t i = 0; i < n; ++i) {
      absl::string_view k, v;
      if (!Bytes("metadata key", static_cast<size_t>(end_ - p_), &k)) return false;
      if (!Bytes("metadata value", static_cast<size_t>(end_ - p_), &v)) return false;
      md->emplace_back(std::piecewise_construct, std::forward_as_tuple(k.data(), k.size()),
                       std::forward_as_tuple(v.data(), v.size()));
    }
    return true;
  }

  absl::string_view Rest() const { return absl::string_view(p_, static_cast<size_t>(end_ - p_)); }

  // Why the last read failed.
  absl::Status error() const { return error_; }

 private:
  bool VarintSlow(absl::string_view field, uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return Fail(absl::StrCat(field, ": truncated varint"));
      const uint8_t b = static_cast<uint8_t>(*p_++);
      if (shift == 63 && b > 1) break;  // would overflow 64 bits
      result |= uint64_t{b & 0x7fu} << shift;
      if ((b & 0x80) == 0) {
        *v = result;
        return true;
      }
    }
    return Fail(absl::StrCat(field, ": varint overflows 64 bits"));
  }

  ABSL_ATTRIBUTE_NOINLINE bool Fail(std::string message) {
    error_ = absl::InvalidArgumentError(message);
    return false;
  }

  const char* p_;
  const char* const end_;
  absl::Status error_;
};

}  // namespace

const char* FrameTypeName(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kRequest: return "REQUEST";
    case FrameType::kResponse: return "RESPONSE";
    case FrameType::kCancel: return "CANCEL";
    case FrameType::kPing: return "PING";
    case FrameType::kGoAway: return "GOAWAY";
  }
  return "UNKNOWN";
}

absl::Status DecodeFrame(absl::string_view in, const FrameLimits& limits,
                         FrameView* frame, size_t* consumed) {
  *consumed = 0;
  if (in.empty()) return absl::OkStatus();
  uint8_t version = static_cast<uint8_t>(in[0]);
  if (version != kProtocolVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported protocol version ", version, " (this side speaks ",
        kProtocolVersion, "); not a meshlib peer, or garbage on the stream"));
  }
  if (in.size() < kFrameHeaderSize) return absl::OkStatus();
  FrameHeader h;
  h.version = version;
  h.type = static_cast<uint8_t>(in[1]);
  h.flags = GetU16(in.data() + 2);
  h.stream_id = GetU32(in.data() + 4);
  h.length = GetU32(in.data() + 8);
  if (h.length > limits.max_frame_size) {
    return absl::ResourceExhaustedError(
        absl::StrCat(FrameTypeName(h.type), " frame on stream ", h.stream_id,
                     " has length ", h.length, ", over the max_frame_size limit of ",
                     limits.max_frame_size));
  }
  if (in.size() - kFrameHeaderSize < h.length) return absl::OkStatus();
  frame->header = h;
  frame->body = in.substr(kFrameHeaderSize, h.length);
  *consumed = kFrameHeaderSize + h.length;
  return absl::OkStatus();
}

absl::Status ParseRequestBody(absl::string_view body, const FrameLimits& limits,
                              Request* req) {
  Reader r(body);
  absl::string_view method;
  if (!r.Bytes("method", limits.max_method_length, &method)) return r.error();
  if (method.empty()) return absl::InvalidArgumentError("method: empty");
  uint64_t timeout_us;
  if (!r.Varint("deadline", &timeout_us)) return r.error();
  if (timeout_us > kMaxTimeoutMicros) {
    return absl::InvalidArgumentError(
        absl::StrCat("deadline: ", timeout_us, "us is out of range"));
  }
  if (!r.ReadMetadata(limits, &req->metadata)) return r.error();
  req->method.assign(method.data(), method.size());
  req->timeout = timeout_us == 0 ? absl::InfiniteDuration()
                                 : absl::Microseconds(static_cast<int64_t>(timeout_us));
  const absl::string_view payload = r.Rest();
  req->payload.assign(payload.data(), payload.size());
  return absl::OkStatus();
}

absl::StatusOr<Request> ParseRequestBody(absl::string_view body,
                                         const FrameLimits& limits) {
  Request req;
  if (absl::Status s = ParseRequestBody(body, limits, &req); !s.ok()) return s;
  return req;
}

absl::Status ParseResponseBody(absl::string_view body, const FrameLimits& limits,
                               ResponseView* resp) {
  Reader r(body);
  uint64_t code;
  if (!r.Varint("status code", &code)) return r.error();
  if (code > static_cast<uint64_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::InvalidArgumentError(
        absl::StrCat("status code: ", code, " is not a canonical code (0-16)"));
  }
  resp->code = static_cast<absl::StatusCode>(code);
  if (!r.Bytes("status message", body.size(), &resp->message)) return r.error();
  if (!r.ReadMetadata(limits, resp->metadata)) return r.error();
  resp->payload = r.Rest();
  return absl::OkStatus();
}

absl::StatusOr<Response> ParseResponseBody(absl::string_view body,
                                           const FrameLimits& limits) {
  Response resp;
  ResponseView view;
  view.metadata = &resp.metadata;
  if (absl::Status s = ParseResponseBody(body, limits, &view); !s.ok()) return s;
  resp.code = view.code;
  resp.message.assign(view.message.data(), view.message.size());
  resp.payload.assign(view.payload.data(), view.payload.size());
  return resp;
}

absl::StatusOr<GoAway> ParseGoAwayBody(absl::string_view body) {
  if (body.size() < 4) {
    return absl::InvalidArgumentError("GOAWAY: body shorter than 4 bytes");
  }
  GoAway g;
  g.last_stream_id = GetU32(body.data());
  Reader r(body.substr(4));
  uint64_t code;
  if (!r.Varint("GOAWAY code", &code)) return r.error();
  if (code > static_cast<uint64_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::InvalidArgumentError(absl::StrCat("GOAWAY code: ", code, " out of range"));
  }
  g.code = static_cast<absl::StatusCode>(code);
  if (!r.Bytes("GOAWAY message", body.size(), &g.message)) return r.error();
  return g;
}

size_t RequestFrameSize(absl::string_view method, absl::Duration timeout,
                        const Metadata& metadata, absl::string_view payload) {
  return kFrameHeaderSize + BytesSize(method) + VarintSize(TimeoutMicros(timeout)) +
         MetadataSize(metadata) + payload.size();
}

void AppendRequest(std::string* out, uint32_t stream_id, absl::string_view method,
                   absl::Duration timeout, const Metadata& metadata,
                   absl::string_view payload) {
  uint64_t us = TimeoutMicros(timeout);
  size_t body = BytesSize(method) + VarintSize(us) + MetadataSize(metadata) + payload.size();
  char* p = Extend(out, kFrameHeaderSize + body);
  p = WriteHeader(p, FrameType::kRequest, 0, stream_id, body);
  p = WriteBytes(p, method);
  p = WriteVarint(p, us);
  p = WriteMetadata(p, metadata);
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
}

void AppendResponse(std::string* out, uint32_t stream_id, uint16_t flags,
                    absl::StatusCode code, absl::string_view message,
                    const Metadata& metadata, absl::string_view payload) {
  uint64_t c = static_cast<uint64_t>(code);
  size_t body = VarintSize(c) + BytesSize(message) + MetadataSize(metadata) + payload.size();
  char* p = Extend(out, kFrameHeaderSize + body);
  p = WriteHeader(p, FrameType::kResponse, flags, stream_id, body);
  p = WriteVarint(p, c);
  p = WriteBytes(p, message);
  p = WriteMetadata(p, metadata);
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
}

void AppendCancel(std::string* out, uint32_t stream_id) {
  PutHeader(out, FrameType::kCancel, 0, stream_id, 0);
}

void AppendPing(std::string* out, bool ack, uint64_t opaque) {
  PutHeader(out, FrameType::kPing, ack ? kFlagPingAck : 0, 0, 8);
  char b[8];
  PutU32(b, static_cast<uint32_t>(opaque >> 32));
  PutU32(b + 4, static_cast<uint32_t>(opaque));
  out->append(b, 8);
}

void AppendGoAway(std::string* out, uint32_t last_stream_id, absl::StatusCode code,
                  absl::string_view message) {
  uint64_t c = static_cast<uint64_t>(code);
  size_t body = 4 + VarintSize(c) + BytesSize(message);
  PutHeader(out, FrameType::kGoAway, 0, 0, body);
  char b[4];
  PutU32(b, last_stream_id);
  out->append(b, 4);
  PutVarint(out, c);
  PutBytes(out, message);
}

}  // namespace meshlib::transport
