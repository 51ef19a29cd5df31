#include "meshlib/transport/frame.h"

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshlib::transport {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// Decodes exactly one frame that fills all of `wire`.
FrameView DecodeWhole(absl::string_view wire, const FrameLimits& limits = {}) {
  FrameView f;
  size_t used = 12345;
  absl::Status s = DecodeFrame(wire, limits, &f, &used);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(used, wire.size());
  return f;
}

// Appends a protobuf-style varint, independently of frame.cc's encoder.
std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}

std::string Header(uint8_t version, uint8_t type, uint16_t flags,
                   uint32_t stream_id, uint32_t length) {
  std::string h;
  h.push_back(static_cast<char>(version));
  h.push_back(static_cast<char>(type));
  h.push_back(static_cast<char>(flags >> 8));
  h.push_back(static_cast<char>(flags));
  for (uint32_t v : {stream_id, length}) {
    h.push_back(static_cast<char>(v >> 24));
    h.push_back(static_cast<char>(v >> 16));
    h.push_back(static_cast<char>(v >> 8));
    h.push_back(static_cast<char>(v));
  }
  return h;
}

const std::string kBinaryPayload("\0a\0\xff\x01\x80\0", 7);

// --- encoding layout ---

TEST(FrameEncodeTest, RequestHeaderLayoutIsBigEndian) {
  std::string wire;
  AppendRequest(&wire, 0x01020304, "m", absl::InfiniteDuration(), {}, "");
  // body = method "m" (2 bytes) + deadline 0 (1) + metadata count 0 (1).
  EXPECT_EQ(wire, Header(1, 1, 0, 0x01020304, 4) + std::string("\x01m\x00\x00", 4));
}

// The worked example at the end of docs/protocol.md, byte for byte.
TEST(FrameEncodeTest, MatchesTheProtocolSpecExample) {
  const std::string request_bytes(
      "\x01\x01\x00\x00\x00\x00\x00\x01\x00\x00\x00\x0f"  // header
      "\x08" "Echo/Say"                                    // method
      "\x90\xa1\x0f"                                       // timeout_us 250000
      "\x00"                                               // no metadata
      "hi",
      27);
  std::string wire;
  AppendRequest(&wire, 1, "Echo/Say", absl::Milliseconds(250), {}, "hi");
  EXPECT_EQ(wire, request_bytes);

  const std::string response_bytes(
      "\x01\x02\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05"  // header
      "\x00\x00\x00"                                       // OK, "", no metadata
      "hi",
      17);
  wire.clear();
  AppendResponse(&wire, 1, 0, absl::StatusCode::kOk, "", {}, "hi");
  EXPECT_EQ(wire, response_bytes);
}

TEST(FrameEncodeTest, RequestFrameSizeEqualsAppendedSize) {
  const Metadata big_md = {{"k", "v"}, {std::string(200, 'x'), std::string(300, 'y')}};
  struct Case {
    std::string method;
    absl::Duration timeout;
    Metadata md;
    std::string payload;
  };
  const Case cases[] = {
      {"a", absl::InfiniteDuration(), {}, ""},
      {"Echo/Say", absl::Milliseconds(250), {{"trace", "1"}}, "hi"},
      {std::string(200, 'm'), absl::Hours(24), big_md, std::string(1000, 'p')},
      {"x", absl::Nanoseconds(1), {}, kBinaryPayload},
      {"x", -absl::Seconds(3), {}, ""},
  };
  for (const Case& c : cases) {
    std::string wire = "prefix";  // appends, does not overwrite
    AppendRequest(&wire, 7, c.method, c.timeout, c.md, c.payload);
    EXPECT_EQ(RequestFrameSize(c.method, c.timeout, c.md, c.payload),
              wire.size() - 6)
        << c.method.size() << " " << c.timeout;
  }
}

// --- round trips ---

