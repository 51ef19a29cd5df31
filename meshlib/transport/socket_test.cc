#include "meshlib/transport/socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshlib::transport {
namespace {

using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// Closes an fd at scope exit.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

// Waits until `fd` is writable (a non-blocking connect has an outcome).
// Returns false if that did not happen within `timeout`.
bool WaitWritable(int fd, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms < 0) return false;
    pollfd p{fd, POLLOUT, 0};
    int n = poll(&p, 1, static_cast<int>(left_ms));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

// --- ParseHostPort ---

TEST(ParseHostPortTest, IPv4) {
  absl::StatusOr<SocketAddress> a = ParseHostPort("10.1.2.3:7001");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->storage.ss_family, AF_INET);
  EXPECT_EQ(a->len, sizeof(sockaddr_in));
  EXPECT_EQ(a->port(), 7001);
  EXPECT_EQ(a->ToString(), "10.1.2.3:7001");
  const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a->storage);
  EXPECT_EQ(ntohl(v4->sin_addr.s_addr), 0x0a010203u);
}

TEST(ParseHostPortTest, PortBounds) {
  absl::StatusOr<SocketAddress> a = ParseHostPort("127.0.0.1:0");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->port(), 0);
  a = ParseHostPort("127.0.0.1:65535");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->port(), 65535);
}

TEST(ParseHostPortTest, BracketedIPv6) {
  absl::StatusOr<SocketAddress> a = ParseHostPort("[::1]:7001");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->storage.ss_family, AF_INET6);
  EXPECT_EQ(a->len, sizeof(sockaddr_in6));
  EXPECT_EQ(a->port(), 7001);
  EXPECT_EQ(a->ToString(), "[::1]:7001");

  a = ParseHostPort("[2001:db8::a:b]:443");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->ToString(), "[2001:db8::a:b]:443");
}

TEST(ParseHostPortTest, LocalhostIsIPv4Loopback) {
  absl::StatusOr<SocketAddress> a = ParseHostPort("localhost:8080");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->storage.ss_family, AF_INET);
  EXPECT_EQ(a->ToString(), "127.0.0.1:8080");
}

TEST(ParseHostPortTest, MissingPort) {
  absl::Status s = ParseHostPort("127.0.0.1").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("\"127.0.0.1\""));
  EXPECT_THAT(Msg(s), HasSubstr("host:port"));

  s = ParseHostPort("127.0.0.1:").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("port must be 0-65535"));

  s = ParseHostPort("[::1]").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("[IPv6]:port"));

  s = ParseHostPort("[::1]:").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("port must be 0-65535"));

  s = ParseHostPort("").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseHostPortTest, PortOutOfRangeOrNotANumber) {
  for (const char* in : {"127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:http",
                         "127.0.0.1:99999999999", "[::1]:65536"}) {
    absl::Status s = ParseHostPort(in).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << in;
    EXPECT_THAT(Msg(s), HasSubstr("port must be 0-65535")) << in;
    EXPECT_THAT(Msg(s), HasSubstr(in));
  }
}

TEST(ParseHostPortTest, PortMustBePlainDigits) {
  for (const char* bad : {"127.0.0.1:+80", "127.0.0.1: 80", "127.0.0.1:80 ", "127.0.0.1:0x50",
                          "127.0.0.1:-1", "127.0.0.1:000080"}) {
    auto a = ParseHostPort(bad);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParseHostPortTest, BracketsAreOnlyForIPv6) {
  auto a = ParseHostPort("[1.2.3.4]:80");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseHostPortTest, UnbracketedIPv6IsRejected) {
  absl::Status s = ParseHostPort("::1:7001").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("brackets"));
  EXPECT_THAT(Msg(s), HasSubstr("\"::1:7001\""));

  s = ParseHostPort("2001:db8::1:443").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("brackets"));
}

TEST(ParseHostPortTest, HostnameIsRejectedWithAPointerToDiscovery) {
  absl::Status s = ParseHostPort("echo.svc.cluster.local:7001").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("\"echo.svc.cluster.local\""));
  EXPECT_THAT(Msg(s), HasSubstr("DNS discovery"));

  // Not valid as an IPv4 literal either.
  s = ParseHostPort("256.1.1.1:80").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("not an IP literal"));
}

// --- listening and connecting ---

