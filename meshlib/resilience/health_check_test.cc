#include "meshlib/resilience/health_check.h"

#include <cstdint>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace meshlib::resilience {
namespace {

TEST(HealthCheckTest, StartsHealthyAndTurnsUnhealthyAfterThresholdFailuresInARow) {
  HealthChecker hc(HealthCheckOptions{});  // unhealthy after 3, healthy after 2
  EXPECT_TRUE(hc.healthy());
  EXPECT_FALSE(hc.OnProbeResult(false));
  EXPECT_FALSE(hc.OnProbeResult(false));
  EXPECT_TRUE(hc.healthy());
  EXPECT_TRUE(hc.OnProbeResult(false));  // the third in a row: flips
  EXPECT_FALSE(hc.healthy());
  EXPECT_FALSE(hc.OnProbeResult(false));  // already unhealthy: no flip
  EXPECT_EQ(hc.consecutive_failures(), 4);
  EXPECT_EQ(hc.probes_failed(), 4u);
  EXPECT_EQ(hc.transitions(), 1u);
}

TEST(HealthCheckTest, AGoodProbeBreaksTheRunOfFailures) {
  HealthChecker hc(HealthCheckOptions{});
  EXPECT_FALSE(hc.OnProbeResult(false));
  EXPECT_FALSE(hc.OnProbeResult(false));
  EXPECT_FALSE(hc.OnProbeResult(true));
  EXPECT_EQ(hc.consecutive_failures(), 0);
  EXPECT_FALSE(hc.OnProbeResult(false));
  EXPECT_FALSE(hc.OnProbeResult(false));
  EXPECT_TRUE(hc.healthy());
  EXPECT_TRUE(hc.OnProbeResult(false));
  EXPECT_FALSE(hc.healthy());
}

TEST(HealthCheckTest, HealthyAgainAfterHealthyThresholdGoodProbesInARow) {
  HealthCheckOptions o;
  o.unhealthy_threshold = 1;
  o.healthy_threshold = 3;
  HealthChecker hc(o);
  EXPECT_TRUE(hc.OnProbeResult(false));
  EXPECT_FALSE(hc.healthy());
  EXPECT_FALSE(hc.OnProbeResult(true));
  EXPECT_FALSE(hc.OnProbeResult(true));
  EXPECT_FALSE(hc.OnProbeResult(false));  // breaks the run of good probes
  EXPECT_FALSE(hc.OnProbeResult(true));
  EXPECT_FALSE(hc.OnProbeResult(true));
  EXPECT_FALSE(hc.healthy());
  EXPECT_TRUE(hc.OnProbeResult(true));  // third good one in a row
  EXPECT_TRUE(hc.healthy());
  EXPECT_FALSE(hc.OnProbeResult(true));
  EXPECT_EQ(hc.probes_ok(), 6u);
  EXPECT_EQ(hc.transitions(), 2u);
}

TEST(HealthCheckTest, ProbeDelaysAreJitteredAroundTheInterval) {
  HealthCheckOptions o;
  o.interval = absl::Seconds(10);
  o.jitter = 0.2;
  HealthChecker hc(o);
  const uint64_t kMax = ~uint64_t{0};
  auto seconds = [&](uint64_t r) { return absl::ToDoubleSeconds(hc.NextProbeDelay(r)); };
  EXPECT_NEAR(seconds(0), 8, 1e-6);
  EXPECT_NEAR(seconds(uint64_t{1} << 63), 10, 1e-6);
  EXPECT_NEAR(seconds(kMax), 12, 1e-6);
  // The first probe lands anywhere in the first interval.
  EXPECT_EQ(hc.FirstProbeDelay(0), absl::ZeroDuration());
  EXPECT_EQ(hc.FirstProbeDelay(uint64_t{1} << 63), absl::Seconds(5));
  EXPECT_LE(hc.FirstProbeDelay(kMax), absl::Seconds(10));
  EXPECT_GT(hc.FirstProbeDelay(kMax), absl::Milliseconds(9999));

  o.jitter = 0;
  HealthChecker exact(o);
  EXPECT_EQ(exact.NextProbeDelay(0), absl::Seconds(10));
  EXPECT_EQ(exact.NextProbeDelay(kMax), absl::Seconds(10));
}

TEST(HealthCheckTest, ParseDefaults) {
  auto o = ParseHealthCheck(nlohmann::json::object(), "hc");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->interval, absl::Seconds(5));
  EXPECT_EQ(o->timeout, absl::Seconds(1));
  EXPECT_EQ(o->unhealthy_threshold, 3);
  EXPECT_EQ(o->healthy_threshold, 2);
  EXPECT_EQ(o->method, "meshlib.Health/Check");
  EXPECT_EQ(o->method, transport::kHealthCheckMethod);
  EXPECT_DOUBLE_EQ(o->jitter, 0.1);
  EXPECT_TRUE(o->Validate().ok());
}

