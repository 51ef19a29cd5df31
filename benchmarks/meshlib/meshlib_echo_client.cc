// meshlib side of the end-to-end echo benchmark (see run_e2e.sh): the same
// flags and output as rawtcp/raw_echo_client and grpc/grpc_echo_client.
//
//   pingpong:   one blocking call at a time on one connection.
//   throughput: --inflight async calls spread over --connections connections;
//               each reply issues the next call.
#include <atomic>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "meshlib/core/sync.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "benchmarks/common/bench_stats.h"
#include "meshlib/client/channel.h"
#include "meshlib/grpc/grpc_channel.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/tls/credentials.h"

ABSL_FLAG(std::string, address, "127.0.0.1:7000", "Server as host:port.");
ABSL_FLAG(std::string, mode, "pingpong", "pingpong or throughput.");
ABSL_FLAG(int, payload, 64, "Payload bytes per request (and reply).");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "Measured time.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "Unmeasured time before it.");
ABSL_FLAG(int, connections, 4, "Throughput mode: connections to spread load on.");
ABSL_FLAG(int, inflight, 32, "Throughput mode: calls in flight in total.");
ABSL_FLAG(int, io_threads, 1, "Client reactor threads.");
ABSL_FLAG(int, busy_poll_us, 0, "Reactor busy polling after work, microseconds (0 = off).");
ABSL_FLAG(int, blocking_spin_us, 50,
          "How long a blocking call waits for its reply without sleeping, microseconds.");
ABSL_FLAG(bool, json, false, "Print one JSON line instead of prose.");
ABSL_FLAG(bool, mesh, false,
          "Call through a mesh Client (the whole stack: routing, retry budget, breaker, "
          "balancer, pool) over a static discovery of --address, as an application does, "
          "instead of a bare client::Channel. Its reactor threads and connections come from "
          "mesh.json's io_threads, busy_poll and connections_per_endpoint (set from --io_threads, "
          "--busy_poll_us and --connections); --blocking_spin_us applies to the bare channel "
          "only.");

ABSL_FLAG(bool, grpc, false,
          "Speak gRPC (HTTP/2) to the server: a grpc::GrpcChannel, or with --mesh a service "
          "with \"protocol\": \"grpc\".");
ABSL_FLAG(std::string, tls_ca, "",
          "Call over mutual TLS, trusting this PEM CA (with --tls_cert and --tls_key).");
ABSL_FLAG(std::string, tls_cert, "", "With --tls_ca: this client's PEM certificate.");
ABSL_FLAG(std::string, tls_key, "", "With --tls_ca: the PEM key of --tls_cert.");

