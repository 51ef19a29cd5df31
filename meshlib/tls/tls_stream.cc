#include "meshlib/tls/tls_stream.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/tls/spiffe.h"
#include "meshlib/tls/tls_errors.h"

#ifndef OPENSSL_IS_BORINGSSL
#error "meshlib's TLS is built on BoringSSL (android-libboringssl-dev)"
#endif

namespace meshlib::tls {

using transport::IoResult;

namespace {

// A BIO over a socket that never raises SIGPIPE (send with MSG_NOSIGNAL),
// as every meshlib socket write: a library must not make its host ignore
// the signal. The descriptor is the BIO's data; the BIO does not own it.
int SocketOf(BIO* bio) { return static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(bio))); }

int BioWrite(BIO* bio, const char* buf, int len) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = send(SocketOf(bio), buf, static_cast<size_t>(len), MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    BIO_set_retry_write(bio);
  }
  return static_cast<int>(n);
}

int BioRead(BIO* bio, char* buf, int len) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = recv(SocketOf(bio), buf, static_cast<size_t>(len), 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    BIO_set_retry_read(bio);
  }
  return static_cast<int>(n);
}

long BioCtrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

const BIO_METHOD* SocketMethod() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index(), "meshlib socket");
    BIO_meth_set_write(m, BioWrite);
    BIO_meth_set_read(m, BioRead);
    BIO_meth_set_ctrl(m, BioCtrl);
    return m;
  }();
  return method;
}

// Attaches `fd` to `ssl` through the BIO above. False on allocation failure.
bool AttachSocket(SSL* ssl, int fd) {
  BIO* bio = BIO_new(SocketMethod());
  if (bio == nullptr) return false;
  BIO_set_data(bio, reinterpret_cast<void*>(static_cast<intptr_t>(fd)));
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl, bio, bio);  // one reference, taken by the SSL
  return true;
}

}  // namespace

// --- TlsStream ---

TlsStream::TlsStream(int fd, std::string peer, SSL* ssl,
                     std::shared_ptr<Credentials> credentials, PeerInfo info)
    : fd_(fd),
      peer_(std::move(peer)),
      ssl_(ssl),
      credentials_(std::move(credentials)),
      info_(std::move(info)) {
  SetSessionAddress(ssl_, &peer_);
}

TlsStream::~TlsStream() {
  Close();
  std::lock_guard<std::mutex> lock(mu_);
  SSL_free(ssl_);
  ssl_ = nullptr;
}

IoResult TlsStream::Fail(int ret, const char* what) {
  const int err = SSL_get_error(ssl_, ret);
  IoResult r;
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    r.kind = IoResult::kWouldBlock;
    return r;
  }
  if (err == SSL_ERROR_ZERO_RETURN) {  // close_notify
    r.kind = IoResult::kEof;
    return r;
  }
  if (err == SSL_ERROR_SYSCALL && (errno == 0 || errno == ECONNRESET || errno == EPIPE)) {
    ERR_clear_error();
    r.kind = IoResult::kEof;  // the peer went without close_notify
    return r;
  }
  r.kind = IoResult::kError;
  r.error = absl::UnavailableError(absl::StrCat("TLS ", what, " with ", peer_, ": ",
                                                DescribeFailure(ssl_, err, /*client=*/true)));
  return r;
}

IoResult TlsStream::Read(char* buf, size_t len) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return {IoResult::kEof, 0, {}};
  // SSL_read gives one record at a time, and records already taken off the
  // socket no longer wake the reactor: read until the buffer is full or
  // the socket has nothing more, as a TCP read would. (The framing reads
  // again only when the buffer came back full.)
  size_t got = 0;
  while (got < len) {
    ERR_clear_error();
    const int n = SSL_read(ssl_, buf + got, static_cast<int>(std::min<size_t>(len - got, 1 << 30)));
    if (n > 0) {
      got += static_cast<size_t>(n);
      continue;
    }
    if (got > 0) {
      // What is read goes up now; an error or EOF shows on the next read.
      ERR_clear_error();
      break;
    }
    return Fail(n, "read");
  }
  return {IoResult::kOk, got, {}};
}

IoResult TlsStream::Write(const iovec* iov, int iovcnt) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) {
    return {IoResult::kError, 0, absl::UnavailableError(absl::StrCat("TLS to ", peer_, " closed"))};
  }
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) {
    size_t off = 0;
    while (off < iov[i].iov_len) {
      ERR_clear_error();
      const size_t chunk = std::min<size_t>(iov[i].iov_len - off, 1 << 30);
      const int n = SSL_write(ssl_, static_cast<const char*>(iov[i].iov_base) + off,
                              static_cast<int>(chunk));
      if (n > 0) {
        off += static_cast<size_t>(n);
        total += static_cast<size_t>(n);
        continue;
      }
      if (total > 0) return {IoResult::kOk, total, {}};
      return Fail(n, "write");
    }
  }
  return {IoResult::kOk, total, {}};
}

size_t TlsStream::BufferedBytes() {
  std::lock_guard<std::mutex> lock(mu_);
  return fd_ < 0 ? 0 : static_cast<size_t>(SSL_pending(ssl_));
}

void TlsStream::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return;
  // Best effort, never blocking: a close_notify if the socket takes it.
  SSL_shutdown(ssl_);
  ERR_clear_error();
  close(fd_);
  fd_ = -1;
}

// --- Handshake ---

