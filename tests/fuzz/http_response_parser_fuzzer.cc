// libFuzzer target for the HTTP/1.1 response parser (meshlib/etcd/http_parser.h),
// which reads whatever an etcd endpoint (or anything listening there) sends.
//
// Input: one byte choosing the limits and how the rest is cut into pieces,
// then the response bytes. Besides crashes and sanitizer findings it checks
// the parser's contract: errors are INVALID_ARGUMENT or RESOURCE_EXHAUSTED
// with a message, and stick; limits hold; and the verdict, the head and the
// body do not depend on how the bytes were split across reads.
//
// Built outside Bazel by tests/fuzz/run_fuzzers.sh:
//   clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -I. \
//     meshlib/etcd/http_parser.cc tests/fuzz/http_response_parser_fuzzer.cc \
//     $(pkg-config --cflags --libs absl_status absl_statusor absl_strings absl_time)
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "meshlib/etcd/http_parser.h"

namespace meshlib::etcd {
namespace {

#define FUZZ_CHECK(cond)                                                     \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                   \
      std::abort();                                                          \
    }                                                                        \
  } while (0)

struct Outcome {
  absl::Status feed;  // first error of Feed, or OK
  absl::Status eof;   // of OnEof after everything was fed
  bool head = false;
  int code = 0;
  std::vector<HttpHeader> headers;
  std::string body;
  bool complete_before_eof = false;
  bool complete = false;
};

void CheckError(const absl::Status& s) {
  FUZZ_CHECK(!s.ok());
  FUZZ_CHECK(!s.message().empty());
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument ||
             s.code() == absl::StatusCode::kResourceExhausted);
}

// Feeds `in` in pieces whose sizes come from `seed` (0: all at once).
Outcome Run(absl::string_view in, const HttpParserLimits& limits, uint32_t seed) {
  HttpResponseParser p(limits);
  Outcome o;
  uint32_t state = seed;
  while (!in.empty()) {
    size_t n = in.size();
    if (seed != 0) {
      state = state * 1103515245u + 12345u;
      n = std::min<size_t>(n, 1 + (state >> 16) % 17);
    }
    absl::Status s = p.Feed(in.substr(0, n), &o.body);
    in.remove_prefix(n);
    if (!s.ok()) {
      CheckError(s);
      o.feed = s;
      // Errors stick.
      std::string more;
      FUZZ_CHECK(p.Feed("HTTP/1.1 200 OK\r\n\r\n", &more) == s);
      FUZZ_CHECK(more.empty());
      break;
    }
  }
  o.complete_before_eof = p.complete();
  o.eof = p.OnEof();
  if (!o.eof.ok()) CheckError(o.eof);
  if (!o.feed.ok()) FUZZ_CHECK(o.eof == o.feed);
  o.complete = p.complete();
  FUZZ_CHECK(o.complete == o.eof.ok());
  o.head = p.head_complete();
  if (o.head) {
    o.code = p.status_code();
    FUZZ_CHECK(o.code >= 100 && o.code <= 599);
    FUZZ_CHECK(p.minor_version() == 0 || p.minor_version() == 1);
    o.headers = p.headers();
    FUZZ_CHECK(o.headers.size() <= limits.max_headers);
    for (const HttpHeader& h : o.headers) {
      FUZZ_CHECK(!h.name.empty());
      FUZZ_CHECK(h.name.find_first_of(" \t\r\n:") == std::string::npos);
      FUZZ_CHECK(h.value.find_first_of("\r\n") == std::string::npos);
    }
  } else {
    FUZZ_CHECK(o.body.empty());
  }
  FUZZ_CHECK(p.body_bytes() == o.body.size());
  if (limits.max_body_bytes != 0) FUZZ_CHECK(o.body.size() <= limits.max_body_bytes);
  return o;
}

void Compare(const Outcome& a, const Outcome& b) {
  FUZZ_CHECK(a.feed.code() == b.feed.code());
  FUZZ_CHECK(a.eof.code() == b.eof.code());
  FUZZ_CHECK(a.complete_before_eof == b.complete_before_eof);
  FUZZ_CHECK(a.complete == b.complete);
  FUZZ_CHECK(a.head == b.head);
  FUZZ_CHECK(a.code == b.code);
  FUZZ_CHECK(a.headers.size() == b.headers.size());
  for (size_t i = 0; i < a.headers.size(); ++i) {
    FUZZ_CHECK(a.headers[i].name == b.headers[i].name);
    FUZZ_CHECK(a.headers[i].value == b.headers[i].value);
  }
  if (a.feed.ok()) {
    FUZZ_CHECK(a.body == b.body);
  } else {
    // Bytes decoded before an error were delivered; how many depends on
    // the reads (a read is appended whole or not at all), but never any
    // that differ.
    const std::string& shorter = a.body.size() <= b.body.size() ? a.body : b.body;
    const std::string& longer = a.body.size() <= b.body.size() ? b.body : a.body;
    FUZZ_CHECK(longer.compare(0, shorter.size(), shorter) == 0);
  }
}

}  // namespace
}  // namespace meshlib::etcd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using meshlib::etcd::HttpParserLimits;
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const absl::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);

  HttpParserLimits limits;  // the defaults, as the etcd client runs
  if (mode & 1) {
    // Small limits, so that every limit branch is reachable with short inputs.
    limits.max_head_bytes = 96;
    limits.max_headers = 3;
    limits.max_body_bytes = 32;
    limits.max_chunk_line_bytes = 12;
  }
  if (mode & 2) limits.max_body_bytes = 0;  // a stream: no body limit
  const uint32_t seed = 1u + (mode >> 2);

  meshlib::etcd::Outcome whole = meshlib::etcd::Run(in, limits, 0);
  meshlib::etcd::Outcome pieces = meshlib::etcd::Run(in, limits, seed);
  meshlib::etcd::Outcome other = meshlib::etcd::Run(in, limits, 0x9e3779b9u ^ seed);
  meshlib::etcd::Compare(whole, pieces);
  meshlib::etcd::Compare(whole, other);
  return 0;
}
