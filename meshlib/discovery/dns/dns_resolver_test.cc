// The "dns" kind against a scripted DNS server on a loopback port: config
// validation, record mapping, TTL-driven refresh, failures (including garbage
// answers) and destruction with queries in flight. dns_dnsmasq_test.cc runs
// it against a real dnsmasq.
#include "meshlib/discovery/dns/dns_resolver.h"

#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "meshlib/testing/subprocess.h"
#include "meshlib/discovery/dns/dns_message.h"
#include "meshlib/testing/dns_testing.h"
#include "meshlib/discovery/resolver.h"

namespace meshlib::discovery {
namespace {

using discovery_internal::kDnsTypeA;
using discovery_internal::kDnsTypeAaaa;
using discovery_internal::kDnsTypeSrv;
using testing::DnsMessageBuilder;
using testing::DnsQuery;
using testing::EncodeDnsName;
using testing::FakeDnsServer;
using json = nlohmann::json;
using ::testing::HasSubstr;

constexpr char kSrvName[] = "_svc._tcp.fake.test";

using meshlib::testing::Eventually;

// "addr p=priority w=weight target", one per endpoint, for readable failures.
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

// SRV: t1.fake.test:7001 (priority 10, weight 5) and the literal
// 10.0.0.2:7002 (priority 20, weight 0); t1 has A 10.0.0.1 and no AAAA.
std::optional<std::string> GoodAnswer(const DnsQuery& q, uint32_t srv_ttl = 60,
                                      uint32_t a_ttl = 60) {
  DnsMessageBuilder b(q);
  if (q.type == kDnsTypeSrv) {
    b.Srv(q.name, srv_ttl, 10, 5, 7001, "t1.fake.test").Srv(q.name, srv_ttl, 20, 0, 7002, "10.0.0.2");
  } else if (q.type == kDnsTypeA && q.name == "t1.fake.test") {
    b.A(q.name, a_ttl, "10.0.0.1");
  }
  return b.Build();
}
constexpr char kGoodSet[] =
    "10.0.0.1:7001 p=10 w=5 t1.fake.test, 10.0.0.2:7002 p=20 w=0 10.0.0.2";

class DnsResolverTest : public ::testing::Test {
 protected:
  void SetUp() override { loop_ = runtime::EventLoop::Create("control").value(); }

  // A Discovery over the fake server with fast refresh and timeouts;
  // `overrides` replace the defaults.
  std::unique_ptr<Discovery> Start(json overrides = json::object()) {
    json dns = {{"name", kSrvName},       {"servers", {server_.address()}},
                {"min_refresh", "50ms"},  {"max_refresh", "200ms"},
                {"timeout", "200ms"},     {"tries", 1}};
    for (auto it = overrides.begin(); it != overrides.end(); ++it) dns[it.key()] = it.value();
    auto d = Discovery::Create("svc", json{{"dns", dns}}, loop_.get(), "", ResolverRegistry::Global(),
                               /*seed=*/7);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *std::move(d) : nullptr;
  }
  std::string Prefix() const {
    return absl::StrCat("dns ", kSrvName, " (servers ", server_.address(), "): ");
  }

