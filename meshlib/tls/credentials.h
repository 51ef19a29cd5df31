// TLS credentials: what a side presents (certificate chain and key) and
// whom it trusts (a CA bundle), loaded from PEM files, checked before use,
// and reloaded when the files change.
//
//   tls::TlsOptions o;
//   o.ca_file = "ca.crt"; o.cert_file = "echo.crt"; o.key_file = "echo.key";
//   auto creds = tls::CredentialsWatcher::Start(o, tls::Role::kServer);
//   SSL_CTX* ctx = (*creds)->Current()->ctx();   // for the next handshake
//
// TLS 1.3 only. Identities are SPIFFE IDs (spiffe.h). A client verifies
// the server's chain against ca_file and, when `identities` is not empty,
// accepts only those SPIFFE IDs. A server with a ca_file requires a client
// certificate that chains to it; which client identities may call which
// method is the server's business (server/server.h).
#ifndef MESHLIB_TLS_CREDENTIALS_H_
#define MESHLIB_TLS_CREDENTIALS_H_

#include <sys/stat.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "meshlib/core/sync.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

namespace meshlib::tls {

// The ALPN protocol id of meshlib's own protocol.
inline constexpr char kAlpnMeshlib[] = "meshlib/1";
// HTTP/2, which gRPC runs on.
inline constexpr char kAlpnH2[] = "h2";

enum class Role { kClient, kServer };

struct TlsOptions {
  // PEM CA bundle. A client needs it (it verifies the server). On a
  // server it makes client certificates required and verified.
  std::string ca_file;
  // PEM certificate chain (leaf first) and its private key. A server needs
  // them; a client presents them when set (mutual TLS).
  std::string cert_file;
  std::string key_file;
  // Client: the name sent in SNI. Empty: none.
  std::string server_name;
  // Client: the SPIFFE IDs the server may present; empty: any certificate
  // the CA signed. Server: the client identities allowed to call at all;
  // empty: any the CA signed.
  std::vector<std::string> identities;
  // A handshake not done by then fails. Default 5s.
  absl::Duration handshake_timeout = absl::Seconds(5);
  // How often the files are checked for a change. Default 1s; zero: never.
  absl::Duration reload_interval = absl::Seconds(1);

  // INVALID_ARGUMENT naming the field: missing files for the role, a key
  // without a certificate, malformed identities, bad durations.
  absl::Status Validate(Role role) const;
};

// One loaded set of files, checked: the key matches the certificate, the
// certificate is within its validity and chains to ca_file (when both are
// set), and it follows the X509-SVID rules when it carries a SPIFFE ID.
// Handshakes started with it keep it (their SSL holds the context) even
// after a newer one replaces it.
class Credentials {
 public:
  static absl::StatusOr<std::shared_ptr<Credentials>> Load(const TlsOptions& options, Role role);
  ~Credentials();
  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;

  SSL_CTX* ctx() const { return ctx_; }
  Role role() const { return role_; }
  // This side's SPIFFE ID; "" without a certificate, or when it carries none.
  const std::string& identity() const { return identity_; }
  // The leaf's validity; InfinitePast/InfiniteFuture without a certificate.
  absl::Time not_before() const { return not_before_; }
  absl::Time not_after() const { return not_after_; }
  // SHA-256 of the leaf (hex), to tell versions apart; "" without one.
  const std::string& fingerprint() const { return fingerprint_; }

  // Client session resumption: the last session a server at `address`
  // gave, and storing the one it gives now.
  SSL_SESSION* TakeSession(const std::string& address);  // caller frees; null: none
  void StoreSession(const std::string& address, SSL_SESSION* session);  // takes it

 private:
  Credentials(SSL_CTX* ctx, Role role) : ctx_(ctx), role_(role) {}

  SSL_CTX* const ctx_;
  const Role role_;
  std::string identity_;
  absl::Time not_before_ = absl::InfinitePast();
  absl::Time not_after_ = absl::InfiniteFuture();
  std::string fingerprint_;
  std::mutex sessions_mu_;
  std::map<std::string, SSL_SESSION*> sessions_;  // guarded by sessions_mu_
};

// Files a client SSL's new sessions under `address` in its Credentials'
// cache (for resumption on the next connection there). `address` must
// outlive the SSL's use, or be set again.
void SetSessionAddress(SSL* ssl, const std::string* address);

// What a watcher has done, for Describe() and metrics.
struct CredentialsStats {
  int64_t reloads = 0;        // new versions taken into use
  int64_t reload_errors = 0;  // changed files that failed the checks (old kept)
  absl::Status last_error;    // the latest such failure
  absl::Time not_after;       // the current certificate's expiry
  std::string identity;
  std::string fingerprint;
};

// The current Credentials for a set of files, reloaded when they change:
// in place, or through an atomic rename or a symlink swap (as Kubernetes
// updates mounted secrets). A new version is checked first; a broken one is
// reported (logged, and in stats()) and the old one stays.
class CredentialsWatcher {
 public:
  // Loads the files (an error is returned as Credentials::Load gives it)
  // and, with a reload_interval, watches them on a thread of its own.
  static absl::StatusOr<std::shared_ptr<CredentialsWatcher>> Start(TlsOptions options, Role role);
  ~CredentialsWatcher();
  CredentialsWatcher(const CredentialsWatcher&) = delete;
  CredentialsWatcher& operator=(const CredentialsWatcher&) = delete;

  // The credentials new handshakes use. Thread-safe.
  std::shared_ptr<Credentials> Current() const;
  const TlsOptions& options() const { return options_; }
  Role role() const { return role_; }
  CredentialsStats stats() const;
  // Checks the files now (what the watcher thread does on each tick).
  // Returns true when a new version was taken into use.
  bool CheckNow();
  // One line: identity, fingerprint, expiry, reloads, last error.
  std::string Describe() const;

 private:
  struct FileState {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = -1;
    struct timespec mtime = {0, 0};
    bool exists = false;
    bool operator==(const FileState& o) const;
  };
  CredentialsWatcher(TlsOptions options, Role role, std::shared_ptr<Credentials> first);
  std::vector<FileState> Observe() const;
  std::string DescribeLocked() const;
  void Run();

  const TlsOptions options_;
  const Role role_;
  mutable std::mutex mu_;
  std::shared_ptr<Credentials> current_;  // guarded by mu_
  std::vector<FileState> seen_;           // guarded by mu_
  CredentialsStats stats_;                // guarded by mu_
  core::Notification stop_;
  std::thread thread_;
};

}  // namespace meshlib::tls

#endif  // MESHLIB_TLS_CREDENTIALS_H_
