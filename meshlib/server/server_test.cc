// Functional tests of Server over real loopback sockets, driven by a real
// client::Channel: handlers, metadata, deadlines, cancellation, stream limits
// and graceful shutdown, as a user of the two would see them; then the
// server's protection: deadline propagation, expired work, retry pushback,
// the health service and the adaptive limit's refusals.
#include "meshlib/server/server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "meshlib/admin/test_http.h"
#include "meshlib/testing/subprocess.h"
#include "meshlib/client/channel.h"
#include "meshlib/core/deadline_context.h"
#include "meshlib/transport/frame.h"
#include "meshlib/transport/socket.h"

namespace meshlib::server {
namespace {

using ::testing::AnyOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Pair;

// Generous: these bound how long a broken build hangs, they are not latency
// assertions (sanitizer builds on two shared cores are slow).
constexpr absl::Duration kWaitLimit = absl::Seconds(30);

// A one-shot event to wait on, with a deadline.
//
// std::mutex rather than absl::Notification: Debian's Abseil is not built
// with -fsanitize=thread, so TSan cannot see the happens-before edges inside
// absl::Notification; std::mutex goes through intercepted pthread calls,
// which keeps the test's own synchronisation visible under --config=tsan.
class Signal {
 public:
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  bool WaitFor(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return done_; });
  }
  bool Notified() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

// Holds the result of one callback call, to wait on.
class ResultSlot {
 public:
  client::CallCallback Callback() {
    return [this](client::CallResult r) {
      std::lock_guard<std::mutex> lock(mu_);
      result_ = std::move(r);
      done_ = true;
      cv_.notify_all();
    };
  }
  bool WaitFor(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return done_; });
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  client::CallResult result() {
    std::lock_guard<std::mutex> lock(mu_);
    return result_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  client::CallResult result_;
};

// Calls kept open by a handler until the test releases them.
class HeldCalls {
 public:
  void Add(std::shared_ptr<ServerCall> call) {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(std::move(call));
    cv_.notify_all();
  }
  bool WaitForCount(size_t n, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                        [&] { return calls_.size() >= n; });
  }
  std::vector<std::shared_ptr<ServerCall>> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(calls_);
  }
  // Finishes and forgets every held call.
  void FinishAll(absl::Status status, const std::string& response) {
    for (auto& c : Take()) c->Finish(status, response);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<ServerCall>> calls_;
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

ServerOptions TestServerOptions() {
  ServerOptions o;
  o.io_threads = 2;
  o.worker_threads = 4;
  return o;
}

std::unique_ptr<client::Channel> MakeChannel(const std::string& address,
                                             client::ChannelOptions options = {}) {
  absl::StatusOr<std::unique_ptr<client::Channel>> ch =
      client::Channel::Create(address, std::move(options));
  EXPECT_TRUE(ch.ok()) << ch.status();
  return ch.ok() ? *std::move(ch) : nullptr;
}

client::CallOptions WithTimeout(absl::Duration timeout) {
  client::CallOptions o;
  o.timeout = timeout;
  return o;
}

// Starts `server` on an ephemeral loopback port.
void StartOnLoopback(Server& server) {
  absl::StatusOr<int> port = server.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  ASSERT_GT(*port, 0);
  ASSERT_EQ(server.address(), absl::StrCat("127.0.0.1:", *port));
}

// Runs `fn` on its own thread; Join() fails the test (instead of hanging it)
// when `fn` does not return in time.
class BackgroundTask {
 public:
  explicit BackgroundTask(std::function<void()> fn)
      : thread_([this, fn = std::move(fn)] {
          fn();
          done_.Notify();
        }) {}
  ~BackgroundTask() {
    if (thread_.joinable()) thread_.join();
  }
  // True if `fn` returned within `timeout`. A task that hangs cannot be
  // abandoned safely (it uses the test's objects), so it aborts the binary
  // with a message rather than letting the whole test time out silently.
  bool JoinWithin(absl::Duration timeout, const char* what) {
    if (!done_.WaitFor(timeout)) {
      std::fprintf(stderr, "FATAL: %s did not return within %s\n", what,
                   absl::FormatDuration(timeout).c_str());
      std::abort();
    }
    thread_.join();
    return true;
  }

 private:
  Signal done_;
  std::thread thread_;
};

// 1. Both handler kinds answer; metadata travels both ways; the endpoint is
// the server's address.
TEST(ServerTest, AsyncAndSyncHandlersAnswerWithMetadata) {
  Server server(TestServerOptions());
  ASSERT_TRUE(server
                  .RegisterAsync("Echo/Async",
                                 [](std::shared_ptr<ServerCall> call) {
                                   call->AddResponseMetadata("x-handler", "async");
                                   call->AddResponseMetadata(
                                       "x-echo", std::string(call->MetadataValue("x-req")));
                                   call->AddResponseMetadata(
                                       "x-absent",
                                       call->MetadataValue("x-nope").empty() ? "empty" : "set");
                                   call->Finish(absl::OkStatus(),
                                                absl::StrCat("async:", call->request()));
                                 })
                  .ok());
  ASSERT_TRUE(server
                  .RegisterSync("Echo/Sync",
                                [](ServerCall& call, std::string* out) {
                                  call.AddResponseMetadata("x-handler", "sync");
                                  call.AddResponseMetadata(
                                      "x-echo", std::string(call.MetadataValue("x-req")));
                                  *out = absl::StrCat("sync:", call.request(), ":", call.method());
                                  return absl::OkStatus();
                                })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  client::CallOptions opts = WithTimeout(absl::Seconds(10));
  opts.metadata = {{"x-other", "o"}, {"x-req", "value-1"}};

  client::CallResult a = ch->CallBlocking("Echo/Async", "hello", opts);
  ASSERT_TRUE(a.status.ok()) << a.status;
  EXPECT_EQ(a.payload, "async:hello");
  EXPECT_THAT(a.metadata, Contains(Pair("x-handler", "async")));
  EXPECT_THAT(a.metadata, Contains(Pair("x-echo", "value-1")));
  EXPECT_THAT(a.metadata, Contains(Pair("x-absent", "empty")));
  EXPECT_EQ(a.endpoint, server.address());
  EXPECT_FALSE(a.not_processed);

  client::CallResult s = ch->CallBlocking("Echo/Sync", "world", opts);
  ASSERT_TRUE(s.status.ok()) << s.status;
  EXPECT_EQ(s.payload, "sync:world:Echo/Sync");
  EXPECT_THAT(s.metadata, Contains(Pair("x-handler", "sync")));
  EXPECT_THAT(s.metadata, Contains(Pair("x-echo", "value-1")));
  EXPECT_EQ(s.endpoint, server.address());
}

// 2.
TEST(ServerTest, UnknownMethodIsUnimplementedNamingTheMethod) {
  Server server(TestServerOptions());
  ASSERT_TRUE(server
                  .RegisterAsync("Echo/Say",
                                 [](std::shared_ptr<ServerCall> call) {
                                   call->Finish(absl::OkStatus(), call->request());
                                 })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  client::CallResult r = ch->CallBlocking("No/SuchMethod", "x", WithTimeout(absl::Seconds(10)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnimplemented) << r.status;
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("No/SuchMethod"));
  EXPECT_EQ(r.endpoint, server.address());  // the server answered

  // The connection is still usable afterwards.
  client::CallResult ok = ch->CallBlocking("Echo/Say", "y", WithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(ok.status.ok()) << ok.status;
}

// 2b. Calls to different methods interleaved on one connection each reach
// their own handler (a connection remembers its last method's lookup), and
// an unknown name in between is still refused.
TEST(ServerTest, InterleavedMethodsOnOneConnectionReachTheirHandlers) {
  Server server(TestServerOptions());
  for (const char* name : {"A/One", "A/Two", "B/One"}) {
    ASSERT_TRUE(server
                    .RegisterAsync(name,
                                   [name](std::shared_ptr<ServerCall> call) {
                                     call->Finish(absl::OkStatus(),
                                                  absl::StrCat(name, ":", call->method()));
                                   })
                    .ok());
  }
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);
  const std::vector<std::string> order = {"A/One", "A/One", "A/Two", "A/Onf", "A/One",
                                          "B/One", "A/Two", "A/Two", "A/On",  "B/One"};
  for (const std::string& m : order) {
    client::CallResult r = ch->CallBlocking(m, "x", WithTimeout(absl::Seconds(10)));
    if (m == "A/Onf" || m == "A/On") {
      EXPECT_EQ(r.status.code(), absl::StatusCode::kUnimplemented) << m << ": " << r.status;
      continue;
    }
    ASSERT_TRUE(r.status.ok()) << m << ": " << r.status;
    EXPECT_EQ(r.payload, absl::StrCat(m, ":", m));
  }
}

// 3. The caller's remaining time reaches the handler.
TEST(ServerTest, HandlerSeesRemainingDeadline) {
  Server server(TestServerOptions());
  // Replies "<remaining ms>,<finite|infinite>".
  ASSERT_TRUE(server
                  .RegisterAsync("Deadline/Report",
                                 [](std::shared_ptr<ServerCall> call) {
                                   const bool infinite =
                                       call->deadline() == absl::InfiniteFuture();
                                   call->Finish(
                                       absl::OkStatus(),
                                       absl::StrCat(
                                           absl::ToInt64Milliseconds(call->RemainingTime()),
                                           ",", infinite ? "infinite" : "finite"));
                                 })
                  .ok());
  StartOnLoopback(server);
  client::ChannelOptions copts;
  copts.default_timeout = absl::Seconds(10);
  auto ch = MakeChannel(server.address(), copts);
  ASSERT_NE(ch, nullptr);

  auto parse = [](const client::CallResult& r, int64_t* ms, std::string* kind) {
    std::vector<std::string> parts = absl::StrSplit(r.payload, ',');
    return parts.size() == 2 && absl::SimpleAtoi(parts[0], ms) && (*kind = parts[1], true);
  };

  client::CallResult r = ch->CallBlocking("Deadline/Report", "", WithTimeout(absl::Seconds(2)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  int64_t ms = 0;
  std::string kind;
  ASSERT_TRUE(parse(r, &ms, &kind)) << r.payload;
  EXPECT_EQ(kind, "finite");
  EXPECT_GT(ms, 1000) << r.payload;
  EXPECT_LE(ms, 2000) << r.payload;

  // No per-call timeout: the channel sends its default_timeout, so the
  // handler still sees a finite deadline of about that much.
  r = ch->CallBlocking("Deadline/Report", "", client::CallOptions{});
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_TRUE(parse(r, &ms, &kind)) << r.payload;
  EXPECT_EQ(kind, "finite");
  EXPECT_GT(ms, 9000) << r.payload;
  EXPECT_LE(ms, 10000) << r.payload;
}

// 4. A blocking sync handler runs off the reactor: an async method on the
// same connection is answered meanwhile.
TEST(ServerTest, BlockingSyncHandlerDoesNotBlockAsyncOnSameConnection) {
  ServerOptions options = TestServerOptions();
  options.io_threads = 1;  // one reactor: blocking it would block everything
  Server server(options);
  Signal slow_started;
  ASSERT_TRUE(server
                  .RegisterSync("Slow/Sync",
                                [&](ServerCall&, std::string* out) {
                                  slow_started.Notify();
                                  absl::SleepFor(absl::Milliseconds(300));  // simulated work
                                  *out = "slow";
                                  return absl::OkStatus();
                                })
                  .ok());
  ASSERT_TRUE(server
                  .RegisterAsync("Fast/Async",
                                 [](std::shared_ptr<ServerCall> call) {
                                   call->Finish(absl::OkStatus(), "fast");
                                 })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());  // one connection
  ASSERT_NE(ch, nullptr);

  std::mutex mu;
  std::vector<std::string> order;
  Signal slow_done, fast_done;
  ch->Call("Slow/Sync", "", WithTimeout(absl::Seconds(10)), [&](client::CallResult r) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(r.status.ok() ? r.payload : "slow-failed");
    slow_done.Notify();
  });
  ASSERT_TRUE(slow_started.WaitFor(kWaitLimit));
  ch->Call("Fast/Async", "", WithTimeout(absl::Seconds(10)), [&](client::CallResult r) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(r.status.ok() ? r.payload : "fast-failed");
    fast_done.Notify();
  });
  ASSERT_TRUE(fast_done.WaitFor(kWaitLimit));
  ASSERT_TRUE(slow_done.WaitFor(kWaitLimit));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(order, ::testing::ElementsAre("fast", "slow"));
}

// 5. Beyond max_concurrent_streams a call is refused at once, marked safe to
// retry.
TEST(ServerTest, MaxConcurrentStreamsRefusesExtraCall) {
  ServerOptions options = TestServerOptions();
  options.max_concurrent_streams = 2;
  Server server(options);
  HeldCalls held;
  ASSERT_TRUE(server.RegisterAsync("Slow/Hold", [&](std::shared_ptr<ServerCall> call) {
    held.Add(std::move(call));
  }).ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  ResultSlot first, second;
  ch->Call("Slow/Hold", "1", WithTimeout(absl::Seconds(20)), first.Callback());
  ch->Call("Slow/Hold", "2", WithTimeout(absl::Seconds(20)), second.Callback());
  ASSERT_TRUE(held.WaitForCount(2, kWaitLimit));

  // Were it queued behind the held calls instead, it would end with
  // DEADLINE_EXCEEDED after 10s.
  client::CallResult third = ch->CallBlocking("Slow/Hold", "3", WithTimeout(absl::Seconds(10)));
  EXPECT_EQ(third.status.code(), absl::StatusCode::kResourceExhausted) << third.status;
  EXPECT_TRUE(third.not_processed);
  EXPECT_THAT(std::string(third.status.message()), HasSubstr("max_concurrent_streams"));
  EXPECT_FALSE(first.done());
  EXPECT_FALSE(second.done());

  held.FinishAll(absl::OkStatus(), "released");
  ASSERT_TRUE(first.WaitFor(kWaitLimit));
  ASSERT_TRUE(second.WaitFor(kWaitLimit));
  EXPECT_TRUE(first.result().status.ok()) << first.result().status;
  EXPECT_TRUE(second.result().status.ok()) << second.result().status;
}

// A call finished on a worker thread frees its stream slot before its reply
// leaves, so the client's next call never finds the slot still taken.
TEST(ServerTest, SlotFreedByWorkerFinishIsFreeForTheNextCall) {
  ServerOptions options = TestServerOptions();
  options.max_concurrent_streams = 1;
  Server server(options);
  ASSERT_TRUE(server.RegisterSync("Sync/Echo", [](ServerCall& call, std::string* out) {
    *out = call.request();
    return absl::OkStatus();
  }).ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);
  for (int i = 0; i < 500; ++i) {
    client::CallResult r = ch->CallBlocking("Sync/Echo", "x", WithTimeout(absl::Seconds(10)));
    ASSERT_TRUE(r.status.ok()) << "call " << i << ": " << r.status;
  }
}

// active_calls() is documented as "calls being served right now".
TEST(ServerTest, ActiveCallsCountsCallsInFlight) {
  Server server(TestServerOptions());
  HeldCalls held;
  ASSERT_TRUE(server.RegisterAsync("Slow/Hold", [&](std::shared_ptr<ServerCall> call) {
    held.Add(std::move(call));
  }).ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);
  EXPECT_EQ(server.active_calls(), 0);

  ResultSlot a, b;
  ch->Call("Slow/Hold", "", WithTimeout(absl::Seconds(20)), a.Callback());
  ch->Call("Slow/Hold", "", WithTimeout(absl::Seconds(20)), b.Callback());
  ASSERT_TRUE(held.WaitForCount(2, kWaitLimit));
  EXPECT_EQ(server.active_calls(), 2);

  held.FinishAll(absl::OkStatus(), "");
  ASSERT_TRUE(a.WaitFor(kWaitLimit));
  ASSERT_TRUE(b.WaitFor(kWaitLimit));
  EXPECT_TRUE(WaitUntil([&] { return server.active_calls() == 0; }, kWaitLimit));
}

// 6. Shutdown drains: the call in flight completes, new calls are refused.
TEST(ServerTest, GracefulShutdownWaitsForCallInFlight) {
  Server server(TestServerOptions());
  Signal started;
  ASSERT_TRUE(server
                  .RegisterAsync("Slow/200ms",
                                 [&](std::shared_ptr<ServerCall> call) {
                                   started.Notify();
                                   call->executor().RunAfter(absl::Milliseconds(200), [call] {
                                     call->Finish(absl::OkStatus(), "done");
                                   });
                                 })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  ResultSlot in_flight;
  ch->Call("Slow/200ms", "", WithTimeout(absl::Seconds(20)), in_flight.Callback());
  ASSERT_TRUE(started.WaitFor(kWaitLimit));

  BackgroundTask shutdown([&] { server.Shutdown(absl::Seconds(5)); });

  // The client sees the GOAWAY: its connection stops being ready.
  ASSERT_TRUE(WaitUntil([&] { return ch->ReadyConnections() == 0; }, kWaitLimit));
  client::CallResult late = ch->CallBlocking("Slow/200ms", "", WithTimeout(absl::Seconds(10)));
  EXPECT_EQ(late.status.code(), absl::StatusCode::kUnavailable) << late.status;
  EXPECT_TRUE(late.not_processed);

  ASSERT_TRUE(in_flight.WaitFor(kWaitLimit));
  client::CallResult r = in_flight.result();
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "done");

  shutdown.JoinWithin(kWaitLimit, "Server::Shutdown(5s)");
  EXPECT_EQ(server.active_calls(), 0);
  EXPECT_EQ(server.connection_count(), 0u);
}

// 7. A handler that never finishes is cancelled when the drain time is up.
TEST(ServerTest, DrainTimeoutCancelsStuckCall) {
  Server server(TestServerOptions());
  Signal started, cancelled;
  ASSERT_TRUE(server
                  .RegisterAsync("Stuck",
                                 [&](std::shared_ptr<ServerCall> call) {
                                   call->OnCancel([&] { cancelled.Notify(); });
                                   started.Notify();
                                   // Never finishes.
                                 })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  ResultSlot stuck;
  ch->Call("Stuck", "", WithTimeout(absl::Seconds(60)), stuck.Callback());
  ASSERT_TRUE(started.WaitFor(kWaitLimit));

  const absl::Time t0 = absl::Now();
  BackgroundTask shutdown([&] { server.Shutdown(absl::Milliseconds(200)); });
  shutdown.JoinWithin(kWaitLimit, "Server::Shutdown(200ms) with a stuck call");
  const absl::Duration took = absl::Now() - t0;
  EXPECT_GE(took, absl::Milliseconds(190));  // it did wait for the drain
  EXPECT_LT(took, absl::Seconds(5));         // and no longer than the drain

  EXPECT_TRUE(cancelled.WaitFor(kWaitLimit)) << "OnCancel did not run";
  // Well before the call's own 60s deadline.
  ASSERT_TRUE(stuck.WaitFor(kWaitLimit));
  EXPECT_THAT(stuck.result().status.code(),
              AnyOf(absl::StatusCode::kUnavailable, absl::StatusCode::kCancelled))
      << stuck.result().status;
}

// 8.
TEST(ServerTest, ClientCancellationReachesServer) {
  Server server(TestServerOptions());
  HeldCalls held;
  Signal server_cancelled;
  ASSERT_TRUE(server
                  .RegisterAsync("Slow/Cancellable",
                                 [&](std::shared_ptr<ServerCall> call) {
                                   call->OnCancel([&] { server_cancelled.Notify(); });
                                   held.Add(std::move(call));
                                 })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  ResultSlot slot;
  client::CallHandle h =
      ch->Call("Slow/Cancellable", "", WithTimeout(absl::Seconds(60)), slot.Callback());
  ASSERT_TRUE(held.WaitForCount(1, kWaitLimit));

  h.Cancel();
  // The handler never answers, so only the local cancellation can end it.
  ASSERT_TRUE(slot.WaitFor(absl::Seconds(5)));
  EXPECT_EQ(slot.result().status.code(), absl::StatusCode::kCancelled) << slot.result().status;
  EXPECT_TRUE(slot.result().endpoint.empty());

  EXPECT_TRUE(server_cancelled.WaitFor(kWaitLimit)) << "server OnCancel did not run";
  std::vector<std::shared_ptr<ServerCall>> calls = held.Take();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_TRUE(calls[0]->IsCancelled());
  calls[0]->Finish(absl::CancelledError("gave up"));  // the reply is dropped by the client
  calls.clear();

  h.Cancel();  // a second Cancel is harmless
}

// A cancel hook replaced by another is destroyed outside the call's lock:
// one whose captures answer the call when destroyed (a guard that makes
// sure every call is answered) must not wait on that lock forever.
TEST(ServerTest, ReplacedCancelHookMayAnswerTheCallWhenDestroyed) {
  struct AnswerWhenDestroyed {
    explicit AnswerWhenDestroyed(std::shared_ptr<ServerCall> c) : call(std::move(c)) {}
    AnswerWhenDestroyed(AnswerWhenDestroyed&& other) noexcept : call(std::move(other.call)) {}
    AnswerWhenDestroyed& operator=(AnswerWhenDestroyed&&) = delete;
    ~AnswerWhenDestroyed() {
      if (call != nullptr) call->Finish(absl::OkStatus(), "answered by the replaced hook");
    }
    std::shared_ptr<ServerCall> call;
  };
  Server server(TestServerOptions());
  ASSERT_TRUE(server
                  .RegisterAsync("Hook/Replace",
                                 [](std::shared_ptr<ServerCall> call) {
                                   call->OnCancel([guard = AnswerWhenDestroyed(call)] {});
                                   call->OnCancel([] {});  // destroys the first hook
                                 })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);
  client::CallResult r = ch->CallBlocking("Hook/Replace", "", WithTimeout(absl::Seconds(5)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "answered by the replaced hook");
}

// 9.
TEST(ServerTest, ClientDeadlineReachesServer) {
  Server server(TestServerOptions());
  Signal started, server_cancelled;
  std::atomic<bool> saw_cancel_flag{false};
  ASSERT_TRUE(server
                  .RegisterAsync("Slow/2s",
                                 [&](std::shared_ptr<ServerCall> call) {
                                   std::weak_ptr<ServerCall> weak = call;
                                   call->OnCancel([&, weak] {
                                     if (auto c = weak.lock()) saw_cancel_flag = c->IsCancelled();
                                     server_cancelled.Notify();
                                   });
                                   started.Notify();
                                   call->executor().RunAfter(absl::Seconds(2), [call] {
                                     call->Finish(absl::OkStatus(), "late");
                                   });
                                 })
                  .ok());
  ASSERT_TRUE(server
                  .RegisterAsync("Echo/Say",
                                 [](std::shared_ptr<ServerCall> call) {
                                   call->Finish(absl::OkStatus(), call->request());
                                 })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  const absl::Time t0 = absl::Now();
  client::CallResult r = ch->CallBlocking("Slow/2s", "", WithTimeout(absl::Milliseconds(100)));
  const absl::Duration took = absl::Now() - t0;
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded) << r.status;
  EXPECT_LT(took, absl::Seconds(1));
  EXPECT_TRUE(r.payload.empty());
  ASSERT_TRUE(started.Notified());

  EXPECT_TRUE(server_cancelled.WaitFor(kWaitLimit)) << "server-side call was not cancelled";
  EXPECT_TRUE(saw_cancel_flag.load());

  // The same channel and connection still serve calls; any late reply for
  // the expired call was dropped without harm.
  client::CallResult ok = ch->CallBlocking("Echo/Say", "after", WithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(ok.status.ok()) << ok.status;
  EXPECT_EQ(ok.payload, "after");
  EXPECT_EQ(ch->ReadyConnections(), 1);
  EXPECT_EQ(server.connection_count(), 1u);
}

// 10.
TEST(ServerTest, RegistrationAndStartErrors) {
  auto noop_async = [](std::shared_ptr<ServerCall> call) { call->Finish(absl::OkStatus()); };
  auto noop_sync = [](ServerCall&, std::string*) { return absl::OkStatus(); };

  Server server(TestServerOptions());
  ASSERT_TRUE(server.RegisterAsync("Svc/A", noop_async).ok());
  absl::Status dup = server.RegisterAsync("Svc/A", noop_async);
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists) << dup;
  EXPECT_THAT(std::string(dup.message()), HasSubstr("Svc/A"));
  dup = server.RegisterSync("Svc/A", noop_sync);
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists) << dup;

  StartOnLoopback(server);
  absl::Status late = server.RegisterAsync("Svc/B", noop_async);
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition) << late;
  late = server.RegisterSync("Svc/C", noop_sync);
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition) << late;
  absl::StatusOr<int> again = server.Start("127.0.0.1:0");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();

  Server other(TestServerOptions());
  ASSERT_TRUE(other.RegisterAsync("Svc/A", noop_async).ok());
  absl::StatusOr<int> busy = other.Start(server.address());
  ASSERT_FALSE(busy.ok()) << "bound " << server.address() << " twice";
  EXPECT_THAT(std::string(busy.status().message()), HasSubstr(server.address()));

  // The first server is unaffected.
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);
  client::CallResult r = ch->CallBlocking("Svc/A", "", WithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(r.status.ok()) << r.status;
}

// ServerCall::Finish is "any thread", and CallCounter exists "so that a late
// Finish is safe": a handler that hands its call to other work may finish it
// after the server has shut down.
TEST(ServerTest, FinishAfterShutdownIsSafe) {
  auto server = std::make_unique<Server>(TestServerOptions());
  HeldCalls held;
  ASSERT_TRUE(server->RegisterAsync("Slow/Hold", [&](std::shared_ptr<ServerCall> call) {
    held.Add(std::move(call));
  }).ok());
  StartOnLoopback(*server);
  auto ch = MakeChannel(server->address());
  ASSERT_NE(ch, nullptr);

  ResultSlot slot;
  ch->Call("Slow/Hold", "", WithTimeout(absl::Seconds(20)), slot.Callback());
  ASSERT_TRUE(held.WaitForCount(1, kWaitLimit));
  server->Shutdown(absl::Milliseconds(50));
  ASSERT_TRUE(slot.WaitFor(kWaitLimit));
  EXPECT_EQ(slot.result().status.code(), absl::StatusCode::kUnavailable) << slot.result().status;

  server.reset();
  held.FinishAll(absl::OkStatus(), "too late");  // must be ignored, not crash
}

// --- Server-side protection ---

// A blocking connection that speaks the protocol by hand, for what a Channel
// does not send: a call with no deadline, several requests in one write, or
// a wait for the server's own answer past the call's deadline.
class RawConnection {
 public:
  explicit RawConnection(const std::string& address) {
    absl::StatusOr<transport::SocketAddress> addr = transport::ParseHostPort(address);
    EXPECT_TRUE(addr.ok()) << addr.status();
    if (!addr.ok()) return;
    fd_ = socket(addr->storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd_, reinterpret_cast<const sockaddr*>(&addr->storage), addr->len) != 0) {
      ADD_FAILURE() << "connect to " << address << " failed";
      close(fd_);
      fd_ = -1;
    }
  }
  ~RawConnection() {
    if (fd_ >= 0) close(fd_);
  }

  bool Write(const std::string& bytes) {
    size_t off = 0;
    while (fd_ >= 0 && off < bytes.size()) {
      ssize_t n = write(fd_, bytes.data() + off, bytes.size() - off);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return off == bytes.size();
  }

  // The next RESPONSE frame, or an error after `timeout`.
  absl::StatusOr<transport::Response> ReadResponse(absl::Duration timeout,
                                                   uint32_t* stream_id = nullptr,
                                                   uint16_t* flags = nullptr) {
    const absl::Time give_up = absl::Now() + timeout;
    for (;;) {
      transport::FrameView frame;
      size_t used = 0;
      absl::Status s = transport::DecodeFrame(in_, transport::FrameLimits{}, &frame, &used);
      if (!s.ok()) return s;
      if (used > 0) {
        std::string body(frame.body);
        const transport::FrameHeader header = frame.header;
        in_.erase(0, used);
        if (header.type != static_cast<uint8_t>(transport::FrameType::kResponse)) continue;
        if (stream_id != nullptr) *stream_id = header.stream_id;
        if (flags != nullptr) *flags = header.flags;
        return transport::ParseResponseBody(body, transport::FrameLimits{});
      }
      const absl::Duration left = give_up - absl::Now();
      if (fd_ < 0 || left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError("no response from the server");
      }
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
      char buf[4096];
      ssize_t n = read(fd_, buf, sizeof(buf));
      if (n <= 0) return absl::UnavailableError("connection closed by the server");
      in_.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  std::string in_;
};

std::string RequestFrame(uint32_t stream_id, absl::string_view method, absl::Duration timeout,
                         absl::string_view payload = "") {
  std::string out;
  transport::AppendRequest(&out, stream_id, method, timeout, {}, payload);
  return out;
}

// Replies whether the thread's installed deadline is the call's.
std::string DescribeDeadline(absl::Time call_deadline) {
  const absl::Time installed = core::CurrentDeadline();
  if (installed == call_deadline) {
    return call_deadline == absl::InfiniteFuture() ? "same:infinite" : "same:finite";
  }
  return absl::StrCat("differs: installed ", absl::FormatTime(installed), ", call ",
                      absl::FormatTime(call_deadline));
}

// A handler's outgoing calls inherit its call's deadline: the server
// installs it as core::CurrentDeadline() while the handler runs, and removes
// it afterwards (a later call without a deadline sees none).
TEST(ServerProtectionTest, HandlersRunUnderTheirCallsDeadline) {
  ServerOptions options = TestServerOptions();
  options.io_threads = 1;
  options.worker_threads = 1;  // the calls below share one thread of each kind
  std::mutex mu;
  std::string after_async;
  Signal after_async_done;
  Server server(options);  // after what its handlers use, so it goes first
  ASSERT_TRUE(server
                  .RegisterSync("Deadline/Sync",
                                [](ServerCall& call, std::string* out) {
                                  *out = DescribeDeadline(call.deadline());
                                  return absl::OkStatus();
                                })
                  .ok());
  ASSERT_TRUE(server
                  .RegisterAsync("Deadline/Async",
                                 [&](std::shared_ptr<ServerCall> call) {
                                   // Runs on this reactor thread once the handler
                                   // returned. Only for the call that asks: the test
                                   // waits for one.
                                   if (call->request() == "check-after") {
                                     call->executor().Post([&] {
                                       std::lock_guard<std::mutex> lock(mu);
                                       after_async = DescribeDeadline(absl::InfiniteFuture());
                                       after_async_done.Notify();
                                     });
                                   }
                                   call->Finish(absl::OkStatus(),
                                                DescribeDeadline(call->deadline()));
                                 })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  client::CallResult r = ch->CallBlocking("Deadline/Sync", "", WithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "same:finite");
  r = ch->CallBlocking("Deadline/Async", "check-after", WithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "same:finite");
  ASSERT_TRUE(after_async_done.WaitFor(kWaitLimit));
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(after_async, "same:infinite");
  }

  // Calls with no deadline, on the same threads: nothing was left installed.
  RawConnection raw(server.address());
  ASSERT_TRUE(raw.Write(RequestFrame(1, "Deadline/Sync", absl::InfiniteDuration())));
  absl::StatusOr<transport::Response> resp = raw.ReadResponse(kWaitLimit);
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(resp->payload, "same:infinite");
  ASSERT_TRUE(raw.Write(RequestFrame(3, "Deadline/Async", absl::InfiniteDuration())));
  resp = raw.ReadResponse(kWaitLimit);
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(resp->payload, "same:infinite");
}

// Sync handlers that block until the test opens the gate.
class Gate {
 public:
  absl::Status Pass() {
    std::unique_lock<std::mutex> lock(mu_);
    ++waiting_;
    cv_.notify_all();
    // Bounded so that a broken test ends instead of hanging.
    if (!cv_.wait_for(lock, absl::ToChronoNanoseconds(kWaitLimit), [&] { return open_; })) {
      return absl::InternalError("gate never opened");
    }
    return absl::OkStatus();
  }
  bool WaitForWaiting(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kWaitLimit),
                        [&] { return waiting_ >= n; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  bool open_ = false;
};

// A sync call stuck behind slow work until its deadline passed is answered
// DEADLINE_EXCEEDED, saying so, and its handler never runs, not even once a
// worker is free.
TEST(ServerProtectionTest, QueuedSyncCallPastItsDeadlineIsNotRun) {
  ServerOptions options = TestServerOptions();
  options.worker_threads = 2;
  Gate gate;
  std::atomic<int> counted_runs{0};
  Server server(options);
  ASSERT_TRUE(server.RegisterSync("Slow/Gate", [&](ServerCall&, std::string*) {
    return gate.Pass();
  }).ok());
  ASSERT_TRUE(server.RegisterSync("Fast/Counted", [&](ServerCall&, std::string* out) {
    counted_runs.fetch_add(1);
    *out = "ran";
    return absl::OkStatus();
  }).ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  ResultSlot slow1, slow2;
  ch->Call("Slow/Gate", "", WithTimeout(absl::Seconds(60)), slow1.Callback());
  ch->Call("Slow/Gate", "", WithTimeout(absl::Seconds(60)), slow2.Callback());
  ASSERT_TRUE(gate.WaitForWaiting(2));  // both workers are busy

  // A raw call, so that the answer read is the server's, not the client's
  // own deadline firing.
  RawConnection raw(server.address());
  ASSERT_TRUE(raw.Write(RequestFrame(1, "Fast/Counted", absl::Milliseconds(200))));
  absl::StatusOr<transport::Response> resp = raw.ReadResponse(kWaitLimit);
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(resp->code, absl::StatusCode::kDeadlineExceeded) << resp->message;
  EXPECT_THAT(resp->message, HasSubstr("before the handler of Fast/Counted started"));
  EXPECT_THAT(resp->message, HasSubstr("queued"));
  EXPECT_THAT(resp->message, HasSubstr("waiting for a worker"));
  EXPECT_EQ(server.stats().rejected_expired, 1);

  gate.Open();
  ASSERT_TRUE(slow1.WaitFor(kWaitLimit));
  ASSERT_TRUE(slow2.WaitFor(kWaitLimit));
  EXPECT_TRUE(slow1.result().status.ok()) << slow1.result().status;
  // The workers went on to the queued call; it must still not run.
  client::CallResult after = ch->CallBlocking("Fast/Counted", "", WithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(after.status.ok()) << after.status;
  EXPECT_EQ(counted_runs.load(), 1);  // only the call just made
  ServerStats stats = server.stats();
  EXPECT_EQ(stats.rejected_expired, 1);
  EXPECT_EQ(stats.calls, 4);
}

// A request that has no time left by the moment it could be dispatched (here
// the reactor was kept busy after reading it) is answered at once and its
// handler never runs.
TEST(ServerProtectionTest, CallArrivingWithNoTimeLeftIsNotDispatched) {
  ServerOptions options = TestServerOptions();
  options.io_threads = 1;
  std::atomic<int> counted_runs{0};
  Server server(options);
  ASSERT_TRUE(server.RegisterAsync("Block/Reactor", [](std::shared_ptr<ServerCall> call) {
    absl::SleepFor(absl::Milliseconds(100));  // what an async handler must never do
    call->Finish(absl::OkStatus(), "blocked");
  }).ok());
  ASSERT_TRUE(server.RegisterAsync("Fast/Counted", [&](std::shared_ptr<ServerCall> call) {
    counted_runs.fetch_add(1);
    call->Finish(absl::OkStatus(), "ran");
  }).ok());
  StartOnLoopback(server);

  // One write: the server reads both requests together, so the second one's
  // 20ms run from before the first one's handler blocked for 100ms.
  RawConnection raw(server.address());
  ASSERT_TRUE(raw.Write(RequestFrame(1, "Block/Reactor", absl::Seconds(10)) +
                        RequestFrame(3, "Fast/Counted", absl::Milliseconds(20))));
  std::map<uint32_t, transport::Response> by_stream;
  for (int i = 0; i < 2; ++i) {
    uint32_t id = 0;
    absl::StatusOr<transport::Response> resp = raw.ReadResponse(kWaitLimit, &id);
    ASSERT_TRUE(resp.ok()) << resp.status();
    by_stream[id] = *resp;
  }
  EXPECT_EQ(by_stream[1].code, absl::StatusCode::kOk);
  EXPECT_EQ(by_stream[3].code, absl::StatusCode::kDeadlineExceeded) << by_stream[3].message;
  EXPECT_THAT(by_stream[3].message, HasSubstr("before the handler of Fast/Counted started"));
  EXPECT_THAT(by_stream[3].message, HasSubstr("to be dispatched"));
  EXPECT_EQ(counted_runs.load(), 0);
  EXPECT_EQ(server.stats().rejected_expired, 1);
  EXPECT_EQ(server.stats().active_calls, 0);
}

// SetRetryPushback's value arrives as response metadata, in whole
// milliseconds rounded up, "-1" for "do not retry", set once per call.
TEST(ServerProtectionTest, RetryPushbackReachesTheClient) {
  Server server(TestServerOptions());
  ASSERT_TRUE(server
                  .RegisterSync("Busy/Pushback",
                                [](ServerCall& call, std::string*) {
                                  absl::Duration d;
                                  if (!absl::ParseDuration(call.request(), &d)) {
                                    return absl::InvalidArgumentError(call.request());
                                  }
                                  call.SetRetryPushback(absl::Seconds(7));  // replaced below
                                  call.SetRetryPushback(d);
                                  return absl::UnavailableError("busy, come back later");
                                })
                  .ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"250ms", "250"}, {"1500us", "2"}, {"0s", "0"}, {"-1s", "-1"}, {"inf", "-1"}};
  for (const auto& [delay, want] : cases) {
    client::CallResult r = ch->CallBlocking("Busy/Pushback", delay, WithTimeout(absl::Seconds(10)));
    EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
    std::vector<std::string> values;
    for (const auto& [k, v] : r.metadata) {
      if (k == transport::kRetryPushbackKey) values.push_back(v);
    }
    EXPECT_THAT(values, ::testing::ElementsAre(want)) << "SetRetryPushback(" << delay << ")";
  }
}

TEST(ServerProtectionTest, HealthCheckFollowsSetServing) {
  Server server(TestServerOptions());
  ASSERT_TRUE(server.RegisterAsync("Echo/Say", [](std::shared_ptr<ServerCall> call) {
    call->Finish(absl::OkStatus(), call->request());
  }).ok());
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);
  const client::CallOptions opts = WithTimeout(absl::Seconds(10));

  client::CallResult r = ch->CallBlocking(transport::kHealthCheckMethod, "", opts);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "SERVING");

  server.SetServing(false);
  r = ch->CallBlocking(transport::kHealthCheckMethod, "", opts);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_EQ(r.status.message(), "NOT_SERVING");
  // Only the health service says so: calls are still served.
  EXPECT_TRUE(ch->CallBlocking("Echo/Say", "x", opts).status.ok());

  server.SetServing(true);
  r = ch->CallBlocking(transport::kHealthCheckMethod, "", opts);
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "SERVING");

  ServerStats stats = server.stats();
  EXPECT_EQ(stats.health_checks, 3);
  EXPECT_EQ(stats.calls, 1);  // health checks are not calls
}

// From the moment Shutdown starts (here: while its pre-shutdown hook runs,
// before the drain) health checks say NOT_SERVING.
TEST(ServerProtectionTest, HealthCheckSaysNotServingOnceShutdownStarts) {
  Server server(TestServerOptions());
  Signal in_hook, checked;
  server.AddPreShutdownHook([&] {
    in_hook.Notify();
    checked.WaitFor(kWaitLimit);
  });
  StartOnLoopback(server);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);
  client::CallResult r =
      ch->CallBlocking(transport::kHealthCheckMethod, "", WithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(r.status.ok()) << r.status;

  BackgroundTask shutdown([&] { server.Shutdown(absl::Seconds(5)); });
  ASSERT_TRUE(in_hook.WaitFor(kWaitLimit));
  r = ch->CallBlocking(transport::kHealthCheckMethod, "", WithTimeout(absl::Seconds(10)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_EQ(r.status.message(), "NOT_SERVING");
  checked.Notify();
  shutdown.JoinWithin(kWaitLimit, "Server::Shutdown");
}

// A handler registered for the health method replaces the built-in one, and
// health_service = false removes it.
TEST(ServerProtectionTest, HealthServiceCanBeReplacedOrTurnedOff) {
  Server custom(TestServerOptions());
  ASSERT_TRUE(custom.RegisterAsync(transport::kHealthCheckMethod,
                                   [](std::shared_ptr<ServerCall> call) {
                                     call->Finish(absl::OkStatus(), "custom");
                                   })
                  .ok());
  StartOnLoopback(custom);
  ServerOptions off_options = TestServerOptions();
  off_options.health_service = false;
  Server off(off_options);
  StartOnLoopback(off);

  auto ch = MakeChannel(custom.address());
  ASSERT_NE(ch, nullptr);
  client::CallResult r =
      ch->CallBlocking(transport::kHealthCheckMethod, "", WithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, "custom");
  EXPECT_EQ(custom.stats().health_checks, 0);

  auto off_ch = MakeChannel(off.address());
  ASSERT_NE(off_ch, nullptr);
  r = off_ch->CallBlocking(transport::kHealthCheckMethod, "", WithTimeout(absl::Seconds(10)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnimplemented) << r.status;
}

// With the adaptive limit full (pinned at 1 here) a call is refused at once
// without running its handler, marked refused and naming the limit; a health
// check is still answered though the only worker is busy; once the call in
// flight ends its slot serves the next call.
TEST(ServerProtectionTest, AdaptiveLimitRefusesExcessButNotHealthChecks) {
  ServerOptions options = TestServerOptions();
  options.worker_threads = 1;
  options.adaptive_concurrency.enabled = true;
  options.adaptive_concurrency.min_limit = 1;
  options.adaptive_concurrency.initial_limit = 1;
  options.adaptive_concurrency.max_limit = 1;
  Gate gate;
  std::atomic<int> runs{0};
  Server server(options);
  ASSERT_TRUE(server.RegisterSync("Slow/Gate", [&](ServerCall&, std::string* out) {
    runs.fetch_add(1);
    *out = "done";
    return gate.Pass();
  }).ok());
  StartOnLoopback(server);
  EXPECT_EQ(server.stats().concurrency_limit, 1);
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);

  ResultSlot first;
  ch->Call("Slow/Gate", "", WithTimeout(absl::Seconds(60)), first.Callback());
  ASSERT_TRUE(gate.WaitForWaiting(1));

  client::CallResult shed = ch->CallBlocking("Slow/Gate", "", WithTimeout(absl::Seconds(10)));
  EXPECT_EQ(shed.status.code(), absl::StatusCode::kResourceExhausted) << shed.status;
  EXPECT_TRUE(shed.not_processed);
  EXPECT_THAT(std::string(shed.status.message()),
              HasSubstr("adaptive concurrency limit (1 calls in flight) reached"));
  EXPECT_EQ(shed.endpoint, server.address());

  client::CallResult health =
      ch->CallBlocking(transport::kHealthCheckMethod, "", WithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(health.status.ok()) << health.status;
  EXPECT_EQ(health.payload, "SERVING");

  gate.Open();
  ASSERT_TRUE(first.WaitFor(kWaitLimit));
  EXPECT_TRUE(first.result().status.ok()) << first.result().status;
  client::CallResult next = ch->CallBlocking("Slow/Gate", "", WithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(next.status.ok()) << next.status;
  EXPECT_EQ(runs.load(), 2);

  ServerStats stats = server.stats();
  EXPECT_EQ(stats.shed, 1);
  EXPECT_EQ(stats.calls, 3);
  EXPECT_EQ(stats.health_checks, 1);
  EXPECT_EQ(stats.concurrency_limit, 1);
}

TEST(ServerProtectionTest, InvalidAdaptiveOptionsFailStartNamingTheField) {
  ServerOptions options = TestServerOptions();
  options.adaptive_concurrency.enabled = true;
  options.adaptive_concurrency.min_limit = 0;
  Server server(options);
  absl::StatusOr<int> port = server.Start("127.0.0.1:0");
  EXPECT_EQ(port.status().code(), absl::StatusCode::kInvalidArgument) << port.status();
  EXPECT_THAT(std::string(port.status().message()),
              HasSubstr("ServerOptions.adaptive_concurrency.min_limit"));

  Server plain(TestServerOptions());
  EXPECT_EQ(plain.stats().concurrency_limit, 0);
  EXPECT_EQ(plain.stats().calls, 0);
}

// ServerOptions::admin_address: the standard pages and /server.json, with
// the server's connection and in-flight metrics; closed at shutdown.
TEST(ServerTest, AdminEndpointShowsTheServer) {
  metrics::Registry registry;
  ServerOptions o = TestServerOptions();
  o.metrics = &registry;
  o.admin_address = "127.0.0.1:0";
  Server server(o);
  ASSERT_TRUE(server
                  .RegisterSync("Echo/Sync",
                                [](ServerCall& call, std::string* out) {
                                  *out = call.request();
                                  return absl::OkStatus();
                                })
                  .ok());
  StartOnLoopback(server);
  const std::string admin = server.admin_address();
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(admin.substr(admin.rfind(':') + 1), &port)) << admin;
  auto ch = MakeChannel(server.address());
  ASSERT_NE(ch, nullptr);
  ASSERT_TRUE(ch->CallBlocking("Echo/Sync", "x", WithTimeout(absl::Seconds(10))).status.ok());

  std::string stats =
      admin::testing::Exchange(port, "GET /server.json HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(stats, "\"calls\":1")) << stats;
  EXPECT_TRUE(absl::StrContains(stats, "\"connections_opened\":1")) << stats;
  std::string text = admin::testing::Exchange(port, "GET /metrics HTTP/1.1\r\n\r\n");
  const std::string label = absl::StrCat("{server=\"", server.address(), "\"}");
  EXPECT_TRUE(absl::StrContains(text, absl::StrCat("meshlib_server_connections", label, " 1")))
      << text;
  EXPECT_TRUE(absl::StrContains(text, absl::StrCat("meshlib_server_in_flight", label, " 0")))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, R"(meshlib_server_requests_total{method="Echo/Sync",code="OK"} 1)"))
      << text;

  ch.reset();
  EXPECT_TRUE(testing::Eventually([&] { return server.stats().connections_closed == 1; },
                                  absl::Seconds(5)));
  server.Shutdown(absl::Seconds(1));
  EXPECT_EQ(admin::testing::Connect(port), -1) << "closed with the server";
}

TEST(ServerTest, ABadAdminAddressFailsStart) {
  ServerOptions o = TestServerOptions();
  o.admin_address = "127.0.0.1:99999";
  Server server(o);
  absl::StatusOr<int> port = server.Start("127.0.0.1:0");
  ASSERT_FALSE(port.ok());
  EXPECT_TRUE(absl::StrContains(port.status().message(), "ServerOptions.admin_address"))
      << port.status();
}

}  // namespace
}  // namespace meshlib::server
