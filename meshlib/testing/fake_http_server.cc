#include "meshlib/testing/fake_http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace meshlib::testing {

FakeHttpServer::FakeHttpServer(Handler handler) : handler_(std::move(handler)) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(listen(listen_fd_, 64), 0);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  address_ = absl::StrCat("127.0.0.1:", ntohs(a.sin_port));
  EXPECT_EQ(pipe2(stop_pipe_, O_CLOEXEC), 0);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

FakeHttpServer::~FakeHttpServer() {
  stopping_ = true;
  [[maybe_unused]] ssize_t n = write(stop_pipe_[1], "x", 1);
  acceptor_.join();
  std::vector<std::thread> threads;
  {
    core::MutexLock lock(&mu_);
    // Wake handlers blocked on their socket.
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
  close(listen_fd_);
  close(stop_pipe_[0]);
  close(stop_pipe_[1]);
}

std::vector<FakeHttpServer::Request> FakeHttpServer::received() const {
  core::MutexLock lock(&mu_);
  return received_;
}

void FakeHttpServer::AcceptLoop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    if (poll(p, 2, -1) < 0) continue;
    if (p[1].revents != 0) return;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    core::MutexLock lock(&mu_);
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { Serve(fd); });
  }
}

void FakeHttpServer::Serve(int fd) {
  std::string in;
  char buf[4096];
  Request req;
  bool ok = false;
  for (;;) {
    size_t end = in.find("\r\n\r\n");
    if (end != std::string::npos) {
      req.head = in.substr(0, end);
      size_t length = 0;
      for (absl::string_view line : absl::StrSplit(req.head, "\r\n")) {
        std::string lower = absl::AsciiStrToLower(line);
        if (lower.rfind("content-length:", 0) == 0) {
          absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(15)), &length);
        }
      }
      if (in.size() >= end + 4 + length) {
        req.body = in.substr(end + 4, length);
        std::vector<std::string> first = absl::StrSplit(
            absl::string_view(req.head).substr(0, req.head.find("\r\n")), ' ');
        if (first.size() >= 2) {
          req.method = first[0];
          req.target = first[1];
        }
        ok = true;
        break;
      }
    }
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  if (ok) {
    {
      core::MutexLock lock(&mu_);
      received_.push_back(req);
    }
    ++requests_;
    Conn conn(fd, this);
    handler_(req, conn);
  }
  // Close and forget the descriptor under the lock, so that the destructor
  // never shuts down a number that was reused.
  core::MutexLock lock(&mu_);
  fds_.erase(std::find(fds_.begin(), fds_.end(), fd));
  close(fd);
}

bool FakeHttpServer::Conn::Write(absl::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool FakeHttpServer::Conn::WaitForPeerClose(absl::Duration timeout) {
  absl::Time give_up = absl::Now() + timeout;
  while (!server_->stopping_ && absl::Now() < give_up) {
    pollfd p{fd_, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 20) > 0) {
      char c;
      if (recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) return true;
      // The client sent more (it should not): drop it.
      char buf[1024];
      if (read(fd_, buf, sizeof(buf)) <= 0) return true;
    }
  }
  return false;
}

}  // namespace meshlib::testing
