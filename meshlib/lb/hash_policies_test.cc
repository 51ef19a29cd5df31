// Quality tests for the consistent-hashing policies, ring_hash and maglev:
// how many keys move when the endpoint set changes, how evenly keys spread,
// whether weights are honoured, whether every client builds the same
// mapping, and the config errors. Everything is deterministic (keys from
// fixed-seed generators, Hash64 is the same in every build), so the
// measured numbers printed below are the same on every run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/lb/policy.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

LbEndpoint MakeEndpoint(const std::string& address, uint32_t weight = 1) {
  LbEndpoint e;
  e.endpoint.address = address;
  e.endpoint.weight = weight;
  e.stats = std::make_shared<EndpointStats>();
  return e;
}

std::string Address(int i) {
  return absl::StrCat("10.", (i >> 16) & 255, ".", (i >> 8) & 255, ".", i & 255, ":7000");
}

std::vector<LbEndpoint> Endpoints(int n) {
  std::vector<LbEndpoint> v;
  for (int i = 0; i < n; ++i) v.push_back(MakeEndpoint(Address(i)));
  return v;
}

std::unique_ptr<Policy> Make(const std::string& name, const json& config = json::object()) {
  json list = json::array({json{{name, config}}});
  auto choice = PolicyRegistry::Global().Select(list, "lb");
  EXPECT_TRUE(choice.ok()) << choice.status();
  if (!choice.ok()) return nullptr;
  EXPECT_EQ(choice->factory->name(), name);
  PolicyContext ctx;
  ctx.clock = &runtime::RealClock();
  auto p = choice->factory->Create(choice->config, choice->path, ctx);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : nullptr;
}

std::vector<uint64_t> Keys(int n, uint64_t seed) {
  FastRandom r(seed);
  std::vector<uint64_t> k(n);
  for (auto& x : k) x = r.Next();
  return k;
}

// The address each key goes to.
std::vector<std::string> Route(const Picker& picker, const std::vector<LbEndpoint>& eps,
                               const std::vector<uint64_t>& keys) {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (uint64_t k : keys) {
    int i = picker.Pick(PickArgs{k, true});
    out.push_back(i == kNoEndpoint ? "" : eps[i].endpoint.address);
  }
  return out;
}

// Keys per endpoint index.
std::vector<int> Counts(const Picker& picker, size_t n, const std::vector<uint64_t>& keys) {
  std::vector<int> c(n, 0);
  for (uint64_t k : keys) ++c[picker.Pick(PickArgs{k, true})];
  return c;
}

double MaxOverMean(const std::vector<int>& counts) {
  double sum = 0;
  int max = 0;
  for (int c : counts) {
    sum += c;
    max = std::max(max, c);
  }
  return max / (sum / counts.size());
}

const char* const kPolicies[] = {"ring_hash", "maglev"};

// ---------------------------------------------------------------- config

TEST(HashPolicyConfigTest, DefaultsAreEnvoys) {
  EXPECT_EQ(Make("ring_hash")->Describe(),
            "ring_hash{minimum_ring_size=1024, maximum_ring_size=8388608}");
  EXPECT_EQ(Make("maglev")->Describe(), "maglev{table_size=65537}");
  EXPECT_EQ(Make("maglev", json{{"table_size", 5000011}})->Describe(),
            "maglev{table_size=5000011}");
  EXPECT_EQ(
      Make("ring_hash", json{{"minimum_ring_size", 64}, {"maximum_ring_size", 64}})->Describe(),
      "ring_hash{minimum_ring_size=64, maximum_ring_size=64}");
}