namespace {

using meshlib::bench::NowNs;
using meshlib::client::CallOptions;
using meshlib::client::CallResult;
using meshlib::client::Channel;

constexpr char kMethod[] = "Echo/Say";

int Fail(const std::string& msg) {
  std::cerr << "meshlib_echo_client: " << msg << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const bool pingpong = mode == "pingpong";
  if (!pingpong && mode != "throughput") return Fail("--mode must be pingpong or throughput");

  meshlib::client::ChannelOptions opts;
  opts.io_threads = absl::GetFlag(FLAGS_io_threads);
  opts.busy_poll = absl::Microseconds(absl::GetFlag(FLAGS_busy_poll_us));
  opts.blocking_spin = absl::Microseconds(absl::GetFlag(FLAGS_blocking_spin_us));
  opts.connections = pingpong ? 1 : absl::GetFlag(FLAGS_connections);
  opts.default_timeout = absl::Seconds(10);
  const std::string payload(static_cast<size_t>(absl::GetFlag(FLAGS_payload)), 'x');
  const CallOptions call_opts;

  // The caller under test: a bare channel, or a mesh client.
  std::unique_ptr<meshlib::client::EndpointChannel> bare;
  const bool grpc = absl::GetFlag(FLAGS_grpc);
  std::unique_ptr<meshlib::mesh::Mesh> mesh;
  std::shared_ptr<meshlib::mesh::Client> client;
  meshlib::client::Caller* caller = nullptr;
  const bool tls = !absl::GetFlag(FLAGS_tls_ca).empty();
  std::string tls_block;
  if (tls) {
    meshlib::tls::TlsOptions t;
    t.ca_file = absl::GetFlag(FLAGS_tls_ca);
    t.cert_file = absl::GetFlag(FLAGS_tls_cert);
    t.key_file = absl::GetFlag(FLAGS_tls_key);
    auto w = meshlib::tls::CredentialsWatcher::Start(t, meshlib::tls::Role::kClient);
    if (!w.ok()) return Fail(std::string(w.status().message()));
    opts.tls = *std::move(w);
    tls_block = absl::StrCat(R"(, "tls": {"ca_file": ")", t.ca_file, R"(")",
                             t.cert_file.empty()
                                 ? ""
                                 : absl::StrCat(R"(, "cert_file": ")", t.cert_file,
                                                R"(", "key_file": ")", t.key_file, R"(")"),
                             "}");
  }
  if (absl::GetFlag(FLAGS_mesh)) {
    auto cfg = meshlib::config::ParseMeshConfig(absl::StrCat(
        R"({"mesh": {"io_threads": )", opts.io_threads, R"(, "busy_poll": ")",
        absl::GetFlag(FLAGS_busy_poll_us), R"(us", "connections_per_endpoint": )",
        opts.connections, R"(}, "services": {"echo": {"discovery": {"static": {"endpoints": [")",
        absl::GetFlag(FLAGS_address), R"("]}}, "timeout": "10s")",
        grpc ? R"(, "protocol": "grpc")" : "", tls_block, "}}}"));
    if (!cfg.ok()) return Fail(std::string(cfg.status().message()));
    auto m = meshlib::mesh::Mesh::Create(*std::move(cfg));
    if (!m.ok()) return Fail(std::string(m.status().message()));
    mesh = *std::move(m);
    auto c = mesh->Client("echo");
    if (!c.ok()) return Fail(std::string(c.status().message()));
    client = *std::move(c);
    caller = client.get();
  } else {
    if (grpc) {
      auto channel = meshlib::grpc::GrpcChannel::Create(absl::GetFlag(FLAGS_address), opts);
      if (!channel.ok()) return Fail(std::string(channel.status().message()));
      bare = *std::move(channel);
    } else {
      auto channel = Channel::Create(absl::GetFlag(FLAGS_address), opts);
      if (!channel.ok()) return Fail(std::string(channel.status().message()));
      bare = *std::move(channel);
    }
    bare->Connect();
    caller = bare.get();
  }
  meshlib::client::Caller& ch = *caller;

  // Every connection is up before the clock starts.
  for (int i = 0; i < 200 && (bare == nullptr || bare->ReadyConnections() < opts.connections);
       ++i) {
    CallResult r = ch.CallBlocking(kMethod, payload, call_opts);
    if (!r.status.ok()) return Fail(r.status.ToString());
  }

  const int64_t warmup_end = NowNs() + absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_warmup));
  const int64_t end = warmup_end + absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_duration));
  meshlib::bench::RunResult result;
  result.system = absl::StrCat(client != nullptr ? "mesh" : "meshlib", grpc ? "_grpc" : "",
                               tls ? "_tls" : "");
  result.mode = mode;

  if (pingpong) {
    result.latencies_ns.reserve(1 << 20);
    for (;;) {
      int64_t t0 = NowNs();
      if (t0 >= end) break;
      CallResult r = ch.CallBlocking(kMethod, payload, call_opts);
      int64_t t1 = NowNs();
      if (!r.status.ok()) return Fail(r.status.ToString());
      if (t0 >= warmup_end) result.latencies_ns.push_back(t1 - t0);
    }
    result.calls = static_cast<int64_t>(result.latencies_ns.size());
    result.elapsed = absl::Nanoseconds(end - warmup_end);
  } else {
    // Closed loop: each completion issues the next call until `end`.
    std::atomic<int64_t> errors{0};
    std::atomic<int> live{absl::GetFlag(FLAGS_inflight)};
    meshlib::core::Notification all_stopped;
    meshlib::core::Mutex mu;
    std::string first_error;
    // One lane per call in flight; a lane's calls are sequential, so its
    // samples and count need no lock. As in the raw TCP client, the clock
    // reading that ends a call is also the send time of the call it issues:
    // one reading per call, not two.
    struct Loop {
      std::function<void(int64_t)> issue;  // argument: now, in ns
      std::function<void(CallResult)> done;
      int64_t t0 = 0;
      std::vector<int64_t> samples;
    };
    std::vector<std::unique_ptr<Loop>> loops;
    for (int i = 0; i < absl::GetFlag(FLAGS_inflight); ++i) {
      auto loop = std::make_unique<Loop>();
      Loop* self = loop.get();
      self->done = [&, self](CallResult r) {
        int64_t t1 = NowNs();
        int64_t t0 = self->t0;
        if (!r.status.ok()) {
          if (errors.fetch_add(1) == 0) {
            meshlib::core::MutexLock lock(&mu);
            first_error = r.status.ToString();
          }
        } else if (t0 >= warmup_end && t1 < end) {
          self->samples.push_back(t1 - t0);
        }
        self->issue(t1);
      };
      self->issue = [&, self](int64_t t0) {
        if (t0 >= end) {
          if (live.fetch_sub(1) == 1) all_stopped.Notify();
          return;
        }
        self->t0 = t0;
        // One word of captures: the callback lives inside the call (as an
        // application's small callback would), not in an allocation per call.
        ch.Call(kMethod, payload, call_opts, [self](CallResult r) { self->done(std::move(r)); });
      };
      loops.push_back(std::move(loop));
    }
    for (auto& l : loops) l->issue(NowNs());
    all_stopped.WaitForNotification();
    if (errors.load() > 0) return Fail(absl::StrCat(errors.load(), " calls failed; first: ", first_error));
    int64_t measured = 0;
    for (auto& l : loops) measured += static_cast<int64_t>(l->samples.size());
    result.calls = measured;
    result.elapsed = absl::Nanoseconds(end - warmup_end);
    for (auto& l : loops) {
      result.latencies_ns.insert(result.latencies_ns.end(), l->samples.begin(), l->samples.end());
    }
  }
  std::cout << meshlib::bench::FormatResult(result, absl::GetFlag(FLAGS_json)) << std::endl;
  return 0;
}
