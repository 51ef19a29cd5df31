#include <cmath>
#include <functional>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "meshlib/lb/internal/pick_test_util.h"
#include "meshlib/testing/fake_executor.h"

namespace meshlib::lb {
namespace {

using lb_internal::CountPicks;
using lb_internal::MakeEndpoints;

// What an endpoint does with a call: how long it takes, whether it succeeds.
struct Outcome {
  absl::Duration latency;
  bool ok = true;
};

// A client on a manual clock: one call every `interval`, each picked, then
// started and ended on its endpoint's stats after the endpoint's latency, as
// the client stack reports them.
class Simulation {
 public:
  explicit Simulation(const std::string& config, int endpoints) {
    auto p = lb_internal::MakePolicy(config, &ex_);
    EXPECT_TRUE(p.ok()) << p.status();
    policy_ = *std::move(p);
    eps_ = MakeEndpoints(endpoints, policy_->StatsOptions());
    Rebuild();
  }

  std::vector<LbEndpoint>& endpoints() { return eps_; }
  void Rebuild() { picker_ = policy_->Build(eps_); }
  void set_behaviour(std::function<Outcome(int endpoint)> f) { behaviour_ = std::move(f); }

  // Picks per endpoint over `duration`.
  std::vector<int> Run(absl::Duration duration, absl::Duration interval = absl::Microseconds(500)) {
    std::vector<int> count(eps_.size(), 0);
    for (absl::Duration t; t < duration; t += interval) {
      ex_.AdvanceBy(interval);
      int i = picker_->Pick({});
      if (i < 0 || i >= static_cast<int>(eps_.size())) {
        ADD_FAILURE() << "picked " << i;
        continue;
      }
      ++count[i];
      Outcome o = behaviour_(i);
      std::shared_ptr<EndpointStats> stats = eps_[i].stats;
      stats->OnCallStart();
      ex_.RunAfter(o.latency, [this, stats, o] { stats->OnCallEnd(o.latency, o.ok, ex_.Now()); });
    }
    return count;
  }

  // A latency around `base`, +-20%, from a seeded generator.
  absl::Duration Jitter(absl::Duration base) {
    return base * (0.8 + 0.4 * static_cast<double>(jitter_.Below(1000)) / 1000);
  }

  Policy& policy() { return *policy_; }
  testing::FakeExecutor& executor() { return ex_; }

