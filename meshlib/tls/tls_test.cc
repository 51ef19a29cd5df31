// TLS with real certificates made by the openssl CLI (testing/test_certs.h):
// SPIFFE identities, credentials checked before use and reloaded when their
// files change, handshakes on a reactor with the refusals named, session
// resumption, and openssl s_server/s_client as outside peers.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/core/sync.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/testing/subprocess.h"
#include "meshlib/testing/test_certs.h"
#include "meshlib/tls/credentials.h"
#include "meshlib/tls/spiffe.h"
#include "meshlib/tls/tls_stream.h"

namespace meshlib::tls {
namespace {

using meshlib::testing::TestCerts;
using transport::IoResult;

TestCerts* certs = nullptr;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs = new TestCerts(TestCerts::Make());
    if (!certs->ok()) return;
    struct LeafSpec {
      const char* name;
      TestCerts::Kind kind;
      const char* issuer;
      const char* id;
    };
    const LeafSpec leaves[] = {
        {"echo", TestCerts::Kind::kSvid, "ca", ""},
        {"client", TestCerts::Kind::kSvid, "ca", ""},
        {"other", TestCerts::Kind::kSvid, "ca", ""},
        {"expired", TestCerts::Kind::kExpired, "ca", "echo"},
        {"future", TestCerts::Kind::kNotYetValid, "ca", "echo"},
        {"plain", TestCerts::Kind::kNoSpiffe, "ca", ""},
        {"two", TestCerts::Kind::kTwoUris, "ca", ""},
        {"caflag", TestCerts::Kind::kCaFlag, "ca", ""},
        {"rogue", TestCerts::Kind::kSvid, "wrong_ca", "client"},
    };
    for (const LeafSpec& l : leaves) {
      absl::Status s = certs->Leaf(l.name, l.kind, l.issuer, l.id);
      if (!s.ok()) {
        ADD_FAILURE() << s;
        return;
      }
    }
    // A bundle trusting both CAs: lets a client hold the rogue certificate.
    std::string both = certs->Path("both.crt");
    std::string cmd = absl::StrCat("cat ", certs->ca(), " ", certs->wrong_ca(), " > ", both);
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }

  void SetUp() override {
    ASSERT_TRUE(certs->ok()) << certs->status();
    auto loop = runtime::EventLoop::Create("tls-test");
    ASSERT_TRUE(loop.ok());
    loop_ = *std::move(loop);
  }

  static TlsOptions Server(const std::string& leaf = "echo", bool require_client = true) {
    TlsOptions o;
    o.cert_file = certs->Cert(leaf);
    o.key_file = certs->Key(leaf);
    if (require_client) o.ca_file = certs->ca();
    o.reload_interval = absl::ZeroDuration();
    return o;
  }
  static TlsOptions Client(const std::string& leaf = "client",
                           std::vector<std::string> identities = {"spiffe://mesh.test/echo"}) {
    TlsOptions o;
    o.ca_file = certs->ca();
    if (!leaf.empty()) {
      o.cert_file = certs->Cert(leaf);
      o.key_file = certs->Key(leaf);
    }
    o.identities = std::move(identities);
    o.reload_interval = absl::ZeroDuration();
    return o;
  }

