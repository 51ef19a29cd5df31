// Functional tests of Channel over real loopback sockets against a real
// server::Server: multiplexing, pooling, connect failures and timeouts,
// reconnects, deadlines, destruction and re-entrant callbacks.
#include "meshlib/client/channel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "meshlib/core/sync.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/server/server.h"
#include "meshlib/transport/socket.h"

namespace meshlib::client {
namespace {

using ::testing::HasSubstr;

// Generous: these bound how long a broken build hangs, they are not latency
// assertions (sanitizer builds on two shared cores are slow).
constexpr absl::Duration kWaitLimit = absl::Seconds(60);

// Counts events and lets a thread wait, with a deadline, for a number of
// them. std::mutex rather than absl::Mutex/Notification: Debian's Abseil is
// not built with -fsanitize=thread, so TSan could not see the test's own
// happens-before edges through it.
class Latch {
 public:
  void Arrive() {
    std::lock_guard<std::mutex> lock(mu_);
    ++count_;
    cv_.notify_all();
  }
  bool WaitFor(int n, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return count_ >= n; });
  }
  int count() {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
};

// Polls `pred` until it holds or `timeout` passes: for state that offers no
// notification (connection counts, channel readiness).
template <typename Pred>
bool WaitUntil(Pred pred, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!pred()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

CallOptions WithTimeout(absl::Duration timeout) {
  CallOptions o;
  o.timeout = timeout;
  return o;
}

server::ServerOptions TestServerOptions() {
  server::ServerOptions o;
  o.io_threads = 2;
  o.worker_threads = 4;
  return o;
}

void RegisterEcho(server::Server& server) {
  ASSERT_TRUE(server
                  .RegisterAsync("Echo/Say",
                                 [](std::shared_ptr<server::ServerCall> call) {
                                   call->Finish(absl::OkStatus(), call->request());
                                 })
                  .ok());
  ASSERT_TRUE(server
                  .RegisterSync("Echo/SaySync",
                                [](server::ServerCall& call, std::string* out) {
                                  *out = call.request();
                                  return absl::OkStatus();
                                })
                  .ok());
}

void StartOnLoopback(server::Server& server, absl::string_view address = "127.0.0.1:0") {
  absl::StatusOr<int> port = server.Start(address);
  ASSERT_TRUE(port.ok()) << port.status();
}

std::unique_ptr<Channel> MakeChannel(const std::string& address, ChannelOptions options = {}) {
  absl::StatusOr<std::unique_ptr<Channel>> ch = Channel::Create(address, std::move(options));
  EXPECT_TRUE(ch.ok()) << ch.status();
  return ch.ok() ? *std::move(ch) : nullptr;
}

// Closes an fd at scope exit.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

// A TCP socket bound to an ephemeral loopback port; returns the fd and sets
// `*port`. Listening is up to the caller.
// A listener that never accepts: connections complete in the kernel's
// backlog, requests are taken in, and nothing ever comes back. -1 on error.
struct SilentPeer {
  int fd = -1;
  std::string address;
};
SilentPeer ListenSilently() {
  SilentPeer peer;
  auto addr = transport::ParseHostPort("127.0.0.1:0");
  absl::StatusOr<int> fd = addr.ok() ? transport::ListenTcp(*addr, 16) : addr.status();
  EXPECT_TRUE(fd.ok()) << fd.status();
  if (!fd.ok()) return peer;
  auto bound = transport::LocalAddress(*fd);
  EXPECT_TRUE(bound.ok()) << bound.status();
  if (!bound.ok()) {
    close(*fd);
    return peer;
  }
  peer.fd = *fd;
  peer.address = bound->ToString();
  return peer;
}

// A channel to `address` whose connection is up (no call waits for it, and
// so none gets a timer of its own for that), on `runtime` if given.
std::unique_ptr<Channel> ConnectedChannel(const std::string& address,
                                          std::shared_ptr<runtime::Runtime> runtime = nullptr) {
  ChannelOptions options;
  options.runtime = std::move(runtime);
  auto ch = MakeChannel(address, options);
  if (ch == nullptr) return nullptr;
  ch->Connect();
  const bool ready = WaitUntil([&] { return ch->ReadyConnections() == 1; }, kWaitLimit);
  EXPECT_TRUE(ready) << "no connection to " << address;
  return ready ? std::move(ch) : nullptr;
}

int BindLoopback(int* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

// Starts a non-blocking connect to 127.0.0.1:`port`.
int StartRawConnect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

// True if a connect started on `fd` completed (successfully) within `timeout`.
bool ConnectCompletes(int fd, absl::Duration timeout) {
  pollfd p{fd, POLLOUT, 0};
  int n = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  if (n <= 0) return false;
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  return err == 0;
}

// 1. Many calls multiplexed on one connection each get their own reply.
TEST(ChannelTest, TwoThousandConcurrentCallsOnOneConnection) {
  server::Server server(TestServerOptions());
  RegisterEcho(server);
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());  // connections = 1
  ASSERT_NE(ch, nullptr);

  constexpr int kCalls = 2000;
  auto payload = [](int i) { return absl::StrCat("req-", i, "-", std::string(i % 257, 'a' + i % 26)); };
  std::vector<CallResult> results(kCalls);
  Latch done;
  for (int i = 0; i < kCalls; ++i) {
    ch->Call("Echo/Say", payload(i), WithTimeout(absl::Seconds(60)),
             [&results, &done, i](CallResult r) {
               results[i] = std::move(r);  // each slot written by one callback
               done.Arrive();
             });
  }
  ASSERT_TRUE(done.WaitFor(kCalls, kWaitLimit)) << done.count() << " of " << kCalls << " done";
  int bad = 0;
  for (int i = 0; i < kCalls; ++i) {
    if (!results[i].status.ok() || results[i].payload != payload(i)) {
      if (++bad <= 5) {
        ADD_FAILURE() << "call " << i << ": " << results[i].status << " payload \""
                      << results[i].payload.substr(0, 40) << "\"";
      }
    }
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(server.connection_count(), 1u);
}

// 2.
TEST(ChannelTest, BlockingCallsFromManyThreads) {
  server::Server server(TestServerOptions());
  RegisterEcho(server);
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  constexpr int kThreads = 8;
  constexpr int kCallsPerThread = 500;
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::mutex first_error_mu;
  std::string first_error;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        const std::string req = absl::StrCat("t", t, "-", i);
        // Alternate the two handler kinds.
        CallResult r = ch->CallBlocking(i % 2 ? "Echo/Say" : "Echo/SaySync", req,
                                        WithTimeout(absl::Seconds(30)));
        if (r.status.ok() && r.payload == req) {
          ok.fetch_add(1);
        } else {
          failed.fetch_add(1);
          std::lock_guard<std::mutex> lock(first_error_mu);
          if (first_error.empty()) first_error = absl::StrCat(req, ": ", r.status.ToString());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kCallsPerThread);
  EXPECT_EQ(failed.load(), 0) << first_error;
}

// 3.
TEST(ChannelTest, PoolOfFourConnections) {
  server::Server server(TestServerOptions());
  RegisterEcho(server);
  StartOnLoopback(server);
  ChannelOptions options;
  options.connections = 4;
  options.io_threads = 2;
  auto ch = MakeChannel(server.address(), options);
  ASSERT_NE(ch, nullptr);

  EXPECT_EQ(ch->ReadyConnections(), 0);  // lazy until asked
  ch->Connect();
  // The server counts a connection once its first frame arrives, and a call
  // goes to a ready connection: calls made while some are still connecting
  // (a slow, sanitized run) would leave those silent and uncounted.
  ASSERT_TRUE(WaitUntil([&] { return ch->ReadyConnections() == 4; }, kWaitLimit))
      << "channel has " << ch->ReadyConnections() << " ready";
  for (int i = 0; i < 16; ++i) {
    CallResult r = ch->CallBlocking("Echo/Say", absl::StrCat(i), WithTimeout(absl::Seconds(10)));
    EXPECT_TRUE(r.status.ok()) << r.status;
  }
  EXPECT_TRUE(WaitUntil(
      [&] { return server.connection_count() == 4 && ch->ReadyConnections() == 4; },
      kWaitLimit))
      << "server sees " << server.connection_count() << ", channel has "
      << ch->ReadyConnections() << " ready";
  EXPECT_EQ(ch->ReadyConnections(), 4);
  EXPECT_EQ(server.connection_count(), 4u);
}

// 4.
TEST(ChannelTest, ConnectRefusedFailsFastThenBacksOff) {
  // Bound but not listening: connects are refused, and no one else can take
  // the port meanwhile.
  int port = 0;
  int fd = BindLoopback(&port);
  ASSERT_GE(fd, 0);
  FdCloser closer(fd);
  const std::string address = absl::StrCat("127.0.0.1:", port);

  ChannelOptions options;
  options.reconnect_backoff.initial = absl::Seconds(10);  // stay in backoff
  options.reconnect_backoff.max = absl::Seconds(10);
  auto ch = MakeChannel(address, options);
  ASSERT_NE(ch, nullptr);

  absl::Time t0 = absl::Now();
  CallResult r = ch->CallBlocking("Echo/Say", "x", WithTimeout(absl::Seconds(20)));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_TRUE(r.not_processed);
  EXPECT_THAT(std::string(r.status.message()), HasSubstr(address));
  EXPECT_TRUE(r.endpoint.empty());

  t0 = absl::Now();
  r = ch->CallBlocking("Echo/Say", "y", WithTimeout(absl::Seconds(20)));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_TRUE(r.not_processed);
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("reconnecting"));
  EXPECT_THAT(std::string(r.status.message()), HasSubstr(address));
}

// 5. A server that comes back on the same port is found again.
TEST(ChannelTest, ReconnectsToRestartedServer) {
  auto first = std::make_unique<server::Server>(TestServerOptions());
  RegisterEcho(*first);
  StartOnLoopback(*first);
  const std::string address = first->address();

  ChannelOptions options;
  options.reconnect_backoff.initial = absl::Milliseconds(20);
  options.reconnect_backoff.max = absl::Milliseconds(200);
  auto ch = MakeChannel(address, options);
  ASSERT_NE(ch, nullptr);
  CallResult r = ch->CallBlocking("Echo/Say", "before", WithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(r.status.ok()) << r.status;

  first->Shutdown(absl::Seconds(1));
  first.reset();

  // While no server listens, calls fail rather than hang.
  r = ch->CallBlocking("Echo/Say", "between", WithTimeout(absl::Seconds(10)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;

  server::Server second(TestServerOptions());
  RegisterEcho(second);
  StartOnLoopback(second, address);  // SO_REUSEADDR: the port is free again
  ASSERT_EQ(second.address(), address);

  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  int attempts = 0;
  absl::Status last;
  bool succeeded = false;
  while (absl::Now() < give_up) {
    ++attempts;
    r = ch->CallBlocking("Echo/Say", "after", WithTimeout(absl::Seconds(2)));
    if (r.status.ok()) {
      succeeded = true;
      EXPECT_EQ(r.payload, "after");
      break;
    }
    last = r.status;
    EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
    absl::SleepFor(absl::Milliseconds(20));  // pacing between attempts
  }
  EXPECT_TRUE(succeeded) << attempts << " attempts; last error: " << last;
}

// 6. A connect that never completes gives up after connect_timeout.
TEST(ChannelTest, ConnectTimeout) {
  int port = 0;
  int lfd = BindLoopback(&port);
  ASSERT_GE(lfd, 0);
  FdCloser lcloser(lfd);
  ASSERT_EQ(listen(lfd, 0), 0);  // never accepted
  // Fill the accept queue: once it is full the kernel drops new SYNs, so a
  // new connect stays in SYN_SENT.
  std::vector<std::unique_ptr<FdCloser>> fillers;
  for (int i = 0; i < 8; ++i) {
    int fd = StartRawConnect(port);
    ASSERT_GE(fd, 0);
    fillers.push_back(std::make_unique<FdCloser>(fd));
  }
  {
    int probe = StartRawConnect(port);
    ASSERT_GE(probe, 0);
    FdCloser pcloser(probe);
    if (ConnectCompletes(probe, absl::Milliseconds(500))) {
      GTEST_SKIP() << "this kernel completes connects to a listener whose accept "
                      "queue is full (no SYN drop), so a connect cannot be made to hang";
    }
  }

  ChannelOptions options;
  options.connect_timeout = absl::Milliseconds(200);
  options.reconnect_backoff.initial = absl::Seconds(10);
  options.reconnect_backoff.max = absl::Seconds(10);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  auto ch = MakeChannel(address, options);
  ASSERT_NE(ch, nullptr);

  const absl::Time t0 = absl::Now();
  CallResult r = ch->CallBlocking("Echo/Say", "x", WithTimeout(absl::Seconds(20)));
  const absl::Duration took = absl::Now() - t0;
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("timed out"));
  EXPECT_TRUE(r.not_processed);
  EXPECT_GE(took, absl::Milliseconds(190));
  EXPECT_LT(took, absl::Seconds(2));
}

// 7. The destructor completes every call in flight before it returns.
TEST(ChannelTest, DestroyWithCallsInFlightCancelsThem) {
  server::Server server(TestServerOptions());
  Latch received;
  ASSERT_TRUE(server
                  .RegisterAsync("Slow/Forever",
                                 [&](std::shared_ptr<server::ServerCall> call) {
                                   std::weak_ptr<server::ServerCall> weak = call;
                                   call->OnCancel([weak] {
                                     if (auto c = weak.lock()) c->Finish(absl::CancelledError());
                                   });
                                   received.Arrive();
                                 })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  constexpr int kCalls = 100;
  std::mutex mu;
  int completed = 0;
  int cancelled = 0;
  std::string odd_status;
  for (int i = 0; i < kCalls; ++i) {
    ch->Call("Slow/Forever", "", WithTimeout(absl::Seconds(60)), [&](CallResult r) {
      std::lock_guard<std::mutex> lock(mu);
      ++completed;
      if (r.status.code() == absl::StatusCode::kCancelled) {
        ++cancelled;
      } else if (odd_status.empty()) {
        odd_status = r.status.ToString();
      }
    });
  }
  ASSERT_TRUE(received.WaitFor(kCalls, kWaitLimit)) << received.count() << " received";
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(completed, 0);
  }
  ch.reset();
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(completed, kCalls);
  EXPECT_EQ(cancelled, kCalls) << odd_status;
}

// 8. A callback may start the next call.
TEST(ChannelTest, CallbackMayIssueNextCall) {
  server::Server server(TestServerOptions());
  RegisterEcho(server);
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  constexpr int kChain = 1000;
  struct Chain {
    Channel* ch;
    std::atomic<int> ok{0};
    std::mutex mu;
    std::string error;
    Latch done;

    void Issue(int i) {
      ch->Call("Echo/Say", absl::StrCat("link-", i), WithTimeout(absl::Seconds(30)),
               [this, i](CallResult r) {
                 if (!r.status.ok() || r.payload != absl::StrCat("link-", i)) {
                   {
                     std::lock_guard<std::mutex> lock(mu);
                     error = absl::StrCat("link ", i, ": ", r.status.ToString(), " \"",
                                          r.payload, "\"");
                   }
                   done.Arrive();
                   return;
                 }
                 ok.fetch_add(1);
                 if (i + 1 < kChain) {
                   Issue(i + 1);
                 } else {
                   done.Arrive();
                 }
               });
    }
  } chain;
  chain.ch = ch.get();
  chain.Issue(0);
  ASSERT_TRUE(chain.done.WaitFor(1, kWaitLimit)) << chain.ok.load() << " links done";
  std::lock_guard<std::mutex> lock(chain.mu);
  EXPECT_EQ(chain.error, "");
  EXPECT_EQ(chain.ok.load(), kChain);
}

// 9. Deadlines hold when the server is slow, for many calls at once.
TEST(ChannelTest, ManyCallsToSlowServerHitTheirDeadline) {
  server::Server server(TestServerOptions());
  ASSERT_TRUE(server
                  .RegisterAsync("Slow/1s",
                                 [](std::shared_ptr<server::ServerCall> call) {
                                   call->executor().RunAfter(absl::Seconds(1), [call] {
                                     call->Finish(absl::OkStatus(), "late");
                                   });
                                 })
                  .ok());
  RegisterEcho(server);
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);
  // Connect first so that the 50ms budget is not spent on the handshake.
  ASSERT_TRUE(ch->CallBlocking("Echo/Say", "warm", WithTimeout(absl::Seconds(10))).status.ok());

  constexpr int kCalls = 200;
  std::mutex mu;
  int deadline_exceeded = 0;
  std::string odd;
  absl::Duration slowest = absl::ZeroDuration();
  Latch done;
  const absl::Time t0 = absl::Now();
  for (int i = 0; i < kCalls; ++i) {
    ch->Call("Slow/1s", "", WithTimeout(absl::Milliseconds(50)), [&](CallResult r) {
      const absl::Duration took = absl::Now() - t0;
      {
        std::lock_guard<std::mutex> lock(mu);
        slowest = std::max(slowest, took);
        if (r.status.code() == absl::StatusCode::kDeadlineExceeded && r.payload.empty()) {
          ++deadline_exceeded;
        } else if (odd.empty()) {
          odd = absl::StrCat(r.status.ToString(), " payload \"", r.payload, "\"");
        }
      }
      done.Arrive();
    });
  }
  ASSERT_TRUE(done.WaitFor(kCalls, kWaitLimit)) << done.count() << " done";
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(deadline_exceeded, kCalls) << odd;
    // All ended on their deadline, not on the handler's reply a second later.
    EXPECT_LT(slowest, absl::Seconds(1));
  }
  // The connection is still healthy.
  CallResult r = ch->CallBlocking("Echo/Say", "ok", WithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(r.status.ok()) << r.status;
}

// A connection watches the deadlines of the calls it carries in the order
// they fall due, with one timer for the earliest. Calls whose deadlines come
// later than the ones sent before them must each still end on their own
// deadline (the timer moves on to the next call), and a call with a shorter
// deadline than one already in flight must not wait behind it. The peer
// never answers (a listener that does not accept), so only the client's
// own deadline handling can end the calls.
TEST(ChannelTest, DeadlinesOfMixedTimeoutsOnOneConnectionEachHold) {
  SilentPeer peer = ListenSilently();
  ASSERT_GE(peer.fd, 0);
  FdCloser closer(peer.fd);
  auto ch = ConnectedChannel(peer.address);  // one connection
  ASSERT_NE(ch, nullptr);

  struct Outcome {
    absl::Duration timeout;
    absl::Duration took;
    absl::StatusCode code = absl::StatusCode::kUnknown;
    std::string message;
  };
  std::vector<Outcome> outcomes;
  std::mutex mu;
  Latch done;
  auto call = [&](absl::Duration timeout) {
    size_t i;
    {
      std::lock_guard<std::mutex> lock(mu);
      i = outcomes.size();
      outcomes.push_back(Outcome{timeout});
    }
    const absl::Time t0 = absl::Now();
    ch->Call("Echo/Say", "", WithTimeout(timeout), [&, i, t0](CallResult r) {
      {
        std::lock_guard<std::mutex> lock(mu);
        outcomes[i].took = absl::Now() - t0;
        outcomes[i].code = r.status.code();
        outcomes[i].message = std::string(r.status.message());
      }
      done.Arrive();
    });
  };
  // Rising deadlines: each joins the list behind the one before it.
  for (int ms : {100, 200, 300}) call(absl::Milliseconds(ms));
  // Then a long call at the list's tail...
  std::atomic<bool> long_done{false};
  CallHandle long_call =
      ch->Call("Echo/Say", "", WithTimeout(absl::Seconds(60)), [&](CallResult r) {
        EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled) << r.status;
        long_done.store(true);
      });
  // ...and calls that fall due before it.
  for (int ms : {150, 250, 400}) call(absl::Milliseconds(ms));
  const int kShort = 6;
  ASSERT_TRUE(done.WaitFor(kShort, kWaitLimit)) << done.count() << " done";
  // None of them waited for the long call's deadline.
  EXPECT_FALSE(long_done.load());
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const Outcome& o : outcomes) {
      EXPECT_EQ(o.code, absl::StatusCode::kDeadlineExceeded) << o.timeout << ": " << o.message;
      EXPECT_THAT(o.message,
                  HasSubstr(absl::StrCat("deadline of ", absl::FormatDuration(o.timeout),
                                         " exceeded calling Echo/Say on ")));
      EXPECT_GE(o.took, o.timeout) << "ended before its deadline";
    }
  }
  long_call.Cancel();
  EXPECT_TRUE(long_done.load());
  // Every call left the connection's books.
  EXPECT_TRUE(WaitUntil([&] { return ch->CallsInFlightForTesting() == 0; }, absl::Seconds(5)))
      << ch->CallsInFlightForTesting() << " calls still in flight";
}