 private:
  testing::FakeExecutor ex_;
  std::unique_ptr<Policy> policy_;
  std::vector<LbEndpoint> eps_;
  std::unique_ptr<Picker> picker_;
  std::function<Outcome(int)> behaviour_ = [](int) { return Outcome{absl::Milliseconds(1)}; };
  FastRandom jitter_{12345};
};

double Share(const std::vector<int>& count, int i) {
  double total = 0;
  for (int n : count) total += n;
  return count[i] / total;
}

TEST(P2cPeakEwmaTest, SlowEndpointLosesTrafficAndWinsItBackAfterDecay) {
  ReseedThreadRandom(1);
  Simulation sim(R"([{"p2c_peak_ewma": {}}])", 10);
  absl::Duration slow_latency = absl::Milliseconds(1);
  sim.set_behaviour([&](int i) {
    return Outcome{sim.Jitter(i == 3 ? slow_latency : absl::Milliseconds(1))};
  });
  std::vector<int> c = sim.Run(absl::Seconds(10));
  EXPECT_NEAR(Share(c, 3), 0.1, 0.03);

  slow_latency = absl::Milliseconds(100);
  c = sim.Run(absl::Seconds(20));
  EXPECT_LT(Share(c, 3), 0.01) << c[3] << " of " << 40000;

  slow_latency = absl::Milliseconds(1);
  // Unpicked, its average decays (time constant 10s) from ~100ms to the
  // others' ~1ms in about 10s x ln(100) after its last sample; then each
  // fast sample pulls it the rest of the way.
  c = sim.Run(absl::Seconds(60));
  EXPECT_GT(Share(c, 3), 0.01);
  c = sim.Run(absl::Seconds(20));
  EXPECT_NEAR(Share(c, 3), 0.1, 0.03);
}

TEST(P2cPeakEwmaTest, ShorterDecayRecoversSooner) {
  ReseedThreadRandom(2);
  Simulation sim(R"([{"p2c_peak_ewma": {"decay": "1s"}}])", 10);
  absl::Duration slow_latency = absl::Milliseconds(100);
  sim.set_behaviour([&](int i) {
    return Outcome{sim.Jitter(i == 3 ? slow_latency : absl::Milliseconds(1))};
  });
  std::vector<int> c = sim.Run(absl::Seconds(5));
  EXPECT_LT(Share(c, 3), 0.02);
  slow_latency = absl::Milliseconds(1);
  sim.Run(absl::Seconds(10));
  c = sim.Run(absl::Seconds(5));
  EXPECT_NEAR(Share(c, 3), 0.1, 0.03);
}

TEST(P2cPeakEwmaTest, FailurePenaltyKeepsAFastFailingEndpointFromAttractingTraffic) {
  auto run = [](const std::string& config) {
    ReseedThreadRandom(3);
    Simulation sim(config, 10);
    sim.set_behaviour([&](int i) {
      // Endpoint 5 answers every call at once with an error (a 503 in 50us).
      if (i == 5) return Outcome{absl::Microseconds(50), /*ok=*/false};
      return Outcome{sim.Jitter(absl::Milliseconds(1))};
    });
    return Share(sim.Run(absl::Seconds(30)), 5);
  };
  // Without the penalty the failing endpoint looks fastest and wins nearly
  // every pair it is in (2/N of all calls).
  EXPECT_GT(run(R"([{"p2c_peak_ewma": {"failure_penalty": "0s"}}])"), 0.15);
  // With the default (1s) it gets almost nothing, far below 1/N.
  EXPECT_LT(run(R"([{"p2c_peak_ewma": {}}])"), 0.01);
}

TEST(P2cPeakEwmaTest, NewEndpointIsProbedOnceThenRampsOnItsMeasuredLatency) {
  ReseedThreadRandom(4);
  Simulation sim(R"([{"p2c_peak_ewma": {}}])", 9);
  bool cold = true;
  sim.set_behaviour([&](int i) {
    if (i == 9 && cold) return Outcome{absl::Milliseconds(300)};  // a cold start
    return Outcome{sim.Jitter(absl::Microseconds(200))};
  });
  sim.Run(absl::Seconds(5));
  // Scale-up: a tenth endpoint, stats made as the client makes them.
  LbEndpoint e;
  e.endpoint.address = "127.0.0.1:7999";
  e.stats = std::make_shared<EndpointStats>(sim.policy().StatsOptions());
  sim.endpoints().push_back(e);
  sim.Rebuild();
  // Its first call goes out at once (cost 0 when never probed); while it is
  // pending the endpoint counts as default_rtt (30ms) x 2, so no second call
  // joins it against peers at 0.2ms.
  std::vector<int> c = sim.Run(absl::Milliseconds(250));
  EXPECT_EQ(c[9], 1);
  cold = false;
  // The 300ms peak parks it until that decays to its peers' 0.2ms:
  // 10s x ln(1500), ~73s; then fast samples pull its average down.
  c = sim.Run(absl::Seconds(60));
  EXPECT_LT(Share(c, 9), 0.001);
  sim.Run(absl::Seconds(60));
  c = sim.Run(absl::Seconds(20));
  EXPECT_NEAR(Share(c, 9), 0.1, 0.03);
}

TEST(P2cPeakEwmaTest, CostIsLatencyTimesCallsInFlightPlusOne) {
  testing::FakeExecutor ex;
  auto p = lb_internal::MakePolicy(R"([{"p2c_peak_ewma": {}}])", &ex);
  ASSERT_TRUE(p.ok()) << p.status();
  auto eps = MakeEndpoints(2, (*p)->StatsOptions());
  for (auto& e : eps) e.stats->OnCallStart();
  eps[0].stats->OnCallEnd(absl::Milliseconds(1), true, ex.Now());
  eps[1].stats->OnCallEnd(absl::Milliseconds(5), true, ex.Now());
  auto picker = (*p)->Build(eps);
  // 1ms x 1 < 5ms x 1.
  EXPECT_EQ(CountPicks(*picker, 2, 100), (std::vector<int>{100, 0}));
  // 1ms x (4 + 1) = 5ms: a tie, the first drawn (at random) wins; then
  // 1ms x (5 + 1) = 6ms > 5ms.
  for (int k = 0; k < 4; ++k) eps[0].stats->OnCallStart();
  std::vector<int> tie = CountPicks(*picker, 2, 100);
  EXPECT_GT(tie[0], 20);
  EXPECT_GT(tie[1], 20);
  eps[0].stats->OnCallStart();
  EXPECT_EQ(CountPicks(*picker, 2, 100), (std::vector<int>{0, 100}));
  // Idle, both decay alike, so the order holds; a sample only on endpoint 1
  // later makes it look fresh and slow.
  ex.AdvanceBy(absl::Seconds(30));
  EXPECT_EQ(CountPicks(*picker, 2, 100), (std::vector<int>{0, 100}));
  eps[1].stats->OnCallStart();
  eps[1].stats->OnCallEnd(absl::Milliseconds(4), true, ex.Now());
  // Endpoint 0: 1ms decayed by e^-3 (~0.05ms) x 7 = 0.35ms < 4ms x 1.
  EXPECT_EQ(CountPicks(*picker, 2, 100), (std::vector<int>{100, 0}));
}

TEST(P2cPeakEwmaTest, DecayIsReadFromTheInjectedClock) {
  testing::FakeExecutor ex;
  auto p = lb_internal::MakePolicy(R"([{"p2c_peak_ewma": {}}])", &ex);
  ASSERT_TRUE(p.ok()) << p.status();
  auto eps = MakeEndpoints(2, (*p)->StatsOptions());
  eps[0].stats->OnCallStart();
  eps[0].stats->OnCallEnd(absl::Milliseconds(100), true, ex.Now());
  eps[1].stats->OnCallStart();  // new: one call out, none back: 30ms x 2
  auto picker = (*p)->Build(eps);
  EXPECT_EQ(CountPicks(*picker, 2, 100), (std::vector<int>{0, 100}));  // 100ms > 60ms
  ex.AdvanceBy(absl::Seconds(10));  // 100ms x e^-1 = 36.8ms < 60ms
  EXPECT_EQ(CountPicks(*picker, 2, 100), (std::vector<int>{100, 0}));
}

TEST(P2cPeakEwmaTest, WeightsChooseTheCandidates) {
  ReseedThreadRandom(5);
  testing::FakeExecutor ex;
  auto p = lb_internal::MakePolicy(R"([{"p2c_peak_ewma": {}}])", &ex);
  ASSERT_TRUE(p.ok());
  // Equal costs: the first candidate, drawn by weight, wins.
  auto eps = MakeEndpoints({1, 2, 7}, (*p)->StatsOptions());
  const int kPicks = 100000;
  std::vector<int> c = CountPicks(*(*p)->Build(eps), 3, kPicks);
  EXPECT_NEAR(c[0] / double(kPicks), 0.1, 0.01);
  EXPECT_NEAR(c[2] / double(kPicks), 0.7, 0.01);
}

TEST(P2cPeakEwmaTest, UnhealthyWeightZeroEmptySingleAndMissingStats) {
  ReseedThreadRandom(6);
  testing::FakeExecutor ex;
  auto p = lb_internal::MakePolicy(R"([{"p2c_peak_ewma": {}}])", &ex);
  ASSERT_TRUE(p.ok());
  Policy& policy = **p;
  auto eps = MakeEndpoints({1, 0, 1, 1}, policy.StatsOptions());
  eps[2].healthy = false;
  std::vector<int> c = CountPicks(*policy.Build(eps), 4, 10000);
  EXPECT_EQ(c[1], 0);
  EXPECT_EQ(c[2], 0);
  EXPECT_GT(c[0], 3000);
  EXPECT_GT(c[3], 3000);
  for (auto& e : eps) e.healthy = false;
  c = CountPicks(*policy.Build(eps), 4, 10000);
  EXPECT_EQ(c[1], 0);
  EXPECT_GT(c[2], 2000);
  EXPECT_EQ(policy.Build({})->Pick({}), kNoEndpoint);
  auto one = MakeEndpoints(1, policy.StatsOptions());
  EXPECT_EQ(CountPicks(*policy.Build(one), 1, 10), std::vector<int>{10});
  std::vector<LbEndpoint> bare(3);  // no stats: each costs default_rtt
  c = CountPicks(*policy.Build(bare), 3, 3000);
  for (int n : c) EXPECT_GT(n, 800);
}

TEST(P2cPeakEwmaTest, StatsOptionsCarryTheConfigAndBuildSetsThePenalty) {
  testing::FakeExecutor ex;
  auto d = lb_internal::MakePolicy(R"([{"p2c_peak_ewma": {}}])", &ex);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d)->Describe(), "p2c_peak_ewma(decay=10s, default_rtt=30ms, failure_penalty=1s)");
  EndpointStatsOptions o = (*d)->StatsOptions();
  EXPECT_EQ(o.decay, absl::Seconds(10));
  EXPECT_EQ(o.initial, absl::Milliseconds(30));
  EXPECT_EQ(o.failure_penalty, absl::Seconds(1));

