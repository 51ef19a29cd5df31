// The "dns" kind against a real DNS server: dnsmasq on a loopback port,
// restarted with new records while a Discovery runs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "meshlib/discovery/dns/dns_message.h"
#include "meshlib/testing/dns_testing.h"
#include "meshlib/discovery/resolver.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib::discovery {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

using testing::kDnsmasq;

using meshlib::testing::Eventually;

std::string Describe(const std::shared_ptr<const EndpointSet>& set) {
  if (set == nullptr) return "(no set)";
  std::vector<std::string> lines;
  for (const Endpoint& e : set->endpoints()) {
    auto t = e.metadata.find("dns_target");
    lines.push_back(absl::StrCat(e.address, " p=", e.priority, " w=", e.weight,
                                 t == e.metadata.end() ? "" : absl::StrCat(" ", t->second)));
  }
  return absl::StrJoin(lines, ", ");
}

using testing::Dnsmasq;

class DnsDnsmasqTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(kDnsmasq, X_OK), 0)
        << kDnsmasq << " is needed to test DNS discovery against a real server; install the "
        << "dnsmasq package (tools/setup.sh does)";
    loop_ = runtime::EventLoop::Create("control").value();
    port_ = testing::PickFreePort();
    dnsmasq_ = std::make_unique<Dnsmasq>(port_);
  }
  void TearDown() override {
    discoveries_.clear();  // before the loop
  }

  Discovery* Watch(json dns) {
    dns["servers"] = {dnsmasq_->address()};
    if (!dns.contains("min_refresh")) dns["min_refresh"] = "200ms";
    if (!dns.contains("max_refresh")) dns["max_refresh"] = "1s";
    dns["timeout"] = "200ms";
    dns["tries"] = 1;
    auto d = Discovery::Create("echo", json{{"dns", dns}}, loop_.get(), "",
                               ResolverRegistry::Global(), /*seed=*/3);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return nullptr;
    discoveries_.push_back(*std::move(d));
    return discoveries_.back().get();
  }
  std::string Prefix(absl::string_view name) const {
    return absl::StrCat("dns ", name, " (servers ", dnsmasq_->address(), "): ");
  }

  std::unique_ptr<runtime::EventLoop> loop_;
  int port_ = 0;
  std::unique_ptr<Dnsmasq> dnsmasq_;
  std::vector<std::unique_ptr<Discovery>> discoveries_;
};

TEST_F(DnsDnsmasqTest, SrvMapsPriorityWeightPortAndEveryTarget) {
  dnsmasq_->Start({
      "--srv-host=_echo._tcp.mesh.test,a.mesh.test,7001,10,5",
      "--srv-host=_echo._tcp.mesh.test,b.mesh.test,7002,20,0",
      "--srv-host=_echo._tcp.mesh.test,127.0.0.3,7003,30,1",  // an IP-literal target
      "--host-record=a.mesh.test,127.0.0.1,::1",
      "--host-record=b.mesh.test,127.0.0.2",
  });
  Discovery* any = Watch({{"name", "_echo._tcp.mesh.test"}});
  Discovery* v4 = Watch({{"name", "_echo._tcp.mesh.test"}, {"family", "ipv4"}});
  ASSERT_TRUE(any->WaitForEndpoints(absl::Seconds(10))) << any->stats().last_error;
  ASSERT_TRUE(v4->WaitForEndpoints(absl::Seconds(10))) << v4->stats().last_error;
  EXPECT_EQ(Describe(any->Current()),
            "127.0.0.1:7001 p=10 w=5 a.mesh.test, 127.0.0.2:7002 p=20 w=0 b.mesh.test, "
            "127.0.0.3:7003 p=30 w=1 127.0.0.3, [::1]:7001 p=10 w=5 a.mesh.test");
  EXPECT_EQ(Describe(v4->Current()),
            "127.0.0.1:7001 p=10 w=5 a.mesh.test, 127.0.0.2:7002 p=20 w=0 b.mesh.test, "
            "127.0.0.3:7003 p=30 w=1 127.0.0.3");
  // b has no AAAA record: that is an answer, not an error.
  EXPECT_EQ(any->stats().errors, 0u) << any->stats().last_error;
}

TEST_F(DnsDnsmasqTest, AddressRecordsWithThePort) {
  dnsmasq_->Start({"--host-record=a.mesh.test,127.0.0.1,::1"});
  Discovery* any = Watch({{"name", "a.mesh.test"}, {"port", 8080}});
  Discovery* v4 = Watch({{"name", "a.mesh.test"}, {"port", 8080}, {"family", "ipv4"}});
  Discovery* v6 = Watch({{"name", "a.mesh.test."}, {"port", 8081}, {"family", "ipv6"}});
  for (Discovery* d : {any, v4, v6}) {
    ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(10))) << d->stats().last_error;
    EXPECT_EQ(d->stats().errors, 0u) << d->stats().last_error;
  }
  EXPECT_EQ(Describe(any->Current()), "127.0.0.1:8080 p=0 w=1, [::1]:8080 p=0 w=1");
  EXPECT_EQ(Describe(v4->Current()), "127.0.0.1:8080 p=0 w=1");
  EXPECT_EQ(Describe(v6->Current()), "[::1]:8081 p=0 w=1");
}

