#include "meshlib/tls/credentials.h"

#include <openssl/base.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/core/log.h"
#include "meshlib/tls/spiffe.h"
#include "meshlib/tls/tls_errors.h"

#ifndef OPENSSL_IS_BORINGSSL
#error "meshlib's TLS is built on BoringSSL (android-libboringssl-dev)"
#endif

namespace meshlib::tls {

namespace {

// ASN1_TIME as absl::Time, through its distance from now.
absl::Time ToTime(const ASN1_TIME* t) {
  int days = 0, seconds = 0;
  if (t == nullptr || !ASN1_TIME_diff(&days, &seconds, nullptr, t)) return absl::InfinitePast();
  return absl::Now() + absl::Hours(24) * days + absl::Seconds(seconds);
}

// The server's ALPN choice: meshlib's protocol when the client offers it,
// else HTTP/2 (a gRPC client; the server tells the two apart by the
// agreed protocol); otherwise none (an outside TLS client may still talk
// to the port).
bool Offered(const uint8_t* in, unsigned in_len, const char* want, const uint8_t** out,
             uint8_t* out_len) {
  const size_t n = std::strlen(want);
  for (unsigned i = 0; i < in_len;) {
    const unsigned len = in[i];
    if (i + 1 + len > in_len) break;
    if (len == n && std::memcmp(in + i + 1, want, n) == 0) {
      *out = in + i + 1;
      *out_len = static_cast<uint8_t>(len);
      return true;
    }
    i += 1 + len;
  }
  return false;
}

int SelectAlpn(SSL*, const uint8_t** out, uint8_t* out_len, const uint8_t* in, unsigned in_len,
               void*) {
  if (Offered(in, in_len, kAlpnMeshlib, out, out_len) ||
      Offered(in, in_len, kAlpnH2, out, out_len)) {
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

int CtxIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int AddressIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// A client's new session (TLS 1.3 sends them after the handshake): kept for
// the next connection to the same address.
int OnNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* creds = static_cast<Credentials*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), CtxIndex()));
  auto* address = static_cast<const std::string*>(SSL_get_ex_data(ssl, AddressIndex()));
  if (creds == nullptr || address == nullptr) return 0;
  creds->StoreSession(*address, session);
  return 1;  // ownership taken
}

}  // namespace

void SetSessionAddress(SSL* ssl, const std::string* address) {
  SSL_set_ex_data(ssl, AddressIndex(), const_cast<std::string*>(address));
}

