#include "gtest/gtest.h"
#include "meshlib/resilience/fault_injection.h"
#include "meshlib/resilience/hedging_policy.h"

namespace meshlib::resilience {
namespace {

using json = nlohmann::json;

TEST(HedgingPolicyTest, FixedDelay) {
  auto p = ParseHedgingPolicy(json::parse(R"({"delay": "50ms", "max_attempts": 3})"), "h");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->enabled);
  EXPECT_EQ(p->max_attempts, 3);
  EXPECT_EQ(p->DelayFor(std::nullopt), absl::Milliseconds(50));
  EXPECT_EQ(p->DelayFor(absl::Milliseconds(7)), absl::Milliseconds(50));  // fixed wins
  EXPECT_DOUBLE_EQ(p->max_extra_load, 0.05);
  auto p95 = ParseHedgingPolicy(json::parse(R"({"percentile": 95})"), "h");
  EXPECT_NEAR(p95->max_extra_load, 0.05, 1e-9);
  auto p999 = ParseHedgingPolicy(json::parse(R"({"percentile": 99.9})"), "h");
  EXPECT_DOUBLE_EQ(p999->max_extra_load, 0.01);
  auto set = ParseHedgingPolicy(json::parse(R"({"percentile": 99, "max_extra_load": 0.2})"), "h");
  EXPECT_DOUBLE_EQ(set->max_extra_load, 0.2);
}

TEST(HedgingPolicyTest, TrackedPercentileWithFallbackAndFloor) {
  auto p = ParseHedgingPolicy(json::parse(R"({"percentile": 95, "delay": "20ms"})"), "h");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->max_attempts, 2);
  EXPECT_EQ(p->DelayFor(std::nullopt), absl::Milliseconds(20));
  EXPECT_EQ(p->DelayFor(absl::Milliseconds(7)), absl::Milliseconds(7));
  EXPECT_EQ(p->DelayFor(absl::Microseconds(10)), absl::Milliseconds(1));  // min_delay
  auto only = ParseHedgingPolicy(json::parse(R"({"percentile": 99})"), "h");
  ASSERT_TRUE(only.ok());
  EXPECT_FALSE(only->DelayFor(std::nullopt).has_value());  // unknown yet: no hedge
  EXPECT_FALSE(HedgingPolicy{}.DelayFor(absl::Milliseconds(1)).has_value());  // disabled
}

TEST(HedgingPolicyTest, ErrorsNameTheField) {
  struct Case {
    const char* text;
    const char* error;
  } cases[] = {
      {R"({})", "services.e.hedging: needs \"delay\""},
      {R"({"delay": "50ms", "max_attempts": 9})", "services.e.hedging.max_attempts"},
      {R"({"percentile": 100})", "services.e.hedging.percentile"},
      {R"({"delay": "soon"})", "services.e.hedging.delay"},
      {R"({"delay": "5ms", "hedge_on": 1})", "hedge_on"},
      {R"({"delay": "5ms", "max_extra_load": 2})", "services.e.hedging.max_extra_load"},
  };
  for (const Case& c : cases) {
    auto p = ParseHedgingPolicy(json::parse(c.text), "services.e.hedging");
    ASSERT_FALSE(p.ok()) << c.text;
    EXPECT_NE(p.status().message().find(c.error), std::string::npos) << p.status();
  }
}

TEST(FaultInjectionTest, ParsesAndDecidesByPercent) {
  auto f = ParseFaultInjection(json::parse(R"({"delay": {"percent": 25, "duration": "100ms"},
                                               "abort": {"percent": 10, "code": "INTERNAL"}})"),
                               "f");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->enabled());
  EXPECT_EQ(f->AbortStatus().code(), absl::StatusCode::kInternal);
  EXPECT_NE(f->AbortStatus().message().find("fault injected"), std::string::npos);
  // Random values spread evenly over 64 bits: 25% delayed, 10% aborted.
  int delayed = 0, aborted = 0;
  const int n = 10000;
  for (int i = 0; i < n; ++i) {
    uint64_t r = (static_cast<uint64_t>(i) * (~0ull / n));
    auto d = f->Decide(r, r);
    if (d.delay > absl::ZeroDuration()) {
      EXPECT_EQ(d.delay, absl::Milliseconds(100));
      ++delayed;
    }
    aborted += d.abort;
  }
  EXPECT_NEAR(delayed, 2500, 2);
  EXPECT_NEAR(aborted, 1000, 2);
}

TEST(FaultInjectionTest, DefaultsAndErrors) {
  auto f = ParseFaultInjection(json::parse(R"({"abort": {"percent": 100}})"), "f");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->abort_code, absl::StatusCode::kUnavailable);
  EXPECT_TRUE(f->Decide(0, ~0ull).abort);
  EXPECT_FALSE(FaultInjection{}.enabled());
  struct Case {
    const char* text;
    const char* error;
  } cases[] = {
      {R"({"abort": {"percent": 101}})", "s.fault.abort.percent"},
      {R"({"abort": {"percent": 5, "code": "NOPE"}})", "s.fault.abort.code"},
      {R"({"delay": {"percent": 5}})", "s.fault.delay: needs both"},
      {R"({"delay": {"percent": 5, "duration": "x"}})", "s.fault.delay.duration"},
      {R"({"slow": {}})", "slow"},
  };
  for (const Case& c : cases) {
    auto p = ParseFaultInjection(json::parse(c.text), "s.fault");
    ASSERT_FALSE(p.ok()) << c.text;
    EXPECT_NE(p.status().message().find(c.error), std::string::npos) << p.status();
  }
}

}  // namespace
}  // namespace meshlib::resilience
