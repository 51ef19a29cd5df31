// Raw TCP echo server: the lower bound the RPC systems are measured against.
//
//   raw_echo_server --port=0 --threads=1
//   listening on 127.0.0.1:41234
//
// Protocol: each message is a 4-byte big-endian length followed by that many
// payload bytes; the server sends every message back unchanged. It does the
// least work any RPC server must do (read, find message boundaries, write) and
// nothing else, so the gap between it and an RPC system is that system's
// overhead.
//
// Threads: the main thread accepts and hands each connection to one of
// `--threads` workers, round-robin, so connections spread evenly (SO_REUSEPORT
// hashing can put all four benchmark connections on one thread). Each worker
// owns its connections and its epoll set; nothing on the data path is shared.
// SIGTERM or SIGINT stops everything and the process exits 0.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

ABSL_FLAG(std::string, host, "127.0.0.1", "IPv4 address to listen on.");
ABSL_FLAG(int, port, 0, "TCP port; 0 picks a free one (printed on stdout).");
ABSL_FLAG(int, threads, 1, "Worker threads serving connections (>= 1).");
ABSL_FLAG(int, busy_poll_us, 0,
          "After handling events, keep polling (yielding between polls) for this many "
          "microseconds before sleeping in epoll_wait, as meshlib's reactors do with "
          "busy_poll (0 = off).");

namespace meshlib::bench {
namespace {

// A peer announcing more than this is broken or hostile; drop it rather than
// buffer without bound.
constexpr uint32_t kMaxMessageSize = 16u << 20;
// Stop reading from a peer that does not read its replies once this much is
// queued for it; resume when the queue drains.
constexpr size_t kMaxPendingOutput = 4u << 20;
constexpr size_t kReadChunk = 64 * 1024;

[[noreturn]] void DieErrno(const char* what) {
  std::fprintf(stderr, "raw_echo_server: %s: %s\n", what, strerror(errno));
  std::exit(1);
}

uint32_t LoadBigEndian32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) |
         (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

// Length of the longest prefix of `data` made of whole messages, or -1 when a
// message header is over kMaxMessageSize.
int64_t CompleteMessagesPrefix(const char* data, size_t size) {
  size_t pos = 0;
  while (size - pos >= 4) {
    const uint32_t length = LoadBigEndian32(data + pos);
    if (length > kMaxMessageSize) return -1;
    if (size - pos - 4 < length) break;
    pos += 4 + length;
  }
  return static_cast<int64_t>(pos);
}

struct Connection {
  int fd = -1;
  std::string input;   // bytes of a message not yet complete
  std::string output;  // replies the socket did not take yet
  uint32_t events = 0; // epoll interest currently registered
};

class Worker {
 public:
  Worker() {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd_ < 0 || wake_fd_ < 0) DieErrno("epoll/eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // null marks the wake-up eventfd
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
      DieErrno("epoll_ctl(eventfd)");
    }
  }

  ~Worker() {
    for (auto& [fd, conn] : connections_) close(fd);
    absl::MutexLock lock(&mu_);
    for (int fd : adopted_) close(fd);  // handed over after the stop
    close(wake_fd_);
    close(epoll_fd_);
  }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }

  // Called from the acceptor thread; the worker takes ownership of `fd`.
  void Adopt(int fd) {
    {
      absl::MutexLock lock(&mu_);
      adopted_.push_back(fd);
    }
    Wake();
  }