  auto p = lb_internal::MakePolicy(
      R"([{"p2c_peak_ewma": {"decay": "5s", "default_rtt": "2ms", "failure_penalty": "250ms"}}])",
      &ex);
  ASSERT_TRUE(p.ok()) << p.status();
  o = (*p)->StatsOptions();
  EXPECT_EQ(o.decay, absl::Seconds(5));
  EXPECT_EQ(o.initial, absl::Milliseconds(2));
  EXPECT_EQ(o.failure_penalty, absl::Milliseconds(250));
  // Stats made before (with the defaults: no penalty) get it at Build.
  auto eps = MakeEndpoints(2);
  EXPECT_EQ(eps[0].stats->failure_penalty(), absl::ZeroDuration());
  (*p)->Build(eps);
  EXPECT_EQ(eps[0].stats->failure_penalty(), absl::Milliseconds(250));
  EXPECT_EQ(eps[1].stats->failure_penalty(), absl::Milliseconds(250));
}

TEST(P2cPeakEwmaTest, EndpointStatsFromOptions) {
  EndpointStatsOptions o;
  o.decay = absl::Seconds(2);
  o.initial = absl::Milliseconds(5);
  o.failure_penalty = absl::Milliseconds(100);
  EndpointStats s(o);
  absl::Time t = absl::FromUnixSeconds(1000);
  EXPECT_DOUBLE_EQ(s.PeakEwmaNanos(t), 5e6);  // nothing known: no decay
  EXPECT_EQ(s.last_update_unix_nanos(), 0);
  EXPECT_DOUBLE_EQ(s.decay_nanos(), 2e9);
  EXPECT_EQ(s.failure_penalty(), absl::Milliseconds(100));
  s.OnCallStart();
  s.OnCallEnd(absl::Microseconds(10), /*success=*/false, t);
  EXPECT_DOUBLE_EQ(s.ewma_nanos(), 100e6);
  EXPECT_EQ(s.last_update_unix_nanos(), absl::ToUnixNanos(t));
  EXPECT_NEAR(s.PeakEwmaNanos(t + absl::Seconds(2)), 100e6 * std::exp(-1.0), 1);
}