TEST(FrameRoundTripTest, RequestWithDeadlineMetadataAndBinaryPayload) {
  std::string wire;
  const Metadata md = {{"trace-id", "abc"}, {"bin", std::string("\0\1", 2)}, {"", ""}};
  AppendRequest(&wire, 42, "Echo/Say", absl::Milliseconds(250), md, kBinaryPayload);

  FrameView f = DecodeWhole(wire);
  EXPECT_EQ(f.header.version, kProtocolVersion);
  EXPECT_EQ(f.header.type, static_cast<uint8_t>(FrameType::kRequest));
  EXPECT_EQ(f.header.flags, 0);
  EXPECT_EQ(f.header.stream_id, 42u);
  EXPECT_EQ(f.header.length, wire.size() - kFrameHeaderSize);
  EXPECT_STREQ(FrameTypeName(f.header.type), "REQUEST");

  absl::StatusOr<Request> req = ParseRequestBody(f.body, FrameLimits{});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->method, "Echo/Say");
  EXPECT_EQ(req->timeout, absl::Milliseconds(250));
  EXPECT_THAT(req->metadata,
              ElementsAre(Pair("trace-id", "abc"), Pair("bin", std::string("\0\1", 2)),
                          Pair("", "")));
  EXPECT_EQ(req->payload, kBinaryPayload);
  EXPECT_EQ(req->payload.size(), 7u);
}

TEST(FrameRoundTripTest, RequestWithoutDeadlineAndEmptyPayload) {
  std::string wire;
  AppendRequest(&wire, 1, "Svc/M", absl::InfiniteDuration(), {}, "");
  FrameView f = DecodeWhole(wire);
  absl::StatusOr<Request> req = ParseRequestBody(f.body, FrameLimits{});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->method, "Svc/M");
  EXPECT_EQ(req->timeout, absl::InfiniteDuration());
  EXPECT_TRUE(req->metadata.empty());
  EXPECT_EQ(req->payload, "");
}

TEST(FrameRoundTripTest, RequestTimeoutsAreMicrosecondsAndNeverZero) {
  // Zero means "no deadline" on the wire, so an expired or sub-microsecond
  // timeout must still arrive as a (tiny) deadline, not as none.
  for (absl::Duration t : {absl::ZeroDuration(), -absl::Seconds(1), absl::Nanoseconds(10)}) {
    std::string wire;
    AppendRequest(&wire, 1, "m", t, {}, "");
    absl::StatusOr<Request> req = ParseRequestBody(DecodeWhole(wire).body, FrameLimits{});
    ASSERT_TRUE(req.ok()) << req.status();
    EXPECT_EQ(req->timeout, absl::Microseconds(1)) << t;
  }
  std::string wire;
  AppendRequest(&wire, 1, "m", absl::Microseconds(1234567), {}, "");
  absl::StatusOr<Request> req = ParseRequestBody(DecodeWhole(wire).body, FrameLimits{});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->timeout, absl::Microseconds(1234567));
}

// A caller that asks for a very long timeout (a common way to say "no
// deadline, really") must not get a frame the receiving side rejects as
// malformed: the encoder and the decoder must agree on the range.
TEST(FrameRoundTripTest, HugeTimeoutStillDecodes) {
  const absl::Duration kTwoHundredYears = absl::Hours(24 * 365 * 200);
  std::string wire;
  AppendRequest(&wire, 1, "m", kTwoHundredYears, {}, "");
  absl::StatusOr<Request> req = ParseRequestBody(DecodeWhole(wire).body, FrameLimits{});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_GE(req->timeout, absl::Hours(24 * 365 * 100));
}

TEST(FrameRoundTripTest, ResponseWithEveryStatusCodeAndRefusedFlag) {
  const Metadata md = {{"retry-after", "5"}};
  for (int c = 0; c <= 16; ++c) {
    for (uint16_t flags : {uint16_t{0}, kFlagRefused}) {
      const auto code = static_cast<absl::StatusCode>(c);
      std::string wire;
      AppendResponse(&wire, 9, flags, code, "overloaded", md, kBinaryPayload);
      FrameView f = DecodeWhole(wire);
      EXPECT_EQ(f.header.type, static_cast<uint8_t>(FrameType::kResponse));
      EXPECT_EQ(f.header.flags, flags);
      EXPECT_EQ(f.header.stream_id, 9u);
      absl::StatusOr<Response> resp = ParseResponseBody(f.body, FrameLimits{});
      ASSERT_TRUE(resp.ok()) << resp.status();
      EXPECT_EQ(resp->code, code);
      EXPECT_EQ(resp->message, "overloaded");
      EXPECT_THAT(resp->metadata, ElementsAre(Pair("retry-after", "5")));
      EXPECT_EQ(resp->payload, kBinaryPayload);
    }
  }
}

