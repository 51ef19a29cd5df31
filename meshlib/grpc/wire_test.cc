#include "meshlib/grpc/wire.h"

#include <nghttp2/nghttp2.h>

#include <string>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace meshlib::grpc {
namespace {

TEST(GrpcWireTest, MessageRoundTrip) {
  std::string body;
  AppendMessage(&body, "hello");
  ASSERT_EQ(body.size(), 10u);
  EXPECT_EQ(body.substr(0, 5), std::string("\0\0\0\0\5", 5));
  absl::StatusOr<std::string> m = ParseUnaryMessage(body, 100);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, "hello");
  std::string empty;
  AppendMessage(&empty, "");
  EXPECT_EQ(*ParseUnaryMessage(empty, 100), "");
}

TEST(GrpcWireTest, BadBodiesNameTheProblem) {
  EXPECT_EQ(ParseUnaryMessage("", 100).status().code(), absl::StatusCode::kInternal);
  auto truncated = ParseUnaryMessage(std::string("\0\0\0", 3), 100);
  EXPECT_NE(truncated.status().message().find("prefix truncated"), std::string::npos);
  auto compressed = ParseUnaryMessage(std::string("\1\0\0\0\1x", 6), 100);
  EXPECT_NE(compressed.status().message().find("compressed"), std::string::npos);
  auto short_body = ParseUnaryMessage(std::string("\0\0\0\0\x09""abc", 8), 100);
  EXPECT_NE(short_body.status().message().find("truncated: 3 of 9"), std::string::npos);
  auto big = ParseUnaryMessage(std::string("\0\0\0\1\0", 5), 100);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  std::string two;
  AppendMessage(&two, "a");
  AppendMessage(&two, "b");
  EXPECT_NE(ParseUnaryMessage(two, 100).status().message().find("more than one"),
            std::string::npos);
  auto flag = ParseUnaryMessage(std::string("\7\0\0\0\0", 5), 100);
  EXPECT_NE(flag.status().message().find("invalid flag"), std::string::npos);
}

TEST(GrpcWireTest, TimeoutUsesFinestUnitThatFitsAndRoundsUp) {
  EXPECT_EQ(EncodeTimeout(absl::Milliseconds(50)), "50000000n");
  EXPECT_EQ(EncodeTimeout(absl::Milliseconds(250)), "250000u");  // 9 digits of ns: too many
  EXPECT_EQ(EncodeTimeout(absl::Seconds(30)), "30000000u");
  EXPECT_EQ(EncodeTimeout(absl::Seconds(100) + absl::Nanoseconds(1)), "100001m");
  EXPECT_EQ(EncodeTimeout(absl::Hours(24 * 365 * 20000)), "99999999H");
  EXPECT_EQ(EncodeTimeout(absl::ZeroDuration()), "1n");
  EXPECT_EQ(EncodeTimeout(-absl::Seconds(1)), "1n");
  for (absl::Duration d : {absl::Nanoseconds(7), absl::Microseconds(1234567),
                           absl::Milliseconds(987654321), absl::Minutes(3)}) {
    absl::StatusOr<absl::Duration> back = ParseTimeout(EncodeTimeout(d));
    ASSERT_TRUE(back.ok());
    EXPECT_GE(*back, d);
  }
}