  // A connected pair of non-blocking loopback sockets: {client, server}.
  static std::pair<int, int> SocketPair() {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t len = sizeof sa;
    EXPECT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(listen(listener, 4), 0);
    getsockname(listener, reinterpret_cast<sockaddr*>(&sa), &len);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_EQ(connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    int s = accept(listener, nullptr, nullptr);
    close(listener);
    fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    return {c, s};
  }

  struct Outcome {
    absl::Status status;
    std::unique_ptr<TlsStream> stream;
  };

  // Runs one side's handshake on the loop and waits for it.
  std::shared_ptr<Handshake> StartSide(int fd, const CredentialsWatcher& creds, Role role,
                                       Outcome* out, core::Notification* done) {
    return Handshake::Start(loop_.get(), fd, "127.0.0.1:1", creds, role,
                            [out, done](absl::StatusOr<std::unique_ptr<TlsStream>> r) {
                              if (r.ok()) {
                                out->stream = *std::move(r);
                              } else {
                                out->status = r.status();
                              }
                              done->Notify();
                            });
  }

  // Both handshakes over one loopback connection.
  std::pair<Outcome, Outcome> Handshakes(const CredentialsWatcher& client,
                                         const CredentialsWatcher& server) {
    auto [c, s] = SocketPair();
    Outcome co, so;
    core::Notification cd, sd;
    StartSide(c, client, Role::kClient, &co, &cd);
    StartSide(s, server, Role::kServer, &so, &sd);
    EXPECT_TRUE(cd.WaitForNotificationWithTimeout(absl::Seconds(20)));
    EXPECT_TRUE(sd.WaitForNotificationWithTimeout(absl::Seconds(20)));
    return {std::move(co), std::move(so)};
  }

  static std::shared_ptr<CredentialsWatcher> Watch(const TlsOptions& o, Role role) {
    auto w = CredentialsWatcher::Start(o, role);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() ? *std::move(w) : nullptr;
  }

  std::unique_ptr<runtime::EventLoop> loop_;
};

// Writes all of `data`, waiting for the socket as needed.
void WriteAll(TlsStream& s, const std::string& data) {
  size_t off = 0;
  for (int i = 0; i < 10000 && off < data.size(); ++i) {
    iovec iov{const_cast<char*>(data.data()) + off, data.size() - off};
    IoResult r = s.Write(&iov, 1);
    if (r.kind == IoResult::kOk) {
      off += r.bytes;
      continue;
    }
    ASSERT_EQ(r.kind, IoResult::kWouldBlock) << r.error;
    pollfd p{s.fd(), POLLOUT, 0};
    poll(&p, 1, 100);
  }
  ASSERT_EQ(off, data.size());
}

// Reads `n` bytes, or until an error (returned).
absl::StatusOr<std::string> ReadN(TlsStream& s, size_t n) {
  std::string out;
  char buf[16384];
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (out.size() < n && absl::Now() < give_up) {
    IoResult r = s.Read(buf, std::min(sizeof buf, n - out.size()));
    if (r.kind == IoResult::kOk) {
      out.append(buf, r.bytes);
    } else if (r.kind == IoResult::kWouldBlock) {
      pollfd p{s.fd(), POLLIN, 0};
      poll(&p, 1, 100);
    } else if (r.kind == IoResult::kEof) {
      return absl::UnavailableError("eof");
    } else {
      return r.error;
    }
  }
  if (out.size() < n) return absl::DeadlineExceededError("read timed out");
  return out;
}

X509* ReadCert(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return nullptr;
  X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  return x;
}

TEST(SpiffeTest, IdsFollowTheSpecification) {
  for (const char* good : {"spiffe://mesh.test/echo", "spiffe://mesh.test", "spiffe://a-b_c.d/x/Y.z-1",
                           "spiffe://td/a/b/c"}) {
    EXPECT_TRUE(ValidateSpiffeId(good).ok()) << good;
  }
  struct Bad {
    const char* id;
    const char* why;
  };
  for (const Bad& b : std::vector<Bad>{{"http://mesh.test/echo", "spiffe://"},
                                       {"spiffe://", "trust domain is empty"},
                                       {"spiffe://Mesh.test/echo", "lower-case"},
                                       {"spiffe://mesh.test:8080/echo", "port"},
                                       {"spiffe://user@mesh.test/echo", "user info"},
                                       {"spiffe://mesh.test/", "trailing"},
                                       {"spiffe://mesh.test//echo", "empty path segments"},
                                       {"spiffe://mesh.test/a/../b", "'..'"},
                                       {"spiffe://mesh.test/echo?x=1", "query"},
                                       {"spiffe://mesh.test/ec ho", "path segments may only"}}) {
    absl::Status s = ValidateSpiffeId(b.id);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << b.id;
    EXPECT_TRUE(absl::StrContains(s.message(), b.why)) << b.id << ": " << s;
  }
  EXPECT_EQ(TrustDomainOf("spiffe://mesh.test/echo"), "mesh.test");
}

TEST_F(TlsTest, SvidRulesOnRealCertificates) {
  struct Case {
    const char* file;
    absl::StatusCode code;
    const char* text;
  };
  for (const Case& c : std::vector<Case>{
           {"echo", absl::StatusCode::kOk, "spiffe://mesh.test/echo"},
           {"plain", absl::StatusCode::kUnauthenticated, "no SPIFFE ID"},
           {"two", absl::StatusCode::kInvalidArgument, "exactly one"},
           {"caflag", absl::StatusCode::kInvalidArgument, "must not be a CA"}}) {
    X509* x = ReadCert(certs->Cert(c.file));
    ASSERT_NE(x, nullptr) << c.file;
    absl::StatusOr<std::string> id = SpiffeIdOf(x);
    X509_free(x);
    EXPECT_EQ(id.status().code(), c.code) << c.file << ": " << id.status();
    EXPECT_TRUE(absl::StrContains(id.ok() ? *id : std::string(id.status().message()), c.text))
        << c.file << ": " << (id.ok() ? *id : id.status().ToString());
  }
}

TEST_F(TlsTest, BrokenFilesAreRefusedNamingWhatIsWrong) {
  std::string garbage = certs->Path("garbage.pem");
  ASSERT_EQ(std::system(absl::StrCat("head -c 300 /dev/urandom > ", garbage).c_str()), 0);
  struct Case {
    std::string what;
    TlsOptions options;
    Role role;
    const char* text;
  };
  auto server = [](const std::string& cert, const std::string& key) {
    TlsOptions o = Server();
    o.cert_file = cert;
    o.key_file = key;
    return o;
  };
  TlsOptions no_ca = Client();
  no_ca.ca_file = "";
  TlsOptions bad_id = Client();
  bad_id.identities = {"spiffe://Mesh/x"};
  TlsOptions bad_ca = Server();
  bad_ca.ca_file = garbage;
  std::vector<Case> cases = {
      {"missing file", server(certs->Path("nope.crt"), certs->Key("echo")), Role::kServer,
       "tls.cert_file: cannot load"},
      {"garbage certificate", server(garbage, certs->Key("echo")), Role::kServer,
       "tls.cert_file: cannot load"},
      {"garbage key", server(certs->Cert("echo"), garbage), Role::kServer,
       "tls.key_file: cannot load"},
      {"key of another certificate", server(certs->Cert("echo"), certs->Key("client")),
       Role::kServer, "is not the key of the certificate"},
      {"signed by another CA", server(certs->Cert("rogue"), certs->Key("rogue")), Role::kServer,
       "does not verify against tls.ca_file"},
      {"expired", server(certs->Cert("expired"), certs->Key("expired")), Role::kServer,
       "expired at"},
      {"not yet valid", server(certs->Cert("future"), certs->Key("future")), Role::kServer,
       "is not valid before"},
      {"a CA as a leaf", server(certs->Cert("caflag"), certs->Key("caflag")), Role::kServer,
       "must not be a CA"},
      {"two SPIFFE IDs", server(certs->Cert("two"), certs->Key("two")), Role::kServer,
       "exactly one"},
      {"client without a CA", no_ca, Role::kClient, "tls.ca_file"},
      {"malformed identity", bad_id, Role::kClient, "tls.identities[0]"},
      {"garbage CA", bad_ca, Role::kServer, "tls.ca_file: cannot load"},
  };
  for (const Case& c : cases) {
    auto w = CredentialsWatcher::Start(c.options, c.role);
    ASSERT_FALSE(w.ok()) << c.what;
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_TRUE(absl::StrContains(w.status().message(), c.text)) << c.what << ": " << w.status();
  }
}

TEST_F(TlsTest, MutualTlsHandshakeCarriesDataBothWaysWithIdentities) {
  auto client = Watch(Client(), Role::kClient);
  auto server = Watch(Server(), Role::kServer);
  auto [c, s] = Handshakes(*client, *server);
  ASSERT_TRUE(c.status.ok()) << c.status;
  ASSERT_TRUE(s.status.ok()) << s.status;
  EXPECT_EQ(c.stream->peer_info().identity, "spiffe://mesh.test/echo");
  EXPECT_EQ(s.stream->peer_info().identity, "spiffe://mesh.test/client");
  EXPECT_EQ(c.stream->peer_info().alpn, kAlpnMeshlib);
  EXPECT_EQ(s.stream->peer_info().alpn, kAlpnMeshlib);
  // Larger than one TLS record, both ways.
  std::string big(300 * 1024, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  std::thread writer([&] { WriteAll(*c.stream, big); });
  absl::StatusOr<std::string> got = ReadN(*s.stream, big.size());
  writer.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, big);
  WriteAll(*s.stream, "pong");
  got = ReadN(*c.stream, 4);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "pong");
  EXPECT_FALSE(client->Describe().empty());
  EXPECT_TRUE(absl::StrContains(server->Describe(), "spiffe://mesh.test/echo"))
      << server->Describe();
}

