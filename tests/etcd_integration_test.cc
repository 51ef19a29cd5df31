// etcd discovery and self-registration against a real etcd (Debian's
// etcd-server 3.4, /usr/bin/etcd), started by each test on free loopback
// ports: the "etcd" discovery kind following puts and deletes, skipping bad
// entries, riding out an etcd crash and restart, re-listing after a
// compaction; the Registrar's lease; echo_server processes joining and
// leaving. Without etcd installed these tests fail, saying so.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "meshlib/client/channel.h"
#include "meshlib/core/log.h"
#include "meshlib/core/sync.h"
#include "meshlib/discovery/builtin.h"
#include "meshlib/discovery/resolver.h"
#include "meshlib/testing/etcd_test_server.h"
#include "meshlib/etcd/registrar.h"
#include "meshlib/server/etcd_registration.h"
#include "meshlib/server/server.h"
#include "meshlib/testing/subprocess.h"
#include "nlohmann/json.hpp"

namespace meshlib {
namespace {

using json = nlohmann::json;
using testing::EtcdTestServer;
using Process = testing::Subprocess;

constexpr char kPrefix[] = "/meshlib/services/echo/";

std::string Key(const std::string& address) { return absl::StrCat(kPrefix, address); }

std::string Value(const std::string& address, const std::string& zone = "", int weight = 1) {
  json j = {{"address", address}, {"weight", weight}};
  if (!zone.empty()) j["zone"] = zone;
  return j.dump();
}

bool WaitFor(const std::function<bool()>& cond, absl::Duration timeout) {
  absl::Time give_up = absl::Now() + timeout;
  while (absl::Now() < give_up) {
    if (cond()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return cond();
}

std::string SetString(const discovery::Discovery& d) {
  auto s = d.Current();
  return s ? absl::StrCat("[", s->ToString(), "]") : "(none)";
}

// Waits until the published set is exactly `want` ("[a, b]").
::testing::AssertionResult SetBecomes(const discovery::Discovery& d, const std::string& want,
                                      absl::Duration timeout = absl::Seconds(10)) {
  if (WaitFor([&] { return SetString(d) == want; }, timeout)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "set is " << SetString(d) << ", wanted " << want
                                       << " (errors " << d.stats().errors
                                       << ", last: " << d.stats().last_error << ")";
}

// Collects log lines (Discovery logs every reported error).
class LogCapture {
 public:
  LogCapture() {
    previous_ = core::SetLogSink([this](core::LogLevel, absl::string_view line) {
      core::MutexLock lock(&mu_);
      lines_.emplace_back(line);
    });
  }
  ~LogCapture() { core::SetLogSink(previous_); }
  int Count(absl::string_view text) {
    core::MutexLock lock(&mu_);
    int n = 0;
    for (const auto& l : lines_) n += absl::StrContains(l, text);
    return n;
  }

 private:
  core::LogSink previous_;
  core::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

// A TCP proxy in front of etcd that the test can cut: while blocked it
// closes every connection and refuses new ones, so that a client is kept
// away from an etcd that keeps running (and changing).
class TcpProxy {
 public:
  explicit TcpProxy(int upstream_port) : upstream_port_(upstream_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(listen_fd_, 64), 0);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    address_ = absl::StrCat("127.0.0.1:", ntohs(a.sin_port));
    thread_ = std::thread([this] { Loop(); });
  }
  ~TcpProxy() {
    stop_ = true;
    thread_.join();
    for (auto [a, b] : pairs_) {
      close(a);
      close(b);
    }
    close(listen_fd_);
  }
  const std::string& address() const { return address_; }
  // Cuts every connection (waits until they are closed) and refuses new ones.
  void Block() {
    blocked_ = true;
    EXPECT_TRUE(WaitFor([this] { return open_pairs_.load() == 0; }, absl::Seconds(5)));
  }
  void Unblock() { blocked_ = false; }

 private:
  void ClosePair(size_t i) {
    close(pairs_[i].first);
    close(pairs_[i].second);
    pairs_.erase(pairs_.begin() + static_cast<long>(i));
    open_pairs_ = static_cast<int>(pairs_.size());
  }
  void Loop() {
    char buf[16384];
    while (!stop_) {
      if (blocked_) {
        while (!pairs_.empty()) ClosePair(0);
      }
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}};
      for (auto [a, b] : pairs_) {
        fds.push_back({a, POLLIN, 0});
        fds.push_back({b, POLLIN, 0});
      }
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0 && blocked_) {
          close(c);
        } else if (c >= 0) {
          int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          sockaddr_in a{};
          a.sin_family = AF_INET;
          a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
          a.sin_port = htons(static_cast<uint16_t>(upstream_port_));
          if (connect(u, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
            pairs_.emplace_back(c, u);
            open_pairs_ = static_cast<int>(pairs_.size());
          } else {
            close(u);
            close(c);
          }
        }
      }
      // Only the pairs that were polled (a pair accepted just now was not),
      // back to front, so that closing one leaves earlier indexes valid.
      for (size_t i = (fds.size() - 1) / 2; i-- > 0;) {
        for (int side = 0; side < 2; ++side) {
          if (!(fds[1 + 2 * i + side].revents & (POLLIN | POLLHUP | POLLERR))) continue;
          int from = side == 0 ? pairs_[i].first : pairs_[i].second;
          int to = side == 0 ? pairs_[i].second : pairs_[i].first;
          ssize_t n = read(from, buf, sizeof(buf));
          bool ok = n > 0;
          for (ssize_t off = 0; ok && off < n;) {
            ssize_t w = send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
            ok = w > 0;
            off += w;
          }
          if (!ok) {
            ClosePair(i);
            break;
          }
        }
      }
    }
  }

  const int upstream_port_;
  int listen_fd_ = -1;
  std::string address_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> blocked_{false};
  std::atomic<int> open_pairs_{0};
  std::vector<std::pair<int, int>> pairs_;  // proxy thread only
  std::thread thread_;
};

class EtcdIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.ok()) << "a real etcd is required (" << EtcdTestServer::kEtcd << ")";
    loop_ = runtime::EventLoop::Create("control").value();
  }
  void TearDown() override { discovery_.reset(); }

  discovery::Discovery& StartDiscovery(const std::string& endpoint = "") {
    json config = {{"etcd",
                    {{"endpoints", {endpoint.empty() ? etcd_.endpoint() : endpoint}},
                     {"prefix", kPrefix},
                     {"dial_timeout", "500ms"},
                     {"request_timeout", "2s"},
                     {"retry_backoff", {{"base", "50ms"}, {"max", "200ms"}}}}}};
    discovery_ = discovery::Discovery::Create("echo", config, loop_.get()).value();
    return *discovery_;
  }

  void Put(const std::string& key, const std::string& value) {
    auto r = etcd_.Put(key, value);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  void Delete(const std::string& key) {
    auto r = etcd_.Delete(key);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(*r, 1) << key;
  }

  EtcdTestServer etcd_;
  std::unique_ptr<runtime::EventLoop> loop_;
  std::unique_ptr<discovery::Discovery> discovery_;
};

