// libFuzzer target for the wire protocol v1 decoder (meshlib/transport/frame.h).
//
// Feeds the input to DecodeFrame frame after frame, the way a connection's
// read path does, and parses each body by its type. Besides crashes and
// sanitizer findings it checks the decoder's contract and that whatever it
// accepts survives a re-encode with the library's own encoders.
//
// Built outside Bazel by tests/fuzz/run_fuzzers.sh:
//   clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -I. \
//     meshlib/transport/frame.cc tests/fuzz/frame_decoder_fuzzer.cc \
//     $(pkg-config --cflags --libs absl_status absl_statusor absl_strings absl_time)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/transport/frame.h"

namespace meshlib::transport {
namespace {

// abort() rather than assert(): the check must hold in any build mode.
#define FUZZ_CHECK(cond)                                                 \
  do {                                                                   \
    if (!(cond)) {                                                       \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                               \
      std::abort();                                                      \
    }                                                                    \
  } while (0)

void CheckError(const absl::Status& s) {
  FUZZ_CHECK(!s.ok());
  // Errors name what was wrong, and are never of a surprising kind.
  FUZZ_CHECK(!s.message().empty());
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument ||
             s.code() == absl::StatusCode::kResourceExhausted);
}

// Decodes `body` with `parse`, re-encodes what was accepted with `encode`
// and checks the second decode gives the same value.
void CheckRequest(const FrameView& f, const FrameLimits& limits) {
  absl::StatusOr<Request> req = ParseRequestBody(f.body, limits);
  if (!req.ok()) {
    CheckError(req.status());
    return;
  }
  FUZZ_CHECK(!req->method.empty());
  FUZZ_CHECK(req->method.size() <= limits.max_method_length);
  FUZZ_CHECK(req->metadata.size() <= limits.max_metadata_entries);
  FUZZ_CHECK(req->timeout > absl::ZeroDuration());

  std::string wire;
  AppendRequest(&wire, f.header.stream_id, req->method, req->timeout, req->metadata,
                req->payload);
  FUZZ_CHECK(wire.size() ==
             RequestFrameSize(req->method, req->timeout, req->metadata, req->payload));
  // The re-encoded body is never longer than the original (the decoder accepts
  // non-minimal varints, the encoder writes minimal ones).
  FUZZ_CHECK(wire.size() - kFrameHeaderSize <= f.body.size());
  FrameView again;
  size_t used;
  FUZZ_CHECK(DecodeFrame(wire, limits, &again, &used).ok());
  FUZZ_CHECK(used == wire.size());
  FUZZ_CHECK(again.header.stream_id == f.header.stream_id);
  absl::StatusOr<Request> req2 = ParseRequestBody(again.body, limits);
  FUZZ_CHECK(req2.ok());
  FUZZ_CHECK(req2->method == req->method);
  FUZZ_CHECK(req2->timeout == req->timeout);
  FUZZ_CHECK(req2->metadata == req->metadata);
  FUZZ_CHECK(req2->payload == req->payload);
}

void CheckResponse(const FrameView& f, const FrameLimits& limits) {
  absl::StatusOr<Response> resp = ParseResponseBody(f.body, limits);
  if (!resp.ok()) {
    CheckError(resp.status());
    return;
  }
  FUZZ_CHECK(static_cast<int>(resp->code) >= 0 && static_cast<int>(resp->code) <= 16);
  FUZZ_CHECK(resp->metadata.size() <= limits.max_metadata_entries);

  std::string wire;
  AppendResponse(&wire, f.header.stream_id, f.header.flags, resp->code, resp->message,
                 resp->metadata, resp->payload);
  FrameView again;
  size_t used;
  FUZZ_CHECK(DecodeFrame(wire, limits, &again, &used).ok());
  FUZZ_CHECK(used == wire.size());
  FUZZ_CHECK(again.header.flags == f.header.flags);
  absl::StatusOr<Response> resp2 = ParseResponseBody(again.body, limits);
  FUZZ_CHECK(resp2.ok());
  FUZZ_CHECK(resp2->code == resp->code);
  FUZZ_CHECK(resp2->message == resp->message);
  FUZZ_CHECK(resp2->metadata == resp->metadata);
  FUZZ_CHECK(resp2->payload == resp->payload);
}

void CheckGoAway(const FrameView& f, const FrameLimits& limits) {
  absl::StatusOr<GoAway> g = ParseGoAwayBody(f.body);
  if (!g.ok()) {
    CheckError(g.status());
    return;
  }
  std::string wire;
  AppendGoAway(&wire, g->last_stream_id, g->code, g->message);
  FrameView again;
  size_t used;
  FUZZ_CHECK(DecodeFrame(wire, limits, &again, &used).ok());
  FUZZ_CHECK(used == wire.size());
  absl::StatusOr<GoAway> g2 = ParseGoAwayBody(again.body);
  FUZZ_CHECK(g2.ok());
  FUZZ_CHECK(g2->last_stream_id == g->last_stream_id);
  FUZZ_CHECK(g2->code == g->code);
  FUZZ_CHECK(g2->message == g->message);
}

// Consumes frames from `in` until an error or a partial frame, as a
// connection's read loop does.
void DecodeAll(absl::string_view in, const FrameLimits& limits) {
  // Bounded by the input: each round consumes at least a header.
  for (;;) {
    FrameView f;
    size_t used = 12345;
    absl::Status s = DecodeFrame(in, limits, &f, &used);
    if (!s.ok()) {
      CheckError(s);
      FUZZ_CHECK(used == 0);
      return;
    }
    if (used == 0) return;  // needs more bytes: nothing left to try

    // The contract of a successful decode.
    FUZZ_CHECK(used >= kFrameHeaderSize && used <= in.size());
    FUZZ_CHECK(f.header.version == kProtocolVersion);
    FUZZ_CHECK(f.header.length <= limits.max_frame_size);
    FUZZ_CHECK(used == kFrameHeaderSize + f.header.length);
    FUZZ_CHECK(f.body.size() == f.header.length);
    FUZZ_CHECK(f.body.data() == in.data() + kFrameHeaderSize);
    FUZZ_CHECK(FrameTypeName(f.header.type) != nullptr);  // total over all bytes

    // A strict prefix of a whole frame is "need more", never an error.
    FrameView partial;
    size_t partial_used = 1;
    FUZZ_CHECK(DecodeFrame(in.substr(0, used - 1), limits, &partial, &partial_used).ok());
    FUZZ_CHECK(partial_used == 0);

    switch (static_cast<FrameType>(f.header.type)) {
      case FrameType::kRequest:
        CheckRequest(f, limits);
        break;
      case FrameType::kResponse:
        CheckResponse(f, limits);
        break;
      case FrameType::kGoAway:
        CheckGoAway(f, limits);
        break;
      case FrameType::kCancel:
      case FrameType::kPing:
      default:
        break;  // no body to parse; unknown types are skipped by the connection
    }
    in.remove_prefix(used);
  }
}

}  // namespace
}  // namespace meshlib::transport

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using meshlib::transport::FrameLimits;
  const absl::string_view in(reinterpret_cast<const char*>(data), size);

  // The defaults, as a server runs by default...
  meshlib::transport::DecodeAll(in, FrameLimits{});
  // ...and small limits, so that every limit branch is reachable with the
  // short inputs a fuzzer produces.
  FrameLimits small;
  small.max_frame_size = 4096;
  small.max_metadata_entries = 3;
  small.max_method_length = 8;
  meshlib::transport::DecodeAll(in, small);
  // A limit of zero everywhere: only empty bodies pass.
  FrameLimits zero;
  zero.max_frame_size = 0;
  zero.max_metadata_entries = 0;
  zero.max_method_length = 0;
  meshlib::transport::DecodeAll(in, zero);
  return 0;
}
