#include "meshlib/lb/aperture/aperture.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "meshlib/lb/policy.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

std::string Address(int i) {
  return "10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250) + ":9000";
}

std::vector<LbEndpoint> Fleet(int n, int first = 0) {
  std::vector<LbEndpoint> v;
  for (int i = first; i < first + n; ++i) {
    LbEndpoint e;
    e.endpoint.address = Address(i);
    e.stats = std::make_shared<EndpointStats>();
    v.push_back(std::move(e));
  }
  return v;
}

std::unique_ptr<Policy> Make(const json& config, uint64_t client_id, int peer_count,
                             uint64_t seed = 0) {
  auto choice = PolicyRegistry::Global().Select(json::array({{{"aperture", config}}}), "lb");
  EXPECT_TRUE(choice.ok()) << choice.status();
  PolicyContext ctx;
  ctx.clock = &runtime::RealClock();
  ctx.client_id = client_id;
  ctx.peer_count = peer_count;
  ctx.seed = seed;
  auto p = choice->factory->Create(choice->config, choice->path, ctx);
  EXPECT_TRUE(p.ok()) << p.status();
  return *std::move(p);
}

// The addresses a picker uses: `n` picks (round_robin child: n >= subset
// size covers it).
std::set<std::string> Picked(const Picker& picker, const std::vector<LbEndpoint>& eps,
                             int n = 200) {
  std::set<std::string> out;
  for (int i = 0; i < n; ++i) {
    int j = picker.Pick({});
    EXPECT_TRUE(j >= 0 && j < static_cast<int>(eps.size())) << j;
    if (j >= 0 && j < static_cast<int>(eps.size())) out.insert(eps[j].endpoint.address);
  }
  return out;
}

std::set<std::string> Addresses(const std::vector<LbEndpoint>& eps,
                                const std::vector<ApertureMember>& members) {
  std::set<std::string> out;
  for (const ApertureMember& m : members) out.insert(eps[m.index].endpoint.address);
  return out;
}

// The weight aperture hands its child for a member (see the header).
double ChildWeight(double share) { return std::max(1.0, std::round(1000 * share)); }

struct Population {
  int min_conns = 0, max_conns = 0;
  double mean_conns = 0;
  size_t min_size = 0, max_size = 0;
  double load_max_over_mean = 0;         // with exact shares
  double rounded_load_max_over_mean = 0;  // with the integer weights the child gets
};

// Every client 0..peers-1 over a fleet of `servers`: how many subsets hold
// each endpoint ("connections"), and the load each endpoint gets when every
// client sends the same traffic spread by its members' weights.
Population Measure(int peers, int servers, int size) {
  auto fleet = Fleet(servers);
  std::vector<int> conns(servers, 0);
  std::vector<double> load(servers, 0), rounded(servers, 0);
  Population p;
  p.min_size = servers;
  for (int k = 0; k < peers; ++k) {
    auto members = ApertureSubset(fleet, k, peers, size);
    p.min_size = std::min(p.min_size, members.size());
    p.max_size = std::max(p.max_size, members.size());
    double sum = 0, rounded_sum = 0;
    for (const auto& m : members) {
      sum += m.share;
      rounded_sum += ChildWeight(m.share);
    }
    for (const auto& m : members) {
      ++conns[m.index];
      load[m.index] += m.share / sum;
      rounded[m.index] += ChildWeight(m.share) / rounded_sum;
    }
  }
  p.min_conns = *std::min_element(conns.begin(), conns.end());
  p.max_conns = *std::max_element(conns.begin(), conns.end());
  double total = 0;
  for (int c : conns) total += c;
  p.mean_conns = total / servers;
  const double mean_load = static_cast<double>(peers) / servers;
  p.load_max_over_mean = *std::max_element(load.begin(), load.end()) / mean_load;
  p.rounded_load_max_over_mean = *std::max_element(rounded.begin(), rounded.end()) / mean_load;
  return p;
}

