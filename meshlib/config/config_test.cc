#include "meshlib/config/config.h"

#include "absl/strings/match.h"
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
