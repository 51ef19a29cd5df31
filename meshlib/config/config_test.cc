#include "meshlib/config/config.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace meshlib::config {
namespace {

TEST(ConfigTest, ParsesDesignDocExample) {
  auto cfg = ParseMeshConfig(R"({
    "services": {
      "echo": {
        "discovery": {"static": {"endpoints": ["127.0.0.1:7001", "[::1]:7002"]}},
        "load_balancer": [{"p2c_peak_ewma": {"decay": "10s"}}, {"round_robin": {}}],
        "timeout": "250ms",
        "retry": {"max_attempts": 3},
        "hedging": {"delay": "50ms", "max_attempts": 2},
        "circuit_breaker": {"max_pending": 1024},
        "outlier_detection": {"consecutive_failures": 5}
      }
    }
  })");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  const ServiceConfig* echo = cfg->Find("echo");
  ASSERT_NE(echo, nullptr);
  EXPECT_EQ(echo->discovery_kind, "static");
  EXPECT_EQ(echo->discovery["static"]["endpoints"][1], "[::1]:7002");
  EXPECT_EQ(echo->timeout, absl::Milliseconds(250));
  EXPECT_FALSE(echo->load_balancer.empty());
  EXPECT_EQ(cfg->Find("other"), nullptr);
}

TEST(ConfigTest, ProtocolChoosesGrpcAndItsHealthService) {
  auto cfg = ParseMeshConfig(R"({"services": {
      "a": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}}},
      "g": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}}, "protocol": "grpc",
            "health_check": {"interval": "1s"}},
      "h": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}}, "protocol": "grpc",
            "health_check": {"method": "my.Health/Ping"}},
      "m": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}}, "protocol": "meshlib",
            "health_check": {}}}})");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->Find("a")->protocol, ServiceConfig::Protocol::kMeshlib);
  EXPECT_EQ(cfg->Find("g")->protocol, ServiceConfig::Protocol::kGrpc);
  EXPECT_EQ(cfg->Find("g")->health_check->method, "grpc.health.v1.Health/Check");
  EXPECT_EQ(cfg->Find("h")->health_check->method, "my.Health/Ping");
  EXPECT_EQ(cfg->Find("m")->health_check->method, "meshlib.Health/Check");
  for (const char* bad : {R"("http")", "7", "null"}) {
    auto b = ParseMeshConfig(absl::StrCat(
        R"({"services": {"x": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
           "protocol": )", bad, "}}}"));
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_TRUE(absl::StartsWith(b.status().message(), "services.x.protocol:"))
        << b.status().message();
  }
}

TEST(ConfigTest, DefaultTimeoutIsOneSecond) {
  auto cfg = ParseMeshConfig(
      R"({"services": {"a": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}}}}})");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->Find("a")->timeout, absl::Seconds(1));
}

struct BadCase {
  const char* json;
  const char* expected_path;
};

class ConfigErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrorTest, NamesTheFieldPath) {
  auto cfg = ParseMeshConfig(GetParam().json);
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(cfg.status().message(), GetParam().expected_path))
      << cfg.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    All, ConfigErrorTest,
    ::testing::Values(
        BadCase{R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
                 "timeout": "fast"}}})",
                "services.echo.timeout: \"fast\" is not a duration"},
        BadCase{R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["nohost"]}}}}})",
                "services.echo.discovery.static.endpoints[0]:"},
        BadCase{R"({"services": {"echo": {"discovery": {"static": {"endpoints": []}}}}})",
                "services.echo.discovery.static.endpoints: must be a non-empty list"},
        BadCase{R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
                 "retyr": {}}}})",
                "services.echo.retyr: unknown key"},
        BadCase{R"({"services": {"echo": {}}})", "services.echo.discovery: required"},
        BadCase{R"({"services": {"echo": {"discovery": {"zookeeper": {}}}}})",
                "services.echo.discovery.zookeeper: unknown discovery kind"},
        BadCase{R"({"servics": {}})", "servics: unknown key"},
        BadCase{R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
                 "circuit_breaker": {"max_requests": -5}}}})",
                "services.echo.circuit_breaker.max_requests: must be an integer"},
        BadCase{R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
                 "retry": {"max_attempts": 0}}}})",
                "services.echo.retry.max_attempts: must be an integer between 1 and 10"},
        BadCase{R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
                 "load_balancer": [{"coin_toss": {}}]}}})",
                "services.echo.load_balancer: no known policy (listed: coin_toss"},
        BadCase{R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
                 "load_balancer": [{"round_robin": {"x": 1}}]}}})",
                "services.echo.load_balancer[0].round_robin.x: unknown key"},
        BadCase{R"({"services": {"echo": {"discovery": {"file": {"path": 7}}}}})",
                "services.echo.discovery.file.path: must be a non-empty string"},
        BadCase{R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
                 "load_balancer": {"round_robin": {}}}}})",
                "services.echo.load_balancer: must be a non-empty list"},
        BadCase{"{\"services\": {\n  \"echo\": [1,}\n}", "mesh config is not valid JSON at line 2"}));

}  // namespace
}  // namespace meshlib::config

// Outlier detection and active health checks are validated by their own
// parsers, so their errors name the field inside the section.
namespace meshlib::config {
namespace {

TEST(ConfigTest, OutlierDetectionAndHealthCheckErrorsNameTheFieldPath) {
  auto ok = ParseMeshConfig(R"({"services": {"echo": {
      "discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
      "outlier_detection": {"consecutive_failures": 5, "interval": "1s",
                            "base_ejection_time": "30s", "max_ejection_percent": 50,
                            "success_rate": {"enabled": false},
                            "failure_percentage": {"threshold": 90}},
      "health_check": {"interval": "2s", "timeout": "500ms", "unhealthy_threshold": 2}}}})");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->Find("echo")->raw["health_check"]["interval"], "2s");

  struct Case {
    const char* section;
    const char* error;
  };
  const Case cases[] = {
      {R"("outlier_detection": {"max_ejection_percent": 150})",
       "services.echo.outlier_detection.max_ejection_percent: must be an integer between 0 and "
       "100"},
      {R"("outlier_detection": {"success_rate": {"stdev": 2}})",
       "services.echo.outlier_detection.success_rate.stdev: unknown key"},
      {R"("outlier_detection": 5)", "services.echo.outlier_detection: must be an object"},
      {R"("health_check": {"timeout": "9s"})",
       "services.echo.health_check.timeout: must be <= interval (5s)"},
      {R"("health_check": {"healthy_threshold": 0})",
       "services.echo.health_check.healthy_threshold: must be an integer between 1 and 1000"},
  };
  for (const Case& c : cases) {
    auto cfg = ParseMeshConfig(
        std::string(
            R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}}, )") +
        c.section + "}}}");
    ASSERT_FALSE(cfg.ok()) << c.section;
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(cfg.status().message(), c.error)) << cfg.status().message();
  }
}

}  // namespace
}  // namespace meshlib::config