TEST_F(TlsTest, ASecondConnectionResumesTheSession) {
  auto client = Watch(Client(), Role::kClient);
  auto server = Watch(Server(), Role::kServer);
  {
    auto [c, s] = Handshakes(*client, *server);
    ASSERT_TRUE(c.status.ok()) << c.status;
    ASSERT_TRUE(s.status.ok()) << s.status;
    EXPECT_FALSE(c.stream->peer_info().resumed);
    // TLS 1.3 sends its tickets after the handshake: the client takes them
    // as it reads.
    WriteAll(*s.stream, "hello");
    ASSERT_TRUE(ReadN(*c.stream, 5).ok());
  }
  auto [c, s] = Handshakes(*client, *server);
  ASSERT_TRUE(c.status.ok()) << c.status;
  EXPECT_TRUE(c.stream->peer_info().resumed);
  EXPECT_EQ(c.stream->peer_info().identity, "spiffe://mesh.test/echo");
}

TEST_F(TlsTest, AnUntrustedServerIsRefusedAsUntrusted) {
  TlsOptions o = Client();
  o.ca_file = certs->wrong_ca();
  o.cert_file = "";
  o.key_file = "";
  auto client = Watch(o, Role::kClient);
  auto server = Watch(Server("echo", /*require_client=*/false), Role::kServer);
  auto [c, s] = Handshakes(*client, *server);
  EXPECT_EQ(c.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(c.status.message(), "untrusted")) << c.status;
  EXPECT_FALSE(s.status.ok());
}

