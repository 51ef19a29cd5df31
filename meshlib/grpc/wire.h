// gRPC on HTTP/2, the parts both sides share: message framing,
// the grpc-timeout header, status codes from HTTP statuses and RST_STREAM
// codes, percent-encoded grpc-message, base64 for binary metadata, and the
// nghttp2 limits both sides set.
// docs/grpc.md describes the wire format these follow.
//
//   std::string body;
//   grpc::AppendMessage(&body, "hello");            // 0x00, length, bytes
//   absl::StatusOr<std::string> m = grpc::ParseUnaryMessage(body, 4 << 20);
//   std::string t = grpc::EncodeTimeout(absl::Milliseconds(250));   // "250000u"
//
// Threading: stateless, thread-safe.
#ifndef MESHLIB_GRPC_WIRE_H_
#define MESHLIB_GRPC_WIRE_H_

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace meshlib::grpc {

// Length-prefixed message: 1 byte compressed flag, 4 bytes big-endian
// length, then the bytes.
constexpr size_t kMessagePrefix = 5;

// Appends one uncompressed message holding `payload` to `out`.
void AppendMessage(std::string* out, absl::string_view payload);

// The one message of a unary call's body. INTERNAL names what is wrong: a
// truncated prefix or message, a compressed message (no compression is
// negotiated), more than one message, or none. RESOURCE_EXHAUSTED when
// the message is longer than `max_size`.
absl::StatusOr<std::string> ParseUnaryMessage(absl::string_view body, size_t max_size);

// True when `body` holds at least a complete first message, or cannot (its
// prefix claims more than `max_size`). Lets a reader stop buffering early.
// Sets *declared to the first message's length once its prefix is there.
bool MessagePrefixComplete(absl::string_view body, uint32_t* declared);

// grpc-timeout: at most 8 digits and a unit (H, M, S, m, u, n), in the
// finest unit that fits, rounded up so the server never sees less time
// than the caller has. Non-positive durations encode as "1n".
std::string EncodeTimeout(absl::Duration timeout);
// Parses a grpc-timeout value; INVALID_ARGUMENT naming the value if it is
// malformed.
absl::StatusOr<absl::Duration> ParseTimeout(absl::string_view value);

// The status of a response without grpc-status, from its HTTP status (the
// mapping gRPC documents: 400 INTERNAL, 401 UNAUTHENTICATED, 403
// PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, any
// other UNKNOWN).
absl::StatusCode CodeForHttpStatus(int http_status);

// The status of a stream reset by the peer with HTTP/2 error `code` before
// its trailers arrived. *not_processed is set for REFUSED_STREAM (the
// server did not start the call: safe to retry).
absl::Status StatusForReset(uint32_t code, absl::string_view peer, bool* not_processed);

// Parses grpc-status ("0".."16"); nullopt-like failure as UNKNOWN for
// anything else (a peer that invents codes).
absl::StatusCode ParseStatusCode(absl::string_view value);

// grpc-message: bytes outside printable ASCII (and '%') as %XX.
std::string PercentEncode(absl::string_view message);
// Decodes %XX; malformed escapes are kept as they are.
std::string PercentDecode(absl::string_view message);

// Binary metadata ("-bin" keys) travel as base64; sent without padding,
// accepted with or without it.
bool IsBinaryKey(absl::string_view key);
std::string EncodeBinaryValue(absl::string_view value);
absl::StatusOr<std::string> DecodeBinaryValue(absl::string_view value);

// Adds a received header to `md` as metadata: a "-bin" value decoded (an
// undecodable one is dropped, as gRPC does); nothing once `md` holds
// `max_entries`.
void AddReceivedMetadata(std::vector<std::pair<std::string, std::string>>* md,
                         absl::string_view key, absl::string_view value, size_t max_entries);

// A new nghttp2_option (the caller deletes it) with the limits both sides
// set against a misbehaving peer: at most 8 CONTINUATION frames per header
// block, 32 entries per SETTINGS frame, 1,000 queued acknowledgements
// (SETTINGS and PING floods), header blocks sent of at most 64 KiB. A
// `server` also limits how fast a client may reset streams (bursts of
// 1,000, then 33 per second: CVE-2023-44487, "rapid reset").
nghttp2_option* NewSessionOptions(bool server);

// Metadata keys meshlib never forwards as application metadata: HTTP/2
// pseudo-headers and the headers gRPC itself defines.
bool IsReservedHeader(absl::string_view key);

// A valid header name for metadata: lowercase letters, digits, '-', '_'
// and '.', not empty.
bool IsValidMetadataKey(absl::string_view key);

}  // namespace meshlib::grpc

#endif  // MESHLIB_GRPC_WIRE_H_