TEST(HashPolicyConfigTest, ErrorsNameTheField) {
  struct Case {
    const char* list;
    const char* message;
  } cases[] = {
      {R"([{"maglev": {"table_size": 65536}}])",
       "lb[0].maglev.table_size: must be a prime number (got 65536"},
      {R"([{"maglev": {"table_size": 1}}])",
       "lb[0].maglev.table_size: must be an integer between 2 and 5000011"},
      {R"([{"maglev": {"table_size": 5000012}}])",
       "lb[0].maglev.table_size: must be an integer between 2 and 5000011"},
      {R"([{"maglev": {"table_size": "65537"}}])", "lb[0].maglev.table_size: must be an integer"},
      {R"([{"maglev": {"tablesize": 65537}}])", "lb[0].maglev.tablesize: unknown key"},
      {R"([{"maglev": []}])", "lb[0].maglev: must be an object"},
      {R"([{"ring_hash": {"minimum_ring_size": 4096, "maximum_ring_size": 1024}}])",
       "lb[0].ring_hash.minimum_ring_size: must be <= maximum_ring_size (4096 > 1024)"},
      {R"([{"ring_hash": {"maximum_ring_size": 8388609}}])",
       "lb[0].ring_hash.maximum_ring_size: must be an integer between 1 and 8388608"},
      {R"([{"ring_hash": {"minimum_ring_size": 0}}])",
       "lb[0].ring_hash.minimum_ring_size: must be an integer between 1 and 8388608"},
      {R"([{"ring_hash": {"min_ring_size": 10}}])", "lb[0].ring_hash.min_ring_size: unknown key"},
  };
  for (const Case& c : cases) {
    auto s = PolicyRegistry::Global().Select(json::parse(c.list), "lb");
    ASSERT_FALSE(s.ok()) << c.list;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(s.status().message(), c.message))
        << s.status() << " (wanted: " << c.message << ")";
  }
  // Primes are accepted, including the smallest.
  for (int p : {2, 3, 251, 65537, 655373, 5000011}) {
    EXPECT_TRUE(PolicyRegistry::Global()
                    .Select(json::array({json{{"maglev", {{"table_size", p}}}}}), "lb")
                    .ok())
        << p;
  }
}

// ------------------------------------------------------- definitions pinned

// ring_hash as Envoy defines it: an endpoint's points are hashes of
// "<address>_<i>", and a key goes to the first point >= it, wrapping.
TEST(RingHashTest, KeyGoesToFirstPointAtOrAfterIt) {
  auto eps = Endpoints(3);
  // Pin the ring to 3 points, one each, so that the test can list them.
  auto policy = Make("ring_hash", json{{"minimum_ring_size", 3}, {"maximum_ring_size", 3}});
  auto picker = policy->Build(eps);
  std::vector<std::pair<uint64_t, int>> ring;
  for (int i = 0; i < 3; ++i) ring.emplace_back(Hash64(eps[i].endpoint.address + "_0"), i);
  std::sort(ring.begin(), ring.end());
  for (size_t j = 0; j < ring.size(); ++j) {
    const auto [point, owner] = ring[j];
    EXPECT_EQ(picker->Pick({point, true}), owner) << "on the point";
    EXPECT_EQ(picker->Pick({point - 1, true}), owner) << "just before it";
    int after = j + 1 < ring.size() ? ring[j + 1].second : ring[0].second;
    EXPECT_EQ(picker->Pick({point + 1, true}), after) << "just after it";
  }
  EXPECT_EQ(picker->Pick({0, true}), ring[0].second);
  EXPECT_EQ(picker->Pick({UINT64_MAX, true}), ring[0].second) << "wraps";
}

// Envoy's sizing: the lightest endpoint gets ceil(min_ring * w_min / W)
// points and the others proportionally more. With weights 1 and 2 and a
// minimum of 3, that is 1 and 2 points: "b_1" is a point of b, "b_2" is not.
TEST(RingHashTest, PointsPerEndpointFollowWeight) {
  std::vector<LbEndpoint> eps = {MakeEndpoint("10.0.0.1:1", 1), MakeEndpoint("10.0.0.2:1", 2)};
  auto picker =
      Make("ring_hash", json{{"minimum_ring_size", 3}, {"maximum_ring_size", 100}})->Build(eps);
  std::vector<uint64_t> points = {Hash64("10.0.0.1:1_0"), Hash64("10.0.0.2:1_0"),
                                  Hash64("10.0.0.2:1_1")};
  std::vector<int> owners = {0, 1, 1};
  for (size_t i = 0; i < points.size(); ++i) {
    EXPECT_EQ(picker->Pick({points[i], true}), owners[i]) << i;
  }
  // Exactly three points: every hash lands on the owner of the first of
  // those three at or after it.
  std::vector<std::pair<uint64_t, int>> ring;
  for (size_t i = 0; i < points.size(); ++i) ring.emplace_back(points[i], owners[i]);
  std::sort(ring.begin(), ring.end());
  for (uint64_t k : Keys(10000, 7)) {
    auto it = std::lower_bound(ring.begin(), ring.end(), std::make_pair(k, -1));
    int want = it == ring.end() ? ring[0].second : it->second;
    ASSERT_EQ(picker->Pick({k, true}), want) << k;
  }
}

