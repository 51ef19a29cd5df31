// Chaos under steady load, with real processes: 5 echo_server instances
// behind one service, meshcall sending 2,000 idempotent calls/s for 20 s
// (open loop, latency from each call's intended send time), while
//   - one instance answers 20% of its calls with UNAVAILABLE,
//   - one answers every call after 300 ms,
//   - two are killed with SIGKILL mid-run (at 5 s and 8 s), and the first
//     of them is started again on its port at 12 s.
// The client uses the whole resilience stack from mesh.json: p2c_peak_ewma,
// retries on a budget (which alone bounds retries: no max_retries), percentile
// hedging, outlier detection.
//
// Bar: >= 99.9% of calls succeed, attempts per call (amplification) <= 1.2.
// Reported: success, retries, hedges, amplification, p50/p99, and each
// endpoint's share of calls per second.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "meshlib/testing/subprocess.h"
#include "nlohmann/json.hpp"

namespace meshlib {
namespace {

using json = nlohmann::json;
using testing::Subprocess;

std::unique_ptr<Subprocess> StartEcho(int port, const std::string& name,
                                      std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {testing::Runfile("examples/echo/echo_server"),
                                   absl::StrCat("--port=", port), "--name=" + name,
                                   "--io_threads=1"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = std::make_unique<Subprocess>(argv);
  std::string line = p->WaitForLine("listening on ", absl::Seconds(10));
  EXPECT_FALSE(line.empty()) << name << ": " << p->err();
  return p;
}

// Runs meshcall with `config` (its discovery set to `addrs`) at `rate`
// calls/s for `duration` while `events` runs (given the start time), and
// returns meshcall's --json report, printed as a table on the way.
json RunLoad(json config, const std::vector<std::string>& addrs, int rate,
             absl::Duration duration, const std::vector<std::string>& names,
             const std::function<void(absl::Time)>& events) {
  config["services"]["echo"]["discovery"] = {{"static", {{"endpoints", addrs}}}};
  std::string path = testing::MakeTempDir("chaos") + "/mesh.json";
  std::ofstream(path) << config.dump();
  Subprocess load({testing::Runfile("examples/meshcall/meshcall"), "--config=" + path,
                   "--service=echo", "--method=Echo/Say", "--data=chaos",
                   absl::StrCat("--rate=", rate),
                   absl::StrCat("--duration=", absl::ToInt64Seconds(duration), "s"),
                   "--idempotent", "--json", "--timeline=1s"});
  events(absl::Now());
  EXPECT_EQ(load.Wait(absl::Seconds(90) + duration), 0) << load.err();
  json j;
  try {
    j = json::parse(load.out());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "meshcall output is not JSON: " << load.out() << " / " << load.err();
    return json();
  }
  int64_t calls = j["requests"].get<int64_t>();
  int64_t ok = j["ok"].get<int64_t>();
  double success = calls > 0 ? static_cast<double>(ok) / static_cast<double>(calls) : 0;
  std::printf("\ncalls %lld, ok %lld (%.3f%%), errors %s\n", static_cast<long long>(calls),
              static_cast<long long>(ok), 100 * success, j["errors"].dump().c_str());
  std::printf("retries %lld, hedges %lld, denied by budget %lld/%lld, amplification %.3f\n",
              static_cast<long long>(j["retries"].get<int64_t>()),
              static_cast<long long>(j["hedges"].get<int64_t>()),
              static_cast<long long>(j["retries_denied_by_budget"].get<int64_t>()),
              static_cast<long long>(j["hedges_denied_by_budget"].get<int64_t>()),
              j.value("amplification", 0.0));
  std::printf("circuit breaker overflows %lld, ejections %lld\n",
              static_cast<long long>(j.value("breaker_overflows", int64_t{0})),
              static_cast<long long>(j.value("ejections", int64_t{0})));
  std::printf("latency p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n",
              j["latency_us"]["p50"].get<double>() / 1000,
              j["latency_us"]["p99"].get<double>() / 1000,
              j["latency_us"]["p999"].get<double>() / 1000);
  std::printf("\nshare of calls per second (%%):\n%5s", "t");
  for (const std::string& n : names) std::printf(" %13s", n.c_str());
  std::printf(" %8s %9s\n", "failed", "p99 ms");
  for (const json& t : j["timeline"]) {
    std::printf("%5.0f", t["t_s"].get<double>());
    for (const std::string& a : addrs) {
      double share = t["share"].contains(a) ? t["share"][a].get<double>() : 0;
      std::printf(" %13.1f", 100 * share);
    }
    std::printf(" %8lld %9.2f\n", static_cast<long long>(t["failed"].get<int64_t>()),
                t["p99_us"].get<double>() / 1000);
  }
  if (j.contains("last_error")) std::printf("last error: %s\n", j["last_error"].dump().c_str());
  j["success"] = success;
  return j;
}

struct Fleet {
  std::vector<int> ports;
  std::vector<std::string> addrs;
  std::vector<std::unique_ptr<Subprocess>> inst;
  explicit Fleet(int n) : inst(n) {
    for (int i = 0; i < n; ++i) {
      ports.push_back(testing::PickFreePort());
      addrs.push_back(absl::StrCat("127.0.0.1:", ports.back()));
    }
  }
  // Five instances: steady, flaky (20% UNAVAILABLE), slow (every answer
  // after `slow_ms`), one to kill and restart, one to kill.
  void StartChaosFleet(int slow_ms) {
    inst[0] = StartEcho(ports[0], "steady");
    inst[1] = StartEcho(ports[1], "flaky", {"--error_rate=0.2"});
    inst[2] = StartEcho(ports[2], "slow", {absl::StrCat("--latency_ms=", slow_ms)});
    inst[3] = StartEcho(ports[3], "killed-restarted");
    inst[4] = StartEcho(ports[4], "killed");
  }
  // SIGKILLs instance 3 at 5 s and 4 at 8 s; starts 3 again at 12 s.
  void KillAndRestart(absl::Time start) {
    auto at = [&](absl::Duration d) { absl::SleepFor(start + d - absl::Now()); };
    at(absl::Seconds(5));
    inst[3]->Signal(SIGKILL);
    at(absl::Seconds(8));
    inst[4]->Signal(SIGKILL);
    at(absl::Seconds(12));
    inst[3]->Wait(absl::Seconds(5));
    inst[3] = StartEcho(ports[3], "killed-restarted");
  }
  ~Fleet() {
    for (auto& p : inst) {
      if (p != nullptr && p->Running()) {
        p->Signal(SIGCONT);
        p->Signal(SIGTERM);
      }
    }
  }
};

// What a new user writes: a 1s timeout, the retry example of
// docs/resilience.md and outlier detection with its defaults, nothing else
// (round robin, no hedging); RunLoad adds the discovery.
json NewUserConfig() {
  return json::parse(R"({"services": {"echo": {
      "timeout": "1s",
      "retry": {"max_attempts": 3, "retry_on": ["UNAVAILABLE"], "per_try_timeout": "300ms",
                "backoff": {"base": "25ms", "max": "250ms"},
                "budget": {"ratio": 0.2, "min_per_second": 10, "ttl": "10s"}},
      "outlier_detection": {}
  }}})");
}

