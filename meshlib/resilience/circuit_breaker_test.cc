#include "meshlib/resilience/circuit_breaker.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace meshlib::resilience {
namespace {

TEST(CircuitBreakerTest, LimitsEachKindAndNamesTheLimit) {
  CircuitBreaker b(CircuitBreakerOptions{/*pending=*/1, /*requests=*/2, /*retries=*/1}, "echo");
  EXPECT_TRUE(b.TryStartRequest().ok());
  EXPECT_TRUE(b.TryStartRequest().ok());
  absl::Status over = b.TryStartRequest();
  EXPECT_EQ(over.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(over.message(), "max_requests (2)")) << over;
  EXPECT_TRUE(absl::StrContains(over.message(), "service echo")) << over;
  b.EndRequest();
  EXPECT_TRUE(b.TryStartRequest().ok());

  EXPECT_TRUE(b.TryStartPending().ok());
  EXPECT_TRUE(absl::StrContains(b.TryStartPending().message(), "max_pending (1)"));
  b.EndPending();
  EXPECT_TRUE(b.TryStartPending().ok());

  EXPECT_TRUE(b.TryStartRetry());
  EXPECT_FALSE(b.TryStartRetry());
  b.EndRetry();
  EXPECT_TRUE(b.TryStartRetry());
  EXPECT_EQ(b.overflows(), 3u);
}

TEST(CircuitBreakerTest, DefaultsAreEnvoysAndErrorsNameTheField) {
  auto d = ParseCircuitBreaker(nlohmann::json::object(), "cb");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->max_pending, 1024);
  EXPECT_EQ(d->max_requests, 1024);
  EXPECT_EQ(d->max_retries, CircuitBreakerOptions::kNoRetryLimit);
  auto bad = ParseCircuitBreaker(nlohmann::json::parse(R"({"max_requests": 0})"), "cb");
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "cb.max_requests: must be an integer"));
  bad = ParseCircuitBreaker(nlohmann::json::parse(R"({"max_connections": 5})"), "cb");
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "cb.max_connections: unknown key"));
}

}  // namespace
}  // namespace meshlib::resilience