// The Maglev table, straight from the paper's pseudocode (Listing 1) with
// Envoy's weighted turns, and `%` everywhere. The policy's optimised fill
// must produce exactly this table. Seeds and member order (by address) are
// part of the definition.
std::vector<int> ReferenceMaglevTable(const std::vector<LbEndpoint>& eps, uint64_t m) {
  std::vector<int> order(eps.size());
  for (size_t i = 0; i < eps.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return eps[a].endpoint.address < eps[b].endpoint.address; });
  const size_t n = order.size();
  std::vector<uint64_t> offset(n), skip(n), next(n, 0), target(n, 0), w(n);
  uint64_t w_max = 0;
  for (size_t r = 0; r < n; ++r) {
    const std::string& a = eps[order[r]].endpoint.address;
    offset[r] = Hash64(a, 0) % m;
    skip[r] = Hash64(a, 0x9E3779B97F4A7C15ull) % (m - 1) + 1;
    w[r] = eps[order[r]].endpoint.weight;
    w_max = std::max(w_max, w[r]);
  }
  std::vector<int> table(m, -1);
  uint64_t filled = 0;
  for (uint64_t iteration = 1; filled < m; ++iteration) {
    for (size_t r = 0; r < n && filled < m; ++r) {
      if (iteration * w[r] < target[r]) continue;
      target[r] += w_max;
      uint64_t c = (offset[r] + skip[r] * next[r]) % m;
      while (table[c] >= 0) {
        ++next[r];
        c = (offset[r] + skip[r] * next[r]) % m;
      }
      table[c] = order[r];
      ++next[r];
      ++filled;
    }
  }
  return table;
}

TEST(MaglevTest, TableIsThePapersPermutationFill) {
  struct Case {
    const char* what;
    int n;
    uint64_t m;
    std::vector<uint32_t> weights;  // cycled over the endpoints; empty = all 1
    uint32_t heavy = 0;             // if > 0: the weight of the first endpoint
  } cases[] = {
      {"unweighted", 37, 1009, {}},
      {"more endpoints than entries", 40, 31, {}},
      {"mild weights (every member scanned each round)", 37, 1009, {1, 2, 3}},
      {"one in ten heavy (still scanned)", 37, 1009, {1, 1, 1, 1, 1, 1, 1, 1, 1, 400}},
      {"one heavy endpoint (heap of due turns)", 37, 1009, {1}, 1000},
      {"one heavy, uneven rest (heap)", 200, 4001, {1, 2, 3, 5}, 100000},
      {"huge weight spread", 5, 101, {1, 4000000000u}},
      {"huge weight spread (heap)", 50, 101, {1}, 4000000000u},
  };
  for (const Case& c : cases) {
    auto eps = Endpoints(c.n);
    // Shuffle, so the policy's own ordering by address is exercised.
    std::mt19937 rng(42);
    std::shuffle(eps.begin(), eps.end(), rng);
    if (!c.weights.empty()) {
      for (int i = 0; i < c.n; ++i) eps[i].endpoint.weight = c.weights[i % c.weights.size()];
    }
    if (c.heavy > 0) eps[0].endpoint.weight = c.heavy;
    auto picker = Make("maglev", json{{"table_size", c.m}})->Build(eps);
    std::vector<int> want = ReferenceMaglevTable(eps, c.m);
    int mismatches = 0;
    for (uint64_t h = 0; h < c.m; ++h) {
      mismatches += picker->Pick({h, true}) != want[h];
      // hash % M, for hashes far above M too.
      mismatches += picker->Pick({h + c.m * 0x0123456789ull, true}) != want[h];
    }
    EXPECT_EQ(mismatches, 0) << c.what;
  }
}

