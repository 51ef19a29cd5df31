// Cost of meshlib's frame codec (meshlib/transport/frame.h) per call, apart
// from sockets and threads: what one request/response pair spends encoding
// and decoding, at the end-to-end benchmark's 64-byte payload and at 4 KiB.
//
//   bazel run -c opt //benchmarks:frame_benchmark
//
// Bytes processed are whole frames (header, method, metadata, payload): the
// bytes the codec walks, so GB/s compares across payload sizes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "meshlib/transport/frame.h"

namespace meshlib::transport {
namespace {

// A request as the echo client sends it: a method name and a deadline, no
// metadata, so the numbers line up with the end-to-end run.
constexpr char kMethod[] = "Echo/Say";
const absl::Duration kTimeout = absl::Milliseconds(250);

std::string Payload(benchmark::State& state) {
  return std::string(static_cast<size_t>(state.range(0)), 'x');
}

// Payload bytes placed half a page away from where they will be copied to.
// glibc's memcpy (rep movsb) is ~13x slower on this CPU when source and
// destination sit at nearly the same offset within a 4 KiB page; left to
// malloc, that happened to the 4 KiB AppendResponse case and not to
// AppendRequest, which made the codec look slow where it is not.
class PlacedPayload {
 public:
  // `dst` is where the copy will land; it must not move while in use.
  PlacedPayload(size_t size, const char* dst) : storage_(size + 4096, 'x') {
    const uintptr_t want = (reinterpret_cast<uintptr_t>(dst) + 2048) & 4095;
    const uintptr_t have = reinterpret_cast<uintptr_t>(storage_.data()) & 4095;
    view_ = absl::string_view(storage_.data() + ((want - have) & 4095), size);
  }
  absl::string_view view() const { return view_; }

 private:
  std::string storage_;
  absl::string_view view_;
};

// Reserves `*out` for the frames an encoder benchmark writes, so that its
// buffer (and so the copy's destination) stays put across iterations.
void ReserveFrameBuffer(benchmark::State& state, std::string* out) {
  out->reserve(static_cast<size_t>(state.range(0)) + 256);
}

void BM_AppendRequest(benchmark::State& state) {
  std::string out;
  ReserveFrameBuffer(state, &out);
  const PlacedPayload placed(static_cast<size_t>(state.range(0)), out.data());
  const absl::string_view payload = placed.view();
  size_t frame_size = 0;
  for (auto _ : state) {
    // clear() keeps the capacity, as a connection's write buffer would.
    out.clear();
    AppendRequest(&out, /*stream_id=*/7, kMethod, kTimeout, {}, payload);
    benchmark::DoNotOptimize(out.data());
    frame_size = out.size();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(frame_size));
}
BENCHMARK(BM_AppendRequest)->Arg(64)->Arg(4096);

void BM_AppendResponse(benchmark::State& state) {
  std::string out;
  ReserveFrameBuffer(state, &out);
  const PlacedPayload placed(static_cast<size_t>(state.range(0)), out.data());
  const absl::string_view payload = placed.view();
  size_t frame_size = 0;
  for (auto _ : state) {
    out.clear();
    AppendResponse(&out, /*stream_id=*/7, /*flags=*/0, absl::StatusCode::kOk,
                   /*message=*/"", {}, payload);
    benchmark::DoNotOptimize(out.data());
    frame_size = out.size();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(frame_size));
}
BENCHMARK(BM_AppendResponse)->Arg(64)->Arg(4096);

void BM_DecodeRequest(benchmark::State& state) {
  std::string wire;
  AppendRequest(&wire, /*stream_id=*/7, kMethod, kTimeout, {}, Payload(state));
  const FrameLimits limits;
  for (auto _ : state) {
    FrameView frame;
    size_t consumed = 0;
    absl::Status status = DecodeFrame(wire, limits, &frame, &consumed);
    // As a server does: into the request its call keeps.
    Request request;
    absl::Status parsed = ParseRequestBody(frame.body, limits, &request);
    if (!status.ok() || consumed != wire.size() || !parsed.ok()) {
      state.SkipWithError("request frame did not decode");
      break;
    }
    benchmark::DoNotOptimize(request.payload.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(wire.size()));
}
BENCHMARK(BM_DecodeRequest)->Arg(64)->Arg(4096);

// Decodes one response frame carrying `md` over and over.
void DecodeResponses(benchmark::State& state, const Metadata& md) {
  std::string wire;
  AppendResponse(&wire, /*stream_id=*/7, /*flags=*/0, absl::StatusCode::kOk,
                 /*message=*/"", md, Payload(state));
  const FrameLimits limits;
  for (auto _ : state) {
    FrameView frame;
    size_t consumed = 0;
    absl::Status status = DecodeFrame(wire, limits, &frame, &consumed);
    // As a client does: metadata and payload into the result it hands
    // over, the message only for a failure.
    Metadata metadata;
    ResponseView response;
    response.metadata = &metadata;
    absl::Status parsed = ParseResponseBody(frame.body, limits, &response);
    std::string payload(response.payload);
    if (!status.ok() || consumed != wire.size() || !parsed.ok() || metadata.size() != md.size()) {
      state.SkipWithError("response frame did not decode");
      break;
    }
    benchmark::DoNotOptimize(payload.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(wire.size()));
}

void BM_DecodeResponse(benchmark::State& state) { DecodeResponses(state, {}); }
BENCHMARK(BM_DecodeResponse)->Arg(64)->Arg(4096);

// A reply as examples/echo/echo_server sends it: one metadata entry (which
// instance answered) beside the payload.
void BM_DecodeResponseWithMetadata(benchmark::State& state) {
  DecodeResponses(state, {{"server", "127.0.0.1:7311"}});
}
BENCHMARK(BM_DecodeResponseWithMetadata)->Arg(64);

}  // namespace
}  // namespace meshlib::transport
