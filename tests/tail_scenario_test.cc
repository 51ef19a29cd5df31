// The hedged-requests scenario of "The Tail at Scale" (Dean & Barroso,
// CACM 2013), with real processes: 5 echo_server instances answer in 2 ms,
// except a random 1% of calls that take 500 ms (a rare long tail: a GC
// pause, a busy disk). meshcall sends the same open-loop load (1,000
// idempotent calls/s for 10 s) twice: without hedging, and with percentile
// hedging (a second attempt to another instance once a call has waited
// longer than the p98 of recent attempts; the first answer wins, the other
// is cancelled).
//
// Bar: hedging cuts p99.9 by at least 5x for at most 5% extra attempts.
// Published for comparison: BigTable, hedging after 10 ms cut p99.9 from
// 1,800 ms to 74 ms (24x) for 2% more requests.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/testing/subprocess.h"
#include "nlohmann/json.hpp"

namespace meshlib {
namespace {

using json = nlohmann::json;
using testing::Subprocess;

struct LoadResult {
  std::string label;
  int64_t calls = 0, ok = 0, hedges = 0;
  double p50 = 0, p99 = 0, p999 = 0, max = 0;  // ms
};

LoadResult Load(const std::string& label, const std::vector<std::string>& endpoints,
         const json& hedging) {
  json service = {{"discovery", {{"static", {{"endpoints", endpoints}}}}},
                  {"load_balancer", json::parse(R"([{"round_robin": {}}])")},
                  {"timeout", "2s"}};
  if (!hedging.is_null()) service["hedging"] = hedging;
  json config = {{"services", {{"echo", service}}}};
  static int n = 0;
  std::string path = absl::StrCat(testing::MakeTempDir("tail"), "/mesh", ++n, ".json");
  std::ofstream(path) << config.dump();
  Subprocess call({testing::Runfile("examples/meshcall/meshcall"), "--config=" + path,
                   "--service=echo", "--method=Echo/Say", "--data=tail", "--rate=1000",
                   "--duration=10s", "--idempotent", "--json"});
  EXPECT_EQ(call.Wait(absl::Seconds(60)), 0) << call.err();
  LoadResult r;
  r.label = label;
  try {
    json j = json::parse(call.out());
    r.calls = j["requests"].get<int64_t>();
    r.ok = j["ok"].get<int64_t>();
    r.hedges = j["hedges"].get<int64_t>();
    r.p50 = j["latency_us"]["p50"].get<double>() / 1000;
    r.p99 = j["latency_us"]["p99"].get<double>() / 1000;
    r.p999 = j["latency_us"]["p999"].get<double>() / 1000;
    r.max = j["latency_us"]["max"].get<double>() / 1000;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "meshcall output is not the expected JSON: " << call.out() << " / "
                  << call.err();
  }
  return r;
}

TEST(TailAtScaleScenario, PercentileHedgingCutsTheTail) {
  std::vector<std::unique_ptr<Subprocess>> servers;
  std::vector<std::string> endpoints;
  for (int i = 0; i < 5; ++i) {
    servers.push_back(std::make_unique<Subprocess>(std::vector<std::string>{
        testing::Runfile("examples/echo/echo_server"), "--port=0", "--io_threads=1",
        absl::StrCat("--name=leaf", i), "--latency_ms=2", "--tail_latency_ms=500",
        "--tail_fraction=0.01"}));
    std::string line = servers.back()->WaitForLine("listening on ", absl::Seconds(10));
    ASSERT_FALSE(line.empty()) << servers.back()->err();
    endpoints.push_back(line.substr(strlen("listening on ")));
  }
  LoadResult plain = Load("no hedging", endpoints, json());
  LoadResult hedged = Load("hedging at p98", endpoints, json::parse(R"({"percentile": 98})"));

  std::printf("\n%-16s %8s %8s %9s %9s %9s %9s %8s %12s\n", "", "calls", "ok", "p50 ms",
              "p99 ms", "p99.9 ms", "max ms", "hedges", "extra load");
  for (const LoadResult& r : {plain, hedged}) {
    std::printf("%-16s %8lld %8lld %9.2f %9.2f %9.2f %9.2f %8lld %11.2f%%\n", r.label.c_str(),
                static_cast<long long>(r.calls), static_cast<long long>(r.ok), r.p50, r.p99,
                r.p999, r.max, static_cast<long long>(r.hedges),
                r.calls > 0 ? 100.0 * static_cast<double>(r.hedges) / r.calls : 0.0);
  }
  double cut = hedged.p999 > 0 ? plain.p999 / hedged.p999 : 0;
  std::printf("p99.9 cut %.1fx, p99 cut %.1fx\n", cut, hedged.p99 > 0 ? plain.p99 / hedged.p99 : 0);

  ASSERT_GE(plain.calls, 9000);
  ASSERT_GE(hedged.calls, 9000);
  EXPECT_EQ(plain.ok, plain.calls);
  EXPECT_EQ(hedged.ok, hedged.calls);
  EXPECT_GE(plain.p999, 400);  // the tail is there without hedging
  EXPECT_GE(cut, 5.0);
  EXPECT_LE(static_cast<double>(hedged.hedges), 0.05 * static_cast<double>(hedged.calls));
}

}  // namespace
}  // namespace meshlib
