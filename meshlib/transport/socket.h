// Socket helpers: address parsing, listening and non-blocking connects.
//
//   absl::StatusOr<SocketAddress> a = ParseHostPort("[::1]:7001");
//   absl::StatusOr<int> fd = ListenTcp(*a, /*backlog=*/1024);
//
// Threading: stateless, thread-safe.
#ifndef MESHLIB_TRANSPORT_SOCKET_H_
#define MESHLIB_TRANSPORT_SOCKET_H_

#include <sys/socket.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace meshlib::transport {

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t len = 0;
  std::string ToString() const;  // "127.0.0.1:7001" or "[::1]:7001"
  int port() const;
};

// Parses "IPv4:port", "[IPv6]:port" or "localhost:port". No DNS: names other
// than localhost are the discovery layer's job.
absl::StatusOr<SocketAddress> ParseHostPort(absl::string_view host_port);

// A non-blocking listening socket with SO_REUSEADDR.
absl::StatusOr<int> ListenTcp(const SocketAddress& addr, int backlog);

// Starts a non-blocking connect. The result is known when the fd turns
// writable: then call FinishConnect.
absl::StatusOr<int> StartConnect(const SocketAddress& addr);
absl::Status FinishConnect(int fd, absl::string_view peer);

// The address a socket is bound to.
absl::StatusOr<SocketAddress> LocalAddress(int fd);

void SetTcpNoDelay(int fd);

}  // namespace meshlib::transport

#endif  // MESHLIB_TRANSPORT_SOCKET_H_
