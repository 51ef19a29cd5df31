// A small HTTP/1.1 server for the admin endpoint: /metrics, the live page,
// JSON state. One thread, non-blocking sockets, one request per connection
// (answered, then closed). Strict (http_request.h): a bad request gets its
// 4xx and the connection is closed; a client that sends nothing, or too
// slowly, is dropped after `idle_timeout`; past `max_connections` new ones
// are refused at once. None of that slows the other connections.
//
//   admin::AdminServer::Handlers h;
//   h["/metrics"] = [](const admin::HttpRequest&) {
//     return admin::HttpResponse{200, "text/plain; version=0.0.4", registry.Prometheus()};
//   };
//   auto server = admin::AdminServer::Start({.address = "127.0.0.1:0"}, std::move(h));
//   ... (*server)->address() ...
//
// Handlers run on the server's thread, one at a time; they should be quick.
#ifndef MESHLIB_ADMIN_ADMIN_SERVER_H_
#define MESHLIB_ADMIN_ADMIN_SERVER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "meshlib/admin/http_request.h"

namespace meshlib::admin {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // More header lines, e.g. {"Content-Security-Policy", "..."}.
  std::vector<std::pair<std::string, std::string>> headers;
};

struct AdminOptions {
  // "host:port"; port 0 picks a free one. Loopback unless told otherwise.
  std::string address = "127.0.0.1:0";
  absl::Duration idle_timeout = absl::Seconds(5);
  int max_connections = 64;
  // Called on the server's thread when it starts and every `tick_interval`
  // after (the live page samples the metrics this way). Optional.
  std::function<void()> tick;
  absl::Duration tick_interval = absl::Seconds(1);
};

class AdminServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  using Handlers = std::map<std::string, Handler>;  // by path

  // Binds and starts serving. Errors: INVALID_ARGUMENT for a bad address,
  // UNAVAILABLE when it cannot bind.
  static absl::StatusOr<std::unique_ptr<AdminServer>> Start(AdminOptions options,
                                                           Handlers handlers);
  ~AdminServer();  // stops and closes every connection
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // "127.0.0.1:PORT" as bound.
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // Requests answered, and refused as malformed (for tests and /vars).
  int64_t requests() const { return requests_.load(); }
  int64_t bad_requests() const { return bad_requests_.load(); }

 private:
  AdminServer(AdminOptions options, Handlers handlers, int listen_fd, int wake_fd[2],
              std::string address, int port);
  void Run();

  const AdminOptions options_;
  const Handlers handlers_;
  const int listen_fd_;
  const int wake_read_;
  const int wake_write_;
  const std::string address_;
  const int port_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> requests_{0};
  std::atomic<int64_t> bad_requests_{0};
  std::thread thread_;
};

// The reason phrase of an HTTP status this server answers.
const char* StatusText(int status);

}  // namespace meshlib::admin

#endif  // MESHLIB_ADMIN_ADMIN_SERVER_H_