  FakeDnsServer server_;
  std::unique_ptr<runtime::EventLoop> loop_;
};

TEST(DnsConfigTest, ErrorsNameTheFieldPath) {
  auto factory = MakeDnsResolverFactory();
  EXPECT_EQ(factory->kind(), "dns");
  struct Case {
    const char* config;
    const char* error;
  } cases[] = {
      {R"({})", "p.name: required"},
      {R"({"name": ""})", "p.name: must be a non-empty string"},
      {R"({"name": 5})", "p.name: must be a non-empty string"},
      {R"({"name": "a..b", "port": 1})", "p.name: \"a..b\" has an empty label"},
      {R"({"name": "a b.c", "port": 1})", "p.name: \"a b.c\" has a character other than"},
      {R"({"name": "10.0.0.1", "port": 1})", "p.name: \"10.0.0.1\" is an IP address"},
      {R"({"name": "_s._tcp.x", "port": 80})", "p.port: not allowed for an SRV name"},
      {R"({"name": "a.x"})", "p.port: required for an A/AAAA name"},
      {R"({"name": "a.x", "port": 0})", "p.port: must be an integer between 1 and 65535"},
      {R"({"name": "a.x", "port": 65536})", "p.port: must be an integer between 1 and 65535"},
      {R"({"name": "a.x", "port": "80"})", "p.port: must be an integer"},
      {R"({"name": "_s._tcp.x", "bogus": 1})", "p.bogus: unknown key"},
      {R"({"name": "_s._tcp.x", "servers": []})", "p.servers: must be a non-empty list"},
      {R"({"name": "_s._tcp.x", "servers": ["1.2.3.4:53", "dns.example:53"]})",
       "p.servers[1]: must be \"ip:port\""},
      {R"({"name": "_s._tcp.x", "servers": ["1.2.3.4:0"]})", "p.servers[0]: must be \"ip:port\""},
      {R"({"name": "_s._tcp.x", "family": "ipv5"})",
       "p.family: must be one of \"any\", \"ipv4\", \"ipv6\""},
      {R"({"name": "_s._tcp.x", "min_refresh": "2s", "max_refresh": "1s"})",
       "p.min_refresh: must be <= max_refresh (1s)"},
      {R"({"name": "_s._tcp.x", "min_refresh": "1ms"})", "p.min_refresh: must be between"},
      {R"({"name": "_s._tcp.x", "max_refresh": "forever"})", "p.max_refresh: \"forever\" is not"},
      {R"({"name": "_s._tcp.x", "jitter": 0.9})", "p.jitter: must be a number between 0 and 0.5"},
      {R"({"name": "_s._tcp.x", "timeout": "0s"})", "p.timeout: must be between"},
      {R"({"name": "_s._tcp.x", "tries": 0})", "p.tries: must be an integer between 1 and 10"},
      {R"([1])", "p: must be an object"},
  };
  for (const Case& c : cases) {
    absl::Status st = factory->Validate(json::parse(c.config), "p");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.config;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.error)) << c.config;
  }
  for (const char* good : {
           R"({"name": "_s._tcp.x."})",
           R"({"name": "echo.mesh.test", "port": 7001})",
           R"({"name": "a.x", "port": 1, "servers": ["127.0.0.1:53", "[::1]:5353", "10.0.0.1", "::1"],
               "family": "ipv6", "min_refresh": "1s", "max_refresh": "1s", "jitter": 0,
               "timeout": "100ms", "tries": 1})",
       }) {
    EXPECT_TRUE(factory->Validate(json::parse(good), "p").ok()) << good;
  }
}

TEST(DnsConfigTest, RegisteredAndValidatedThroughTheRegistry) {
  auto& r = ResolverRegistry::Global();
  ASSERT_NE(r.Find("dns"), nullptr);
  absl::Status st = r.ValidateDiscovery(json::parse(R"({"dns": {"name": "a.x", "port": -1}})"),
                                        "services.echo.discovery");
  EXPECT_THAT(std::string(st.message()), HasSubstr("services.echo.discovery.dns.port: must be"));
  // Create re-parses: a config that never went through Validate fails too.
  auto loop = runtime::EventLoop::Create("control").value();
  auto d = Discovery::Create("echo", json::parse(R"({"dns": {"name": "_s._tcp.x", "tries": 99}})"),
                             loop.get());
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()),
              HasSubstr("services.echo.discovery.dns.tries: must be"));
}

TEST(DnsConfigTest, CreateTakesIpv6ServersAndResolvConf) {
  auto loop = runtime::EventLoop::Create("control").value();
  auto factory = MakeDnsResolverFactory();
  for (const char* config : {
           R"({"name": "_s._tcp.x", "servers": ["[::1]:5353", "127.0.0.1"]})",
           R"({"name": "_s._tcp.x"})",  // the system's resolv.conf
       }) {
    ResolverArgs args;
    args.service = "svc";
    args.config = json::parse(config);
    args.path = "p";
    args.loop = loop.get();
    auto r = factory->Create(args);  // never started: no query is sent
    EXPECT_TRUE(r.ok()) << config << ": " << r.status();
  }
}

TEST_F(DnsResolverTest, SrvRecordsBecomeEndpoints) {
  server_.SetHandler([](const DnsQuery& q) { return GoodAnswer(q); });
  auto d = Start();
  ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(10))) << d->stats().last_error;
  EXPECT_EQ(Describe(d->Current()), kGoodSet);
  EXPECT_EQ(d->stats().errors, 0u) << d->stats().last_error;
  // The literal target needs no lookup; only t1 is looked up (A and AAAA).
  EXPECT_GE(server_.Queries(kDnsTypeA), 1);
  EXPECT_GE(server_.Queries(kDnsTypeAaaa), 1);
}

