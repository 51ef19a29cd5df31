#include "meshlib/resilience/retry_policy.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace meshlib::resilience {
namespace {

using json = nlohmann::json;

TEST(RetryPolicyTest, ParsesTheDesignExample) {
  auto p = ParseRetryPolicy(json::parse(R"({
      "max_attempts": 3, "retry_on": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
      "per_try_timeout": "300ms", "backoff": {"base": "25ms", "max": "250ms"},
      "budget": {"ratio": 0.2, "min_per_second": 10, "ttl": "10s"}})"),
                            "services.echo.retry");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->max_attempts, 3);
  EXPECT_TRUE(p->RetriesOn(absl::StatusCode::kResourceExhausted));
  EXPECT_FALSE(p->RetriesOn(absl::StatusCode::kInternal));
  EXPECT_EQ(p->per_try_timeout, absl::Milliseconds(300));
  EXPECT_EQ(p->budget.ttl, absl::Seconds(10));
}

TEST(RetryPolicyTest, FullJitterBackoffGrowsToTheCap) {
  RetryPolicy p;
  const uint64_t top = ~0ull;  // u ~ 1: the cap itself
  EXPECT_NEAR(absl::ToDoubleMilliseconds(p.Backoff(1, top)), 25, 0.01);
  EXPECT_NEAR(absl::ToDoubleMilliseconds(p.Backoff(2, top)), 50, 0.01);
  EXPECT_NEAR(absl::ToDoubleMilliseconds(p.Backoff(3, top)), 100, 0.01);
  EXPECT_NEAR(absl::ToDoubleMilliseconds(p.Backoff(5, top)), 250, 0.01);
  EXPECT_NEAR(absl::ToDoubleMilliseconds(p.Backoff(50, top)), 250, 0.01);
  EXPECT_EQ(p.Backoff(3, 0), absl::ZeroDuration());
  EXPECT_NEAR(absl::ToDoubleMilliseconds(p.Backoff(3, top / 2)), 50, 0.01);
}

TEST(RetryPolicyTest, ErrorsNameTheField) {
  struct Case {
    const char* json;
    const char* message;
  } cases[] = {
      {R"({"max_attempts": 11})", "r.max_attempts: must be an integer between 1 and 10"},
      {R"({"retry_on": ["UNAVAILABEL"]})", "r.retry_on[0]: \"UNAVAILABEL\" is not a status code"},
      {R"({"per_try_timeout": "soon"})", "r.per_try_timeout:"},
      {R"({"backoff": {"base": "1s", "max": "10ms"}})", "r.backoff.max: must be >= base"},
      {R"({"budget": {"ratio": -1}})", "r.budget.ratio: must be a number"},
      {R"({"retries": 3})", "r.retries: unknown key"},
  };
  for (const Case& c : cases) {
    auto p = ParseRetryPolicy(json::parse(c.json), "r");
    ASSERT_FALSE(p.ok()) << c.json;
    EXPECT_TRUE(absl::StrContains(p.status().message(), c.message)) << p.status();
  }
}

TEST(StatusCodeFromNameTest, AllCanonicalNames) {
  EXPECT_EQ(StatusCodeFromName("DEADLINE_EXCEEDED").value(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(StatusCodeFromName("UNAUTHENTICATED").value(), absl::StatusCode::kUnauthenticated);
  EXPECT_FALSE(StatusCodeFromName("unavailable").ok());
  EXPECT_FALSE(StatusCodeFromName("OK").ok());
}

}  // namespace
}  // namespace meshlib::resilience