TEST_F(EtcdIntegrationTest, ListThenWatchFollowsPutsAndDeletes) {
  Put(Key("127.0.0.1:7001"),
      R"({"address":"127.0.0.1:7001","weight":2,"zone":"a","metadata":{"name":"one"}})");
  Put(Key("127.0.0.1:7002"), Value("127.0.0.1:7002", "b"));
  Put("/meshlib/services/echoes/127.0.0.1:9999", Value("127.0.0.1:9999"));  // another prefix
  auto& d = StartDiscovery();
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7001, 127.0.0.1:7002]"));
  auto set = d.Current();  // held: the resolver may replace it any time
  const discovery::Endpoint* one = set->Find("127.0.0.1:7001");
  EXPECT_EQ(one->weight, 2u);
  EXPECT_EQ(one->zone, "a");
  EXPECT_EQ(one->metadata.at("name"), "one");

  // A put by another etcd client (etcdctl) shows up through the watch.
  etcd_.Etcdctl({"put", Key("127.0.0.1:7003"), Value("127.0.0.1:7003", "c")});
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7001, 127.0.0.1:7002, 127.0.0.1:7003]"));
  Put(Key("127.0.0.1:7001"), Value("127.0.0.1:7001", "a", 5));
  ASSERT_TRUE(WaitFor([&] { return d.Current()->Find("127.0.0.1:7001")->weight == 5; },
                      absl::Seconds(10)));
  Delete(Key("127.0.0.1:7002"));
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7001, 127.0.0.1:7003]"));
  // Everyone leaves: an empty set is the truth, and is published.
  Delete(Key("127.0.0.1:7001"));
  Delete(Key("127.0.0.1:7003"));
  ASSERT_TRUE(SetBecomes(d, "[]"));
  EXPECT_EQ(d.stats().errors, 0u) << d.stats().last_error;
}

