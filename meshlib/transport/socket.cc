#include "meshlib/transport/socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace meshlib::transport {

std::string SocketAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN];
  if (storage.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    return absl::StrCat(buf, ":", ntohs(a->sin_port));
  }
  if (storage.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&storage);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    return absl::StrCat("[", buf, "]:", ntohs(a->sin6_port));
  }
  return "<unknown address>";
}

int SocketAddress::port() const {
  if (storage.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  }
  if (storage.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  }
  return 0;
}

absl::StatusOr<SocketAddress> ParseHostPort(absl::string_view host_port) {
  std::string host;
  absl::string_view port_str;
  const bool bracketed = !host_port.empty() && host_port[0] == '[';
  if (bracketed) {
    size_t close = host_port.find(']');
    if (close == absl::string_view::npos || close + 1 >= host_port.size() ||
        host_port[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("address \"", host_port, "\": expected [IPv6]:port"));
    }
    host = std::string(host_port.substr(1, close - 1));
    port_str = host_port.substr(close + 2);
  } else {
    size_t colon = host_port.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("address \"", host_port, "\": expected host:port"));
    }
    host = std::string(host_port.substr(0, colon));
    port_str = host_port.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "address \"", host_port, "\": IPv6 addresses need brackets, [addr]:port"));
    }
  }
  int port;
  bool digits = !port_str.empty() && port_str.size() <= 5 &&
                std::all_of(port_str.begin(), port_str.end(),
                            [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || !absl::SimpleAtoi(port_str, &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", host_port, "\": port must be 0-65535"));
  }
  if (host == "localhost") host = "127.0.0.1";
  SocketAddress out;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (!bracketed && inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    out.len = sizeof(sockaddr_in);
    return out;
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    out.len = sizeof(sockaddr_in6);
    return out;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "address \"", host_port, "\": host \"", host,
      "\" is not an IP literal (use DNS discovery for names)"));
}

absl::StatusOr<int> ListenTcp(const SocketAddress& addr, int backlog) {
  int fd = socket(addr.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("bind ", addr.ToString(), ": ", strerror(err)));
  }
  if (listen(fd, backlog) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("listen ", addr.ToString(), ": ", strerror(err)));
  }
  return fd;
}

absl::StatusOr<int> StartConnect(const SocketAddress& addr) {
  int fd = socket(addr.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  SetTcpNoDelay(fd);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) != 0 &&
      errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("connect to ", addr.ToString(), ": ", strerror(err)));
  }
  return fd;
}

absl::Status FinishConnect(int fd, absl::string_view peer) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    return absl::UnavailableError(absl::StrCat("connect to ", peer, ": ", strerror(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<SocketAddress> LocalAddress(int fd) {
  SocketAddress a;
  a.len = sizeof(a.storage);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&a.storage), &a.len) != 0) {
    return absl::InternalError(absl::StrCat("getsockname: ", strerror(errno)));
  }
  return a;
}

void SetTcpNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace meshlib::transport
