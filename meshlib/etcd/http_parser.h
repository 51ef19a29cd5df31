// HttpResponseParser: an incremental, strict parser of one HTTP/1.x response,
// as a client reads it off a socket in pieces of any size.
//
//   HttpResponseParser p(HttpParserLimits{});
//   std::string body;
//   absl::Status s = p.Feed(bytes_from_socket, &body);   // body bytes are appended
//   if (!s.ok()) CloseConnection(s);                      // names what was wrong
//   if (p.head_complete()) Use(p.status_code(), p.FindHeader("content-type"));
//   if (p.complete()) Done();
//   ...
//   s = p.OnEof();  // peer closed: completes a close-delimited body, or fails
//
// What it accepts: "HTTP/1.0" and "HTTP/1.1" status lines, CRLF line endings
// only, token header names, and a body delimited by Content-Length,
// `Transfer-Encoding: chunked` (with chunk extensions and trailers) or the
// end of the connection. What it rejects, with an INVALID_ARGUMENT that
// names the problem: malformed status lines, bare CR or LF, obsolete line
// folding, whitespace before a header's colon, control characters, bad
// chunk sizes, Content-Length values that disagree, a Content-Length
// together with Transfer-Encoding, codings other than chunked, and any byte
// after the end of the response (requests are not pipelined). Limits give
// RESOURCE_EXHAUSTED.
//
// It is a pure state machine (no I/O, no allocation beyond the input it must
// hold), so it can be fuzzed on its own: tests/fuzz/http_response_parser_fuzzer.cc.
//
// Threading: not thread-safe; one parser per response.
#ifndef MESHLIB_ETCD_HTTP_PARSER_H_
#define MESHLIB_ETCD_HTTP_PARSER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace meshlib::etcd {

struct HttpHeader {
  std::string name;  // as sent; compare case-insensitively
  std::string value;  // without surrounding whitespace
};

struct HttpParserLimits {
  // Status line plus header lines, including the CRLFs; the trailers of a
  // chunked body have a budget of the same size. Default 64 KiB.
  size_t max_head_bytes = 64 * 1024;
  // Header fields in the head (and, separately, in the trailers). Default 100.
  size_t max_headers = 100;
  // Decoded body bytes. 0 = no limit, for long-lived streams whose consumer
  // bounds what it buffers itself. Default 16 MiB.
  uint64_t max_body_bytes = 16 * 1024 * 1024;
  // A chunk-size line, extensions included. Default 4 KiB.
  size_t max_chunk_line_bytes = 4096;
};

class HttpResponseParser {
 public:
  explicit HttpResponseParser(HttpParserLimits limits = {});

  // Consumes all of `data`, appending decoded body bytes to `*body`. After
  // an error, every later call returns that same error.
  absl::Status Feed(absl::string_view data, std::string* body);
  // The peer closed its side: completes a body that runs to the end of the
  // connection; fails if the response is incomplete (the message says where
  // it stopped).
  absl::Status OnEof();

  // The final status line and headers were read (stays true after a later
  // error in the body).
  bool head_complete() const { return head_done_; }
  bool complete() const { return state_ == State::kComplete; }
  const absl::Status& error() const { return error_; }

  // After head_complete().
  int status_code() const { return status_code_; }
  const std::string& reason() const { return reason_; }
  int minor_version() const { return minor_version_; }  // 0 or 1
  const std::vector<HttpHeader>& headers() const { return headers_; }
  // After complete(), for a chunked body.
  const std::vector<HttpHeader>& trailers() const { return trailers_; }
  // First value of header `name` (case-insensitive), or nullptr.
  const std::string* FindHeader(absl::string_view name) const;
  // Decoded body bytes so far.
  uint64_t body_bytes() const { return body_bytes_; }
  // True when the body's length is known only at the end of the connection.
  bool body_until_close() const { return state_ == State::kUntilClose; }

 private:
  enum class State {
    kHead,
    kLength,          // Content-Length body
    kChunkSize,       // reading a chunk-size line
    kChunkData,
    kChunkDataEnd,    // the CRLF after a chunk's data
    kTrailers,
    kUntilClose,      // body delimited by the end of the connection
    kComplete,
    kError,
  };

  absl::Status Fail(absl::Status s);
  absl::Status ParseHead(absl::string_view head);
  absl::Status StartBody();
  absl::Status AppendBody(absl::string_view data, std::string* body);
  absl::Status ParseChunkSizeLine(absl::string_view line);
  absl::Status ParseTrailers(absl::string_view block);

  const HttpParserLimits limits_;
  State state_ = State::kHead;
  absl::Status error_;

  std::string buf_;         // head, chunk-size line or trailers being collected
  int informational_ = 0;   // 1xx heads skipped
  bool head_done_ = false;
  int status_code_ = 0;
  int minor_version_ = 1;
  std::string reason_;
  std::vector<HttpHeader> headers_;
  std::vector<HttpHeader> trailers_;
  uint64_t remaining_ = 0;  // of the Content-Length body or of the current chunk
  size_t crlf_seen_ = 0;    // bytes of the CRLF after chunk data
  uint64_t body_bytes_ = 0;
};

}  // namespace meshlib::etcd

#endif  // MESHLIB_ETCD_HTTP_PARSER_H_
