// Cost of the consistent-hashing policies (meshlib/lb ring_hash, maglev):
//   *Lookup  one Picker::Pick with a hash key, as the request path does it
//            (virtual call included), at 10 .. 10k endpoints, on one thread
//            and on two threads sharing one picker;
//   *Build   Policy::Build for a new endpoint set (the control-side cost of
//            every discovery or health update), at 1k and 10k endpoints.
//
//   bazel run -c opt //benchmarks:lb_hash_benchmark -- --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true   (one command line)
//
// Keys are 65536 random 64-bit hashes (fixed seed, one table per thread),
// so lookups spread over the whole table or ring instead of rereading one
// hot cache line. Targets: Maglev lookup <= 30 ns at 10k endpoints, Maglev
// build <= 2 ms at 1k endpoints and M = 65537 (the paper reports 1.8 ms).
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "meshlib/lb/policy.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

// Weights: 0 = all 1; 1 = cycling 1, 2, 3; 2 = one endpoint in ten has
// weight 100; 3 = one endpoint has weight 1000 (Maglev schedules turns with
// a heap rather than scanning every endpoint every round).
std::vector<LbEndpoint> MakeEndpoints(int n, int weights = 0) {
  std::vector<LbEndpoint> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) {
    LbEndpoint e;
    e.endpoint.address =
        absl::StrCat("10.", (i >> 16) & 255, ".", (i >> 8) & 255, ".", i & 255, ":7000");
    if (weights == 1) e.endpoint.weight = 1 + i % 3;
    if (weights == 2) e.endpoint.weight = i % 10 == 0 ? 100 : 1;
    if (weights == 3) e.endpoint.weight = i == 0 ? 1000 : 1;
    e.stats = std::make_shared<EndpointStats>();
    v.push_back(std::move(e));
  }
  return v;
}

std::unique_ptr<Policy> MakePolicy(const std::string& name) {
  const PolicyFactory* f = PolicyRegistry::Global().Find(name);
  PolicyContext ctx;
  ctx.clock = &runtime::RealClock();
  return f->Create(json::object(), name, ctx).value();
}

// One picker per (policy, size), shared by the threads of a run.
const Picker& SharedPicker(const std::string& name, int n) {
  static std::mutex mu;
  static auto* pickers = new std::map<std::pair<std::string, int>, std::unique_ptr<Picker>>();
  std::lock_guard<std::mutex> lock(mu);
  auto& p = (*pickers)[{name, n}];
  if (p == nullptr) p = MakePolicy(name)->Build(MakeEndpoints(n));
  return *p;
}

std::vector<uint64_t> Keys(uint64_t seed) {
  FastRandom r(seed);
  std::vector<uint64_t> k(1 << 16);
  for (auto& x : k) x = r.Next();
  return k;
}

void Lookup(benchmark::State& state, const char* name) {
  const int n = static_cast<int>(state.range(0));
  const Picker& picker = SharedPicker(name, n);
  const std::vector<uint64_t> keys = Keys(1 + state.thread_index());
  size_t i = 0;
  for (auto _ : state) {
    int e = picker.Pick(PickArgs{keys[i++ & (keys.size() - 1)], true});
    benchmark::DoNotOptimize(e);
  }
  state.counters["endpoints"] = n;
}

void BM_MaglevLookup(benchmark::State& state) { Lookup(state, "maglev"); }
void BM_RingHashLookup(benchmark::State& state) { Lookup(state, "ring_hash"); }
BENCHMARK(BM_MaglevLookup)->RangeMultiplier(10)->Range(10, 10000);
BENCHMARK(BM_MaglevLookup)->RangeMultiplier(10)->Range(10, 10000)->Threads(2);
BENCHMARK(BM_RingHashLookup)->RangeMultiplier(10)->Range(10, 10000);
BENCHMARK(BM_RingHashLookup)->RangeMultiplier(10)->Range(10, 10000)->Threads(2);

void Build(benchmark::State& state, const char* name) {
  const int n = static_cast<int>(state.range(0));
  const int weights = static_cast<int>(state.range(1));
  auto policy = MakePolicy(name);
  const std::vector<LbEndpoint> eps = MakeEndpoints(n, weights);
  for (auto _ : state) {
    std::unique_ptr<Picker> p = policy->Build(eps);
    benchmark::DoNotOptimize(p);
  }
  state.counters["endpoints"] = n;
}

// Args: endpoints, weights (see MakeEndpoints).
void BM_MaglevBuild(benchmark::State& state) { Build(state, "maglev"); }
void BM_RingHashBuild(benchmark::State& state) { Build(state, "ring_hash"); }
BENCHMARK(BM_MaglevBuild)
    ->Args({1000, 0})
    ->Args({1000, 1})
    ->Args({1000, 2})
    ->Args({1000, 3})
    ->Args({10000, 0})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RingHashBuild)
    ->Args({1000, 0})
    ->Args({1000, 1})
    ->Args({10000, 0})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace meshlib::lb
