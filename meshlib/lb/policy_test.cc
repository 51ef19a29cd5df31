#include "meshlib/lb/policy.h"

#include <map>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "meshlib/lb/endpoint_stats.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

// A factory that forwards to another (to offer the global registry a new
// object).
class ProxyFactory final : public PolicyFactory {
 public:
  explicit ProxyFactory(const PolicyFactory* to) : to_(to) {}
  std::string name() const override { return to_->name(); }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    return to_->Validate(config, path);
  }
  absl::StatusOr<std::unique_ptr<Policy>> Create(const json& config, absl::string_view path,
                                                 const PolicyContext& ctx) const override {
    return to_->Create(config, path, ctx);
  }

 private:
  const PolicyFactory* to_;
};

std::vector<LbEndpoint> Endpoints(int n) {
  std::vector<LbEndpoint> v;
  for (int i = 0; i < n; ++i) {
    LbEndpoint e;
    e.endpoint.address = "127.0.0.1:" + std::to_string(7000 + i);
    e.stats = std::make_shared<EndpointStats>();
    v.push_back(std::move(e));
  }
  return v;
}

std::unique_ptr<Policy> Make(const std::string& list_json) {
  auto choice = PolicyRegistry::Global().Select(json::parse(list_json), "lb");
  EXPECT_TRUE(choice.ok()) << choice.status();
  PolicyContext ctx;
  ctx.clock = &runtime::RealClock();
  auto p = choice->factory->Create(choice->config, choice->path, ctx);
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

// The global registry takes additions only before it is first read.
TEST(PolicyRegistryTest, GlobalIsImmutableOnceRead) {
  ASSERT_NE(PolicyRegistry::Global().Find("round_robin"), nullptr);
  PolicyRegistry mine;
  PolicyRegistry::RegisterBuiltins(mine);
  ASSERT_NE(mine.Find("round_robin"), nullptr);
  const PolicyFactory* before = PolicyRegistry::Global().Find("round_robin");
  absl::Status st = PolicyRegistry::AddToGlobal(std::make_unique<ProxyFactory>(before));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "start-up")) << st;
  EXPECT_EQ(PolicyRegistry::Global().Find("round_robin"), before);
}

TEST(PolicyRegistryTest, FirstKnownNameWins) {
  auto& r = PolicyRegistry::Global();
  auto c = r.Select(json::parse(R"([{"from_the_future": {"x": 1}}, {"round_robin": {}}])"),
                    "services.e.load_balancer");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->factory->name(), "round_robin");
  EXPECT_EQ(c->path, "services.e.load_balancer[1].round_robin");
  auto d = r.Select(json(), "p");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->factory->name(), "round_robin");
}

TEST(PolicyRegistryTest, ErrorsNameThePath) {
  auto& r = PolicyRegistry::Global();
  struct Case {
    const char* list;
    const char* message;
  } cases[] = {
      {R"({"round_robin": {}})", "lb: must be a non-empty list"},
      {R"([])", "lb: must be a non-empty list"},
      {R"([{"a": {}, "b": {}}])", "lb[0]: must be an object with exactly one policy name"},
      {R"([{"nope": {}}])", "lb: no known policy (listed: nope; known:"},
      {R"([{"round_robin": {"weird": 1}}])", "lb[0].round_robin.weird: unknown key"},
  };
  for (const Case& c : cases) {
    auto s = r.Select(json::parse(c.list), "lb");
    ASSERT_FALSE(s.ok()) << c.list;
    EXPECT_TRUE(absl::StrContains(s.status().message(), c.message)) << s.status();
  }
}

TEST(RoundRobinTest, EvenOverHealthyOnes) {
  auto policy = Make(R"([{"round_robin": {}}])");
  auto eps = Endpoints(4);
  eps[2].healthy = false;
  auto picker = policy->Build(eps);
  std::map<int, int> count;
  for (int i = 0; i < 300; ++i) ++count[picker->Pick({})];
  EXPECT_EQ(count.size(), 3u);
  EXPECT_EQ(count[0], 100);
  EXPECT_EQ(count[1], 100);
  EXPECT_EQ(count[3], 100);
  EXPECT_EQ(count.count(2), 0u);
}

