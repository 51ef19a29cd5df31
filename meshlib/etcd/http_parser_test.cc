#include "meshlib/etcd/http_parser.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace meshlib::etcd {
namespace {

struct Parsed {
  absl::Status status;  // of the last Feed, or of OnEof when `eof`
  std::string body;
  bool complete = false;
  int code = 0;
};

// Feeds `in` in pieces of `step` bytes (0: all at once), then EOF if `eof`.
Parsed Parse(absl::string_view in, size_t step = 0, bool eof = false,
             HttpParserLimits limits = {}) {
  HttpResponseParser p(limits);
  Parsed out;
  if (step == 0) step = in.size() == 0 ? 1 : in.size();
  for (size_t i = 0; i < in.size() && out.status.ok(); i += step) {
    out.status = p.Feed(in.substr(i, step), &out.body);
  }
  if (eof && out.status.ok()) out.status = p.OnEof();
  out.complete = p.complete();
  out.code = p.head_complete() ? p.status_code() : 0;
  return out;
}

void ExpectError(absl::string_view in, absl::string_view message_part,
                 absl::StatusCode code = absl::StatusCode::kInvalidArgument,
                 HttpParserLimits limits = {}) {
  // Whichever way the bytes are split, the verdict is the same.
  for (size_t step : {size_t{0}, size_t{1}, size_t{7}}) {
    Parsed p = Parse(in, step, /*eof=*/true, limits);
    EXPECT_EQ(p.status.code(), code) << "step " << step << ": " << p.status;
    EXPECT_TRUE(absl::StrContains(p.status.message(), message_part))
        << "step " << step << ": " << p.status << " (wanted \"" << message_part << "\")";
    EXPECT_FALSE(p.complete);
  }
}

TEST(HttpParserTest, ContentLengthBodyInAnySplit) {
  const std::string in =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
      "{\"a\":\"bc\"}\n";
  for (size_t step : {0, 1, 2, 3, 5, 64}) {
    Parsed p = Parse(in, step);
    ASSERT_TRUE(p.status.ok()) << step << ": " << p.status;
    EXPECT_TRUE(p.complete);
    EXPECT_EQ(p.code, 200);
    EXPECT_EQ(p.body, "{\"a\":\"bc\"}\n");
  }
  HttpResponseParser p;
  std::string body;
  ASSERT_TRUE(p.Feed(in, &body).ok());
  ASSERT_NE(p.FindHeader("content-type"), nullptr);
  EXPECT_EQ(*p.FindHeader("CONTENT-TYPE"), "application/json");
  EXPECT_EQ(p.reason(), "OK");
  EXPECT_EQ(p.minor_version(), 1);
  EXPECT_EQ(p.FindHeader("x-missing"), nullptr);
}

TEST(HttpParserTest, ChunkedWithExtensionsAndTrailers) {
  // As etcd's gateway sends an error: chunked, then a trailer.
  const std::string in =
      "HTTP/1.1 404 Not Found\r\nTrailer: Grpc-Trailer-Content-Type\r\n"
      "Transfer-Encoding: chunked\r\n\r\n"
      "5;name=value\r\nhello\r\n"
      "0000000000000000007\r\n, world\r\n"
      "0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n";
  for (size_t step : {0, 1, 3, 10}) {
    Parsed p = Parse(in, step);
    ASSERT_TRUE(p.status.ok()) << step << ": " << p.status;
    EXPECT_TRUE(p.complete);
    EXPECT_EQ(p.code, 404);
    EXPECT_EQ(p.body, "hello, world");
  }
  HttpResponseParser p;
  std::string body;
  ASSERT_TRUE(p.Feed(in, &body).ok());
  ASSERT_EQ(p.trailers().size(), 1u);
  EXPECT_EQ(p.trailers()[0].value, "application/grpc");
}

TEST(HttpParserTest, StreamDeliversChunksAsTheyArrive) {
  HttpParserLimits unlimited;
  unlimited.max_body_bytes = 0;
  HttpResponseParser p(unlimited);
  std::string body;
  ASSERT_TRUE(p.Feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &body).ok());
  EXPECT_TRUE(p.head_complete());
  EXPECT_EQ(body, "");
  ASSERT_TRUE(p.Feed("4\r\nab", &body).ok());
  EXPECT_EQ(body, "ab");  // part of a chunk is delivered, not held back
  ASSERT_TRUE(p.Feed("cd\r\n3\r\nefg\r", &body).ok());
  EXPECT_EQ(body, "abcdefg");
  EXPECT_FALSE(p.complete());
  ASSERT_TRUE(p.Feed("\n0\r\n\r\n", &body).ok());
  EXPECT_TRUE(p.complete());
}

TEST(HttpParserTest, BodyUntilCloseAndNoBodyStatuses) {
  Parsed p = Parse("HTTP/1.0 200 OK\r\n\r\nall of it", 0, /*eof=*/true);
  ASSERT_TRUE(p.status.ok()) << p.status;
  EXPECT_TRUE(p.complete);
  EXPECT_EQ(p.body, "all of it");
  // 204 and 304 have no body, whatever Content-Length says.
  p = Parse("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n");
  EXPECT_TRUE(p.status.ok() && p.complete) << p.status;
  // A 100 Continue before the real response is skipped.
  p = Parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1);
  EXPECT_TRUE(p.status.ok() && p.complete) << p.status;
  EXPECT_EQ(p.code, 200);
  EXPECT_EQ(p.body, "ok");
  // Empty reason phrase; equal repeated lengths.
  p = Parse("HTTP/1.1 200\r\nContent-Length: 1, 1\r\ncontent-length: 1\r\n\r\nx");
  EXPECT_TRUE(p.status.ok() && p.complete) << p.status;
}

