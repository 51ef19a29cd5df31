// meshcall: calls a service through the mesh, once or as a load generator.
//
//   meshcall --config=mesh.json --service=echo --method=Echo/Say --data=hello
//   meshcall --config=mesh.json --service=echo --method=Echo/Say --data=x
//            --duration=10s --concurrency=32 --json          # closed loop
//   meshcall ... --rate=2000 --duration=10s --json           # open loop
//
// Under --rate, latency is measured from each call's intended send time, so
// a stall in the client or server shows up in the numbers instead of hiding
// (no coordinated omission).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "meshlib/core/sync.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "meshlib/client/channel.h"
#include "meshlib/client/service_channel.h"
#include "meshlib/admin/admin_server.h"
#include "meshlib/admin/live.h"
#include "meshlib/core/trace_context.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/metrics/metrics.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/config/config.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, config, "", "mesh.json to read");
ABSL_FLAG(std::string, service, "", "service to call (a key of services in the config)");
ABSL_FLAG(std::string, method, "", "method to call, e.g. Echo/Say");
ABSL_FLAG(std::string, data, "", "request payload bytes");
ABSL_FLAG(int64_t, requests, 0, "number of calls (default 1 unless --duration is set)");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(), "run for this long instead");
ABSL_FLAG(int, concurrency, 1, "calls in flight (closed loop; ignored under --rate)");
ABSL_FLAG(double, rate, 0, "open loop: calls per second, paced from intended send times");
ABSL_FLAG(bool, idempotent, false, "calls are safe to retry and hedge");
ABSL_FLAG(bool, json, false, "print one JSON object with the results");
ABSL_FLAG(std::string, metadata, "",
          "request metadata as key=value[,key=value...] (route match rules see it)");
ABSL_FLAG(bool, describe, false,
          "print the service's client stack (layers, effective settings, routes, endpoints) "
          "and exit");
ABSL_FLAG(absl::Duration, timeline, absl::ZeroDuration(),
          "with a load run: also report, per interval of this length, calls, "
          "failures, p99 and each endpoint's share (JSON key \"timeline\")");
ABSL_FLAG(int, connections, 1, "TCP connections per endpoint");
ABSL_FLAG(bool, trace, false,
          "start a W3C trace for the call (traceparent metadata) and print its trace id "
          "(one-off call: a line \"trace <id>\" after the result)");
ABSL_FLAG(int, admin_port, -1,
          "serve the admin endpoint (/metrics, /metrics.json) on this loopback port while "
          "running (0 picks one; its address goes to stderr as \"admin on HOST:PORT\"); "
          "-1 (default): off");
ABSL_FLAG(absl::Duration, admin_linger, absl::ZeroDuration(),
          "with --admin_port: keep serving it this long after the calls are done, for a "
          "last scrape");
ABSL_FLAG(absl::Duration, discovery_timeout, absl::Seconds(10),
          "how long to wait for discovery's first endpoint set");

namespace {

using meshlib::client::CallOptions;
using meshlib::client::CallResult;

std::string CodeName(absl::StatusCode code) {
  std::string s = absl::StatusCodeToString(code);
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (char& c : s) {
    if (c == ' ') c = '_';
  }
  return s;
}

// Results of a run, filled from reactor threads.
class Recorder {
 public:
  Recorder(absl::Time start, absl::Duration interval) : start_(start), interval_(interval) {}

  void Add(const CallResult& r, absl::Duration latency, absl::Time now) {
    meshlib::core::MutexLock lock(&mu_);
    if (interval_ > absl::ZeroDuration()) {
      size_t slot = static_cast<size_t>(std::max<int64_t>(0, (now - start_) / interval_));
      if (slot < 100000) {
        if (timeline_.size() <= slot) timeline_.resize(slot + 1);
        Slot& t = timeline_[slot];
        ++t.calls;
        if (!r.status.ok()) ++t.failed;
        if (!r.endpoint.empty()) ++t.by_endpoint[r.endpoint];  // only with --timeline
        t.latencies_us.push_back(absl::ToDoubleMicroseconds(latency));
      }
    }
    ++done_;
    if (r.status.ok()) {
      ++ok_;
    } else {
      ++errors_[CodeName(r.status.code())];
      if (last_error_.empty()) last_error_ = std::string(r.status.message());
    }
    if (!r.endpoint.empty()) {
      // Balancers alternate among few endpoints: the last one's counter is
      // kept at hand (a map's entries do not move).
      if (last_endpoint_ == nullptr || last_endpoint_->first != r.endpoint) {
        last_endpoint_ = &*by_endpoint_.try_emplace(r.endpoint, 0).first;
      }
      ++last_endpoint_->second;
    }
    latencies_us_.push_back(absl::ToDoubleMicroseconds(latency));
  }
  int64_t done() {
    meshlib::core::MutexLock lock(&mu_);
    return done_;
  }
  int64_t failed() {
    meshlib::core::MutexLock lock(&mu_);
    return done_ - ok_;
  }