TEST_F(TlsTest, AServerWithAnotherIdentityIsRefused) {
  auto client = Watch(Client("client", {"spiffe://mesh.test/other"}), Role::kClient);
  auto server = Watch(Server(), Role::kServer);
  auto [c, s] = Handshakes(*client, *server);
  EXPECT_EQ(c.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(c.status.message(),
                                "presented spiffe://mesh.test/echo, not an identity allowed"))
      << c.status;
}

TEST_F(TlsTest, AClientWithoutACertificateLearnsTheServerWantsOne) {
  auto client = Watch(Client(""), Role::kClient);
  auto server = Watch(Server(), Role::kServer);
  auto [c, s] = Handshakes(*client, *server);
  EXPECT_FALSE(s.status.ok());
  EXPECT_TRUE(absl::StrContains(s.status.message(), "sent no certificate")) << s.status;
  // TLS 1.3: the client's handshake ends before the server's verdict,
  // which comes with the first read.
  if (c.status.ok()) {
    absl::StatusOr<std::string> r = ReadN(*c.stream, 1);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(absl::StrContains(r.status().message(), "requires a client certificate"))
        << r.status();
  } else {
    EXPECT_TRUE(absl::StrContains(c.status.message(), "requires a client certificate"))
        << c.status;
  }
}

TEST_F(TlsTest, AClientCertificateFromAnotherCaIsRefused) {
  TlsOptions o = Client("rogue");
  o.ca_file = certs->Path("both.crt");
  auto client = Watch(o, Role::kClient);
  auto server = Watch(Server(), Role::kServer);
  auto [c, s] = Handshakes(*client, *server);
  EXPECT_FALSE(s.status.ok());
  EXPECT_TRUE(absl::StrContains(s.status.message(), "client's certificate is untrusted"))
      << s.status;
  if (c.status.ok()) {
    absl::StatusOr<std::string> r = ReadN(*c.stream, 1);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(absl::StrContains(r.status().message(), "does not trust this side's certificate"))
        << r.status();
  }
}