// A connection's deadline timer is never cancelled; it holds the connection
// weakly. Here it comes due after its channel, connections and calls are
// gone, on a runtime that lives on: it must touch nothing (ASan watches), and
// the runtime must keep working. The calls end once each, CANCELLED, when
// the channel goes.
TEST(ChannelTest, DeadlineTimerThatOutlivesItsConnectionDoesNothing) {
  SilentPeer peer = ListenSilently();
  ASSERT_GE(peer.fd, 0);
  FdCloser closer(peer.fd);
  auto rt = runtime::Runtime::Create(1, "shared");
  ASSERT_TRUE(rt.ok()) << rt.status();
  auto ch = ConnectedChannel(peer.address, *rt);
  ASSERT_NE(ch, nullptr);
  constexpr int kCalls = 20;
  std::atomic<int> calls_ended{0};
  std::atomic<int> cancelled{0};
  for (int i = 0; i < kCalls; ++i) {
    ch->Call("Echo/Say", "", WithTimeout(absl::Milliseconds(100)), [&](CallResult r) {
      if (r.status.code() == absl::StatusCode::kCancelled) ++cancelled;
      ++calls_ended;
    });
  }
  ch.reset();  // the list's timer, due in 100 ms, is still armed
  EXPECT_EQ(calls_ended.load(), kCalls);
  EXPECT_EQ(cancelled.load(), kCalls);

  // Past that timer's time on the same loop: it has run (or found nothing).
  core::Notification later;
  (*rt)->loop(0).RunAfter(absl::Milliseconds(300), [&] { later.Notify(); });
  ASSERT_TRUE(later.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_EQ(calls_ended.load(), kCalls);  // nothing ended twice

  // The runtime still serves a new channel, whose calls still end on their
  // deadline.
  auto again = ConnectedChannel(peer.address, *rt);
  ASSERT_NE(again, nullptr);
  CallResult r = again->CallBlocking("Echo/Say", "", WithTimeout(absl::Milliseconds(100)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded) << r.status;
}

// The same timer when the peer closes the connection first: the calls end
// UNAVAILABLE from the close, and the timer then finds an empty list.
TEST(ChannelTest, DeadlineTimerAfterThePeerClosedTheConnection) {
  SilentPeer peer = ListenSilently();
  ASSERT_GE(peer.fd, 0);
  FdCloser closer(peer.fd);
  auto rt = runtime::Runtime::Create(1, "shared");
  ASSERT_TRUE(rt.ok()) << rt.status();
  auto ch = ConnectedChannel(peer.address, *rt);
  ASSERT_NE(ch, nullptr);
  constexpr int kCalls = 20;
  Latch done;
  std::atomic<int> unavailable{0};
  for (int i = 0; i < kCalls; ++i) {
    ch->Call("Echo/Say", "", WithTimeout(absl::Milliseconds(200)), [&](CallResult r) {
      if (r.status.code() == absl::StatusCode::kUnavailable) ++unavailable;
      done.Arrive();
    });
  }
  // Accept the waiting connection and close it at once: the peer goes away
  // with the calls unanswered, before their deadline.
  int accepted = accept(peer.fd, nullptr, nullptr);
  ASSERT_GE(accepted, 0) << errno;
  close(accepted);
  ASSERT_TRUE(done.WaitFor(kCalls, kWaitLimit)) << done.count() << " done";
  EXPECT_EQ(unavailable.load(), kCalls);
  // Past the deadline on the same loop: the list's timer has run, on an
  // empty list or a connection already gone.
  core::Notification later;
  (*rt)->loop(0).RunAfter(absl::Milliseconds(300), [&] { later.Notify(); });
  ASSERT_TRUE(later.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_EQ(done.count(), kCalls);  // nothing ended twice
  EXPECT_EQ(ch->CallsInFlightForTesting(), 0u);
}

// A blocking call reads its own reply off the connection; replies of other
// calls it reads meanwhile must still reach their callbacks, on a reactor
// thread, as the header promises.
TEST(ChannelTest, BlockingCallsReadingInlineLeaveOtherCallbacksToTheReactor) {
  server::Server server(TestServerOptions());
  ASSERT_TRUE(server
                  .RegisterAsync("Echo/Later",
                                 [](std::shared_ptr<server::ServerCall> call) {
                                   call->executor().RunAfter(absl::Milliseconds(1), [call] {
                                     call->Finish(absl::OkStatus(), call->request());
                                   });
                                 })
                  .ok());
  RegisterEcho(server);
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());  // one connection: all calls share it
  ASSERT_NE(ch, nullptr);
  constexpr int kAsync = 400;
  Latch async_done;
  std::atomic<int> async_ok{0}, off_reactor{0};
  std::thread blocker([&] {
    for (int i = 0; i < 400; ++i) {
      CallResult r = ch->CallBlocking("Echo/Say", "b", WithTimeout(absl::Seconds(10)));
      EXPECT_TRUE(r.status.ok()) << r.status;
    }
  });
  for (int i = 0; i < kAsync; ++i) {
    std::string payload = absl::StrCat("a", i);
    ch->Call("Echo/Later", payload, WithTimeout(absl::Seconds(10)),
             [&, payload](CallResult r) {
               if (runtime::EventLoop::Current() == nullptr) ++off_reactor;
               if (r.status.ok() && r.payload == payload) ++async_ok;
               async_done.Arrive();
             });
    // Pauses now and then so replies arrive while the blocker reads inline.
    if (i % 50 == 0) absl::SleepFor(absl::Milliseconds(1));
  }
  blocker.join();
  ASSERT_TRUE(async_done.WaitFor(kAsync, kWaitLimit)) << async_done.count();
  EXPECT_EQ(async_ok.load(), kAsync);
  EXPECT_EQ(off_reactor.load(), 0);
}

// The connection dies while a blocking call reads inline: the call ends
// with UNAVAILABLE at once, it does not sit in its read loop.
TEST(ChannelTest, BlockingCallEndsWhenTheServerGoesAwayMidCall) {
  auto server = std::make_unique<server::Server>(TestServerOptions());
  std::atomic<int> held{0};
  ASSERT_TRUE(server
                  ->RegisterAsync("Never/Answer",
                                  [&](std::shared_ptr<server::ServerCall> call) {
                                    ++held;  // never finished; cancelled at shutdown
                                  })
                  .ok());
  StartOnLoopback(*server);
  auto ch = MakeChannel(server->address());
  ASSERT_NE(ch, nullptr);
  std::atomic<bool> returned{false};
  CallResult result;
  std::thread caller([&] {
    result = ch->CallBlocking("Never/Answer", "x", WithTimeout(absl::Seconds(30)));
    returned = true;
  });
  ASSERT_TRUE(WaitUntil([&] { return held.load() == 1; }, kWaitLimit));
  const absl::Time t0 = absl::Now();
  server->Shutdown(absl::ZeroDuration());
  ASSERT_TRUE(WaitUntil([&] { return returned.load(); }, absl::Seconds(10)));
  caller.join();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  EXPECT_EQ(result.status.code(), absl::StatusCode::kUnavailable) << result.status;
}

TEST(ChannelTest, DeadlineFreesTheCallsStateEvenIfThePeerNeverAnswers) {
  // A listener that never accepts: connections complete in the kernel's
  // backlog, requests are sent, and nothing ever comes back. Only the
  // client's own deadline handling can free the calls.
  auto addr = transport::ParseHostPort("127.0.0.1:0");
  ASSERT_TRUE(addr.ok());
  absl::StatusOr<int> fd = transport::ListenTcp(*addr, 16);
  ASSERT_TRUE(fd.ok()) << fd.status();
  auto bound = transport::LocalAddress(*fd);
  ASSERT_TRUE(bound.ok());
  auto ch = MakeChannel(bound->ToString());
  ASSERT_NE(ch, nullptr);
  constexpr int kCalls = 50;
  Latch done;
  std::atomic<int> deadline_exceeded{0};
  for (int i = 0; i < kCalls; ++i) {
    ch->Call("Echo/Say", "into the void", WithTimeout(absl::Milliseconds(100)),
             [&](CallResult r) {
               if (r.status.code() == absl::StatusCode::kDeadlineExceeded) ++deadline_exceeded;
               done.Arrive();
             });
  }
  ASSERT_TRUE(done.WaitFor(kCalls, kWaitLimit)) << done.count() << " done";
  EXPECT_EQ(deadline_exceeded.load(), kCalls);
  // The completion and the cleanup run back to back on the reactor; wait for
  // the last cleanup, bounded.
  EXPECT_TRUE(WaitUntil([&] { return ch->CallsInFlightForTesting() == 0; }, absl::Seconds(5)))
      << ch->CallsInFlightForTesting() << " calls still in flight";
  close(*fd);
}

}  // namespace
}  // namespace meshlib::client
