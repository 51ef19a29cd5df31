// Functional tests of Server over real loopback sockets, driven by a real
// client::Channel: handlers, metadata, deadlines, cancellation, stream limits
// and graceful shutdown, as a user of the two would see them.
#include "meshlib/server/server.h"

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
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
#include "meshlib/client/channel.h"

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

}  // namespace
}  // namespace meshlib::server