TEST_F(DnsResolverTest, AddressRecordsWithThePort) {
  server_.SetHandler([](const DnsQuery& q) {
    DnsMessageBuilder b(q);
    if (q.type == kDnsTypeA) b.A(q.name, 60, "10.0.0.3").A(q.name, 60, "10.0.0.1");
    if (q.type == kDnsTypeAaaa) b.Aaaa(q.name, 60, "::1");
    return std::optional<std::string>(b.Build());
  });
  auto d = Start({{"name", "h.fake.test"}, {"port", 8080}});
  ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(10))) << d->stats().last_error;
  EXPECT_EQ(Describe(d->Current()), "10.0.0.1:8080 p=0 w=1, 10.0.0.3:8080 p=0 w=1, [::1]:8080 p=0 w=1");
}

// An answer too big for UDP comes truncated; c-ares asks again over TCP
// (a socket that is first watched for writing, while it connects).
TEST_F(DnsResolverTest, TruncatedAnswersAreFetchedOverTcp) {
  server_.SetHandler([](const DnsQuery& q) -> std::optional<std::string> {
    if (q.type != kDnsTypeSrv) return DnsMessageBuilder(q).Build();
    if (!q.tcp) return DnsMessageBuilder(q.id, q.name, q.type, 0x8380).Build();  // TC set
    DnsMessageBuilder b(q);
    for (int i = 0; i < 100; ++i) {
      b.Srv(q.name, 60, 1, 1, static_cast<uint16_t>(7000 + i),
            absl::StrCat("10.0.", i / 10, ".", i % 10 + 1));
    }
    return b.Build();  // about 5 KB
  });
  auto d = Start();
  ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(10))) << d->stats().last_error;
  EXPECT_EQ(d->Current()->size(), 100u);
  EXPECT_NE(d->Current()->Find("10.0.9.10:7099"), nullptr);
  EXPECT_EQ(d->stats().errors, 0u) << d->stats().last_error;
}