TEST_F(EtcdIntegrationTest, EmptyPrefixIsPublishedAsAnEmptySet) {
  auto& d = StartDiscovery();
  ASSERT_TRUE(d.WaitForEndpoints(absl::Seconds(10)));
  EXPECT_TRUE(d.Current()->empty());
  EXPECT_EQ(d.stats().errors, 0u);
  Put(Key("127.0.0.1:7001"), Value("127.0.0.1:7001"));
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7001]"));
}

TEST_F(EtcdIntegrationTest, MalformedEntriesAreSkippedAndReportedWithTheirKey) {
  LogCapture log;
  Put(Key("127.0.0.1:7001"), Value("127.0.0.1:7001"));
  Put(Key("127.0.0.1:7002"), "{\"address\": \"127.0.0.1:7002\"");  // truncated JSON
  Put(Key("127.0.0.1:7003"), Value("127.0.0.1:7777"));             // names another address
  Put(Key("127.0.0.1:7004"), R"({"weight": 1})");                  // no address
  Put(Key("config"), Value("127.0.0.1:7005"));                     // not host:port
  auto& d = StartDiscovery();
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7001]"));
  EXPECT_EQ(d.stats().errors, 4u) << d.stats().last_error;
  EXPECT_EQ(log.Count(absl::StrCat("key \"", Key("127.0.0.1:7002"), "\" skipped: value is not valid JSON")), 1);
  EXPECT_EQ(log.Count(absl::StrCat("key \"", Key("127.0.0.1:7003"), "\" skipped: value.address \"127.0.0.1:7777\" does not match")), 1);
  EXPECT_EQ(log.Count(absl::StrCat("key \"", Key("127.0.0.1:7004"), "\" skipped: value.address: required")), 1);
  EXPECT_EQ(log.Count(absl::StrCat("key \"", Key("config"), "\" skipped")), 1);

  // Through the watch: a bad put is reported and changes nothing; a good
  // one still gets through; a good entry overwritten with garbage leaves.
  const uint64_t updates = d.stats().updates;
  Put(Key("127.0.0.1:7008"), "not json");
  ASSERT_TRUE(WaitFor([&] { return d.stats().errors == 5; }, absl::Seconds(10)));
  EXPECT_EQ(d.stats().updates, updates);
  EXPECT_EQ(log.Count(absl::StrCat("key \"", Key("127.0.0.1:7008"), "\" skipped")), 1);
  Put(Key("127.0.0.1:7009"), Value("127.0.0.1:7009"));
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7001, 127.0.0.1:7009]"));
  Put(Key("127.0.0.1:7001"), "[]");
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7009]"));
  EXPECT_EQ(d.stats().errors, 6u);
}

TEST_F(EtcdIntegrationTest, EtcdCrashKeepsTheSetThenRestartResumesWithoutLosingUpdates) {
  Put(Key("127.0.0.1:7001"), Value("127.0.0.1:7001"));
  Put(Key("127.0.0.1:7002"), Value("127.0.0.1:7002"));
  auto& d = StartDiscovery();
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7001, 127.0.0.1:7002]"));
  auto before = d.Current();
  const uint64_t updates = d.stats().updates;

  etcd_.Kill();
  ASSERT_TRUE(WaitFor([&] { return d.stats().errors >= 3; }, absl::Seconds(10)))
      << d.stats().errors;
  EXPECT_EQ(d.Current(), before);  // the last good set, not an empty one
  EXPECT_EQ(d.stats().updates, updates);
  EXPECT_EQ(d.stats().last_error.code(), absl::StatusCode::kUnavailable) << d.stats().last_error;

  ASSERT_TRUE(etcd_.Restart());
  // Changes made the moment etcd is back, before or while the watch
  // reconnects, are all seen: the watch resumes from the last revision.
  Put(Key("127.0.0.1:7003"), Value("127.0.0.1:7003"));
  Delete(Key("127.0.0.1:7001"));
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7002, 127.0.0.1:7003]"));
  // And the watch is live again.
  Put(Key("127.0.0.1:7004"), Value("127.0.0.1:7004"));
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7002, 127.0.0.1:7003, 127.0.0.1:7004]"));
}

