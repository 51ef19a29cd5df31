// libFuzzer target for the admin endpoint's HTTP request parser
// (meshlib/admin/http_request.h), which reads whatever connects to the
// admin port.
//
// Input: one byte choosing how the rest is cut into pieces, then the
// request bytes. Besides crashes and sanitizer findings it checks the
// parser's contract: an error carries a 4xx/505 status and a message and
// sticks; a parsed request is GET or HEAD with a path starting with '/';
// and the verdict and the request do not depend on how the bytes were
// split across reads.
//
// Built outside Bazel by tests/fuzz/run_fuzzers.sh.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include "absl/strings/string_view.h"

#include "meshlib/admin/http_request.h"

namespace meshlib::admin {
namespace {

#define FUZZ_CHECK(cond)                                                     \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "%s:%d: contract broken: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                          \
    }                                                                        \
  } while (0)

void CheckContract(const HttpRequestParser& p) {
  if (p.state() == HttpRequestParser::kError) {
    const int s = p.error_status();
    FUZZ_CHECK(s == 400 || s == 405 || s == 414 || s == 431 || s == 505);
    FUZZ_CHECK(!p.error().empty());
  }
  if (p.state() == HttpRequestParser::kDone) {
    const HttpRequest& r = p.request();
    FUZZ_CHECK(r.method == "GET" || r.method == "HEAD");
    FUZZ_CHECK(!r.path.empty() && r.path[0] == '/');
    FUZZ_CHECK(r.target.size() <= HttpRequestParser::kMaxTarget);
    FUZZ_CHECK(r.headers.size() <= HttpRequestParser::kMaxHeaders);
  }
}

}  // namespace
}  // namespace meshlib::admin

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using meshlib::admin::HttpRequestParser;
  if (size == 0) return 0;
  const size_t piece = 1 + data[0] % 64;
  const std::string input(reinterpret_cast<const char*>(data + 1), size - 1);

  HttpRequestParser whole;
  whole.Feed(input);
  meshlib::admin::CheckContract(whole);

  HttpRequestParser split;
  for (size_t i = 0; i < input.size(); i += piece) {
    split.Feed(absl::string_view(input).substr(i, piece));
    meshlib::admin::CheckContract(split);
    if (split.state() != HttpRequestParser::kNeedMore) {
      // Sticks: more bytes change nothing.
      const HttpRequestParser::State before = split.state();
      split.Feed("GET / HTTP/1.1\r\n\r\n");
      FUZZ_CHECK(split.state() == before);
      break;
    }
  }
  FUZZ_CHECK(split.state() == whole.state());
  if (whole.state() == HttpRequestParser::kDone) {
    FUZZ_CHECK(split.request().target == whole.request().target);
    FUZZ_CHECK(split.request().headers == whole.request().headers);
  }
  if (whole.state() == HttpRequestParser::kError) {
    FUZZ_CHECK(split.error_status() == whole.error_status());
  }
  return 0;
}
