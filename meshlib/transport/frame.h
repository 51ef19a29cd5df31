// Wire protocol v1: frame layout, encoders and a strict decoder.
//
// The byte-level specification is docs/protocol.md; this file implements it.
// A frame is a 12-byte header (version, type, flags, stream id, body length,
// big-endian) followed by `length` body bytes.
//
//   std::string out;
//   AppendRequest(&out, /*stream_id=*/1, "Echo/Say", absl::Milliseconds(250), {}, "hi");
//   FrameView f;
//   size_t used;
//   absl::Status s = DecodeFrame(out, FrameLimits{}, &f, &used);  // OK, used == out.size()
//   absl::StatusOr<Request> req = ParseRequestBody(f.body, FrameLimits{});
//
// Decoding never trusts the peer: every length is checked against the bytes
// present and against FrameLimits, and every failure is an absl::Status naming
// what was wrong. Threading: all functions are pure and thread-safe.
#ifndef MESHLIB_TRANSPORT_FRAME_H_
#define MESHLIB_TRANSPORT_FRAME_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace meshlib::transport {

inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderSize = 12;
inline constexpr uint32_t kDefaultMaxFrameSize = 16u << 20;  // 16 MiB
// Largest deadline a REQUEST carries (2^52 us, about 142 years). Encoders
// clamp longer timeouts to it; decoders reject larger values.
inline constexpr uint64_t kMaxTimeoutMicros = uint64_t{1} << 52;

enum class FrameType : uint8_t {
  kRequest = 1,
  kResponse = 2,
  kCancel = 3,
  kPing = 4,
  kGoAway = 5,
};

// Flag bits (header `flags`).
inline constexpr uint16_t kFlagPingAck = 0x1;   // PING: this is the reply
inline constexpr uint16_t kFlagRefused = 0x1;   // RESPONSE: never processed, safe to retry

// Response metadata a server sets to steer the client's retries (as gRPC's
// grpc-retry-pushback-ms): a decimal count of milliseconds to wait before
// retrying this call, or a negative number (or anything unparseable) for
// "do not retry it". Absent: the client's own backoff applies.
inline constexpr char kRetryPushbackKey[] = "meshlib-retry-pushback-ms";
// The method every meshlib server answers for active health checks: OK
// with payload "SERVING", or UNAVAILABLE "NOT_SERVING" while it drains.
inline constexpr char kHealthCheckMethod[] = "meshlib.Health/Check";
// The standard gRPC health service's method (grpc.health.v1): services
// called over gRPC are probed with it; meshlib servers answer it too.
inline constexpr char kGrpcHealthCheckMethod[] = "grpc.health.v1.Health/Check";

// Limits applied while decoding; a frame over a limit is an error.
struct FrameLimits {
  // Largest body accepted, in bytes. Default 16 MiB; at most 2^31.
  uint32_t max_frame_size = kDefaultMaxFrameSize;
  // Most metadata entries in one request or response. Default 64.
  uint32_t max_metadata_entries = 64;
  // Longest method name. Default 256 bytes.
  uint32_t max_method_length = 256;
};

using Metadata = std::vector<std::pair<std::string, std::string>>;

struct FrameHeader {
  uint8_t version = kProtocolVersion;
  uint8_t type = 0;  // a FrameType, or an unknown value to be skipped
  uint16_t flags = 0;
  uint32_t stream_id = 0;
  uint32_t length = 0;
};

// A decoded frame; `body` points into the caller's buffer.
struct FrameView {
  FrameHeader header;
  absl::string_view body;
};

struct Request {
  std::string method;
  // Time the caller still waits, as sent; InfiniteDuration when none was set.
  absl::Duration timeout = absl::InfiniteDuration();
  Metadata metadata;
  std::string payload;
};

struct Response {
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;
  Metadata metadata;
  std::string payload;
};

struct GoAway {
  uint32_t last_stream_id = 0;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;
};

// Decodes one frame from the front of `in`.
//  - OK: `*frame` is set and `*consumed` is its size (header + body).
//  - OK with *consumed == 0: `in` holds only part of a frame; read more.
//  - error (INVALID_ARGUMENT / RESOURCE_EXHAUSTED): the stream is corrupt or
//    over a limit and must be closed. Detected as early as possible: a wrong
//    version byte fails on the first byte, an oversized length on the header.
absl::Status DecodeFrame(absl::string_view in, const FrameLimits& limits,
                         FrameView* frame, size_t* consumed);

// Body parsers. Errors name the field that was malformed.
absl::StatusOr<Request> ParseRequestBody(absl::string_view body,
                                         const FrameLimits& limits);
absl::StatusOr<Response> ParseResponseBody(absl::string_view body,
                                           const FrameLimits& limits);

// The same parsers for the path of every call, filling what the caller
// keeps instead of returning a new value. `*req` must be default-constructed
// (its metadata empty); on error its fields are unspecified.
absl::Status ParseRequestBody(absl::string_view body, const FrameLimits& limits,
                              Request* req);

// A response whose message and payload point into the parsed body; its
// metadata is appended to `*metadata`, which must be set (and is usually
// empty).
struct ResponseView {
  absl::StatusCode code = absl::StatusCode::kOk;
  absl::string_view message;
  Metadata* metadata = nullptr;
  absl::string_view payload;
};
absl::Status ParseResponseBody(absl::string_view body, const FrameLimits& limits,
                               ResponseView* resp);
absl::StatusOr<GoAway> ParseGoAwayBody(absl::string_view body);

// Encoders append one whole frame to `*out`.
void AppendRequest(std::string* out, uint32_t stream_id,
                   absl::string_view method, absl::Duration timeout,
                   const Metadata& metadata, absl::string_view payload);
void AppendResponse(std::string* out, uint32_t stream_id, uint16_t flags,
                    absl::StatusCode code, absl::string_view message,
                    const Metadata& metadata, absl::string_view payload);
void AppendCancel(std::string* out, uint32_t stream_id);
void AppendPing(std::string* out, bool ack, uint64_t opaque);
void AppendGoAway(std::string* out, uint32_t last_stream_id,
                  absl::StatusCode code, absl::string_view message);

// Size in bytes of the frame AppendRequest would produce.
size_t RequestFrameSize(absl::string_view method, absl::Duration timeout,
                        const Metadata& metadata, absl::string_view payload);

const char* FrameTypeName(uint8_t type);

}  // namespace meshlib::transport

#endif  // MESHLIB_TRANSPORT_FRAME_H_