  nlohmann::json ToJson(absl::Duration elapsed) {
    meshlib::core::MutexLock lock(&mu_);
    std::sort(latencies_us_.begin(), latencies_us_.end());
    auto pct = [&](double p) -> double {
      if (latencies_us_.empty()) return 0;
      size_t i = static_cast<size_t>(p * static_cast<double>(latencies_us_.size() - 1) + 0.5);
      return latencies_us_[std::min(i, latencies_us_.size() - 1)];
    };
    nlohmann::json j;
    j["requests"] = done_;
    j["ok"] = ok_;
    j["errors"] = nlohmann::json::object();
    for (const auto& [k, v] : errors_) j["errors"][k] = v;
    j["by_endpoint"] = nlohmann::json::object();
    for (const auto& [k, v] : by_endpoint_) j["by_endpoint"][k] = v;
    j["retries"] = 0;  // filled in by main() from the client's counters
    j["hedges"] = 0;   // filled in by main() from the client's counters
    double secs = absl::ToDoubleSeconds(elapsed);
    j["qps"] = secs > 0 ? static_cast<double>(done_) / secs : 0.0;
    j["latency_us"] = {{"p50", pct(0.50)},   {"p90", pct(0.90)}, {"p99", pct(0.99)},
                       {"p999", pct(0.999)}, {"max", latencies_us_.empty() ? 0.0 : latencies_us_.back()}};
    if (!last_error_.empty()) j["last_error"] = last_error_;
    if (interval_ > absl::ZeroDuration()) {
      j["timeline"] = nlohmann::json::array();
      for (size_t i = 0; i < timeline_.size(); ++i) {
        Slot& t = timeline_[i];
        std::sort(t.latencies_us.begin(), t.latencies_us.end());
        double p99 = t.latencies_us.empty()
                         ? 0
                         : t.latencies_us[static_cast<size_t>(
                               0.99 * static_cast<double>(t.latencies_us.size() - 1) + 0.5)];
        nlohmann::json share = nlohmann::json::object();
        for (const auto& [k, v] : t.by_endpoint) {
          share[k] = t.calls > 0 ? static_cast<double>(v) / static_cast<double>(t.calls) : 0.0;
        }
        j["timeline"].push_back({{"t_s", absl::ToDoubleSeconds(interval_ * static_cast<double>(i))},
                                 {"calls", t.calls},
                                 {"failed", t.failed},
                                 {"p99_us", p99},
                                 {"share", share}});
      }
    }
    return j;
  }