// The refresh interval is the minimum TTL of the records used, clamped to
// [min_refresh, max_refresh] and shortened by at most `jitter`. Timers never
// fire early, so the lower bounds are exact; the upper ones allow for a
// loaded machine.
TEST_F(DnsResolverTest, RefreshFollowsTheMinimumTtlWithinBounds) {
  struct Case {
    const char* what;
    uint32_t srv_ttl, a_ttl;
    const char* min_refresh;
    const char* max_refresh;
    absl::Duration expected;
  } cases[] = {
      {"the address TTL is the smallest", 3600, 1, "50ms", "10s", absl::Seconds(1)},
      {"a long TTL is capped at max_refresh", 3600, 3600, "50ms", "300ms", absl::Milliseconds(300)},
      {"a zero TTL is raised to min_refresh", 0, 0, "400ms", "10s", absl::Milliseconds(400)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    FakeDnsServer server([&](const DnsQuery& q) { return GoodAnswer(q, c.srv_ttl, c.a_ttl); });
    auto d = Start({{"servers", {server.address()}},
                    {"min_refresh", c.min_refresh},
                    {"max_refresh", c.max_refresh}});
    ASSERT_TRUE(server.WaitForQueries(kDnsTypeSrv, 4, c.expected * 4 + absl::Seconds(10)));
    std::vector<absl::Time> t = server.QueryTimes(kDnsTypeSrv);
    for (size_t i = 1; i < 4; ++i) {
      absl::Duration gap = t[i] - t[i - 1];
      EXPECT_GE(gap, c.expected * 0.9) << "gap " << i;
      EXPECT_LE(gap, c.expected + absl::Seconds(2)) << "gap " << i;
    }
    // Same records every time: published once, never re-published.
    DiscoveryStats s = d->stats();
    EXPECT_EQ(s.updates, 1u);
    EXPECT_EQ(s.errors, 0u) << s.last_error;
  }
}

// A server that answers every query the same way; `reply` builds the answer.
using Reply = std::function<std::string(const DnsQuery&)>;

std::string SrvWithRdata(const DnsQuery& q, const std::string& rdata) {
  return DnsMessageBuilder(q).RawRecord(EncodeDnsName(q.name), kDnsTypeSrv, 30, rdata).Build();
}

TEST_F(DnsResolverTest, GarbageAnswersAreReportedAndTheLastGoodSetStays) {
  auto rng = std::make_shared<std::mt19937_64>(99);
  struct Case {
    const char* what;
    Reply reply;
    const char* error;
  } cases[] = {
      {"random bytes",
       [rng](const DnsQuery&) {
         std::string s(1 + (*rng)() % 200, '\0');
         for (char& c : s) c = static_cast<char>((*rng)());
         return s;
       },
       // c-ares drops what does not match its query; the query times out.
       "SRV query"},
      {"random bytes after a matching header and question",
       [rng](const DnsQuery& q) {
         std::string s = DnsMessageBuilder(q).AnswerCount(3).Build();
         for (int i = 0; i < 40; ++i) s.push_back(static_cast<char>((*rng)()));
         return s;
       },
       "malformed SRV answer: answer "},
      {"a truncated header", [](const DnsQuery& q) { return GoodAnswer(q)->substr(0, 7); },
       "SRV query timed out"},
      {"a header that promises answers and ends after the question",
       [](const DnsQuery& q) { return DnsMessageBuilder(q).AnswerCount(2).Build(); },
       "malformed SRV answer: answer 1 of 2: name at byte"},
      {"an SRV record with 4 bytes of data",
       [](const DnsQuery& q) { return SrvWithRdata(q, std::string("\0\1\0\2", 4)); },
       "malformed SRV answer: SRV record of _svc._tcp.fake.test has 4 bytes of data"},
      {"an SRV target that runs past its record",
       [](const DnsQuery& q) {
         return SrvWithRdata(q, std::string("\0\1\0\2\0\x50\x05" "ab", 9));
       },
       "malformed SRV answer: SRV record of _svc._tcp.fake.test: target name at byte"},
      {"an answer to another question",
       [](const DnsQuery& q) {
         return DnsMessageBuilder(q.id, "_other._tcp.fake.test", kDnsTypeSrv)
             .Srv("_other._tcp.fake.test", 30, 1, 1, 7001, "10.0.0.1")
             .Build();
       },
       // c-ares drops it (and the resolver would reject it too).
       "SRV query timed out"},
      {"an SRV target that points at itself",
       [](const DnsQuery& q) {
         std::string s = SrvWithRdata(q, std::string("\0\1\0\2\0\x50\xC0\x00", 8));
         size_t at = s.size() - 2;  // the pointer's own offset
         s[at] = static_cast<char>(0xC0 | (at >> 8));
         s[at + 1] = static_cast<char>(at & 0xFF);
         return s;
       },
       "does not point backwards"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    server_.SetHandler([&](const DnsQuery& q) { return std::optional<std::string>(c.reply(q)); });
    auto d = Start();
    // Never good: errors, no set at all.
    ASSERT_TRUE(Eventually([&] { return d->stats().errors >= 2; })) << d->stats().errors;
    EXPECT_EQ(d->Current(), nullptr);
    std::string error(d->stats().last_error.message());
    EXPECT_THAT(error, HasSubstr(Prefix()));
    EXPECT_THAT(error, HasSubstr(c.error));

    // Good, then garbage again: the good set stays.
    server_.SetHandler([](const DnsQuery& q) { return GoodAnswer(q); });
    ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(10)));
    auto good = d->Current();
    EXPECT_EQ(Describe(good), kGoodSet);
    server_.SetHandler([&](const DnsQuery& q) { return std::optional<std::string>(c.reply(q)); });
    uint64_t errors = d->stats().errors;
    ASSERT_TRUE(Eventually([&] { return d->stats().errors >= errors + 2; }));
    EXPECT_EQ(d->Current(), good);
    EXPECT_EQ(d->stats().updates, 1u);
    EXPECT_THAT(std::string(d->stats().last_error.message()), HasSubstr(c.error));
  }
}