  void StopAndJoin() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    Wake();
    thread_.join();
  }

 private:
  void Wake() {
    const uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: a wake-up is pending.
    (void)!write(wake_fd_, &one, sizeof(one));
  }

  void Run() {
    std::vector<epoll_event> events(256);
    const int64_t busy_poll_ns = int64_t{absl::GetFlag(FLAGS_busy_poll_us)} * 1000;
    int64_t last_work_ns = 0;
    for (;;) {
      int timeout_ms = -1;
      if (busy_poll_ns > 0 && absl::GetCurrentTimeNanos() - last_work_ns < busy_poll_ns) {
        sched_yield();
        timeout_ms = 0;
      }
      const int n = epoll_wait(epoll_fd_, events.data(),
                               static_cast<int>(events.size()), timeout_ms);
      if (n > 0 && busy_poll_ns > 0) last_work_ns = absl::GetCurrentTimeNanos();
      if (n < 0) {
        if (errno == EINTR) continue;
        DieErrno("epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        auto* conn = static_cast<Connection*>(events[i].data.ptr);
        if (conn == nullptr) {
          if (!TakeAdopted()) return;
          continue;
        }
        HandleEvents(conn, events[i].events);
      }
    }
  }

  // Registers connections handed over by the acceptor; false once stopping.
  bool TakeAdopted() {
    uint64_t count;
    (void)!read(wake_fd_, &count, sizeof(count));
    std::vector<int> fds;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return false;
      fds.swap(adopted_);
    }
    for (int fd : fds) {
      auto conn = std::make_unique<Connection>();
      conn->fd = fd;
      conn->events = EPOLLIN;
      epoll_event ev{};
      ev.events = conn->events;
      ev.data.ptr = conn.get();
      if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        DieErrno("epoll_ctl(add)");
      }
      connections_.emplace(fd, std::move(conn));
    }
    return true;
  }

  void HandleEvents(Connection* conn, uint32_t events) {
    if (events & EPOLLOUT) {
      if (!Flush(conn)) return Close(conn);
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
      if (!ReadAndEcho(conn)) return Close(conn);
    }
    UpdateInterest(conn);
  }

  // Reads what the socket holds and queues the replies for all complete
  // messages in one write. False when the connection should be closed.
  bool ReadAndEcho(Connection* conn) {
    for (;;) {
      const ssize_t n = read(conn->fd, read_buffer_, kReadChunk);
      if (n == 0) return false;
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return false;
      }
      // An echo reply is byte-for-byte the request, so the reply to a run of
      // whole messages is that run itself: find where it ends and copy it
      // once. Requests that arrive whole (the common case) never touch
      // `input`.
      const bool buffered = !conn->input.empty();
      const char* data = read_buffer_;
      size_t size = static_cast<size_t>(n);
      if (buffered) {
        conn->input.append(read_buffer_, size);
        data = conn->input.data();
        size = conn->input.size();
      }
      const int64_t complete = CompleteMessagesPrefix(data, size);
      if (complete < 0) return false;
      conn->output.append(data, static_cast<size_t>(complete));
      if (buffered) {
        conn->input.erase(0, static_cast<size_t>(complete));
      } else {
        conn->input.assign(data + complete, size - complete);
      }
      // A short read means the socket is drained for now, and level-triggered
      // epoll reports anything that arrives later; skipping the read that
      // would return EAGAIN saves a syscall per ping-pong round trip.
      if (static_cast<size_t>(n) < kReadChunk) break;
      if (conn->output.size() >= kMaxPendingOutput) break;
    }
    return Flush(conn);
  }

  // Writes queued replies; false on a write error.
  bool Flush(Connection* conn) {
    while (!conn->output.empty()) {
      // MSG_NOSIGNAL: a client that exits with replies in flight (every
      // throughput run does) must cost an EPIPE, not the server's life.
      const ssize_t n = send(conn->fd, conn->output.data(),
                             conn->output.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
      }
      conn->output.erase(0, static_cast<size_t>(n));
    }
    return true;
  }

  void UpdateInterest(Connection* conn) {
    uint32_t wanted = 0;
    if (conn->output.size() < kMaxPendingOutput) wanted |= EPOLLIN;
    if (!conn->output.empty()) wanted |= EPOLLOUT;
    if (wanted == conn->events) return;
    conn->events = wanted;
    epoll_event ev{};
    ev.events = wanted;
    ev.data.ptr = conn;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, conn->fd, &ev) != 0) {
      DieErrno("epoll_ctl(mod)");
    }
  }

  void Close(Connection* conn) {
    const int fd = conn->fd;
    // Closing the fd also drops it from the epoll set.
    close(fd);
    connections_.erase(fd);
  }

  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
  absl::flat_hash_map<int, std::unique_ptr<Connection>> connections_;
  char read_buffer_[kReadChunk];

  absl::Mutex mu_;
  std::vector<int> adopted_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

int ListenOrDie(const std::string& host, int port, std::string* bound) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    std::fprintf(stderr, "raw_echo_server: --host=%s is not an IPv4 address\n",
                 host.c_str());
    std::exit(1);
  }
  const int fd =
      socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) DieErrno("socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    DieErrno("bind");
  }
  if (listen(fd, 1024) != 0) DieErrno("listen");
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *bound = host + ":" + std::to_string(ntohs(addr.sin_port));
  return fd;
}

int Main() {
  const int threads = absl::GetFlag(FLAGS_threads);
  if (threads < 1) {
    std::fprintf(stderr, "raw_echo_server: --threads must be >= 1\n");
    return 1;
  }

  // Block the stop signals before any thread starts so that every thread
  // inherits the mask and only the signalfd below ever sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  const int signal_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
  if (signal_fd < 0) DieErrno("signalfd");

  std::string bound;
  const int listen_fd =
      ListenOrDie(absl::GetFlag(FLAGS_host), absl::GetFlag(FLAGS_port), &bound);

  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < threads; ++i) {
    workers.push_back(std::make_unique<Worker>());
    workers.back()->Start();
  }

  const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) DieErrno("epoll_create1");
  for (int fd : {listen_fd, signal_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) DieErrno("epoll_ctl");
  }

  // The benchmark script waits for this line; print it only once accepting.
  std::printf("listening on %s\n", bound.c_str());
  std::fflush(stdout);

  size_t next_worker = 0;
  bool stop = false;
  while (!stop) {
    epoll_event events[2];
    const int n = epoll_wait(epoll_fd, events, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      DieErrno("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == signal_fd) {
        stop = true;
        continue;
      }
      for (;;) {
        const int fd = accept4(listen_fd, nullptr, nullptr,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          // Out of fds or memory: keep serving the connections we have.
          std::fprintf(stderr, "raw_echo_server: accept: %s\n", strerror(errno));
          break;
        }
        // Replies are small and sent as soon as they are ready; Nagle would
        // hold them back waiting for the peer's delayed ACK.
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        workers[next_worker]->Adopt(fd);
        next_worker = (next_worker + 1) % workers.size();
      }
    }
  }

  for (auto& worker : workers) worker->StopAndJoin();
  workers.clear();
  close(epoll_fd);
  close(listen_fd);
  close(signal_fd);
  return 0;
}

}  // namespace
}  // namespace meshlib::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return meshlib::bench::Main();
}
