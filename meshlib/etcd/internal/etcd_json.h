// The JSON shapes of etcd's gateway, read and written without trusting the
// peer: every accessor checks types and every error says which field was
// wrong. Pure functions, unit-tested and shared by the client.
//
// Threading: stateless, except JsonStreamSplitter (one per stream).
#ifndef MESHLIB_ETCD_INTERNAL_ETCD_JSON_H_
#define MESHLIB_ETCD_INTERNAL_ETCD_JSON_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/etcd/etcd_types.h"
#include "nlohmann/json.hpp"

namespace meshlib::etcd_internal {

std::string Base64(absl::string_view bytes);

// An int64 field that the gateway writes as a JSON string ("42") and that
// may also come as a JSON integer. Absent or null: 0.
absl::StatusOr<int64_t> Int64Field(const nlohmann::json& obj, absl::string_view name);

// Parses JSON without exceptions; the error names `what`.
absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text, absl::string_view what);

absl::StatusOr<etcd::KeyValue> ParseKeyValue(const nlohmann::json& kv);
absl::StatusOr<etcd::RangeResponse> ParseRangeResponse(const nlohmann::json& body);
// The object under "result" of a watch stream message.
absl::StatusOr<etcd::WatchResponse> ParseWatchResponse(const nlohmann::json& result);

// The error carried by a gateway error body: {"error": "...", "code": N,
// "message": "..."} (unary) or {"error": {"grpc_code": N, "http_code": H,
// "message": "..."}} (stream). The status code is etcd's gRPC code, else
// follows the HTTP status (5xx UNAVAILABLE, 404 NOT_FOUND, other 4xx
// INVALID_ARGUMENT). Returns OK for a 2xx body with no "error" member.
absl::Status ErrorFromBody(int http_status, const nlohmann::json* body, absl::string_view text);

// Splits a stream of concatenated JSON objects (the gateway's streaming
// format writes one per line; this does not depend on the newlines) into
// whole objects, without parsing them.
class JsonStreamSplitter {
 public:
  explicit JsonStreamSplitter(size_t max_message_bytes) : max_(max_message_bytes) {}
  // Appends `data` and moves every object it completes to `*out`. Errors
  // (INVALID_ARGUMENT for a byte outside an object, RESOURCE_EXHAUSTED for an
  // object over the limit) stick.
  absl::Status Append(absl::string_view data, std::vector<std::string>* out);
  // Bytes of an unfinished object held.
  size_t buffered() const { return buf_.size(); }

 private:
  const size_t max_;
  absl::Status error_;
  std::string buf_;
  std::string closers_;  // the '}' or ']' each open bracket expects, innermost last
  bool in_string_ = false;
  bool escaped_ = false;
};

}  // namespace meshlib::etcd_internal

#endif  // MESHLIB_ETCD_INTERNAL_ETCD_JSON_H_