TEST(ChaosTest, IdempotentCallsSurviveFlakySlowAndKilledInstances) {
  Fleet f(5);
  f.StartChaosFleet(300);

  json config = json::parse(R"({"services": {"echo": {
      "load_balancer": [{"p2c_peak_ewma": {}}],
      "timeout": "1s",
      "retry": {"max_attempts": 3, "retry_on": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                "budget": {"ratio": 0.2, "min_per_second": 10, "ttl": "10s"}},
      "hedging": {"percentile": 99, "max_attempts": 2},
      "outlier_detection": {"consecutive_failures": 5, "interval": "1s",
                            "base_ejection_time": "2s", "max_ejection_percent": 50}
  }}})");
  json j = RunLoad(config, f.addrs, 2000, absl::Seconds(20),
                   {"steady", "flaky", "slow", "kill+restart", "killed"}, [&](absl::Time start) { f.KillAndRestart(start); });
  ASSERT_FALSE(j.is_null());
  EXPECT_GE(j["requests"].get<int64_t>(), 30000);  // the load generator kept up
  EXPECT_GE(j["success"].get<double>(), 0.999);
  EXPECT_LE(j.value("amplification", 0.0), 1.2);
  EXPECT_GT(j["retries"].get<int64_t>(), 0);  // failures happened and were retried
  // The restarted instance is back in use by the end.
  const json& last = j["timeline"][j["timeline"].size() - 2];
  EXPECT_GT(last["share"].value(f.addrs[3], 0.0), 0.0) << last.dump();
}

// What a new user writes: discovery, a 1s timeout, the retry example of
// docs/resilience.md and outlier detection with its defaults, nothing else
// (round robin, no hedging). 1,000 calls/s for 20 s: one instance failing
// 20%, one answering in 400 ms (beyond the 300 ms per-try timeout), two
// SIGKILLed, one of them restarted. Bar: >= 99.9% succeed.
TEST(ChaosTest, TheDocsExampleSettingsSurviveTheSameChaos) {
  Fleet f(5);
  f.StartChaosFleet(400);
  json config = NewUserConfig();
  json j = RunLoad(config, f.addrs, 1000, absl::Seconds(20),
                   {"steady", "flaky", "slow", "kill+restart", "killed"}, [&](absl::Time start) { f.KillAndRestart(start); });
  ASSERT_FALSE(j.is_null());
  EXPECT_GE(j["requests"].get<int64_t>(), 15000);
  EXPECT_GE(j["success"].get<double>(), 0.999);
}

// A gray failure: an instance that stops answering (SIGSTOP) while its
// connections stay open. With the same new-user settings, calls that hit
// it are retried after the per-try timeout and it is ejected, so it is
// routed around like a slow one. Bar: >= 99.9% succeed, and it takes
// (almost) no calls in the last seconds.
TEST(ChaosTest, AnInstanceThatStopsAnsweringIsRoutedAround) {
  Fleet f(3);
  f.inst[0] = StartEcho(f.ports[0], "a");
  f.inst[1] = StartEcho(f.ports[1], "b");
  f.inst[2] = StartEcho(f.ports[2], "stopped");
  json config = NewUserConfig();
  json j = RunLoad(config, f.addrs, 1000, absl::Seconds(12), {"a", "b", "stopped"},
                   [&](absl::Time start) {
                     absl::SleepFor(start + absl::Seconds(3) - absl::Now());
                     f.inst[2]->Signal(SIGSTOP);
                   });
  ASSERT_FALSE(j.is_null());
  EXPECT_GE(j["success"].get<double>(), 0.999);
  const json& late = j["timeline"][j["timeline"].size() - 2];
  EXPECT_LT(late["share"].value(f.addrs[2], 0.0), 0.02) << late.dump();
}

}  // namespace
}  // namespace meshlib