absl::Status TlsOptions::Validate(Role role) const {
  if (role == Role::kClient && ca_file.empty()) {
    return absl::InvalidArgumentError(
        "tls.ca_file: a client needs the CA bundle its servers' certificates chain to");
  }
  if (role == Role::kServer && cert_file.empty()) {
    return absl::InvalidArgumentError("tls.cert_file: a server needs its certificate");
  }
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(cert_file.empty()
                                          ? "tls.cert_file: needed with key_file"
                                          : "tls.key_file: needed with cert_file");
  }
  for (size_t i = 0; i < identities.size(); ++i) {
    if (absl::Status s = ValidateSpiffeId(identities[i]); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("tls.identities[", i, "]: ", s.message()));
    }
  }
  if (handshake_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("tls.handshake_timeout: must be > 0");
  }
  if (reload_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("tls.reload_interval: must be >= 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Credentials>> Credentials::Load(const TlsOptions& options,
                                                              Role role) {
  if (absl::Status s = options.Validate(role); !s.ok()) return s;
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) return absl::ResourceExhaustedError("SSL_CTX_new failed");
  std::shared_ptr<Credentials> c(new Credentials(ctx, role));
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  // FramedConnection retries a write from a buffer that may have moved
  // (grown) and may have more in it.
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);

  X509* leaf = nullptr;
  if (!options.cert_file.empty()) {
    if (!SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str())) {
      return absl::InvalidArgumentError(absl::StrCat("tls.cert_file: cannot load ",
                                                     options.cert_file, ": ", TakeErrors()));
    }
    if (!SSL_CTX_use_PrivateKey_file(ctx, options.key_file.c_str(), SSL_FILETYPE_PEM)) {
      const std::string errors = TakeErrors();
      if (absl::StrContains(errors, "KEY_VALUES_MISMATCH")) {
        return absl::InvalidArgumentError(absl::StrCat("tls.key_file: ", options.key_file,
                                                       " is not the key of the certificate in ",
                                                       options.cert_file));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("tls.key_file: cannot load ", options.key_file, ": ", errors));
    }
    if (!SSL_CTX_check_private_key(ctx)) {
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat("tls.key_file: ", options.key_file,
                                                     " is not the key of the certificate in ",
                                                     options.cert_file));
    }
    leaf = SSL_CTX_get0_certificate(ctx);
    c->not_before_ = ToTime(X509_get0_notBefore(leaf));
    c->not_after_ = ToTime(X509_get0_notAfter(leaf));
    const absl::Time now = absl::Now();
    if (now < c->not_before_) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls.cert_file: the certificate in ", options.cert_file,
                       " is not valid before ", absl::FormatTime(c->not_before_)));
    }
    if (now > c->not_after_) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls.cert_file: the certificate in ", options.cert_file, " expired at ",
                       absl::FormatTime(c->not_after_)));
    }
    absl::StatusOr<std::string> id = SpiffeIdOf(leaf);
    if (id.ok()) {
      c->identity_ = *std::move(id);
    } else if (id.status().code() != absl::StatusCode::kUnauthenticated) {
      // It carries a SPIFFE ID, but breaks the X509-SVID rules.
      return absl::InvalidArgumentError(
          absl::StrCat("tls.cert_file: ", options.cert_file, ": ", id.status().message()));
    }
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    if (X509_digest(leaf, EVP_sha256(), md, &md_len)) {
      c->fingerprint_ = absl::BytesToHexString(
          absl::string_view(reinterpret_cast<const char*>(md), md_len));
    }
  }
  if (!options.ca_file.empty()) {
    if (!SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat("tls.ca_file: cannot load ",
                                                     options.ca_file, ": ", TakeErrors()));
    }
    if (leaf != nullptr) {
      // This side's own chain must verify against the bundle it trusts.
      STACK_OF(X509)* chain = nullptr;
      SSL_CTX_get0_chain_certs(ctx, &chain);
      X509_STORE_CTX* sctx = X509_STORE_CTX_new();
      bool ok = sctx != nullptr && X509_STORE_CTX_init(sctx, SSL_CTX_get_cert_store(ctx), leaf,
                                                       chain) &&
                X509_verify_cert(sctx) == 1;
      const int err = sctx != nullptr ? X509_STORE_CTX_get_error(sctx) : 0;
      X509_STORE_CTX_free(sctx);
      ERR_clear_error();
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tls.cert_file: the certificate in ", options.cert_file,
            " does not verify against tls.ca_file ", options.ca_file, ": ",
            X509_verify_cert_error_string(err)));
      }
    }
    SSL_CTX_set_verify(ctx,
                       role == Role::kClient ? SSL_VERIFY_PEER
                                             : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (role == Role::kClient) {
    std::string protos;
    protos.push_back(static_cast<char>(std::strlen(kAlpnMeshlib)));
    protos += kAlpnMeshlib;
    // Returns zero on success (unlike most of the API).
    SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const uint8_t*>(protos.data()), protos.size());
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_set_ex_data(ctx, CtxIndex(), c.get());
    SSL_CTX_sess_set_new_cb(ctx, OnNewSession);
  } else {
    SSL_CTX_set_alpn_select_cb(ctx, SelectAlpn, nullptr);
  }
  return c;
}

Credentials::~Credentials() {
  for (auto& [address, session] : sessions_) SSL_SESSION_free(session);
  SSL_CTX_free(ctx_);
}

SSL_SESSION* Credentials::TakeSession(const std::string& address) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  auto it = sessions_.find(address);
  if (it == sessions_.end()) return nullptr;
  SSL_SESSION* s = it->second;
  sessions_.erase(it);
  return s;
}

void Credentials::StoreSession(const std::string& address, SSL_SESSION* session) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  SSL_SESSION*& slot = sessions_[address];
  if (slot != nullptr) SSL_SESSION_free(slot);
  slot = session;
  // A client talks to a bounded set of endpoints; forget the oldest
  // addresses if it ever grows past that.
  if (sessions_.size() > 4096) {
    auto victim = sessions_.begin();
    if (victim->first == address) ++victim;
    SSL_SESSION_free(victim->second);
    sessions_.erase(victim);
  }
}

// --- CredentialsWatcher ---

