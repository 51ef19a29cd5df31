#include "meshlib/transport/frame.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

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
  int64_t us = absl::ToInt64Microseconds(timeout);
  if (us < 1) return 1;
  // Past the protocol's range (about 142 years) a deadline is as good as none
  // to wait for; clamp rather than send what the decoder rejects.
  return std::min<uint64_t>(static_cast<uint64_t>(us), kMaxTimeoutMicros);
}

// --- decoding helpers: a cursor over a body that never reads past its end ---

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}

  absl::Status Varint(absl::string_view field, uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (in_.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": truncated varint"));
      }
      uint8_t b = static_cast<uint8_t>(in_[0]);
      in_.remove_prefix(1);
      if (shift == 63 && b > 1) break;  // would overflow 64 bits
      result |= uint64_t{b & 0x7fu} << shift;
      if ((b & 0x80) == 0) {
        *v = result;
        return absl::OkStatus();
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(field, ": varint overflows 64 bits"));
  }

  absl::Status Bytes(absl::string_view field, size_t max_len, std::string* out) {
    uint64_t len;
    if (auto s = Varint(field, &len); !s.ok()) return s;
    if (len > in_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": length ", len, " exceeds the ", in_.size(), " bytes left in the frame"));
    }
    if (len > max_len) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": length ", len, " exceeds the limit of ", max_len));
    }
    out->assign(in_.data(), len);
    in_.remove_prefix(len);
    return absl::OkStatus();
  }

  absl::Status ReadMetadata(const FrameLimits& limits, Metadata* md) {
    uint64_t n;
    if (auto s = Varint("metadata count", &n); !s.ok()) return s;
    if (n > limits.max_metadata_entries) {
      return absl::InvalidArgumentError(
          absl::StrCat("metadata count ", n, " exceeds the limit of ",
                       limits.max_metadata_entries));
    }
    // Every entry takes at least two bytes (two empty lengths): refuse a count
    // the body cannot hold before allocating for it.
    if (n > in_.size() / 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metadata count ", n, " cannot fit in the ", in_.size(), " bytes left in the frame"));
    }
    md->resize(n);
    for (uint64_t i = 0; i < n; ++i) {
      if (auto s = Bytes("metadata key", in_.size(), &(*md)[i].first); !s.ok()) return s;
      if (auto s = Bytes("metadata value", in_.size(), &(*md)[i].second); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::string_view Rest() const { return in_; }

 private:
  absl::string_view in_;
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

absl::StatusOr<Request> ParseRequestBody(absl::string_view body,
                                         const FrameLimits& limits) {
  Request req;
  Reader r(body);
  if (auto s = r.Bytes("method", limits.max_method_length, &req.method); !s.ok()) {
    return s;
  }
  if (req.method.empty()) return absl::InvalidArgumentError("method: empty");
  uint64_t timeout_us;
  if (auto s = r.Varint("deadline", &timeout_us); !s.ok()) return s;
  if (timeout_us != 0) {
    if (timeout_us > kMaxTimeoutMicros) {
      return absl::InvalidArgumentError(
          absl::StrCat("deadline: ", timeout_us, "us is out of range"));
    }
    req.timeout = absl::Microseconds(static_cast<int64_t>(timeout_us));
  }
  if (auto s = r.ReadMetadata(limits, &req.metadata); !s.ok()) return s;
  req.payload.assign(r.Rest().data(), r.Rest().size());
  return req;
}

absl::StatusOr<Response> ParseResponseBody(absl::string_view body,
                                           const FrameLimits& limits) {
  Response resp;
  Reader r(body);
  uint64_t code;
  if (auto s = r.Varint("status code", &code); !s.ok()) return s;
  if (code > static_cast<uint64_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::InvalidArgumentError(
        absl::StrCat("status code: ", code, " is not a canonical code (0-16)"));
  }
  resp.code = static_cast<absl::StatusCode>(code);
  if (auto s = r.Bytes("status message", body.size(), &resp.message); !s.ok()) {
    return s;
  }
  if (auto s = r.ReadMetadata(limits, &resp.metadata); !s.ok()) return s;
  resp.payload.assign(r.Rest().data(), r.Rest().size());
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
  if (auto s = r.Varint("GOAWAY code", &code); !s.ok()) return s;
  if (code > static_cast<uint64_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::InvalidArgumentError(absl::StrCat("GOAWAY code: ", code, " out of range"));
  }
  g.code = static_cast<absl::StatusCode>(code);
  if (auto s = r.Bytes("GOAWAY message", body.size(), &g.message); !s.ok()) return s;
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