TEST_F(EtcdIntegrationTest, CompactedHistoryWhileDisconnectedMeansListingAgain) {
  LogCapture log;
  TcpProxy proxy(std::stoi(etcd_.endpoint().substr(etcd_.endpoint().rfind(':') + 1)));
  Put(Key("127.0.0.1:7001"), Value("127.0.0.1:7001"));
  Put(Key("127.0.0.1:7002"), Value("127.0.0.1:7002"));
  auto& d = StartDiscovery(proxy.address());
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7001, 127.0.0.1:7002]"));

  proxy.Block();
  const uint64_t errors = d.stats().errors;
  ASSERT_TRUE(WaitFor([&] { return d.stats().errors > errors; }, absl::Seconds(10)));
  // While the resolver is cut off: changes, then the history of them is
  // compacted away, so resuming the watch from where it was is impossible.
  Put(Key("127.0.0.1:7003"), Value("127.0.0.1:7003"));
  Delete(Key("127.0.0.1:7001"));
  auto rev = etcd_.Revision();
  ASSERT_TRUE(rev.ok()) << rev.status();
  ASSERT_TRUE(etcd_.Compact(*rev).ok());
  proxy.Unblock();

  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7002, 127.0.0.1:7003]"));
  EXPECT_GE(log.Count("compacted its history"), 1);
  EXPECT_GE(log.Count("listing the prefix again"), 1);
  Put(Key("127.0.0.1:7004"), Value("127.0.0.1:7004"));  // and it watches again
  ASSERT_TRUE(SetBecomes(d, "[127.0.0.1:7002, 127.0.0.1:7003, 127.0.0.1:7004]"));
}

etcd::RegistrarOptions RegistrarFor(const EtcdTestServer& etcd, const std::string& address,
                                    absl::Duration ttl) {
  etcd::RegistrarOptions o;
  o.etcd.endpoints = {etcd.endpoint()};
  o.etcd.request_timeout = absl::Seconds(2);
  o.prefix = kPrefix;
  o.endpoint.address = address;
  o.endpoint.zone = "z";
  o.ttl = ttl;
  o.retry = {absl::Milliseconds(50), 1.6, 0.2, absl::Milliseconds(300)};
  return o;
}

TEST_F(EtcdIntegrationTest, RegistrarKeepsTheLeaseAliveAndRevokesItOnStop) {
  auto reg = etcd::Registrar::Create(RegistrarFor(etcd_, "127.0.0.1:7101", absl::Seconds(2)))
                 .value();
  ASSERT_TRUE(reg->WaitUntilRegistered(absl::Seconds(10))) << reg->stats().last_error;
  auto got = etcd_.GetPrefix(kPrefix);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->kvs.size(), 1u);
  EXPECT_EQ(got->kvs[0].key, Key("127.0.0.1:7101"));
  EXPECT_EQ(json::parse(got->kvs[0].value),
            json::parse(R"({"address":"127.0.0.1:7101","weight":1,"zone":"z"})"));
  EXPECT_EQ(got->kvs[0].lease, reg->stats().lease_id);
  EXPECT_NE(got->kvs[0].lease, 0);

  // Twice the TTL later the key is still there: keep-alives renewed it.
  absl::SleepFor(absl::Seconds(4));
  got = etcd_.GetPrefix(kPrefix);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->kvs.size(), 1u);
  EXPECT_GE(reg->stats().keepalives, 4u);
  EXPECT_EQ(reg->stats().errors, 0u) << reg->stats().last_error;

  EXPECT_TRUE(reg->Stop().ok());
  got = etcd_.GetPrefix(kPrefix);  // gone at once, not at lease expiry
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->kvs.empty());
  EXPECT_FALSE(reg->stats().registered);
}