TEST(ApertureTest, HundredClientsOverAThousandEndpointsAreExactlyEven) {
  Population p = Measure(100, 1000, 10);
  std::printf("100 clients, 1000 endpoints, size 10: clients per endpoint min %d max %d mean %.3f "
              "(max/mean %.3f); subset size %zu..%zu; load max/mean %.6f\n",
              p.min_conns, p.max_conns, p.mean_conns, p.max_conns / p.mean_conns, p.min_size,
              p.max_size, p.load_max_over_mean);
  EXPECT_EQ(p.min_size, 10u);
  EXPECT_EQ(p.max_size, 10u);
  EXPECT_EQ(p.min_conns, 1);
  EXPECT_EQ(p.max_conns, 1);
  EXPECT_NEAR(p.load_max_over_mean, 1.0, 1e-9);

  // The same through the policy: each client's picks are its subset.
  auto fleet = Fleet(1000);
  std::map<std::string, int> conns;
  for (int k = 0; k < 100; ++k) {
    auto policy = Make(json{{"size", 10}}, k, 100);
    auto got = Picked(*policy->Build(fleet), fleet, 100);
    EXPECT_EQ(got, Addresses(fleet, ApertureSubset(fleet, k, 100, 10))) << k;
    EXPECT_EQ(got.size(), 10u);
    for (const auto& a : got) ++conns[a];
  }
  EXPECT_EQ(conns.size(), 1000u);  // every endpoint is someone's
}

TEST(ApertureTest, OtherPopulationsStayWithinOneConnectionAndEvenLoad) {
  struct Case {
    int peers, servers, size;
  } cases[] = {{100, 999, 10}, {100, 1001, 10}, {137, 1000, 12}, {250, 1000, 12},
               {1000, 100, 12}, {7, 1000, 12},  {100, 1000, 12}, {3, 5, 2}};
  for (const Case& c : cases) {
    Population p = Measure(c.peers, c.servers, c.size);
    std::printf("%4d clients, %4d endpoints, size %2d: clients per endpoint %d..%d mean %.3f "
                "(max/mean %.3f); subset %zu..%zu; load max/mean %.6f (child's integer "
                "weights %.6f)\n",
                c.peers, c.servers, c.size, p.min_conns, p.max_conns, p.mean_conns,
                p.max_conns / p.mean_conns, p.min_size, p.max_size, p.load_max_over_mean,
                p.rounded_load_max_over_mean);
    // Arcs cover the ring: no endpoint is left out.
    EXPECT_GE(p.min_conns, 1) << c.peers << "/" << c.servers;
    // Client starts are evenly spaced: connection counts differ by at most
    // one (so max/mean <= 1 + 1/mean, 1.5 once every endpoint has >= 2).
    EXPECT_LE(p.max_conns - p.min_conns, 1) << c.peers << "/" << c.servers;
    EXPECT_LE(p.max_conns / p.mean_conns, 1 + 1 / std::floor(p.mean_conns));
    // At least `size` endpoints, at most one more than the arc's width.
    const size_t width = std::max<size_t>(c.size, (c.servers + c.peers - 1) / c.peers);
    EXPECT_GE(p.min_size, static_cast<size_t>(std::min(c.size, c.servers)));
    EXPECT_LE(p.max_size, width + 1);
    // Load is even by construction (exact up to floating point), and the
    // child's weights (1/1000 of a member) keep it within 0.5%.
    EXPECT_NEAR(p.load_max_over_mean, 1.0, 1e-9) << c.peers << "/" << c.servers;
    EXPECT_LT(p.rounded_load_max_over_mean, 1.005) << c.peers << "/" << c.servers;
  }
}

// For each client: members that left or joined, not counting the removed
// endpoint itself.
std::pair<int, double> Churn(const std::vector<LbEndpoint>& before,
                             const std::vector<LbEndpoint>& after, int peers, int size,
                             const std::string& removed) {
  int max = 0;
  double total = 0;
  for (int k = 0; k < peers; ++k) {
    auto a = Addresses(before, ApertureSubset(before, k, peers, size));
    auto b = Addresses(after, ApertureSubset(after, k, peers, size));
    int moved = 0;
    for (const auto& x : a) moved += (b.count(x) == 0 && x != removed) ? 1 : 0;
    for (const auto& x : b) moved += a.count(x) == 0 ? 1 : 0;
    max = std::max(max, moved);
    total += moved;
  }
  return {max, total / peers};
}

TEST(ApertureTest, OneEndpointMoreOrLessMovesAtMostTwoMembers) {
  for (auto [peers, size] : {std::pair<int, int>{100, 10}, {137, 12}}) {
    auto fleet = Fleet(1000);
    for (int r : {0, 1, 337, 999}) {
      auto smaller = fleet;
      smaller.erase(smaller.begin() + r);
      auto [max, mean] = Churn(fleet, smaller, peers, size, fleet[r].endpoint.address);
      std::printf("%d clients, size %d, remove endpoint %d: members moved per client max %d "
                  "mean %.2f\n",
                  peers, size, r, max, mean);
      EXPECT_LE(max, 2) << "removing " << r;
    }
    auto bigger = fleet;
    bigger.push_back(Fleet(1, 5000)[0]);
    auto [max, mean] = Churn(fleet, bigger, peers, size, "");
    std::printf("%d clients, size %d, add an endpoint: members moved per client max %d mean "
                "%.2f\n",
                peers, size, max, mean);
    EXPECT_LE(max, 2);
  }
}