TEST(FrameRoundTripTest, ResponseMessageWithNulBytesAndEmptyPayload) {
  const std::string message("bad\0byte", 8);
  std::string wire;
  AppendResponse(&wire, 3, 0, absl::StatusCode::kInvalidArgument, message, {}, "");
  absl::StatusOr<Response> resp = ParseResponseBody(DecodeWhole(wire).body, FrameLimits{});
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(resp->code, absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(resp->message, message);
  EXPECT_TRUE(resp->metadata.empty());
  EXPECT_EQ(resp->payload, "");
}

TEST(FrameRoundTripTest, Cancel) {
  std::string wire;
  AppendCancel(&wire, 0xfffffffe);
  EXPECT_EQ(wire.size(), kFrameHeaderSize);
  FrameView f = DecodeWhole(wire);
  EXPECT_EQ(f.header.type, static_cast<uint8_t>(FrameType::kCancel));
  EXPECT_EQ(f.header.stream_id, 0xfffffffeu);
  EXPECT_EQ(f.header.length, 0u);
  EXPECT_TRUE(f.body.empty());
  EXPECT_STREQ(FrameTypeName(f.header.type), "CANCEL");
}

TEST(FrameRoundTripTest, PingAndAck) {
  for (bool ack : {false, true}) {
    std::string wire;
    AppendPing(&wire, ack, 0x0102030405060708ull);
    FrameView f = DecodeWhole(wire);
    EXPECT_EQ(f.header.type, static_cast<uint8_t>(FrameType::kPing));
    EXPECT_EQ(f.header.flags, ack ? kFlagPingAck : 0);
    EXPECT_EQ(f.header.stream_id, 0u);
    EXPECT_EQ(f.body, absl::string_view("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
    EXPECT_STREQ(FrameTypeName(f.header.type), "PING");
  }
}

TEST(FrameRoundTripTest, GoAway) {
  std::string wire;
  AppendGoAway(&wire, 0x80000001, absl::StatusCode::kUnavailable, "draining");
  FrameView f = DecodeWhole(wire);
  EXPECT_EQ(f.header.type, static_cast<uint8_t>(FrameType::kGoAway));
  EXPECT_EQ(f.header.stream_id, 0u);
  EXPECT_STREQ(FrameTypeName(f.header.type), "GOAWAY");
  absl::StatusOr<GoAway> g = ParseGoAwayBody(f.body);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->last_stream_id, 0x80000001u);
  EXPECT_EQ(g->code, absl::StatusCode::kUnavailable);
  EXPECT_EQ(g->message, "draining");

  wire.clear();
  AppendGoAway(&wire, 0, absl::StatusCode::kOk, "");
  g = ParseGoAwayBody(DecodeWhole(wire).body);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->last_stream_id, 0u);
  EXPECT_EQ(g->code, absl::StatusCode::kOk);
  EXPECT_EQ(g->message, "");
}

// --- incremental decoding ---

std::string OneOfEachFrame() {
  std::string wire;
  AppendRequest(&wire, 1, "Echo/Say", absl::Seconds(1), {{"k", "v"}}, kBinaryPayload);
  AppendResponse(&wire, 1, kFlagRefused, absl::StatusCode::kResourceExhausted, "shed",
                 {{"a", "b"}}, "x");
  AppendCancel(&wire, 3);
  AppendPing(&wire, true, 99);
  AppendGoAway(&wire, 5, absl::StatusCode::kUnavailable, "bye");
  return wire;
}

TEST(FrameDecodeTest, EmptyInputNeedsMore) {
  FrameView f;
  size_t used = 7;
  EXPECT_TRUE(DecodeFrame("", FrameLimits{}, &f, &used).ok());
  EXPECT_EQ(used, 0u);
}

TEST(FrameDecodeTest, EveryStrictPrefixNeedsMore) {
  std::string frames[5];
  AppendRequest(&frames[0], 1, "Echo/Say", absl::Seconds(1), {{"k", "v"}}, kBinaryPayload);
  AppendResponse(&frames[1], 1, 0, absl::StatusCode::kOk, "", {}, "");
  AppendCancel(&frames[2], 3);
  AppendPing(&frames[3], false, 1);
  AppendGoAway(&frames[4], 5, absl::StatusCode::kUnavailable, "bye");
  for (const std::string& frame : frames) {
    for (size_t n = 0; n < frame.size(); ++n) {
      FrameView f;
      size_t used = 99;
      absl::Status s = DecodeFrame(absl::string_view(frame).substr(0, n), FrameLimits{},
                                   &f, &used);
      EXPECT_TRUE(s.ok()) << "prefix " << n << " of " << frame.size() << ": " << s;
      EXPECT_EQ(used, 0u) << "prefix " << n << " of " << frame.size();
    }
  }
}

TEST(FrameDecodeTest, SplitAtEveryByteReassemblesTheSameFrames) {
  const std::string wire = OneOfEachFrame();
  for (size_t split = 0; split <= wire.size(); ++split) {
    // Feed the first `split` bytes, then the rest, as a reader would.
    std::string buffer = wire.substr(0, split);
    std::vector<uint8_t> types;
    size_t fed = split;
    for (;;) {
      FrameView f;
      size_t used;
      ASSERT_TRUE(DecodeFrame(buffer, FrameLimits{}, &f, &used).ok());
      if (used == 0) {
        if (fed == wire.size()) break;
        buffer += wire.substr(fed);
        fed = wire.size();
        continue;
      }
      types.push_back(f.header.type);
      buffer.erase(0, used);
    }
    EXPECT_TRUE(buffer.empty()) << "split " << split;
    EXPECT_THAT(types, ElementsAre(1, 2, 3, 4, 5)) << "split " << split;
  }
}

TEST(FrameDecodeTest, TwoFramesBackToBack) {
  std::string wire;
  AppendPing(&wire, false, 7);
  const size_t first = wire.size();
  AppendRequest(&wire, 11, "A/B", absl::InfiniteDuration(), {}, "body");

  FrameView f;
  size_t used;
  ASSERT_TRUE(DecodeFrame(wire, FrameLimits{}, &f, &used).ok());
  EXPECT_EQ(used, first);
  EXPECT_EQ(f.header.type, static_cast<uint8_t>(FrameType::kPing));

  absl::string_view rest = absl::string_view(wire).substr(used);
  ASSERT_TRUE(DecodeFrame(rest, FrameLimits{}, &f, &used).ok());
  EXPECT_EQ(used, rest.size());
  EXPECT_EQ(f.header.type, static_cast<uint8_t>(FrameType::kRequest));
  EXPECT_EQ(f.header.stream_id, 11u);
  absl::StatusOr<Request> req = ParseRequestBody(f.body, FrameLimits{});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->method, "A/B");
  EXPECT_EQ(req->payload, "body");  // the body ends where the frame ends
}

