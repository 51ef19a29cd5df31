// demo: meshlib against a misbehaving fleet, next to plain round robin.
//
//   tools/demo.sh                                  # builds, then runs this
//   bazel-bin/examples/demo/demo [--duration=15s] [--rate=800] [--instances=5] [--plain]
//   bazel-bin/examples/demo/demo --duration=3s --rate=300   # a quick run
//
// What it does:
//   1. Starts --instances echo_server processes on free loopback ports, all
//      serving one service, "echo": healthy ones, one slow (every call takes
//      --slow_ms), one flaky (answers --flaky_error_rate of its calls with
//      UNAVAILABLE).
//   2. Phase "meshlib": a mesh built from a mesh.json the way an application
//      builds its own, and its client for "echo" (mesh::Mesh, mesh::Client),
//      configured (p2c_peak_ewma, retries on a budget,
//      hedging at p95, outlier detection) sends --rate idempotent calls per
//      second, open loop, for --duration. At 30% of the phase one healthy
//      instance is SIGKILLed, as a crash would; at 65% it is started again on
//      its port.
//   3. Phase "round robin": the same load and the same faults through plain
//      round robin, with no retries, hedging or outlier detection.
//   4. Prints a summary comparing the two and stops every server it started.
//
// While a phase runs, a table per endpoint is redrawn every second: its
// share of the calls, their success and latency (as measured here, from each
// call's intended send time, by the endpoint that gave the final answer, from
// CallResult::endpoint), the attempts it took (retries and hedges included),
// and how the client sees it (mesh::Client::EndpointStates). On a
// terminal the table is redrawn in place; otherwise (or with --plain) each
// refresh is printed as plain lines.
//
// Every echo_server started is stopped on the way out, whatever the way
// out: see Fleet. Ctrl-C (SIGINT), SIGTERM and SIGHUP stop the run, stop
// the servers and exit 128 + the signal; a second one exits at once.
// Exit status: 0 after a run, 1 when the fleet or the client could not be
// set up (with a message saying why), 2 for bad flags.
#include <limits.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "examples/demo/fleet.h"
#include "meshlib/admin/admin_server.h"
#include "meshlib/admin/live.h"
#include "meshlib/client/service_channel.h"
#include "meshlib/config/config.h"
#include "meshlib/core/log.h"
#include "meshlib/core/sync.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/metrics/metrics.h"
#include "meshlib/runtime/event_loop.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(absl::Duration, duration, absl::Seconds(15),
          "length of each of the two phases (2s to 10m)");
ABSL_FLAG(double, rate, 800, "calls per second, open loop (1 to 20000)");
ABSL_FLAG(int, instances, 5,
          "echo_server instances (4 to 20): one slow, one flaky, one killed and restarted, "
          "the rest healthy");
ABSL_FLAG(int, slow_ms, 250, "latency of the slow instance, in milliseconds");
ABSL_FLAG(double, flaky_error_rate, 0.3,
          "share of the flaky instance's calls answered with UNAVAILABLE (0 to 1)");
ABSL_FLAG(bool, plain, false, "print plain lines even on a terminal (no redrawing)");
ABSL_FLAG(int, admin_port, 0,
          "serve the admin endpoint on 127.0.0.1:PORT (0, the default, picks a free port): the "
          "live page at /, /metrics, /metrics.json; -1: none");
ABSL_FLAG(std::string, echo_server, "",
          "path of echo_server; default: beside this binary in bazel-bin "
          "(../echo/echo_server)");

namespace meshlib::demo {
namespace {

using client::CallOptions;
using client::CallResult;
using client::EndpointState;

// The client in each phase, configured as an application would configure it
// in mesh.json (see docs/configuration.md); the endpoint list is filled in once the
// fleet is up.
//
// meshlib: p2c_peak_ewma steers calls away from slow and failing endpoints;
// UNAVAILABLE answers of these idempotent calls are retried on another
// endpoint, within a budget of 20% extra calls; a call still unanswered at
// the 95th percentile of recent latencies is hedged to a second endpoint;
// an endpoint with 5 failures in a row, or 25% failures in a 1s interval, is
// ejected for 2s (longer each time in a row) and then let back one probe call
// at a time. Envoy's default of 3 retries in flight at once is tight at
// hundreds of calls per second; the retry budget is the real bound.
constexpr char kMeshlibConfig[] = R"json({"services": {"echo": {
  "load_balancer": [{"p2c_peak_ewma": {}}],
  "timeout": "1s",
  "retry": {"max_attempts": 3, "retry_on": ["UNAVAILABLE"],
            "budget": {"ratio": 0.2, "min_per_second": 10, "ttl": "10s"}},
  "hedging": {"percentile": 95, "max_attempts": 2},
  "circuit_breaker": {"max_retries": 64},
  "outlier_detection": {"consecutive_failures": 5, "interval": "1s",
                        "base_ejection_time": "2s", "max_ejection_percent": 50,
                        "failure_percentage": {"threshold": 25, "minimum_hosts": 3,
                                               "request_volume": 20}}
}}})json";