TEST_F(TlsTest, PlaintextPeersAndSilentOnesFailFastAndSaySo) {
  auto server = Watch(Server("echo", false), Role::kServer);
  TlsOptions co = Client("");
  co.handshake_timeout = absl::Milliseconds(300);
  auto client = Watch(co, Role::kClient);
  {
    // A plaintext client (meshlib's framing) on a TLS port.
    auto [c, s] = SocketPair();
    Outcome so;
    core::Notification sd;
    StartSide(s, *server, Role::kServer, &so, &sd);
    std::string frame("\x00\x00\x00\x01\x01\x00\x00\x00\x00\x00\x00\x05hello", 17);
    ASSERT_EQ(write(c, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
    ASSERT_TRUE(sd.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_TRUE(absl::StrContains(so.status.message(), "does not speak TLS")) << so.status;
    close(c);
  }
  {
    // A TLS client on a plaintext port: the server answers with its framing.
    auto [c, s] = SocketPair();
    Outcome co2;
    core::Notification cd;
    StartSide(c, *client, Role::kClient, &co2, &cd);
    char buf[512];
    pollfd p{s, POLLIN, 0};
    poll(&p, 1, 5000);
    ASSERT_GT(read(s, buf, sizeof buf), 0);  // the ClientHello
    std::string goaway("\x00\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00", 12);
    ASSERT_EQ(write(s, goaway.data(), goaway.size()), static_cast<ssize_t>(goaway.size()));
    ASSERT_TRUE(cd.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_EQ(co2.status.code(), absl::StatusCode::kUnavailable);
    EXPECT_TRUE(absl::StrContains(co2.status.message(), "does not speak TLS")) << co2.status;
    close(s);
  }
  {
    // A server that hangs up at the ClientHello.
    auto [c, s] = SocketPair();
    Outcome co2;
    core::Notification cd;
    StartSide(c, *client, Role::kClient, &co2, &cd);
    close(s);
    ASSERT_TRUE(cd.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_TRUE(absl::StrContains(co2.status.message(), "closed the connection during the TLS"))
        << co2.status;
  }
  {
    // A server that never answers: the handshake timeout.
    auto [c, s] = SocketPair();
    Outcome co2;
    core::Notification cd;
    const absl::Time start = absl::Now();
    StartSide(c, *client, Role::kClient, &co2, &cd);
    ASSERT_TRUE(cd.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_TRUE(absl::StrContains(co2.status.message(), "did not finish within 300ms"))
        << co2.status;
    EXPECT_LT(absl::Now() - start, absl::Seconds(5));
    close(s);
  }
}

TEST_F(TlsTest, GarbageAndTruncatedHandshakesEndCleanly) {
  auto server = Watch(Server("echo", false), Role::kServer);
  std::vector<std::string> inputs;
  // Random bytes, a TLS record header with a huge length, and the start of
  // a real ClientHello cut short.
  std::string random(2000, '\0');
  for (size_t i = 0; i < random.size(); ++i) random[i] = static_cast<char>((i * 7919 + 13) & 0xff);
  inputs.push_back(random);
  inputs.push_back(std::string("\x16\x03\x01\xff\xff", 5) + std::string(100, 'a'));
  inputs.push_back(std::string("\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03", 11));
  for (const std::string& in : inputs) {
    auto [c, s] = SocketPair();
    Outcome so;
    core::Notification sd;
    StartSide(s, *server, Role::kServer, &so, &sd);
    ASSERT_EQ(write(c, in.data(), in.size()), static_cast<ssize_t>(in.size()));
    shutdown(c, SHUT_WR);  // then nothing more
    ASSERT_TRUE(sd.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_EQ(so.status.code(), absl::StatusCode::kUnavailable) << so.status;
    close(c);
  }
  // The server's credentials go on serving a good client.
  auto client = Watch(Client(""), Role::kClient);
  auto [c, s] = Handshakes(*client, *server);
  EXPECT_TRUE(c.status.ok()) << c.status;
  EXPECT_TRUE(s.status.ok()) << s.status;
}

// Copies `from` over `to` (in place: same inode).
void CopyInPlace(const std::string& from, const std::string& to) {
  ASSERT_EQ(std::system(absl::StrCat("cat ", from, " > ", to).c_str()), 0);
}

TEST_F(TlsTest, RotationTakesNewFilesOnlyWhenTheyAreGood) {
  const std::string dir = meshlib::testing::MakeTempDir("rotate");
  const std::string crt = dir + "/tls.crt", key = dir + "/tls.key";
  CopyInPlace(certs->Cert("echo"), crt);
  CopyInPlace(certs->Key("echo"), key);
  TlsOptions o = Server();
  o.cert_file = crt;
  o.key_file = key;
  auto w = Watch(o, Role::kServer);
  ASSERT_NE(w, nullptr);
  EXPECT_FALSE(w->CheckNow()) << "nothing changed";
  std::shared_ptr<Credentials> first = w->Current();

  // Replaced in place: a half-written pair (new certificate, old key) is
  // refused and the old one stays; the matching key completes it.
  CopyInPlace(certs->Cert("other"), crt);
  EXPECT_FALSE(w->CheckNow());
  EXPECT_EQ(w->Current(), first);
  EXPECT_EQ(w->stats().reload_errors, 1);
  EXPECT_TRUE(absl::StrContains(w->stats().last_error.message(), "is not the key"))
      << w->stats().last_error;
  EXPECT_TRUE(absl::StrContains(w->Describe(), "reload errors 1")) << w->Describe();
  CopyInPlace(certs->Key("other"), key);
  EXPECT_TRUE(w->CheckNow());
  EXPECT_EQ(w->Current()->identity(), "spiffe://mesh.test/other");

  // An atomic rename over the old files.
  CopyInPlace(certs->Cert("echo"), crt + ".new");
  CopyInPlace(certs->Key("echo"), key + ".new");
  ASSERT_EQ(rename((key + ".new").c_str(), key.c_str()), 0);
  ASSERT_EQ(rename((crt + ".new").c_str(), crt.c_str()), 0);
  EXPECT_TRUE(w->CheckNow());
  EXPECT_EQ(w->Current()->identity(), "spiffe://mesh.test/echo");

  // Kubernetes' way: the files are links into a directory that a symlink
  // swap replaces.
  const std::string k8s = meshlib::testing::MakeTempDir("k8s");
  ASSERT_EQ(std::system(absl::StrCat("cd ", k8s, " && mkdir v1 v2 && cp ", certs->Cert("echo"),
                                     " v1/tls.crt && cp ", certs->Key("echo"), " v1/tls.key && cp ",
                                     certs->Cert("other"), " v2/tls.crt && cp ",
                                     certs->Key("other"), " v2/tls.key && ln -s v1 ..data && "
                                     "ln -s ..data/tls.crt tls.crt && ln -s ..data/tls.key tls.key")
                            .c_str()),
            0);
  TlsOptions k = Server();
  k.cert_file = k8s + "/tls.crt";
  k.key_file = k8s + "/tls.key";
  auto kw = Watch(k, Role::kServer);
  ASSERT_NE(kw, nullptr);
  EXPECT_EQ(kw->Current()->identity(), "spiffe://mesh.test/echo");
  ASSERT_EQ(std::system(absl::StrCat("cd ", k8s, " && ln -s v2 ..data_tmp && mv -T ..data_tmp ..data")
                            .c_str()),
            0);
  EXPECT_TRUE(kw->CheckNow());
  EXPECT_EQ(kw->Current()->identity(), "spiffe://mesh.test/other");
}

TEST_F(TlsTest, ASessionMadeBeforeARotationKeepsWorking) {
  const std::string dir = meshlib::testing::MakeTempDir("rotate2");
  const std::string crt = dir + "/tls.crt", key = dir + "/tls.key";
  CopyInPlace(certs->Cert("echo"), crt);
  CopyInPlace(certs->Key("echo"), key);
  TlsOptions so = Server();
  so.cert_file = crt;
  so.key_file = key;
  so.reload_interval = absl::Milliseconds(20);  // the watcher's own thread
  auto server = Watch(so, Role::kServer);
  auto client = Watch(Client("client", {}), Role::kClient);
  auto [c, s] = Handshakes(*client, *server);
  ASSERT_TRUE(c.status.ok()) << c.status;
  ASSERT_TRUE(s.status.ok()) << s.status;
  CopyInPlace(certs->Cert("other"), crt + ".new");
  CopyInPlace(certs->Key("other"), key + ".new");
  ASSERT_EQ(rename((key + ".new").c_str(), key.c_str()), 0);
  ASSERT_EQ(rename((crt + ".new").c_str(), crt.c_str()), 0);
  ASSERT_TRUE(meshlib::testing::Eventually([&] { return server->stats().reloads == 1; },
                                           absl::Seconds(10)));
  // The old session still carries data; a new handshake shows the new
  // certificate.
  WriteAll(*c.stream, "still here");
  absl::StatusOr<std::string> got = ReadN(*s.stream, 10);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "still here");
  auto [c2, s2] = Handshakes(*client, *server);
  ASSERT_TRUE(c2.status.ok()) << c2.status;
  EXPECT_EQ(c2.stream->peer_info().identity, "spiffe://mesh.test/other");
}

// Outside peers: openssl s_server with an expired certificate (which
// meshlib would never load itself), and openssl s_client against meshlib.
TEST_F(TlsTest, OpensslPeers) {
  int port = 0;
  {
    // A free port for s_server.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    socklen_t len = sizeof sa;
    getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    close(fd);
  }
  meshlib::testing::Subprocess s_server(
      {"/usr/bin/openssl", "s_server", "-accept", absl::StrCat("127.0.0.1:", port), "-cert",
       certs->Cert("expired"), "-key", certs->Key("expired"), "-tls1_3", "-quiet"});
  auto client = Watch(Client(""), Role::kClient);
  // Connect (retrying while s_server starts).
  int fd = -1;
  for (int i = 0; i < 100 && fd < 0; ++i) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      close(fd);
      fd = -1;
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  ASSERT_GE(fd, 0) << "s_server did not start: " << s_server.err();
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  Outcome co;
  core::Notification cd;
  StartSide(fd, *client, Role::kClient, &co, &cd);
  ASSERT_TRUE(cd.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(absl::StrContains(co.status.message(), "the server's certificate has expired"))
      << co.status;

  // openssl s_client, with a client certificate, completes a handshake with
  // meshlib's server side and is identified.
  auto server = Watch(Server(), Role::kServer);
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  socklen_t len = sizeof sa;
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  getsockname(listener, reinterpret_cast<sockaddr*>(&sa), &len);
  meshlib::testing::Subprocess s_client(
      {"/bin/sh", "-c",
       absl::StrCat("echo hello-from-openssl | /usr/bin/openssl s_client -connect 127.0.0.1:",
                    ntohs(sa.sin_port), " -CAfile ", certs->ca(), " -cert ",
                    certs->Cert("client"), " -key ", certs->Key("client"),
                    " -verify_return_error -tls1_3 -quiet")});
  pollfd p{listener, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 10000), 1);
  int accepted = accept(listener, nullptr, nullptr);
  close(listener);
  fcntl(accepted, F_SETFL, fcntl(accepted, F_GETFL) | O_NONBLOCK);
  Outcome so;
  core::Notification sd;
  StartSide(accepted, *server, Role::kServer, &so, &sd);
  ASSERT_TRUE(sd.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(so.status.ok()) << so.status << "; s_client said: " << s_client.err();
  EXPECT_EQ(so.stream->peer_info().identity, "spiffe://mesh.test/client");
  absl::StatusOr<std::string> got = ReadN(*so.stream, 19);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "hello-from-openssl\n");
}

}  // namespace
}  // namespace meshlib::tls
