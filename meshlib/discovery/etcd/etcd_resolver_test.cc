// The "etcd" kind against a scripted HTTP server that plays a broken etcd:
// garbage, truncated JSON, 500s, watch streams that break. Every failure is
// reported and counted; nothing crashes; nothing is published because of a
// failure. (The real etcd is in tests/etcd_integration_test.cc.)
#include "meshlib/discovery/etcd/etcd_resolver.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "meshlib/core/log.h"
#include "meshlib/core/sync.h"
#include "meshlib/discovery/builtin.h"
#include "meshlib/testing/fake_http_server.h"

namespace meshlib::discovery {
namespace {

using json = nlohmann::json;
using testing::FakeHttpServer;
using Conn = FakeHttpServer::Conn;
using Request = FakeHttpServer::Request;

constexpr char kPrefix[] = "/meshlib/services/echo/";

std::string Reply(int status, const std::string& body) {
  return absl::StrCat("HTTP/1.1 ", status, " X\r\nContent-Type: application/json\r\n",
                      "Content-Length: ", body.size(), "\r\n\r\n", body);
}

std::string Chunk(const std::string& data) {
  return absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n");
}

std::string Kv(const std::string& key, const std::string& value, int mod_revision = 3) {
  return absl::StrCat(R"({"key":")", absl::Base64Escape(key), R"(","value":")",
                      absl::Base64Escape(value), R"(","mod_revision":")", mod_revision, "\"}");
}

json Config(const std::string& endpoint) {
  return json{{"etcd",
               {{"endpoints", {endpoint}},
                {"prefix", kPrefix},
                {"request_timeout", "2s"},
                {"retry_backoff", {{"base", "10ms"}, {"max", "50ms"}}}}}};
}

// Collects the warnings Discovery logs for reported errors.
class LogCapture {
 public:
  LogCapture() {
    previous_ = core::SetLogSink([this](core::LogLevel, absl::string_view line) {
      core::MutexLock lock(&mu_);
      lines_.emplace_back(line);
    });
  }
  ~LogCapture() { core::SetLogSink(previous_); }
  bool Contains(absl::string_view text) {
    core::MutexLock lock(&mu_);
    for (const auto& l : lines_) {
      if (absl::StrContains(l, text)) return true;
    }
    return false;
  }