// Round robin: what a client without a mesh does.
constexpr char kRoundRobinConfig[] = R"json({"services": {"echo": {
  "load_balancer": [{"round_robin": {}}],
  "timeout": "1s"
}}})json";

// When, as a share of each phase, the victim is SIGKILLed and restarted.
constexpr double kKillAt = 0.30;
constexpr double kRestartAt = 0.65;

struct Phase {
  std::string name;         // "meshlib", "round robin"
  std::string description;  // one line, for the table's title
  const char* config;
  // The service's name in the phase's mesh (its metrics' `service` label):
  // each phase has its own, so the live page shows them side by side.
  std::string service;
};

// Set by the signal thread; every wait of the demo watches it.
core::Notification g_stop;
std::atomic<int> g_stop_signal{0};

// ---------------------------------------------------------------------------
// Setup

// The role each instance plays, by index: the last three are slow, flaky
// and the one that gets killed; the rest are healthy.
std::vector<InstanceSpec> FleetSpecs(int instances, int slow_ms, double flaky_error_rate,
                                     size_t* victim) {
  std::vector<InstanceSpec> specs;
  for (int i = 0; i < instances; ++i) {
    InstanceSpec s;
    s.name = absl::StrCat("echo-", i + 1);
    if (i == instances - 3) {
      s.role = absl::StrCat("slow +", slow_ms, "ms");
      s.flags = {absl::StrCat("--latency_ms=", slow_ms)};
    } else if (i == instances - 2) {
      s.role = absl::StrCat("flaky ", absl::StrFormat("%.0f", 100 * flaky_error_rate), "% err");
      s.flags = {absl::StrCat("--error_rate=", flaky_error_rate)};
    } else {
      s.role = "healthy";
    }
    specs.push_back(std::move(s));
  }
  *victim = static_cast<size_t>(instances - 1);
  return specs;
}

// Beside this binary: bazel-bin/examples/demo/demo finds
// bazel-bin/examples/echo/echo_server (a data dependency, so Bazel builds
// it with the demo).
std::string DefaultEchoServer() {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return "examples/echo/echo_server";
  std::string dir(self, static_cast<size_t>(n));
  dir.resize(dir.rfind('/'));
  return dir + "/../echo/echo_server";
}

// The client of one phase: a mesh built from the phase's mesh.json (with
// the fleet's endpoints), as an application builds its own, and the "echo"
// service's client from it.
struct EchoClient {
  std::unique_ptr<::meshlib::mesh::Mesh> mesh;
  std::shared_ptr<::meshlib::mesh::Client> client;
};

absl::StatusOr<EchoClient> ConnectToEcho(const Phase& phase,
                                         const std::vector<std::string>& endpoints,
                                         absl::Duration* timeout) {
  nlohmann::json doc = nlohmann::json::parse(phase.config);
  nlohmann::json service = doc["services"]["echo"];
  service["discovery"] = {{"static", {{"endpoints", endpoints}}}};
  doc["services"] = {{phase.service, service}};
  absl::StatusOr<config::MeshConfig> cfg = config::ParseMeshConfig(doc.dump());
  if (!cfg.ok()) return cfg.status();
  *timeout = cfg->Find(phase.service)->timeout;
  EchoClient out;
  auto m = mesh::Mesh::Create(*std::move(cfg));
  if (!m.ok()) return m.status();
  out.mesh = *std::move(m);
  auto client = out.mesh->Client(phase.service);
  if (!client.ok()) return client.status();
  out.client = *std::move(client);
  if (!out.client->WaitForEndpoints(absl::Seconds(5))) {
    return absl::DeadlineExceededError("no endpoints from discovery after 5s");
  }
  return out;
}

