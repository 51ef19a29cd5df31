// Cost of applying discovery updates at scale (meshlib/discovery): a
// resolver publishes a complete endpoint set of N entries, Discovery builds
// the immutable EndpointSet (sort, de-duplicate), swaps it in and hands it to
// a subscriber, which computes what changed (the diff a client needs to open
// and close connections). Two shapes of update:
//   FullReplace  every endpoint differs from the previous set
//   OneDelta     one endpoint replaced, the other N-1 unchanged
// and the memory a held set costs per endpoint.
//
//   bazel run -c opt //benchmarks:discovery_benchmark
//
// The time includes building the resolver's input vector (a copy of N
// endpoints), as every resolver does, so it is an upper bound on the
// library's own share.
#include <malloc.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "meshlib/discovery/resolver.h"

namespace meshlib::discovery {
namespace {

using json = nlohmann::json;

// A realistic entry: IPv4 address, weight, zone and one metadata pair.
std::vector<Endpoint> MakeEndpoints(int n, int generation) {
  std::vector<Endpoint> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) {
    Endpoint e;
    e.address = absl::StrCat("10.", (i >> 16) & 255, ".", (i >> 8) & 255, ".", i & 255, ":",
                             7000 + generation);
    e.weight = 1 + i % 3;
    e.zone = absl::StrCat("us-east-1", std::string(1, static_cast<char>('a' + i % 3)));
    e.metadata.emplace("version", generation % 2 ? "v2" : "v1");
    v.push_back(std::move(e));
  }
  return v;
}

class CaptureResolver final : public Resolver {
 public:
  explicit CaptureResolver(ResolverSink** out) : out_(out) {}
  void Start(ResolverSink* sink) override { *out_ = sink; }

 private:
  ResolverSink** out_;
};

class CaptureFactory final : public ResolverFactory {
 public:
  explicit CaptureFactory(ResolverSink** out) : out_(out) {}
  std::string kind() const override { return "bench"; }
  absl::Status Validate(const json&, absl::string_view) const override {
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<Resolver>> Create(const ResolverArgs&) const override {
    return std::make_unique<CaptureResolver>(out_);
  }

 private:
  ResolverSink** out_;
};

// A Discovery with one subscriber that diffs each new set against the last.
struct Harness {
  Harness() {
    loop = runtime::EventLoop::Create("bench-control").value();
    registry.Register(std::make_unique<CaptureFactory>(&sink));
    d = Discovery::Create("bench", json{{"bench", json::object()}}, loop.get(), "", registry)
            .value();
    d->Subscribe([this](std::shared_ptr<const EndpointSet> s) {
      EndpointSetDiff diff = Diff(prev.get(), *s);
      changes += diff.added.size() + diff.removed.size() + diff.changed.size();
      prev = std::move(s);
    });
    loop->RunAndWait([] {});  // resolver started, subscription registered
  }
  ~Harness() {
    d.reset();
  }
  std::unique_ptr<runtime::EventLoop> loop;
  ResolverRegistry registry;
  ResolverSink* sink = nullptr;
  std::unique_ptr<Discovery> d;
  std::shared_ptr<const EndpointSet> prev;
  size_t changes = 0;
};

// Publish is called from the benchmark thread rather than the control loop
// (nothing else runs on the loop meanwhile), so a thread hand-off per update
// does not hide the cost at small N.
void BM_FullReplace(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Harness h;
  const std::vector<Endpoint> sets[2] = {MakeEndpoints(n, 0), MakeEndpoints(n, 1)};
  int i = 0;
  h.sink->Publish(sets[0]);  // the first set: everything is new
  h.changes = 0;
  for (auto _ : state) {
    h.sink->Publish(sets[i ^= 1]);
  }
  state.counters["endpoints"] = n;
  state.counters["changes_per_update"] =
      benchmark::Counter(static_cast<double>(h.changes) / state.iterations());
}
BENCHMARK(BM_FullReplace)->Arg(10)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);

void BM_OneDelta(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Harness h;
  std::vector<Endpoint> sets[2] = {MakeEndpoints(n, 0), MakeEndpoints(n, 0)};
  sets[1][n / 2].address = "192.168.0.1:9999";  // one endpoint swapped for another
  int i = 0;
  h.sink->Publish(sets[0]);  // the first set: everything is new
  h.changes = 0;
  for (auto _ : state) {
    h.sink->Publish(sets[i ^= 1]);
  }
  state.counters["endpoints"] = n;
  state.counters["changes_per_update"] =
      benchmark::Counter(static_cast<double>(h.changes) / state.iterations());
}
BENCHMARK(BM_OneDelta)->Arg(10)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);

// Heap bytes held per endpoint by a published EndpointSet (mallinfo2 before
// and after; the input vector is freed first, so only the set is counted).
void BM_MemoryPerEndpoint(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  double per_endpoint = 0;
  for (auto _ : state) {
    std::vector<Endpoint> input = MakeEndpoints(n, 0);
    size_t before = mallinfo2().uordblks;
    std::vector<Endpoint> moved = input;  // what the resolver hands over
    std::shared_ptr<const EndpointSet> set = EndpointSet::Create(std::move(moved));
    size_t after = mallinfo2().uordblks;
    per_endpoint = static_cast<double>(after - before) / n;
    benchmark::DoNotOptimize(set);
  }
  state.counters["bytes_per_endpoint"] = per_endpoint;
}
BENCHMARK(BM_MemoryPerEndpoint)->Arg(10)->Arg(1000)->Arg(10000)->Iterations(3);

}  // namespace
}  // namespace meshlib::discovery
