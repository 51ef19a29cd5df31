// What a TLS 1.3 handshake costs with meshlib's credentials (ECDSA P-256
// certificates made by the openssl CLI, mutual TLS, SPIFFE IDs): a full
// handshake, and one resuming the client's last session. Both sides run on
// this thread over an in-memory BIO pair, so the numbers are CPU per
// handshake (both sides together), without the network.
//
//   bazel run -c opt //benchmarks:tls_benchmark
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <cstdio>
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "meshlib/testing/test_certs.h"
#include "meshlib/tls/credentials.h"

namespace {

using meshlib::tls::Credentials;
using meshlib::tls::Role;
using meshlib::tls::TlsOptions;

struct Setup {
  std::shared_ptr<Credentials> client, server;
};

const Setup& Creds() {
  static const Setup* setup = [] {
    auto* s = new Setup;
    meshlib::testing::TestCerts certs = meshlib::testing::TestCerts::Make();
    if (!certs.ok() || !certs.Leaf("server").ok() || !certs.Leaf("client").ok()) {
      std::fprintf(stderr, "cannot make certificates: %s\n", certs.status().ToString().c_str());
      std::abort();
    }
    TlsOptions c;
    c.ca_file = certs.ca();
    c.cert_file = certs.Cert("client");
    c.key_file = certs.Key("client");
    TlsOptions v;
    v.ca_file = certs.ca();
    v.cert_file = certs.Cert("server");
    v.key_file = certs.Key("server");
    auto cc = Credentials::Load(c, Role::kClient);
    auto sc = Credentials::Load(v, Role::kServer);
    if (!cc.ok() || !sc.ok()) std::abort();
    s->client = *cc;
    s->server = *sc;
    return s;
  }();
  return *setup;
}

// One handshake between new client and server SSLs; true when it
// resumed. With `resume`, the client offers the session its credentials
// kept from the previous handshake (as a reconnecting channel does), and
// keeps the new one.
bool Handshake(const Setup& s, bool resume) {
  static const std::string kAddress = "bench";
  SSL* client = SSL_new(s.client->ctx());
  SSL* server = SSL_new(s.server->ctx());
  meshlib::tls::SetSessionAddress(client, &kAddress);
  if (resume) {
    if (SSL_SESSION* kept = s.client->TakeSession(kAddress)) {
      SSL_set_session(client, kept);
      SSL_SESSION_free(kept);
    }
  }
  BIO *cb, *sb;
  BIO_new_bio_pair(&cb, 0, &sb, 0);
  SSL_set_bio(client, cb, cb);
  SSL_set_bio(server, sb, sb);
  SSL_set_connect_state(client);
  SSL_set_accept_state(server);
  bool client_done = false, server_done = false;
  for (int i = 0; i < 64 && !(client_done && server_done); ++i) {
    if (!client_done) client_done = SSL_do_handshake(client) == 1;
    if (!server_done) server_done = SSL_do_handshake(server) == 1;
  }
  if (!client_done || !server_done) std::abort();
  // TLS 1.3 tickets come after the handshake: let the client read them.
  char b;
  SSL_write(server, "x", 1);
  SSL_read(client, &b, 1);
  const bool resumed = SSL_session_reused(client) == 1;
  SSL_free(client);
  SSL_free(server);
  return resumed;
}

void BM_FullHandshake(benchmark::State& state) {
  const Setup& s = Creds();
  for (auto _ : state) benchmark::DoNotOptimize(Handshake(s, /*resume=*/false));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FullHandshake)->Unit(benchmark::kMicrosecond);

void BM_ResumedHandshake(benchmark::State& state) {
  const Setup& s = Creds();
  Handshake(s, /*resume=*/false);
  int64_t resumed = 0;
  for (auto _ : state) resumed += Handshake(s, /*resume=*/true) ? 1 : 0;
  state.SetItemsProcessed(state.iterations());
  state.counters["resumed_share"] =
      static_cast<double>(resumed) / static_cast<double>(std::max<int64_t>(1, state.iterations()));
}
BENCHMARK(BM_ResumedHandshake)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