// ---------------------------------------------------------------- disruption

struct Disruption {
  double moved;         // share of all keys that changed endpoint
  double on_removed;    // share of keys that were on the removed endpoint
  double others_moved;  // share of the other keys that moved
};

Disruption RemoveOne(const std::string& policy_name, int n, const json& config = json::object()) {
  auto policy = Make(policy_name, config);
  auto before = Endpoints(n);
  auto after = before;
  const int gone = n / 2;
  after.erase(after.begin() + gone);
  std::vector<uint64_t> keys = Keys(100000, 1234);
  auto a = Route(*policy->Build(before), before, keys);
  auto b = Route(*policy->Build(after), after, keys);
  int moved = 0, on_removed = 0, others_moved = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    bool was_on_removed = a[i] == before[gone].endpoint.address;
    on_removed += was_on_removed;
    moved += a[i] != b[i];
    others_moved += !was_on_removed && a[i] != b[i];
  }
  Disruption d;
  d.moved = double(moved) / keys.size();
  d.on_removed = double(on_removed) / keys.size();
  d.others_moved = double(others_moved) / (keys.size() - on_removed);
  std::printf(
      "[ measured ] %s N=%d remove one: moved %.4f (1/N = %.4f; its own share %.4f), "
      "other keys moved %.4f\n",
      policy_name.c_str(), n, d.moved, 1.0 / n, d.on_removed, d.others_moved);
  return d;
}

// Ring hash: at N=100 each endpoint keeps its 11 points (ceil(1024/100) ==
// ceil(1024/99)), so exactly the removed endpoint's keys move and no other.
TEST(RingHashTest, RemovingOneOfHundredMovesOnlyItsKeys) {
  Disruption d = RemoveOne("ring_hash", 100);
  EXPECT_EQ(d.others_moved, 0.0);
  EXPECT_DOUBLE_EQ(d.moved, d.on_removed);
  // Its share, with 11 points, is 1/N give or take the ring's imbalance.
  EXPECT_GT(d.moved, 0.4 / 100);
  EXPECT_LT(d.moved, 2.0 / 100);
}

// At N=10 the ring must still hold >= 1024 points, so each survivor goes
// from ceil(1024/10) = 103 to ceil(1024/9) = 114 points, and the 11 new
// points of each take keys from the others (as in Envoy): about
// (1 - 1/N) * 11/114 of the keys move besides the removed endpoint's.
TEST(RingHashTest, RemovingOneOfTenMovesItsKeysPlusTheRescale) {
  Disruption d = RemoveOne("ring_hash", 10);
  EXPECT_NEAR(d.moved - d.on_removed, 0.9 * 11.0 / 114, 0.03);
  EXPECT_NEAR(d.on_removed, 0.1, 0.03);
  // With a minimum both sizes already exceed (9: one point each, for 10
  // endpoints or 9), nothing rescales and only the removed keys move.
  Disruption pinned = RemoveOne("ring_hash", 10, json{{"minimum_ring_size", 9}});
  EXPECT_EQ(pinned.others_moved, 0.0);
}

TEST(MaglevTest, RemovingOneOfTenMovesAboutATenth) {
  Disruption d = RemoveOne("maglev", 10);
  EXPECT_NEAR(d.on_removed, 0.1, 0.01);  // table shares are equal to +-1 entry
  EXPECT_LT(d.moved, 0.1 * 1.2);
  EXPECT_LT(d.others_moved, 0.02);
}

TEST(MaglevTest, RemovingOneOfHundredMovesAboutAHundredth) {
  Disruption d = RemoveOne("maglev", 100);
  EXPECT_NEAR(d.on_removed, 0.01, 0.002);
  EXPECT_LT(d.moved, 0.01 * 2);
  EXPECT_LT(d.others_moved, 0.01);
  // The paper's remedy: a larger table (more entries per endpoint) makes
  // the refill disturb fewer of the other entries.
  Disruption big = RemoveOne("maglev", 100, json{{"table_size", 655373}});
  EXPECT_NEAR(big.on_removed, 0.01, 0.002);
  EXPECT_LT(big.others_moved, d.others_moved);
}

