// What the mesh's client stack costs per call, over a transport that costs
// next to nothing (testing::InMemoryChannel answers on the calling thread),
// so that the difference between the two is the stack itself.
//
//   bare        InMemoryChannel::CallBlocking: the transport alone
//   HedgeTimer  the full stack, answers after Call returns: a real hedge
//               timer armed and cancelled per call
//   Mesh*       a mesh Client over 5 in-memory endpoints with every layer
//               configured but not triggered: an interceptor, a route with a
//               split to a subset, fault injection at 0%, a deadline,
//               retries with a budget, percentile hedging, a circuit
//               breaker, p2c_peak_ewma, outlier detection, health checks
//               (their probes run on the control loop, off the call path)
//
// Bar: the full stack costs <= 1 us median per call over the bare transport.
//
//   bazel run -c opt //benchmarks:stack_benchmark --
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "meshlib/core/sync.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/testing/in_memory_channel.h"

namespace meshlib {
namespace {

client::CallResult Echo(const std::string&, absl::string_view, absl::string_view request,
                        const client::CallOptions&) {
  client::CallResult r;
  r.payload.assign(request.data(), request.size());
  return r;
}

struct NoopInterceptor : mesh::Interceptor {
  std::string name() const override { return "noop"; }
  absl::Status Before(absl::string_view, client::CallOptions&) override {
    return absl::OkStatus();
  }
};

void BM_BareTransport(benchmark::State& state) {
  testing::InMemoryChannel ch("10.0.0.1:1", Echo);
  client::CallOptions o;
  for (auto _ : state) {
    client::CallResult r = ch.CallBlocking("Echo/Say", "payload", o);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_BareTransport);

std::string Endpoints() {
  std::string out;
  for (int i = 1; i <= 5; ++i) {
    absl::StrAppend(&out, i > 1 ? "," : "", R"({"address": "10.0.0.)", i,
                    R"(:1", "metadata": {"version": ")", i == 5 ? "v2" : "v1", R"("}})");
  }
  return out;
}

// An endpoint that answers a call only when the benchmark says so
// (AnswerAll), after Call has returned: by then a hedged call has armed its
// hedge timer, which the answer cancels, as over a real network.
class DeferredChannel final : public client::EndpointChannel {
 public:
  explicit DeferredChannel(std::string address) : address_(std::move(address)) {}
  client::CallHandle Call(absl::string_view, absl::string_view request,
                          const client::CallOptions&, client::CallCallback done) override {
    client::CallResult r;
    r.payload.assign(request.data(), request.size());
    r.endpoint = address_;
    Held().emplace_back(std::move(done), std::move(r));
    return client::CallHandle();
  }
  client::CallResult CallBlocking(absl::string_view, absl::string_view request,
                                  const client::CallOptions&) override {
    client::CallResult r;
    r.payload.assign(request.data(), request.size());
    return r;
  }
  const std::string& address() const override { return address_; }
  int ReadyConnections() const override { return 1; }
  bool Unreachable() const override { return false; }
  size_t CallsOutstanding() const override { return 0; }
  void Connect() override {}

  // Answers every call held on this thread.
  static void AnswerAll() {
    auto held = std::move(Held());
    Held().clear();
    for (auto& [done, r] : held) done(std::move(r));
  }

 private:
  static std::vector<std::pair<client::CallCallback, client::CallResult>>& Held() {
    thread_local std::vector<std::pair<client::CallCallback, client::CallResult>> held;
    return held;
  }
  const std::string address_;
};

// `full`: every layer configured; otherwise the bare minimum a service has.
// `deferred`: endpoints answer after Call returns (DeferredChannel).
// `metrics`: the golden metrics recorded (the default); off to measure
// what they cost.
std::unique_ptr<mesh::Mesh> MakeMesh(bool full, bool deferred = false, bool metrics = true) {
  std::string extra = full ? R"(,
      "load_balancer": [{"p2c_peak_ewma": {}}],
      "retry": {"max_attempts": 3, "retry_on": ["UNAVAILABLE"]},
      "hedging": {"percentile": 99, "delay": "50ms"},
      "circuit_breaker": {"max_requests": 100000, "max_pending": 100000, "max_retries": 100},
      "outlier_detection": {"consecutive_failures": 5, "interval": "10s"},
      "health_check": {"interval": "5s"},
      "fault": {"abort": {"percent": 0}},
      "subsets": {"v1": {"version": "v1"}, "v2": {"version": "v2"}},
      "routes": [{"name": "split", "split": {"v1": 100, "v2": 0}}])"
                           : "";
  auto cfg = config::ParseMeshConfig(absl::StrCat(
      R"({"services": {"echo": {"discovery": {"static": {"endpoints": [)", Endpoints(),
      R"(]}}, "timeout": "1s")", extra, "}}}"));
  if (!cfg.ok()) {
    std::fprintf(stderr, "%s\n", cfg.status().ToString().c_str());
    std::abort();
  }
  mesh::MeshOptions o;
  if (!metrics) o.metrics = nullptr;
  if (deferred) {
    o.channel_factory = [](const std::string& address)
        -> absl::StatusOr<std::shared_ptr<client::EndpointChannel>> {
      return std::make_shared<DeferredChannel>(address);
    };
  } else {
    o.channel_factory = testing::InMemoryChannel::Factory(Echo);
  }
  return mesh::Mesh::Create(*std::move(cfg), o).value();
}

