// RegisterTyped on a real server: typed handlers fed by typed and raw
// clients, requests that do not decode, replies that do not encode, and
// handler errors.
#include "meshlib/stub/typed_server.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "meshlib/client/channel.h"
#include "meshlib/server/server.h"
#include "meshlib/stub/stub.h"
#include "nlohmann/json.hpp"

namespace geo {

struct Point {
  int x = 0;
  int y = 0;
  bool operator==(const Point& o) const { return x == o.x && y == o.y; }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Point, x, y)

struct Note {
  std::string text;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Note, text)

}  // namespace geo

namespace meshlib::stub {
namespace {

using geo::Point;
using ::testing::HasSubstr;

// A fixed-width codec: a uint16 as 2 little-endian bytes.
struct U16Codec {
  static absl::Status Encode(const uint16_t& v, std::string* out) {
    *out = {static_cast<char>(v & 0xff), static_cast<char>(v >> 8)};
    return absl::OkStatus();
  }
  static absl::Status Decode(absl::string_view bytes, uint16_t* out) {
    if (bytes.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat("want 2 bytes, got ", bytes.size()));
    }
    *out = static_cast<uint16_t>(static_cast<uint8_t>(bytes[0]) |
                                 (static_cast<uint8_t>(bytes[1]) << 8));
    return absl::OkStatus();
  }
};

class TypedServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE((RegisterTyped<Point, Point>(
                     server_, "Geo/Move",
                     [this](const Point& p, server::ServerCall& call) -> absl::StatusOr<Point> {
                       move_calls_.fetch_add(1);
                       if (p.x < 0) return absl::InvalidArgumentError("x must be >= 0");
                       call.AddResponseMetadata("has_deadline",
                                                call.deadline() == absl::InfiniteFuture() ? "no"
                                                                                          : "yes");
                       const int step = call.MetadataValue("step") == "10" ? 10 : 1;
                       return Point{p.x + step, p.y + step};
                     }))
                    .ok());
    ASSERT_TRUE((RegisterTyped<Point, geo::Note>(
                     server_, "Geo/Describe",
                     [](const Point& p, server::ServerCall&) -> absl::StatusOr<geo::Note> {
                       // A reply nlohmann_json refuses to write for x == 0.
                       return geo::Note{p.x == 0 ? "origin \xff" : absl::StrCat("x=", p.x)};
                     }))
                    .ok());
    ASSERT_TRUE((RegisterTyped<uint16_t, uint16_t, U16Codec, U16Codec>(
                     server_, "Num/Inc",
                     [](const uint16_t& v, server::ServerCall&) -> absl::StatusOr<uint16_t> {
                       return static_cast<uint16_t>(v + 1);
                     }))
                    .ok());
    absl::StatusOr<int> port = server_.Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok()) << port.status();
    auto channel = client::Channel::Create(server_.address(), {});
    ASSERT_TRUE(channel.ok()) << channel.status();
    channel_ = *std::move(channel);
  }

  static server::ServerOptions ServerOpts() {
    server::ServerOptions o;
    o.io_threads = 1;
    o.worker_threads = 2;
    return o;
  }

  server::Server server_{ServerOpts()};
  std::atomic<int> move_calls_{0};
  std::unique_ptr<client::Channel> channel_;
};

TEST_F(TypedServerTest, ServesTypedCallsWithMetadataAndDeadline) {
  Stub<Point, Point> move(*channel_, "Geo/Move");
  TypedResult<Point> r = move.CallWithDetails(
      {1, 2}, CallOptionsBuilder().Timeout(absl::Seconds(5)).AddMetadata("step", "10"));
  ASSERT_TRUE(r.ok()) << r.status;
  EXPECT_EQ(r.value, (Point{11, 12}));
  EXPECT_EQ(r.MetadataValue("has_deadline"), "yes");

  // A raw client speaks the same JSON.
  Stub<std::string, std::string> raw(*channel_, "Geo/Move");
  absl::StatusOr<std::string> text = raw.Call(R"({"x": 5, "y": 6})");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(nlohmann::json::parse(*text), nlohmann::json::parse(R"({"x": 6, "y": 7})"));
}

TEST_F(TypedServerTest, UndecodableRequestIsInvalidArgumentWithTheReason) {
  Stub<std::string, std::string> raw(*channel_, "Geo/Move");

  absl::StatusOr<std::string> r = raw.Call("{oops");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("Geo/Move: cannot decode request: "));
  EXPECT_THAT(r.status().message(), HasSubstr("parse error"));

  r = raw.Call(R"({"x": 1})");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("'y'"));

  r = raw.Call("");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(move_calls_.load(), 0) << "the handler must not see undecodable requests";

  Stub<std::string, std::string> bytes(*channel_, "Num/Inc");
  r = bytes.Call("abc");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("Num/Inc: cannot decode request: want 2 bytes, got 3"));
}

TEST_F(TypedServerTest, HandlerErrorIsSentUnchanged) {
  Stub<Point, Point> move(*channel_, "Geo/Move");
  absl::StatusOr<Point> r = move.Call({-1, 0});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "x must be >= 0");
  EXPECT_EQ(move_calls_.load(), 1);
}

TEST_F(TypedServerTest, UnencodableReplyIsInternal) {
  Stub<Point, geo::Note> describe(*channel_, "Geo/Describe");
  absl::StatusOr<geo::Note> ok = describe.Call({3, 0});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->text, "x=3");

  absl::StatusOr<geo::Note> r = describe.Call({0, 0});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(), HasSubstr("Geo/Describe: cannot encode reply: "));
  EXPECT_THAT(r.status().message(), HasSubstr("invalid UTF-8"));
}

TEST_F(TypedServerTest, FixedWidthCodecBothEnds) {
  Stub<uint16_t, uint16_t, U16Codec, U16Codec> inc(*channel_, "Num/Inc");
  absl::StatusOr<uint16_t> r = inc.Call(41);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, 42);
  r = inc.Call(0xffff);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, 0);
}

TEST(RegisterTypedTest, RegistrationErrors) {
  server::Server server;
  absl::Status st = RegisterTyped<Point, Point>(server, "Geo/Move", nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("Geo/Move"));

  auto same = [](const Point& p, server::ServerCall&) -> absl::StatusOr<Point> { return p; };
  EXPECT_TRUE((RegisterTyped<Point, Point>(server, "Geo/Same", same)).ok());
  EXPECT_EQ((RegisterTyped<Point, Point>(server, "Geo/Same", same)).code(),
            absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace meshlib::stub