TEST_F(DnsResolverTest, ServerErrorsAreNamed) {
  struct Case {
    int rcode;
    const char* error;
  } cases[] = {
      {2, "SRV query: server failure (SERVFAIL)"},
      {3, "SRV query: name does not exist (NXDOMAIN)"},
      {5, "SRV query refused by the server (REFUSED)"},
      {0, "SRV query: no SRV records"},  // NOERROR, no answers
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.error);
    server_.SetHandler([&](const DnsQuery& q) {
      return std::optional<std::string>(DnsMessageBuilder(q).Rcode(c.rcode).Build());
    });
    auto d = Start();
    ASSERT_TRUE(Eventually([&] { return d->stats().errors >= 1; }));
    EXPECT_EQ(std::string(d->stats().last_error.message()), Prefix() + c.error);
    EXPECT_EQ(d->Current(), nullptr);
  }
  // With several servers c-ares fails over on SERVFAIL and, when every one
  // fails, cannot say whether they answered or were unreachable.
  FakeDnsServer second;
  auto servfail = [](const DnsQuery& q) {
    return std::optional<std::string>(DnsMessageBuilder(q).Rcode(2).Build());
  };
  server_.SetHandler(servfail);
  second.SetHandler(servfail);
  auto d = Start({{"servers", {server_.address(), second.address()}}});
  ASSERT_TRUE(Eventually([&] { return d->stats().errors >= 1; }));
  EXPECT_EQ(std::string(d->stats().last_error.message()),
            absl::StrCat("dns ", kSrvName, " (servers ", server_.address(), ", ", second.address(),
                         "): SRV query: no server gave a usable answer (connection refused, or "
                         "SERVFAIL, REFUSED or NOTIMP)"));
  EXPECT_GE(second.Queries(kDnsTypeSrv), 1);  // it did fail over
  d.reset();
}

TEST_F(DnsResolverTest, FailingTargetsAreReportedAndTheOthersPublished) {
  std::atomic<bool> t1_fails{false};
  server_.SetHandler([&](const DnsQuery& q) -> std::optional<std::string> {
    DnsMessageBuilder b(q);
    if (q.type == kDnsTypeSrv) {
      b.Srv(q.name, 60, 1, 1, 7001, "t1.fake.test").Srv(q.name, 60, 1, 1, 7002, "t2.fake.test");
    } else if (q.name == "t2.fake.test" || t1_fails) {
      b.Rcode(2);  // SERVFAIL
    } else {
      b.A(q.name, 60, "10.0.0.1");
    }
    return b.Build();
  });
  auto d = Start({{"family", "ipv4"}});
  ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(10)));
  EXPECT_EQ(Describe(d->Current()), "10.0.0.1:7001 p=1 w=1 t1.fake.test");
  ASSERT_TRUE(Eventually([&] { return d->stats().errors >= 1; }));
  EXPECT_EQ(std::string(d->stats().last_error.message()),
            Prefix() + "some SRV targets failed (the others' endpoints are published): target "
                       "t2.fake.test: A query: server failure (SERVFAIL)");
  // Every target failing is a failure of the whole: nothing published.
  auto good = d->Current();
  t1_fails = true;
  ASSERT_TRUE(Eventually([&] {
    return absl::StrContains(d->stats().last_error.message(), "no SRV target resolved");
  }));
  EXPECT_THAT(std::string(d->stats().last_error.message()),
              HasSubstr("no SRV target resolved: target t1.fake.test: A query: server failure "
                        "(SERVFAIL); target t2.fake.test: A query: server failure (SERVFAIL)"));
  EXPECT_EQ(d->Current(), good);
}

// Destroying the Discovery (and so the resolver, its c-ares channel and its
// sockets) with queries in flight is clean (ASan, TSan) and quick.
TEST_F(DnsResolverTest, DestroyWithQueriesInFlight) {
  std::atomic<bool> answer_srv{false};
  server_.SetHandler([&](const DnsQuery& q) -> std::optional<std::string> {
    if (q.type == kDnsTypeSrv && answer_srv) return GoodAnswer(q);
    return std::nullopt;  // silence: the query stays in flight
  });
  for (int round = 0; round < 10; ++round) {
    bool while_resolving_targets = round % 2 == 1;
    answer_srv = while_resolving_targets;
    uint16_t waiting_on = while_resolving_targets ? kDnsTypeA : kDnsTypeSrv;
    int before = server_.Queries(waiting_on);
    auto d = Start({{"timeout", "10s"}});
    ASSERT_TRUE(server_.WaitForQueries(waiting_on, before + 1, absl::Seconds(10)));
    absl::Time start = absl::Now();
    d.reset();
    EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  }
  // And before the first query is even sent.
  for (int i = 0; i < 20; ++i) Start().reset();
}

}  // namespace
}  // namespace meshlib::discovery