 private:
  core::LogSink previous_;
  core::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

bool WaitFor(const std::function<bool()>& cond, absl::Duration timeout = absl::Seconds(10)) {
  absl::Time give_up = absl::Now() + timeout;
  while (absl::Now() < give_up) {
    if (cond()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return cond();
}

class EtcdResolverFakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = runtime::EventLoop::Create("control").value();
    registry_.Register(MakeEtcdResolverFactory());
  }
  std::unique_ptr<Discovery> Start(const std::string& endpoint) {
    return Discovery::Create("echo", Config(endpoint), loop_.get(), "", registry_, 42).value();
  }
  std::unique_ptr<runtime::EventLoop> loop_;
  ResolverRegistry registry_;
};

TEST_F(EtcdResolverFakeTest, GarbageTruncatedJsonAnd500sAreReportedNeverPublished) {
  LogCapture log;
  std::atomic<int> n{0};
  FakeHttpServer server([&](const Request& req, Conn& c) {
    EXPECT_EQ(req.target, "/v3/kv/range");
    switch (n++ % 5) {
      case 0:
        c.Write("\x16\x03\x01 this is not HTTP");
        break;
      case 1:
        c.Write(Reply(200, R"({"header":{"revision":"5"},"kvs":[{"key":"L21lc2hs)"));
        break;
      case 2:
        c.Write(Reply(500, R"({"error":"etcdserver: request timed out","code":14})"));
        break;
      case 3:
        c.Write(Reply(200, R"({"kvs":"everything"})"));
        break;
      case 4:
        c.Write("HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"header\":");
        break;
    }
  });
  auto d = Start(server.address());
  ASSERT_TRUE(WaitFor([&] { return d->stats().errors >= 10; }));
  EXPECT_EQ(d->Current(), nullptr);  // never an empty set because of a failure
  EXPECT_EQ(d->stats().updates, 0u);
  EXPECT_TRUE(log.Contains("does not start with \"HTTP/\"")) << "garbage";
  EXPECT_TRUE(log.Contains("response body is not valid JSON")) << "truncated JSON";
  EXPECT_TRUE(log.Contains("request timed out")) << "500";
  EXPECT_TRUE(log.Contains("malformed response")) << "wrong shape";
  EXPECT_TRUE(log.Contains("after 10 of 500 body bytes")) << "cut short";
  EXPECT_TRUE(log.Contains(absl::StrCat("etcd prefix \"", kPrefix, "\"")));
}

TEST_F(EtcdResolverFakeTest, BrokenWatchKeepsTheSetAndResumesAfterTheLastRevision) {
  LogCapture log;
  std::atomic<int> watches{0};
  core::Mutex mu;
  std::vector<std::string> watch_bodies;
  FakeHttpServer server([&](const Request& req, Conn& c) {
    if (req.target == "/v3/kv/range") {
      c.Write(Reply(200, absl::StrCat(R"({"header":{"revision":"7"},"kvs":[)",
                                      Kv(absl::StrCat(kPrefix, "127.0.0.1:7001"),
                                         R"({"address":"127.0.0.1:7001","zone":"a"})"),
                                      "]}")));
      return;
    }
    {
      core::MutexLock lock(&mu);
      watch_bodies.push_back(req.body);
    }
    std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    std::string created = Chunk(R"({"result":{"header":{"revision":"7"},"created":true}})" "\n");
    switch (watches++) {
      case 0:  // an event, then JSON cut in the middle, then the connection drops
        c.Write(head + created +
                Chunk(absl::StrCat(R"({"result":{"header":{"revision":"9"},"events":[{"kv":)",
                                   Kv(absl::StrCat(kPrefix, "127.0.0.1:7002"),
                                      R"({"address":"127.0.0.1:7002"})", 9),
                                   "}]}}\n")) +
                Chunk(R"({"result":{"events":[{"kv":{"key":"L21)"));
        break;
      case 1:  // a message that is JSON but not a watch response
        c.Write(head + created + Chunk("{\"result\":{\"events\":7}}\n"));
        c.WaitForPeerClose(absl::Seconds(10));
        break;
      case 2:  // etcd's own error in the stream
        c.Write(head + Chunk("{\"error\":{\"grpc_code\":14,\"message\":\"etcdserver: no leader\"}}\n"));
        c.WaitForPeerClose(absl::Seconds(10));
        break;
      default:  // healthy and quiet
        c.Write(head + created);
        c.WaitForPeerClose(absl::Seconds(20));
        break;
    }
  });
  auto d = Start(server.address());
  ASSERT_TRUE(WaitFor([&] { return watches.load() >= 4; }));
  ASSERT_NE(d->Current(), nullptr);
  // The event before the broken JSON was applied; nothing was lost or dropped.
  EXPECT_EQ(d->Current()->ToString(), "127.0.0.1:7001, 127.0.0.1:7002");
  EXPECT_EQ(d->Current()->Find("127.0.0.1:7001")->zone, "a");
  EXPECT_EQ(d->stats().updates, 2u);
  EXPECT_GE(d->stats().errors, 3u);
  EXPECT_TRUE(log.Contains("connection closed inside a chunked body"));
  EXPECT_TRUE(log.Contains("malformed watch message"));
  EXPECT_TRUE(log.Contains("etcdserver: no leader"));
  core::MutexLock lock(&mu);
  ASSERT_GE(watch_bodies.size(), 4u);
  // First from the listed revision + 1, then always after the last event.
  EXPECT_TRUE(absl::StrContains(watch_bodies[0], R"("start_revision":"8")")) << watch_bodies[0];
  for (size_t i = 1; i < watch_bodies.size(); ++i) {
    EXPECT_TRUE(absl::StrContains(watch_bodies[i], R"("start_revision":"10")")) << watch_bodies[i];
  }
  EXPECT_EQ(server.received().front().target, "/v3/kv/range");
  int ranges = 0;
  for (const auto& r : server.received()) ranges += r.target == "/v3/kv/range";
  EXPECT_EQ(ranges, 1);  // resumed, not re-listed
}

TEST_F(EtcdResolverFakeTest, CompactedOrCanceledWatchListsAgain) {
  std::atomic<int> ranges{0};
  FakeHttpServer server([&](const Request& req, Conn& c) {
    if (req.target == "/v3/kv/range") {
      int i = ranges++;
      std::string kv = Kv(absl::StrCat(kPrefix, "127.0.0.1:", 7000 + i),
                          absl::StrCat(R"({"address":"127.0.0.1:)", 7000 + i, "\"}"));
      c.Write(Reply(200, absl::StrCat(R"({"header":{"revision":")", 10 * (i + 1), R"("},"kvs":[)",
                                      kv, "]}")));
      return;
    }
    std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    std::string created = Chunk(R"({"result":{"created":true}})" "\n");
    if (ranges.load() == 1) {
      c.Write(head + created + Chunk(R"({"result":{"canceled":true,"compact_revision":"15"}})" "\n"));
    } else if (ranges.load() == 2) {
      c.Write(head + created + Chunk(R"({"result":{"canceled":true,"cancel_reason":"permission denied"}})" "\n"));
    } else {
      c.Write(head + created);
    }
    c.WaitForPeerClose(absl::Seconds(20));
  });
  auto d = Start(server.address());
  ASSERT_TRUE(WaitFor([&] {
    auto s = d->Current();
    return s && s->ToString() == "127.0.0.1:7002";
  })) << (d->Current() ? d->Current()->ToString() : "none");
  EXPECT_EQ(ranges.load(), 3);
  EXPECT_GE(d->stats().errors, 2u);
  EXPECT_EQ(d->stats().updates, 3u);  // one per list, each a different set
}

TEST(EtcdResolverConfigTest, ErrorsNameTheField) {
  auto f = MakeEtcdResolverFactory();
  auto check = [&](const char* config, const char* want) {
    absl::Status st = f->Validate(json::parse(config), "services.echo.discovery.etcd");
    EXPECT_FALSE(st.ok()) << config;
    EXPECT_TRUE(absl::StrContains(st.message(), want)) << st << " / " << want;
  };
  check(R"({"prefix":"/p/"})", "services.echo.discovery.etcd.endpoints: required");
  check(R"({"endpoints":[],"prefix":"/p/"})", "etcd.endpoints: must be a non-empty list");
  check(R"({"endpoints":["etcd:2379"],"prefix":"/p/"})", "etcd.endpoints[0]: ");
  check(R"({"endpoints":["127.0.0.1:0"],"prefix":"/p/"})", "etcd.endpoints[0]: port");
  check(R"({"endpoints":["127.0.0.1:2379"]})", "etcd.prefix: required");
  check(R"({"endpoints":["127.0.0.1:2379"],"prefix":""})", "etcd.prefix: must be a non-empty");
  check(R"({"endpoints":["127.0.0.1:2379"],"prefix":"/p/","dial_timeout":"soon"})",
        "etcd.dial_timeout: \"soon\" is not a duration");
  check(R"({"endpoints":["127.0.0.1:2379"],"prefix":"/p/","request_timeout":"0s"})",
        "etcd.request_timeout: must be between");
  check(R"({"endpoints":["127.0.0.1:2379"],"prefix":"/p/","retry_backoff":{"base":"2s","max":"1s"}})",
        "etcd.retry_backoff.max: must be >= base");
  check(R"({"endpoints":["127.0.0.1:2379"],"prefix":"/p/","retry_backoff":{"min":"1s"}})",
        "etcd.retry_backoff.min: unknown key");
  check(R"({"endpoints":["127.0.0.1:2379"],"prefix":"/p/","ttl":"1s"})", "etcd.ttl: unknown key");
  EXPECT_TRUE(f->Validate(json::parse(R"({"endpoints":["127.0.0.1:2379","[::1]:2379"],
                                          "prefix":"/p/","dial_timeout":"1s",
                                          "request_timeout":"3s",
                                          "retry_backoff":{"base":"50ms","max":"1s"}})"),
                          "x")
                  .ok());
  // And the kind is built in.
  EXPECT_NE(ResolverRegistry::Global().Find("etcd"), nullptr);
}

TEST(EtcdRegistrationParseTest, WhatIsAcceptedAndWhy) {
  const std::string p = "/svc/";
  auto ok = ParseEtcdRegistration(
      p, "/svc/127.0.0.1:7001",
      R"({"address":"127.0.0.1:7001","weight":3,"zone":"b","metadata":{"name":"x"}})");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->weight, 3u);
  EXPECT_EQ(ok->zone, "b");
  EXPECT_EQ(ok->metadata.at("name"), "x");
  EXPECT_TRUE(ParseEtcdRegistration(p, "/svc/[0::1]:80", R"({"address":"[::1]:80"})").ok());

  auto bad = [&](const std::string& key, const std::string& value, const char* want) {
    auto r = ParseEtcdRegistration(p, key, value);
    ASSERT_FALSE(r.ok()) << key << " " << value;
    EXPECT_TRUE(absl::StrContains(r.status().message(), want)) << r.status() << " / " << want;
  };
  bad("/svc/127.0.0.1:7001", "{\"address\":", "not valid JSON");
  bad("/svc/127.0.0.1:7001", "\"127.0.0.1:7001\"", "must be a JSON object");
  bad("/svc/127.0.0.1:7001", "{}", "value.address: required");
  bad("/svc/127.0.0.1:7001", R"({"address":"127.0.0.1:7002"})", "does not match the key's");
  bad("/svc/127.0.0.1:7001", R"({"address":"127.0.0.1:7001","weight":-1})", "value.weight");
  bad("/svc/config", R"({"address":"127.0.0.1:7001"})", "does not end in a host:port");
  bad("/svc/a/127.0.0.1:7001", R"({"address":"127.0.0.1:7001"})", "does not end in a host:port");
}

}  // namespace
}  // namespace meshlib::discovery