// ---------------------------------------------------------------- balance

TEST(MaglevTest, TableSharesAreEvenAtThousandEndpoints) {
  const int n = 1000;
  const uint64_t m = 65537;
  auto eps = Endpoints(n);
  auto picker = Make("maglev")->Build(eps);
  // Hashes 0..M-1 read each table entry once: entries per endpoint.
  std::vector<uint64_t> every_entry(m);
  for (uint64_t h = 0; h < m; ++h) every_entry[h] = h;
  std::vector<int> entries = Counts(*picker, n, every_entry);
  double table_ratio = MaxOverMean(entries);
  // 1M random keys: each endpoint expects ~1000, so sampling noise alone
  // (sd ~ sqrt(1000) = 3.2%) puts the busiest ~3 sd above the mean.
  std::vector<int> picks = Counts(*picker, n, Keys(1000000, 99));
  double pick_ratio = MaxOverMean(picks);
  std::printf(
      "[ measured ] maglev N=%d M=%llu: entries min %d max %d, max/mean %.4f; "
      "1M keys max/mean %.4f\n",
      n, static_cast<unsigned long long>(m), *std::min_element(entries.begin(), entries.end()),
      *std::max_element(entries.begin(), entries.end()), table_ratio, pick_ratio);
  EXPECT_LE(table_ratio, 1.05);
  EXPECT_LE(*std::max_element(entries.begin(), entries.end()) -
                *std::min_element(entries.begin(), entries.end()),
            1);
  EXPECT_LE(pick_ratio, 1.2);
  // Each endpoint's key count agrees with its table share within 6 sd.
  for (int i = 0; i < n; ++i) {
    double expect = 1e6 * entries[i] / m;
    EXPECT_NEAR(picks[i], expect, 6 * std::sqrt(expect)) << i;
  }
}

TEST(RingHashTest, BalanceAtHundredEndpoints) {
  const int n = 100;
  auto eps = Endpoints(n);
  auto keys = Keys(1000000, 99);
  double default_ratio = MaxOverMean(Counts(*Make("ring_hash")->Build(eps), n, keys));
  // 1024 points per endpoint instead of 11.
  double big_ratio = MaxOverMean(
      Counts(*Make("ring_hash", json{{"minimum_ring_size", 102400}})->Build(eps), n, keys));
  std::printf(
      "[ measured ] ring_hash N=%d 1M keys max/mean: default ring (1100 points) %.3f; "
      "minimum_ring_size 102400 %.3f\n",
      n, default_ratio, big_ratio);
  // With 11 points each, an endpoint's share is a sum of 11 arcs (sd ~ 30%
  // of the mean), and the busiest of 100 sits ~2.5 sd up: ~1.75 expected.
  EXPECT_LE(default_ratio, 2.0);
  EXPECT_LE(big_ratio, 1.3);
}

// ---------------------------------------------------------------- weights

TEST(HashPolicyTest, WeightThreeGetsThreeTimesTheKeys) {
  for (const char* name : kPolicies) {
    // 10 pairs so one pair's ring luck does not decide it.
    std::vector<LbEndpoint> eps;
    for (int i = 0; i < 20; ++i) eps.push_back(MakeEndpoint(Address(i), i % 2 ? 3 : 1));
    auto counts = Counts(*Make(name)->Build(eps), eps.size(), Keys(400000, 5));
    double heavy = 0, light = 0;
    for (int i = 0; i < 20; ++i) (i % 2 ? heavy : light) += counts[i];
    std::printf("[ measured ] %s weights 3:1 -> key ratio %.3f\n", name, heavy / light);
    EXPECT_NEAR(heavy / light, 3.0, 0.3) << name;

    // And for a single pair.
    std::vector<LbEndpoint> pair = {MakeEndpoint("10.1.0.1:80", 3), MakeEndpoint("10.1.0.2:80", 1)};
    auto c = Counts(*Make(name)->Build(pair), 2, Keys(400000, 6));
    std::printf("[ measured ] %s one pair 3:1 -> key ratio %.3f\n", name, double(c[0]) / c[1]);
    EXPECT_NEAR(double(c[0]) / c[1], 3.0, 0.45) << name;
  }
}

