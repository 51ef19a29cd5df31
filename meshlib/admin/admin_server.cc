#include "meshlib/admin/admin_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <list>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace meshlib::admin {

const char* StatusText(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

namespace {

std::string Render(const HttpResponse& r, bool head) {
  std::string out = absl::StrCat("HTTP/1.1 ", r.status, " ", StatusText(r.status),
                                 "\r\nContent-Type: ", r.content_type,
                                 "\r\nContent-Length: ", r.body.size(),
                                 "\r\nCache-Control: no-store\r\nConnection: close\r\n");
  for (const auto& [name, value] : r.headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  out += "\r\n";
  if (!head) out += r.body;
  return out;
}

struct Conn {
  int fd = -1;
  HttpRequestParser parser;
  std::string out;      // the response, once known
  size_t written = 0;
  absl::Time deadline;  // dropped when reached
};

}  // namespace

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(AdminOptions options,
                                                               Handlers handlers) {
  const std::string& a = options.address;
  const size_t colon = a.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(a.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("admin address \"", a, "\": want HOST:PORT (IPv4)"));
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, a.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("admin address \"", a, "\": host must be an IPv4 address"));
  }
  if (options.max_connections < 1) {
    return absl::InvalidArgumentError("admin max_connections: must be >= 1");
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("admin socket: ", strerror(errno)));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(fd, 64) != 0) {
    absl::Status st = absl::UnavailableError(
        absl::StrCat("admin endpoint: cannot listen on ", a, ": ", strerror(errno)));
    close(fd);
    return st;
  }
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  char host[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
  const int bound = ntohs(sa.sin_port);
  int wake[2];
  if (pipe2(wake, O_NONBLOCK | O_CLOEXEC) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("admin pipe: ", strerror(errno)));
  }
  return std::unique_ptr<AdminServer>(new AdminServer(std::move(options), std::move(handlers),
                                                      fd, wake, absl::StrCat(host, ":", bound),
                                                      bound));
}

AdminServer::AdminServer(AdminOptions options, Handlers handlers, int listen_fd, int wake_fd[2],
                         std::string address, int port)
    : options_(std::move(options)),
      handlers_(std::move(handlers)),
      listen_fd_(listen_fd),
      wake_read_(wake_fd[0]),
      wake_write_(wake_fd[1]),
      address_(std::move(address)),
      port_(port) {
  thread_ = std::thread([this] { Run(); });
}

AdminServer::~AdminServer() {
  stop_.store(true);
  char b = 1;
  ssize_t ignored = write(wake_write_, &b, 1);
  (void)ignored;
  thread_.join();
  close(listen_fd_);
  close(wake_read_);
  close(wake_write_);
}

void AdminServer::Run() {
  std::list<Conn> conns;
  std::vector<pollfd> fds;
  std::vector<Conn*> by_index;
  char buf[4096];
  absl::Time next_tick = absl::Now();
  while (!stop_.load()) {
    if (options_.tick && absl::Now() >= next_tick) {
      try {
        options_.tick();
      } catch (...) {
        // A failing sampler must not take the admin endpoint down.
      }
      next_tick += options_.tick_interval;
      if (next_tick < absl::Now()) next_tick = absl::Now() + options_.tick_interval;  // fell behind
    }
    fds.clear();
    by_index.clear();
    fds.push_back({wake_read_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    absl::Time now = absl::Now();
    absl::Time next_deadline = now + absl::Seconds(1);
    if (options_.tick) next_deadline = std::min(next_deadline, next_tick);
    for (Conn& c : conns) {
      fds.push_back({c.fd, static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
      by_index.push_back(&c);
      next_deadline = std::min(next_deadline, c.deadline);
    }
    int wait_ms = static_cast<int>(
        std::max<int64_t>(0, absl::ToInt64Milliseconds(next_deadline - now)) + 1);
    int n = poll(fds.data(), fds.size(), wait_ms);
    if (n < 0 && errno != EINTR) break;
    if (stop_.load()) break;
    if (fds[1].revents & POLLIN) {
      for (;;) {
        int cfd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) break;
        if (static_cast<int>(conns.size()) >= options_.max_connections) {
          // Refused at once; the others are not slowed.
          std::string r = Render({503, "text/plain; charset=utf-8", "too many connections\n"},
                                 false);
          ssize_t ignored = send(cfd, r.data(), r.size(), MSG_NOSIGNAL);
          (void)ignored;
          close(cfd);
          continue;
        }
        Conn c;
        c.fd = cfd;
        c.deadline = absl::Now() + options_.idle_timeout;
        conns.push_back(std::move(c));
      }
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      Conn& c = *by_index[i - 2];
      if (fds[i].revents == 0) continue;
      if (c.out.empty()) {
        ssize_t got = recv(c.fd, buf, sizeof buf, 0);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
          c.deadline = absl::InfinitePast();  // gone: dropped below
          continue;
        }
        if (got < 0) continue;
        HttpRequestParser::State s = c.parser.Feed(absl::string_view(buf, got));
        if (s == HttpRequestParser::kError) {
          bad_requests_.fetch_add(1);
          c.out = Render({c.parser.error_status(), "text/plain; charset=utf-8",
                          c.parser.error() + "\n"},
                         false);
        } else if (s == HttpRequestParser::kDone) {
          requests_.fetch_add(1);
          const HttpRequest& req = c.parser.request();
          auto it = handlers_.find(req.path);
          HttpResponse resp;
          if (it == handlers_.end()) {
            resp = {404, "text/plain; charset=utf-8", absl::StrCat("no page at ", req.path, "\n")};
          } else {
            try {
              resp = it->second(req);
            } catch (...) {
              resp = {500, "text/plain; charset=utf-8", "the page failed\n"};
            }
          }
          c.out = Render(resp, req.method == "HEAD");
        }
      }
      if (!c.out.empty() && c.written < c.out.size()) {
        ssize_t sent = send(c.fd, c.out.data() + c.written, c.out.size() - c.written,
                            MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent > 0) c.written += static_cast<size_t>(sent);
        if (sent < 0 && errno != EAGAIN && errno != EINTR) c.deadline = absl::InfinitePast();
      }
    }
    now = absl::Now();
    for (auto it = conns.begin(); it != conns.end();) {
      const bool done = !it->out.empty() && it->written >= it->out.size();
      if (done || it->deadline <= now) {
        if (done) shutdown(it->fd, SHUT_WR);
        close(it->fd);
        it = conns.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Conn& c : conns) close(c.fd);
}

}  // namespace meshlib::admin
