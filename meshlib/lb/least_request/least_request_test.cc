#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "meshlib/lb/internal/pick_test_util.h"

namespace meshlib::lb {
namespace {

using lb_internal::CountPicks;
using lb_internal::MakeEndpoints;

std::unique_ptr<Policy> Make(const std::string& list) {
  auto p = lb_internal::MakePolicy(list, &runtime::RealClock());
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

void SetInFlight(LbEndpoint& e, int n) {
  while (e.stats->in_flight() < n) e.stats->OnCallStart();
  while (e.stats->in_flight() > n) e.stats->OnCallEnd(absl::Milliseconds(1), true, absl::Now());
}

TEST(LeastRequestTest, TwoChoicesFavourTheLessLoadedAndStarveTheBusiest) {
  ReseedThreadRandom(1);
  auto policy = Make(R"([{"least_request": {}}])");
  EXPECT_EQ(policy->Describe(), "least_request(choice_count=2, active_request_bias=1)");
  auto eps = MakeEndpoints(10);
  for (int i = 0; i < 10; ++i) SetInFlight(eps[i], i);
  auto picker = policy->Build(eps);
  const int kPicks = 100000;
  std::vector<int> c = CountPicks(*picker, 10, kPicks);
  // A distinct random pair, the less loaded wins: the r-th least loaded of
  // n gets 2 (n - 1 - r) / (n (n - 1)).
  for (int r = 0; r < 10; ++r) {
    EXPECT_NEAR(c[r] / double(kPicks), 2.0 * (9 - r) / 90, 0.01) << r;
  }
  EXPECT_EQ(c[9], 0);  // busier than all others: drains first
  // Once it has drained it is back in play (stats are read at pick time,
  // no rebuild needed).
  SetInFlight(eps[9], 0);
  c = CountPicks(*picker, 10, kPicks);
  EXPECT_NEAR(c[9] / double(kPicks), 0.2, 0.01);
}

TEST(LeastRequestTest, MoreChoicesLookHarder) {
  ReseedThreadRandom(2);
  auto eps = MakeEndpoints(10);
  for (int i = 0; i < 10; ++i) SetInFlight(eps[i], i);
  const int kPicks = 100000;
  // 3 of 10: the least loaded wins whenever drawn, 1 - C(9,3)/C(10,3).
  auto c = CountPicks(*Make(R"([{"least_request": {"choice_count": 3}}])")->Build(eps), 10,
                      kPicks);
  EXPECT_NEAR(c[0] / double(kPicks), 0.3, 0.01);
  // choice_count >= endpoints: all are compared, the least loaded always wins.
  c = CountPicks(*Make(R"([{"least_request": {"choice_count": 10}}])")->Build(eps), 10, 1000);
  EXPECT_EQ(c[0], 1000);
}

TEST(LeastRequestTest, TiesAreSpreadEvenly) {
  ReseedThreadRandom(3);
  auto eps = MakeEndpoints(4);
  for (const char* list : {R"([{"least_request": {}}])",
                           R"([{"least_request": {"choice_count": 5}}])"}) {
    std::vector<int> c = CountPicks(*Make(list)->Build(eps), 4, 40000);
    for (int n : c) EXPECT_NEAR(n / 40000.0, 0.25, 0.01) << list;
  }
}

TEST(LeastRequestTest, WeightsHoldWhenLoadsAreEqual) {
  ReseedThreadRandom(4);
  auto eps = MakeEndpoints({1, 2, 7});
  for (auto& e : eps) SetInFlight(e, 3);
  const int kPicks = 100000;
  for (const char* list : {R"([{"least_request": {}}])",
                           R"([{"least_request": {"active_request_bias": 0}}])",
                           R"([{"least_request": {"choice_count": 10, "active_request_bias": 3}}])"}) {
    std::vector<int> c = CountPicks(*Make(list)->Build(eps), 3, kPicks);
    EXPECT_NEAR(c[0] / double(kPicks), 0.1, 0.01) << list;
    EXPECT_NEAR(c[1] / double(kPicks), 0.2, 0.01) << list;
    EXPECT_NEAR(c[2] / double(kPicks), 0.7, 0.01) << list;
  }
}

TEST(LeastRequestTest, ActiveRequestBiasLowersABusyEndpointsShare) {
  ReseedThreadRandom(5);
  // Weights 1:3; the heavy one has 10 calls in flight, the light one none.
  auto eps = MakeEndpoints({1, 3});
  SetInFlight(eps[1], 10);
  const int kPicks = 200000;
  auto share_of_busy = [&](const std::string& config) {
    auto c = CountPicks(*Make("[{\"least_request\": " + config + "}]")->Build(eps), 2, kPicks);
    return c[1] / double(kPicks);
  };
  // bias 0: load ignored, the weights rule (Envoy: "behaves like round robin").
  EXPECT_NEAR(share_of_busy(R"({"active_request_bias": 0})"), 0.75, 0.01);
  // The expected values: candidates drawn by weight, one kept in proportion
  // to (in_flight + 1)^-bias (see least_request.h).
  EXPECT_NEAR(share_of_busy(R"({"active_request_bias": 0.5})"), 0.6494, 0.01);
  EXPECT_NEAR(share_of_busy(R"({})"), 0.5938, 0.01);
  EXPECT_NEAR(share_of_busy(R"({"active_request_bias": 2})"), 0.5656, 0.01);
  // More choices approach Envoy's weight / (in_flight + 1)^bias, which gives
  // the busy one (3/11) / (1 + 3/11) = 0.214 at bias 1.
  EXPECT_NEAR(share_of_busy(R"({"choice_count": 10})"), 0.2831, 0.01);
  EXPECT_NEAR(share_of_busy(R"({"choice_count": 10, "active_request_bias": 2})"), 0.0854, 0.01);
}

TEST(LeastRequestTest, UnhealthyWeightZeroEmptyAndSingle) {
  ReseedThreadRandom(6);
  auto policy = Make(R"([{"least_request": {}}])");
  auto eps = MakeEndpoints({1, 0, 1, 1});
  eps[2].healthy = false;
  std::vector<int> c = CountPicks(*policy->Build(eps), 4, 10000);
  EXPECT_EQ(c[1], 0);
  EXPECT_EQ(c[2], 0);
  EXPECT_EQ(c[0] + c[3], 10000);
  for (auto& e : eps) e.healthy = false;
  c = CountPicks(*policy->Build(eps), 4, 10000);
  EXPECT_EQ(c[1], 0);
  EXPECT_GT(c[2], 2000);
  EXPECT_EQ(policy->Build({})->Pick({}), kNoEndpoint);
  auto one = MakeEndpoints(1);
  SetInFlight(one[0], 50);
  EXPECT_EQ(CountPicks(*policy->Build(one), 1, 10), std::vector<int>{10});
  // No stats (a client that reports nothing): counted as idle.
  std::vector<LbEndpoint> bare(3);
  c = CountPicks(*policy->Build(bare), 3, 3000);
  for (int n : c) EXPECT_GT(n, 800);
}

TEST(LeastRequestTest, ConfigErrorsNameTheField) {
  struct Case {
    const char* list;
    const char* message;
  } cases[] = {
      {R"([{"least_request": {"choice_count": 1}}])",
       "lb[0].least_request.choice_count: must be an integer between 2 and 10"},
      {R"([{"least_request": {"choice_count": 11}}])",
       "lb[0].least_request.choice_count: must be an integer between 2 and 10"},
      {R"([{"least_request": {"choice_count": "2"}}])",
       "lb[0].least_request.choice_count: must be an integer"},
      {R"([{"least_request": {"active_request_bias": -0.5}}])",
       "lb[0].least_request.active_request_bias: must be a number between 0 and 100"},
      {R"([{"least_request": {"bias": 1}}])", "lb[0].least_request.bias: unknown key"},
  };
  for (const Case& c : cases) {
    auto p = lb_internal::MakePolicy(c.list, &runtime::RealClock());
    ASSERT_FALSE(p.ok()) << c.list;
    EXPECT_TRUE(absl::StrContains(p.status().message(), c.message)) << p.status();
  }
}

}  // namespace
}  // namespace meshlib::lb
