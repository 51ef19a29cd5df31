// echo_server: serves Echo/Say, which returns the request payload, with the
// server's name in the reply metadata ("server"). Used by the demo, the
// integration tests and the benchmarks.
//
//   echo_server --port=0 --name=a --latency_ms=5 --error_rate=0.1
//   echo_server --port=0 --latency_ms=5 --tail_latency_ms=200 --tail_fraction=0.01
//               --adaptive_concurrency
//   echo_server --port=0 --name=a --zone=z1 --etcd=127.0.0.1:2379,127.0.0.1:22379
//               --etcd_prefix=/meshlib/services/echo/ --etcd_ttl=10s
//
// Prints "listening on HOST:PORT" when ready. SIGTERM/SIGINT drain: new
// calls are refused, calls in flight finish (up to --drain_timeout), then it
// exits 0.
//
// With --etcd it registers itself (docs/discovery.md, "Self-registration"): key
// <etcd_prefix><HOST:PORT>, value {"address": HOST:PORT, "weight": 1,
// "zone": --zone, "metadata": {"name": <name>}}, on a lease of --etcd_ttl
// kept alive while it runs. Registration happens in the background and may
// complete after the "listening on" line (it logs "etcd: registered ..." on
// stderr); an unreachable etcd is retried, never fatal. On SIGTERM it
// revokes the lease first (waiting at most 2s), so the key is gone before
// it starts draining; a killed server's key goes when its lease expires.
// It registers the address it is bound to: use --host with an address
// clients can reach (not 0.0.0.0).
//
// --tail_fraction=F of the calls, chosen at random, take --tail_latency_ms
// instead of --latency_ms: the rare slow call that, as "The Tail at Scale"
// observes, comes to dominate a fan-out's latency. Latency is a timer on
// the reactor; no thread sleeps. --adaptive_concurrency turns on the
// server's adaptive concurrency limit with its defaults (calls over it are
// refused with RESOURCE_EXHAUSTED); since latency here does not grow with
// load, it matters only when the machine itself is saturated. Every
// echo_server also answers meshlib.Health/Check.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "meshlib/admin/admin_server.h"
#include "meshlib/admin/live.h"
#include "meshlib/tls/credentials.h"
#include "meshlib/core/sync.h"
#include "meshlib/metrics/metrics.h"
#include "meshlib/server/etcd_registration.h"
#include "meshlib/server/server.h"

ABSL_FLAG(int, port, 0, "TCP port; 0 picks a free one");
ABSL_FLAG(std::string, host, "127.0.0.1", "address to bind");
ABSL_FLAG(std::string, name, "", "server name reported in reply metadata; default host:port");
ABSL_FLAG(int, latency_ms, 0, "added latency per call, in milliseconds");
ABSL_FLAG(double, error_rate, 0.0, "fraction of calls answered with UNAVAILABLE, 0..1");
ABSL_FLAG(int, tail_latency_ms, 0,
          "latency of the slow calls chosen by --tail_fraction, in milliseconds");
ABSL_FLAG(double, tail_fraction, 0.0,
          "fraction of calls, chosen at random, that take --tail_latency_ms instead of "
          "--latency_ms, 0..1");
ABSL_FLAG(bool, adaptive_concurrency, false,
          "refuse calls over an adaptive concurrency limit (default settings)");
ABSL_FLAG(std::string, zone, "", "zone label (reported in reply metadata)");
ABSL_FLAG(std::string, etcd, "",
          "etcd HOST:PORT[,HOST:PORT...] to register in (members of one cluster)");
ABSL_FLAG(std::string, etcd_prefix, "", "etcd key prefix to register under (with --etcd)");
ABSL_FLAG(absl::Duration, etcd_ttl, absl::Seconds(10),
          "lease TTL of the etcd registration: how long a crashed server stays listed");
ABSL_FLAG(int, io_threads, 0, "reactor threads; 0 = one per CPU");
ABSL_FLAG(int, admin_port, -1,
          "serve the admin endpoint (/metrics, /metrics.json) on this loopback port; "
          "0 picks one; -1 (default): off");
ABSL_FLAG(int, busy_poll_us, 0,
          "reactor busy polling after work, in microseconds (0 = off, max 1000)");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "how long SIGTERM waits for calls in flight");
