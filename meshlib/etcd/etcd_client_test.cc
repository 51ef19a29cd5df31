// EtcdClient against scripted HTTP servers: failover between endpoints, the
// gateway's error bodies, and watch streams cut at every awkward place.
// (The real etcd is in tests/etcd_integration_test.cc.)
#include "meshlib/etcd/etcd_client.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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

std::string JsonReply(int status, const std::string& body) {
  return absl::StrCat("HTTP/1.1 ", status, " X\r\nContent-Type: application/json\r\nContent-Length: ",
                      body.size(), "\r\n\r\n", body);
}

std::string Chunk(const std::string& data) {
  return absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n");
}

class EtcdClientTest : public ::testing::Test {
 protected:
  void SetUp() override { loop_ = runtime::EventLoop::Create("etcd-test").value(); }
  void TearDown() override {
    loop_->RunAndWait([this] {
      call_.reset();
      client_.reset();
    });
  }
  void MakeClient(std::vector<std::string> endpoints) {
    EtcdClientOptions o;
    o.endpoints = std::move(endpoints);
    o.request_timeout = absl::Seconds(5);
    client_ = EtcdClient::Create(loop_.get(), o).value();
  }
  absl::StatusOr<RangeResponse> Range() {
    core::Notification done;
    absl::StatusOr<RangeResponse> out = absl::UnknownError("none");
    loop_->RunAndWait([&] {
      call_ = client_->Range("/svc/", PrefixRangeEnd("/svc/"), [&](absl::StatusOr<RangeResponse> r) {
        out = std::move(r);
        done.Notify();
      });
    });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
    return out;
  }

  // Runs a watch until it ends; returns what it saw and how it ended.
  struct WatchResult {
    std::vector<WatchResponse> responses;
    absl::Status end;
  };
  WatchResult WatchUntilEnd() {
    WatchResult w;
    core::Notification done;
    loop_->RunAndWait([&] {
      call_ = client_->Watch(
          {"/svc/", PrefixRangeEnd("/svc/"), 5},
          [&](const WatchResponse& r) { w.responses.push_back(r); },
          [&](absl::Status st) {
            w.end = st;
            done.Notify();
          });
    });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
    loop_->RunAndWait([this] { call_.reset(); });
    return w;
  }

  std::unique_ptr<runtime::EventLoop> loop_;
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<EtcdCall> call_;
};

TEST_F(EtcdClientTest, TriesTheNextEndpointAndSticksToTheOneThatAnswered) {
  FakeHttpServer failing([](const Request&, Conn& c) {
    c.Write(JsonReply(503, R"({"error":"etcdserver: no leader","code":14})"));
  });
  FakeHttpServer good([](const Request& req, Conn& c) {
    EXPECT_EQ(req.target, "/v3/kv/range");
    EXPECT_EQ(req.body, R"({"key":"L3N2Yy8=","range_end":"L3N2YzA="})");
    c.Write(JsonReply(200, R"({"header":{"revision":"9"},"kvs":[{"key":"L3N2Yy94","value":"eQ=="}]})"));
  });
  const std::string dead = absl::StrCat("127.0.0.1:", testing::PickFreePort());
  MakeClient({dead, failing.address(), good.address()});
  auto r = Range();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->revision, 9);
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].key, "/svc/x");
  EXPECT_EQ(client_->preferred_endpoint(), good.address());
  ASSERT_TRUE(Range().ok());
  EXPECT_EQ(good.requests(), 2);
  EXPECT_EQ(failing.requests(), 1);  // the second range went straight to `good`
}

TEST_F(EtcdClientTest, AllEndpointsFailingNamesEach) {
  FakeHttpServer failing([](const Request&, Conn& c) { c.Write("HTTP/1.1 500 Oops\r\n\r\n"); });
  const std::string dead = absl::StrCat("127.0.0.1:", testing::PickFreePort());
  MakeClient({dead, failing.address()});
  auto r = Range();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "2 endpoints failed")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), dead)) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), failing.address() + "/v3/kv/range: HTTP 500"))
      << r.status();
}

TEST_F(EtcdClientTest, ClientErrorsAreNotRetriedAndKeepEtcdsCode) {
  FakeHttpServer first([](const Request&, Conn& c) {
    c.Write(JsonReply(400, R"({"error":"bad","message":"illegal base64 data","code":3})"));
  });
  FakeHttpServer second([](const Request&, Conn& c) { ADD_FAILURE() << "should not be asked"; });
  MakeClient({first.address(), second.address()});
  auto r = Range();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "illegal base64 data")) << r.status();
  EXPECT_EQ(second.requests(), 0);
}

