#include "meshlib/etcd/http_client.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "meshlib/core/sync.h"
#include "meshlib/testing/fake_http_server.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib::etcd {
namespace {

using testing::FakeHttpServer;
using Conn = FakeHttpServer::Conn;
using Request = FakeHttpServer::Request;

class HttpClientTest : public ::testing::Test {
 protected:
  void SetUp() override { loop_ = runtime::EventLoop::Create("http-test").value(); }
  void TearDown() override {
    loop_->RunAndWait([this] { call_.reset(); });
  }

  // Fetches `target` from `address`, waiting for the result.
  absl::StatusOr<HttpResponse> Fetch(const std::string& address, HttpCallOptions o = {},
                                     std::string body = "{}") {
    core::Notification done;
    absl::StatusOr<HttpResponse> out = absl::UnknownError("none");
    loop_->RunAndWait([&] {
      HttpRequest req;
      req.target = "/v3/kv/range";
      req.body = body;
      call_ = HttpFetch(loop_.get(), address, std::move(req), o,
                        [&](absl::StatusOr<HttpResponse> r) {
                          out = std::move(r);
                          done.Notify();
                        });
    });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
    loop_->RunAndWait([this] { call_.reset(); });
    return out;
  }

  std::unique_ptr<runtime::EventLoop> loop_;
  std::unique_ptr<HttpCall> call_;
};

TEST_F(HttpClientTest, PostsJsonAndReadsTheResponse) {
  FakeHttpServer server([](const Request& req, Conn& c) {
    c.Write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
            std::to_string(req.body.size()) + "\r\n\r\n" + req.body);
  });
  auto r = Fetch(server.address(), {}, R"({"key":"Zm9v"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"key":"Zm9v"})");
  auto got = server.received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].method, "POST");
  EXPECT_EQ(got[0].target, "/v3/kv/range");
  EXPECT_TRUE(absl::StrContains(got[0].head, "Content-Length: 14")) << got[0].head;
  EXPECT_TRUE(absl::StrContains(got[0].head, "Host: " + server.address())) << got[0].head;
  EXPECT_TRUE(absl::StrContains(got[0].head, "Connection: close")) << got[0].head;
}

TEST_F(HttpClientTest, StreamDeliversBodyBytesAsTheyArrive) {
  core::Notification first_seen, finish;
  FakeHttpServer server([&](const Request&, Conn& c) {
    c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n");
    // Nothing more until the client has handed the first message on.
    EXPECT_TRUE(finish.WaitForNotificationWithTimeout(absl::Seconds(20)));
    c.Write("7\r\nsecond\n\r\n0\r\n\r\n");
  });
  std::vector<std::string> pieces;  // loop thread only, until `done`
  int status = 0;
  core::Notification done;
  absl::Status result;
  loop_->RunAndWait([&] {
    HttpRequest req;
    req.target = "/v3/watch";
    HttpCallOptions o;
    o.total_timeout = absl::InfiniteDuration();
    HttpCall::Handlers h;
    h.on_head = [&](const HttpResponseParser& p) { status = p.status_code(); };
    h.on_body = [&](absl::string_view b) {
      pieces.emplace_back(b);
      if (pieces.size() == 1) first_seen.Notify();
    };
    h.on_done = [&](absl::Status st) {
      result = st;
      done.Notify();
    };
    call_ = HttpCall::Start(loop_.get(), server.address(), std::move(req), o, std::move(h));
  });
  ASSERT_TRUE(first_seen.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_FALSE(done.HasBeenNotified());
  finish.Notify();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_EQ(status, 200);
  EXPECT_EQ(pieces, (std::vector<std::string>{"first\n", "second\n"}));
}

TEST_F(HttpClientTest, BrokenResponsesAreUnavailableNamingTheServer) {
  struct Case {
    std::string reply;
    std::string want;
  };
  for (const Case& c : std::vector<Case>{
           {"SSH-2.0-OpenSSH_9.2\r\n", "does not start with \"HTTP/\""},
           {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "after 3 of 10 body bytes"},
           {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", "bad chunk size"},
           {"", "connection closed before any response"},
       }) {
    FakeHttpServer server([&](const Request&, Conn& conn) { conn.Write(c.reply); });
    auto r = Fetch(server.address());
    ASSERT_FALSE(r.ok()) << c.reply;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), c.want)) << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), server.address() + "/v3/kv/range"))
        << r.status();
  }
}

TEST_F(HttpClientTest, LimitsAndTimeouts) {
  FakeHttpServer big([](const Request&, Conn& c) {
    c.Write("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
  });
  HttpCallOptions o;
  o.limits.max_body_bytes = 1000;
  auto r = Fetch(big.address(), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();

  FakeHttpServer silent([](const Request&, Conn& c) { c.WaitForPeerClose(absl::Seconds(20)); });
  o = HttpCallOptions();
  o.head_timeout = absl::Milliseconds(200);
  absl::Time start = absl::Now();
  r = Fetch(silent.address(), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "no response within 200ms")) << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));

  FakeHttpServer slow([](const Request&, Conn& c) {
    c.Write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
    c.WaitForPeerClose(absl::Seconds(20));
  });
  o = HttpCallOptions();
  o.total_timeout = absl::Milliseconds(200);
  r = Fetch(slow.address(), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "2 body bytes so far")) << r.status();
}

TEST_F(HttpClientTest, ConnectErrorsComeThroughTheCallback) {
  // A port nothing listens on.
  int port = testing::PickFreePort();
  auto r = Fetch("127.0.0.1:" + std::to_string(port));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "connect")) << r.status();
  r = Fetch("etcd.example.com:2379");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "not an IP literal")) << r.status();
}

TEST_F(HttpClientTest, DestroyingTheCallInsideItsHandlerAndMidStream) {
  FakeHttpServer server([](const Request&, Conn& c) {
    c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    c.WaitForPeerClose(absl::Seconds(20));
  });
  core::Notification destroyed;
  int bodies = 0;
  bool done_called = false;
  loop_->RunAndWait([&] {
    HttpCall::Handlers h;
    h.on_body = [&](absl::string_view) {
      ++bodies;
      call_.reset();  // from inside its own handler
      destroyed.Notify();
    };
    h.on_done = [&](absl::Status) { done_called = true; };
    HttpCallOptions o;
    o.total_timeout = absl::InfiniteDuration();
    call_ = HttpCall::Start(loop_.get(), server.address(), HttpRequest{}, o, std::move(h));
  });
  ASSERT_TRUE(destroyed.WaitForNotificationWithTimeout(absl::Seconds(20)));
  // A window in which no further handler may run.
  absl::SleepFor(absl::Milliseconds(50));
  loop_->RunAndWait([] {});
  EXPECT_EQ(bodies, 1);
  EXPECT_FALSE(done_called);  // cancelled: no handler after destruction
}

}  // namespace
}  // namespace meshlib::etcd