TEST(HttpParserTest, RejectsMalformedStatusLines) {
  ExpectError("garbage\r\n\r\n", "does not start with \"HTTP/\"");
  ExpectError("\r\n\r\n", "does not start with");
  ExpectError("HTTP/2 200 OK\r\n\r\n", "unsupported HTTP version");
  ExpectError("HTTP/1.2 200 OK\r\n\r\n", "unsupported HTTP version");
  ExpectError("HTTP/1.1 2000 OK\r\n\r\n", "bad status line");
  ExpectError("HTTP/1.1 20 OK\r\n\r\n", "bad status line");
  ExpectError("HTTP/1.1  200 OK\r\n\r\n", "bad status line");
  ExpectError("HTTP/1.1 099 OK\r\n\r\n", "out of range");
  ExpectError("HTTP/1.1 600 OK\r\n\r\n", "out of range");
  ExpectError(std::string("HTTP/1.1 200 O\0K\r\n\r\n", 20), "control character");
  ExpectError("HTTP/1.1 101 Switching Protocols\r\n\r\n", "101");
}

TEST(HttpParserTest, RejectsMalformedHeaders) {
  ExpectError("HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare LF");
  ExpectError("HTTP/1.1 200 OK\r\rContent-Length: 0\r\n\r\n", "bare CR");
  ExpectError("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "without a colon");
  ExpectError("HTTP/1.1 200 OK\r\nName : v\r\n\r\n", "whitespace before the colon");
  ExpectError("HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", "obsolete line folding");
  ExpectError("HTTP/1.1 200 OK\r\n: v\r\n\r\n", "empty field name");
  ExpectError("HTTP/1.1 200 OK\r\nBad(Name): v\r\n\r\n", "invalid character in field name");
  ExpectError("HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n", "control character");
}

TEST(HttpParserTest, RejectsConflictingOrBadLengths) {
  ExpectError("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
              "conflicting Content-Length values 3 and 4");
  ExpectError("HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd", "conflicting");
  ExpectError("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length");
  ExpectError("HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", "bad Content-Length");
  ExpectError("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
              "bad Content-Length");
  ExpectError("HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", "empty Content-Length");
  ExpectError("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
              "both Content-Length and Transfer-Encoding");
  ExpectError("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
              "unsupported Transfer-Encoding");
  ExpectError("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0");
  ExpectError("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc",
              "1 unexpected bytes after the end");
}

TEST(HttpParserTest, RejectsBadChunks) {
  const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  ExpectError(head + "zz\r\n", "bad chunk size line");
  ExpectError(head + "\r\n", "bad chunk size line");
  ExpectError(head + "-1\r\n", "bad chunk size line");
  ExpectError(head + "5 x\r\n", "bad chunk size line");
  ExpectError(head + "1000000000000000\r\n", "chunk size too large");
  ExpectError(head + "3\r\nabcX\r\n", "chunk data not followed by CRLF");
  ExpectError(head + "3\nabc", "bare LF");
  ExpectError(head + "0\r\nBad Trailer\r\n\r\n", "trailer");
}

TEST(HttpParserTest, TruncatedResponsesFailAtEof) {
  ExpectError("", "connection closed before any response");
  ExpectError("HTTP/1.1 200 OK\r\nContent-Le", "inside the response head");
  ExpectError("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "after 3 of 10 body bytes");
  ExpectError("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
              "inside a chunked body after 2 body bytes");
  ExpectError("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
              "inside a chunked body");
}

TEST(HttpParserTest, LimitsAreResourceExhausted) {
  HttpParserLimits small;
  small.max_head_bytes = 64;
  small.max_body_bytes = 8;
  small.max_headers = 2;
  ExpectError("HTTP/1.1 200 OK\r\nX: " + std::string(100, 'a') + "\r\n\r\n", "longer than 64",
              absl::StatusCode::kResourceExhausted, small);
  ExpectError("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", "more than 2 header fields",
              absl::StatusCode::kResourceExhausted, small);
  ExpectError("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "exceeds the limit of 8",
              absl::StatusCode::kResourceExhausted, small);
  ExpectError("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n4\r\n",
              "exceeds the limit of 8", absl::StatusCode::kResourceExhausted, small);
  ExpectError("HTTP/1.1 200 OK\r\n\r\n123456789", "exceeds the limit of 8",
              absl::StatusCode::kResourceExhausted, small);
  // The default head limit: 64 KiB of headers that never end.
  ExpectError("HTTP/1.1 200 OK\r\nX: " + std::string(70000, 'a'), "longer than 65536",
              absl::StatusCode::kResourceExhausted);
}

TEST(HttpParserTest, ErrorsStick) {
  HttpResponseParser p;
  std::string body;
  absl::Status first = p.Feed("nonsense", &body);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(p.Feed("HTTP/1.1 200 OK\r\n\r\n", &body), first);
  EXPECT_EQ(p.OnEof(), first);
  EXPECT_EQ(p.error(), first);
}

// Every prefix of a good response is "need more" (never an error), and
// garbage appended to it is rejected.
TEST(HttpParserTest, EveryPrefixIsIncompleteNotAnError) {
  const std::string in =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n";
  for (size_t n = 0; n < in.size(); ++n) {
    Parsed p = Parse(in.substr(0, n));
    EXPECT_TRUE(p.status.ok()) << n << ": " << p.status;
    EXPECT_FALSE(p.complete) << n;
  }
  Parsed p = Parse(in + "junk");
  EXPECT_FALSE(p.status.ok());
}

}  // namespace
}  // namespace meshlib::etcd