void MeshBlocking(benchmark::State& state, bool full, bool metrics = true) {
  auto m = MakeMesh(full, /*deferred=*/false, metrics);
  auto client = m->Client("echo").value();
  if (full) client->AddInterceptor(std::make_shared<NoopInterceptor>());
  client::CallOptions o;
  o.idempotent = true;  // eligible for retries and hedging
  for (auto _ : state) {
    client::CallResult r = client->CallBlocking("Echo/Say", "payload", o);
    if (!r.status.ok()) state.SkipWithError(r.status.ToString().c_str());
    benchmark::DoNotOptimize(r);
  }
}
void BM_MeshMinimalBlocking(benchmark::State& state) { MeshBlocking(state, false); }
void BM_MeshFullStackBlocking(benchmark::State& state) { MeshBlocking(state, true); }
BENCHMARK(BM_MeshMinimalBlocking);
BENCHMARK(BM_MeshFullStackBlocking);
// The same without metrics: the difference is what recording costs.
void BM_MeshMinimalBlockingNoMetrics(benchmark::State& state) { MeshBlocking(state, false, false); }
void BM_MeshFullStackBlockingNoMetrics(benchmark::State& state) {
  MeshBlocking(state, true, false);
}
BENCHMARK(BM_MeshMinimalBlockingNoMetrics);
BENCHMARK(BM_MeshFullStackBlockingNoMetrics);

void MeshCallback(benchmark::State& state, bool full, bool metrics = true) {
  auto m = MakeMesh(full, /*deferred=*/false, metrics);
  auto client = m->Client("echo").value();
  if (full) client->AddInterceptor(std::make_shared<NoopInterceptor>());
  client::CallOptions o;
  o.idempotent = full;
  int64_t ok = 0;
  for (auto _ : state) {
    // The in-memory transport answers on this thread, so the callback has
    // run when Call returns.
    client->Call("Echo/Say", "payload", o, [&ok](client::CallResult r) { ok += r.status.ok(); });
  }
  if (ok != state.iterations()) state.SkipWithError("a call failed");
}
// The path of an application's asynchronous calls with the minimum a
// service has (what run_e2e.sh's "mesh" row drives over TCP).
void BM_MeshMinimalCallback(benchmark::State& state) { MeshCallback(state, false); }
void BM_MeshFullStackCallback(benchmark::State& state) { MeshCallback(state, true); }
BENCHMARK(BM_MeshMinimalCallback);
BENCHMARK(BM_MeshFullStackCallback);
void BM_MeshMinimalCallbackNoMetrics(benchmark::State& state) { MeshCallback(state, false, false); }
BENCHMARK(BM_MeshMinimalCallbackNoMetrics);

// The full stack with the answer arriving after Call returns: each call
// arms a real hedge timer on a reactor (the p99 delay, or 50ms until it is
// known) and its answer cancels it.
void BM_MeshFullStackHedgeTimer(benchmark::State& state) {
  auto m = MakeMesh(true, /*deferred=*/true);
  auto client = m->Client("echo").value();
  client->AddInterceptor(std::make_shared<NoopInterceptor>());
  client::CallOptions o;
  o.idempotent = true;
  int64_t ok = 0;
  for (auto _ : state) {
    client->Call("Echo/Say", "payload", o, [&ok](client::CallResult r) { ok += r.status.ok(); });
    DeferredChannel::AnswerAll();
  }
  if (ok != state.iterations()) state.SkipWithError("a call failed");
  mesh::ClientStats stats = client->stats();
  state.counters["hedges"] = static_cast<double>(stats.hedges);
}
BENCHMARK(BM_MeshFullStackHedgeTimer);

}  // namespace
}  // namespace meshlib