bool CredentialsWatcher::FileState::operator==(const FileState& o) const {
  return exists == o.exists && dev == o.dev && ino == o.ino && size == o.size &&
         mtime.tv_sec == o.mtime.tv_sec && mtime.tv_nsec == o.mtime.tv_nsec;
}

absl::StatusOr<std::shared_ptr<CredentialsWatcher>> CredentialsWatcher::Start(TlsOptions options,
                                                                              Role role) {
  if (absl::Status s = options.Validate(role); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<Credentials>> first = Credentials::Load(options, role);
  if (!first.ok()) return first.status();
  std::shared_ptr<CredentialsWatcher> w(
      new CredentialsWatcher(std::move(options), role, *std::move(first)));
  {
    std::lock_guard<std::mutex> lock(w->mu_);
    w->seen_ = w->Observe();
  }
  if (w->options_.reload_interval > absl::ZeroDuration()) {
    w->thread_ = std::thread([raw = w.get()] { raw->Run(); });
  }
  return w;
}

CredentialsWatcher::CredentialsWatcher(TlsOptions options, Role role,
                                       std::shared_ptr<Credentials> first)
    : options_(std::move(options)), role_(role), current_(std::move(first)) {
  stats_.not_after = current_->not_after();
  stats_.identity = current_->identity();
  stats_.fingerprint = current_->fingerprint();
}

CredentialsWatcher::~CredentialsWatcher() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<Credentials> CredentialsWatcher::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

CredentialsStats CredentialsWatcher::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::vector<CredentialsWatcher::FileState> CredentialsWatcher::Observe() const {
  std::vector<FileState> out;
  for (const std::string* path : {&options_.cert_file, &options_.key_file, &options_.ca_file}) {
    FileState f;
    struct stat st;
    // stat follows symlinks: a swapped link shows as another inode.
    if (!path->empty() && stat(path->c_str(), &st) == 0) {
      f.exists = true;
      f.dev = st.st_dev;
      f.ino = st.st_ino;
      f.size = st.st_size;
      f.mtime = st.st_mtim;
    }
    out.push_back(f);
  }
  return out;
}

bool CredentialsWatcher::CheckNow() {
  std::vector<FileState> now = Observe();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (now == seen_) return false;
  }
  absl::StatusOr<std::shared_ptr<Credentials>> next = Credentials::Load(options_, role_);
  std::lock_guard<std::mutex> lock(mu_);
  seen_ = std::move(now);
  if (!next.ok()) {
    ++stats_.reload_errors;
    stats_.last_error = next.status();
    core::Log(core::LogLevel::kError,
              absl::StrCat("TLS credentials (", options_.cert_file.empty() ? options_.ca_file
                                                                           : options_.cert_file,
                           ") changed but cannot be used; keeping the previous ones: ",
                           next.status().message()));
    return false;
  }
  current_ = *std::move(next);
  ++stats_.reloads;
  stats_.not_after = current_->not_after();
  stats_.identity = current_->identity();
  stats_.fingerprint = current_->fingerprint();
  core::Log(core::LogLevel::kInfo, absl::StrCat("TLS credentials reloaded: ", DescribeLocked()));
  return true;
}

std::string CredentialsWatcher::Describe() const {
  std::lock_guard<std::mutex> lock(mu_);
  return DescribeLocked();
}

std::string CredentialsWatcher::DescribeLocked() const {
  const CredentialsStats& s = stats_;
  std::string out = absl::StrCat(
      "TLS 1.3, ", s.identity.empty() ? "no SPIFFE ID" : s.identity,
      s.fingerprint.empty() ? "" : absl::StrCat(", certificate sha256 ", s.fingerprint.substr(0, 16)),
      s.not_after == absl::InfiniteFuture()
          ? ""
          : absl::StrCat(", expires ", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", s.not_after,
                                                       absl::UTCTimeZone())),
      options_.identities.empty()
          ? ""
          : absl::StrCat(", peers allowed: ", absl::StrJoin(options_.identities, " ")),
      ", reloads ", s.reloads);
  if (s.reload_errors > 0) {
    absl::StrAppend(&out, ", reload errors ", s.reload_errors, " (last: ", s.last_error.message(),
                    ")");
  }
  return out;
}

void CredentialsWatcher::Run() {
  while (!stop_.WaitForNotificationWithTimeout(options_.reload_interval)) CheckNow();
}

}  // namespace meshlib::tls
