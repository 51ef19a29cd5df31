// meshlib's gRPC client (grpc::GrpcChannel) against a real gRPC server:
// Debian's python3-grpcio (tests/grpc/grpcio_server.py).
#include <signal.h>

#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "meshlib/core/sync.h"
#include "meshlib/grpc/grpc_channel.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib {
namespace {

using client::CallOptions;
using client::CallResult;

class GrpcioServer {
 public:
  explicit GrpcioServer(std::vector<std::string> extra = {}, int port = 0) {
    std::vector<std::string> argv = {"/usr/bin/python3",
                                     testing::Runfile("tests/grpc/grpcio_server.py"),
                                     absl::StrCat("--port=", port)};
    for (auto& a : extra) argv.push_back(std::move(a));
    proc_ = std::make_unique<testing::Subprocess>(argv);
    std::string line = proc_->WaitForLine("listening on ", absl::Seconds(30));
    EXPECT_FALSE(line.empty()) << "grpcio server did not start: " << proc_->err();
    int p = 0;
    EXPECT_TRUE(absl::SimpleAtoi(line.substr(13), &p)) << line;
    port_ = p;
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  int port() const { return port_; }
  testing::Subprocess& proc() { return *proc_; }

 private:
  std::unique_ptr<testing::Subprocess> proc_;
  int port_ = 0;
};

std::unique_ptr<grpc::GrpcChannel> MakeChannel(const std::string& address,
                                               client::ChannelOptions o = {}) {
  auto ch = grpc::GrpcChannel::Create(address, std::move(o));
  EXPECT_TRUE(ch.ok()) << ch.status();
  return *std::move(ch);
}

CallOptions Timeout(absl::Duration d) {
  CallOptions o;
  o.timeout = d;
  return o;
}

class GrpcClientInteropTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new GrpcioServer(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static GrpcioServer* server_;
};
GrpcioServer* GrpcClientInteropTest::server_ = nullptr;

TEST_F(GrpcClientInteropTest, EchoesSmallAndLargeMessages) {
  auto ch = MakeChannel(server_->address());
  CallResult r = ch->CallBlocking("Echo/Say", "hello", Timeout(absl::Seconds(10)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "hello");
  EXPECT_EQ(r.endpoint, server_->address());
  // Empty, and sizes across the flow-control windows (64 KiB default, our
  // 8 MiB stream window), up to 3 MiB.
  std::mt19937 rng(7);
  for (size_t size : {size_t{0}, size_t{1}, size_t{65535}, size_t{65536}, size_t{70000},
                      size_t{1} << 20, size_t{3} << 20}) {
    std::string payload(size, '\0');
    for (char& c : payload) c = static_cast<char>(rng());
    CallResult big = ch->CallBlocking("Echo/Say", payload, Timeout(absl::Seconds(20)));
    ASSERT_TRUE(big.status.ok()) << size << ": " << big.status;
    EXPECT_EQ(big.payload.size(), size);
    EXPECT_TRUE(big.payload == payload) << size;
  }
}

TEST_F(GrpcClientInteropTest, MetadataTravelsBothWaysWithBinaryValuesInBase64) {
  auto ch = MakeChannel(server_->address());
  CallOptions o = Timeout(absl::Seconds(5));
  const std::string binary("\x00\xff\x10 bytes\n", 10);
  o.metadata = {{"x-user", "alice"}, {"X-Mixed-Case", "v"}, {"trace-bin", binary},
                {"x-last", "z"}};
  CallResult r = ch->CallBlocking("Echo/Meta", "", o);
  ASSERT_TRUE(r.status.ok()) << r.status;
  auto find = [&](const std::string& k) -> std::string {
    for (const auto& [mk, mv] : r.metadata) {
      if (mk == k) return mv;
    }
    return "<missing>";
  };
  EXPECT_EQ(find("echo-x-user"), "alice");
  EXPECT_EQ(find("echo-x-mixed-case"), "v");  // header names go lowercase
  EXPECT_EQ(find("echo-trace-bin"), binary);
  EXPECT_EQ(find("echo-x-last"), "z");
  // grpc-timeout carried the deadline: the server saw about 5 s left.
  double left = 0;
  ASSERT_TRUE(absl::SimpleAtod(find("deadline-left"), &left)) << find("deadline-left");
  EXPECT_GT(left, 3.0);
  EXPECT_LE(left, 5.0);
}

TEST_F(GrpcClientInteropTest, StatusesAndMessagesArriveAsTheServerSentThem) {
  auto ch = MakeChannel(server_->address());
  struct Case {
    absl::StatusCode code;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {absl::StatusCode::kNotFound, "no such thing"},
           {absl::StatusCode::kInvalidArgument, "bad % input\nwith \xc3\xa9"},
           {absl::StatusCode::kUnavailable, "go elsewhere"},
           {absl::StatusCode::kPermissionDenied, "who are you"},
           {absl::StatusCode::kResourceExhausted, "quota"}}) {
    CallResult r = ch->CallBlocking(
        "Echo/Fail", absl::StrCat(static_cast<int>(c.code), " ", c.message),
        Timeout(absl::Seconds(5)));
    EXPECT_EQ(r.status.code(), c.code) << r.status;
    EXPECT_EQ(r.status.message(), c.message);
    EXPECT_FALSE(r.not_processed);
  }
}

TEST_F(GrpcClientInteropTest, UnknownMethodIsUnimplemented) {
  auto ch = MakeChannel(server_->address());
  CallResult r = ch->CallBlocking("Echo/NoSuchMethod", "x", Timeout(absl::Seconds(5)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnimplemented) << r.status;
  CallResult s = ch->CallBlocking("Nope/Say", "x", Timeout(absl::Seconds(5)));
  EXPECT_EQ(s.status.code(), absl::StatusCode::kUnimplemented) << s.status;
}

TEST_F(GrpcClientInteropTest, DeadlineEndsTheCallOnTimeAndCancelsItOnTheServer) {
  auto ch = MakeChannel(server_->address());
  CallResult before = ch->CallBlocking("Echo/Cancelled", "", Timeout(absl::Seconds(5)));
  ASSERT_TRUE(before.status.ok()) << before.status;
  const absl::Time start = absl::Now();
  CallResult r = ch->CallBlocking("Echo/Sleep", "3000", Timeout(absl::Milliseconds(200)));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded) << r.status;
  EXPECT_GE(took, absl::Milliseconds(190));
  EXPECT_LT(took, absl::Seconds(2));
  // The server's handler saw its RPC end (our RST_STREAM, or its own
  // deadline from grpc-timeout) long before its 3 s were up.
  EXPECT_TRUE(testing::Eventually([&] {
    CallResult n = ch->CallBlocking("Echo/Cancelled", "", Timeout(absl::Seconds(5)));
    return n.status.ok() && n.payload != before.payload;
  }, absl::Seconds(2)));
}

TEST_F(GrpcClientInteropTest, CancelEndsTheCallOnceAndResetsTheStream) {
  auto ch = MakeChannel(server_->address());
  std::atomic<int> callbacks{0};
  core::Notification done;
  absl::Status status;
  client::CallHandle h = ch->Call("Echo/Sleep", "2000", Timeout(absl::Seconds(5)),
                                  [&](CallResult r) {
                                    status = r.status;
                                    callbacks.fetch_add(1);
                                    done.Notify();
                                  });
  absl::SleepFor(absl::Milliseconds(100));
  h.Cancel();
  h.Cancel();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(callbacks.load(), 1);
  EXPECT_TRUE(testing::Eventually([&] { return ch->CallsOutstanding() == 0; }));
  // The connection still serves.
  EXPECT_TRUE(ch->CallBlocking("Echo/Say", "after", Timeout(absl::Seconds(5))).status.ok());
}

TEST_F(GrpcClientInteropTest, ThreeHundredConcurrentCallsOverOneConnection) {
  auto ch = MakeChannel(server_->address());
  constexpr int kCalls = 300;
  std::atomic<int> ok{0}, finished{0};
  core::Notification all;
  for (int i = 0; i < kCalls; ++i) {
    const std::string payload = absl::StrCat("call-", i, std::string(i * 37, 'x'));
    ch->Call("Echo/Say", payload, Timeout(absl::Seconds(20)), [&, payload](CallResult r) {
      if (r.status.ok() && r.payload == payload) ok.fetch_add(1);
      if (finished.fetch_add(1) + 1 == kCalls) all.Notify();
    });
  }
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(ok.load(), kCalls);
  EXPECT_EQ(ch->connection_counts().opened, 1);
}

TEST(GrpcClientFailureTest, NoServerFailsAtOnceNotProcessed) {
  const int port = testing::PickFreePort();
  auto ch = MakeChannel(absl::StrCat("127.0.0.1:", port));
  CallResult r = ch->CallBlocking("Echo/Say", "x", Timeout(absl::Seconds(2)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_TRUE(r.not_processed);
  EXPECT_NE(r.status.message().find(absl::StrCat("127.0.0.1:", port)), std::string::npos);
  EXPECT_TRUE(ch->Unreachable());
}

TEST(GrpcClientFailureTest, ServerKilledMidCallFailsItUnavailableAndReconnectsAfterRestart) {
  auto server = std::make_unique<GrpcioServer>();
  const int port = server->port();
  client::ChannelOptions o;
  o.reconnect_backoff.initial = absl::Milliseconds(20);
  o.reconnect_backoff.max = absl::Milliseconds(100);
  auto ch = MakeChannel(server->address(), o);
  ASSERT_TRUE(ch->CallBlocking("Echo/Say", "x", Timeout(absl::Seconds(5))).status.ok());
  core::Notification done;
  absl::Status status;
  ch->Call("Echo/Sleep", "5000", Timeout(absl::Seconds(10)), [&](CallResult r) {
    status = r.status;
    done.Notify();
  });
  absl::SleepFor(absl::Milliseconds(200));
  server->proc().Signal(SIGKILL);
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  server.reset();
  GrpcioServer again({}, port);
  EXPECT_TRUE(testing::Eventually([&] {
    return ch->CallBlocking("Echo/Say", "back", Timeout(absl::Seconds(2))).status.ok();
  }, absl::Seconds(10)));
  EXPECT_GE(ch->connection_counts().opened, 2);
}

TEST(GrpcClientFailureTest, DestroyingTheChannelEndsCallsInFlightOnce) {
  GrpcioServer server;
  auto ch = MakeChannel(server.address());
  std::atomic<int> cancelled{0}, callbacks{0};
  for (int i = 0; i < 50; ++i) {
    ch->Call("Echo/Sleep", "3000", Timeout(absl::Seconds(10)), [&](CallResult r) {
      callbacks.fetch_add(1);
      if (r.status.code() == absl::StatusCode::kCancelled) cancelled.fetch_add(1);
    });
  }
  absl::SleepFor(absl::Milliseconds(200));
  ch.reset();
  EXPECT_EQ(callbacks.load(), 50);
  EXPECT_EQ(cancelled.load(), 50);
}

}  // namespace
}  // namespace meshlib
