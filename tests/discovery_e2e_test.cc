// The discovery bar, end to end: a client configured for DNS SRV (served by
// a real dnsmasq) or etcd (a real etcd, with echo_server processes
// registering themselves) spreads calls over every instance, follows
// instances joining and leaving while under load without a single failed
// call, and keeps working on its last good set while the discovery server
// is down.
#include <signal.h>

#include <atomic>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "meshlib/client/service_channel.h"
#include "meshlib/core/sync.h"
#include "meshlib/testing/dns_testing.h"
#include "meshlib/testing/etcd_test_server.h"
#include "meshlib/testing/subprocess.h"
#include "nlohmann/json.hpp"

namespace meshlib {
namespace {

using json = nlohmann::json;
using testing::Subprocess;

using testing::Eventually;

std::string EchoServerPath() { return testing::Runfile("examples/echo/echo_server"); }

// An echo_server process; `extra` flags are appended.
struct Instance {
  explicit Instance(const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {EchoServerPath(), "--port=0", "--name=" + name};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc = std::make_unique<Subprocess>(argv);
    std::string line = proc->WaitForLine("listening on ", absl::Seconds(10));
    EXPECT_FALSE(line.empty()) << name << ": " << proc->err();
    address = line.substr(strlen("listening on "));
    port = address.substr(address.rfind(':') + 1);
  }
  std::unique_ptr<Subprocess> proc;
  std::string address;
  std::string port;
};

// Steady closed-loop load from a few threads; counts answers per endpoint
// and every failure.
class Load {
 public:
  explicit Load(client::ServiceChannel* sc, int threads = 4) {
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this, sc] {
        client::CallOptions o;
        o.timeout = absl::Seconds(2);
        while (!stop_.load()) {
          client::CallResult r = sc->CallBlocking("Echo/Say", "ping", o);
          core::MutexLock lock(&mu_);
          ++calls_;
          if (r.status.ok()) {
            ++by_endpoint_[r.endpoint];
          } else {
            ++failed_;
            if (errors_.size() < 5) errors_.push_back(r.status.ToString());
          }
        }
      });
    }
  }
  ~Load() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  int Count(const std::string& endpoint) {
    core::MutexLock lock(&mu_);
    return by_endpoint_[endpoint];
  }
  void ResetCounts() {
    core::MutexLock lock(&mu_);
    by_endpoint_.clear();
  }
  int64_t calls() {
    core::MutexLock lock(&mu_);
    return calls_;
  }
  int64_t failed() {
    core::MutexLock lock(&mu_);
    return failed_;
  }
  std::string Errors() {
    core::MutexLock lock(&mu_);
    return absl::StrJoin(errors_, "; ");
  }
  // Calls answered by each of `endpoints` within `window`, after a reset.
  bool AllAnswerWithin(const std::vector<std::string>& endpoints, absl::Duration timeout) {
    return Eventually(
        [&] {
          for (const auto& e : endpoints) {
            if (Count(e) < 10) return false;
          }
          return true;
        },
        timeout);
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  core::Mutex mu_;
  std::map<std::string, int> by_endpoint_;
  int64_t calls_ = 0;
  int64_t failed_ = 0;
  std::vector<std::string> errors_;
};

std::shared_ptr<client::ServiceChannel> OpenService(const json& discovery) {
  client::ServiceChannelOptions o;
  o.channel.default_timeout = absl::Seconds(2);
  auto sc = client::ServiceChannel::Create("echo", discovery, o);
  EXPECT_TRUE(sc.ok()) << sc.status();
  return sc.ok() ? *std::move(sc) : nullptr;
}

std::vector<std::string> SrvRecords(const std::vector<const Instance*>& instances) {
  std::vector<std::string> r = {"--host-record=echo-host.mesh.test,127.0.0.1"};
  for (const Instance* i : instances) {
    r.push_back(absl::StrCat("--srv-host=_echo._tcp.mesh.test,echo-host.mesh.test,", i->port,
                             ",0,1"));
  }
  return r;
}

