// The rotation bar: a server's certificate files are replaced (an atomic
// rename, as a secret manager does) during a run of 500 calls/s over
// mutual TLS, while new clients keep connecting. No call fails; connections
// made before keep working; handshakes after present the new certificate,
// which the metrics and Describe() show.
//
// Asserts a whole scenario's success rate: tagged "scenario" (one at a
// time, unsanitized; tools/test.sh).
#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/config/config.h"
#include "meshlib/core/sync.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/metrics/metrics.h"
#include "meshlib/server/server.h"
#include "meshlib/testing/subprocess.h"
#include "meshlib/testing/test_certs.h"
#include "meshlib/tls/credentials.h"

namespace meshlib {
namespace {

using client::CallResult;
using testing::TestCerts;

void Copy(const std::string& from, const std::string& to) {
  ASSERT_EQ(std::system(absl::StrCat("cp ", from, " ", to).c_str()), 0);
}

TEST(TlsRotationTest, ReplacingTheServersFilesDuringLoadFailsNoCall) {
  TestCerts certs = TestCerts::Make();
  ASSERT_TRUE(certs.ok()) << certs.status();
  for (const char* name : {"echo", "echo2", "client"}) {
    ASSERT_TRUE(certs.Leaf(name, TestCerts::Kind::kSvid, "ca",
                           std::string(name) == "echo2" ? "echo-next" : "")
                    .ok());
  }
  const std::string dir = testing::MakeTempDir("rotation");
  const std::string crt = dir + "/tls.crt", key = dir + "/tls.key";
  Copy(certs.Cert("echo"), crt);
  Copy(certs.Key("echo"), key);

  metrics::Registry registry;
  tls::TlsOptions st;
  st.cert_file = crt;
  st.key_file = key;
  st.ca_file = certs.ca();
  st.reload_interval = absl::Milliseconds(100);
  auto watcher = tls::CredentialsWatcher::Start(st, tls::Role::kServer);
  ASSERT_TRUE(watcher.ok()) << watcher.status();
  server::ServerOptions so;
  so.io_threads = 1;
  so.metrics = &registry;
  so.tls = *watcher;
  server::Server server(so);
  ASSERT_TRUE(server
                  .RegisterSync("Echo/Say",
                                [](server::ServerCall& call, std::string* out) {
                                  *out = call.request();
                                  return absl::OkStatus();
                                })
                  .ok());
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());

  // Clients accept the identity before and after the rotation.
  auto make_mesh = [&](const std::string& identities) {
    auto cfg = config::ParseMeshConfig(absl::StrCat(
        R"({"services": {"echo": {"discovery": {"static": {"endpoints": [")", server.address(),
        R"("]}}, "timeout": "2s", "tls": {"ca_file": ")", certs.ca(), R"(", "cert_file": ")",
        certs.Cert("client"), R"(", "key_file": ")", certs.Key("client"),
        R"(", "identities": [)", identities, "]}}}}"));
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    mesh::MeshOptions mo;
    mo.metrics = nullptr;
    auto m = mesh::Mesh::Create(*std::move(cfg), mo);
    EXPECT_TRUE(m.ok()) << m.status();
    return *std::move(m);
  };
  const std::string both = R"("spiffe://mesh.test/echo", "spiffe://mesh.test/echo-next")";
  std::unique_ptr<mesh::Mesh> steady = make_mesh(both);
  auto client = steady->Client("echo").value();
  ASSERT_TRUE(client->CallBlocking("Echo/Say", "warm").status.ok());

  // 500 calls/s for 3 s on the steady client; the files are replaced at
  // 1 s; every 100 ms a new mesh connects (a new handshake) and calls once.
  std::atomic<int> done{0}, failed{0};
  core::Mutex mu;
  std::vector<std::string> failures;
  const int kCalls = 1500;
  const absl::Time start = absl::Now();
  bool rotated = false;
  int fresh_ok = 0, fresh_calls = 0;
  for (int i = 0; i < kCalls; ++i) {
    const absl::Time due = start + absl::Milliseconds(2) * i;
    if (absl::Now() < due) absl::SleepFor(due - absl::Now());
    client->Call("Echo/Say", "x", {}, [&](CallResult r) {
      if (!r.status.ok()) {
        ++failed;
        core::MutexLock lock(&mu);
        if (failures.size() < 5) failures.push_back(r.status.ToString());
      }
      ++done;
    });
    if (!rotated && absl::Now() - start >= absl::Seconds(1)) {
      rotated = true;
      Copy(certs.Cert("echo2"), crt + ".new");
      Copy(certs.Key("echo2"), key + ".new");
      ASSERT_EQ(rename((key + ".new").c_str(), key.c_str()), 0);
      ASSERT_EQ(rename((crt + ".new").c_str(), crt.c_str()), 0);
    }
    if (i % 50 == 25) {
      std::unique_ptr<mesh::Mesh> fresh = make_mesh(both);
      ++fresh_calls;
      if (fresh->Client("echo").value()->CallBlocking("Echo/Say", "new").status.ok()) ++fresh_ok;
    }
  }
  ASSERT_TRUE(testing::Eventually([&] { return done.load() == kCalls; }, absl::Seconds(20)));
  {
    core::MutexLock lock(&mu);
    EXPECT_EQ(failed.load(), 0) << (failures.empty() ? "" : failures.front());
  }
  EXPECT_EQ(fresh_ok, fresh_calls);
  EXPECT_EQ((*watcher)->stats().reloads, 1);
  std::printf("%d calls at 500/s across the rotation: %d failed; %d of %d new connections "
              "called fine\n",
              kCalls, failed.load(), fresh_ok, fresh_calls);

  // A handshake now presents the new certificate: a client that only
  // accepts the new identity gets through, one that only accepts the old
  // does not.
  auto next_only = make_mesh(R"("spiffe://mesh.test/echo-next")");
  EXPECT_TRUE(next_only->Client("echo").value()->CallBlocking("Echo/Say", "x").status.ok());
  auto old_only = make_mesh(R"("spiffe://mesh.test/echo")");
  CallResult r = old_only->Client("echo").value()->CallBlocking("Echo/Say", "x");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_TRUE(absl::StrContains(r.status.message(), "presented spiffe://mesh.test/echo-next"))
      << r.status;
  // The steady client's connection, made before, still works.
  EXPECT_TRUE(client->CallBlocking("Echo/Say", "after").status.ok());

  // Expiry and reloads are visible.
  const std::string text = registry.Prometheus();
  EXPECT_TRUE(absl::StrContains(text, "meshlib_tls_certificate_expiry_timestamp_seconds{side=\"server\","
                                      "identity=\"spiffe://mesh.test/echo-next\""))
      << text;
  EXPECT_TRUE(absl::StrContains(client->Describe(), "spiffe://mesh.test/client"))
      << client->Describe();
}

}  // namespace
}  // namespace meshlib
