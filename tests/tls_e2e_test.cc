// Mutual TLS through the whole stack, with real certificates made by the
// openssl CLI: a mesh whose service has a `tls` block calls meshlib
// servers (in process, and echo_server with --tls_*), and every refusal of
// the issue fails fast with the status and reason it should, while a good
// mTLS call works before and after them.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "meshlib/config/config.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/server/server.h"
#include "meshlib/testing/subprocess.h"
#include "meshlib/testing/test_certs.h"
#include "meshlib/tls/credentials.h"

namespace meshlib {
namespace {

using client::CallOptions;
using client::CallResult;
using testing::TestCerts;

TestCerts* certs = nullptr;

// A meshlib server answering Echo/Say with the caller's identity.
struct TlsServer {
  explicit TlsServer(tls::TlsOptions t, std::map<std::string, std::vector<std::string>> per_method = {}) {
    server::ServerOptions o;
    o.io_threads = 1;
    o.metrics = nullptr;
    if (!t.cert_file.empty()) {
      auto w = tls::CredentialsWatcher::Start(t, tls::Role::kServer);
      EXPECT_TRUE(w.ok()) << w.status();
      if (w.ok()) o.tls = *std::move(w);
    }
    o.method_identities = std::move(per_method);
    server = std::make_unique<server::Server>(o);
    for (const char* m : {"Echo/Say", "Echo/Admin"}) {
      EXPECT_TRUE(server
                      ->RegisterSync(m,
                                     [](server::ServerCall& call, std::string* out) {
                                       *out = call.peer_identity();
                                       return absl::OkStatus();
                                     })
                      .ok());
    }
    EXPECT_TRUE(server->Start("127.0.0.1:0").ok());
  }
  std::string address() const { return server->address(); }
  std::unique_ptr<server::Server> server;
};

class TlsE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs = new TestCerts(TestCerts::Make());
    if (!certs->ok()) return;
    for (const char* name : {"echo", "client", "other"}) {
      absl::Status s = certs->Leaf(name);
      if (!s.ok()) ADD_FAILURE() << s;
    }
  }
  void SetUp() override { ASSERT_TRUE(certs->ok()) << certs->status(); }

  static tls::TlsOptions ServerTls(bool require_client = true) {
    tls::TlsOptions t;
    t.cert_file = certs->Cert("echo");
    t.key_file = certs->Key("echo");
    if (require_client) t.ca_file = certs->ca();
    return t;
  }

  // A mesh calling `address` as service "echo" with `tls` (a JSON object, or
  // "" for none).
  static std::unique_ptr<mesh::Mesh> MeshTo(const std::string& address, const std::string& tls) {
    auto cfg = config::ParseMeshConfig(absl::StrCat(
        R"({"services": {"echo": {"discovery": {"static": {"endpoints": [")", address,
        R"("]}}, "timeout": "5s")", tls.empty() ? "" : absl::StrCat(R"(, "tls": )", tls), "}}}"));
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    mesh::MeshOptions o;
    o.metrics = nullptr;
    auto m = mesh::Mesh::Create(*std::move(cfg), o);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *std::move(m) : nullptr;
  }

  static std::string ClientTls(const std::string& ca, const std::string& leaf,
                               const std::vector<std::string>& identities) {
    std::string out = absl::StrCat(R"({"ca_file": ")", ca, R"(")");
    if (!leaf.empty()) {
      absl::StrAppend(&out, R"(, "cert_file": ")", certs->Cert(leaf), R"(", "key_file": ")",
                      certs->Key(leaf), R"(")");
    }
    if (!identities.empty()) {
      absl::StrAppend(&out, R"(, "identities": [")", absl::StrJoin(identities, R"(", ")"), R"("])");
    }
    return out + "}";
  }

  // One call; its result and how long it took.
  static CallResult CallOnce(mesh::Mesh& m, const std::string& method, absl::Duration* took) {
    auto c = m.Client("echo");
    EXPECT_TRUE(c.ok()) << c.status();
    const absl::Time start = absl::Now();
    CallResult r = (*c)->CallBlocking(method, "hi");
    *took = absl::Now() - start;
    return r;
  }
};

