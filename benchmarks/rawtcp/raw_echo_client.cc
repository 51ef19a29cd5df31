// Load generator for raw_echo_server: the "physical limit" rows of the
// end-to-end benchmark (benchmarks/run_e2e.sh).
//
//   raw_echo_client --address=127.0.0.1:41234 --mode=pingpong --json
//   raw_echo_client --address=127.0.0.1:41234 --mode=throughput
//       --connections=4 --inflight=32 --duration=5s --warmup=1s --json
//
// pingpong: one blocking socket, one request in flight; every call's round
// trip is a latency sample. throughput: `--connections` non-blocking sockets
// under one epoll, each kept at its share of `--inflight` pipelined requests;
// calls/s counts replies that arrive inside the measured window, and each
// reply's time since its request was queued is a latency sample.
//
// The flags and the output line (benchmarks/common/bench_stats.h) are shared
// with the gRPC and meshlib clients so that the script compares like for like.
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/time.h"
#include "benchmarks/common/bench_stats.h"

ABSL_FLAG(std::string, address, "127.0.0.1:7000", "Server as host:port.");
ABSL_FLAG(std::string, mode, "pingpong", "pingpong or throughput.");
ABSL_FLAG(int, payload, 64, "Payload bytes per request (and reply).");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "Measured time.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1),
          "Time run before measuring, to reach steady state.");
ABSL_FLAG(int, connections, 4, "Throughput mode: connections to spread load on.");
ABSL_FLAG(int, inflight, 32,
          "Throughput mode: requests outstanding in total, split evenly over "
          "the connections.");
ABSL_FLAG(bool, json, false, "Print one JSON line instead of prose.");
ABSL_FLAG(int, busy_poll_us, 0,
          "Throughput mode: after handling events, keep polling (yielding between polls) for "
          "this many microseconds before sleeping in epoll_wait, as meshlib's reactors do "
          "with busy_poll (0 = off).");

namespace meshlib::bench {
namespace {

// A run with no reply for this long has a dead or wedged server; fail it
// rather than hang the benchmark script.
constexpr absl::Duration kStallTimeout = absl::Seconds(5);
constexpr size_t kReadChunk = 64 * 1024;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "raw_echo_client: %s\n", message.c_str());
  std::exit(1);
}

[[noreturn]] void DieErrno(const std::string& what) {
  Die(what + ": " + strerror(errno));
}

// The wire form of one request: 4-byte big-endian length, then the payload.
// The reply must be byte-for-byte the same.
std::string MakeMessage(int payload_size) {
  std::string message(4 + payload_size, '\0');
  const auto n = static_cast<uint32_t>(payload_size);
  message[0] = static_cast<char>(n >> 24);
  message[1] = static_cast<char>(n >> 16);
  message[2] = static_cast<char>(n >> 8);
  message[3] = static_cast<char>(n);
  for (int i = 0; i < payload_size; ++i) message[4 + i] = 'a' + i % 26;
  return message;
}