 private:
  struct Slot {
    int64_t calls = 0;
    int64_t failed = 0;
    std::map<std::string, int64_t> by_endpoint;
    std::vector<double> latencies_us;
  };
  const absl::Time start_;
  const absl::Duration interval_;
  std::vector<Slot> timeline_;
  meshlib::core::Mutex mu_;
  int64_t done_ = 0;
  int64_t ok_ = 0;
  std::map<std::string, int64_t> errors_;
  std::map<std::string, int64_t> by_endpoint_;
  std::pair<const std::string, int64_t>* last_endpoint_ = nullptr;
  std::vector<double> latencies_us_;
  std::string last_error_;
};


int Fail(const std::string& msg) {
  std::cerr << "meshcall: " << msg << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Calls a service through meshlib: meshcall --config=FILE --service=S --method=M "
      "--data=BYTES [--requests=N | --duration=D] [--concurrency=C] [--rate=QPS] "
      "[--idempotent] [--json]");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_config).empty()) return Fail("--config is required");
  if (absl::GetFlag(FLAGS_service).empty()) return Fail("--service is required");
  if (absl::GetFlag(FLAGS_method).empty()) return Fail("--method is required");
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const double rate = absl::GetFlag(FLAGS_rate);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  int64_t requests = absl::GetFlag(FLAGS_requests);
  if (concurrency < 1) return Fail("--concurrency must be >= 1");
  if (rate < 0) return Fail("--rate must be >= 0");
  if (requests < 0) return Fail("--requests must be >= 0");
  if (requests > 0 && duration > absl::ZeroDuration()) {
    return Fail("--requests and --duration are exclusive");
  }
  if (requests == 0 && duration <= absl::ZeroDuration()) requests = 1;

  auto cfg = meshlib::config::LoadMeshConfigFile(absl::GetFlag(FLAGS_config));
  if (!cfg.ok()) return Fail(std::string(cfg.status().message()));
  const auto* svc = cfg->Find(absl::GetFlag(FLAGS_service));
  if (svc == nullptr) {
    return Fail(absl::StrCat("services.", absl::GetFlag(FLAGS_service),
                             ": no such service in ", absl::GetFlag(FLAGS_config)));
  }

  // The mesh: built from the file and watching it, so a load run picks up
  // configuration changes as they are written (see --json's
  // config_generation).
  if (absl::GetFlag(FLAGS_connections) != 1) {
    cfg->mesh.connections_per_endpoint = absl::GetFlag(FLAGS_connections);
  }
  meshlib::mesh::MeshOptions mopts;
  mopts.watch_path = absl::GetFlag(FLAGS_config);
  auto mesh_or = meshlib::mesh::Mesh::Create(*cfg, mopts);
  if (!mesh_or.ok()) return Fail(std::string(mesh_or.status().message()));
  std::unique_ptr<meshlib::mesh::Mesh> mesh = *std::move(mesh_or);
  auto target_or = mesh->Client(svc->name);
  if (!target_or.ok()) return Fail(std::string(target_or.status().message()));
  std::shared_ptr<meshlib::mesh::Client> target = *std::move(target_or);
  std::unique_ptr<meshlib::admin::AdminServer> admin;
  if (const int admin_port = absl::GetFlag(FLAGS_admin_port); admin_port >= 0) {
    meshlib::admin::AdminOptions ao;
    ao.address = absl::StrCat("127.0.0.1:", admin_port);
    meshlib::admin::AdminServer::Handlers pages =
        meshlib::admin::StandardPages(meshlib::metrics::DefaultRegistry(), &ao);
    auto started = meshlib::admin::AdminServer::Start(ao, std::move(pages));
    if (!started.ok()) return Fail(absl::StrCat("--admin_port: ", started.status().message()));
    admin = *std::move(started);
    std::fprintf(stderr, "admin on %s\n", admin->address().c_str());
  }
  if (absl::GetFlag(FLAGS_describe)) {
    std::cout << target->Describe();
    return 0;
  }
  if (!target->WaitForEndpoints(absl::GetFlag(FLAGS_discovery_timeout))) {
    return Fail(absl::StrCat("services.", svc->name, ".discovery (", svc->discovery_kind,
                             "): no endpoints after ",
                             absl::FormatDuration(absl::GetFlag(FLAGS_discovery_timeout)), "\n",
                             target->Describe()));
  }
  // Calls that fail before reaching any endpoint complete on the caller's
  // thread; the closed loop issues the next one from here instead of
  // recursing.
  auto side = meshlib::runtime::EventLoop::Create("meshcall");
  if (!side.ok()) return Fail(std::string(side.status().message()));
  std::unique_ptr<meshlib::runtime::EventLoop> side_loop = *std::move(side);
  std::mutex side_mu;  // guards side_loop once calls run: the teardown resets it

  const std::string method = absl::GetFlag(FLAGS_method);
  const std::string data = absl::GetFlag(FLAGS_data);
  CallOptions call_opts;
  call_opts.idempotent = absl::GetFlag(FLAGS_idempotent);
  for (absl::string_view kv : absl::StrSplit(absl::GetFlag(FLAGS_metadata), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty()) return Fail(absl::StrCat("--metadata: \"", kv, "\" is not key=value"));
    call_opts.metadata.push_back(std::move(p));
  }

  std::optional<meshlib::core::TraceContext> trace;
  if (absl::GetFlag(FLAGS_trace)) {
    trace = meshlib::core::TraceContext::NewRoot();
    call_opts.metadata.emplace_back(meshlib::core::kTraceparentKey, trace->Traceparent());
  }

  // One-off call: readable output, exit status says how it went.
  if (requests == 1 && !absl::GetFlag(FLAGS_json)) {
    meshlib::mesh::ClientStats before = target->stats();
    absl::Time start = absl::Now();
    CallResult r = target->CallBlocking(method, data, call_opts);
    absl::Duration took = absl::Now() - start;
    // The routing decision, from the route counters this call moved.
    meshlib::mesh::ClientStats after = target->stats();
    std::string routed;
    for (size_t i = 0; i < after.routes.size() && i < before.routes.size(); ++i) {
      if (after.routes[i].calls == before.routes[i].calls) continue;
      routed = absl::StrCat(" via route ", after.routes[i].name);
      for (size_t k = 0; k < after.routes[i].by_subset.size(); ++k) {
        if (after.routes[i].by_subset[k].second != before.routes[i].by_subset[k].second) {
          absl::StrAppend(&routed, " to subset ", after.routes[i].by_subset[k].first);
        }
      }
    }
    if (routed.empty() && after.unrouted != before.unrouted) routed = " (no route matched)";
    if (!r.status.ok()) {
      std::cout << CodeName(r.status.code()) << ": " << r.status.message() << " ("
                << absl::FormatDuration(took) << routed << ")\n";
      if (trace) std::cout << "trace " << trace->TraceIdHex() << "\n";
      return 1;
    }
    std::string server;
    for (const auto& [k, v] : r.metadata) {
      if (k == "server") server = v;
    }
    std::cout << "OK from " << r.endpoint << (server.empty() ? "" : " (" + server + ")")
              << routed << " in " << absl::FormatDuration(took) << ": " << r.payload << "\n";
    if (trace) std::cout << "trace " << trace->TraceIdHex() << "\n";
    return 0;
  }

  std::atomic<int64_t> issued{0};
  std::atomic<int64_t> in_flight{0};
  meshlib::core::Notification all_done;
  const absl::Time start = absl::Now();
  Recorder rec(start, absl::GetFlag(FLAGS_timeline));
  const absl::Time end = duration > absl::ZeroDuration() ? start + duration : absl::InfiniteFuture();
  std::atomic<int64_t> completed{0};

  auto finished_one = [&] {
    int64_t c = completed.fetch_add(1) + 1;
    in_flight.fetch_sub(1);
    if (requests > 0 && c == requests) all_done.Notify();
  };
  // Reserves one call slot for a call due at `due`; false when the run is
  // over. Open loop passes each call's intended time, so a pacer that wakes
  // late still sends every call that was due inside the run.
  auto take_slot = [&](absl::Time due) -> bool {
    if (due >= end) return false;
    if (requests > 0) {
      int64_t n = issued.fetch_add(1);
      if (n >= requests) return false;
    }
    in_flight.fetch_add(1);
    return true;
  };

  // Closed loop: each of `concurrency` lanes issues its next call when the
  // previous one completes. A call's callback captures only its lane, so it
  // lives inside the call (no allocation per call), and one clock reading
  // both ends a call and starts the next.
  struct Lane {
    absl::Time sent;
    std::function<void(Lane*, CallResult)>* on_done = nullptr;
  };
  std::vector<Lane> lanes(rate <= 0 ? concurrency : 0);
  std::function<void(Lane*, absl::Time)> closed_loop_next;
  std::function<void(Lane*, CallResult)> closed_loop_done;
  if (rate <= 0) {
    closed_loop_next = [&](Lane* lane, absl::Time now) {
      if (!take_slot(now)) {
        if (in_flight.load() == 0 && requests == 0) all_done.Notify();
        return;
      }
      lane->sent = now;
      target->Call(method, data, call_opts,
                   [lane](CallResult r) { (*lane->on_done)(lane, std::move(r)); });
    };
    closed_loop_done = [&](Lane* lane, CallResult r) {
      bool reached_nobody = !r.status.ok() && r.endpoint.empty() && r.not_processed;
      absl::Time now = absl::Now();
      rec.Add(r, now - lane->sent, now);
      finished_one();
      if (reached_nobody) {
        // A short pause before this lane tries again, on the side loop
        // unless the teardown (which may end calls left in flight) has
        // begun: then the lane just stops.
        std::lock_guard<std::mutex> lock(side_mu);
        if (side_loop != nullptr) {
          side_loop->RunAfter(absl::Milliseconds(1),
                              [&, lane] { closed_loop_next(lane, absl::Now()); });
        }
      } else {
        closed_loop_next(lane, now);
      }
    };
    for (Lane& lane : lanes) {
      lane.on_done = &closed_loop_done;
      closed_loop_next(&lane, absl::Now());
    }
  }
  std::thread pacer;
  if (rate > 0) {
    // Open loop: call i is due at start + i/rate whatever happened before.
    pacer = std::thread([&] {
      const absl::Duration interval = absl::Seconds(1) / rate;
      for (int64_t i = 0;; ++i) {
        absl::Time due = start + interval * static_cast<double>(i);
        if (due >= end) break;
        absl::Time now = absl::Now();
        if (due > now) absl::SleepFor(due - now);
        if (!take_slot(due)) break;
        target->Call(method, data, call_opts, [&, due](CallResult r) {
          absl::Time now = absl::Now();
          rec.Add(r, now - due, now);
          finished_one();
        });
      }
    });
  }

  // Progress line on a terminal, and wait for the end.
  const bool tty = isatty(STDERR_FILENO) && !absl::GetFlag(FLAGS_json);
  for (;;) {
    if (all_done.WaitForNotificationWithTimeout(absl::Seconds(1))) break;
    if (absl::Now() >= end) {
      if (pacer.joinable()) pacer.join();
      // Wait for the calls still in flight (bounded by their deadline).
      absl::Time give_up = absl::Now() + svc->timeout + absl::Seconds(1);
      while (in_flight.load() > 0 && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(5));
      break;
    }
    if (tty) {
      absl::Duration el = absl::Now() - start;
      std::fprintf(stderr, "\r%lld calls, %.0f/s, %lld failed   ",
                   static_cast<long long>(rec.done()),
                   static_cast<double>(rec.done()) / absl::ToDoubleSeconds(el),
                   static_cast<long long>(rec.failed()));
    }
  }
  if (pacer.joinable()) pacer.join();
  if (tty) std::fprintf(stderr, "\n");
  absl::Duration elapsed = absl::Now() - start;
  nlohmann::json out = rec.ToJson(elapsed);
  {
    meshlib::mesh::ClientStats st = target->stats();
    out["retries"] = st.retries + st.transparent_retries;
    out["retries_denied_by_budget"] = st.retries_denied;
    out["hedges"] = st.hedges;
    out["hedges_denied_by_budget"] = st.hedges_denied;
    out["retries_stopped_by_pushback"] = st.pushback_stops;
    out["breaker_overflows"] = st.breaker_overflows;
    out["ejections"] = st.ejections;
    if (st.faults_delayed + st.faults_aborted > 0) {
      out["faults"] = {{"delayed", st.faults_delayed}, {"aborted", st.faults_aborted}};
    }
    // Routing decisions: calls per route and, within a split, per subset.
    if (!st.routes.empty()) {
      nlohmann::json routes = nlohmann::json::object();
      for (const auto& r : st.routes) {
        nlohmann::json subsets = nlohmann::json::object();
        for (const auto& [name, n] : r.by_subset) subsets[name] = n;
        routes[r.name] = {{"calls", r.calls}, {"subsets", subsets}};
      }
      out["routes"] = routes;
      out["unrouted"] = st.unrouted;
    }
    // Attempts sent per call (the mesh's added load): the first attempts,
    // plus retries and hedges.
    int64_t calls = out["requests"].get<int64_t>();
    if (calls > 0) {
      out["amplification"] =
          static_cast<double>(calls + static_cast<int64_t>(st.retries + st.transparent_retries +
                                                           st.hedges)) /
          static_cast<double>(calls);
    }
    out["policy"] = st.policy;
    meshlib::mesh::ReloadStats rs = mesh->reload_stats();
    out["config_generation"] = rs.generation;
    out["config_reloads"] = rs.applied;
    out["config_rejected"] = rs.rejected;
    if (!rs.last_error.ok()) out["config_last_error"] = std::string(rs.last_error.message());
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << out.dump() << "\n";
  } else {
    std::cout << out.dump(2) << "\n";
  }
  std::cout.flush();
  if (admin != nullptr) absl::SleepFor(absl::GetFlag(FLAGS_admin_linger));
  {
    // First, so that calls the Mesh ends below schedule nothing on it.
    std::unique_ptr<meshlib::runtime::EventLoop> loop;
    {
      std::lock_guard<std::mutex> lock(side_mu);
      loop = std::move(side_loop);
    }
    loop.reset();
  }
  target.reset();
  mesh.reset();
  return 0;
}
