#include "meshlib/lb/locality/locality.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "meshlib/lb/aperture/aperture.h"
#include "meshlib/lb/policy.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;
using Level = LocalityPlan::Level;
using ZoneMode = LocalityPlan::ZoneMode;

// `n` endpoints of one priority and zone, all healthy, appended to `v`.
void Add(std::vector<LbEndpoint>& v, int n, uint32_t priority, const std::string& zone = "") {
  for (int i = 0; i < n; ++i) {
    LbEndpoint e;
    e.endpoint.address = "10.0." + std::to_string(v.size() / 250) + "." +
                         std::to_string(v.size() % 250) + ":8080";
    e.endpoint.priority = priority;
    e.endpoint.zone = zone;
    e.stats = std::make_shared<EndpointStats>();
    v.push_back(std::move(e));
  }
}

// Marks endpoints [first, first + n) unhealthy.
void Eject(std::vector<LbEndpoint>& v, int first, int n) {
  for (int i = first; i < first + n; ++i) v[i].healthy = false;
}

std::unique_ptr<Policy> Make(const json& config, const std::string& local_zone = "") {
  auto choice = PolicyRegistry::Global().Select(json::array({{{"locality", config}}}), "lb");
  EXPECT_TRUE(choice.ok()) << choice.status();
  PolicyContext ctx;
  ctx.clock = &runtime::RealClock();
  ctx.local_zone = local_zone;
  auto p = choice->factory->Create(choice->config, choice->path, ctx);
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

// Picks with hash keys 0 .. n-1: h % 100 chooses the level and
// (h / 100) % 10000 the zone, so n = 100 * k gives every level exactly
// k * load picks (and n = 10^6 every zone draw exactly 100 times).
std::map<int, int> Sweep(const Picker& picker, int n) {
  std::map<int, int> count;
  for (int h = 0; h < n; ++h) {
    PickArgs a;
    a.hash = static_cast<uint64_t>(h);
    a.has_hash = true;
    ++count[picker.Pick(a)];
  }
  return count;
}

int Sum(const std::map<int, int>& count, int first, int n) {
  int s = 0;
  for (int i = first; i < first + n; ++i) {
    auto it = count.find(i);
    s += it == count.end() ? 0 : it->second;
  }
  return s;
}

TEST(LocalityTest, AllTrafficToPriorityZeroWhileItsHealthCoversIt) {
  // 8 of 10 healthy: 140 * 8 / 10 = 112, capped at 100; still all of it.
  for (int ejected : {0, 1, 2}) {
    std::vector<LbEndpoint> eps;
    Add(eps, 10, 0);
    Add(eps, 10, 1);
    Eject(eps, 0, ejected);
    auto count = Sweep(*Make(json::object())->Build(eps), 100000);
    EXPECT_EQ(Sum(count, 0, 10), 100000) << ejected << " ejected";
    EXPECT_EQ(Sum(count, 10, 10), 0);
    for (int i = 0; i < ejected; ++i) EXPECT_EQ(count.count(i), 0u) << "ejected endpoint " << i;
    for (int i = ejected; i < 10; ++i) EXPECT_NEAR(count[i], 100000 / (10 - ejected), 1);
  }
}

TEST(LocalityTest, SpillsToTheNextPriorityByEnvoysPriorityLoad) {
  struct Case {
    int healthy0;
    uint32_t health0, load0, load1;
  } cases[] = {
      {10, 100, 100, 0}, {8, 100, 100, 0}, {7, 98, 98, 2},  {6, 84, 84, 16},
      {5, 70, 70, 30},   {4, 56, 56, 44},  {1, 14, 14, 86}, {0, 0, 0, 100},
  };
  auto policy = Make(json::object());
  for (const Case& c : cases) {
    std::vector<LbEndpoint> eps;
    Add(eps, 10, 0);
    Add(eps, 10, 1);
    Eject(eps, 0, 10 - c.healthy0);
    LocalityPlan plan = PlanLocality(eps, LocalityOptions(), "");
    ASSERT_EQ(plan.levels.size(), 2u);
    EXPECT_EQ(plan.levels[0].health, c.health0) << c.healthy0;
    EXPECT_EQ(plan.levels[0].load, c.load0) << c.healthy0;
    EXPECT_EQ(plan.levels[1].load, c.load1) << c.healthy0;
    // Priority 1 is fully healthy, so the levels together cover the load:
    // no panic, however few of priority 0 are left.
    EXPECT_FALSE(plan.levels[0].panic);
    EXPECT_FALSE(plan.levels[1].panic);

    auto count = Sweep(*policy->Build(eps), 100000);
    EXPECT_EQ(Sum(count, 0, 10), static_cast<int>(c.load0) * 1000) << c.healthy0;
    EXPECT_EQ(Sum(count, 10, 10), static_cast<int>(c.load1) * 1000) << c.healthy0;
    for (int i = 0; i < 10 - c.healthy0; ++i) EXPECT_EQ(count.count(i), 0u);
    std::printf("priority 0 healthy %2d/10 -> traffic %3u%% / %3u%%\n", c.healthy0, c.load0,
                c.load1);
  }
}

TEST(LocalityTest, OverprovisioningFactorAndLaterLevels) {
  // Factor 1.0: any ejection spills at once, in proportion.
  std::vector<LbEndpoint> eps;
  Add(eps, 10, 0);
  Add(eps, 10, 3);  // priority values only order the levels
  Add(eps, 10, 7);
  Eject(eps, 0, 3);   // level 0: 7/10
  Eject(eps, 10, 8);  // level 1: 2/10
  LocalityOptions o;
  o.overprovisioning_factor = 1.0;
  LocalityPlan plan = PlanLocality(eps, o, "");
  ASSERT_EQ(plan.levels.size(), 3u);
  EXPECT_EQ(plan.levels[1].priority, 3u);
  EXPECT_EQ(plan.levels[0].load, 70u);
  EXPECT_EQ(plan.levels[1].load, 20u);
  EXPECT_EQ(plan.levels[2].load, 10u);
  // Default 1.4: 98 / 2 / 0 (level 1's health 28 is more than the 2 left).
  plan = PlanLocality(eps, LocalityOptions(), "");
  EXPECT_EQ(plan.levels[0].load, 98u);
  EXPECT_EQ(plan.levels[1].load, 2u);
  EXPECT_EQ(plan.levels[2].load, 0u);
}

TEST(LocalityTest, PanicSpreadsOverAllEndpointsOfTheLevel) {
  auto policy = Make(json::object());
  {
    // One level, 4 of 10 healthy (40% < 50%): every endpoint, ejected or
    // not, gets the same share.
    std::vector<LbEndpoint> eps;
    Add(eps, 10, 0);
    Eject(eps, 0, 6);
    LocalityPlan plan = PlanLocality(eps, LocalityOptions(), "");
    EXPECT_TRUE(plan.levels[0].panic);
    auto count = Sweep(*policy->Build(eps), 100000);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(count[i], 10000) << i;
  }
  {
    // 5 of 10 (50%, not below): only the healthy ones.
    std::vector<LbEndpoint> eps;
    Add(eps, 10, 0);
    Eject(eps, 0, 5);
    EXPECT_FALSE(PlanLocality(eps, LocalityOptions(), "").levels[0].panic);
    auto count = Sweep(*policy->Build(eps), 100000);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(count.count(i), 0u);
    for (int i = 5; i < 10; ++i) EXPECT_EQ(count[i], 20000);
  }
  {
    // Two levels, 1/10 and 6/10 healthy: health 14 and 84, normalized 98;
    // loads 14 + 1 (rounding) and 85. Level 0 is in panic (10% < 50%), so
    // its 15% goes to all 10; level 1 (60%) serves from its 6 healthy.
    std::vector<LbEndpoint> eps;
    Add(eps, 10, 0);
    Add(eps, 10, 1);
    Eject(eps, 0, 9);
    Eject(eps, 10, 4);
    LocalityPlan plan = PlanLocality(eps, LocalityOptions(), "");
    EXPECT_EQ(plan.levels[0].load, 15u);
    EXPECT_EQ(plan.levels[1].load, 85u);
    EXPECT_TRUE(plan.levels[0].panic);
    EXPECT_FALSE(plan.levels[1].panic);
    auto count = Sweep(*policy->Build(eps), 100000);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(count[i], 1500) << i;
    for (int i = 10; i < 14; ++i) EXPECT_EQ(count.count(i), 0u) << i;
    for (int i = 14; i < 20; ++i) EXPECT_NEAR(count[i], 85000 / 6, 1) << i;
  }
  {
    // Every level in panic: load by endpoint counts (10 and 5 of 15:
    // 66 + 1 and 33), each level over all of its endpoints.
    std::vector<LbEndpoint> eps;
    Add(eps, 10, 0);
    Add(eps, 5, 1);
    Eject(eps, 0, 7);
    Eject(eps, 10, 4);
    LocalityPlan plan = PlanLocality(eps, LocalityOptions(), "");
    EXPECT_EQ(plan.levels[0].load, 67u);
    EXPECT_EQ(plan.levels[1].load, 33u);
    auto count = Sweep(*policy->Build(eps), 100000);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(count[i], 6700) << i;
    for (int i = 10; i < 15; ++i) EXPECT_EQ(count[i], 6600) << i;
  }
}

TEST(LocalityTest, PanicThresholdZeroTurnsPanicOff) {
  auto policy = Make(json{{"panic_threshold", 0}});
  std::vector<LbEndpoint> eps;
  Add(eps, 10, 0);
  Eject(eps, 0, 10);
  EXPECT_EQ(policy->Build(eps)->Pick({}), kNoEndpoint);
  // One healthy left: it gets everything (a concentration panic mode
  // would have prevented).
  eps[3].healthy = true;
  auto count = Sweep(*policy->Build(eps), 1000);
  EXPECT_EQ(count[3], 1000);
  // 1 of 200 healthy: health rounds to 0, yet the healthy one serves.
  std::vector<LbEndpoint> big;
  Add(big, 200, 0);
  Eject(big, 1, 199);
  count = Sweep(*policy->Build(big), 1000);
  EXPECT_EQ(count[0], 1000);
  // With the default threshold the same set is in panic: all 200.
  count = Sweep(*Make(json::object())->Build(big), 100000);
  EXPECT_EQ(count.size(), 200u);
  EXPECT_EQ(count[0], 500);
}

// What the header promises about outlier ejection: whatever is ejected, no
// endpoint gets more than 1 / (total * threshold) of a level's traffic.
TEST(LocalityTest, EjectionCannotConcentrateTrafficBeyondThePanicBound) {
  for (double threshold : {50.0, 30.0}) {
    auto policy = Make(json{{"panic_threshold", threshold}});
    const double bound = 1.0 / (10 * threshold / 100);
    std::printf("panic_threshold %.0f: max share per endpoint by ejected count:", threshold);
    for (int ejected = 0; ejected <= 10; ++ejected) {
      std::vector<LbEndpoint> eps;
      Add(eps, 10, 0);
      Eject(eps, 0, ejected);
      // 100 * lcm(1..10) picks: every split of a level is exact.
      auto count = Sweep(*policy->Build(eps), 252000);
      int max = 0;
      for (const auto& [i, n] : count) max = std::max(max, n);
      const double share = max / 252000.0;
      std::printf(" %d:%.3f", ejected, share);
      EXPECT_LE(share, bound + 1e-9) << ejected << " ejected";
    }
    std::printf(" (bound %.3f)\n", bound);
  }
  // Two levels of 10, any ejections in either: at most
  // max(1.4, 100 / 50) / 10 of all traffic per endpoint, plus 1% rounding.
  {
    auto policy = Make(json::object());
    double worst = 0;
    for (int e0 = 0; e0 <= 10; ++e0) {
      for (int e1 = 0; e1 <= 10; ++e1) {
        std::vector<LbEndpoint> eps;
        Add(eps, 10, 0);
        Add(eps, 10, 1);
        Eject(eps, 0, e0);
        Eject(eps, 10, e1);
        auto count = Sweep(*policy->Build(eps), 252000);
        for (const auto& [i, n] : count) {
          const double share = n / 252000.0;
          worst = std::max(worst, share);
          EXPECT_LE(share, 0.2 + 0.01 + 1e-9) << e0 << "/" << e1 << " ejected, endpoint " << i;
        }
      }
    }
    std::printf("two levels of 10, every ejection pattern: max share per endpoint %.4f\n", worst);
  }
  // The bound is the panic threshold's doing: without it, 9 ejected leave
  // one endpoint with everything.
  std::vector<LbEndpoint> eps;
  Add(eps, 10, 0);
  Eject(eps, 0, 9);
  auto count = Sweep(*Make(json{{"panic_threshold", 0}})->Build(eps), 1000);
  EXPECT_EQ(count[9], 1000);
}

// Three zones of four endpoints; the client is in zone "a".
std::vector<LbEndpoint> ThreeZones() {
  std::vector<LbEndpoint> eps;
  Add(eps, 4, 0, "a");  // 0-3
  Add(eps, 4, 0, "b");  // 4-7
  Add(eps, 4, 0, "c");  // 8-11
  return eps;
}

TEST(LocalityTest, ZoneAwareKeepsTrafficInTheLocalZone) {
  auto eps = ThreeZones();
  auto policy = Make(json::object(), "a");
  LocalityPlan plan = PlanLocality(eps, LocalityOptions(), "a");
  EXPECT_EQ(plan.levels[0].zone_mode, ZoneMode::kLocal);
  auto count = Sweep(*policy->Build(eps), 100000);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(count[i], 25000);
  EXPECT_EQ(Sum(count, 4, 8), 0);
  // The config's local_zone overrides the client's.
  count = Sweep(*Make(json{{"local_zone", "c"}}, "a")->Build(eps), 100000);
  EXPECT_EQ(Sum(count, 8, 4), 100000);
  // zone_aware false: every zone.
  count = Sweep(*Make(json{{"zone_aware", false}}, "a")->Build(eps), 120000);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(count[i], 10000);
  // No local zone known: every zone.
  count = Sweep(*Make(json::object())->Build(eps), 120000);
  EXPECT_EQ(count.size(), 12u);
}

TEST(LocalityTest, ZoneAwareLeavesTheZoneWhenItHasNoHealthyEndpoint) {
  auto eps = ThreeZones();
  Eject(eps, 0, 4);
  auto count = Sweep(*Make(json::object(), "a")->Build(eps), 80000);
  EXPECT_EQ(Sum(count, 0, 4), 0);
  for (int i = 4; i < 12; ++i) EXPECT_EQ(count[i], 10000) << i;
}

TEST(LocalityTest, ZoneAwareSpillsJustEnoughToKeepEndpointsEven) {
  // One of zone a's four is ejected: a has 3 of the 11 healthy (2727 in
  // 1/10000) for a third of the clients (3333), so 2727 * 10000 / 3333 =
  // 8181 of a's traffic stays local; b and c have residual capacity 3636 -
  // 3333 = 303 each and split the rest.
  auto eps = ThreeZones();
  Eject(eps, 0, 1);
  LocalityPlan plan = PlanLocality(eps, LocalityOptions(), "a");
  const Level& level = plan.levels[0];
  EXPECT_EQ(level.zone_mode, ZoneMode::kResidual);
  EXPECT_EQ(level.local_share, 8181u);
  ASSERT_EQ(level.residual.size(), 2u);
  EXPECT_EQ(level.residual[0], (std::pair<std::string, uint32_t>("b", 303)));
  EXPECT_EQ(level.residual[1], (std::pair<std::string, uint32_t>("c", 303)));
  // Clients in b and c: their zones have spare capacity, so they stay home.
  EXPECT_EQ(PlanLocality(eps, LocalityOptions(), "b").levels[0].zone_mode, ZoneMode::kLocal);

  // The fleet: a third of the traffic from clients in each zone.
  constexpr int kPicks = 1000000;
  std::map<int, int> total;
  for (const char* zone : {"a", "b", "c"}) {
    auto count = Sweep(*Make(json::object(), zone)->Build(eps), kPicks);
    if (std::string(zone) == "a") {
      EXPECT_EQ(Sum(count, 0, 4), 818100);  // exactly 8181 of 10000
      EXPECT_NEAR(Sum(count, 4, 4), Sum(count, 8, 4), 200);
    }
    for (const auto& [i, n] : count) total[i] += n;
  }
  EXPECT_EQ(total.count(0), 0u);
  int max = 0, min = kPicks * 3;
  for (int i = 1; i < 12; ++i) {
    max = std::max(max, total[i]);
    min = std::min(min, total[i]);
  }
  const double mean = 3.0 * kPicks / 11;
  std::printf("fleet-wide per healthy endpoint: min %d max %d mean %.0f (max/mean %.5f)\n", min,
              max, mean, max / mean);
  // Without the spill, a's three would carry 1/9 each against b's and c's
  // 1/12: max/mean 1.22. With it, all within 0.1%.
  EXPECT_LT(max / mean, 1.001);
  EXPECT_GT(min / mean, 0.999);
}

TEST(LocalityTest, ZoneAwareNeedsMinClusterSize) {
  std::vector<LbEndpoint> eps;
  Add(eps, 2, 0, "a");
  Add(eps, 2, 0, "b");
  // 4 healthy < 6: no zone routing.
  auto count = Sweep(*Make(json::object(), "a")->Build(eps), 4000);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(count[i], 1000);
  count = Sweep(*Make(json{{"min_cluster_size", 4}}, "a")->Build(eps), 4000);
  EXPECT_EQ(count[0], 2000);
  EXPECT_EQ(count[1], 2000);
}

TEST(LocalityTest, ChildIsTheFirstKnownNameAndSeesTheSubset) {
  auto policy = Make(json{{"policy", json::parse(R"([{"from_the_future": {}},
                                                     {"round_robin": {}}])")}});
  EXPECT_TRUE(absl::StrContains(policy->Describe(), "policy=round_robin")) << policy->Describe();
  EXPECT_TRUE(absl::StrContains(policy->Describe(), "panic_threshold=50")) << policy->Describe();

  // A composite child: aperture inside priority 0. Indices come back as
  // positions in the full vector, inside priority 0's healthy endpoints,
  // and inside the subset aperture computes for them.
  std::vector<LbEndpoint> eps;
  Add(eps, 3, 1);  // 0-2: priority 1, listed first
  Add(eps, 12, 0);  // 3-14
  Eject(eps, 3, 2);
  auto composite = Make(json{{"policy", json::parse(R"([{"aperture": {
      "size": 3, "client_id": 1, "peer_count": 4}}])")}});
  std::vector<LbEndpoint> level0(eps.begin() + 5, eps.end());
  std::set<int> expected;
  for (const ApertureMember& m : ApertureSubset(level0, 1, 4, 3)) expected.insert(m.index + 5);
  auto count = Sweep(*composite->Build(eps), 1000);
  std::set<int> got;
  for (const auto& [i, n] : count) got.insert(i);
  EXPECT_EQ(got, expected);
  EXPECT_GE(got.size(), 3u);
}

TEST(LocalityTest, EmptySetAndOldPickersOutliveRebuilds) {
  auto policy = Make(json::object());
  EXPECT_EQ(policy->Build({})->Pick({}), kNoEndpoint);
  std::vector<LbEndpoint> eps;
  Add(eps, 10, 0);
  Eject(eps, 0, 8);
  auto panic_picker = policy->Build(eps);  // slot "p0/all"
  for (auto& e : eps) e.healthy = true;
  auto healthy_picker = policy->Build(eps);  // drops "p0/all"
  policy.reset();
  // Both still work: each keeps the child policy that built it.
  EXPECT_EQ(Sweep(*panic_picker, 100).size(), 10u);
  EXPECT_EQ(Sweep(*healthy_picker, 100).size(), 10u);
  // Random picks (no hash) land too.
  for (int i = 0; i < 100; ++i) {
    int p = healthy_picker->Pick({});
    EXPECT_TRUE(p >= 0 && p < 10);
  }
}

TEST(LocalityTest, PickersAreSafeToShare) {
  auto eps = ThreeZones();
  Add(eps, 6, 1, "a");
  Eject(eps, 0, 1);
  Eject(eps, 4, 3);
  auto picker = Make(json{{"policy", json::parse(R"([{"aperture": {"size": 2}}])")}}, "a")
                    ->Build(eps);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        PickArgs a;
        a.hash = static_cast<uint64_t>(i) * 7919 + t;
        a.has_hash = i % 2 == 0;
        const int p = picker->Pick(a);
        if (p < 0 || p >= static_cast<int>(eps.size())) bad.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(LocalityTest, ConfigErrorsNameTheFieldPath) {
  struct Case {
    const char* config;
    const char* message;
  } cases[] = {
      {R"({"panic_threshold": 150})", "lb[0].locality.panic_threshold: must be a number between 0 and 100"},
      {R"({"overprovisioning_factor": 0.5})", "lb[0].locality.overprovisioning_factor: must be a number between 1 and 100"},
      {R"({"zone_aware": "yes"})", "lb[0].locality.zone_aware: must be true or false"},
      {R"({"local_zone": ""})", "lb[0].locality.local_zone: must be a non-empty string"},
      {R"({"min_cluster_size": -1})", "lb[0].locality.min_cluster_size: must be an integer between 0 and"},
      {R"({"bogus": 1})", "lb[0].locality.bogus: unknown key"},
      {R"({"policy": {}})", "lb[0].locality.policy: must be a non-empty list"},
      {R"({"policy": [{"round_robin": {"x": 1}}]})", "lb[0].locality.policy[0].round_robin.x: unknown key"},
      {R"({"policy": [{"nope": {}}]})", "lb[0].locality.policy: no known policy (listed: nope;"},
      {R"({"policy": [{"locality": {"panic_threshold": -1}}]})", "lb[0].locality.policy[0].locality.panic_threshold: must be"},
      {R"([])", "lb[0].locality: must be an object"},
  };
  for (const Case& c : cases) {
    auto s = PolicyRegistry::Global().Select(
        json::array({{{"locality", json::parse(c.config)}}}), "lb");
    ASSERT_FALSE(s.ok()) << c.config;
    EXPECT_TRUE(absl::StrContains(s.status().message(), c.message)) << s.status();
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  }
  // Create checks too (a caller may skip Select).
  PolicyContext ctx;
  ctx.clock = &runtime::RealClock();
  auto p = PolicyRegistry::Global().Find("locality")->Create(json{{"panic_threshold", "x"}},
                                                             "svc.locality", ctx);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::StrContains(p.status().message(), "svc.locality.panic_threshold"));
}

}  // namespace
}  // namespace meshlib::lb