TEST(FrameDecodeTest, WrongVersionFailsOnTheFirstByte) {
  for (uint8_t version : {0, 2, 0x47 /* 'G' of "GET / HTTP" */, 0xff}) {
    FrameView f;
    size_t used = 99;
    const std::string one(1, static_cast<char>(version));
    absl::Status s = DecodeFrame(one, FrameLimits{}, &f, &used);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << int{version};
    EXPECT_THAT(std::string(s.message()), HasSubstr("version " + std::to_string(version)));
    EXPECT_EQ(used, 0u);

    // Same with a whole, otherwise valid frame behind it.
    std::string wire;
    AppendCancel(&wire, 1);
    wire[0] = static_cast<char>(version);
    s = DecodeFrame(wire, FrameLimits{}, &f, &used);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("version"));
  }
}

TEST(FrameDecodeTest, OversizedLengthFailsFromTheHeaderAlone) {
  FrameLimits limits;
  limits.max_frame_size = 4096;
  const std::string header = Header(1, 1, 0, 77, 4097);
  for (size_t n = 1; n < kFrameHeaderSize; ++n) {
    FrameView f;
    size_t used = 99;
    EXPECT_TRUE(DecodeFrame(header.substr(0, n), limits, &f, &used).ok()) << n;
    EXPECT_EQ(used, 0u);
  }
  FrameView f;
  size_t used = 99;
  absl::Status s = DecodeFrame(header, limits, &f, &used);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("max_frame_size"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("4096"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("4097"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("REQUEST"));
  EXPECT_EQ(used, 0u);

  // Default limit: 16 MiB + 1 is refused, with no body bytes present.
  s = DecodeFrame(Header(1, 2, 0, 1, kDefaultMaxFrameSize + 1), FrameLimits{}, &f, &used);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr(std::to_string(kDefaultMaxFrameSize)));
  s = DecodeFrame(Header(1, 2, 0, 1, 0xffffffff), FrameLimits{}, &f, &used);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
}

TEST(FrameDecodeTest, LengthExactlyAtTheLimitIsAccepted) {
  FrameLimits limits;
  limits.max_frame_size = 16;
  std::string wire = Header(1, 4, 0, 0, 16) + std::string(16, 'z');
  FrameView f;
  size_t used;
  ASSERT_TRUE(DecodeFrame(wire, limits, &f, &used).ok());
  EXPECT_EQ(used, kFrameHeaderSize + 16);
  EXPECT_EQ(f.body, std::string(16, 'z'));
}

TEST(FrameDecodeTest, UnknownFrameTypesDecode) {
  for (uint8_t type : {0, 6, 0x7f, 0xff}) {
    const std::string wire = Header(1, type, 0xabcd, 5, 3) + "xyz";
    FrameView f;
    size_t used;
    absl::Status s = DecodeFrame(wire, FrameLimits{}, &f, &used);
    ASSERT_TRUE(s.ok()) << int{type} << ": " << s;
    EXPECT_EQ(used, wire.size());
    EXPECT_EQ(f.header.type, type);
    EXPECT_EQ(f.header.flags, 0xabcd);
    EXPECT_EQ(f.header.stream_id, 5u);
    EXPECT_EQ(f.body, "xyz");
    EXPECT_STREQ(FrameTypeName(type), "UNKNOWN");
  }
}

// --- body parser errors ---

void ExpectInvalid(const absl::Status& s, absl::string_view needle) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(std::string(needle)));
}

