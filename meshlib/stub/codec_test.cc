// The codec concept and the built-in codecs: which codec a type gets by
// default, JSON round trips, and failures as statuses rather than exceptions.
#include "meshlib/stub/codec.h"

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace geo {

struct Point {
  int x = 0;
  int y = 0;
  bool operator==(const Point& o) const { return x == o.x && y == o.y; }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Point, x, y)

// Hand-written converters, the other way users give a type JSON.
struct Label {
  std::string text;
};
void to_json(nlohmann::json& j, const Label& l) { j = nlohmann::json{{"text", l.text}}; }
void from_json(const nlohmann::json& j, Label& l) { j.at("text").get_to(l.text); }

struct Exploding {};
void to_json(nlohmann::json&, const Exploding&) { throw std::runtime_error("boom in to_json"); }
void from_json(const nlohmann::json&, Exploding&) { throw 42; }  // not a std::exception

}  // namespace geo

namespace meshlib::stub {
namespace {

using ::testing::HasSubstr;

// A codec missing Decode: not a codec.
struct HalfCodec {
  static absl::Status Encode(const int&, std::string*) { return absl::OkStatus(); }
};

static_assert(std::is_base_of_v<BytesCodec, Codec<std::string>>);
static_assert(std::is_base_of_v<JsonCodec<nlohmann::json>, Codec<nlohmann::json>>);
static_assert(std::is_base_of_v<JsonCodec<geo::Point>, Codec<geo::Point>>);
static_assert(std::is_base_of_v<JsonCodec<geo::Label>, Codec<geo::Label>>);
// Only user types opt in to JSON by default; plain and standard types do not.
static_assert(!stub_internal::HasAdlJson<int>::value);
static_assert(!stub_internal::HasAdlJson<std::vector<int>>::value);
static_assert(!stub_internal::HasAdlJson<std::string>::value);
static_assert(IsCodecFor<Codec<geo::Point>, geo::Point>::value);
static_assert(IsCodecFor<JsonCodec<std::vector<int>>, std::vector<int>>::value);
static_assert(!IsCodecFor<HalfCodec, int>::value);
static_assert(!IsCodecFor<BytesCodec, int>::value);

TEST(BytesCodecTest, KeepsEveryByte) {
  const std::string bytes("a\0b\xff\n", 5);
  std::string wire;
  ASSERT_TRUE(Codec<std::string>::Encode(bytes, &wire).ok());
  EXPECT_EQ(wire, bytes);
  std::string back = "stale";
  ASSERT_TRUE(Codec<std::string>::Decode(wire, &back).ok());
  EXPECT_EQ(back, bytes);
}

TEST(JsonCodecTest, StructRoundTripsAsCompactJson) {
  std::string wire;
  ASSERT_TRUE(Codec<geo::Point>::Encode({3, -4}, &wire).ok());
  EXPECT_EQ(nlohmann::json::parse(wire), nlohmann::json::parse(R"({"x": 3, "y": -4})"));
  EXPECT_EQ(wire.find(' '), std::string::npos) << wire;
  geo::Point back;
  ASSERT_TRUE(Codec<geo::Point>::Decode(wire, &back).ok());
  EXPECT_EQ(back, (geo::Point{3, -4}));
}

TEST(JsonCodecTest, JsonValueAndStandardTypes) {
  nlohmann::json doc = {{"list", {1, 2, 3}}, {"name", "ü"}};
  std::string wire;
  ASSERT_TRUE(Codec<nlohmann::json>::Encode(doc, &wire).ok());
  nlohmann::json back;
  ASSERT_TRUE(Codec<nlohmann::json>::Decode(wire, &back).ok());
  EXPECT_EQ(back, doc);

  std::map<std::string, std::vector<int>> m = {{"a", {1}}, {"b", {2, 3}}};
  ASSERT_TRUE(JsonCodec<decltype(m)>::Encode(m, &wire).ok());
  EXPECT_EQ(wire, R"({"a":[1],"b":[2,3]})");
  decltype(m) m2;
  ASSERT_TRUE(JsonCodec<decltype(m)>::Decode(wire, &m2).ok());
  EXPECT_EQ(m2, m);
}

TEST(JsonCodecTest, InvalidUtf8IsAnEncodeErrorNotAnException) {
  std::string wire;
  absl::Status st = Codec<geo::Label>::Encode({"bad \xff byte"}, &wire);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("316"));
  EXPECT_THAT(st.message(), HasSubstr("invalid UTF-8"));
}

TEST(JsonCodecTest, ThrowingConvertersBecomeStatuses) {
  std::string wire;
  absl::Status st = Codec<geo::Exploding>::Encode({}, &wire);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("boom in to_json"));
  geo::Exploding e;
  st = Codec<geo::Exploding>::Decode("{}", &e);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("non-standard exception"));
}

TEST(JsonCodecTest, DecodeErrorsSayWhy) {
  geo::Point p;
  absl::Status st = Codec<geo::Point>::Decode("not json", &p);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("parse error"));

  st = Codec<geo::Point>::Decode("", &p);
  EXPECT_THAT(st.message(), HasSubstr("parse error"));

  st = Codec<geo::Point>::Decode(R"({"x": 1})", &p);  // no "y"
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("'y'"));

  st = Codec<geo::Point>::Decode(R"({"x": "one", "y": 2})", &p);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("type must be number"));

  st = Codec<geo::Point>::Decode(R"({"x": 1, "y": 2} trailing)", &p);
  EXPECT_FALSE(st.ok());
}

// The stub's guard around user codecs that throw despite the contract.
struct ThrowingCodec {
  static absl::Status Encode(const int&, std::string*) { throw std::logic_error("encode!"); }
  static absl::Status Decode(absl::string_view, int*) { throw "decode!"; }
};

TEST(SafeCodecTest, ExceptionsFromUserCodecsBecomeStatuses) {
  std::string wire;
  absl::Status st = stub_internal::SafeEncode<ThrowingCodec>(1, &wire);
  EXPECT_THAT(st.message(), HasSubstr("encode!"));
  int v = 0;
  st = stub_internal::SafeDecode<ThrowingCodec>("x", &v);
  EXPECT_FALSE(st.ok());
}

}  // namespace
}  // namespace meshlib::stub
