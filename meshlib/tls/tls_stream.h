// TLS under the framing: a handshake driven on a reactor, then a
// ByteStream that the framing layer reads and writes like TCP.
//
//   tls::Handshake::Start(loop, fd, "127.0.0.1:7001", watcher, tls::Role::kClient,
//       [](absl::StatusOr<std::unique_ptr<tls::TlsStream>> s) { ... });   // on `loop`
//
// The handshake runs to its end (or its timeout) before any frame is sent,
// so a connection only ever carries frames over an established, verified
// session: the framing layer needs no TLS states. After it (TLS 1.3) reads
// and writes never need the other direction, except to take session
// tickets and key updates, which SSL_read does by itself.
//
// Failures name their reason (tls_errors.h): untrusted or expired
// certificates, an identity not allowed, no client certificate, a peer
// that does not speak TLS, a timeout.
#ifndef MESHLIB_TLS_TLS_STREAM_H_
#define MESHLIB_TLS_TLS_STREAM_H_

#include <memory>
#include <mutex>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/tls/credentials.h"
#include "meshlib/transport/byte_stream.h"

namespace meshlib::tls {

// What the handshake established about the other side.
struct PeerInfo {
  std::string identity;  // its SPIFFE ID; "" when it showed no certificate or none with an ID
  std::string alpn;      // the protocol agreed on; "" when none
  bool resumed = false;  // an abbreviated handshake (a resumed session)
};

class TlsStream final : public transport::ByteStream {
 public:
  // An established session on `fd` (both owned from here on).
  TlsStream(int fd, std::string peer, SSL* ssl, std::shared_ptr<Credentials> credentials,
            PeerInfo info);
  ~TlsStream() override;

  int fd() const override { return fd_; }
  transport::IoResult Read(char* buf, size_t len) override;
  transport::IoResult Write(const iovec* iov, int iovcnt) override;
  size_t BufferedBytes() override;
  void Close() override;
  const std::string& peer() const override { return peer_; }

  const PeerInfo& peer_info() const { return info_; }

 private:
  transport::IoResult Fail(int ret, const char* what);

  int fd_;
  const std::string peer_;
  // An SSL may be used by one thread at a time; reads (the reactor) and
  // writes (any writer) take turns.
  std::mutex mu_;
  SSL* ssl_;  // guarded by mu_
  // The credentials the session was made with: they own the SSL_CTX the
  // SSL refers to, and the session cache.
  const std::shared_ptr<Credentials> credentials_;
  const PeerInfo info_;
};

class Handshake : public runtime::FdHandler, public std::enable_shared_from_this<Handshake> {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<std::unique_ptr<TlsStream>>)>;

  // Runs a handshake on the connected, non-blocking socket `fd` (owned from
  // here on) on `loop`, with the credentials current now. `done` runs on
  // the loop thread with the stream, or with UNAVAILABLE naming the reason
  // (the fd then closed). `address` ("host:port") names the peer in
  // messages and keys the client's session cache. Any thread. The returned
  // handle can cancel it (done then gets CANCELLED).
  // A client offers `alpn` over ALPN (default: meshlib's own protocol;
  // kAlpnH2 for gRPC); a server picks meshlib's protocol or h2, and
  // PeerInfo::alpn says which.
  static std::shared_ptr<Handshake> Start(runtime::EventLoop* loop, int fd, std::string address,
                                          const CredentialsWatcher& credentials, Role role,
                                          Done done, std::string alpn = "");
  ~Handshake() override;

  // Ends a handshake still running with `reason`. Any thread.
  void Cancel(absl::Status reason);

  void OnFdEvents(uint32_t events) override;

 private:
  Handshake(runtime::EventLoop* loop, int fd, std::string address,
            std::shared_ptr<Credentials> credentials, const TlsOptions& options, Role role,
            Done done, std::string alpn);
  void Begin();
  void Step();
  void Finish(absl::Status failure);  // loop thread; OK: success

  runtime::EventLoop* const loop_;
  int fd_;
  const std::string address_;
  const std::shared_ptr<Credentials> credentials_;
  const std::vector<std::string> identities_;
  const absl::Duration timeout_;
  const std::string server_name_;
  const Role role_;
  const std::string alpn_;
  Done done_;
  // Loop-thread state.
  SSL* ssl_ = nullptr;
  bool watched_ = false;
  bool finished_ = false;
  runtime::TimerId timer_;
  std::shared_ptr<Handshake> self_;  // alive while it runs
};

}  // namespace meshlib::tls

#endif  // MESHLIB_TLS_TLS_STREAM_H_