TEST(FrameParseErrorTest, TruncatedVarint) {
  ExpectInvalid(ParseRequestBody("", FrameLimits{}).status(), "method: truncated varint");
  ExpectInvalid(ParseRequestBody("\x85", FrameLimits{}).status(),
                "method: truncated varint");
  ExpectInvalid(ParseRequestBody("\x01m\x80", FrameLimits{}).status(),
                "deadline: truncated varint");
  ExpectInvalid(ParseRequestBody(absl::string_view("\x01m\x00", 3), FrameLimits{}).status(),
                "metadata count: truncated varint");
  ExpectInvalid(ParseResponseBody("", FrameLimits{}).status(),
                "status code: truncated varint");
  ExpectInvalid(ParseGoAwayBody(absl::string_view("\0\0\0\1", 4)).status(),
                "GOAWAY code: truncated varint");
}

TEST(FrameParseErrorTest, ElevenByteVarintOverflows) {
  const std::string eleven = std::string(10, '\x80') + "\x01";
  ExpectInvalid(ParseResponseBody(eleven, FrameLimits{}).status(),
                "status code: varint overflows 64 bits");
  ExpectInvalid(ParseRequestBody(eleven, FrameLimits{}).status(),
                "method: varint overflows 64 bits");
  // The 10th byte may carry only bit 63.
  const std::string ten_too_big = std::string(9, '\xff') + "\x02";
  ExpectInvalid(ParseResponseBody(ten_too_big, FrameLimits{}).status(),
                "status code: varint overflows 64 bits");
  // The largest 10-byte varint is 2^64-1: it parses, then is out of range.
  const std::string max = std::string(9, '\xff') + "\x01";
  ExpectInvalid(ParseResponseBody(max, FrameLimits{}).status(),
                "status code: 18446744073709551615");
}

TEST(FrameParseErrorTest, MethodLengthPastTheBodyEnd) {
  absl::Status s = ParseRequestBody("\x05" "ab", FrameLimits{}).status();
  ExpectInvalid(s, "method: length 5");
  ExpectInvalid(s, "2 bytes left");
}

TEST(FrameParseErrorTest, MethodLongerThanTheLimit) {
  FrameLimits limits;
  limits.max_method_length = 4;
  const std::string body = std::string("\x05" "hello", 6) + Varint(0) + Varint(0);
  absl::Status s = ParseRequestBody(body, limits).status();
  ExpectInvalid(s, "method: length 5 exceeds the limit of 4");
  // At the limit it is fine.
  const std::string ok = std::string("\x04" "hell", 5) + Varint(0) + Varint(0);
  absl::StatusOr<Request> req = ParseRequestBody(ok, limits);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->method, "hell");
}

TEST(FrameParseErrorTest, EmptyMethod) {
  ExpectInvalid(ParseRequestBody(absl::string_view("\0\0\0", 3), FrameLimits{}).status(),
                "method: empty");
}