// ---------------------------------------------------------------------------
// Measuring

std::string CodeName(absl::StatusCode code) {
  std::string s = absl::AsciiStrToUpper(absl::StatusCodeToString(code));
  absl::StrReplaceAll({{" ", "_"}}, &s);
  return s;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Calls and their latencies, for one endpoint or for all.
struct Sample {
  int64_t calls = 0;
  int64_t ok = 0;
  std::vector<double> latency_ms;

  void Add(bool success, double ms) {
    ++calls;
    if (success) ++ok;
    latency_ms.push_back(ms);
  }
};

// Outcomes of calls by the endpoint that gave the final answer ("" when no
// endpoint answered: a connection refused, a deadline), for the last window
// and for the whole phase. Add runs on reactor threads.
class Tally {
 public:
  void Started() { in_flight_.fetch_add(1, std::memory_order_relaxed); }
  void Add(const CallResult& r, absl::Duration latency) {
    const double ms = absl::ToDoubleMilliseconds(latency);
    {
      core::MutexLock lock(&mu_);
      window_[r.endpoint].Add(r.status.ok(), ms);
      phase_[r.endpoint].Add(r.status.ok(), ms);
      if (!r.status.ok()) ++errors_[CodeName(r.status.code())];
    }
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
  }
  int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  // The window since the last call, by endpoint.
  std::map<std::string, Sample> TakeWindow() {
    core::MutexLock lock(&mu_);
    return std::exchange(window_, {});
  }
  std::map<std::string, Sample> Phase() {
    core::MutexLock lock(&mu_);
    return phase_;
  }
  std::map<std::string, int64_t> Errors() {
    core::MutexLock lock(&mu_);
    return errors_;
  }

 private:
  std::atomic<int64_t> in_flight_{0};
  core::Mutex mu_;
  std::map<std::string, Sample> window_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Sample> phase_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> errors_ ABSL_GUARDED_BY(mu_);
};

// Waits until every call started has completed, at most `timeout`.
void WaitForCalls(const Tally& tally, absl::Duration timeout) {
  const absl::Time give_up = absl::Now() + timeout;
  while (tally.in_flight() > 0 && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(5));
}

Sample Merge(const std::map<std::string, Sample>& by_endpoint) {
  Sample all;
  for (const auto& [addr, s] : by_endpoint) {
    all.calls += s.calls;
    all.ok += s.ok;
    all.latency_ms.insert(all.latency_ms.end(), s.latency_ms.begin(), s.latency_ms.end());
  }
  return all;
}

// Open-loop load: call i is due at start + i/rate whatever happened to the
// calls before it, and its latency counts from then, so a stall shows in the
// numbers instead of slowing the load down (no coordinated omission).
class OpenLoopLoad {
 public:
  OpenLoopLoad(client::Caller* channel, std::shared_ptr<Tally> tally, double rate, absl::Time start,
               absl::Time end, absl::Duration timeout)
      : pacer_([=] {
          CallOptions options;
          options.timeout = timeout;
          options.idempotent = true;  // Echo/Say is safe to retry and hedge
          const absl::Duration interval = absl::Seconds(1) / rate;
          for (int64_t i = 0;; ++i) {
            const absl::Time due = start + interval * static_cast<double>(i);
            if (due >= end || g_stop.HasBeenNotified()) return;
            const absl::Time now = absl::Now();
            if (due > now) absl::SleepFor(due - now);
            tally->Started();
            // The callback holds its own reference to the tally: a call
            // waiting on a retry or hedge timer when the channel is
            // destroyed completes afterwards, with CANCELLED.
            channel->Call("Echo/Say", "hello", options,
                          [tally, due](CallResult r) { tally->Add(r, absl::Now() - due); });
          }
        }) {}
  ~OpenLoopLoad() { pacer_.join(); }

 private:
  std::thread pacer_;
};

// ---------------------------------------------------------------------------
// Display

std::string Ms(double ms) {
  if (ms >= 1000) return absl::StrFormat("%.2fs", ms / 1000);
  if (ms >= 100) return absl::StrFormat("%.0fms", ms);
  if (ms >= 10) return absl::StrFormat("%.1fms", ms);
  return absl::StrFormat("%.2fms", ms);
}

std::string Percent(int64_t part, int64_t whole) {
  if (whole == 0) return "-";
  return absl::StrFormat("%.2f%%", 100.0 * static_cast<double>(part) / static_cast<double>(whole));
}

// The live table: on a terminal it is redrawn in place (ANSI escapes:
// cursor up, clear to the end of the screen) and event lines scroll above
// it; otherwise every refresh and event is printed as plain lines.
class Screen {
 public:
  explicit Screen(bool redraw) : redraw_(redraw) {}

  // A line that stays (an event, a heading).
  void Line(const std::string& line) {
    EraseTable();
    std::printf("%s\n", line.c_str());
    DrawTable();
    std::fflush(stdout);
  }
  // Replaces the table on a terminal; prints it below the last one otherwise.
  void Table(std::vector<std::string> lines) {
    EraseTable();
    table_ = std::move(lines);
    DrawTable();
    std::fflush(stdout);
  }
  // Leaves the current table on the screen for good.
  void Keep() {
    if (!redraw_) return;
    table_.clear();
    drawn_ = 0;
  }

 private:
  void EraseTable() {
    if (redraw_ && drawn_ > 0) std::printf("\x1b[%zuA\r\x1b[J", drawn_);
    drawn_ = 0;
  }
  void DrawTable() {
    if (redraw_) {
      // A line wider than the terminal would wrap onto two rows, and the
      // next redraw would move up too few; cut it instead.
      size_t width = 1000;
      struct winsize ws;
      if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1) width = ws.ws_col - 1;
      for (const std::string& l : table_) std::printf("%s\n", l.substr(0, width).c_str());
      drawn_ = table_.size();
    } else {
      for (const std::string& l : table_) std::printf("%s\n", l.c_str());
      table_.clear();  // printed once
    }
  }

  const bool redraw_;
  std::vector<std::string> table_;
  size_t drawn_ = 0;
};

