#include "meshlib/discovery/endpoint.h"

#include "gtest/gtest.h"

namespace meshlib::discovery {
namespace {

using json = nlohmann::json;

TEST(EndpointTest, CanonicalAddressAcceptsLiteralsOnly) {
  EXPECT_EQ(CanonicalAddress("127.0.0.1:7001").value(), "127.0.0.1:7001");
  EXPECT_EQ(CanonicalAddress("[0::1]:7001").value(), "[::1]:7001");
  EXPECT_FALSE(CanonicalAddress("127.0.0.1:0").ok());
  EXPECT_FALSE(CanonicalAddress("127.0.0.1").ok());
  EXPECT_FALSE(CanonicalAddress("example.com:80").ok());
  EXPECT_FALSE(CanonicalAddress("1.2.3.4:99999").ok());
}

TEST(EndpointTest, FromJsonStringAndObject) {
  auto a = EndpointFromJson(json("[::1]:80"), "x");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->address, "[::1]:80");
  EXPECT_EQ(a->weight, 1u);

  auto b = EndpointFromJson(
      json::parse(R"({"address":"10.0.0.1:9","weight":5,"priority":2,"zone":"b",
                      "metadata":{"version":"v2"}})"),
      "x");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->weight, 5u);
  EXPECT_EQ(b->priority, 2u);
  EXPECT_EQ(b->zone, "b");
  EXPECT_EQ(b->metadata.at("version"), "v2");
  EXPECT_EQ(EndpointFromJson(EndpointToJson(*b), "y").value(), *b);
}

TEST(EndpointTest, FromJsonErrorsNameTheField) {
  struct Case {
    const char* json;
    const char* message;
  } cases[] = {
      {R"(42)", "p: must be"},
      {R"({"weight":1})", "p.address: required"},
      {R"({"address":"1.2.3.4:5","weight":-1})", "p.weight: must be an integer"},
      {R"({"address":"1.2.3.4:5","colour":"red"})", "p.colour: unknown key"},
      {R"({"address":"1.2.3.4:5","metadata":{"a":1}})", "p.metadata.a: must be a string"},
      {R"({"address":"nohost"})", "p.address:"},
  };
  for (const Case& c : cases) {
    auto e = EndpointFromJson(json::parse(c.json), "p");
    ASSERT_FALSE(e.ok()) << c.json;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(e.status().message().find(c.message), std::string::npos)
        << c.json << " -> " << e.status();
  }
}

std::vector<Endpoint> Eps(std::initializer_list<const char*> addrs) {
  std::vector<Endpoint> v;
  for (const char* a : addrs) v.push_back(Endpoint{a});
  return v;
}

TEST(EndpointSetTest, SortedUniqueAndFindable) {
  auto set = EndpointSet::Create(Eps({"127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1"}));
  ASSERT_EQ(set->size(), 3u);
  EXPECT_EQ(set->ToString(), "127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3");
  ASSERT_NE(set->Find("127.0.0.1:2"), nullptr);
  EXPECT_EQ(set->Find("127.0.0.1:4"), nullptr);
}

TEST(EndpointSetTest, DiffFindsAddedRemovedChanged) {
  auto a = EndpointSet::Create(Eps({"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
  auto v = Eps({"127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"});
  v[1].weight = 7;
  auto b = EndpointSet::Create(v);
  EndpointSetDiff d = Diff(a.get(), *b);
  ASSERT_EQ(d.added.size(), 1u);
  EXPECT_EQ(d.added[0]->address, "127.0.0.1:4");
  ASSERT_EQ(d.removed.size(), 1u);
  EXPECT_EQ(d.removed[0]->address, "127.0.0.1:1");
  ASSERT_EQ(d.changed.size(), 1u);
  EXPECT_EQ(d.changed[0]->weight, 7u);
  EXPECT_TRUE(Diff(b.get(), *b).empty());
  EXPECT_EQ(Diff(nullptr, *b).added.size(), 3u);
}

}  // namespace
}  // namespace meshlib::discovery
