// Hot reload under load, with real processes: meshcall sends 500 calls/s
// (not idempotent: nothing may hide a failure behind a retry) for 20 s to
// 3 echo_server instances while the test rewrites mesh.json every second,
// cycling through different balancers, retry and hedging policies, outlier
// detection and routes to subsets, with one broken document among them.
//
// Bar: no call fails because of a reload; the broken document is rejected
// naming the field and the previous configuration keeps serving.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

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

TEST(ReloadTest, ConfigRewrittenEverySecondUnderLoadFailsNoCall) {
  std::vector<std::unique_ptr<Subprocess>> servers;
  std::vector<std::string> endpoints;
  for (int i = 0; i < 3; ++i) {
    servers.push_back(std::make_unique<Subprocess>(std::vector<std::string>{
        testing::Runfile("examples/echo/echo_server"), "--port=0", "--io_threads=1",
        absl::StrCat("--name=s", i)}));
    std::string line = servers.back()->WaitForLine("listening on ", absl::Seconds(10));
    ASSERT_FALSE(line.empty()) << servers.back()->err();
    endpoints.push_back(absl::StrCat(R"({"address": ")", line.substr(strlen("listening on ")),
                                     R"(", "metadata": {"version": ")", i == 2 ? "v2" : "v1",
                                     R"("}})"));
  }
  auto document = [&](const std::string& extra) {
    return absl::StrCat(R"({"services": {"echo": {"discovery": {"static": {"endpoints": [)",
                        absl::StrJoin(endpoints, ","), R"(]}}, "timeout": "1s")",
                        extra.empty() ? "" : ", ", extra, "}}}");
  };
  const std::vector<std::string> variants = {
      R"("load_balancer": [{"round_robin": {}}])",
      R"("load_balancer": [{"p2c_peak_ewma": {}}], "retry": {"max_attempts": 2})",
      R"("subsets": {"v1": {"version": "v1"}, "v2": {"version": "v2"}},
         "routes": [{"name": "canary", "split": {"v1": 90, "v2": 10}}])",
      R"("hedging": {"percentile": 95}, "outlier_detection": {"interval": "1s"},
         "load_balancer": [{"least_request": {}}])",
      R"("retry": {"max_attempts": 50})",  // broken: rejected, the previous one stays
      R"("load_balancer": [{"maglev": {}}], "circuit_breaker": {"max_requests": 5000})",
  };
  std::string dir = testing::MakeTempDir("reload");
  std::string path = dir + "/mesh.json";
  auto write = [&](const std::string& text) {
    std::ofstream(path + ".tmp", std::ios::trunc) << text;
    ASSERT_EQ(rename((path + ".tmp").c_str(), path.c_str()), 0);
  };
  write(document(""));
  Subprocess load({testing::Runfile("examples/meshcall/meshcall"), "--config=" + path,
                   "--service=echo", "--method=Echo/Say", "--data=reload", "--rate=500",
                   "--duration=20s", "--json", "--timeline=1s"});
  absl::Time start = absl::Now();
  for (int i = 1; i <= 19; ++i) {
    absl::SleepFor(start + absl::Seconds(i) - absl::Now());
    write(document(variants[(i - 1) % variants.size()]));
  }
  ASSERT_EQ(load.Wait(absl::Seconds(60)), 0) << load.err();
  json j;
  try {
    j = json::parse(load.out());
  } catch (const std::exception& e) {
    FAIL() << "meshcall output is not JSON: " << load.out() << " / " << load.err();
  }
  std::printf("\ncalls %lld, ok %lld, errors %s\nconfig generation %lld, reloads %lld, "
              "rejected %lld (%s)\nlatency p50 %.2f ms, p99 %.2f ms\n",
              static_cast<long long>(j["requests"].get<int64_t>()),
              static_cast<long long>(j["ok"].get<int64_t>()), j["errors"].dump().c_str(),
              static_cast<long long>(j["config_generation"].get<int64_t>()),
              static_cast<long long>(j["config_reloads"].get<int64_t>()),
              static_cast<long long>(j["config_rejected"].get<int64_t>()),
              j.value("config_last_error", std::string()).c_str(),
              j["latency_us"]["p50"].get<double>() / 1000,
              j["latency_us"]["p99"].get<double>() / 1000);
  EXPECT_GE(j["requests"].get<int64_t>(), 9000);
  EXPECT_EQ(j["ok"], j["requests"]) << j["errors"].dump();
  EXPECT_GE(j["config_reloads"].get<int64_t>(), 14);
  EXPECT_GE(j["config_rejected"].get<int64_t>(), 3);
  EXPECT_NE(j.value("config_last_error", std::string()).find("services.echo.retry.max_attempts"),
            std::string::npos);
}

}  // namespace
}  // namespace meshlib
