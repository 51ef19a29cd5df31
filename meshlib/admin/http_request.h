// A strict, incremental parser of HTTP/1.x requests for the admin endpoint.
// Accepts only what a browser, curl or Prometheus sends for a page: a
// request line and headers, no body. Everything else is refused with the
// 4xx (or 505) status to answer and a message naming what was wrong.
//
//   HttpRequestParser p;
//   HttpRequestParser::State s = p.Feed(bytes);   // as bytes arrive
//   if (s == HttpRequestParser::kDone) Serve(p.request());
//   if (s == HttpRequestParser::kError) Answer(p.error_status(), p.error());
//
// Limits: the head (request line and headers) is at most 8 KiB, the target
// at most 2 KiB, at most 64 headers. Lines end with CRLF.
#ifndef MESHLIB_ADMIN_HTTP_REQUEST_H_
#define MESHLIB_ADMIN_HTTP_REQUEST_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace meshlib::admin {

struct HttpRequest {
  std::string method;  // "GET" or "HEAD"
  std::string target;  // as sent: "/metrics?x=1"
  std::string path;    // the target without its query: "/metrics"
  std::string query;   // after '?', or ""
  std::string version; // "HTTP/1.1"
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
};

class HttpRequestParser {
 public:
  static constexpr size_t kMaxHead = 8192;
  static constexpr size_t kMaxTarget = 2048;
  static constexpr size_t kMaxHeaders = 64;

  enum State { kNeedMore, kDone, kError };

  // Adds bytes; returns where the parse stands. After kDone or kError,
  // further bytes, and bytes after the head, are ignored (the connection
  // is answered and closed).
  State Feed(absl::string_view bytes);

  State state() const { return state_; }
  const HttpRequest& request() const { return request_; }
  // After kError: the status to answer (400, 405, 414, 431, 505) and why.
  int error_status() const { return error_status_; }
  const std::string& error() const { return error_; }

 private:
  State Fail(int status, std::string message);
  State ParseHead(absl::string_view head);

  State state_ = kNeedMore;
  std::string buffer_;
  HttpRequest request_;
  int error_status_ = 0;
  std::string error_;
};

}  // namespace meshlib::admin

#endif  // MESHLIB_ADMIN_HTTP_REQUEST_H_
