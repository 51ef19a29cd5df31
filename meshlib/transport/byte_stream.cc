#include "meshlib/transport/byte_stream.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace meshlib::transport {

IoResult TcpStream::Read(char* buf, size_t len) {
  for (;;) {
    ssize_t n = ::read(fd_, buf, len);
    if (n > 0) return IoResult{IoResult::kOk, static_cast<size_t>(n), {}};
    if (n == 0) return IoResult{IoResult::kEof, 0, {}};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IoResult{IoResult::kWouldBlock, 0, {}};
    return IoResult{IoResult::kError, 0,
                    absl::UnavailableError(absl::StrCat("read from ", peer_, ": ", strerror(errno)))};
  }
}

IoResult TcpStream::Write(const iovec* iov, int iovcnt) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<size_t>(iovcnt);
  for (;;) {
    ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (n >= 0) {
      if (n == 0) return IoResult{IoResult::kWouldBlock, 0, {}};
      return IoResult{IoResult::kOk, static_cast<size_t>(n), {}};
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IoResult{IoResult::kWouldBlock, 0, {}};
    return IoResult{IoResult::kError, 0,
                    absl::UnavailableError(absl::StrCat("write to ", peer_, ": ", strerror(errno)))};
  }
}

void TcpStream::Close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace meshlib::transport