TEST(ApertureTest, SubsetsAreDeterministic) {
  auto fleet = Fleet(500);
  auto shuffled = fleet;
  std::mt19937 rng(7);
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  auto one = Make(json{{"size", 12}}, 17, 60);
  auto two = Make(json{{"size", 12}}, 17, 60);
  auto a = Picked(*one->Build(fleet), fleet);
  EXPECT_EQ(a, Picked(*two->Build(shuffled), shuffled));  // list order does not matter
  EXPECT_EQ(a, Picked(*one->Build(fleet), fleet));         // nor rebuilding
  EXPECT_EQ(a, Addresses(fleet, ApertureSubset(fleet, 17, 60, 12)));
  EXPECT_EQ(a.size(), 13u);  // 12 endpoints' worth, edges partly
  // Another coordinate: another arc.
  EXPECT_NE(a, Picked(*Make(json{{"size", 12}}, 18, 60)->Build(fleet), fleet));
}

TEST(ApertureTest, ConfigCoordinateOverridesTheClients) {
  auto fleet = Fleet(1000);
  auto policy = Make(json{{"size", 10}, {"client_id", 3}, {"peer_count", 100}}, 7, 50);
  EXPECT_EQ(Picked(*policy->Build(fleet), fleet),
            Addresses(fleet, ApertureSubset(fleet, 3, 100, 10)));
  EXPECT_TRUE(absl::StrContains(policy->Describe(), "coordinate=3/100")) << policy->Describe();
  // A client id beyond the peer count (say, a hash) wraps.
  auto wrapped = Make(json{{"size", 10}}, 1003, 100);
  EXPECT_EQ(Picked(*wrapped->Build(fleet), fleet),
            Addresses(fleet, ApertureSubset(fleet, 3, 100, 10)));
}

TEST(ApertureTest, RandomApertureWhenPeersAreUnknown) {
  auto fleet = Fleet(1000);
  std::set<std::set<std::string>> distinct;
  for (uint64_t seed : {1, 2, 3, 4, 5}) {
    auto policy = Make(json{{"size", 10}}, 0, 0, seed);
    EXPECT_TRUE(absl::StrContains(policy->Describe(), "(random)")) << policy->Describe();
    auto a = Picked(*policy->Build(fleet), fleet);
    EXPECT_GE(a.size(), 10u);
    EXPECT_LE(a.size(), 11u);
    EXPECT_EQ(a, Picked(*policy->Build(fleet), fleet));  // stable across rebuilds
    EXPECT_EQ(a, Picked(*Make(json{{"size", 10}}, 0, 0, seed)->Build(fleet), fleet));
    distinct.insert(a);
  }
  EXPECT_EQ(distinct.size(), 5u);
}

TEST(ApertureTest, SmallFleetsAreUsedWhole) {
  auto fleet = Fleet(5);
  auto policy = Make(json::object(), 0, 1000);  // default size 12 > 5
  EXPECT_EQ(Picked(*policy->Build(fleet), fleet).size(), 5u);
  EXPECT_EQ(policy->Build({})->Pick({}), kNoEndpoint);
  EXPECT_TRUE(absl::StrContains(policy->Describe(), "size=12")) << policy->Describe();
}

TEST(ApertureTest, HealthDoesNotMoveTheSubsetUnlessAllOfItIsOut) {
  auto fleet = Fleet(100);
  auto policy = Make(json{{"size", 10}}, 0, 10);
  auto members = ApertureSubset(fleet, 0, 10, 10);
  ASSERT_EQ(members.size(), 10u);
  // All but one member ejected: the survivor takes the client's traffic.
  for (size_t i = 1; i < members.size(); ++i) fleet[members[i].index].healthy = false;
  auto got = Picked(*policy->Build(fleet), fleet);
  EXPECT_EQ(got, std::set<std::string>{fleet[members[0].index].endpoint.address});
  // All of them: the healthy endpoints outside the arc.
  fleet[members[0].index].healthy = false;
  got = Picked(*policy->Build(fleet), fleet, 500);
  EXPECT_EQ(got.size(), 90u);
  for (const auto& m : members) EXPECT_EQ(got.count(fleet[m.index].endpoint.address), 0u);
}

// A child that records what it is given.
std::vector<LbEndpoint>& LastBuild() {
  static auto* v = new std::vector<LbEndpoint>();
  return *v;
}