// Attempt counters of one endpoint as the client counts them (retries and
// hedges included), to show per-window differences.
struct Attempts {
  uint64_t calls = 0;
  uint64_t failures = 0;
};

uint64_t Ejections(const mesh::ClientStats& st) { return st.ejections; }

// One table: a row per instance, one for calls no endpoint answered, and a
// footer with the whole channel's counters.
std::vector<std::string> RenderTable(const std::string& title, const Fleet& fleet,
                                     const std::vector<std::string>& process_state,
                                     const std::map<std::string, Sample>& samples,
                                     const std::vector<EndpointState>& states,
                                     const std::map<std::string, Attempts>& attempts,
                                     const mesh::ClientStats& st, const Sample& phase_so_far) {
  std::vector<std::string> out;
  out.push_back(title);
  out.push_back(absl::StrFormat("  %-8s %-15s %-13s %7s %7s %7s %7s %8s %6s  %-9s %s", "instance",
                                "address", "server", "share", "success", "p50", "p99", "attempts",
                                "failed", "state", "latency est."));
  const Sample all = Merge(samples);
  for (size_t i = 0; i < fleet.size(); ++i) {
    const Instance& inst = fleet.instance(i);
    Sample s;
    if (auto it = samples.find(inst.address); it != samples.end()) s = it->second;
    // The client's view: outlier detection's verdict, and the balancer's
    // latency estimate (peak EWMA; a failure counts as failure_penalty).
    std::string state = "-", estimate = "-";
    for (const EndpointState& e : states) {
      if (e.address != inst.address) continue;
      state = e.outlier;
      estimate = Ms(absl::ToDoubleMilliseconds(e.latency_ewma));
    }
    Attempts a;
    if (auto it = attempts.find(inst.address); it != attempts.end()) a = it->second;
    out.push_back(absl::StrFormat(
        "  %-8s %-15s %-13s %7s %7s %7s %7s %8d %6d  %-9s %s", inst.spec.name, inst.address,
        process_state[i], Percent(s.calls, all.calls), Percent(s.ok, s.calls),
        s.calls ? Ms(Percentile(s.latency_ms, 0.5)) : "-",
        s.calls ? Ms(Percentile(s.latency_ms, 0.99)) : "-", a.calls, a.failures, state, estimate));
  }
  if (auto it = samples.find(""); it != samples.end()) {
    const Sample& s = it->second;
    out.push_back(absl::StrFormat("  %-8s %-29s %7s %7s %7s %7s", "(none)", "no endpoint answered",
                                  Percent(s.calls, all.calls), Percent(s.ok, s.calls),
                                  Ms(Percentile(s.latency_ms, 0.5)),
                                  Ms(Percentile(s.latency_ms, 0.99))));
  }
  out.push_back(absl::StrFormat("  all      %d calls, %s ok, p50 %s, p99 %s", all.calls,
                                Percent(all.ok, all.calls), Ms(Percentile(all.latency_ms, 0.5)),
                                Ms(Percentile(all.latency_ms, 0.99))));
  out.push_back(absl::StrFormat(
      "  phase    %d calls, %d failed; client: %d retries, %d hedges, %d ejections so far",
      phase_so_far.calls, phase_so_far.calls - phase_so_far.ok, st.retries + st.transparent_retries,
      st.hedges, Ejections(st)));
  return out;
}