TEST_F(TlsE2eTest, GoodMutualTlsCallsWorkAroundEveryRefusal) {
  TlsServer server(ServerTls(), {{"Echo/Admin", {"spiffe://mesh.test/other"}}});
  const std::string good = ClientTls(certs->ca(), "client", {"spiffe://mesh.test/echo"});
  auto good_call = [&] {
    auto m = MeshTo(server.address(), good);
    absl::Duration took;
    CallResult r = CallOnce(*m, "Echo/Say", &took);
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.payload, "spiffe://mesh.test/client") << "the handler sees the caller";
  };
  good_call();

  struct Refusal {
    std::string what;
    std::string tls;  // the client's tls block ("" : plaintext)
    std::string method;
    absl::StatusCode code;
    std::string reason;
  };
  TlsServer plaintext(tls::TlsOptions{});
  const std::vector<Refusal> refusals = {
      {"untrusted CA", ClientTls(certs->wrong_ca(), "", {}), "Echo/Say",
       absl::StatusCode::kUnavailable, "untrusted"},
      {"identity not allowed", ClientTls(certs->ca(), "client", {"spiffe://mesh.test/other"}),
       "Echo/Say", absl::StatusCode::kUnavailable,
       "presented spiffe://mesh.test/echo, not an identity allowed"},
      {"missing client certificate", ClientTls(certs->ca(), "", {}), "Echo/Say",
       absl::StatusCode::kUnavailable, "requires a client certificate"},
      {"plaintext client on a TLS port", "", "Echo/Say", absl::StatusCode::kUnavailable,
       "TLS"},
      {"caller not allowed for the method", good, "Echo/Admin",
       absl::StatusCode::kPermissionDenied,
       "spiffe://mesh.test/client may not call Echo/Admin"},
  };
  for (const Refusal& r : refusals) {
    SCOPED_TRACE(r.what);
    auto m = MeshTo(server.address(), r.tls);
    absl::Duration took;
    CallResult res = CallOnce(*m, r.method, &took);
    EXPECT_EQ(res.status.code(), r.code) << res.status;
    EXPECT_TRUE(absl::StrContains(res.status.message(), r.reason)) << res.status;
    EXPECT_LT(took, absl::Seconds(2)) << "well under the 5s timeout";
    good_call();
  }
  {
    SCOPED_TRACE("TLS client on a plaintext port");
    auto m = MeshTo(plaintext.address(), good);
    absl::Duration took;
    CallResult res = CallOnce(*m, "Echo/Say", &took);
    EXPECT_EQ(res.status.code(), absl::StatusCode::kUnavailable) << res.status;
    EXPECT_TRUE(absl::StrContains(res.status.message(), "does not speak TLS") ||
                absl::StrContains(res.status.message(), "closed the connection during the TLS"))
        << res.status;
    EXPECT_LT(took, absl::Seconds(2));
  }
  EXPECT_GT(server.server->stats().tls_handshake_failures, 0);
  good_call();
}

TEST_F(TlsE2eTest, AServerWithoutAnIdentityForTheMethodSaysUnauthenticated) {
  // The server does not require client certificates, but the method needs
  // an identity: a client without one is UNAUTHENTICATED.
  TlsServer server(ServerTls(/*require_client=*/false),
                   {{"Echo/Admin", {"spiffe://mesh.test/client"}}});
  auto m = MeshTo(server.address(), ClientTls(certs->ca(), "", {}));
  absl::Duration took;
  CallResult r = CallOnce(*m, "Echo/Admin", &took);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnauthenticated) << r.status;
  EXPECT_TRUE(absl::StrContains(r.status.message(), "presented none")) << r.status;
  r = CallOnce(*m, "Echo/Say", &took);
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "");
}

TEST_F(TlsE2eTest, BadTlsConfigurationNamesTheField) {
  auto cfg = config::ParseMeshConfig(
      R"({"services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
          "tls": {"cert_file": "/x.crt", "key_file": "/x.key"}}}})");
  ASSERT_FALSE(cfg.ok());
  EXPECT_TRUE(absl::StrContains(cfg.status().message(), "services.echo.tls.ca_file"))
      << cfg.status();
  cfg = config::ParseMeshConfig(
      R"({"mesh": {"tls": {"ca_file": "/x", "identities": ["spiffe://UPPER/x"]}},
          "services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}}}}})");
  ASSERT_FALSE(cfg.ok());
  EXPECT_TRUE(absl::StrContains(cfg.status().message(), "mesh.tls.identities[0]"))
      << cfg.status();
  // Files that do not load fail when the client is made, naming the path.
  cfg = config::ParseMeshConfig(absl::StrCat(
      R"({"mesh": {"tls": {"ca_file": "/nonexistent/ca.crt"}},
          "services": {"echo": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}}}}})"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto m = mesh::Mesh::Create(*std::move(cfg));
  ASSERT_TRUE(m.ok());
  auto c = (*m)->Client("echo");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::StrContains(c.status().message(), "mesh.tls.ca_file: cannot load"))
      << c.status();
}

// echo_server with --tls_*: a mesh's mTLS calls reach it; a plaintext mesh
// does not.
TEST_F(TlsE2eTest, EchoServerServesTls) {
  testing::Subprocess echo({testing::Runfile("examples/echo/echo_server"), "--port=0",
                            "--tls_cert=" + certs->Cert("echo"), "--tls_key=" + certs->Key("echo"),
                            "--tls_ca=" + certs->ca(), "--tls_allow=spiffe://mesh.test/client"});
  std::string line = echo.WaitForLine("listening on ", absl::Seconds(20));
  ASSERT_FALSE(line.empty()) << echo.err();
  const std::string address = line.substr(line.find("listening on ") + 13);
  auto m = MeshTo(address, ClientTls(certs->ca(), "client", {"spiffe://mesh.test/echo"}));
  absl::Duration took;
  CallResult r = CallOnce(*m, "Echo/Say", &took);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "hi");
  auto other = MeshTo(address, ClientTls(certs->ca(), "other", {}));
  r = CallOnce(*other, "Echo/Say", &took);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied) << r.status;

  testing::Subprocess bad({testing::Runfile("examples/echo/echo_server"), "--port=0",
                           "--tls_cert=" + certs->Cert("echo"),
                           "--tls_key=" + certs->Key("client")});
  EXPECT_EQ(bad.Wait(absl::Seconds(20)), 2);
  EXPECT_TRUE(absl::StrContains(bad.err(), "is not the key of the certificate")) << bad.err();
}

}  // namespace
}  // namespace meshlib
