#include <cmath>
#include <map>
#include <numeric>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "meshlib/lb/internal/pick_test_util.h"

namespace meshlib::lb {
namespace {

using lb_internal::CountPicks;
using lb_internal::MakeEndpoints;

std::unique_ptr<Policy> Wrr() {
  auto p = lb_internal::MakePolicy(R"([{"weighted_round_robin": {}}])", &runtime::RealClock());
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

std::vector<int> Sequence(const Picker& picker, int picks) {
  std::vector<int> v;
  for (int k = 0; k < picks; ++k) v.push_back(picker.Pick({}));
  return v;
}

// Largest |picks of e in a window of m - m * share(e)| over every window
// length m <= max_m and every start.
double MaxWindowError(const std::vector<int>& seq, const std::vector<double>& share, int max_m) {
  double worst = 0;
  for (int m = 1; m <= max_m; ++m) {
    for (size_t s = 0; s + m <= seq.size(); ++s) {
      std::vector<int> c(share.size(), 0);
      for (int k = 0; k < m; ++k) ++c[seq[s + k]];
      for (size_t e = 0; e < share.size(); ++e) {
        worst = std::max(worst, std::abs(c[e] - m * share[e]));
      }
    }
  }
  return worst;
}

TEST(WeightedRoundRobinTest, WeightsHoldExactlyInEveryWindowOfTheirSum) {
  auto eps = MakeEndpoints({1, 2, 7});
  auto picker = Wrr()->Build(eps);
  std::vector<int> seq = Sequence(*picker, 10000);
  std::vector<int> total(3, 0);
  for (int i : seq) ++total[i];
  EXPECT_EQ(total, (std::vector<int>{1000, 2000, 7000}));
  // Every 10 consecutive picks, wherever they start.
  for (size_t s = 0; s + 10 <= seq.size(); ++s) {
    std::vector<int> c(3, 0);
    for (int k = 0; k < 10; ++k) ++c[seq[s + k]];
    ASSERT_EQ(c, (std::vector<int>{1, 2, 7})) << "window at " << s;
  }
}

TEST(WeightedRoundRobinTest, HeavyEndpointIsInterleavedNotBunched) {
  auto eps = MakeEndpoints({1, 2, 7});
  std::vector<int> seq = Sequence(*Wrr()->Build(eps), 1000);
  // In any window of any length each endpoint is within 1.5 picks of its
  // share (a bunched 7-2-1 order is off by 2.1 in a window of 7).
  EXPECT_LT(MaxWindowError(seq, {0.1, 0.2, 0.7}, 10), 1.5);
  // And the weight-1 endpoint comes exactly every 10th pick.
  int last = -1;
  for (int k = 0; k < static_cast<int>(seq.size()); ++k) {
    if (seq[k] != 0) continue;
    if (last >= 0) {
      ASSERT_EQ(k - last, 10);
    }
    last = k;
  }
}

TEST(WeightedRoundRobinTest, CommonFactorsDoNotLengthenThePeriod) {
  auto eps = MakeEndpoints({300, 600, 2100});
  std::vector<int> seq = Sequence(*Wrr()->Build(eps), 200);
  for (size_t s = 0; s + 10 <= seq.size(); ++s) {
    std::vector<int> c(3, 0);
    for (int k = 0; k < 10; ++k) ++c[seq[s + k]];
    ASSERT_EQ(c, (std::vector<int>{1, 2, 7})) << "window at " << s;
  }
}

TEST(WeightedRoundRobinTest, EqualWeightsArePlainRoundRobin) {
  auto eps = MakeEndpoints({5, 5, 5, 5});
  std::vector<int> seq = Sequence(*Wrr()->Build(eps), 40);
  for (size_t k = 1; k < seq.size(); ++k) EXPECT_EQ(seq[k], (seq[k - 1] + 1) % 4);
}

TEST(WeightedRoundRobinTest, HugeWeightSumsAreCappedWithinTheDocumentedError) {
  // Sum 1'001'003: above the 65536-slot cap; the scaled schedule keeps the
  // tiny weights at one slot each.
  std::vector<uint32_t> w = {1, 999, 1000000, 3};
  auto eps = MakeEndpoints(w);
  const int kPicks = 4 * 1000 * 1000;
  std::vector<int> c = CountPicks(*Wrr()->Build(eps), eps.size(), kPicks);
  double sum = std::accumulate(w.begin(), w.end(), 0.0);
  for (size_t i = 0; i < w.size(); ++i) {
    double due = w[i] / sum;
    EXPECT_GT(c[i], 0) << i;
    // One slot of the period (~1/65536) plus 1/63 of its due share.
    EXPECT_NEAR(c[i] / double(kPicks), due, 1.0 / 65000 + due / 63) << i;
  }
}

TEST(WeightedRoundRobinTest, ManyEndpointsWithVariedWeights) {
  // 10k endpoints, weights 1..100: the sum, 505000, is under the cap
  // (64 slots per endpoint: 640000), so shares are exact over whole periods.
  std::vector<uint32_t> w;
  for (int i = 0; i < 10000; ++i) w.push_back(1 + i % 100);
  auto eps = MakeEndpoints(w);
  const uint64_t period = std::accumulate(w.begin(), w.end(), uint64_t{0});
  std::vector<int> c = CountPicks(*Wrr()->Build(eps), eps.size(), 2 * period);
  for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(c[i], 2 * static_cast<int>(w[i])) << i;
}

TEST(WeightedRoundRobinTest, ManyEndpointsAboveTheCap) {
  // Weights 1..1000 over 10k endpoints: sum ~5M, scaled to ~640000 slots.
  std::vector<uint32_t> w;
  for (int i = 0; i < 10000; ++i) w.push_back(1 + (i * 7919) % 1000);
  auto eps = MakeEndpoints(w);
  double sum = std::accumulate(w.begin(), w.end(), 0.0);
  const int kPicks = 20 * 640000;
  std::vector<int> c = CountPicks(*Wrr()->Build(eps), eps.size(), kPicks);
  for (size_t i = 0; i < w.size(); ++i) {
    double due = w[i] / sum;
    ASSERT_NEAR(c[i] / double(kPicks), due, 1.0 / 630000 + due / 63) << i;
  }
}

TEST(WeightedRoundRobinTest, WeightZeroOnlyWhenNothingElse) {
  auto eps = MakeEndpoints({0, 3, 1});
  std::vector<int> c = CountPicks(*Wrr()->Build(eps), 3, 400);
  EXPECT_EQ(c, (std::vector<int>{0, 300, 100}));
  eps[1].healthy = eps[2].healthy = false;  // the weight-0 one is all that is left
  c = CountPicks(*Wrr()->Build(eps), 3, 400);
  EXPECT_EQ(c, (std::vector<int>{400, 0, 0}));
  auto zeros = MakeEndpoints({0, 0});
  c = CountPicks(*Wrr()->Build(zeros), 2, 400);
  EXPECT_EQ(c, (std::vector<int>{200, 200}));
}

TEST(WeightedRoundRobinTest, UnhealthySkippedAllUsedWhenNoneHealthyEmptyGivesNoEndpoint) {
  auto policy = Wrr();
  auto eps = MakeEndpoints({1, 2, 7});
  eps[2].healthy = false;
  std::vector<int> c = CountPicks(*policy->Build(eps), 3, 300);
  EXPECT_EQ(c, (std::vector<int>{100, 200, 0}));
  for (auto& e : eps) e.healthy = false;
  c = CountPicks(*policy->Build(eps), 3, 1000);
  EXPECT_EQ(c, (std::vector<int>{100, 200, 700}));
  EXPECT_EQ(policy->Build({})->Pick({}), kNoEndpoint);
  auto one = MakeEndpoints(std::vector<uint32_t>{9});
  EXPECT_EQ(CountPicks(*policy->Build(one), 1, 10), std::vector<int>{10});
}

TEST(WeightedRoundRobinTest, ConfigErrorsNameTheField) {
  auto p = lb_internal::MakePolicy(R"([{"weighted_round_robin": {"slow_start": 1}}])",
                                   &runtime::RealClock());
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::StrContains(p.status().message(), "lb[0].weighted_round_robin.slow_start"))
      << p.status();
  EXPECT_EQ(Wrr()->StatsOptions().failure_penalty, absl::ZeroDuration());
}

}  // namespace
}  // namespace meshlib::lb