TEST_F(EtcdIntegrationTest, RegistrarRegistersAgainWhenItsLeaseIsLost) {
  auto reg = etcd::Registrar::Create(RegistrarFor(etcd_, "127.0.0.1:7102", absl::Seconds(3)))
                 .value();
  ASSERT_TRUE(reg->WaitUntilRegistered(absl::Seconds(10)));
  const int64_t lease = reg->stats().lease_id;
  // Someone revokes the lease (as if it had expired while etcd was away):
  // the key goes with it; the next keep-alive learns it and re-registers.
  ASSERT_TRUE(etcd_.Revoke(lease).ok());
  ASSERT_TRUE(etcd_.GetPrefix(kPrefix)->kvs.empty());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto got = etcd_.GetPrefix(kPrefix);
        return got.ok() && got->kvs.size() == 1 && got->kvs[0].lease != lease &&
               got->kvs[0].lease != 0;
      },
      absl::Seconds(10)));
  // The key is in etcd a moment before the registrar has read etcd's answer.
  ASSERT_TRUE(WaitFor([&] { return reg->stats().registered; }, absl::Seconds(10)));
  EXPECT_EQ(reg->stats().leases_lost, 1u);
  EXPECT_EQ(reg->stats().grants, 2u);
  EXPECT_TRUE(reg->stats().registered);
}

TEST_F(EtcdIntegrationTest, RegistrarRidesOutAnEtcdRestart) {
  auto reg = etcd::Registrar::Create(RegistrarFor(etcd_, "127.0.0.1:7103", absl::Seconds(2)))
                 .value();
  ASSERT_TRUE(reg->WaitUntilRegistered(absl::Seconds(10)));
  etcd_.Kill();
  ASSERT_TRUE(WaitFor([&] { return reg->stats().errors >= 1; }, absl::Seconds(10)));
  ASSERT_TRUE(etcd_.Restart());
  // Either etcd kept the lease (restored and renewed at restart) or it
  // expired and the registrar made a new one: the key is back either way,
  // and stays.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto got = etcd_.GetPrefix(kPrefix);
        return got.ok() && got->kvs.size() == 1 && reg->stats().registered;
      },
      absl::Seconds(10)));
  const uint64_t keepalives = reg->stats().keepalives;
  ASSERT_TRUE(WaitFor([&] { return reg->stats().keepalives >= keepalives + 2; },
                      absl::Seconds(10)));
  EXPECT_EQ(etcd_.GetPrefix(kPrefix)->kvs.size(), 1u);
}