ABSL_FLAG(std::string, tls_cert, "",
          "serve TLS 1.3 only, with this PEM certificate chain (and --tls_key); changed files "
          "are picked up without a restart");
ABSL_FLAG(std::string, tls_key, "", "the PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "with --tls_cert: require client certificates that chain to this PEM CA bundle");
ABSL_FLAG(std::string, tls_allow, "",
          "with --tls_ca: comma-separated SPIFFE IDs of the clients allowed to call (empty: "
          "any the CA signed)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Serves Echo/Say over meshlib's protocol.");
  absl::ParseCommandLine(argc, argv);

  const double error_rate = absl::GetFlag(FLAGS_error_rate);
  const int latency_ms = absl::GetFlag(FLAGS_latency_ms);
  if (!(error_rate >= 0 && error_rate <= 1)) {  // also rejects NaN
    std::cerr << "echo_server: --error_rate must be between 0 and 1\n";
    return 2;
  }
  if (latency_ms < 0) {
    std::cerr << "echo_server: --latency_ms must be >= 0\n";
    return 2;
  }
  const int tail_latency_ms = absl::GetFlag(FLAGS_tail_latency_ms);
  const double tail_fraction = absl::GetFlag(FLAGS_tail_fraction);
  if (tail_latency_ms < 0) {
    std::cerr << "echo_server: --tail_latency_ms must be >= 0\n";
    return 2;
  }
  if (!(tail_fraction >= 0 && tail_fraction <= 1)) {
    std::cerr << "echo_server: --tail_fraction must be between 0 and 1\n";
    return 2;
  }
  if (tail_fraction > 0 && tail_latency_ms == 0) {
    std::cerr << "echo_server: --tail_fraction needs --tail_latency_ms (the tail's latency)\n";
    return 2;
  }
  if (tail_latency_ms > 0 && tail_fraction == 0) {
    std::cerr << "echo_server: --tail_latency_ms needs --tail_fraction (how many calls are "
                 "slow)\n";
    return 2;
  }
  const std::string etcd = absl::GetFlag(FLAGS_etcd);
  const std::string etcd_prefix = absl::GetFlag(FLAGS_etcd_prefix);
  meshlib::etcd::RegistrarOptions registration;
  if (!etcd.empty() || !etcd_prefix.empty()) {
    if (etcd.empty() || etcd_prefix.empty()) {
      std::cerr << "echo_server: --etcd and --etcd_prefix go together\n";
      return 2;
    }
    registration.etcd.endpoints = absl::StrSplit(etcd, ',', absl::SkipEmpty());
    registration.prefix = etcd_prefix;
    registration.ttl = absl::GetFlag(FLAGS_etcd_ttl);
    registration.endpoint.zone = absl::GetFlag(FLAGS_zone);
    if (absl::Status st = registration.etcd.Validate(); !st.ok()) {
      std::cerr << "echo_server: --etcd: " << st.message() << "\n";
      return 2;
    }
    if (registration.ttl < absl::Seconds(1) || registration.ttl > absl::Hours(1)) {
      std::cerr << "echo_server: --etcd_ttl must be between 1s and 1h\n";
      return 2;
    }
  }

  // Block the stop signals before any thread starts, so only sigwait sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  meshlib::server::ServerOptions options;
  options.io_threads = absl::GetFlag(FLAGS_io_threads);
  options.busy_poll = absl::Microseconds(absl::GetFlag(FLAGS_busy_poll_us));
  options.adaptive_concurrency.enabled = absl::GetFlag(FLAGS_adaptive_concurrency);
  if (!absl::GetFlag(FLAGS_tls_cert).empty() || !absl::GetFlag(FLAGS_tls_key).empty() ||
      !absl::GetFlag(FLAGS_tls_ca).empty()) {
    meshlib::tls::TlsOptions t;
    t.cert_file = absl::GetFlag(FLAGS_tls_cert);
    t.key_file = absl::GetFlag(FLAGS_tls_key);
    t.ca_file = absl::GetFlag(FLAGS_tls_ca);
    for (absl::string_view id : absl::StrSplit(absl::GetFlag(FLAGS_tls_allow), ',',
                                               absl::SkipEmpty())) {
      t.identities.emplace_back(id);
    }
    auto watcher = meshlib::tls::CredentialsWatcher::Start(t, meshlib::tls::Role::kServer);
    if (!watcher.ok()) {
      // "tls.cert_file: ..." names the flag's field.
      std::cerr << "echo_server: --tls_*: " << watcher.status().message() << "\n";
      return 2;
    }
    options.tls = *std::move(watcher);
  }
  meshlib::server::Server server(options);

  // Set once before the first call can arrive, then only read.
  std::string name = absl::GetFlag(FLAGS_name);
  std::atomic<const std::string*> name_view{&name};
  std::string bound_name;
  const std::string zone = absl::GetFlag(FLAGS_zone);
  meshlib::core::Mutex rng_mu;
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> unit(0.0, 1.0);

  auto status = server.RegisterAsync(
      "Echo/Say", [&](std::shared_ptr<meshlib::server::ServerCall> call) {
        const std::string& name = *name_view.load(std::memory_order_acquire);
        call->AddResponseMetadata("server", name);
        if (!zone.empty()) call->AddResponseMetadata("zone", zone);
        bool fail = false;
        int delay_ms = latency_ms;
        if (error_rate > 0 || tail_fraction > 0) {
          meshlib::core::MutexLock lock(&rng_mu);
          fail = error_rate > 0 && unit(rng) < error_rate;
          if (tail_fraction > 0 && unit(rng) < tail_fraction) delay_ms = tail_latency_ms;
        }
        absl::Status result =
            fail ? absl::UnavailableError(absl::StrCat("injected error from ", name,
                                                       " (--error_rate)"))
                 : absl::OkStatus();
        if (delay_ms == 0) {
          call->Finish(std::move(result), fail ? std::string() : call->request());
          return;
        }
        // A timer, not a sleep: this handler runs on the reactor thread.
        call->executor().RunAfter(absl::Milliseconds(delay_ms),
                                  [call, result = std::move(result), fail]() mutable {
                                    call->Finish(std::move(result),
                                                 fail ? std::string() : call->request());
                                  });
      });
  if (!status.ok()) {
    std::cerr << "echo_server: " << status << "\n";
    return 1;
  }
  std::string host = absl::GetFlag(FLAGS_host);
  std::string bind = host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host;
  absl::StatusOr<int> port = server.Start(absl::StrCat(bind, ":", absl::GetFlag(FLAGS_port)));
  if (!port.ok()) {
    std::cerr << "echo_server: " << port.status() << "\n";
    return 1;
  }
  if (name.empty()) {
    bound_name = server.address();
    name_view.store(&bound_name, std::memory_order_release);
  }
  const std::string& display = *name_view.load();
  if (!etcd.empty()) {
    registration.endpoint.metadata["name"] = display;
    // Deregisters at the start of server.Shutdown, before the drain.
    auto registrar = meshlib::server::RegisterInEtcd(server, std::move(registration));
    if (!registrar.ok()) {
      std::cerr << "echo_server: --etcd: " << registrar.status().message() << "\n";
      return 2;
    }
  }
  std::unique_ptr<meshlib::admin::AdminServer> admin;
  if (const int admin_port = absl::GetFlag(FLAGS_admin_port); admin_port >= 0) {
    meshlib::admin::AdminOptions ao;
    ao.address = absl::StrCat("127.0.0.1:", admin_port);
    meshlib::admin::AdminServer::Handlers pages =
        meshlib::admin::StandardPages(meshlib::metrics::DefaultRegistry(), &ao);
    auto started = meshlib::admin::AdminServer::Start(ao, std::move(pages));
    if (!started.ok()) {
      std::cerr << "echo_server: --admin_port: " << started.status() << "\n";
      return 2;
    }
    admin = *std::move(started);
  }
  std::printf("listening on %s\n", server.address().c_str());
  if (admin != nullptr) std::printf("admin on %s\n", admin->address().c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "echo_server %s: signal %d, draining %lld calls in flight\n",
               display.c_str(), sig, static_cast<long long>(server.active_calls()));
  server.Shutdown(absl::GetFlag(FLAGS_drain_timeout));
  const meshlib::server::ServerStats stats = server.stats();
  std::fprintf(stderr, "echo_server %s: stopped after %lld calls (%lld shed, %lld expired)\n",
               display.c_str(), static_cast<long long>(stats.calls),
               static_cast<long long>(stats.shed), static_cast<long long>(stats.rejected_expired));
  return 0;
}
