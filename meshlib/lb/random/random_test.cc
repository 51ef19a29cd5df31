#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "meshlib/lb/internal/pick_test_util.h"

namespace meshlib::lb {
namespace {

using lb_internal::CountPicks;
using lb_internal::MakeEndpoints;

std::unique_ptr<Policy> Make(const char* list) {
  auto p = lb_internal::MakePolicy(list, &runtime::RealClock());
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

TEST(RandomTest, WeightedByDefault) {
  ReseedThreadRandom(1);
  auto policy = Make(R"([{"random": {}}])");
  EXPECT_EQ(policy->Describe(), "random(weighted=true)");
  auto eps = MakeEndpoints({1, 2, 7});
  const int kPicks = 100000;
  std::vector<int> c = CountPicks(*policy->Build(eps), 3, kPicks);
  EXPECT_NEAR(c[0] / double(kPicks), 0.1, 0.01);
  EXPECT_NEAR(c[1] / double(kPicks), 0.2, 0.01);
  EXPECT_NEAR(c[2] / double(kPicks), 0.7, 0.01);
}

TEST(RandomTest, UnweightedIsUniform) {
  ReseedThreadRandom(2);
  auto policy = Make(R"([{"random": {"weighted": false}}])");
  auto eps = MakeEndpoints({1, 2, 7});
  const int kPicks = 90000;
  std::vector<int> c = CountPicks(*policy->Build(eps), 3, kPicks);
  for (int n : c) EXPECT_NEAR(n / double(kPicks), 1.0 / 3, 0.01);
}

TEST(RandomTest, UnhealthyAndWeightZeroSkipped) {
  ReseedThreadRandom(3);
  auto policy = Make(R"([{"random": {}}])");
  auto eps = MakeEndpoints({1, 0, 3, 5});
  eps[3].healthy = false;
  const int kPicks = 40000;
  std::vector<int> c = CountPicks(*policy->Build(eps), 4, kPicks);
  EXPECT_EQ(c[1], 0);
  EXPECT_EQ(c[3], 0);
  EXPECT_NEAR(c[0] / double(kPicks), 0.25, 0.01);
  // None healthy: all of them, the weight-0 one still only if nothing else.
  for (auto& e : eps) e.healthy = false;
  c = CountPicks(*policy->Build(eps), 4, kPicks);
  EXPECT_EQ(c[1], 0);
  EXPECT_NEAR(c[3] / double(kPicks), 5.0 / 9, 0.01);
  EXPECT_EQ(policy->Build({})->Pick({}), kNoEndpoint);
  auto one = MakeEndpoints(std::vector<uint32_t>{4});
  EXPECT_EQ(CountPicks(*policy->Build(one), 1, 10), std::vector<int>{10});
}

TEST(RandomTest, ReproducibleFromTheSeed) {
  auto policy = Make(R"([{"random": {}}])");
  auto picker = policy->Build(MakeEndpoints({1, 2, 7}));
  auto run = [&] {
    ReseedThreadRandom(99);
    std::vector<int> v;
    for (int k = 0; k < 50; ++k) v.push_back(picker->Pick({}));
    return v;
  };
  EXPECT_EQ(run(), run());
}

TEST(RandomTest, ConfigErrorsNameTheField) {
  struct Case {
    const char* list;
    const char* message;
  } cases[] = {
      {R"([{"random": {"weighted": "yes"}}])", "lb[0].random.weighted: must be true or false"},
      {R"([{"random": {"weigthed": true}}])", "lb[0].random.weigthed: unknown key"},
      {R"([{"random": 3}])", "lb[0].random: must be an object"},
  };
  for (const Case& c : cases) {
    auto p = lb_internal::MakePolicy(c.list, &runtime::RealClock());
    ASSERT_FALSE(p.ok()) << c.list;
    EXPECT_TRUE(absl::StrContains(p.status().message(), c.message)) << p.status();
  }
}

}  // namespace
}  // namespace meshlib::lb