TEST(FrameParseErrorTest, MetadataCountOverTheLimit) {
  FrameLimits limits;
  limits.max_metadata_entries = 2;
  // Three (empty) entries are present; the count alone is over the limit.
  const std::string body = "\x01m" + Varint(0) + Varint(3) + std::string(6, '\0');
  ExpectInvalid(ParseRequestBody(body, limits).status(),
                "metadata count 3 exceeds the limit of 2");
  ExpectInvalid(ParseResponseBody(Varint(0) + Varint(0) + Varint(3) + std::string(6, '\0'),
                                  limits)
                    .status(),
                "metadata count 3 exceeds the limit of 2");
  // A count of 2^63 must fail on the limit, not try to allocate.
  ExpectInvalid(ParseRequestBody("\x01m" + Varint(0) + Varint(uint64_t{1} << 63),
                                 FrameLimits{})
                    .status(),
                "metadata count 9223372036854775808 exceeds the limit of 64");
}

TEST(FrameParseErrorTest, MetadataCountTheBodyCannotHoldIsRejectedBeforeAllocating) {
  FrameLimits limits;
  limits.max_metadata_entries = 1'000'000;
  // 1000 entries need at least 2000 bytes; only 4 follow.
  ExpectInvalid(ParseRequestBody("\x01m" + Varint(0) + Varint(1000) + std::string(4, '\0'),
                                 limits)
                    .status(),
                "metadata count 1000 cannot fit in the 4 bytes left");
}

TEST(FrameParseErrorTest, MetadataKeyOrValueLengthPastTheEnd) {
  const std::string prefix = "\x01m" + Varint(0) + Varint(1);
  ExpectInvalid(ParseRequestBody(prefix + Varint(9) + "ab", FrameLimits{}).status(),
                "metadata key: length 9 exceeds the 2 bytes left");
  ExpectInvalid(ParseRequestBody(prefix + Varint(1) + "k" + Varint(4) + "v", FrameLimits{})
                    .status(),
                "metadata value: length 4 exceeds the 1 bytes left");
  // Count says 2, only one entry present.
  ExpectInvalid(ParseRequestBody("\x01m" + Varint(0) + Varint(2) + Varint(1) + "k" +
                                     Varint(1) + "v",
                                 FrameLimits{})
                    .status(),
                "metadata key: truncated varint");
}

TEST(FrameParseErrorTest, StatusCodeOutOfRange) {
  const std::string rest = Varint(0) + Varint(0);
  ExpectInvalid(ParseResponseBody(Varint(17) + rest, FrameLimits{}).status(),
                "status code: 17");
  absl::StatusOr<Response> ok = ParseResponseBody(Varint(16) + rest, FrameLimits{});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->code, absl::StatusCode::kUnauthenticated);

  ExpectInvalid(ParseGoAwayBody(std::string("\0\0\0\1", 4) + Varint(17) + Varint(0)).status(),
                "GOAWAY code: 17");
}

TEST(FrameParseErrorTest, StatusMessagePastTheEnd) {
  ExpectInvalid(ParseResponseBody(Varint(2) + Varint(10) + "short", FrameLimits{}).status(),
                "status message: length 10");
  ExpectInvalid(ParseGoAwayBody(std::string("\0\0\0\1", 4) + Varint(2) + Varint(10) + "abc")
                    .status(),
                "GOAWAY message: length 10");
}

TEST(FrameParseErrorTest, DeadlineOutOfRange) {
  const uint64_t kMax = uint64_t{1} << 52;
  const std::string tail = Varint(0);  // no metadata
  ExpectInvalid(ParseRequestBody("\x01m" + Varint(kMax + 1) + tail, FrameLimits{}).status(),
                "deadline: 4503599627370497us is out of range");
  ExpectInvalid(ParseRequestBody("\x01m" + Varint(~uint64_t{0}) + tail, FrameLimits{}).status(),
                "deadline:");
  absl::StatusOr<Request> ok = ParseRequestBody("\x01m" + Varint(kMax) + tail, FrameLimits{});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->timeout, absl::Microseconds(static_cast<int64_t>(kMax)));
}

TEST(FrameParseErrorTest, GoAwayShorterThanFourBytes) {
  for (size_t n = 0; n < 4; ++n) {
    ExpectInvalid(ParseGoAwayBody(std::string(n, '\0')).status(), "GOAWAY");
    ExpectInvalid(ParseGoAwayBody(std::string(n, '\0')).status(), "4 bytes");
  }
}

}  // namespace
}  // namespace meshlib::transport