TEST_F(DnsDnsmasqTest, KeepsTheLastGoodSetWhileDownAndFollowsRestarts) {
  dnsmasq_->Start({"--srv-host=_echo._tcp.mesh.test,a.mesh.test,7001,10,5",
                   "--host-record=a.mesh.test,127.0.0.1"});
  Discovery* d = Watch({{"name", "_echo._tcp.mesh.test"}, {"family", "ipv4"}});
  ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(10))) << d->stats().last_error;
  auto good = d->Current();
  EXPECT_EQ(Describe(good), "127.0.0.1:7001 p=10 w=5 a.mesh.test");

  // Down: errors pile up, naming the name, the server and the query; the
  // set stays.
  dnsmasq_->Stop();
  uint64_t errors = d->stats().errors;
  ASSERT_TRUE(Eventually([&] { return d->stats().errors >= errors + 2; }));
  EXPECT_EQ(d->Current(), good);
  EXPECT_THAT(std::string(d->stats().last_error.message()),
              HasSubstr(Prefix("_echo._tcp.mesh.test") + "SRV query"));

  // Back with other records: followed within the refresh bound.
  dnsmasq_->Start({"--srv-host=_echo._tcp.mesh.test,a.mesh.test,7001,10,5",
                   "--srv-host=_echo._tcp.mesh.test,b.mesh.test,7002,5,7",
                   "--host-record=a.mesh.test,127.0.0.1", "--host-record=b.mesh.test,127.0.0.2"});
  const std::string v2 = "127.0.0.1:7001 p=10 w=5 a.mesh.test, 127.0.0.2:7002 p=5 w=7 b.mesh.test";
  ASSERT_TRUE(Eventually([&] { return Describe(d->Current()) == v2; }))
      << Describe(d->Current()) << "; " << d->stats().last_error;

  // And again: a target gone, one moved.
  dnsmasq_->Stop();
  dnsmasq_->Start({"--srv-host=_echo._tcp.mesh.test,b.mesh.test,7003,5,7",
                   "--host-record=b.mesh.test,127.0.0.4"});
  const std::string v3 = "127.0.0.4:7003 p=5 w=7 b.mesh.test";
  ASSERT_TRUE(Eventually([&] { return Describe(d->Current()) == v3; }))
      << Describe(d->Current()) << "; " << d->stats().last_error;
}

// With max_refresh far away, only the records' 1s TTL can explain seeing a
// change within a few seconds.
TEST_F(DnsDnsmasqTest, RefreshesOnTheRecordsTtl) {
  dnsmasq_->Start({"--host-record=a.mesh.test,127.0.0.1"}, /*ttl=*/1);
  Discovery* d = Watch({{"name", "a.mesh.test"},
                        {"port", 7001},
                        {"family", "ipv4"},
                        {"min_refresh", "100ms"},
                        {"max_refresh", "60s"}});
  ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(10))) << d->stats().last_error;
  dnsmasq_->Stop();
  dnsmasq_->Start({"--host-record=a.mesh.test,127.0.0.9"}, /*ttl=*/1);
  absl::Time start = absl::Now();
  ASSERT_TRUE(Eventually([&] { return Describe(d->Current()) == "127.0.0.9:7001 p=0 w=1"; },
                         absl::Seconds(15)))
      << Describe(d->Current());
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
}

TEST_F(DnsDnsmasqTest, MissingNamesAndTargetsAreReported) {
  dnsmasq_->Start({
      "--srv-host=_echo._tcp.mesh.test,a.mesh.test,7001,1,1",
      "--srv-host=_echo._tcp.mesh.test,missing.mesh.test,7002,1,1",
      "--srv-host=_lost._tcp.mesh.test,missing.mesh.test,7002,1,1",
      "--host-record=a.mesh.test,127.0.0.1",
  });
  Discovery* partial = Watch({{"name", "_echo._tcp.mesh.test"}, {"family", "ipv4"}});
  Discovery* nxdomain = Watch({{"name", "_nope._tcp.mesh.test"}});
  Discovery* lost = Watch({{"name", "_lost._tcp.mesh.test"}});

  // Some targets resolve: they are published, the others reported.
  ASSERT_TRUE(partial->WaitForEndpoints(absl::Seconds(10))) << partial->stats().last_error;
  EXPECT_EQ(Describe(partial->Current()), "127.0.0.1:7001 p=1 w=1 a.mesh.test");
  EXPECT_EQ(std::string(partial->stats().last_error.message()),
            Prefix("_echo._tcp.mesh.test") +
                "some SRV targets failed (the others' endpoints are published): target "
                "missing.mesh.test: A query: name does not exist (NXDOMAIN)");

  ASSERT_TRUE(Eventually([&] { return nxdomain->stats().errors >= 1 && lost->stats().errors >= 1; }));
  EXPECT_EQ(std::string(nxdomain->stats().last_error.message()),
            Prefix("_nope._tcp.mesh.test") + "SRV query: name does not exist (NXDOMAIN)");
  EXPECT_EQ(nxdomain->stats().last_error.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(lost->stats().last_error.message()),
            Prefix("_lost._tcp.mesh.test") +
                "no SRV target resolved: target missing.mesh.test: A query: name does not exist "
                "(NXDOMAIN); AAAA query: name does not exist (NXDOMAIN)");
  EXPECT_EQ(nxdomain->Current(), nullptr);
  EXPECT_EQ(lost->Current(), nullptr);
}

}  // namespace
}  // namespace meshlib::discovery