int ConnectOrDie(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) Die("--address must be host:port: " + address);
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &results);
      rc != 0) {
    Die("resolve " + address + ": " + gai_strerror(rc));
  }
  int fd = -1;
  for (addrinfo* ai = results; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(results);
  if (fd < 0) DieErrno("connect " + address);
  // Requests are tiny and must leave at once; Nagle would wait for an ACK.
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

void WriteAllOrDie(int fd, const char* data, size_t size) {
  while (size > 0) {
    // MSG_NOSIGNAL: a dead server should end the run with a message, not
    // a silent SIGPIPE.
    const ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      DieErrno("write");
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

RunResult RunPingPong(const std::string& address, int payload_size,
                      absl::Duration warmup, absl::Duration duration) {
  const int fd = ConnectOrDie(address);
  const timeval stall = absl::ToTimeval(kStallTimeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &stall, sizeof(stall));

  const std::string request = MakeMessage(payload_size);
  std::string reply(request.size(), '\0');

  RunResult result;
  result.system = "raw_tcp";
  result.mode = "pingpong";
  // About 40k calls/s at best here; reserving up front keeps a vector
  // reallocation (a multi-millisecond copy) out of the measured tail.
  result.latencies_ns.reserve(
      static_cast<size_t>(absl::ToDoubleSeconds(duration) * 100000));

  const int64_t measure_start_ns = NowNs() + absl::ToInt64Nanoseconds(warmup);
  const int64_t end_ns = measure_start_ns + absl::ToInt64Nanoseconds(duration);
  int64_t first_measured_ns = -1;
  int64_t last_done_ns = 0;
  for (;;) {
    const int64_t start_ns = NowNs();
    if (start_ns >= end_ns) break;
    WriteAllOrDie(fd, request.data(), request.size());
    size_t got = 0;
    while (got < reply.size()) {
      const ssize_t n = read(fd, &reply[got], reply.size() - got);
      if (n == 0) Die("server closed the connection");
      if (n < 0) {
        if (errno == EINTR) continue;
        DieErrno("read (no reply within " + absl::FormatDuration(kStallTimeout) +
                 "?)");
      }
      got += static_cast<size_t>(n);
    }
    const int64_t done_ns = NowNs();
    if (reply != request) Die("reply differs from request");
    if (start_ns < measure_start_ns) continue;
    if (first_measured_ns < 0) first_measured_ns = start_ns;
    last_done_ns = done_ns;
    result.latencies_ns.push_back(done_ns - start_ns);
  }
  close(fd);
  result.calls = static_cast<int64_t>(result.latencies_ns.size());
  if (first_measured_ns >= 0) {
    result.elapsed = absl::Nanoseconds(last_done_ns - first_measured_ns);
  }
  return result;
}

// One throughput connection. The server answers in order, so the send times
// of outstanding requests form a FIFO matched against replies as they come.
struct PipelinedConnection {
  int fd = -1;
  int window = 0;              // requests this connection keeps outstanding
  std::deque<int64_t> sent_ns;
  std::string input;           // a reply not yet complete
  std::string output;          // requests the socket did not take yet
  bool want_write = false;     // EPOLLOUT registered
};

// Writes what it can of `conn->output`; the caller re-arms EPOLLOUT if needed.
void FlushOrDie(PipelinedConnection* conn) {
  while (!conn->output.empty()) {
    const ssize_t n = send(conn->fd, conn->output.data(), conn->output.size(),
                           MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      DieErrno("write");
    }
    conn->output.erase(0, static_cast<size_t>(n));
  }
}

void SetWriteInterestOrDie(int epoll_fd, PipelinedConnection* conn) {
  const bool want_write = !conn->output.empty();
  if (want_write == conn->want_write) return;
  conn->want_write = want_write;
  epoll_event ev{};
  ev.events = want_write ? EPOLLIN | EPOLLOUT : EPOLLIN;
  ev.data.ptr = conn;
  if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, conn->fd, &ev) != 0) {
    DieErrno("epoll_ctl");
  }
}

RunResult RunThroughput(const std::string& address, int payload_size,
                        absl::Duration warmup, absl::Duration duration,
                        int connections, int inflight) {
  if (connections < 1) Die("--connections must be >= 1");
  if (inflight < connections) Die("--inflight must be >= --connections");
  const std::string request = MakeMessage(payload_size);
  const size_t reply_size = request.size();

  const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) DieErrno("epoll_create1");
  std::vector<PipelinedConnection> conns(connections);
  for (int i = 0; i < connections; ++i) {
    PipelinedConnection& conn = conns[i];
    conn.fd = ConnectOrDie(address);
    const int flags = fcntl(conn.fd, F_GETFL);
    fcntl(conn.fd, F_SETFL, flags | O_NONBLOCK);
    // Spread the remainder so the total outstanding is exactly --inflight.
    conn.window = inflight / connections + (i < inflight % connections ? 1 : 0);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &conn;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, conn.fd, &ev) != 0) {
      DieErrno("epoll_ctl");
    }
  }

  RunResult result;
  result.system = "raw_tcp";
  result.mode = "throughput";
  result.elapsed = duration;
  // The raw baseline reaches ~800k calls/s here; see RunPingPong for why.
  result.latencies_ns.reserve(
      static_cast<size_t>(absl::ToDoubleSeconds(duration) * 1500000));

  const int64_t measure_start_ns = NowNs() + absl::ToInt64Nanoseconds(warmup);
  const int64_t end_ns = measure_start_ns + absl::ToInt64Nanoseconds(duration);

  // Fill every pipeline; from here on each reply immediately buys a request.
  {
    const int64_t now_ns = NowNs();
    for (PipelinedConnection& conn : conns) {
      for (int i = 0; i < conn.window; ++i) {
        conn.output.append(request);
        conn.sent_ns.push_back(now_ns);
      }
      FlushOrDie(&conn);
      SetWriteInterestOrDie(epoll_fd, &conn);
    }
  }

  std::vector<char> buffer(kReadChunk);
  std::vector<epoll_event> events(connections);
  int64_t last_progress_ns = NowNs();
  const int64_t busy_poll_ns = int64_t{absl::GetFlag(FLAGS_busy_poll_us)} * 1000;
  int64_t last_work_ns = 0;
  for (;;) {
    int timeout_ms = 100;
    if (busy_poll_ns > 0 && NowNs() - last_work_ns < busy_poll_ns) {
      sched_yield();
      timeout_ms = 0;
    }
    const int n = epoll_wait(epoll_fd, events.data(), connections, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      DieErrno("epoll_wait");
    }
    const int64_t now_ns = NowNs();
    if (now_ns >= end_ns) break;
    if (n > 0) last_work_ns = now_ns;
    if (n == 0 &&
        now_ns - last_progress_ns > absl::ToInt64Nanoseconds(kStallTimeout)) {
      Die("no reply for " + absl::FormatDuration(kStallTimeout));
    }
    for (int e = 0; e < n; ++e) {
      auto* conn = static_cast<PipelinedConnection*>(events[e].data.ptr);
      if (events[e].events & EPOLLOUT) FlushOrDie(conn);
      if (!(events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        SetWriteInterestOrDie(epoll_fd, conn);
        continue;
      }
      int completed = 0;
      // Drain the socket: a short read means nothing more is queued, and
      // level-triggered epoll reports whatever arrives later.
      for (;;) {
        const ssize_t got = read(conn->fd, buffer.data(), buffer.size());
        if (got == 0) Die("server closed a connection");
        if (got < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          DieErrno("read");
        }
        conn->input.append(buffer.data(), static_cast<size_t>(got));
        if (static_cast<size_t>(got) < buffer.size()) break;
      }
      size_t pos = 0;
      for (; conn->input.size() - pos >= reply_size; pos += reply_size) {
        if (conn->input.compare(pos, reply_size, request) != 0) {
          Die("reply differs from request");
        }
        if (conn->sent_ns.empty()) Die("reply without a request");
        const int64_t sent_ns = conn->sent_ns.front();
        conn->sent_ns.pop_front();
        ++completed;
        if (now_ns >= measure_start_ns) {
          result.latencies_ns.push_back(now_ns - sent_ns);
        }
      }
      conn->input.erase(0, pos);
      if (completed > 0) last_progress_ns = now_ns;
      // One write for all the requests this batch of replies paid for.
      for (int i = 0; i < completed; ++i) {
        conn->output.append(request);
        conn->sent_ns.push_back(now_ns);
      }
      FlushOrDie(conn);
      SetWriteInterestOrDie(epoll_fd, conn);
    }
  }
  for (PipelinedConnection& conn : conns) close(conn.fd);
  close(epoll_fd);
  result.calls = static_cast<int64_t>(result.latencies_ns.size());
  return result;
}

int Main() {
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int payload = absl::GetFlag(FLAGS_payload);
  if (payload < 0) Die("--payload must be >= 0");
  RunResult result;
  if (mode == "pingpong") {
    result = RunPingPong(absl::GetFlag(FLAGS_address), payload,
                         absl::GetFlag(FLAGS_warmup),
                         absl::GetFlag(FLAGS_duration));
  } else if (mode == "throughput") {
    result = RunThroughput(
        absl::GetFlag(FLAGS_address), payload, absl::GetFlag(FLAGS_warmup),
        absl::GetFlag(FLAGS_duration), absl::GetFlag(FLAGS_connections),
        absl::GetFlag(FLAGS_inflight));
  } else {
    Die("--mode must be pingpong or throughput, not " + mode);
  }
  std::cout << FormatResult(result, absl::GetFlag(FLAGS_json)) << std::endl;
  return 0;
}

}  // namespace
}  // namespace meshlib::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return meshlib::bench::Main();
}