TEST(RoundRobinTest, NoneHealthyUsesAllAndEmptyGivesNoEndpoint) {
  auto policy = Make(R"([{"round_robin": {}}])");
  auto eps = Endpoints(2);
  eps[0].healthy = eps[1].healthy = false;
  auto picker = policy->Build(eps);
  std::map<int, int> count;
  for (int i = 0; i < 10; ++i) ++count[picker->Pick({})];
  EXPECT_EQ(count.size(), 2u);
  EXPECT_EQ(policy->Build({})->Pick({}), kNoEndpoint);
}

TEST(EndpointStatsTest, PeakEwmaTakesPeaksAtOnceAndDecaysSlowly) {
  EndpointStats s(absl::Seconds(10), absl::Milliseconds(1));
  absl::Time t = absl::FromUnixSeconds(1000);
  s.OnCallStart();
  EXPECT_EQ(s.in_flight(), 1);
  s.OnCallEnd(absl::Milliseconds(5), true, t);
  EXPECT_EQ(s.in_flight(), 0);
  EXPECT_DOUBLE_EQ(s.PeakEwmaNanos(t), 5e6);
  s.OnCallStart();
  s.OnCallEnd(absl::Milliseconds(50), true, t + absl::Milliseconds(1));  // peak: at once
  EXPECT_DOUBLE_EQ(s.EwmaNanosForTesting(), 50e6);
  s.OnCallStart();
  s.OnCallEnd(absl::Milliseconds(1), true, t + absl::Seconds(10));  // one decay constant later
  double v = s.EwmaNanosForTesting();
  double w = std::exp(-9.999 / 10);  // 10s after the start, 9.999s after the last sample
  EXPECT_NEAR(v, 50e6 * w + 1e6 * (1 - w), 1.0);
  // Idle: it decays toward zero.
  EXPECT_LT(s.PeakEwmaNanos(t + absl::Seconds(40)), v / 10);
}

TEST(EndpointStatsTest, FailurePenaltyKeepsFastFailuresFromLookingFast) {
  EndpointStats s(absl::Seconds(10), absl::Milliseconds(1));
  s.set_failure_penalty(absl::Milliseconds(200));
  absl::Time t = absl::FromUnixSeconds(1000);
  s.OnCallStart();
  s.OnCallEnd(absl::Microseconds(50), /*success=*/false, t);
  EXPECT_DOUBLE_EQ(s.PeakEwmaNanos(t), 200e6);
  EXPECT_EQ(s.failures(), 1u);
  EXPECT_EQ(s.consecutive_failures(), 1u);
  s.OnCallStart();
  s.OnCallEnd(absl::Microseconds(50), true, t);
  EXPECT_EQ(s.consecutive_failures(), 0u);
}

TEST(EndpointStatsTest, AbandonedCallCanRaiseTheEstimateButNeverLowerIt) {
  EndpointStats s(absl::Seconds(10), absl::Milliseconds(1));
  absl::Time t = absl::FromUnixSeconds(1000);
  s.OnCallStart();
  s.OnCallEnd(absl::Milliseconds(300), true, t);
  s.OnCallStart();
  s.OnCallAbandoned(absl::Milliseconds(50), t);  // a lost hedge: it took > 50ms
  EXPECT_EQ(s.in_flight(), 0);
  EXPECT_DOUBLE_EQ(s.PeakEwmaNanos(t), 300e6);  // not pulled toward 50ms
  EXPECT_EQ(s.calls(), 1u);                     // not an outcome
  s.OnCallStart();
  s.OnCallAbandoned(absl::Milliseconds(900), t);
  EXPECT_DOUBLE_EQ(s.PeakEwmaNanos(t), 900e6);  // a lower bound above it: a peak
  EXPECT_EQ(s.failures(), 0u);
}

TEST(Hash64Test, StableAndSpread) {
  EXPECT_EQ(Hash64("user-42"), Hash64("user-42"));
  EXPECT_NE(Hash64("user-42"), Hash64("user-43"));
  EXPECT_NE(Hash64("x", 1), Hash64("x", 2));
  // A value fixed here: the hash must never change between builds, or
  // clients of different versions would disagree on where keys go.
  EXPECT_EQ(Hash64(""), Hash64("", 0));
}

}  // namespace
}  // namespace meshlib::lb