// Log lines of the library, kept for the main thread to show.
class LogLines {
 public:
  void Add(absl::string_view line) {
    core::MutexLock lock(&mu_);
    if (lines_.size() < 100) lines_.emplace_back(line);  // a flood is cut short
  }
  std::vector<std::string> Take() {
    core::MutexLock lock(&mu_);
    return std::exchange(lines_, {});
  }

 private:
  core::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};
LogLines g_log_lines;

// ---------------------------------------------------------------------------
// A phase

struct PhaseResult {
  std::string name;
  std::string policy;
  Sample calls;
  std::map<std::string, int64_t> errors;
  mesh::ClientStats stats;
};

struct RunSettings {
  double rate = 0;
  absl::Duration duration;
  size_t victim = 0;
};

absl::StatusOr<PhaseResult> RunPhase(const Phase& phase, const RunSettings& run, Fleet& fleet,
                                     Screen& screen) {
  std::vector<std::string> endpoints;
  for (size_t i = 0; i < fleet.size(); ++i) endpoints.push_back(fleet.instance(i).address);
  absl::Duration timeout;
  auto tally = std::make_shared<Tally>();
  absl::StatusOr<EchoClient> channel_or = ConnectToEcho(phase, endpoints, &timeout);
  if (!channel_or.ok()) {
    return absl::Status(channel_or.status().code(),
                        absl::StrCat("phase ", phase.name,
                                     ": client setup failed: ", channel_or.status().message()));
  }
  EchoClient echo = *std::move(channel_or);
  mesh::Client* channel = echo.client.get();

  const Instance& victim = fleet.instance(run.victim);
  std::vector<std::string> process_state;
  for (size_t i = 0; i < fleet.size(); ++i) process_state.push_back(fleet.instance(i).spec.role);

  const absl::Time start = absl::Now();
  const absl::Time end = start + run.duration;
  const absl::Time kill_at = start + run.duration * kKillAt;
  const absl::Time restart_at = start + run.duration * kRestartAt;
  bool killed = false, restarted = false;
  auto at = [&](absl::Time t) {
    return absl::StrFormat("t=%5.1fs", absl::ToDoubleSeconds(t - start));
  };
  auto title = [&](absl::Time now, const char* window) {
    return absl::StrFormat("[%s] %s | %s of %s | %s", phase.name, phase.description,
                           absl::FormatDuration(absl::Trunc(now - start, absl::Seconds(1))),
                           absl::FormatDuration(run.duration), window);
  };

  screen.Line("");
  screen.Line(absl::StrFormat("== phase %s: %s, %.0f calls/s for %s", phase.name,
                              channel->stats().policy, run.rate,
                              absl::FormatDuration(run.duration)));
  std::map<std::string, Attempts> last_attempts;
  {
    OpenLoopLoad load(channel, tally, run.rate, start, end, timeout);
    absl::Time next_refresh = start + absl::Seconds(1);
    for (;;) {
      const absl::Time now = absl::Now();
      if (g_stop.HasBeenNotified() || now >= end) break;
      if (!killed && now >= kill_at) {
        pid_t pid = victim.pid;
        fleet.Kill(run.victim);
        killed = true;
        process_state[run.victim] = "SIGKILLed";
        screen.Line(absl::StrFormat("  %s  SIGKILL %s (%s, pid %d)", at(now), victim.spec.name,
                                    victim.address, pid));
      }
      if (killed && !restarted && now >= restart_at) {
        restarted = true;
        absl::Status st = fleet.Restart(run.victim);
        if (st.ok()) {
          process_state[run.victim] = "restarted";
          screen.Line(absl::StrFormat("  %s  restarted %s on %s, pid %d", at(absl::Now()),
                                      victim.spec.name, victim.address, victim.pid));
        } else {
          screen.Line(absl::StrFormat("  %s  could not restart %s: %s", at(absl::Now()),
                                      victim.spec.name, st.message()));
        }
      }
      if (now >= next_refresh) {
        next_refresh += absl::Seconds(1);
        for (const std::string& line : g_log_lines.Take()) screen.Line("  meshlib: " + line);
        std::vector<EndpointState> states = channel->EndpointStates();
        std::map<std::string, Attempts> window_attempts;
        for (const EndpointState& e : states) {
          Attempts& last = last_attempts[e.address];
          window_attempts[e.address] = {e.calls - last.calls, e.failures - last.failures};
          last = {e.calls, e.failures};
        }
        screen.Table(RenderTable(title(now, "last second"), fleet, process_state,
                                 tally->TakeWindow(), states, window_attempts, channel->stats(),
                                 Merge(tally->Phase())));
      }
      absl::Time wake = std::min(next_refresh, end);
      if (!killed) wake = std::min(wake, kill_at);
      if (killed && !restarted) wake = std::min(wake, restart_at);
      g_stop.WaitForNotificationWithTimeout(wake - absl::Now());
    }
  }  // the pacer has stopped
  // Let the calls in flight finish (none outlives its timeout), also when
  // stopped early, so that the counts are whole.
  WaitForCalls(*tally, timeout + absl::Seconds(1));

  PhaseResult result;
  result.name = phase.name;
  result.stats = channel->stats();
  // "p2c_peak_ewma(decay=10s, ...)": the name is enough for the summary.
  result.policy = result.stats.policy.substr(0, result.stats.policy.find('('));
  std::map<std::string, Sample> by_endpoint = tally->Phase();
  std::map<std::string, Attempts> totals;
  for (const std::string& line : g_log_lines.Take()) screen.Line("  meshlib: " + line);
  std::vector<EndpointState> states = channel->EndpointStates();
  for (const EndpointState& e : states) totals[e.address] = {e.calls, e.failures};
  const bool stopped_early = g_stop.HasBeenNotified();
  screen.Table(RenderTable(
      title(stopped_early ? absl::Now() : end, stopped_early ? "until stopped" : "whole phase"),
      fleet, process_state, by_endpoint, states, totals, result.stats, Merge(by_endpoint)));
  screen.Keep();
  // Closing the mesh ends any call still in flight (with CANCELLED) before
  // it returns.
  echo.client.reset();
  echo.mesh.reset();
  WaitForCalls(*tally, absl::Seconds(2));
  result.calls = Merge(tally->Phase());
  result.errors = tally->Errors();
  return result;
}