TEST_F(EtcdIntegrationTest, ServerLeavesEtcdBeforeItDrains) {
  server::Server server;
  core::Mutex mu;
  std::shared_ptr<server::ServerCall> held;  // guarded by mu
  core::Notification call_started;
  ASSERT_TRUE(server
                  .RegisterAsync("Slow/Hold",
                                 [&](std::shared_ptr<server::ServerCall> call) {
                                   core::MutexLock lock(&mu);
                                   held = std::move(call);
                                   call_started.Notify();
                                 })
                  .ok());
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  // The address defaults to the server's.
  auto reg = server::RegisterInEtcd(server, RegistrarFor(etcd_, "", absl::Seconds(10)));
  ASSERT_TRUE(reg.ok()) << reg.status();
  ASSERT_TRUE((*reg)->WaitUntilRegistered(absl::Seconds(10)));
  EXPECT_EQ((*reg)->key(), Key(server.address()));

  auto ch = client::Channel::Create(server.address(), client::ChannelOptions{}).value();
  client::CallOptions opts;
  opts.timeout = absl::Seconds(20);
  core::Notification call_done;
  absl::Status call_status = absl::UnknownError("not done");
  ch->Call("Slow/Hold", "x", opts, [&](client::CallResult r) {
    call_status = r.status;
    call_done.Notify();
  });
  ASSERT_TRUE(call_started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  std::thread stopper([&] { server.Shutdown(absl::Seconds(20)); });
  // The key is gone while the call is still being served: discovery stops
  // sending new calls here before the drain, not after.
  EXPECT_TRUE(WaitFor(
      [&] {
        auto got = etcd_.GetPrefix(kPrefix);
        return got.ok() && got->kvs.empty();
      },
      absl::Seconds(5)));
  EXPECT_EQ(server.active_calls(), 1);
  EXPECT_FALSE(call_done.HasBeenNotified());
  {
    core::MutexLock lock(&mu);
    held->Finish(absl::OkStatus(), "done");
    held.reset();
  }
  ASSERT_TRUE(call_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(call_status.ok()) << call_status;
  stopper.join();
  EXPECT_FALSE((*reg)->stats().registered);
}

std::string EchoServer() { return testing::Runfile("examples/echo/echo_server"); }

std::vector<std::string> EchoArgs(const EtcdTestServer& etcd, const std::string& name,
                                  const std::string& zone) {
  return {EchoServer(), "--port=0", "--name=" + name, "--zone=" + zone,
          "--etcd=" + etcd.endpoint(), absl::StrCat("--etcd_prefix=", kPrefix),
          "--etcd_ttl=4s"};
}

TEST_F(EtcdIntegrationTest, EchoServersJoinAndLeaveThroughEtcd) {
  auto& d = StartDiscovery();
  ASSERT_TRUE(SetBecomes(d, "[]"));
  Process alpha(EchoArgs(etcd_, "alpha", "z1"));
  Process beta(EchoArgs(etcd_, "beta", "z2"));
  std::string a = alpha.WaitForLine("listening on ", absl::Seconds(10));
  std::string b = beta.WaitForLine("listening on ", absl::Seconds(10));
  ASSERT_FALSE(a.empty()) << alpha.err();
  ASSERT_FALSE(b.empty()) << beta.err();
  a = a.substr(strlen("listening on "));
  b = b.substr(strlen("listening on "));
  ASSERT_TRUE(SetBecomes(d, a < b ? absl::StrCat("[", a, ", ", b, "]")
                                  : absl::StrCat("[", b, ", ", a, "]")));
  auto set = d.Current();
  EXPECT_EQ(set->Find(a)->zone, "z1");
  EXPECT_EQ(set->Find(a)->metadata.at("name"), "alpha");
  EXPECT_EQ(set->Find(b)->zone, "z2");
  EXPECT_EQ(set->Find(b)->metadata.at("name"), "beta");
  // What was discovered is what serves.
  for (const auto& e : set->endpoints()) {
    auto ch = client::Channel::Create(e.address, client::ChannelOptions{}).value();
    client::CallResult r = ch->CallBlocking("Echo/Say", "hi");
    ASSERT_TRUE(r.status.ok()) << r.status;
    bool named = false;
    for (const auto& [k, v] : r.metadata) named |= k == "server" && v == e.metadata.at("name");
    EXPECT_TRUE(named) << e.address;
  }

  // SIGTERM: the key goes before the lease could have expired.
  absl::Time t0 = absl::Now();
  alpha.Signal(SIGTERM);
  ASSERT_TRUE(SetBecomes(d, absl::StrCat("[", b, "]"), absl::Seconds(5)));
  EXPECT_LT(absl::Now() - t0, absl::Milliseconds(3000));  // well inside the 4s lease
  EXPECT_EQ(alpha.Wait(absl::Seconds(10)), 0) << alpha.err();
  EXPECT_TRUE(absl::StrContains(alpha.err(), "deregistered " + Key(a))) << alpha.err();

  // kill -9: nobody revokes; the key goes when its 4s lease expires.
  t0 = absl::Now();
  beta.Signal(SIGKILL);
  beta.Wait(absl::Seconds(5));
  // A window in which the key must stay: its lease still holds it.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(SetString(d), absl::StrCat("[", b, "]")) << "gone before its lease expired?";
  ASSERT_TRUE(SetBecomes(d, "[]", absl::Seconds(12)));
  EXPECT_GE(absl::Now() - t0, absl::Seconds(2));
}

TEST(EchoServerEtcdFlagsTest, BadEtcdFlagsExitWithUsageErrors) {
  struct Case {
    std::vector<std::string> flags;
    std::string want;
  };
  for (const Case& c : std::vector<Case>{
           {{"--etcd=127.0.0.1:2379"}, "--etcd and --etcd_prefix go together"},
           {{"--etcd_prefix=/p/"}, "--etcd and --etcd_prefix go together"},
           {{"--etcd=etcd.local:2379", "--etcd_prefix=/p/"}, "--etcd: endpoints[0]"},
           {{"--etcd=127.0.0.1:2379", "--etcd_prefix=/p/", "--etcd_ttl=100ms"}, "--etcd_ttl"},
       }) {
    std::vector<std::string> argv = {EchoServer(), "--port=0"};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    Process p(argv);
    EXPECT_EQ(p.Wait(absl::Seconds(10)), 2) << c.want;
    EXPECT_TRUE(absl::StrContains(p.err(), c.want)) << p.err();
  }
}

}  // namespace
}  // namespace meshlib