TEST_F(EtcdClientTest, MalformedSuccessBodiesAreErrors) {
  for (std::string body : {"{\"header\":{\"revision\":\"9\"},\"kvs\":[{\"key\":\"L3N2", "[1,2]",
                           "{\"header\":{\"revision\":\"9\"},\"kvs\":[{\"key\":7}]}", ""}) {
    FakeHttpServer s([&](const Request&, Conn& c) { c.Write(JsonReply(200, body)); });
    MakeClient({s.address()});
    auto r = Range();
    EXPECT_FALSE(r.ok()) << body;
    EXPECT_TRUE(absl::StrContains(r.status().message(), s.address())) << r.status();
    loop_->RunAndWait([this] { call_.reset(); });
  }
}

TEST_F(EtcdClientTest, KeepAliveReadsTheFirstStreamMessage) {
  FakeHttpServer s([](const Request& req, Conn& c) {
    EXPECT_EQ(req.body, R"({"ID":"123"})");
    c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
            Chunk(R"({"result":{"header":{"revision":"2"},"ID":"123","TTL":"7"}})" "\n") +
            "0\r\n\r\n");
  });
  MakeClient({s.address()});
  core::Notification done;
  absl::StatusOr<int64_t> ttl = 0;
  loop_->RunAndWait([&] {
    call_ = client_->LeaseKeepAlive(123, [&](absl::StatusOr<int64_t> r) {
      ttl = r;
      done.Notify();
    });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  EXPECT_EQ(*ttl, 7);
}

TEST_F(EtcdClientTest, WatchMessagesSplitAnywhereAreReassembled) {
  const std::string stream =
      R"({"result":{"header":{"revision":"4"},"created":true}})" "\n"
      R"({"result":{"header":{"revision":"5"},"events":[{"kv":{"key":"L3N2Yy9h","mod_revision":"5","value":"eA=="}}]}})" "\n"
      R"({"result":{"header":{"revision":"6"},"events":[{"type":"DELETE","kv":{"key":"L3N2Yy9h","mod_revision":"6"}}]}})" "\n";
  FakeHttpServer s([&](const Request& req, Conn& c) {
    EXPECT_TRUE(absl::StrContains(req.body, R"("start_revision":"5")")) << req.body;
    c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    // Chunks of 7 bytes: messages, escapes and chunk framing all cut mid-way.
    for (size_t i = 0; i < stream.size(); i += 7) c.Write(Chunk(stream.substr(i, 7)));
    c.Write("0\r\n\r\n");
  });
  MakeClient({s.address()});
  WatchResult w = WatchUntilEnd();
  ASSERT_EQ(w.responses.size(), 3u) << w.end;
  EXPECT_TRUE(w.responses[0].created);
  ASSERT_EQ(w.responses[1].events.size(), 1u);
  EXPECT_EQ(w.responses[1].events[0].kv.key, "/svc/a");
  EXPECT_EQ(w.responses[2].events[0].type, WatchEvent::Type::kDelete);
  EXPECT_EQ(w.end.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(w.end.message(), "ended the watch stream")) << w.end;
}

TEST_F(EtcdClientTest, BrokenWatchStreamsEndWithAnError) {
  struct Case {
    std::string body;  // after the head
    std::string want;
  };
  const std::string created = Chunk(R"({"result":{"created":true}})" "\n");
  for (const Case& c : std::vector<Case>{
           {created + Chunk("{\"result\":{\"events\":[{\"kv\":{\"key\":\"YQ==\"}}]"), "closed"},
           {created + Chunk("not json at all\n"), "between JSON messages"},
           {created + Chunk("{\"result\":{\"events\":[{\"kv\":{\"key\":5}}]}}\n"),
            "malformed watch message"},
           {created + Chunk("{\"result\": nope}\n"), "not valid JSON"},
           {created + Chunk("{\"result\":[}]}\n"), "\"}\" closes a \"[\""},
           {created + Chunk("{\"error\":{\"grpc_code\":14,\"message\":\"etcdserver: no leader\"}}\n"),
            "no leader"},
           {created + "zz\r\n", "bad chunk size"},
       }) {
    FakeHttpServer s([&](const Request&, Conn& conn) {
      conn.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + c.body);
    });
    MakeClient({s.address()});
    WatchResult w = WatchUntilEnd();
    EXPECT_FALSE(w.end.ok());
    EXPECT_TRUE(absl::StrContains(w.end.message(), c.want)) << w.end << " / " << c.want;
    ASSERT_GE(w.responses.size(), 1u) << w.end;  // what came before still counted
    EXPECT_TRUE(w.responses[0].created);
  }
}

TEST_F(EtcdClientTest, WatchRefusedWithHttpErrorCarriesTheBody) {
  FakeHttpServer s([](const Request&, Conn& c) {
    c.Write(JsonReply(500, R"({"error":"boom","message":"grpc: the client connection is closing","code":1})"));
  });
  MakeClient({s.address()});
  WatchResult w = WatchUntilEnd();
  EXPECT_TRUE(w.responses.empty());
  EXPECT_TRUE(absl::StrContains(w.end.message(), "HTTP 500: grpc: the client connection is closing"))
      << w.end;
}

}  // namespace
}  // namespace meshlib::etcd
