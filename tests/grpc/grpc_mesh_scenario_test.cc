// The whole client stack over gRPC against real gRPC servers: meshcall
// calls a service with "protocol": "grpc" whose five endpoints are
// python3-grpcio servers (tests/grpc/grpcio_server.py); one answers after
// 1 s, one fails 30% of its calls UNAVAILABLE. With a 300 ms timeout,
// retries, hedging and outlier detection, >= 99.9% of calls must succeed.
//
// Asserts a whole scenario's success rate: tagged scenario (run alone,
// unsanitized, once per CI run).
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/testing/subprocess.h"
#include "nlohmann/json.hpp"

namespace meshlib {
namespace {

using json = nlohmann::json;
using testing::Subprocess;

std::unique_ptr<Subprocess> StartGrpcio(const std::string& name, std::vector<std::string> extra,
                                        std::string* address) {
  std::vector<std::string> argv = {"/usr/bin/python3",
                                   testing::Runfile("tests/grpc/grpcio_server.py"),
                                   "--name=" + name};
  for (auto& a : extra) argv.push_back(std::move(a));
  auto p = std::make_unique<Subprocess>(argv);
  std::string line = p->WaitForLine("listening on ", absl::Seconds(30));
  EXPECT_FALSE(line.empty()) << name << ": " << p->err();
  *address = absl::StrCat("127.0.0.1:", line.substr(13));
  return p;
}

TEST(GrpcMeshScenarioTest, FullStackOverGrpcSurvivesASlowAndAFlakyServer) {
  std::vector<std::unique_ptr<Subprocess>> servers;
  std::vector<std::string> addrs(5);
  const std::vector<std::string> names = {"steady-1", "steady-2", "steady-3", "slow-1s",
                                          "flaky-30%"};
  for (int i = 0; i < 5; ++i) {
    std::vector<std::string> extra;
    if (i == 3) extra.push_back("--delay_ms=1000");
    if (i == 4) extra.push_back("--fail_rate=0.3");
    servers.push_back(StartGrpcio(names[i], extra, &addrs[i]));
  }
  json config = json::parse(R"({"services": {"echo": {
      "protocol": "grpc",
      "load_balancer": [{"p2c_peak_ewma": {}}],
      "timeout": "300ms",
      "retry": {"max_attempts": 3, "retry_on": ["UNAVAILABLE"], "per_try_timeout": "100ms",
                "backoff": {"base": "5ms", "max": "50ms"},
                "budget": {"ratio": 0.2, "min_per_second": 10, "ttl": "10s"}},
      "hedging": {"percentile": 95, "max_attempts": 2},
      "outlier_detection": {"consecutive_failures": 5, "interval": "1s",
                            "base_ejection_time": "2s", "max_ejection_percent": 50}
  }}})");
  config["services"]["echo"]["discovery"] = {{"static", {{"endpoints", addrs}}}};
  const std::string path = testing::MakeTempDir("grpc-mesh") + "/mesh.json";
  std::ofstream(path) << config.dump();
  Subprocess load({testing::Runfile("examples/meshcall/meshcall"), "--config=" + path,
                   "--service=echo", "--method=Echo/Say", "--data=over-grpc", "--rate=300",
                   "--duration=15s", "--idempotent", "--json", "--timeline=1s"});
  ASSERT_EQ(load.Wait(absl::Seconds(120)), 0) << load.err();
  json j = json::parse(load.out(), nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << load.out() << " / " << load.err();
  const int64_t calls = j["requests"].get<int64_t>();
  const int64_t ok = j["ok"].get<int64_t>();
  const double success = calls > 0 ? static_cast<double>(ok) / static_cast<double>(calls) : 0;
  std::printf("calls %lld, ok %lld (%.3f%%), errors %s\n", static_cast<long long>(calls),
              static_cast<long long>(ok), 100 * success, j["errors"].dump().c_str());
  std::printf("retries %lld, hedges %lld, p50 %.2f ms, p99 %.2f ms\n",
              static_cast<long long>(j["retries"].get<int64_t>()),
              static_cast<long long>(j["hedges"].get<int64_t>()),
              j["latency_us"]["p50"].get<double>() / 1000,
              j["latency_us"]["p99"].get<double>() / 1000);
  std::printf("share of calls per second (%%):\n%5s", "t");
  for (const std::string& n : names) std::printf(" %10s", n.c_str());
  std::printf(" %7s\n", "failed");
  for (const json& t : j["timeline"]) {
    std::printf("%5.0f", t["t_s"].get<double>());
    for (const std::string& a : addrs) {
      std::printf(" %10.1f", 100 * (t["share"].contains(a) ? t["share"][a].get<double>() : 0));
    }
    std::printf(" %7lld\n", static_cast<long long>(t["failed"].get<int64_t>()));
  }
  EXPECT_GE(calls, 4000);  // the load generator kept up
  EXPECT_GE(success, 0.999);
  EXPECT_GT(j["retries"].get<int64_t>() + j["hedges"].get<int64_t>(), 0);
}

}  // namespace
}  // namespace meshlib
