// ByteStream: the ordered, reliable byte pipe that frames travel on.
//
// The framing layer (FramedConnection) reads and writes through this
// interface only, so a TLS stream can slot in under it without touching the
// protocol. TcpStream is the plain implementation.
//
//   std::unique_ptr<ByteStream> s = std::make_unique<TcpStream>(fd, "127.0.0.1:7001");
//   IoResult r = s->Read(buf, sizeof(buf));
//   if (r.kind == IoResult::kWouldBlock) { /* wait for EPOLLIN on s->fd() */ }
//
// Threading: Read is called from one thread (the connection's reactor) and
// Write from any one thread at a time (writers serialise on a mutex), so Read
// and Write can run concurrently. An implementation whose state cannot allow
// that (TLS) must serialise internally.
#ifndef MESHLIB_TRANSPORT_BYTE_STREAM_H_
#define MESHLIB_TRANSPORT_BYTE_STREAM_H_

#include <sys/uio.h>

#include <cstddef>
#include <string>

#include "absl/status/status.h"

namespace meshlib::transport {

struct IoResult {
  enum Kind { kOk, kWouldBlock, kEof, kError };
  Kind kind = kOk;
  size_t bytes = 0;     // with kOk: bytes moved (> 0)
  absl::Status error;   // with kError: what went wrong, naming the peer
};

class ByteStream {
 public:
  virtual ~ByteStream() = default;

  // The descriptor whose readiness the reactor watches.
  virtual int fd() const = 0;

  virtual IoResult Read(char* buf, size_t len) = 0;
  // May write only part of the data (kOk with bytes < total).
  virtual IoResult Write(const iovec* iov, int iovcnt) = 0;

  // True when the stream needs the fd writable before it can make progress on
  // reads (a TLS handshake or renegotiation). Plain TCP never does.
  virtual bool WantsWritable() const { return false; }

  // Bytes the stream has taken off the socket and not handed out yet (a
  // TLS record's rest): the fd will not signal them, so a reader must not
  // wait for it while this is non-zero. Plain TCP has none.
  virtual size_t BufferedBytes() { return 0; }

  // Closes both directions. Idempotent.
  virtual void Close() = 0;

  // "host:port" of the other side, for messages.
  virtual const std::string& peer() const = 0;
};

class TcpStream final : public ByteStream {
 public:
  // Takes ownership of a connected, non-blocking socket.
  TcpStream(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}
  ~TcpStream() override { Close(); }

  int fd() const override { return fd_; }
  IoResult Read(char* buf, size_t len) override;
  IoResult Write(const iovec* iov, int iovcnt) override;
  void Close() override;
  const std::string& peer() const override { return peer_; }

 private:
  int fd_;
  const std::string peer_;
};

}  // namespace meshlib::transport

#endif  // MESHLIB_TRANSPORT_BYTE_STREAM_H_