TEST(DiscoveryEndToEnd, DnsSrvClientFollowsTheFleetUnderLoadAndSurvivesDnsOutage) {
  Instance a("a"), b("b"), c("c"), d("d");
  testing::Dnsmasq dns(testing::PickFreePort());
  dns.Start(SrvRecords({&a, &b, &c}), /*ttl=*/1);

  auto sc = OpenService({{"dns",
                          {{"name", "_echo._tcp.mesh.test"},
                           {"servers", {dns.address()}},
                           {"min_refresh", "200ms"},
                           {"max_refresh", "1s"}}}});
  ASSERT_NE(sc, nullptr);
  ASSERT_TRUE(sc->WaitForEndpoints(absl::Seconds(10))) << sc->stats().discovery.last_error;
  Load load(sc.get());
  EXPECT_TRUE(load.AllAnswerWithin({a.address, b.address, c.address}, absl::Seconds(10)));

  // d joins, a leaves (a keeps running, as during a rolling deploy).
  dns.Stop();
  dns.Start(SrvRecords({&b, &c, &d}), 1);
  EXPECT_TRUE(load.AllAnswerWithin({d.address}, absl::Seconds(10)));
  ASSERT_TRUE(Eventually([&] { return sc->Endpoints().size() == 3; }, absl::Seconds(5)));
  load.ResetCounts();
  EXPECT_TRUE(load.AllAnswerWithin({b.address, c.address, d.address}, absl::Seconds(10)));
  EXPECT_EQ(load.Count(a.address), 0);

  // DNS goes away: the last good set keeps serving, the outage is reported.
  uint64_t errors_before = sc->stats().discovery.errors;
  dns.Stop();
  ASSERT_TRUE(Eventually([&] { return sc->stats().discovery.errors > errors_before; },
                         absl::Seconds(10)));
  load.ResetCounts();
  EXPECT_TRUE(load.AllAnswerWithin({b.address, c.address, d.address}, absl::Seconds(10)));
  // A while on the last good set alone: the outage must not shrink it.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(sc->Endpoints().size(), 3u);

  // DNS is back with a changed fleet: the client recovers and follows.
  dns.Start(SrvRecords({&a, &b, &c, &d}), 1);
  EXPECT_TRUE(load.AllAnswerWithin({a.address}, absl::Seconds(10)));
  load.Stop();
  std::cout << "calls " << load.calls() << ", failed " << load.failed() << ", discovery errors "
            << sc->stats().discovery.errors << ", transparent retries "
            << sc->stats().transparent_retries << "\n";
  EXPECT_EQ(load.failed(), 0) << load.Errors();
  EXPECT_GT(load.calls(), 1000);
}

TEST(DiscoveryEndToEnd, EtcdClientFollowsSelfRegisteredServersUnderLoadAndSurvivesEtcdOutage) {
  testing::EtcdTestServer etcd;
  ASSERT_TRUE(etcd.ok());
  const std::string prefix = "/meshlib/services/echo/";
  auto registered = [&]() {
    return std::vector<std::string>{"--etcd=" + etcd.endpoint(), "--etcd_prefix=" + prefix,
                                    "--etcd_ttl=3s"};
  };
  auto a = std::make_unique<Instance>("a", registered());
  auto b = std::make_unique<Instance>("b", registered());

  auto sc = OpenService({{"etcd", {{"endpoints", {etcd.endpoint()}}, {"prefix", prefix}}}});
  ASSERT_NE(sc, nullptr);
  ASSERT_TRUE(Eventually([&] { return sc->Endpoints().size() == 2; }, absl::Seconds(10)))
      << absl::StrJoin(sc->Endpoints(), ",") << " " << sc->stats().discovery.last_error;
  Load load(sc.get());
  EXPECT_TRUE(load.AllAnswerWithin({a->address, b->address}, absl::Seconds(10)));

  // c joins.
  auto c = std::make_unique<Instance>("c", registered());
  EXPECT_TRUE(load.AllAnswerWithin({c->address}, absl::Seconds(10)));

  // a stops cleanly: it deregisters, then drains; no call is lost.
  a->proc->Signal(SIGTERM);
  EXPECT_EQ(a->proc->Wait(absl::Seconds(20)), 0) << a->proc->err();
  ASSERT_TRUE(Eventually([&] { return sc->Endpoints().size() == 2; }, absl::Seconds(10)));

  // etcd goes down: the last good set keeps serving.
  etcd.Kill();
  uint64_t errors_before = sc->stats().discovery.errors;
  ASSERT_TRUE(Eventually([&] { return sc->stats().discovery.errors > errors_before; },
                         absl::Seconds(10)));
  load.ResetCounts();
  EXPECT_TRUE(load.AllAnswerWithin({b->address, c->address}, absl::Seconds(10)));
  // A while on the last good set alone: the outage must not shrink it.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(sc->Endpoints().size(), 2u);

  // etcd is back: the watch resumes and a new instance is seen.
  ASSERT_TRUE(etcd.Restart());
  auto d = std::make_unique<Instance>("d", registered());
  EXPECT_TRUE(load.AllAnswerWithin({d->address}, absl::Seconds(15)))
      << absl::StrJoin(sc->Endpoints(), ",");
  load.Stop();
  std::cout << "calls " << load.calls() << ", failed " << load.failed() << ", discovery errors "
            << sc->stats().discovery.errors << ", transparent retries "
            << sc->stats().transparent_retries << "\n";
  EXPECT_EQ(load.failed(), 0) << load.Errors();
  EXPECT_GT(load.calls(), 1000);
}

}  // namespace
}  // namespace meshlib