TEST(HealthCheckTest, ParseReadsEveryKey) {
  auto o = ParseHealthCheck(nlohmann::json::parse(R"({
      "interval": "2s", "timeout": "500ms", "unhealthy_threshold": 5,
      "healthy_threshold": 1, "method": "Echo/Health", "jitter": 0})"),
                            "hc");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->interval, absl::Seconds(2));
  EXPECT_EQ(o->timeout, absl::Milliseconds(500));
  EXPECT_EQ(o->unhealthy_threshold, 5);
  EXPECT_EQ(o->healthy_threshold, 1);
  EXPECT_EQ(o->method, "Echo/Health");
  EXPECT_DOUBLE_EQ(o->jitter, 0);
}

TEST(HealthCheckTest, ParseErrorsNameTheFieldPath) {
  struct Case {
    const char* json;
    const char* error;
  };
  const Case cases[] = {
      {R"({"timeout": "10s"})", "services.echo.health_check.timeout: must be <= interval (5s)"},
      {R"({"interval": "1s", "timeout": "2s"})",
       "services.echo.health_check.timeout: must be <= interval (1s)"},
      {R"({"interval": "0s"})", "services.echo.health_check.interval: must be between 10ms"},
      {R"({"unhealthy_threshold": 0})",
       "services.echo.health_check.unhealthy_threshold: must be an integer between 1 and 1000"},
      {R"({"healthy_threshold": 1.5})",
       "services.echo.health_check.healthy_threshold: must be an integer"},
      {R"({"method": ""})", "services.echo.health_check.method: must be a non-empty string"},
      {R"({"jitter": 2})", "services.echo.health_check.jitter: must be a number between 0 and 1"},
      {R"({"path": "/healthz"})", "services.echo.health_check.path: unknown key"},
      {R"(true)", "services.echo.health_check: must be an object"},
  };
  for (const Case& c : cases) {
    auto o = ParseHealthCheck(nlohmann::json::parse(c.json), "services.echo.health_check");
    ASSERT_FALSE(o.ok()) << c.json;
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(o.status().message(), c.error)) << o.status().message();
  }
}

TEST(HealthCheckTest, ValidateChecksTheSameRanges) {
  HealthCheckOptions o;
  o.timeout = absl::Seconds(6);
  EXPECT_TRUE(absl::StartsWith(o.Validate().message(), "timeout: must be <= interval"));
  o = HealthCheckOptions{};
  o.healthy_threshold = 0;
  EXPECT_TRUE(absl::StartsWith(o.Validate().message(), "healthy_threshold:"));
  o = HealthCheckOptions{};
  o.method.clear();
  EXPECT_TRUE(absl::StartsWith(o.Validate().message(), "method:"));
}

TEST(ProbeReplyTest, GrpcHealthReplyMustSaySERVING) {
  const std::string m = transport::kGrpcHealthCheckMethod;
  EXPECT_TRUE(ProbeReplySaysServing(m, std::string("\x08\x01", 2)));
  EXPECT_FALSE(ProbeReplySaysServing(m, std::string("\x08\x02", 2)));  // NOT_SERVING
  EXPECT_FALSE(ProbeReplySaysServing(m, ""));                            // UNKNOWN
  EXPECT_FALSE(ProbeReplySaysServing(m, std::string("\x08", 1)));       // truncated
  EXPECT_FALSE(ProbeReplySaysServing(m, "\xff\xff"));                    // garbage
  // Unknown fields before the status are skipped.
  EXPECT_TRUE(ProbeReplySaysServing(m, std::string("\x12\x02hi\x08\x01", 6)));
  // Other methods: the call's status decides.
  EXPECT_TRUE(ProbeReplySaysServing("meshlib.Health/Check", "SERVING"));
  EXPECT_TRUE(ProbeReplySaysServing("x.Y/Z", ""));
}

}  // namespace
}  // namespace meshlib::resilience