namespace meshlib::config {
namespace {

TEST(ConfigTest, HedgingAndFaultErrorsNameTheFieldPath) {
  auto cfg = [](const std::string& service_extra) {
    return R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}}, )" +
           service_extra + "}}}";
  };
  EXPECT_TRUE(ParseMeshConfig(cfg(R"("hedging": {"percentile": 95}, "fault": {"abort": {"percent": 1}})")).ok());
  auto bad = ParseMeshConfig(cfg(R"("hedging": {"delay": "50ms", "max_attempts": 7})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("services.echo.hedging.max_attempts"), std::string::npos)
      << bad.status();
  bad = ParseMeshConfig(cfg(R"("fault": {"delay": {"percent": 200, "duration": "1s"}})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("services.echo.fault.delay.percent"), std::string::npos)
      << bad.status();
}

}  // namespace
}  // namespace meshlib::config

// Typed sections: every section comes through parsed, with the documented
// defaults when absent.
namespace meshlib::config {
namespace {

constexpr char kStatic[] = R"("discovery": {"static": {"endpoints": ["127.0.0.1:1"]}})";

std::string OneService(const std::string& extra) {
  return std::string(R"({"services": {"echo": {)") + kStatic +
         (extra.empty() ? "" : ", " + extra) + "}}}";
}

TEST(ConfigTypedTest, DefaultsWhenSectionsAreAbsent) {
  auto cfg = ParseMeshConfig(OneService(""));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  const ServiceConfig& s = *cfg->Find("echo");
  EXPECT_EQ(s.name, "echo");
  EXPECT_EQ(s.retry.max_attempts, 1);
  EXPECT_FALSE(s.hedging.enabled);
  EXPECT_EQ(s.circuit_breaker.max_pending, 1024);
  EXPECT_EQ(s.circuit_breaker.max_requests, 1024);
  EXPECT_EQ(s.circuit_breaker.max_retries, resilience::CircuitBreakerOptions::kNoRetryLimit);
  EXPECT_FALSE(s.outlier_detection.has_value());
  EXPECT_FALSE(s.health_check.has_value());
  EXPECT_FALSE(s.fault.enabled());
  EXPECT_EQ(s.load_balancer, "round_robin");
  EXPECT_EQ(s.load_balancer_config, nlohmann::json::object());
  EXPECT_TRUE(s.load_balancer_list.is_null());
  EXPECT_TRUE(s.subsets.empty());
  EXPECT_TRUE(s.routes.empty());
  EXPECT_EQ(s.timeout, absl::Seconds(1));

  EXPECT_EQ(cfg->mesh.zone, "");
  EXPECT_EQ(cfg->mesh.io_threads, 1);
  EXPECT_EQ(cfg->mesh.busy_poll, absl::ZeroDuration());
  EXPECT_EQ(cfg->mesh.connections_per_endpoint, 1);
  EXPECT_EQ(cfg->mesh.drain_timeout, absl::Seconds(30));
  EXPECT_EQ(cfg->raw["services"]["echo"]["discovery"]["static"]["endpoints"][0], "127.0.0.1:1");
}

TEST(ConfigTypedTest, EverySectionComesThroughTyped) {
  auto cfg = ParseMeshConfig(R"({
    "mesh": {"zone": "us-east-1a", "io_threads": 4, "connections_per_endpoint": 2,
             "drain_timeout": "5s", "busy_poll": "50us"},
    "services": {"echo": {
      "discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
      "load_balancer": [{"no_such_policy": {}}, {"p2c_peak_ewma": {"decay": "5s"}},
                        {"round_robin": {}}],
      "timeout": "2s",
      "retry": {"max_attempts": 4, "retry_on": ["UNAVAILABLE", "DEADLINE_EXCEEDED"],
                "per_try_timeout": "300ms", "backoff": {"base": "10ms", "max": "100ms"},
                "budget": {"ratio": 0.5, "min_per_second": 3, "ttl": "20s"}},
      "hedging": {"delay": "40ms", "max_attempts": 3},
      "circuit_breaker": {"max_pending": 10, "max_requests": 20, "max_retries": 5},
      "outlier_detection": {"consecutive_failures": 7, "max_ejection_percent": 50},
      "health_check": {"interval": "2s", "timeout": "500ms"},
      "fault": {"abort": {"percent": 2, "code": "INTERNAL"}},
      "subsets": {"v1": {"version": "v1"}},
      "routes": [{"subset": "v1"}]
    }}})");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->mesh.zone, "us-east-1a");
  EXPECT_EQ(cfg->mesh.io_threads, 4);
  EXPECT_EQ(cfg->mesh.busy_poll, absl::Microseconds(50));
  EXPECT_EQ(cfg->mesh.connections_per_endpoint, 2);
  EXPECT_EQ(cfg->mesh.drain_timeout, absl::Seconds(5));

  const ServiceConfig& s = *cfg->Find("echo");
  EXPECT_EQ(s.timeout, absl::Seconds(2));
  EXPECT_EQ(s.load_balancer, "p2c_peak_ewma");
  EXPECT_EQ(s.load_balancer_config, nlohmann::json({{"decay", "5s"}}));
  EXPECT_EQ(s.load_balancer_path, "services.echo.load_balancer[1].p2c_peak_ewma");
  ASSERT_TRUE(s.load_balancer_list.is_array());
  EXPECT_EQ(s.load_balancer_list.size(), 3u);

  EXPECT_EQ(s.retry.max_attempts, 4);
  EXPECT_EQ(s.retry.retry_on, (std::vector<absl::StatusCode>{
                                  absl::StatusCode::kUnavailable,
                                  absl::StatusCode::kDeadlineExceeded}));
  EXPECT_EQ(s.retry.per_try_timeout, absl::Milliseconds(300));
  EXPECT_EQ(s.retry.backoff_base, absl::Milliseconds(10));
  EXPECT_EQ(s.retry.backoff_max, absl::Milliseconds(100));
  EXPECT_EQ(s.retry.budget.ratio, 0.5);
  EXPECT_EQ(s.retry.budget.min_per_second, 3);
  EXPECT_EQ(s.retry.budget.ttl, absl::Seconds(20));

  EXPECT_TRUE(s.hedging.enabled);
  EXPECT_EQ(s.hedging.delay, absl::Milliseconds(40));
  EXPECT_EQ(s.hedging.max_attempts, 3);

  EXPECT_EQ(s.circuit_breaker.max_pending, 10);
  EXPECT_EQ(s.circuit_breaker.max_requests, 20);
  EXPECT_EQ(s.circuit_breaker.max_retries, 5);

  ASSERT_TRUE(s.outlier_detection.has_value());
  EXPECT_EQ(s.outlier_detection->consecutive_failures, 7);
  EXPECT_EQ(s.outlier_detection->max_ejection_percent, 50);
  EXPECT_EQ(s.outlier_detection->interval, absl::Seconds(10));  // default kept

  ASSERT_TRUE(s.health_check.has_value());
  EXPECT_EQ(s.health_check->interval, absl::Seconds(2));
  EXPECT_EQ(s.health_check->timeout, absl::Milliseconds(500));
  EXPECT_EQ(s.health_check->unhealthy_threshold, 3);  // default kept

  EXPECT_TRUE(s.fault.enabled());
  EXPECT_EQ(s.fault.abort_percent, 2);
  EXPECT_EQ(s.fault.abort_code, absl::StatusCode::kInternal);

  ASSERT_EQ(s.subsets.size(), 1u);
  ASSERT_NE(s.FindSubset("v1"), nullptr);
  EXPECT_EQ(s.FindSubset("v1")->match.at("version"), "v1");
  EXPECT_EQ(s.FindSubset("v2"), nullptr);
  ASSERT_EQ(s.routes.size(), 1u);
  EXPECT_EQ(s.routes[0].name, "routes[0]");

  EXPECT_EQ(s.raw["retry"]["max_attempts"], 4);
  EXPECT_EQ(cfg->raw["mesh"]["io_threads"], 4);
}

TEST(ConfigTypedTest, RetryObjectWithoutMaxAttemptsMeansThree) {
  auto cfg = ParseMeshConfig(OneService(R"("retry": {})"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->Find("echo")->retry.max_attempts, 3);
}

TEST(ConfigTypedTest, ParsesTheRoutingExampleOfTheDocs) {
  auto cfg = ParseMeshConfig(OneService(R"(
      "subsets": {"v1": {"version": "v1"}, "v2": {"version": "v2", "zone": "a"}},
      "routes": [
        {"name": "canary-header", "match": {"metadata": {"x-canary": "true"}}, "subset": "v2"},
        {"name": "writes", "match": {"method": "Kv/Put"}, "subset": "v1",
         "fault": {"abort": {"percent": 1}}},
        {"name": "reads", "match": {"method": "Kv/*", "metadata": {"x-user": "*"}},
         "split": {"v1": 0, "v2": 10}},
        {"name": "split", "split": {"v1": 95, "v2": 5}}
      ])"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  const ServiceConfig& s = *cfg->Find("echo");
  ASSERT_EQ(s.subsets.size(), 2u);
  EXPECT_EQ(s.subsets[0].name, "v1");
  EXPECT_EQ(s.subsets[1].name, "v2");
  EXPECT_EQ(s.subsets[1].match, (std::map<std::string, std::string>{{"version", "v2"},
                                                                     {"zone", "a"}}));
  ASSERT_EQ(s.routes.size(), 4u);

  const RouteConfig& canary = s.routes[0];
  EXPECT_EQ(canary.name, "canary-header");
  EXPECT_TRUE(canary.match.method.empty());
  EXPECT_EQ(canary.match.metadata,
            (std::vector<std::pair<std::string, std::string>>{{"x-canary", "true"}}));
  EXPECT_EQ(canary.split, (std::vector<std::pair<std::string, uint32_t>>{{"v2", 1}}));
  EXPECT_FALSE(canary.fault.has_value());

  const RouteConfig& writes = s.routes[1];
  EXPECT_EQ(writes.match.method, "Kv/Put");
  EXPECT_FALSE(writes.match.method_prefix);
  ASSERT_TRUE(writes.fault.has_value());
  EXPECT_EQ(writes.fault->abort_percent, 1);
  EXPECT_EQ(writes.fault->abort_code, absl::StatusCode::kUnavailable);

  const RouteConfig& reads = s.routes[2];
  EXPECT_EQ(reads.match.method, "Kv/");
  EXPECT_TRUE(reads.match.method_prefix);
  EXPECT_EQ(reads.split, (std::vector<std::pair<std::string, uint32_t>>{{"v1", 0}, {"v2", 10}}));

  const RouteConfig& split = s.routes[3];
  EXPECT_EQ(split.name, "split");
  EXPECT_TRUE(split.match.method.empty());
  EXPECT_TRUE(split.match.metadata.empty());
  EXPECT_EQ(split.split, (std::vector<std::pair<std::string, uint32_t>>{{"v1", 95}, {"v2", 5}}));

  // The first matching route wins.
  EXPECT_EQ(FirstMatchingRoute(s.routes, "Kv/Put", {{"x-canary", "true"}}), &s.routes[0]);
  EXPECT_EQ(FirstMatchingRoute(s.routes, "Kv/Put", {}), &s.routes[1]);
  EXPECT_EQ(FirstMatchingRoute(s.routes, "Kv/Get", {{"x-user", "7"}}), &s.routes[2]);
  EXPECT_EQ(FirstMatchingRoute(s.routes, "Kv/Get", {}), &s.routes[3]);
}

TEST(ConfigTypedTest, ParseMeshConfigJsonTakesAParsedDocument) {
  nlohmann::json doc = nlohmann::json::parse(OneService(R"("timeout": "3s")"));
  auto cfg = ParseMeshConfigJson(doc);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->Find("echo")->timeout, absl::Seconds(3));
  EXPECT_EQ(cfg->raw, doc);
  auto bad = ParseMeshConfigJson(nlohmann::json::array());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "(root): must be a JSON object");
}

// Every rule of the new sections, with the exact message a user reads.
TEST(ConfigTypedTest, RoutingMeshAndUnknownKeyErrors) {
  struct Case {
    std::string json;
    std::string error;  // the whole message
  };
  const std::string subsets = R"("subsets": {"v1": {"version": "v1"}, "v2": {"version": "v2"}})";
  const Case cases[] = {
      // Top level and mesh.
      {R"({"services": {}, "extra": 1})", "extra: unknown key (known: services, mesh)"},
      {R"({"mesh": {}})", "services: required"},
      {R"({"services": [], "mesh": {}})", "services: must be an object of service name -> service"},
      {R"({"services": {}, "mesh": {"zones": "a"}})",
       "mesh.zones: unknown key (known: zone, io_threads, busy_poll, "
       "connections_per_endpoint, drain_timeout, tls)"},
      {R"({"services": {}, "mesh": []})", "mesh: must be an object"},
      {R"({"services": {}, "mesh": {"zone": 1}})", "mesh.zone: must be a string"},
      {R"({"services": {}, "mesh": {"io_threads": 0}})",
       "mesh.io_threads: must be an integer between 1 and 64"},
      {R"({"services": {}, "mesh": {"io_threads": 65}})",
       "mesh.io_threads: must be an integer between 1 and 64"},
      {R"({"services": {}, "mesh": {"connections_per_endpoint": 100}})",
       "mesh.connections_per_endpoint: must be an integer between 1 and 64"},
      {R"({"services": {}, "mesh": {"busy_poll": "2ms"}})",
       "mesh.busy_poll: must be between 0 and 1ms"},
      {R"({"services": {}, "mesh": {"busy_poll": "-1us"}})",
       "mesh.busy_poll: must be between 0 and 1ms"},
      {R"({"services": {}, "mesh": {"busy_poll": 50}})",
       "mesh.busy_poll: must be a duration string (examples: \"250ms\", \"1s\")"},
      {R"({"services": {}, "mesh": {"drain_timeout": "2h"}})",
       "mesh.drain_timeout: must be between 0 and 1h"},
      {R"({"services": {}, "mesh": {"drain_timeout": 30}})",
       "mesh.drain_timeout: must be a duration string (examples: \"250ms\", \"1s\")"},
      // Service level.
      {OneService(R"("route": [])"),
       "services.echo.route: unknown key (known: discovery, load_balancer, timeout, retry, "
       "hedging, circuit_breaker, outlier_detection, health_check, fault, subsets, routes, tls, protocol)"},
      {R"({"services": {"echo": 5}})", "services.echo: must be an object"},
      {OneService(R"("timeout": "0s")"), "services.echo.timeout: must be > 0"},
      {OneService(R"("retry": {"max_attempts": 11})"),
       "services.echo.retry.max_attempts: must be an integer between 1 and 10"},
      {OneService(R"("circuit_breaker": {"max_pendin": 1})"),
       "services.echo.circuit_breaker.max_pendin: unknown key (known: max_pending, "
       "max_requests, max_retries)"},
      // Subsets.
      {OneService(R"("subsets": [])"),
       "services.echo.subsets: must be an object of subset name -> {endpoint-metadata key: "
       "value}"},
      {OneService(R"("subsets": {"": {"version": "v1"}})"),
       "services.echo.subsets: subset names must not be empty"},
      {OneService(R"("subsets": {"v1": "v1"})"),
       "services.echo.subsets.v1: must be an object of endpoint-metadata key -> exact value"},
      {OneService(R"("subsets": {"v1": {"version": 1}})"),
       "services.echo.subsets.v1.version: must be a string"},
      {OneService(R"("subsets": {"v1": {"": "x"}})"),
       "services.echo.subsets.v1: metadata keys must not be empty"},
      // Routes.
      {OneService(subsets + R"(, "routes": {"subset": "v1"})"),
       "services.echo.routes: must be a list of route objects"},
      {OneService(subsets + R"(, "routes": ["v1"])"), "services.echo.routes[0]: must be an object"},
      {OneService(subsets + R"(, "routes": [{"subset": "v1", "weight": 3}])"),
       "services.echo.routes[0].weight: unknown key (known: name, match, subset, split, fault)"},
      {OneService(subsets + R"(, "routes": [{"match": {}}])"),
       "services.echo.routes[0]: needs exactly one of \"subset\" (a subset name) or \"split\" "
       "(subset name -> weight)"},
      {OneService(subsets + R"(, "routes": [{"subset": "v1", "split": {"v1": 1}}])"),
       "services.echo.routes[0]: needs exactly one of \"subset\" (a subset name) or \"split\" "
       "(subset name -> weight)"},
      {OneService(subsets + R"(, "routes": [{"subset": "v1"}, {"subset": "v3"}])"),
       "services.echo.routes[1].subset: no subset named \"v3\" (subsets: v1, v2)"},
      {OneService(R"("routes": [{"subset": "v1"}])"),
       "services.echo.routes[0].subset: no subset named \"v1\" (the service has no "
       "\"subsets\")"},
      {OneService(subsets + R"(, "routes": [{"subset": ""}])"),
       "services.echo.routes[0].subset: must be a non-empty string: a name from the service's "
       "\"subsets\""},
      {OneService(subsets + R"(, "routes": [{"subset": "v1"}, {"split": {"v1": 5, "v3": 5}}])"),
       "services.echo.routes[1].split.v3: no subset named \"v3\" (subsets: v1, v2)"},
      {OneService(subsets + R"(, "routes": [{"split": {}}])"),
       "services.echo.routes[0].split: must be a non-empty object of subset name -> weight "
       "(0-10000)"},
      {OneService(subsets + R"(, "routes": [{"split": {"v1": 10001}}])"),
       "services.echo.routes[0].split.v1: must be an integer between 0 and 10000"},
      {OneService(subsets + R"(, "routes": [{"split": {"v1": -1}}])"),
       "services.echo.routes[0].split.v1: must be an integer between 0 and 10000"},
      {OneService(subsets + R"(, "routes": [{"split": {"v1": 0.5}}])"),
       "services.echo.routes[0].split.v1: must be an integer between 0 and 10000"},
      {OneService(subsets + R"(, "routes": [{"split": {"v1": 0, "v2": 0}}])"),
       "services.echo.routes[0].split: needs at least one weight > 0"},
      {OneService(subsets + R"(, "routes": [{"name": "", "subset": "v1"}])"),
       "services.echo.routes[0].name: must be a non-empty string"},
      {OneService(subsets +
                  R"(, "routes": [{"name": "a", "subset": "v1"}, {"name": "a", "subset": "v2"}])"),
       "services.echo.routes[1].name: \"a\" is already the name of services.echo.routes[0]"},
      {OneService(subsets + R"(, "routes": [{"match": {"path": "/"}, "subset": "v1"}])"),
       "services.echo.routes[0].match.path: unknown key (known: method, metadata)"},
      {OneService(subsets + R"(, "routes": [{"match": [], "subset": "v1"}])"),
       "services.echo.routes[0].match: must be an object"},
      {OneService(subsets + R"(, "routes": [{"match": {"method": ""}, "subset": "v1"}])"),
       "services.echo.routes[0].match.method: must be a non-empty string: a method name "
       "(\"Kv/Put\") or a prefix ending in * (\"Kv/*\")"},
      {OneService(subsets + R"(, "routes": [{"match": {"method": "Kv/*et"}, "subset": "v1"}])"),
       "services.echo.routes[0].match.method: \"Kv/*et\": * is allowed only at the end (a "
       "prefix)"},
      {OneService(subsets + R"(, "routes": [{"match": {"metadata": ["a"]}, "subset": "v1"}])"),
       "services.echo.routes[0].match.metadata: must be an object of request-metadata key -> "
       "value (\"*\": present)"},
      {OneService(subsets +
                  R"(, "routes": [{"match": {"metadata": {"x-canary": true}}, "subset": "v1"}])"),
       "services.echo.routes[0].match.metadata.x-canary: must be a string: the exact value, or "
       "\"*\" for any value"},
      {OneService(subsets + R"(, "routes": [{"match": {"metadata": {"": "1"}}, "subset": "v1"}])"),
       "services.echo.routes[0].match.metadata: keys must not be empty"},
      {OneService(subsets +
                  R"(, "routes": [{"subset": "v1", "fault": {"abort": {"percent": 101}}}])"),
       "services.echo.routes[0].fault.abort.percent: must be a number between 0 and 100"},
  };
  for (const Case& c : cases) {
    auto cfg = ParseMeshConfig(c.json);
    ASSERT_FALSE(cfg.ok()) << c.json;
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_EQ(cfg.status().message(), c.error) << c.json;
  }
}

}  // namespace
}  // namespace meshlib::config

// The full example of docs/configuration.md, verbatim: it must stay valid.
namespace meshlib::config {
namespace {

TEST(ConfigTypedTest, FullExampleOfTheReferenceParses) {
  auto cfg = ParseMeshConfig(R"({
  "mesh": {"zone": "a", "io_threads": 2, "connections_per_endpoint": 2, "drain_timeout": "20s"},
  "services": {
    "echo": {
      "discovery": {"static": {"endpoints": ["127.0.0.1:7001", "127.0.0.1:7002"]}},
      "load_balancer": [{"p2c_peak_ewma": {"decay": "10s"}}, {"round_robin": {}}],
      "timeout": "1s",
      "retry": {
        "max_attempts": 3,
        "retry_on": ["UNAVAILABLE"],
        "per_try_timeout": "300ms",
        "backoff": {"base": "25ms", "max": "250ms"},
        "budget": {"ratio": 0.2, "min_per_second": 10, "ttl": "10s"}
      },
      "hedging": {"delay": "50ms", "max_attempts": 2},
      "circuit_breaker": {"max_pending": 1024, "max_requests": 1024, "max_retries": 3},
      "outlier_detection": {"consecutive_failures": 5, "interval": "1s",
                            "base_ejection_time": "30s", "max_ejection_percent": 50}
    },
    "kv": {
      "discovery": {"etcd": {"endpoints": ["127.0.0.1:2379"], "prefix": "/meshlib/services/kv/"}},
      "load_balancer": [{"locality": {"policy": [{"least_request": {}}]}}],
      "timeout": "250ms",
      "retry": {"max_attempts": 2, "retry_on": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]},
      "hedging": {"percentile": 95},
      "health_check": {"interval": "5s", "timeout": "1s"},
      "subsets": {"v1": {"version": "v1"}, "v2": {"version": "v2", "zone": "a"}},
      "routes": [
        {"name": "canary-header", "match": {"metadata": {"x-canary": "true"}}, "subset": "v2"},
        {"name": "writes", "match": {"method": "Kv/Put"}, "subset": "v1",
         "fault": {"abort": {"percent": 1}}},
        {"name": "split", "split": {"v1": 95, "v2": 5}}
      ]
    }
  }
}
)");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->mesh.zone, "a");
  EXPECT_EQ(cfg->mesh.connections_per_endpoint, 2);
  const ServiceConfig* kv = cfg->Find("kv");
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->load_balancer, "locality");
  EXPECT_TRUE(kv->hedging.enabled);
  EXPECT_EQ(kv->hedging.percentile, 95);
  ASSERT_TRUE(kv->health_check.has_value());
  EXPECT_EQ(kv->routes.size(), 3u);
  EXPECT_TRUE(kv->routes[1].fault.has_value());
  const ServiceConfig* echo = cfg->Find("echo");
  ASSERT_NE(echo, nullptr);
  EXPECT_EQ(echo->retry.max_attempts, 3);
  EXPECT_EQ(echo->outlier_detection->interval, absl::Seconds(1));
}

}  // namespace
}  // namespace meshlib::config
