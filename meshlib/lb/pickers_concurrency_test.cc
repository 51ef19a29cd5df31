// Pickers are read by many request threads at once while those threads
// report calls on the same EndpointStats and the control thread builds the
// next picker. Run under --config=tsan.
#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "meshlib/lb/internal/pick_test_util.h"

namespace meshlib::lb {
namespace {

constexpr int kThreads = 4;
constexpr int kPicksPerThread = 30000;

// Weights of the 8 endpoints; 2 and 5 are unhealthy, so the healthy ones
// sum to 1 + 2 + 1 + 3 + 4 + 1 = 12.
const std::vector<uint32_t> kWeights = {1, 2, 9, 1, 3, 9, 4, 1};

std::vector<LbEndpoint> Endpoints(const Policy& policy) {
  auto eps = lb_internal::MakeEndpoints(kWeights, policy.StatsOptions());
  eps[2].healthy = eps[5].healthy = false;
  return eps;
}

// Every thread picks and reports its calls on the picked endpoint's stats
// while a control thread keeps rebuilding. Returns the picks per endpoint.
std::vector<int64_t> Hammer(Policy& policy, std::vector<LbEndpoint>& eps, const Picker& picker) {
  std::vector<std::atomic<int64_t>> count(eps.size());
  std::atomic<bool> stop{false};
  std::thread control([&] {
    while (!stop.load()) {
      auto next = policy.Build(eps);
      (void)next->Pick({});
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      runtime::Clock& clock = runtime::RealClock();
      for (int k = 0; k < kPicksPerThread; ++k) {
        int i = picker.Pick({});
        if (i < 0 || i >= static_cast<int>(eps.size())) {
          ADD_FAILURE() << "picked " << i;
          return;
        }
        count[i].fetch_add(1, std::memory_order_relaxed);
        EndpointStats& s = *eps[i].stats;
        s.OnCallStart();
        // Hold a few calls open so in_flight varies under the pickers.
        if (k % 7 != 0) {
          s.OnCallEnd(absl::Microseconds(100 + (k + t) % 900), (k % 50) != 0, clock.Now());
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  stop.store(true);
  control.join();
  std::vector<int64_t> out;
  for (auto& c : count) out.push_back(c.load());
  return out;
}

class PickersConcurrencyTest : public ::testing::TestWithParam<const char*> {};

TEST_P(PickersConcurrencyTest, ManyThreadsPickOnlyHealthyEndpoints) {
  auto p = lb_internal::MakePolicy(GetParam(), &runtime::RealClock());
  ASSERT_TRUE(p.ok()) << p.status();
  auto eps = Endpoints(**p);
  auto picker = (*p)->Build(eps);
  std::vector<int64_t> c = Hammer(**p, eps, *picker);
  int64_t total = 0;
  for (int64_t n : c) total += n;
  EXPECT_EQ(total, int64_t{kThreads} * kPicksPerThread);
  EXPECT_EQ(c[2], 0);
  EXPECT_EQ(c[5], 0);
  for (size_t i = 0; i < c.size(); ++i) {
    if (i != 2 && i != 5) {
      EXPECT_GT(c[i], 0) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Policies, PickersConcurrencyTest,
    ::testing::Values(R"([{"weighted_round_robin": {}}])", R"([{"random": {}}])",
                      R"([{"random": {"weighted": false}}])", R"([{"least_request": {}}])",
                      R"([{"least_request": {"choice_count": 4, "active_request_bias": 0.5}}])",
                      R"([{"p2c_peak_ewma": {}}])"));

TEST(WeightedRoundRobinConcurrencyTest, SharedCounterLosesNoTurn) {
  // 4 x 30000 picks is 10000 periods of 12: whatever the interleaving, the
  // atomic counter hands out every slot exactly once.
  auto p = lb_internal::MakePolicy(R"([{"weighted_round_robin": {}}])", &runtime::RealClock());
  ASSERT_TRUE(p.ok());
  auto eps = Endpoints(**p);
  auto picker = (*p)->Build(eps);
  std::vector<int64_t> c = Hammer(**p, eps, *picker);
  const int64_t periods = int64_t{kThreads} * kPicksPerThread / 12;
  EXPECT_EQ(c, (std::vector<int64_t>{periods * 1, periods * 2, 0, periods * 1, periods * 3, 0,
                                     periods * 4, periods * 1}));
}

}  // namespace
}  // namespace meshlib::lb