TEST(GrpcWireTest, ParseTimeoutRejectsMalformedValues) {
  EXPECT_EQ(*ParseTimeout("5S"), absl::Seconds(5));
  EXPECT_EQ(*ParseTimeout("2H"), absl::Hours(2));
  EXPECT_EQ(*ParseTimeout("12345678m"), absl::Milliseconds(12345678));
  for (const char* bad : {"", "S", "123456789S", "10s", "1.5S", "-1S", "10", " 1S"}) {
    absl::StatusOr<absl::Duration> d = ParseTimeout(bad);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(GrpcWireTest, HttpStatusesMapAsGrpcDocuments) {
  EXPECT_EQ(CodeForHttpStatus(400), absl::StatusCode::kInternal);
  EXPECT_EQ(CodeForHttpStatus(401), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(CodeForHttpStatus(403), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CodeForHttpStatus(404), absl::StatusCode::kUnimplemented);
  for (int s : {429, 502, 503, 504}) {
    EXPECT_EQ(CodeForHttpStatus(s), absl::StatusCode::kUnavailable) << s;
  }
  EXPECT_EQ(CodeForHttpStatus(500), absl::StatusCode::kUnknown);
  EXPECT_EQ(CodeForHttpStatus(302), absl::StatusCode::kUnknown);
}

TEST(GrpcWireTest, ResetCodesMapAsGrpcDocuments) {
  bool np = false;
  absl::Status s = StatusForReset(NGHTTP2_REFUSED_STREAM, "10.0.0.1:50051", &np);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(np);
  EXPECT_NE(s.message().find("10.0.0.1:50051"), std::string::npos);
  EXPECT_EQ(StatusForReset(NGHTTP2_CANCEL, "p", &np).code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(np);
  EXPECT_EQ(StatusForReset(NGHTTP2_ENHANCE_YOUR_CALM, "p", &np).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(StatusForReset(NGHTTP2_INADEQUATE_SECURITY, "p", &np).code(),
            absl::StatusCode::kPermissionDenied);
  for (uint32_t c : {NGHTTP2_NO_ERROR, NGHTTP2_PROTOCOL_ERROR, NGHTTP2_INTERNAL_ERROR,
                     NGHTTP2_FLOW_CONTROL_ERROR, NGHTTP2_FRAME_SIZE_ERROR}) {
    EXPECT_EQ(StatusForReset(c, "p", &np).code(), absl::StatusCode::kInternal) << c;
    EXPECT_FALSE(np);
  }
}

TEST(GrpcWireTest, StatusCodesOutsideTheRangeAreUnknown) {
  EXPECT_EQ(ParseStatusCode("0"), absl::StatusCode::kOk);
  EXPECT_EQ(ParseStatusCode("14"), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ParseStatusCode("16"), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ParseStatusCode("17"), absl::StatusCode::kUnknown);
  EXPECT_EQ(ParseStatusCode("-1"), absl::StatusCode::kUnknown);
  EXPECT_EQ(ParseStatusCode("x"), absl::StatusCode::kUnknown);
}

TEST(GrpcWireTest, PercentEncodingRoundTrips) {
  const std::string msg = "50% done\n\xc3\xa9t\xc3\xa9";
  const std::string enc = PercentEncode(msg);
  EXPECT_EQ(enc, "50%25 done%0A%C3%A9t%C3%A9");
  EXPECT_EQ(PercentDecode(enc), msg);
  EXPECT_EQ(PercentDecode("100%"), "100%");      // a lone % stays
  EXPECT_EQ(PercentDecode("%zzok%4"), "%zzok%4");  // malformed escapes stay
}

TEST(GrpcWireTest, BinaryMetadataIsUnpaddedBase64AcceptedEitherWay) {
  EXPECT_TRUE(IsBinaryKey("trace-bin"));
  EXPECT_FALSE(IsBinaryKey("trace"));
  EXPECT_EQ(EncodeBinaryValue(std::string("\x00\x01", 2)), "AAE");
  EXPECT_EQ(*DecodeBinaryValue("AAE"), std::string("\x00\x01", 2));
  EXPECT_EQ(*DecodeBinaryValue("AAE="), std::string("\x00\x01", 2));
  EXPECT_FALSE(DecodeBinaryValue("!!!").ok());
}

TEST(GrpcWireTest, HeaderNames) {
  EXPECT_TRUE(IsValidMetadataKey("x-request-id"));
  EXPECT_TRUE(IsValidMetadataKey("a.b_c-9"));
  EXPECT_FALSE(IsValidMetadataKey(""));
  EXPECT_FALSE(IsValidMetadataKey("X-Upper"));
  EXPECT_FALSE(IsValidMetadataKey("bad key"));
  EXPECT_TRUE(IsReservedHeader(":path"));
  EXPECT_TRUE(IsReservedHeader("grpc-status"));
  EXPECT_FALSE(IsReservedHeader("x-user"));
}

}  // namespace
}  // namespace meshlib::grpc