std::shared_ptr<Handshake> Handshake::Start(runtime::EventLoop* loop, int fd, std::string address,
                                            const CredentialsWatcher& credentials, Role role,
                                            Done done, std::string alpn) {
  std::shared_ptr<Handshake> h(new Handshake(loop, fd, std::move(address), credentials.Current(),
                                             credentials.options(), role, std::move(done),
                                             std::move(alpn)));
  h->self_ = h;
  loop->Post([h] { h->Begin(); });
  return h;
}

Handshake::Handshake(runtime::EventLoop* loop, int fd, std::string address,
                     std::shared_ptr<Credentials> credentials, const TlsOptions& options,
                     Role role, Done done, std::string alpn)
    : loop_(loop),
      fd_(fd),
      address_(std::move(address)),
      credentials_(std::move(credentials)),
      identities_(options.identities),
      timeout_(options.handshake_timeout),
      server_name_(options.server_name),
      role_(role),
      alpn_(std::move(alpn)),
      done_(std::move(done)) {}

Handshake::~Handshake() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (fd_ >= 0) close(fd_);
}

void Handshake::Begin() {
  if (finished_) return;
  ssl_ = SSL_new(credentials_->ctx());
  if (ssl_ == nullptr || !AttachSocket(ssl_, fd_)) {
    Finish(absl::ResourceExhaustedError(absl::StrCat("TLS with ", address_, ": ", TakeErrors())));
    return;
  }
  if (role_ == Role::kClient) {
    SSL_set_connect_state(ssl_);
    SetSessionAddress(ssl_, &address_);
    if (SSL_SESSION* s = credentials_->TakeSession(address_)) {
      SSL_set_session(ssl_, s);
      SSL_SESSION_free(s);  // the SSL holds its own reference
    }
    if (!server_name_.empty()) SSL_set_tlsext_host_name(ssl_, server_name_.c_str());
    if (!alpn_.empty()) {
      std::string protos(1, static_cast<char>(alpn_.size()));
      protos += alpn_;
      SSL_set_alpn_protos(ssl_, reinterpret_cast<const uint8_t*>(protos.data()), protos.size());
    }
  } else {
    SSL_set_accept_state(ssl_);
  }
  std::weak_ptr<Handshake> weak = shared_from_this();
  timer_ = loop_->RunAfter(timeout_, [weak] {
    if (auto self = weak.lock()) {
      self->Finish(absl::UnavailableError(
          absl::StrCat("TLS handshake with ", self->address_, " did not finish within ",
                       absl::FormatDuration(self->timeout_))));
    }
  });
  Step();
}

void Handshake::OnFdEvents(uint32_t) { Step(); }

void Handshake::Step() {
  if (finished_) return;
  ERR_clear_error();
  const int ret = SSL_do_handshake(ssl_);
  if (ret == 1) {
    Finish(absl::OkStatus());
    return;
  }
  const int err = SSL_get_error(ssl_, ret);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    const uint32_t events = err == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
    absl::Status s = watched_ ? loop_->Rewatch(fd_, events) : loop_->Watch(fd_, events, this);
    if (!s.ok()) {
      Finish(absl::UnavailableError(absl::StrCat("TLS with ", address_, ": ", s.message())));
      return;
    }
    watched_ = true;
    return;
  }
  Finish(absl::UnavailableError(absl::StrCat("TLS handshake with ", address_, " failed: ",
                                             DescribeFailure(ssl_, err, role_ == Role::kClient))));
}

void Handshake::Cancel(absl::Status reason) {
  std::weak_ptr<Handshake> weak = shared_from_this();
  loop_->Post([weak, reason = std::move(reason)]() mutable {
    if (auto self = weak.lock()) self->Finish(std::move(reason));
  });
}

void Handshake::Finish(absl::Status failure) {
  if (finished_) return;
  finished_ = true;
  loop_->Cancel(timer_);
  if (watched_) {
    loop_->Unwatch(fd_);
    watched_ = false;
  }
  auto keep = std::move(self_);
  Done done = std::move(done_);
  PeerInfo info;
  if (failure.ok()) {
    X509* leaf = SSL_get_peer_certificate(ssl_);
    absl::StatusOr<std::string> id = SpiffeIdOf(leaf);
    X509_free(leaf);
    if (id.ok()) info.identity = *id;
    if (role_ == Role::kClient && !identities_.empty()) {
      // Only the identities the service lists may answer for it.
      if (!id.ok()) {
        failure = absl::UnavailableError(absl::StrCat(
            "TLS handshake with ", address_, " failed: the server's certificate is not an "
            "acceptable SPIFFE identity: ", id.status().message()));
      } else if (std::find(identities_.begin(), identities_.end(), *id) == identities_.end()) {
        failure = absl::UnavailableError(absl::StrCat(
            "TLS handshake with ", address_, " failed: the server presented ", *id,
            ", not an identity allowed for this service (", absl::StrJoin(identities_, ", "),
            ")"));
      }
    }
    const uint8_t* alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
    info.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
    info.resumed = SSL_session_reused(ssl_) == 1;
  }
  if (!failure.ok()) {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    if (fd_ >= 0) {
      close(fd_);
      fd_ = -1;
    }
    done(std::move(failure));
    return;
  }
  auto stream = std::make_unique<TlsStream>(fd_, address_, ssl_, credentials_, std::move(info));
  ssl_ = nullptr;
  fd_ = -1;
  done(std::move(stream));
}

}  // namespace meshlib::tls
