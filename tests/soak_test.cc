// Long runs of meshcall against real echo_server processes, two of them:
//
// ReloadTest.HedgedRetriedCallsWhileTheConfigChangesEvery250ms (target
// reload_churn_test; runs in every pass, ASan included, alone): 1,500
// idempotent calls/s for 20 s, hedged and retried, while mesh.json is
// rewritten every 250 ms, changing the balancer, the hedging policy and the
// endpoint set. Bar: meshcall exits 0 (no sanitizer report), >= 99.9% of
// calls succeed.
//
// SoakTest.KillsAndRestartsKeepMemoryAndDescriptorsFlat (target soak_test;
// a timed scenario, run once unsanitized): 3,000 calls/s for 60 s over 4
// instances, one of them SIGKILLed every 10 s and started again 2 s later.
// Bar: >= 99.9% succeed; meshcall's RSS at 55 s within 25% of its RSS at
// 15 s, and its open descriptors the same within a few.
#include <dirent.h>
#include <signal.h>
#include <stdio.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "meshlib/testing/subprocess.h"
#include "nlohmann/json.hpp"

namespace meshlib {
namespace {

using json = nlohmann::json;
using testing::Subprocess;

std::unique_ptr<Subprocess> StartEcho(int port, const std::string& name,
                                      const std::string& extra = "--io_threads=1") {
  auto p = std::make_unique<Subprocess>(std::vector<std::string>{
      testing::Runfile("examples/echo/echo_server"), absl::StrCat("--port=", port),
      "--name=" + name, "--io_threads=1", extra});
  std::string line = p->WaitForLine("listening on ", absl::Seconds(10));
  EXPECT_FALSE(line.empty()) << name << ": " << p->err();
  return p;
}

// Writes `text` to `path` the way a config system does: a new file renamed
// over the old one.
void WriteAtomically(const std::string& path, const std::string& text) {
  {
    std::ofstream out(path + ".tmp", std::ios::trunc);
    out << text;
  }
  ASSERT_EQ(rename((path + ".tmp").c_str(), path.c_str()), 0);
}

std::string Document(const std::vector<std::string>& addrs, const std::string& extra) {
  std::vector<std::string> quoted;
  for (const auto& a : addrs) quoted.push_back(absl::StrCat("\"", a, "\""));
  return absl::StrCat(R"({"services": {"echo": {"discovery": {"static": {"endpoints": [)",
                      absl::StrJoin(quoted, ","), R"(]}}, "timeout": "1s",
      "retry": {"max_attempts": 3, "retry_on": ["UNAVAILABLE"], "per_try_timeout": "300ms",
                "budget": {"ratio": 0.5}},
      "outlier_detection": {})",
                      extra.empty() ? "" : ", ", extra, "}}}");
}

json ParseReport(const Subprocess& load) {
  try {
    return json::parse(load.out());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "meshcall output is not JSON: " << load.out() << " / " << load.err();
    return json();
  }
}

double Success(const json& j) {
  int64_t calls = j.value("requests", int64_t{0});
  return calls > 0 ? static_cast<double>(j.value("ok", int64_t{0})) / calls : 0;
}

TEST(ReloadTest, HedgedRetriedCallsWhileTheConfigChangesEvery250ms) {
  std::vector<std::unique_ptr<Subprocess>> servers;
  std::vector<std::string> addrs;
  for (int i = 0; i < 4; ++i) {
    int port = testing::PickFreePort();
    // s1 answers after 10 ms and s2 fails 5% of its calls, so that hedging
    // and retries have work.
    servers.push_back(StartEcho(port, absl::StrCat("s", i),
                                i == 1   ? "--latency_ms=10"
                                : i == 2 ? "--error_rate=0.05"
                                         : "--io_threads=1"));
    addrs.push_back(absl::StrCat("127.0.0.1:", port));
  }
  struct Variant {
    std::vector<int> members;
    std::string extra;
  };
  const std::vector<Variant> variants = {
      {{0, 1, 2}, R"("load_balancer": [{"round_robin": {}}], "hedging": {"delay": "5ms"})"},
      {{0, 1, 2, 3},
       R"("load_balancer": [{"p2c_peak_ewma": {}}], "hedging": {"percentile": 95})"},
      {{1, 2, 3}, R"("load_balancer": [{"least_request": {}}])"},
      {{0, 2, 3}, R"("load_balancer": [{"round_robin": {}}],
                     "hedging": {"delay": "2ms", "max_extra_load": 0.5})"},
  };
  auto document = [&](const Variant& v) {
    std::vector<std::string> members;
    for (int m : v.members) members.push_back(addrs[m]);
    return Document(members, v.extra);
  };
  std::string path = testing::MakeTempDir("churn") + "/mesh.json";
  WriteAtomically(path, document(variants[0]));
  Subprocess load({testing::Runfile("examples/meshcall/meshcall"), "--config=" + path,
                   "--service=echo", "--method=Echo/Say", "--data=churn", "--rate=1500",
                   "--duration=20s", "--idempotent", "--json"});
  const absl::Time start = absl::Now();
  int rewrites = 0;
  while (absl::Now() < start + absl::Seconds(20)) {
    absl::SleepFor(absl::Milliseconds(250));
    WriteAtomically(path, document(variants[++rewrites % variants.size()]));
  }
  ASSERT_EQ(load.Wait(absl::Seconds(90)), 0) << load.err();
  json j = ParseReport(load);
  ASSERT_FALSE(j.is_null());
  std::printf("%d rewrites; calls %lld, ok %.3f%%, reloads %lld, hedges %lld, retries %lld, "
              "errors %s\n",
              rewrites, static_cast<long long>(j.value("requests", int64_t{0})),
              100 * Success(j), static_cast<long long>(j.value("config_reloads", int64_t{0})),
              static_cast<long long>(j.value("hedges", int64_t{0})),
              static_cast<long long>(j.value("retries", int64_t{0})), j["errors"].dump().c_str());
  EXPECT_GE(j.value("requests", int64_t{0}), 15000);
  EXPECT_GE(Success(j), 0.999);
  EXPECT_GE(j.value("config_reloads", int64_t{0}), 20);  // the rewrites were applied
  EXPECT_GT(j.value("hedges", int64_t{0}), 0);
  EXPECT_GT(j.value("retries", int64_t{0}), 0);
}

// Resident set size in KiB, and open descriptors, of `pid`.
int64_t RssKiB(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kib = 0;
      std::string digits;
      for (char c : line) {
        if (c >= '0' && c <= '9') digits.push_back(c);
      }
      if (absl::SimpleAtoi(digits, &kib)) return kib;
    }
  }
  return -1;
}
int OpenFds(pid_t pid) {
  DIR* d = opendir(absl::StrCat("/proc/", pid, "/fd").c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n - 2;  // . and ..
}

TEST(SoakTest, KillsAndRestartsKeepMemoryAndDescriptorsFlat) {
  std::vector<int> ports;
  std::vector<std::string> addrs;
  std::vector<std::unique_ptr<Subprocess>> servers;
  for (int i = 0; i < 4; ++i) {
    ports.push_back(testing::PickFreePort());
    addrs.push_back(absl::StrCat("127.0.0.1:", ports.back()));
    servers.push_back(StartEcho(ports.back(), absl::StrCat("s", i)));
  }
  std::string path = testing::MakeTempDir("soak") + "/mesh.json";
  WriteAtomically(path, Document(addrs, ""));
  Subprocess load({testing::Runfile("examples/meshcall/meshcall"), "--config=" + path,
                   "--service=echo", "--method=Echo/Say", "--data=soak", "--rate=3000",
                   "--duration=60s", "--idempotent", "--json"});
  const absl::Time start = absl::Now();
  auto at = [&](absl::Duration d) { absl::SleepFor(start + d - absl::Now()); };
  int64_t rss15 = 0, rss55 = 0;
  int fds15 = 0, fds55 = 0;
  for (int round = 1; round <= 5; ++round) {
    // At 10 s, 20 s, ... one instance dies; 2 s later it is back.
    at(absl::Seconds(10 * round));
    int victim = round % 4;
    servers[victim]->Signal(SIGKILL);
    servers[victim]->Wait(absl::Seconds(5));
    if (round == 1) {
      at(absl::Seconds(15));
      rss15 = RssKiB(load.pid());
      fds15 = OpenFds(load.pid());
    }
    at(absl::Seconds(10 * round + 2));
    servers[victim] = StartEcho(ports[victim], absl::StrCat("s", victim));
    if (round == 5) {
      at(absl::Seconds(55));
      rss55 = RssKiB(load.pid());
      fds55 = OpenFds(load.pid());
    }
  }
  ASSERT_EQ(load.Wait(absl::Seconds(120)), 0) << load.err();
  json j = ParseReport(load);
  ASSERT_FALSE(j.is_null());
  std::printf("calls %lld, ok %.3f%%, retries %lld, errors %s\n"
              "meshcall RSS %lld KiB at 15 s, %lld KiB at 55 s (%+.1f%%); "
              "descriptors %d at 15 s, %d at 55 s\n",
              static_cast<long long>(j.value("requests", int64_t{0})), 100 * Success(j),
              static_cast<long long>(j.value("retries", int64_t{0})), j["errors"].dump().c_str(),
              static_cast<long long>(rss15), static_cast<long long>(rss55),
              rss15 > 0 ? 100.0 * (rss55 - rss15) / rss15 : 0.0, fds15, fds55);
  EXPECT_GE(j.value("requests", int64_t{0}), 150000);
  EXPECT_GE(Success(j), 0.999);
  ASSERT_GT(rss15, 0);
  EXPECT_LE(rss55, rss15 * 5 / 4);
  EXPECT_LE(fds55, fds15 + 4);
}

}  // namespace
}  // namespace meshlib
