// A small non-blocking HTTP/1.1 client on an EventLoop: one request per
// connection (`Connection: close`), the response parsed incrementally by
// HttpResponseParser, the body delivered as it arrives, so that one call can
// stream for hours (an etcd watch) or fetch one JSON document.
//
//   HttpRequest req;
//   req.target = "/v3/kv/range";
//   req.body = R"({"key":"Zm9v"})";
//   std::unique_ptr<HttpCall> call = HttpFetch(
//       loop, "127.0.0.1:2379", std::move(req), HttpCallOptions{},
//       [](absl::StatusOr<HttpResponse> r) { ... });   // once, on the loop
//   call.reset();  // cancels if still running; the callback then never runs
//
// Sockets use TCP keep-alive (idle 30s, then 3 probes 10s apart), so that a
// quiet stream to a peer that vanished without closing fails within about a
// minute instead of hanging.
//
// Errors: UNAVAILABLE for connection failures, a malformed response (the
// parser's message) or a connection closed early; DEADLINE_EXCEEDED for the
// timeouts; RESOURCE_EXHAUSTED when a limit is passed. Each message names
// the server and the request target.
//
// Threading: everything, including destroying an HttpCall, happens on the
// loop's thread. Handlers run there and may destroy their own HttpCall.
#ifndef MESHLIB_ETCD_HTTP_CLIENT_H_
#define MESHLIB_ETCD_HTTP_CLIENT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/etcd/http_parser.h"
#include "meshlib/runtime/event_loop.h"

namespace meshlib::etcd {

struct HttpRequest {
  std::string method = "POST";
  std::string target = "/";  // origin-form: path and query
  // Sent as Content-Type when the body is not empty.
  std::string content_type = "application/json";
  std::vector<HttpHeader> headers;  // extra fields
  std::string body;
};

// The bytes of `request` for server `host` ("host:port"), with Host,
// Content-Length (for any body, or for POST/PUT) and Connection: close.
std::string SerializeHttpRequest(const HttpRequest& request, absl::string_view host);

struct HttpCallOptions {
  // TCP connect. Default 2s.
  absl::Duration connect_timeout = absl::Seconds(2);
  // From the start until the response head has arrived. Default 5s.
  absl::Duration head_timeout = absl::Seconds(5);
  // From the start until the whole response has arrived. Default 5s;
  // InfiniteDuration() for a stream.
  absl::Duration total_timeout = absl::Seconds(5);
  HttpParserLimits limits;
};

struct HttpResponse {
  int status = 0;
  std::vector<HttpHeader> headers;
  std::string body;
};

// A call in progress. Destroying it cancels it: no handler runs afterwards.
class HttpCall {
 public:
  struct Handlers {
    // The status line and headers have arrived (optional).
    std::function<void(const HttpResponseParser& head)> on_head;
    // Body bytes, decoded, as they arrive (optional).
    std::function<void(absl::string_view bytes)> on_body;
    // Once, last: OK when the whole response arrived.
    absl::AnyInvocable<void(absl::Status)> on_done;
  };

  // Connects to `address` ("IP:port" or "localhost:port") and sends
  // `request`. Loop thread only. Errors (a bad address too) come through
  // on_done, never synchronously from here.
  static std::unique_ptr<HttpCall> Start(runtime::EventLoop* loop, std::string address,
                                         HttpRequest request, HttpCallOptions options,
                                         Handlers handlers);
  ~HttpCall();
  HttpCall(const HttpCall&) = delete;
  HttpCall& operator=(const HttpCall&) = delete;

  class Impl;

 private:
  explicit HttpCall(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

// The whole response in one piece (body bounded by options.limits).
std::unique_ptr<HttpCall> HttpFetch(runtime::EventLoop* loop, std::string address,
                                    HttpRequest request, HttpCallOptions options,
                                    absl::AnyInvocable<void(absl::StatusOr<HttpResponse>)> done);

}  // namespace meshlib::etcd

#endif  // MESHLIB_ETCD_HTTP_CLIENT_H_