// ---------------------------------------------------------------- stability

TEST(HashPolicyTest, EveryClientMapsAKeyToTheSameEndpoint) {
  for (const char* name : kPolicies) {
    auto eps = Endpoints(50);
    auto shuffled = eps;
    std::mt19937 rng(7);
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    auto keys = Keys(50000, 77);
    // Two policies, as two client processes would have, and a shuffled list.
    auto a = Route(*Make(name)->Build(eps), eps, keys);
    auto b = Route(*Make(name)->Build(shuffled), shuffled, keys);
    EXPECT_EQ(a, b) << name;
  }
}

TEST(HashPolicyTest, AddingAnEndpointMovesOnlyItsShare) {
  for (const char* name : kPolicies) {
    auto eps = Endpoints(100);
    auto more = eps;
    more.push_back(MakeEndpoint("192.168.7.7:7000"));
    auto policy = Make(name);
    auto keys = Keys(100000, 11);
    auto a = Route(*policy->Build(eps), eps, keys);
    auto b = Route(*policy->Build(more), more, keys);
    int moved = 0, moved_elsewhere = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      moved += a[i] != b[i];
      moved_elsewhere += a[i] != b[i] && b[i] != "192.168.7.7:7000";
    }
    double f = double(moved) / keys.size();
    std::printf(
        "[ measured ] %s N=100 add one: moved %.4f (1/(N+1) = %.4f), "
        "between old endpoints %.4f\n",
        name, f, 1.0 / 101, double(moved_elsewhere) / keys.size());
    EXPECT_LT(f, 2.0 / 101) << name;
    EXPECT_LT(double(moved_elsewhere) / keys.size(), 0.01) << name;
  }
}

// ---------------------------------------------------------------- health etc.

TEST(HashPolicyTest, UnhealthyAndWeightZeroEndpointsAreLeftOut) {
  for (const char* name : kPolicies) {
    auto eps = Endpoints(5);
    eps[1].healthy = false;
    eps[3].endpoint.weight = 0;
    auto c = Counts(*Make(name)->Build(eps), eps.size(), Keys(20000, 3));
    EXPECT_EQ(c[1], 0) << name;
    EXPECT_EQ(c[3], 0) << name;
    EXPECT_GT(c[0], 0) << name;
    EXPECT_GT(c[2], 0) << name;
    EXPECT_GT(c[4], 0) << name;

    // None healthy: all of them. All weight 0: all of them, equally.
    for (auto& e : eps) e.healthy = false;
    c = Counts(*Make(name)->Build(eps), eps.size(), Keys(20000, 3));
    EXPECT_GT(c[1], 0) << name;
    auto zero = Endpoints(4);
    for (auto& e : zero) e.endpoint.weight = 0;
    c = Counts(*Make(name)->Build(zero), zero.size(), Keys(20000, 3));
    for (int x : c) EXPECT_GT(x, 2000) << name;

    EXPECT_EQ(Make(name)->Build({})->Pick({}), kNoEndpoint) << name;
    EXPECT_EQ(Make(name)->Build({})->Pick({42, true}), kNoEndpoint) << name;
  }
}

TEST(HashPolicyTest, CallsWithoutAHashSpreadAtRandom) {
  for (const char* name : kPolicies) {
    ReseedThreadRandom(2024);
    auto eps = Endpoints(4);
    auto picker = Make(name, std::string(name) == "ring_hash" ? json{{"minimum_ring_size", 40000}}
                                                              : json::object())
                      ->Build(eps);
    std::vector<int> c(4, 0);
    for (int i = 0; i < 40000; ++i) ++c[picker->Pick({})];
    for (int x : c) EXPECT_NEAR(x, 10000, 1000) << name;
  }
}

}  // namespace
}  // namespace meshlib::lb
