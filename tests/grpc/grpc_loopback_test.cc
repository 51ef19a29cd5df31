// meshlib's gRPC client against meshlib's server speaking gRPC, in one
// process (so it runs under ASan and TSan): the whole mapping both ways,
// TLS with ALPN h2, graceful shutdown, refusals, and the mesh over gRPC.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "meshlib/config/config.h"
#include "meshlib/core/sync.h"
#include "meshlib/grpc/grpc_channel.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/server/server.h"
#include "meshlib/testing/subprocess.h"
#include "meshlib/testing/test_certs.h"
#include "meshlib/tls/credentials.h"
#include "meshlib/transport/socket.h"

namespace meshlib {
namespace {

using client::CallOptions;
using client::CallResult;

CallOptions Timeout(absl::Duration d) {
  CallOptions o;
  o.timeout = d;
  return o;
}

// A meshlib server with a few methods that show what reached the handler.
struct TestServer {
  explicit TestServer(server::ServerOptions o = {}) {
    o.io_threads = 1;
    o.metrics = nullptr;
    server = std::make_unique<server::Server>(o);
    EXPECT_TRUE(server
                    ->RegisterAsync("Echo/Say",
                                    [](std::shared_ptr<server::ServerCall> call) {
                                      call->Finish(absl::OkStatus(), call->request());
                                    })
                    .ok());
    // Echoes the request metadata back as response metadata, and the time
    // the handler saw left as "left-ms".
    EXPECT_TRUE(server
                    ->RegisterSync("Echo/Meta",
                                   [](server::ServerCall& call, std::string* out) {
                                     for (const auto& [k, v] : call.metadata()) {
                                       call.AddResponseMetadata("echo-" + k, v);
                                     }
                                     call.AddResponseMetadata(
                                         "left-ms", absl::StrCat(absl::ToInt64Milliseconds(
                                                        call.RemainingTime())));
                                     *out = call.peer_identity();
                                     return absl::OkStatus();
                                   })
                    .ok());
    EXPECT_TRUE(server
                    ->RegisterSync("Echo/Fail",
                                   [](server::ServerCall& call, std::string*) {
                                     return absl::FailedPreconditionError(
                                         absl::StrCat("refusing \"", call.request(), "\" 100%"));
                                   })
                    .ok());
    // Never finishes by itself: ends when cancelled.
    EXPECT_TRUE(server
                    ->RegisterAsync("Echo/Hang",
                                    [this](std::shared_ptr<server::ServerCall> call) {
                                      call->OnCancel([this, call] {
                                        cancelled.fetch_add(1);
                                        call->Finish(call->RemainingTime() <= absl::ZeroDuration()
                                                         ? absl::DeadlineExceededError("late")
                                                         : absl::CancelledError("gone"));
                                      });
                                    })
                    .ok());
    auto port = server->Start("127.0.0.1:0");
    EXPECT_TRUE(port.ok()) << port.status();
  }
  std::string address() const { return server->address(); }
  std::unique_ptr<server::Server> server;
  std::atomic<int> cancelled{0};
};

std::unique_ptr<grpc::GrpcChannel> Channel(const std::string& address,
                                           client::ChannelOptions o = {}) {
  auto ch = grpc::GrpcChannel::Create(address, std::move(o));
  EXPECT_TRUE(ch.ok()) << ch.status();
  return *std::move(ch);
}

TEST(GrpcLoopbackTest, EchoAndLargeMessagesBothWays) {
  TestServer s;
  auto ch = Channel(s.address());
  std::mt19937 rng(3);
  for (size_t size : {size_t{0}, size_t{10}, size_t{100000}, size_t{3} << 20}) {
    std::string payload(size, '\0');
    for (char& c : payload) c = static_cast<char>(rng());
    CallResult r = ch->CallBlocking("Echo/Say", payload, Timeout(absl::Seconds(20)));
    ASSERT_TRUE(r.status.ok()) << size << ": " << r.status;
    EXPECT_TRUE(r.payload == payload) << size;
  }
  EXPECT_EQ(s.server->stats().connections_opened, 1);
}

TEST(GrpcLoopbackTest, MetadataAndDeadlineReachTheHandler) {
  TestServer s;
  auto ch = Channel(s.address());
  CallOptions o = Timeout(absl::Seconds(3));
  const std::string blob("\x00\x01\xfe\xff", 4);
  o.metadata = {{"x-user", "bob"}, {"token-bin", blob}};
  CallResult r = ch->CallBlocking("Echo/Meta", "", o);
  ASSERT_TRUE(r.status.ok()) << r.status;
  std::map<std::string, std::string> md(r.metadata.begin(), r.metadata.end());
  EXPECT_EQ(md["echo-x-user"], "bob");
  EXPECT_EQ(md["echo-token-bin"], blob);
  int64_t left = 0;
  ASSERT_TRUE(absl::SimpleAtoi(md["left-ms"], &left)) << md["left-ms"];
  EXPECT_GT(left, 2000);
  EXPECT_LE(left, 3000);
}

TEST(GrpcLoopbackTest, StatusesUnknownMethodsAndHealth) {
  TestServer s;
  auto ch = Channel(s.address());
  CallResult f = ch->CallBlocking("Echo/Fail", "x", Timeout(absl::Seconds(3)));
  EXPECT_EQ(f.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(f.status.message(), "refusing \"x\" 100%");
  CallResult u = ch->CallBlocking("Echo/Nope", "x", Timeout(absl::Seconds(3)));
  EXPECT_EQ(u.status.code(), absl::StatusCode::kUnimplemented);
  CallResult h = ch->CallBlocking(transport::kGrpcHealthCheckMethod, "", Timeout(absl::Seconds(3)));
  ASSERT_TRUE(h.status.ok()) << h.status;
  EXPECT_EQ(h.payload, std::string("\x08\x01", 2));
  s.server->SetServing(false);
  h = ch->CallBlocking(transport::kGrpcHealthCheckMethod, "", Timeout(absl::Seconds(3)));
  EXPECT_EQ(h.payload, std::string("\x08\x02", 2));
}

TEST(GrpcLoopbackTest, DeadlineAndCancelReachTheServer) {
  TestServer s;
  auto ch = Channel(s.address());
  CallResult r = ch->CallBlocking("Echo/Hang", "", Timeout(absl::Milliseconds(100)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(testing::Eventually([&] { return s.cancelled.load() == 1; }));
  core::Notification done;
  client::CallHandle h = ch->Call("Echo/Hang", "", Timeout(absl::Seconds(10)),
                                  [&](CallResult r) {
                                    EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled);
                                    done.Notify();
                                  });
  absl::SleepFor(absl::Milliseconds(50));
  h.Cancel();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_TRUE(testing::Eventually([&] { return s.cancelled.load() == 2; }));
  EXPECT_TRUE(testing::Eventually([&] { return s.server->active_calls() == 0; }));
}

TEST(GrpcLoopbackTest, ManyThreadsManyCalls) {
  TestServer s;
  client::ChannelOptions o;
  o.connections = 2;
  auto ch = Channel(s.address(), o);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string p = absl::StrCat(t, "-", i);
        CallResult r = ch->CallBlocking("Echo/Say", p, Timeout(absl::Seconds(10)));
        if (r.status.ok() && r.payload == p) ok.fetch_add(1);
      }
    });
  }
  // And asynchronous calls alongside.
  std::atomic<int> async_ok{0}, async_done{0};
  for (int i = 0; i < 500; ++i) {
    ch->Call("Echo/Say", "a", Timeout(absl::Seconds(10)), [&](CallResult r) {
      if (r.status.ok()) async_ok.fetch_add(1);
      async_done.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(testing::Eventually([&] { return async_done.load() == 500; }));
  EXPECT_EQ(ok.load(), 800);
  EXPECT_EQ(async_ok.load(), 500);
}

TEST(GrpcLoopbackTest, ShutdownDrainsCallsInFlightAndLaterCallsAreNotProcessed) {
  auto s = std::make_unique<TestServer>();
  auto ch = Channel(s->address());
  ASSERT_TRUE(ch->CallBlocking("Echo/Say", "x", Timeout(absl::Seconds(3))).status.ok());
  std::thread stopper([&] { s->server->Shutdown(absl::Seconds(2)); });
  stopper.join();
  CallResult r = ch->CallBlocking("Echo/Say", "after", Timeout(absl::Seconds(3)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_TRUE(r.not_processed) << r.status;
}

TEST(GrpcLoopbackTest, AdaptiveLimitRefusalsAreRefusedStreamsAndNotProcessed) {
  server::ServerOptions o;
  o.adaptive_concurrency.enabled = true;
  o.adaptive_concurrency.initial_limit = 1;
  o.adaptive_concurrency.min_limit = 1;
  o.adaptive_concurrency.max_limit = 1;
  TestServer s(o);
  auto ch = Channel(s.address());
  core::Notification first_done;
  ch->Call("Echo/Hang", "", Timeout(absl::Milliseconds(500)),
           [&](CallResult) { first_done.Notify(); });
  ASSERT_TRUE(testing::Eventually([&] { return s.server->active_calls() == 1; }));
  CallResult r = ch->CallBlocking("Echo/Say", "x", Timeout(absl::Seconds(3)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_TRUE(r.not_processed);
  EXPECT_NE(r.status.message().find("REFUSED_STREAM"), std::string::npos) << r.status;
  ASSERT_TRUE(first_done.WaitForNotificationWithTimeout(absl::Seconds(5)));
}

TEST(GrpcLoopbackTest, MutualTlsWithAlpnH2) {
  testing::TestCerts certs = testing::TestCerts::Make();
  ASSERT_TRUE(certs.ok()) << certs.status();
  ASSERT_TRUE(certs.Leaf("echo").ok());
  ASSERT_TRUE(certs.Leaf("client").ok());
  tls::TlsOptions st;
  st.cert_file = certs.Cert("echo");
  st.key_file = certs.Key("echo");
  st.ca_file = certs.ca();
  server::ServerOptions so;
  so.tls = *tls::CredentialsWatcher::Start(st, tls::Role::kServer);
  TestServer s(so);
  tls::TlsOptions ct;
  ct.ca_file = certs.ca();
  ct.cert_file = certs.Cert("client");
  ct.key_file = certs.Key("client");
  ct.identities = {"spiffe://mesh.test/echo"};
  client::ChannelOptions co;
  co.tls = *tls::CredentialsWatcher::Start(ct, tls::Role::kClient);
  auto ch = Channel(s.address(), co);
  CallResult r = ch->CallBlocking("Echo/Meta", "", Timeout(absl::Seconds(5)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "spiffe://mesh.test/client");  // the handler saw the caller's identity
  // A gRPC client that offers no ALPN, or a plaintext one, gets nowhere.
  auto plain = Channel(s.address());
  CallResult p = plain->CallBlocking("Echo/Say", "x", Timeout(absl::Seconds(3)));
  EXPECT_EQ(p.status.code(), absl::StatusCode::kUnavailable) << p.status;
}

// --- Lifetimes: owners going away while work is pending ---

TEST(GrpcLoopbackTest, HandleCancelledAfterTheChannelIsGoneTouchesNothing) {
  TestServer s;
  auto ch = Channel(s.address());
  std::atomic<int> callbacks{0};
  client::CallHandle h = ch->Call("Echo/Hang", "", Timeout(absl::Seconds(10)),
                                  [&](CallResult r) {
                                    EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled);
                                    callbacks.fetch_add(1);
                                  });
  ASSERT_TRUE(testing::Eventually([&] { return s.server->active_calls() == 1; }));
  ch.reset();  // ends the call
  EXPECT_EQ(callbacks.load(), 1);
  h.Cancel();  // the channel, its connections and maybe its loops are gone
  EXPECT_EQ(callbacks.load(), 1);
}

TEST(GrpcLoopbackTest, ShutdownFromInsideACallbackEndsEveryOtherCallOnce) {
  TestServer s;
  auto ch = Channel(s.address());
  ASSERT_TRUE(ch->CallBlocking("Echo/Say", "warm", Timeout(absl::Seconds(5))).status.ok());
  constexpr int kHanging = 20;
  std::atomic<int> ended{0}, cancelled{0};
  for (int i = 0; i < kHanging; ++i) {
    ch->Call("Echo/Hang", "", Timeout(absl::Seconds(10)), [&](CallResult r) {
      if (r.status.code() == absl::StatusCode::kCancelled) cancelled.fetch_add(1);
      ended.fetch_add(1);
    });
  }
  ASSERT_TRUE(testing::Eventually([&] { return s.server->active_calls() == kHanging; }));
  core::Notification shut;
  // The reply's callback runs on the reactor, between reads, and shuts the
  // channel down there.
  ch->Call("Echo/Say", "bye", Timeout(absl::Seconds(5)), [&](CallResult r) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    ch->Shutdown();
    shut.Notify();
  });
  ASSERT_TRUE(shut.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_TRUE(testing::Eventually([&] { return ended.load() == kHanging; }));
  EXPECT_EQ(cancelled.load(), kHanging);
  CallResult after = ch->CallBlocking("Echo/Say", "x", Timeout(absl::Seconds(1)));
  EXPECT_EQ(after.status.code(), absl::StatusCode::kCancelled) << after.status;
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(ended.load(), kHanging);  // each exactly once
}

int RawConnect(const std::string& address) {
  auto a = transport::ParseHostPort(address);
  EXPECT_TRUE(a.ok());
  int fd = socket(a->storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&a->storage), a->len), 0);
  return fd;
}

// True once the server closed `fd` (EOF), within `timeout`.
bool ClosedByPeer(int fd, absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  char buf[256];
  while (absl::Now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10) > 0 && read(fd, buf, sizeof(buf)) <= 0) return true;
  }
  return false;
}

TEST(GrpcLoopbackTest, ServerDestroyedWithGrpcCallsAndUndecidedConnectionsPending) {
  auto s = std::make_unique<TestServer>();
  auto ch = Channel(s->address());
  constexpr int kHanging = 30;
  std::atomic<int> ended{0};
  for (int i = 0; i < kHanging; ++i) {
    ch->Call("Echo/Hang", "", Timeout(absl::Seconds(10)),
             [&](CallResult) { ended.fetch_add(1); });
  }
  ASSERT_TRUE(testing::Eventually([&] { return s->server->active_calls() == kHanging; }));
  // Two connections the server has not told apart yet: silent, and half a
  // preface.
  const int silent = RawConnect(s->address());
  const int half = RawConnect(s->address());
  ASSERT_EQ(write(half, "PRI * HTTP", 10), 10);
  absl::SleepFor(absl::Milliseconds(20));
  // Shut down and destroyed on another thread, calls still running.
  std::thread([&] {
    s->server->Shutdown(absl::Milliseconds(100));
    s.reset();
  }).join();
  EXPECT_TRUE(testing::Eventually([&] { return ended.load() == kHanging; }));
  EXPECT_TRUE(ClosedByPeer(silent, absl::Seconds(5)));
  EXPECT_TRUE(ClosedByPeer(half, absl::Seconds(5)));
  close(silent);
  close(half);
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(ended.load(), kHanging);  // each exactly once
}

TEST(GrpcLoopbackTest, TheMeshOverGrpcRetriesAcrossInstancesAndProbesHealth) {
  TestServer good;
  server::ServerOptions o;
  TestServer bad(o);
  bad.server->SetServing(false);  // its gRPC health answer is NOT_SERVING
  auto cfg = config::ParseMeshConfig(absl::StrCat(
      R"({"services": {"echo": {"protocol": "grpc", "timeout": "2s",
          "discovery": {"static": {"endpoints": [")",
      good.address(), R"(", ")", bad.address(), R"("]}},
          "health_check": {"interval": "50ms", "timeout": "50ms", "unhealthy_threshold": 1}}}})"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  mesh::MeshOptions mo;
  mo.metrics = nullptr;
  auto m = mesh::Mesh::Create(*std::move(cfg), mo);
  ASSERT_TRUE(m.ok()) << m.status();
  auto c = (*m)->Client("echo");
  ASSERT_TRUE(c.ok()) << c.status();
  // The NOT_SERVING instance is taken out by its probes; then every call
  // goes to the good one.
  ASSERT_TRUE(testing::Eventually([&] {
    return bad.server->stats().health_checks >= 2;
  }));
  absl::SleepFor(absl::Milliseconds(100));
  const int64_t bad_calls_before = bad.server->stats().calls;
  for (int i = 0; i < 50; ++i) {
    CallResult r = (*c)->CallBlocking("Echo/Say", "m");
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.endpoint, good.address());
  }
  EXPECT_EQ(bad.server->stats().calls, bad_calls_before);
  EXPECT_NE((*c)->Describe().find("gRPC over HTTP/2"), std::string::npos) << (*c)->Describe();
}

}  // namespace
}  // namespace meshlib