TEST(SocketTest, ListenOnPortZeroGetsARealPort) {
  absl::StatusOr<SocketAddress> addr = ParseHostPort("127.0.0.1:0");
  ASSERT_TRUE(addr.ok());
  absl::StatusOr<int> fd = ListenTcp(*addr, 16);
  ASSERT_TRUE(fd.ok()) << fd.status();
  FdCloser closer(*fd);

  absl::StatusOr<SocketAddress> local = LocalAddress(*fd);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->storage.ss_family, AF_INET);
  EXPECT_GT(local->port(), 0);
  EXPECT_EQ(local->ToString(), "127.0.0.1:" + std::to_string(local->port()));

  // The port is really taken: a second plain bind to it fails.
  int other = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(other, 0);
  FdCloser other_closer(other);
  EXPECT_NE(bind(other, reinterpret_cast<const sockaddr*>(&local->storage), local->len), 0);
}

TEST(SocketTest, ListenOnATakenPortFailsNamingTheAddress) {
  absl::StatusOr<SocketAddress> addr = ParseHostPort("127.0.0.1:0");
  ASSERT_TRUE(addr.ok());
  absl::StatusOr<int> fd = ListenTcp(*addr, 16);
  ASSERT_TRUE(fd.ok()) << fd.status();
  FdCloser closer(*fd);
  absl::StatusOr<SocketAddress> local = LocalAddress(*fd);
  ASSERT_TRUE(local.ok());

  absl::StatusOr<int> again = ListenTcp(*local, 16);
  if (again.ok()) close(*again);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(again.status()), HasSubstr(local->ToString()));
}

TEST(SocketTest, ConnectToListenerSucceeds) {
  absl::StatusOr<SocketAddress> addr = ParseHostPort("127.0.0.1:0");
  ASSERT_TRUE(addr.ok());
  absl::StatusOr<int> listener = ListenTcp(*addr, 16);
  ASSERT_TRUE(listener.ok()) << listener.status();
  FdCloser listener_closer(*listener);
  absl::StatusOr<SocketAddress> local = LocalAddress(*listener);
  ASSERT_TRUE(local.ok());

  absl::StatusOr<int> fd = StartConnect(*local);
  ASSERT_TRUE(fd.ok()) << fd.status();
  FdCloser closer(*fd);
  ASSERT_TRUE(WaitWritable(*fd, absl::Seconds(10)));
  absl::Status s = FinishConnect(*fd, local->ToString());
  EXPECT_TRUE(s.ok()) << s;

  // The listener sees the connection, and bytes flow.
  pollfd p{*listener, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 10'000), 1);
  int accepted = accept(*listener, nullptr, nullptr);
  ASSERT_GE(accepted, 0);
  FdCloser accepted_closer(accepted);
  ASSERT_EQ(write(*fd, "hi", 2), 2);
  char buf[2];
  pollfd q{accepted, POLLIN, 0};
  ASSERT_EQ(poll(&q, 1, 10'000), 1);
  ASSERT_EQ(read(accepted, buf, 2), 2);
  EXPECT_EQ(std::string(buf, 2), "hi");
}

TEST(SocketTest, ConnectToClosedPortFailsWithUnavailable) {
  // A socket bound but not listening holds the port (nobody else can take
  // it) and answers SYNs with RST, so the refusal is deterministic.
  int holder = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(holder, 0);
  FdCloser holder_closer(holder);
  absl::StatusOr<SocketAddress> any = ParseHostPort("127.0.0.1:0");
  ASSERT_TRUE(any.ok());
  ASSERT_EQ(bind(holder, reinterpret_cast<const sockaddr*>(&any->storage), any->len), 0);
  absl::StatusOr<SocketAddress> closed = LocalAddress(holder);
  ASSERT_TRUE(closed.ok());
  const std::string name = closed->ToString();

  absl::StatusOr<int> fd = StartConnect(*closed);
  absl::Status s;
  if (!fd.ok()) {
    s = fd.status();  // refused synchronously: also acceptable
  } else {
    FdCloser closer(*fd);
    ASSERT_TRUE(WaitWritable(*fd, absl::Seconds(10)));
    s = FinishConnect(*fd, name);
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(Msg(s), HasSubstr("connect to " + name));
  EXPECT_THAT(Msg(s), HasSubstr("refused"));
}

}  // namespace
}  // namespace meshlib::transport
