#include "meshlib/lb/internal/weights.h"

#include <set>

#include "gtest/gtest.h"

namespace meshlib::lb_internal {
namespace {

std::vector<lb::LbEndpoint> Endpoints(std::vector<uint32_t> weights, std::vector<bool> healthy) {
  std::vector<lb::LbEndpoint> v(weights.size());
  for (size_t i = 0; i < v.size(); ++i) {
    v[i].endpoint.weight = weights[i];
    v[i].healthy = healthy[i];
  }
  return v;
}

TEST(SelectUsableTest, HealthyPositiveWeightsFirst) {
  Usable u = SelectUsable(Endpoints({3, 0, 2, 5}, {true, true, true, false}));
  EXPECT_EQ(u.indices, (std::vector<int>{0, 2}));
  EXPECT_EQ(u.weights, (std::vector<uint32_t>{3, 2}));
  EXPECT_FALSE(u.equal_weights);
}

TEST(SelectUsableTest, WeightZeroOnlyWhenNothingElseAndHealthBeforeWeight) {
  // A healthy weight-0 endpoint is preferred to an ejected weighted one.
  Usable u = SelectUsable(Endpoints({0, 0, 4}, {true, true, false}));
  EXPECT_EQ(u.indices, (std::vector<int>{0, 1}));
  EXPECT_EQ(u.weights, (std::vector<uint32_t>{1, 1}));
  EXPECT_TRUE(u.equal_weights);
}

TEST(SelectUsableTest, NoneHealthyUsesAllAndEmptyIsEmpty) {
  Usable u = SelectUsable(Endpoints({1, 2, 0}, {false, false, false}));
  EXPECT_EQ(u.indices, (std::vector<int>{0, 1}));
  EXPECT_TRUE(SelectUsable({}).indices.empty());
}

TEST(AliasTableTest, ProbabilitiesAreTheWeightsExactly) {
  const std::vector<std::vector<uint32_t>> cases = {
      {1, 2, 7}, {5}, {1, 1, 1, 1}, {1, 4000000000u, 3}, {0, 3, 0, 1}, {7, 1, 1, 1, 1, 1, 1, 1}};
  for (const auto& w : cases) {
    AliasTable t(w);
    double total = 0;
    for (uint32_t x : w) total += x;
    for (uint32_t i = 0; i < w.size(); ++i) {
      EXPECT_NEAR(t.ProbabilityForTesting(i), w[i] / total, 1e-9) << "weight index " << i;
    }
  }
}

TEST(AliasTableTest, SamplesFollowTheWeights) {
  AliasTable t({1, 2, 7});
  lb::FastRandom r(42);
  std::vector<int> count(3);
  const int kDraws = 1000000;
  for (int k = 0; k < kDraws; ++k) ++count[t.Sample(r)];
  EXPECT_NEAR(count[0] / double(kDraws), 0.1, 0.002);
  EXPECT_NEAR(count[1] / double(kDraws), 0.2, 0.002);
  EXPECT_NEAR(count[2] / double(kDraws), 0.7, 0.002);
}

TEST(DistinctPairTest, DistinctAndUniform) {
  lb::FastRandom r(7);
  std::vector<int> count(5);
  std::set<std::pair<uint32_t, uint32_t>> pairs;
  for (int k = 0; k < 100000; ++k) {
    auto [a, b] = DistinctPair(r, 5);
    ASSERT_NE(a, b);
    ASSERT_LT(a, 5u);
    ASSERT_LT(b, 5u);
    ++count[a];
    ++count[b];
    pairs.insert({a, b});
  }
  EXPECT_EQ(pairs.size(), 20u);  // every ordered pair occurs
  for (int c : count) EXPECT_NEAR(c / 200000.0, 0.2, 0.005);
  auto [a, b] = DistinctPair(r, 2);
  EXPECT_EQ(a + b, 1u);
}

}  // namespace
}  // namespace meshlib::lb_internal
