#include "meshlib/config/routing_config.h"

#include <array>

#include "gtest/gtest.h"

namespace meshlib::config {
namespace {

RouteMatch Method(std::string method, bool prefix) {
  RouteMatch m;
  m.method = std::move(method);
  m.method_prefix = prefix;
  return m;
}

TEST(RouteMatchesTest, EmptyMatchMatchesEveryCall) {
  EXPECT_TRUE(RouteMatches(RouteMatch{}, "Kv/Put", {}));
  EXPECT_TRUE(RouteMatches(RouteMatch{}, "", {{"a", "b"}}));
}

TEST(RouteMatchesTest, ExactMethod) {
  RouteMatch m = Method("Kv/Put", false);
  EXPECT_TRUE(RouteMatches(m, "Kv/Put", {}));
  EXPECT_FALSE(RouteMatches(m, "Kv/PutMany", {}));
  EXPECT_FALSE(RouteMatches(m, "Kv/Pu", {}));
  EXPECT_FALSE(RouteMatches(m, "kv/put", {}));  // case-sensitive
}

TEST(RouteMatchesTest, MethodPrefix) {
  RouteMatch m = Method("Kv/", true);
  EXPECT_TRUE(RouteMatches(m, "Kv/Put", {}));
  EXPECT_TRUE(RouteMatches(m, "Kv/", {}));
  EXPECT_FALSE(RouteMatches(m, "Kv", {}));
  EXPECT_FALSE(RouteMatches(m, "Echo/Say", {}));
  // "*" alone: every method.
  EXPECT_TRUE(RouteMatches(Method("", true), "Echo/Say", {}));
}

TEST(RouteMatchesTest, MetadataExactAndPresent) {
  RouteMatch m;
  m.metadata = {{"x-canary", "true"}, {"x-user", "*"}};
  EXPECT_TRUE(RouteMatches(m, "Echo/Say", {{"x-user", "42"}, {"x-canary", "true"}}));
  EXPECT_TRUE(RouteMatches(m, "Echo/Say", {{"x-user", ""}, {"x-canary", "true"}}));
  EXPECT_FALSE(RouteMatches(m, "Echo/Say", {{"x-canary", "true"}}));  // x-user absent
  EXPECT_FALSE(RouteMatches(m, "Echo/Say", {{"x-user", "1"}, {"x-canary", "TRUE"}}));
  EXPECT_FALSE(RouteMatches(m, "Echo/Say", {{"X-User", "1"}, {"x-canary", "true"}}));
  // A repeated key matches when any of its values does.
  EXPECT_TRUE(RouteMatches(m, "Echo/Say",
                           {{"x-canary", "false"}, {"x-user", "1"}, {"x-canary", "true"}}));
}

TEST(RouteMatchesTest, MethodAndMetadataMustBothMatch) {
  RouteMatch m = Method("Kv/", true);
  m.metadata = {{"x-canary", "true"}};
  EXPECT_TRUE(RouteMatches(m, "Kv/Get", {{"x-canary", "true"}}));
  EXPECT_FALSE(RouteMatches(m, "Kv/Get", {}));
  EXPECT_FALSE(RouteMatches(m, "Echo/Say", {{"x-canary", "true"}}));
}

discovery::Endpoint Ep(std::string zone, std::map<std::string, std::string> metadata) {
  discovery::Endpoint e;
  e.address = "127.0.0.1:1";
  e.zone = std::move(zone);
  e.metadata = std::move(metadata);
  return e;
}

TEST(SubsetMatchesTest, AllPairsMustMatchExactly) {
  SubsetConfig v2{"v2", {{"version", "v2"}, {"tier", "gold"}}};
  EXPECT_TRUE(SubsetMatches(v2, Ep("", {{"version", "v2"}, {"tier", "gold"}, {"x", "y"}})));
  EXPECT_FALSE(SubsetMatches(v2, Ep("", {{"version", "v2"}})));
  EXPECT_FALSE(SubsetMatches(v2, Ep("", {{"version", "v2"}, {"tier", "Gold"}})));
  EXPECT_FALSE(SubsetMatches(v2, Ep("", {})));
}

TEST(SubsetMatchesTest, EmptySubsetHoldsEveryEndpoint) {
  EXPECT_TRUE(SubsetMatches(SubsetConfig{"all", {}}, Ep("", {})));
  EXPECT_TRUE(SubsetMatches(SubsetConfig{"all", {}}, Ep("a", {{"version", "v1"}})));
}

TEST(SubsetMatchesTest, ZoneFallsBackToTheEndpointsZone) {
  SubsetConfig zone_a{"a", {{"version", "v2"}, {"zone", "a"}}};
  EXPECT_TRUE(SubsetMatches(zone_a, Ep("a", {{"version", "v2"}})));
  EXPECT_FALSE(SubsetMatches(zone_a, Ep("b", {{"version", "v2"}})));
  EXPECT_FALSE(SubsetMatches(zone_a, Ep("", {{"version", "v2"}})));
  // A "zone" metadata entry is what the endpoint says about itself there.
  EXPECT_TRUE(SubsetMatches(zone_a, Ep("", {{"version", "v2"}, {"zone", "a"}})));
  EXPECT_FALSE(SubsetMatches(zone_a, Ep("a", {{"version", "v2"}, {"zone", "b"}})));
  // Only "zone" falls back to a field.
  EXPECT_FALSE(SubsetMatches(SubsetConfig{"x", {{"address", "127.0.0.1:1"}}}, Ep("", {})));
}

TEST(ParseRoutesTest, DefaultNamesAndSubsetShorthand) {
  auto subsets = ParseSubsets(nlohmann::json::parse(R"({"b": {"v": "2"}, "a": {"v": "1"}})"),
                              "services.s.subsets");
  ASSERT_TRUE(subsets.ok()) << subsets.status();
  ASSERT_EQ(subsets->size(), 2u);
  EXPECT_EQ((*subsets)[0].name, "a");  // sorted
  auto routes = ParseRoutes(nlohmann::json::parse(R"([{"subset": "b"}, {"split": {"a": 3}}])"),
                            "services.s.routes", *subsets);
  ASSERT_TRUE(routes.ok()) << routes.status();
  ASSERT_EQ(routes->size(), 2u);
  EXPECT_EQ((*routes)[0].name, "routes[0]");
  EXPECT_EQ((*routes)[0].split, (std::vector<std::pair<std::string, uint32_t>>{{"b", 1}}));
  EXPECT_EQ((*routes)[1].name, "routes[1]");
  EXPECT_TRUE(RouteMatches((*routes)[1].match, "Any/Method", {}));
  // An empty list is no routing.
  auto none = ParseRoutes(nlohmann::json::array(), "services.s.routes", *subsets);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

RouteConfig Split(std::vector<std::pair<std::string, uint32_t>> split) {
  RouteConfig r;
  r.name = "r";
  r.split = std::move(split);
  return r;
}

TEST(PickSplitTest, DrawsByWeight) {
  RouteConfig r = Split({{"v1", 95}, {"v2", 5}, {"v3", 0}});
  auto all = [](size_t) { return true; };
  std::array<int, 3> counts{};
  // random64 spread evenly over [0, 2^64) (ceil(i * 2^64 / n)): exact shares.
  constexpr int kDraws = 10000;
  for (int i = 0; i < kDraws; ++i) {
    uint64_t random64 = static_cast<uint64_t>(
        ((static_cast<unsigned __int128>(i) << 64) + kDraws - 1) / kDraws);
    int k = PickSplit(r, random64, all);
    ASSERT_GE(k, 0);
    ++counts[k];
  }
  EXPECT_EQ(counts[0], 9500);
  EXPECT_EQ(counts[1], 500);
  EXPECT_EQ(counts[2], 0);  // weight 0 never drawn
  EXPECT_EQ(PickSplit(r, 0, all), 0);
  EXPECT_EQ(PickSplit(r, ~uint64_t{0}, all), 1);
}

TEST(PickSplitTest, LeavesOutUnusableEntries) {
  RouteConfig r = Split({{"v1", 95}, {"v2", 5}});
  auto only_v2 = [](size_t i) { return i == 1; };
  EXPECT_EQ(PickSplit(r, 0, only_v2), 1);
  EXPECT_EQ(PickSplit(r, ~uint64_t{0}, only_v2), 1);
  EXPECT_EQ(PickSplit(r, 0, [](size_t) { return false; }), -1);
  // Only a zero-weight entry usable: nothing to pick.
  RouteConfig zero = Split({{"v1", 0}, {"v2", 5}});
  EXPECT_EQ(PickSplit(zero, 0, [](size_t i) { return i == 0; }), -1);
}

}  // namespace
}  // namespace meshlib::config