class RecordingPolicy final : public Policy {
 public:
  std::string name() const override { return "recording_for_testing"; }
  std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) override {
    LastBuild() = endpoints;
    class First final : public Picker {
     public:
      explicit First(bool empty) : empty_(empty) {}
      int Pick(const PickArgs&) const override { return empty_ ? kNoEndpoint : 0; }

     private:
      const bool empty_;
    };
    return std::make_unique<First>(endpoints.empty());
  }
};

class RecordingFactory final : public PolicyFactory {
 public:
  std::string name() const override { return "recording_for_testing"; }
  absl::Status Validate(const json&, absl::string_view) const override {
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<Policy>> Create(const json&, absl::string_view,
                                                 const PolicyContext&) const override {
    return std::unique_ptr<Policy>(std::make_unique<RecordingPolicy>());
  }
};

TEST(ApertureTest, ChildGetsTheSubsetWithCoverageWeights) {
  // The global registry is immutable: the recording child lives in a
  // registry of this test's own, which the aperture finds its child in.
  PolicyRegistry registry;
  PolicyRegistry::RegisterBuiltins(registry);
  registry.Register(std::make_unique<RecordingFactory>());
  auto fleet = Fleet(1000);
  auto members = ApertureSubset(fleet, 5, 137, 12);
  fleet[members[1].index].endpoint.weight = 0;  // "only if nothing else" stays 0
  fleet[members[2].index].endpoint.weight = 3;
  PolicyContext ctx;
  ctx.clock = &runtime::RealClock();
  ctx.client_id = 5;
  ctx.peer_count = 137;
  ctx.registry = &registry;
  auto created = registry.Find("aperture")->Create(
      json{{"size", 12}, {"policy", json::parse(R"([{"recording_for_testing": {}}])")}},
      "lb[0].aperture", ctx);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Policy> policy = *std::move(created);
  auto picker = policy->Build(fleet);
  const auto& got = LastBuild();
  ASSERT_EQ(got.size(), members.size());
  bool partial = false;
  for (size_t i = 0; i < members.size(); ++i) {
    const LbEndpoint& original = fleet[members[i].index];
    EXPECT_EQ(got[i].endpoint.address, original.endpoint.address);
    const double expected =
        original.endpoint.weight == 0
            ? 0
            : std::max(1.0, std::round(original.endpoint.weight * 1000 * members[i].share));
    EXPECT_EQ(got[i].endpoint.weight, static_cast<uint32_t>(expected)) << i;
    partial = partial || members[i].share < 0.99;
  }
  EXPECT_TRUE(partial);  // 137 clients over 1000: the arc's edges are partial
  // The child's index 0 maps back to the member's place in the fleet.
  EXPECT_EQ(picker->Pick({}), members[0].index);
}

TEST(ApertureTest, ConfigErrorsNameTheFieldPath) {
  struct Case {
    const char* config;
    const char* message;
  } cases[] = {
      {R"({"size": 0})", "lb[0].aperture.size: must be an integer between 1 and 2147483647"},
      {R"({"size": "12"})", "lb[0].aperture.size: must be an integer"},
      {R"({"peer_count": 0})", "lb[0].aperture.peer_count: must be an integer between 1 and"},
      {R"({"client_id": -1})", "lb[0].aperture.client_id: must be an integer between 0 and"},
      {R"({"client_id": 5, "peer_count": 5})", "lb[0].aperture.client_id: must be less than peer_count (5)"},
      {R"({"sizes": 1})", "lb[0].aperture.sizes: unknown key"},
      {R"({"policy": [{"round_robin": {"x": 1}}]})", "lb[0].aperture.policy[0].round_robin.x: unknown key"},
      {R"({"policy": [{"aperture": {"size": -3}}]})", "lb[0].aperture.policy[0].aperture.size: must be"},
  };
  for (const Case& c : cases) {
    auto s = PolicyRegistry::Global().Select(
        json::array({{{"aperture", json::parse(c.config)}}}), "lb");
    ASSERT_FALSE(s.ok()) << c.config;
    EXPECT_TRUE(absl::StrContains(s.status().message(), c.message)) << s.status();
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  }
  // A client id without any peer count can only be caught at Create().
  PolicyContext ctx;
  ctx.clock = &runtime::RealClock();
  auto p = PolicyRegistry::Global().Find("aperture")->Create(json{{"client_id", 3}},
                                                             "svc.aperture", ctx);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::StrContains(p.status().message(), "svc.aperture.client_id: needs peer_count"))
      << p.status();
}

}  // namespace
}  // namespace meshlib::lb
