// libFuzzer target for reading an etcd watch stream (meshlib/etcd/internal/etcd_json.h):
// the body of a /v3/watch response is cut into JSON messages by
// JsonStreamSplitter and each is read as a watch response, an error, or
// (for the same shapes reached through /v3/kv/range) a range response.
//
// Input: one byte choosing the message limit and how the rest is cut into
// pieces, then the stream bytes. Checks: errors are INVALID_ARGUMENT or
// RESOURCE_EXHAUSTED with a message, and stick; every message is one whole
// object within the limit; the messages do not depend on how the bytes
// were split; reading a message never crashes whatever its shape.
//
// Built outside Bazel by tests/fuzz/run_fuzzers.sh (nlohmann_json is
// header-only, from /usr/include):
//   clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -I. \
//     meshlib/etcd/internal/etcd_json.cc tests/fuzz/etcd_watch_stream_fuzzer.cc \
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
#include "meshlib/etcd/internal/etcd_json.h"

namespace meshlib::etcd_internal {
namespace {

#define FUZZ_CHECK(cond)                                                     \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                   \
      std::abort();                                                          \
    }                                                                        \
  } while (0)

void CheckError(const absl::Status& s) {
  FUZZ_CHECK(!s.ok());
  FUZZ_CHECK(!s.message().empty());
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument ||
             s.code() == absl::StatusCode::kResourceExhausted);
}

struct Split {
  std::vector<std::string> messages;
  absl::Status status;
  size_t buffered = 0;
};

Split Run(absl::string_view in, size_t max, uint32_t seed) {
  JsonStreamSplitter s(max);
  Split out;
  uint32_t state = seed;
  while (!in.empty()) {
    size_t n = in.size();
    if (seed != 0) {
      state = state * 1103515245u + 12345u;
      n = std::min<size_t>(n, 1 + (state >> 16) % 23);
    }
    out.status = s.Append(in.substr(0, n), &out.messages);
    in.remove_prefix(n);
    if (!out.status.ok()) {
      CheckError(out.status);
      std::vector<std::string> more;
      FUZZ_CHECK(s.Append("{}", &more) == out.status);
      FUZZ_CHECK(more.empty());
      break;
    }
  }
  out.buffered = s.buffered();
  FUZZ_CHECK(out.buffered <= max);
  for (const std::string& m : out.messages) {
    FUZZ_CHECK(m.size() >= 2 && m.size() <= max);
    FUZZ_CHECK(m.front() == '{' && m.back() == '}');
  }
  return out;
}

void Read(const std::string& m) {
  absl::StatusOr<nlohmann::json> j = ParseJson(m, "watch message");
  if (!j.ok()) {
    FUZZ_CHECK(j.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  absl::Status err = ErrorFromBody(200, &*j, m);
  if (!err.ok()) FUZZ_CHECK(!err.message().empty());
  ErrorFromBody(503, &*j, m).IgnoreError();
  if (j->is_object() && j->contains("result")) {
    auto w = ParseWatchResponse((*j)["result"]);
    if (!w.ok()) {
      FUZZ_CHECK(w.status().code() == absl::StatusCode::kInvalidArgument);
    } else {
      for (const etcd::WatchEvent& e : w->events) {
        FUZZ_CHECK(e.type == etcd::WatchEvent::Type::kPut ||
                   e.type == etcd::WatchEvent::Type::kDelete);
      }
    }
  }
  auto r = ParseRangeResponse(*j);
  if (r.ok()) FUZZ_CHECK(r->revision > 0);
}

}  // namespace
}  // namespace meshlib::etcd_internal

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const absl::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  const size_t max = (mode & 1) ? 64 : (16u << 20);
  const uint32_t seed = 1u + (mode >> 1);

  auto whole = meshlib::etcd_internal::Run(in, max, 0);
  auto pieces = meshlib::etcd_internal::Run(in, max, seed);
  FUZZ_CHECK(whole.status.code() == pieces.status.code());
  FUZZ_CHECK(whole.messages == pieces.messages);
  if (whole.status.ok()) FUZZ_CHECK(whole.buffered == pieces.buffered);
  for (const std::string& m : whole.messages) meshlib::etcd_internal::Read(m);
  return 0;
}
