// What a client holds for a large fleet: connections, descriptors and
// resident memory of a mesh client over N endpoints, idle and after calls,
// with a balancer that connects to every endpoint (round_robin) or with
// aperture (connections only to its subset).
//
// The fleet is one echo_server bound to 0.0.0.0: endpoint i is
// 127.0.x.y:PORT, a distinct address on the loopback /8 that reaches it.
//
//   bazel-bin/examples/echo/echo_server --host=0.0.0.0 --port=7400 --io_threads=1 &
//   bazel-bin/benchmarks/aperture_footprint --port=7400 --endpoints=1000 --policy=aperture
//   bazel-bin/benchmarks/aperture_footprint --port=7400 --endpoints=1000 --policy=round_robin
//
// Prints one JSON line: endpoints, policy, and for "idle" (1 s after the
// endpoints are known) and "after_calls": connected endpoints, open
// descriptors and RSS in KiB.
#include <dirent.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "meshlib/mesh/mesh.h"

ABSL_FLAG(int, port, 7400, "port of the echo_server bound to 0.0.0.0");
ABSL_FLAG(int, endpoints, 1000, "endpoints in the fleet (at most 62,500)");
ABSL_FLAG(std::string, policy, "aperture", "aperture or round_robin");
ABSL_FLAG(int, size, 12, "aperture size");
ABSL_FLAG(int, calls, 2000, "calls made after the idle measurement");

namespace {

int64_t RssKiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) != 0) continue;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits.push_back(c);
    }
    int64_t kib = 0;
    if (absl::SimpleAtoi(digits, &kib)) return kib;
  }
  return -1;
}

int OpenFds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int n = 0;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n - 3;  // ., .. and the directory itself
}

std::string Measure(const meshlib::mesh::Client& client) {
  int connected = 0;
  for (const auto& e : client.EndpointStates()) connected += e.connected ? 1 : 0;
  return absl::StrCat(R"({"connected": )", connected, R"(, "fds": )", OpenFds(),
                      R"(, "rss_kib": )", RssKiB(), "}");
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_endpoints);
  if (n < 1 || n > 62500) {
    std::cerr << "aperture_footprint: --endpoints must be 1..62500\n";
    return 2;
  }
  std::vector<std::string> eps;
  for (int i = 0; i < n; ++i) {
    eps.push_back(absl::StrCat("\"127.0.", i / 250, ".", i % 250 + 1, ":",
                               absl::GetFlag(FLAGS_port), "\""));
  }
  const std::string policy = absl::GetFlag(FLAGS_policy);
  std::string lb = policy == "aperture"
                       ? absl::StrCat(R"([{"aperture": {"size": )", absl::GetFlag(FLAGS_size),
                                      R"(, "policy": [{"round_robin": {}}]}}])")
                       : R"([{"round_robin": {}}])";
  auto cfg = meshlib::config::ParseMeshConfig(
      absl::StrCat(R"({"services": {"echo": {"discovery": {"static": {"endpoints": [)",
                   absl::StrJoin(eps, ","), R"(]}}, "timeout": "2s", "load_balancer": )", lb,
                   "}}}"));
  if (!cfg.ok()) {
    std::cerr << "aperture_footprint: " << cfg.status() << "\n";
    return 2;
  }
  const int64_t rss_before = RssKiB();
  auto mesh = meshlib::mesh::Mesh::Create(*std::move(cfg)).value();
  auto client = mesh->Client("echo").value();
  client->WaitForEndpoints(absl::Seconds(5));
  absl::SleepFor(absl::Seconds(1));
  std::string idle = Measure(*client);
  int failed = 0;
  for (int i = 0; i < absl::GetFlag(FLAGS_calls); ++i) {
    failed += client->CallBlocking("Echo/Say", "x").status.ok() ? 0 : 1;
  }
  std::string after = Measure(*client);
  std::cout << R"({"endpoints": )" << n << R"(, "policy": ")" << policy << R"(", "size": )"
            << absl::GetFlag(FLAGS_size) << R"(, "rss_kib_before_mesh": )" << rss_before
            << R"(, "idle": )" << idle << R"(, "after_calls": )" << after << R"(, "calls": )"
            << absl::GetFlag(FLAGS_calls) << R"(, "failed": )" << failed << "}" << std::endl;
  return 0;
}