TEST(P2cPeakEwmaTest, ConfigErrorsNameTheField) {
  struct Case {
    const char* list;
    const char* message;
  } cases[] = {
      {R"([{"p2c_peak_ewma": {"decay": "soon"}}])",
       "lb[0].p2c_peak_ewma.decay: \"soon\" is not a duration"},
      {R"([{"p2c_peak_ewma": {"decay": 10}}])", "lb[0].p2c_peak_ewma.decay: must be a duration"},
      {R"([{"p2c_peak_ewma": {"decay": "0s"}}])",
       "lb[0].p2c_peak_ewma.decay: must be between 1ms and 1h"},
      {R"([{"p2c_peak_ewma": {"default_rtt": "-1ms"}}])",
       "lb[0].p2c_peak_ewma.default_rtt: must be between 1us and 1m"},
      {R"([{"p2c_peak_ewma": {"failure_penalty": "2h"}}])",
       "lb[0].p2c_peak_ewma.failure_penalty: must be between 0 and 1h"},
      {R"([{"p2c_peak_ewma": {"decay_time": "10s"}}])",
       "lb[0].p2c_peak_ewma.decay_time: unknown key"},
  };
  for (const Case& c : cases) {
    auto p = lb_internal::MakePolicy(c.list, &runtime::RealClock());
    ASSERT_FALSE(p.ok()) << c.list;
    EXPECT_TRUE(absl::StrContains(p.status().message(), c.message)) << p.status();
  }
}

}  // namespace
}  // namespace meshlib::lb
