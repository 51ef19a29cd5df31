// The demo (tools/demo.sh runs //examples/demo:demo) in its quick form, a
// few seconds per phase: it runs both phases, meshlib's calls succeed more
// often than round robin's against the same faults, and no echo_server it
// started outlives it, whether it ends normally or by Ctrl-C.
#include <signal.h>

#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib {
namespace {

using testing::Subprocess;

std::vector<std::string> DemoArgs(const std::string& duration) {
  return {testing::Runfile("examples/demo/demo"),
          "--echo_server=" + testing::Runfile("examples/echo/echo_server"),
          "--duration=" + duration, "--rate=300", "--plain"};
}

// Every "pid N" the demo printed: the servers it started and restarted.
std::vector<int> PidsIn(const std::string& out) {
  std::vector<int> pids;
  std::regex pid_re(R"(pid (\d+))");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), pid_re); it != std::sregex_iterator();
       ++it) {
    int pid = 0;
    if (absl::SimpleAtoi((*it)[1].str(), &pid)) pids.push_back(pid);
  }
  return pids;
}

// True while `pid` is a running echo_server. A zombie (its cmdline is
// empty) does not count, nor does a pid since given to another program.
bool EchoServerAlive(int pid) {
  std::ifstream cmdline(absl::StrCat("/proc/", pid, "/cmdline"));
  if (!cmdline) return false;
  std::string argv((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
  return absl::StrContains(argv, "echo_server");
}

void ExpectNoServerLeft(const std::string& out) {
  std::vector<int> pids = PidsIn(out);
  EXPECT_GE(pids.size(), 5u) << out;
  for (int pid : pids) EXPECT_FALSE(EchoServerAlive(pid)) << "echo_server pid " << pid;
}

// "  success rate   99.97%   93.10%" -> {99.97, 93.10}
std::vector<double> SuccessRates(const std::string& out) {
  std::smatch m;
  std::regex row(R"(\n +success rate +([0-9.]+)% +([0-9.]+)%)");
  if (!std::regex_search(out, m, row)) return {};
  return {std::stod(m[1].str()), std::stod(m[2].str())};
}

TEST(DemoTest, MeshlibBeatsRoundRobinAndEveryServerIsStopped) {
  Subprocess demo(DemoArgs("3s"));
  ASSERT_EQ(demo.Wait(absl::Seconds(120)), 0) << demo.out() << demo.err();
  const std::string& out = demo.out();
  std::printf("%s\n", out.substr(out.find("== summary")).c_str());

  EXPECT_TRUE(absl::StrContains(out, "== phase meshlib")) << out;
  EXPECT_TRUE(absl::StrContains(out, "== phase round robin")) << out;
  EXPECT_TRUE(absl::StrContains(out, "SIGKILL echo-5")) << out;
  EXPECT_TRUE(absl::StrContains(out, "restarted echo-5")) << out;
  ASSERT_TRUE(absl::StrContains(out, "== summary")) << out;
  std::vector<double> success = SuccessRates(out);
  ASSERT_EQ(success.size(), 2u) << out;
  // Round robin passes the flaky instance's errors on (~6% of calls);
  // retries and ejection hide them.
  EXPECT_GT(success[0], success[1]) << out;
  EXPECT_GE(success[0], 99.0) << out;
  EXPECT_LT(success[1], 99.0) << out;
  ExpectNoServerLeft(out);
}

TEST(DemoTest, CtrlCStopsTheRunAndEveryServer) {
  Subprocess demo(DemoArgs("60s"));
  ASSERT_FALSE(demo.WaitForLine("== phase meshlib", absl::Seconds(30)).empty())
      << demo.out() << demo.err();
  // Mid-phase, with load flowing.
  ASSERT_FALSE(demo.WaitForLine("[meshlib]", absl::Seconds(10)).empty()) << demo.out();
  demo.Signal(SIGINT);
  EXPECT_EQ(demo.Wait(absl::Seconds(20)), 128 + SIGINT) << demo.out() << demo.err();
  EXPECT_TRUE(absl::StrContains(demo.out(), "interrupted")) << demo.out();
  ExpectNoServerLeft(demo.out());
}

TEST(DemoTest, ServersDieWithTheDemoEvenWhenItIsKilled) {
  Subprocess demo(DemoArgs("60s"));
  ASSERT_FALSE(demo.WaitForLine("== phase meshlib", absl::Seconds(30)).empty())
      << demo.out() << demo.err();
  std::vector<int> pids = PidsIn(demo.out());
  ASSERT_EQ(pids.size(), 5u) << demo.out();
  demo.Signal(SIGKILL);  // no chance to clean up: the kernel stops its children
  demo.Wait(absl::Seconds(10));
  for (int pid : pids) {
    EXPECT_TRUE(testing::Eventually([&] { return !EchoServerAlive(pid); }, absl::Seconds(10)))
        << "echo_server pid " << pid;
  }
}

TEST(DemoTest, MissingEchoServerIsASetupFailureThatSaysSo) {
  Subprocess demo(
      {testing::Runfile("examples/demo/demo"), "--echo_server=/nonexistent/echo", "--duration=3s"});
  EXPECT_EQ(demo.Wait(absl::Seconds(20)), 1);
  EXPECT_TRUE(absl::StrContains(demo.err(), "no echo_server at /nonexistent/echo")) << demo.err();
}

}  // namespace
}  // namespace meshlib