// ---------------------------------------------------------------------------
// Summary

void PrintSummary(const PhaseResult& a, const PhaseResult& b, const RunSettings& run,
                  const Fleet& fleet) {
  const Instance& victim = fleet.instance(run.victim);
  std::printf(
      "\n== summary: the same fleet, faults and load in both phases\n"
      "   %zu echo_server instances (%s, %s), %.0f idempotent calls/s for %s;\n"
      "   %s SIGKILLed at %.1fs and restarted at %.1fs\n\n",
      fleet.size(), fleet.instance(fleet.size() - 3).spec.role.c_str(),
      fleet.instance(fleet.size() - 2).spec.role.c_str(), run.rate,
      absl::FormatDuration(run.duration).c_str(), victim.spec.name.c_str(),
      absl::ToDoubleSeconds(run.duration * kKillAt),
      absl::ToDoubleSeconds(run.duration * kRestartAt));
  auto row = [](const std::string& label, const std::string& x, const std::string& y) {
    std::printf("  %-24s %16s %16s\n", label.c_str(), x.c_str(), y.c_str());
  };
  auto count = [](int64_t n) { return absl::StrCat(n); };
  row("", a.name, b.name);
  row("load balancer", a.policy, b.policy);
  row("calls", count(a.calls.calls), count(b.calls.calls));
  row("success rate", Percent(a.calls.ok, a.calls.calls), Percent(b.calls.ok, b.calls.calls));
  row("calls that failed", count(a.calls.calls - a.calls.ok), count(b.calls.calls - b.calls.ok));
  std::map<std::string, int> codes;
  for (const auto& [code, n] : a.errors) codes[code];
  for (const auto& [code, n] : b.errors) codes[code];
  for (const auto& [code, unused] : codes) {
    auto get = [&](const PhaseResult& r) {
      auto it = r.errors.find(code);
      return count(it == r.errors.end() ? 0 : it->second);
    };
    row("  " + code, get(a), get(b));
  }
  for (auto [label, p] : {std::pair<const char*, double>{"p50 latency", 0.5},
                          {"p99 latency", 0.99},
                          {"p99.9 latency", 0.999}}) {
    row(label, Ms(Percentile(a.calls.latency_ms, p)), Ms(Percentile(b.calls.latency_ms, p)));
  }
  row("retries", count(a.stats.retries), count(b.stats.retries));
  row("transparent retries", count(a.stats.transparent_retries),
      count(b.stats.transparent_retries));
  row("retries refused (budget)", count(a.stats.retries_denied), count(b.stats.retries_denied));
  row("hedges", count(a.stats.hedges), count(b.stats.hedges));
  row("hedges refused (budget)", count(a.stats.hedges_denied), count(b.stats.hedges_denied));
  row("ejections", count(Ejections(a.stats)), count(Ejections(b.stats)));
  auto amplification = [](const PhaseResult& r) {
    if (r.calls.calls == 0) return std::string("-");
    double attempts = static_cast<double>(r.calls.calls) + r.stats.retries +
                      r.stats.transparent_retries + r.stats.hedges;
    return absl::StrFormat("%.3f", attempts / static_cast<double>(r.calls.calls));
  };
  row("attempts per call", amplification(a), amplification(b));
  std::printf("\n  %s: %s of calls succeeded (p99 %s); %s: %s (p99 %s).\n", a.name.c_str(),
              Percent(a.calls.ok, a.calls.calls).c_str(),
              Ms(Percentile(a.calls.latency_ms, 0.99)).c_str(), b.name.c_str(),
              Percent(b.calls.ok, b.calls.calls).c_str(),
              Ms(Percentile(b.calls.latency_ms, 0.99)).c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------

// SIGINT, SIGTERM and SIGHUP are blocked in every thread (main blocks them
// before any thread starts; threads inherit the mask) and taken here with
// sigwait, so no handler runs at an arbitrary point: the first asks the demo
// to stop, which then stops its servers in order; a second exits at once,
// and the kernel kills the servers (PR_SET_PDEATHSIG, see Fleet).
void WatchStopSignals(sigset_t signals) {
  std::thread([signals] {
    for (;;) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0) continue;
      if (g_stop.HasBeenNotified()) _exit(128 + sig);
      g_stop_signal.store(sig);
      g_stop.Notify();
    }
  }).detach();
}

int Fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "demo: %s\n", message.c_str());
  return code;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "meshlib against a misbehaving fleet of echo_server processes, next to plain round "
      "robin: demo [--duration=15s] [--rate=800] [--instances=5] [--plain]");
  absl::ParseCommandLine(argc, argv);
  RunSettings run;
  run.duration = absl::GetFlag(FLAGS_duration);
  run.rate = absl::GetFlag(FLAGS_rate);
  const int instances = absl::GetFlag(FLAGS_instances);
  const int slow_ms = absl::GetFlag(FLAGS_slow_ms);
  const double flaky_error_rate = absl::GetFlag(FLAGS_flaky_error_rate);
  if (run.duration < absl::Seconds(2) || run.duration > absl::Minutes(10)) {
    return Fail("--duration must be between 2s and 10m", 2);
  }
  if (!(run.rate >= 1 && run.rate <= 20000)) return Fail("--rate must be between 1 and 20000", 2);
  if (instances < 4 || instances > 20) return Fail("--instances must be between 4 and 20", 2);
  if (slow_ms < 1 || slow_ms > 10000) return Fail("--slow_ms must be between 1 and 10000", 2);
  if (!(flaky_error_rate >= 0 && flaky_error_rate <= 1)) {
    return Fail("--flaky_error_rate must be between 0 and 1", 2);
  }
  std::string echo_server = absl::GetFlag(FLAGS_echo_server);
  if (echo_server.empty()) echo_server = DefaultEchoServer();
  if (access(echo_server.c_str(), X_OK) != 0) {
    return Fail(absl::StrCat("no echo_server at ", echo_server,
                             ": build it (bazel build //examples/echo:echo_server) or pass "
                             "--echo_server=PATH"));
  }

  // SIGINT and SIGTERM stop the demo even when inherited as ignored (a
  // background job of a script ignores SIGINT); SIGHUP only when not
  // ignored, so nohup keeps working.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  for (int sig : {SIGINT, SIGTERM}) {
    signal(sig, SIG_DFL);
    sigaddset(&stop_signals, sig);
  }
  if (signal(SIGHUP, SIG_DFL) == SIG_IGN) {
    signal(SIGHUP, SIG_IGN);
  } else {
    sigaddset(&stop_signals, SIGHUP);
  }
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  WatchStopSignals(stop_signals);

  const bool redraw = !absl::GetFlag(FLAGS_plain) && isatty(STDOUT_FILENO) != 0 &&
                      std::getenv("TERM") != nullptr && std::string(std::getenv("TERM")) != "dumb";
  Screen screen(redraw);
  if (redraw) {
    // meshlib's log lines, written to the terminal from its threads, would
    // land in the middle of the table; they are shown above it instead.
    core::SetLogSink([](core::LogLevel, absl::string_view line) { g_log_lines.Add(line); });
  }
  std::unique_ptr<admin::AdminServer> admin_server;
  if (const int admin_port = absl::GetFlag(FLAGS_admin_port); admin_port >= 0) {
    admin::AdminOptions ao;
    ao.address = absl::StrCat("127.0.0.1:", admin_port);
    admin::AdminServer::Handlers pages = admin::StandardPages(metrics::DefaultRegistry(), &ao);
    auto started = admin::AdminServer::Start(ao, std::move(pages));
    if (!started.ok()) return Fail(absl::StrCat("--admin_port: ", started.status().message()), 2);
    admin_server = *std::move(started);
    std::printf("admin on %s\nlive page: http://%s/\n", admin_server->address().c_str(),
                admin_server->address().c_str());
  }
  Fleet fleet(echo_server);  // stops every server when Main returns, whichever way
  std::printf(
      "meshlib demo: service \"echo\" on %d echo_server processes (loopback), "
      "%.0f calls/s for %s per phase\n",
      instances, run.rate, absl::FormatDuration(run.duration).c_str());
  for (InstanceSpec& spec : FleetSpecs(instances, slow_ms, flaky_error_rate, &run.victim)) {
    absl::StatusOr<size_t> i = fleet.Start(std::move(spec));
    if (!i.ok()) return Fail(absl::StrCat("could not start the fleet: ", i.status().message()));
    const Instance& inst = fleet.instance(*i);
    std::string note = *i == run.victim
                           ? absl::StrFormat("  (SIGKILLed at %.1fs, restarted at %.1fs)",
                                             absl::ToDoubleSeconds(run.duration * kKillAt),
                                             absl::ToDoubleSeconds(run.duration * kRestartAt))
                           : "";
    std::printf("  %-8s %-16s pid %-8d %s%s\n", inst.spec.name.c_str(), inst.address.c_str(),
                inst.pid, inst.spec.role.c_str(), note.c_str());
  }
  std::fflush(stdout);

  const Phase phases[] = {
      {"meshlib", "p2c_peak_ewma, retries, hedging at p95, outlier detection", kMeshlibConfig,
       "echo"},
      {"round robin", "round_robin, no retries, no hedging, no outlier detection",
       kRoundRobinConfig, "echo-round-robin"},
  };
  std::vector<PhaseResult> results;
  for (const Phase& phase : phases) {
    if (g_stop.HasBeenNotified()) break;
    absl::StatusOr<PhaseResult> r = RunPhase(phase, run, fleet, screen);
    if (!r.ok()) return Fail(std::string(r.status().message()));
    results.push_back(*std::move(r));
  }
  if (g_stop.HasBeenNotified()) {
    const int sig = g_stop_signal.load();
    std::printf("\ninterrupted (%s): stopping %zu echo_server processes\n", strsignal(sig),
                fleet.size());
    fleet.StopAll();
    return 128 + sig;
  }
  PrintSummary(results[0], results[1], run, fleet);
  fleet.StopAll();
  std::printf("\nstopped all %zu echo_server processes started (pids %s)\n",
              fleet.all_pids().size(), absl::StrJoin(fleet.all_pids(), " ").c_str());
  return 0;
}

}  // namespace
}  // namespace meshlib::demo

int main(int argc, char** argv) { return meshlib::demo::Main(argc, argv); }
