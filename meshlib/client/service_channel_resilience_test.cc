// Deadlines, retry pushback, hedging and fault injection in ServiceChannel,
// against real in-process servers over loopback.
#include <atomic>
#include <cstdio>
#include <functional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "meshlib/core/sync.h"
#include "gtest/gtest.h"
#include "meshlib/client/service_channel.h"
#include "meshlib/core/deadline_context.h"
#include "meshlib/server/server.h"
#include "meshlib/testing/in_memory_channel.h"
#include "meshlib/testing/subprocess.h"
#include "meshlib/transport/frame.h"

namespace meshlib::client {
namespace {

using json = nlohmann::json;
using testing::Eventually;

// A server whose Echo/Say runs `fn` on a worker thread.
struct TestServer {
  using Fn = std::function<absl::Status(server::ServerCall&, std::string*)>;
  explicit TestServer(Fn fn) : server(Options()) {
    EXPECT_TRUE(server
                    .RegisterSync("Echo/Say",
                                  [this, fn](server::ServerCall& call, std::string* out) {
                                    ++handled;
                                    return fn(call, out);
                                  })
                    .ok());
    EXPECT_TRUE(server.Start("127.0.0.1:0").ok());
  }
  static server::ServerOptions Options() {
    server::ServerOptions o;
    o.io_threads = 1;
    o.worker_threads = 8;
    return o;
  }
  std::string address() const { return server.address(); }
  std::atomic<int> handled{0};
  server::Server server;
};

absl::Status Echo(server::ServerCall& call, std::string* out) {
  *out = call.request();
  return absl::OkStatus();
}

// Sleeps `d` unless the call is cancelled first; counts cancellations.
TestServer::Fn SlowEcho(absl::Duration d, std::atomic<int>* cancelled = nullptr) {
  return [d, cancelled](server::ServerCall& call, std::string* out) {
    absl::Time until = absl::Now() + d;
    while (absl::Now() < until) {
      if (call.IsCancelled()) {
        if (cancelled != nullptr) ++*cancelled;
        return absl::CancelledError("cancelled");
      }
      absl::SleepFor(absl::Milliseconds(1));
    }
    *out = call.request();
    return absl::OkStatus();
  };
}

std::shared_ptr<ServiceChannel> Open(const std::vector<std::string>& addrs, json extra = {}) {
  ServiceChannelOptions o;
  o.channel.default_timeout = absl::Seconds(5);
  if (extra.contains("outlier_detection")) o.outlier_detection = extra["outlier_detection"];
  if (extra.contains("health_check")) o.health_check = extra["health_check"];
  if (extra.contains("retry")) o.retry = extra["retry"];
  if (extra.contains("hedging")) o.hedging = extra["hedging"];
  if (extra.contains("fault")) o.fault = extra["fault"];
  if (extra.contains("load_balancer")) o.load_balancer = extra["load_balancer"];
  auto sc = ServiceChannel::Create("echo", json{{"static", {{"endpoints", addrs}}}}, o);
  EXPECT_TRUE(sc.ok()) << sc.status();
  if (!sc.ok()) return nullptr;
  EXPECT_TRUE((*sc)->WaitForEndpoints(absl::Seconds(5)));
  return *std::move(sc);
}

// Waits until every endpoint has a ready connection, so that picks are
// not skewed by connection setup.
void WarmUp(ServiceChannel& sc, int calls = 20) {
  for (int i = 0; i < calls; ++i) sc.CallBlocking("Echo/Say", "warm");
}

// --- Per-try timeouts ---

// An attempt that runs out of its per-try timeout on a stalled endpoint is
// retried elsewhere (idempotent calls only), without DEADLINE_EXCEEDED in
// retry_on; a call that is not idempotent gets the timeout as its answer.
TEST(ServiceChannelRetryTest, PerTryTimeoutIsRetriedElsewhereForIdempotentCalls) {
  TestServer stalled(SlowEcho(absl::Seconds(2)));
  TestServer fast(Echo);
  auto sc = Open({stalled.address(), fast.address()},
                 {{"load_balancer", json::parse(R"([{"round_robin": {}}])")},
                  {"retry", json::parse(R"({"max_attempts": 3, "per_try_timeout": "50ms",
                                            "retry_on": ["UNAVAILABLE"],
                                            "budget": {"ratio": 1.0}})")}});
  CallOptions o;
  o.idempotent = true;
  o.timeout = absl::Seconds(1);
  for (int i = 0; i < 10; ++i) {
    CallResult r = sc->CallBlocking("Echo/Say", "x", o);
    EXPECT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.endpoint, fast.address());
  }
  EXPECT_GE(sc->stats().retries, 4u);  // about half the calls went to the stalled one first
  // The asynchronous path too.
  for (int i = 0; i < 10; ++i) {
    core::Notification done;
    CallResult got;
    sc->Call("Echo/Say", "x", o, [&](CallResult r) {
      got = std::move(r);
      done.Notify();
    });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
    EXPECT_TRUE(got.status.ok()) << got.status;
  }
  o.idempotent = false;
  int timed_out = 0;
  for (int i = 0; i < 4; ++i) {
    CallResult r = sc->CallBlocking("Echo/Say", "x", o);
    if (r.status.code() == absl::StatusCode::kDeadlineExceeded) ++timed_out;
  }
  EXPECT_GE(timed_out, 1);  // round robin sent at least one to the stalled one
}

// --- Aperture bounds connections ---

// 30 endpoints and an aperture of 4: connections (and calls) go only to the
// subset, never to all 30; health probes do not open the others either.
TEST(ServiceChannelApertureTest, ConnectionsStayWithinTheAperture) {
  std::vector<std::unique_ptr<server::Server>> servers;
  std::vector<std::unique_ptr<std::atomic<int>>> handled;
  std::vector<std::string> addrs;
  for (int i = 0; i < 30; ++i) {
    server::ServerOptions o;
    o.io_threads = 1;
    o.worker_threads = 1;
    servers.push_back(std::make_unique<server::Server>(o));
    handled.push_back(std::make_unique<std::atomic<int>>(0));
    std::atomic<int>* count = handled.back().get();
    ASSERT_TRUE(servers.back()
                    ->RegisterSync("Echo/Say",
                                   [count](server::ServerCall& call, std::string* out) {
                                     ++*count;
                                     return Echo(call, out);
                                   })
                    .ok());
    ASSERT_TRUE(servers.back()->Start("127.0.0.1:0").ok());
    addrs.push_back(servers.back()->address());
  }
  auto sc = Open(addrs, {{"load_balancer", json::parse(R"([{"aperture": {"size": 4,
                              "policy": [{"round_robin": {}}]}}])")},
                         {"health_check",
                          json::parse(R"({"interval": "100ms", "timeout": "50ms"})")}});
  ASSERT_NE(sc, nullptr);
  for (int i = 0; i < 1000; ++i) {
    CallResult r = sc->CallBlocking("Echo/Say", "x");
    ASSERT_TRUE(r.status.ok()) << r.status;
  }
  // Several health-probe rounds pass: probing must not connect outside the
  // aperture either.
  absl::SleepFor(absl::Milliseconds(500));
  int connected = 0, called = 0;
  for (const EndpointState& e : sc->EndpointStates()) connected += e.connected ? 1 : 0;
  for (const auto& h : handled) called += h->load() > 0 ? 1 : 0;
  std::printf("aperture 4 of 30: %d endpoints connected, %d called\n", connected, called);
  EXPECT_GE(connected, 4);
  EXPECT_LE(connected, 6);
  EXPECT_LE(called, 6);
  EXPECT_EQ(sc->EndpointStates().size(), 30u);
}

// --- Deadlines ---

TEST(ServiceChannelDeadlineTest, ExplicitDeadlineShortensTheTimeoutAndTravelsToTheServer) {
  std::atomic<int64_t> seen_ms{-1};
  TestServer s([&](server::ServerCall& call, std::string* out) {
    seen_ms = absl::ToInt64Milliseconds(call.RemainingTime());
    return Echo(call, out);
  });
  auto sc = Open({s.address()});
  CallOptions o;
  o.timeout = absl::Seconds(30);
  o.deadline = absl::Now() + absl::Milliseconds(800);
  CallResult r = sc->CallBlocking("Echo/Say", "x", o);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_GT(seen_ms.load(), 0);
  EXPECT_LE(seen_ms.load(), 800);  // not the 30s timeout
}

TEST(ServiceChannelDeadlineTest, DeadlineOfTheCallBeingServedIsInherited) {
  std::atomic<int64_t> seen_ms{-1};
  TestServer s([&](server::ServerCall& call, std::string* out) {
    seen_ms = absl::ToInt64Milliseconds(call.RemainingTime());
    return Echo(call, out);
  });
  auto sc = Open({s.address()});
  {
    core::ScopedDeadline scope(absl::Now() + absl::Milliseconds(600));
    CallResult r = sc->CallBlocking("Echo/Say", "x");  // default timeout 5s
    ASSERT_TRUE(r.status.ok()) << r.status;
  }
  EXPECT_GT(seen_ms.load(), 0);
  EXPECT_LE(seen_ms.load(), 600);
  // Outside the scope the default timeout applies again.
  ASSERT_TRUE(sc->CallBlocking("Echo/Say", "x").status.ok());
  EXPECT_GT(seen_ms.load(), 1000);
}

TEST(ServiceChannelDeadlineTest, PassedDeadlineFailsAtOnceWithoutSending) {
  TestServer s(Echo);
  auto sc = Open({s.address()});
  WarmUp(*sc, 1);
  int before = s.handled.load();
  core::ScopedDeadline scope(absl::Now() - absl::Milliseconds(5));
  for (bool blocking : {true, false}) {
    CallResult r;
    if (blocking) {
      r = sc->CallBlocking("Echo/Say", "x");
    } else {
      core::Notification done;
      sc->Call("Echo/Say", "x", {}, [&](CallResult res) {
        r = std::move(res);
        done.Notify();
      });
      done.WaitForNotification();
    }
    EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded) << r.status;
  }
  // A single Channel does the same, naming the context.
  auto ch = Channel::Create(s.address(), {}).value();
  CallResult r = ch->CallBlocking("Echo/Say", "x");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StrContains(r.status.message(), "calling context")) << r.status;
  EXPECT_EQ(s.handled.load(), before);
}

// A chain: client -> A -> B. A's handler calls B with no deadline of its
// own; when the client gives up on A, B's work is cancelled too.
TEST(ServiceChannelDeadlineTest, ChainStopsWorkNobodyWaitsFor) {
  std::atomic<int> b_cancelled{0};
  std::atomic<int64_t> b_budget_ms{-1};
  TestServer b([&](server::ServerCall& call, std::string* out) {
    b_budget_ms = absl::ToInt64Milliseconds(call.RemainingTime());
    return SlowEcho(absl::Seconds(5), &b_cancelled)(call, out);
  });
  auto to_b = Open({b.address()});
  TestServer a([&](server::ServerCall& call, std::string* out) {
    absl::SleepFor(absl::Milliseconds(50));  // time spent in A before calling B
    CallResult r = to_b->CallBlocking("Echo/Say", call.request());
    *out = r.payload;
    return r.status;
  });
  auto to_a = Open({a.address()});
  CallOptions o;
  o.timeout = absl::Milliseconds(400);
  absl::Time start = absl::Now();
  CallResult r = to_a->CallBlocking("Echo/Say", "x", o);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded) << r.status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  // B got what was left of the 400ms (minus A's 50ms), not the 5s default,
  // and stopped working when it ran out.
  ASSERT_TRUE(Eventually([&] { return b_cancelled.load() == 1; }, absl::Seconds(3)));
  EXPECT_GT(b_budget_ms.load(), 0);
  EXPECT_LE(b_budget_ms.load(), 360);
}

// --- Retry pushback ---

TEST(ServiceChannelPushbackTest, NegativePushbackStopsRetries) {
  TestServer a([](server::ServerCall& call, std::string*) {
    call.AddResponseMetadata(transport::kRetryPushbackKey, "-1");
    return absl::UnavailableError("overloaded, do not retry");
  });
  TestServer b(Echo);
  auto sc = Open({a.address(), b.address()},
                 {{"retry", {{"max_attempts", 3}}}, {"load_balancer", json::parse(R"([{"round_robin": {}}])")}});
  WarmUp(*sc);
  CallOptions o;
  o.idempotent = true;
  int failed = 0;
  for (int i = 0; i < 20; ++i) failed += !sc->CallBlocking("Echo/Say", "x", o).status.ok();
  // Every call that hit `a` failed rather than being retried on `b`.
  EXPECT_GE(failed, 5);
  EXPECT_EQ(static_cast<uint64_t>(failed), sc->stats().pushback_stops);
  EXPECT_EQ(sc->stats().retries, 0u);
}

TEST(ServiceChannelPushbackTest, PositivePushbackSetsTheRetryDelay) {
  std::atomic<int> calls{0};
  TestServer a([&](server::ServerCall& call, std::string* out) {
    if (calls.fetch_add(1) == 0) {
      call.AddResponseMetadata(transport::kRetryPushbackKey, "300");
      return absl::UnavailableError("busy; come back in 300ms");
    }
    return Echo(call, out);
  });
  // Backoff alone would wait at most 5ms.
  auto sc = Open({a.address()},
                 {{"retry", {{"max_attempts", 2}, {"backoff", {{"base", "1ms"}, {"max", "5ms"}}}}}});
  CallOptions o;
  o.idempotent = true;
  absl::Time start = absl::Now();
  CallResult r = sc->CallBlocking("Echo/Say", "x", o);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(290));
  EXPECT_EQ(sc->stats().retries, 1u);
}

// --- Hedging ---

TEST(ServiceChannelHedgingTest, SlowAttemptIsHedgedAndTheLoserCancelled) {
  std::atomic<int> slow_cancelled{0};
  TestServer slow(SlowEcho(absl::Seconds(3), &slow_cancelled));
  TestServer fast(Echo);
  auto sc = Open({slow.address(), fast.address()},
                 {{"hedging", {{"delay", "30ms"}}}, {"load_balancer", json::parse(R"([{"round_robin": {}}])")}});
  ASSERT_TRUE(Eventually([&] {
    return sc->EndpointStatsFor(slow.address()) && sc->EndpointStatsFor(fast.address());
  }, absl::Seconds(5)));
  CallOptions o;
  o.idempotent = true;
  int slow_first = 0;
  for (int i = 0; i < 6; ++i) {
    absl::Time start = absl::Now();
    CallResult r = sc->CallBlocking("Echo/Say", "x", o);
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.endpoint, fast.address());
    EXPECT_LT(absl::Now() - start, absl::Seconds(2));
    slow_first = slow.handled.load();
  }
  // Round robin sent about half of the first attempts to the slow server;
  // each was hedged to the fast one and then cancelled on the slow one.
  EXPECT_GE(slow_first, 2);
  EXPECT_GE(sc->stats().hedges, static_cast<uint64_t>(slow_first));
  ASSERT_TRUE(Eventually([&] { return slow_cancelled.load() == slow_first; }, absl::Seconds(5)));
}

TEST(ServiceChannelHedgingTest, NotIdempotentIsNeverHedged) {
  TestServer slow(SlowEcho(absl::Milliseconds(200)));
  TestServer other(SlowEcho(absl::Milliseconds(200)));
  auto sc = Open({slow.address(), other.address()}, {{"hedging", {{"delay", "10ms"}}}});
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(sc->CallBlocking("Echo/Say", "x").status.ok());
  EXPECT_EQ(sc->stats().hedges, 0u);
  EXPECT_EQ(slow.handled.load() + other.handled.load(), 4);
}

TEST(ServiceChannelHedgingTest, HedgesDrawOnTheRetryBudget) {
  // Everything is slow: every call would like a hedge. A budget of 10% and
  // no floor allows about one hedge per ten calls.
  TestServer a(SlowEcho(absl::Milliseconds(40)));
  TestServer b(SlowEcho(absl::Milliseconds(40)));
  auto sc = Open({a.address(), b.address()},
                 {{"hedging", {{"delay", "5ms"}}},
                  {"retry", {{"max_attempts", 1},
                             {"budget", {{"ratio", 0.1}, {"min_per_second", 0}}}}}});
  CallOptions o;
  o.idempotent = true;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) ok += sc->CallBlocking("Echo/Say", "x", o).status.ok();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 200);
  ServiceChannelStats st = sc->stats();
  EXPECT_LE(st.hedges, 21u);  // 10% of 200, and one in flight at the edge
  EXPECT_GE(st.hedges, 5u);
  EXPECT_GT(st.hedges_denied, 100u);
}

TEST(ServiceChannelHedgingTest, TrackedPercentileHedgesOnlyTheTail) {
  // 2% of calls are slow (300ms), the rest fast. With p90 tracking, only
  // the slow ones wait past the delay, so hedges stay near 2% of calls.
  std::atomic<int> n{0};
  auto fn = [&](server::ServerCall& call, std::string* out) {
    if (n.fetch_add(1) % 50 == 7) return SlowEcho(absl::Milliseconds(300))(call, out);
    return Echo(call, out);
  };
  TestServer a(fn), b(fn), c(fn);
  auto sc = Open({a.address(), b.address(), c.address()},
                 {{"hedging", {{"percentile", 90}, {"min_samples", 50}}},
                  {"retry", {{"max_attempts", 1}, {"budget", {{"min_per_second", 100}}}}}});
  CallOptions o;
  o.idempotent = true;
  absl::Duration worst = absl::ZeroDuration();
  for (int i = 0; i < 600; ++i) {
    absl::Time start = absl::Now();
    ASSERT_TRUE(sc->CallBlocking("Echo/Say", "x", o).status.ok());
    if (i >= 100) worst = std::max(worst, absl::Now() - start);
  }
  ServiceChannelStats st = sc->stats();
  EXPECT_GE(st.hedges, 5u);    // the slow ones after warm-up
  EXPECT_LE(st.hedges, 60u);   // not the fast ones (10% would be 60 at worst)
  EXPECT_LT(worst, absl::Milliseconds(250));  // no call waited out a slow answer
}

// --- Fault injection ---

TEST(ServiceChannelFaultTest, AbortFailsCallsWithTheCodeWithoutReachingAnEndpoint) {
  TestServer s(Echo);
  auto sc = Open({s.address()},
                 {{"fault", {{"abort", {{"percent", 100}, {"code", "RESOURCE_EXHAUSTED"}}}}},
                  {"retry", {{"max_attempts", 3}, {"retry_on", {"RESOURCE_EXHAUSTED"}}}}});
  CallOptions o;
  o.idempotent = true;
  for (int i = 0; i < 10; ++i) {
    CallResult r = sc->CallBlocking("Echo/Say", "x", o);
    EXPECT_EQ(r.status.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(absl::StrContains(r.status.message(), "fault injected")) << r.status;
  }
  EXPECT_EQ(s.handled.load(), 0);
  EXPECT_EQ(sc->stats().faults_aborted, 10u);
  EXPECT_EQ(sc->stats().retries, 0u);
}

TEST(ServiceChannelFaultTest, DelayHoldsAShareOfCalls) {
  TestServer s(Echo);
  auto sc = Open({s.address()},
                 {{"fault", {{"delay", {{"percent", 50}, {"duration", "100ms"}}}}}});
  int delayed = 0;
  for (int i = 0; i < 40; ++i) {
    absl::Time start = absl::Now();
    ASSERT_TRUE(sc->CallBlocking("Echo/Say", "x").status.ok());
    delayed += absl::Now() - start >= absl::Milliseconds(100);
  }
  EXPECT_EQ(static_cast<uint64_t>(delayed), sc->stats().faults_delayed);
  EXPECT_GE(delayed, 8);
  EXPECT_LE(delayed, 32);
  // A delay beyond the deadline ends the call with DEADLINE_EXCEEDED.
  auto all = Open({s.address()}, {{"fault", {{"delay", {{"percent", 100}, {"duration", "2s"}}}}}});
  CallOptions o;
  o.timeout = absl::Milliseconds(100);
  EXPECT_EQ(all->CallBlocking("Echo/Say", "x", o).status.code(),
            absl::StatusCode::kDeadlineExceeded);
}

// --- What counts against an endpoint ---

TEST(ServiceChannelTest, ApplicationErrorsDoNotCountAgainstTheEndpoint) {
  TestServer s([](server::ServerCall&, std::string*) { return absl::NotFoundError("no key"); });
  auto sc = Open({s.address()});
  for (int i = 0; i < 5; ++i) sc->CallBlocking("Echo/Say", "x");
  auto stats = sc->EndpointStatsFor(s.address());
  ASSERT_NE(stats, nullptr);
  EXPECT_EQ(stats->calls(), 5u);
  EXPECT_EQ(stats->failures(), 0u);
  CallResult r;
  r.status = absl::UnavailableError("x");
  EXPECT_TRUE(IsEndpointFailure(r));
  r.status = absl::CancelledError("x");
  EXPECT_FALSE(IsEndpointFailure(r));
}

// Destroying the channel while calls wait on timers ends them with CANCELLED.
TEST(ServiceChannelTest, CallsWaitingOnTimersEndWhenTheChannelGoes) {
  TestServer s(Echo);
  auto sc = Open({s.address()}, {{"fault", {{"delay", {{"percent", 100}, {"duration", "500ms"}}}}}});
  std::atomic<int> cancelled{0};
  std::atomic<int> done{0};
  for (int i = 0; i < 10; ++i) {
    sc->Call("Echo/Say", "x", {}, [&](CallResult r) {
      cancelled += r.status.code() == absl::StatusCode::kCancelled;
      ++done;
    });
  }
  sc.reset();
  // Ended before the destructor returned, not when their timers fire.
  EXPECT_EQ(done.load(), 10);
  EXPECT_EQ(cancelled.load(), 10);
}

// --- Outlier detection ---

// A server whose Echo/Say fails while `failing` is set.
struct Switchable {
  std::atomic<bool> failing{false};
  TestServer server{[this](server::ServerCall& call, std::string* out) {
    if (failing.load()) return absl::UnavailableError("failing on purpose");
    return Echo(call, out);
  }};
};

TEST(ServiceChannelOutlierTest, ConsecutiveFailuresEjectThenAProbeBringsItBack) {
  Switchable bad;
  TestServer good1(Echo), good2(Echo);
  auto sc = Open({bad.server.address(), good1.address(), good2.address()},
                 {{"load_balancer", json::parse(R"([{"round_robin": {}}])")},
                  {"outlier_detection", json::parse(R"({"consecutive_failures": 5,
                      "interval": "100ms", "base_ejection_time": "1s",
                      "max_ejection_percent": 50})")}});
  WarmUp(*sc, 30);
  bad.failing = true;
  // Five failures in a row eject it (a few more may land while the control
  // loop applies the ejection: how many depends on how busy the machine
  // is, so the test waits for the ejection instead of counting them)...
  int failed = 0;
  for (int i = 0; i < 3000 && sc->stats().ejected == 0; ++i) {
    failed += !sc->CallBlocking("Echo/Say", "x").status.ok();
  }
  EXPECT_GE(failed, 5);
  // ...and round robin then skips it: no call fails.
  int failed_after = 0;
  for (int i = 0; i < 300; ++i) failed_after += !sc->CallBlocking("Echo/Say", "x").status.ok();
  EXPECT_EQ(failed_after, 0);
  ServiceChannelStats st = sc->stats();
  EXPECT_EQ(st.ejected, 1u);
  EXPECT_EQ(st.outliers.ejections_consecutive_failures, 1u);
  auto states = sc->EndpointStates();
  for (const auto& e : states) {
    EXPECT_EQ(e.healthy, e.address != bad.server.address()) << e.address;
  }
  // Recovered: after the ejection time, one probe, then back in rotation.
  bad.failing = false;
  int before = bad.server.handled.load();
  ASSERT_TRUE(Eventually([&] {
    sc->CallBlocking("Echo/Say", "x");
    return sc->stats().ejected == 0 && sc->stats().outliers.probes_ok >= 1;
  }, absl::Seconds(5)));
  for (int i = 0; i < 60; ++i) ASSERT_TRUE(sc->CallBlocking("Echo/Say", "x").status.ok());
  EXPECT_GE(bad.server.handled.load() - before, 15);
}

TEST(ServiceChannelOutlierTest, StillFailingEndpointGetsOneProbePerEjectionAndLongerEjections) {
  Switchable bad;
  TestServer good(Echo);
  auto sc = Open({bad.server.address(), good.address()},
                 {{"load_balancer", json::parse(R"([{"round_robin": {}}])")},
                  {"outlier_detection", json::parse(R"({"consecutive_failures": 3,
                      "interval": "50ms", "base_ejection_time": "300ms",
                      "max_ejection_time": "10s", "max_ejection_percent": 50})")}});
  WarmUp(*sc, 10);
  bad.failing = true;
  // Calls keep coming for 2s; the failing endpoint sees its first run of 3,
  // then only single probes, each followed by a longer ejection
  // (300ms, 600ms, 900ms, ...).
  absl::Time end = absl::Now() + absl::Seconds(2);
  int failed = 0, calls = 0;
  while (absl::Now() < end) {
    failed += !sc->CallBlocking("Echo/Say", "x").status.ok();
    ++calls;
    absl::SleepFor(absl::Milliseconds(2));  // paces the calls over the 2s
  }
  ServiceChannelStats st = sc->stats();
  EXPECT_GE(st.outliers.probes_failed, 1u);
  EXPECT_LE(st.outliers.probes_failed, 5u);
  EXPECT_EQ(static_cast<uint64_t>(failed), 3 + st.outliers.probes_failed) << calls;
  EXPECT_EQ(st.outliers.ejections_failed_probe, st.outliers.probes_failed);
}

// The interplay with the balancer's panic threshold: when every endpoint is
// ejected, balancers use them all again rather than fail every call without
// trying. With nothing healthy, calls still fail fast with the servers'
// status, and the retry budget keeps retries from multiplying the load.
TEST(ServiceChannelOutlierTest, NoHealthyInstanceFailsFastWithinTheBudget) {
  Switchable a, b, c;
  a.failing = b.failing = c.failing = true;
  auto sc = Open({a.server.address(), b.server.address(), c.server.address()},
                 {{"retry", json::parse(R"({"max_attempts": 5, "backoff": {"base": "1ms", "max": "2ms"},
                                            "budget": {"ratio": 0.2, "min_per_second": 10}})")},
                  {"outlier_detection", json::parse(R"({"consecutive_failures": 5,
                      "interval": "100ms", "base_ejection_time": "10s",
                      "max_ejection_percent": 100})")}});
  CallOptions o;
  o.idempotent = true;
  const int kCalls = 1000;
  std::vector<absl::Duration> took;
  for (int i = 0; i < kCalls; ++i) {
    absl::Time start = absl::Now();
    CallResult r = sc->CallBlocking("Echo/Say", "x", o);
    took.push_back(absl::Now() - start);
    ASSERT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
    ASSERT_FALSE(r.status.message().empty());
  }
  std::sort(took.begin(), took.end());
  int attempts = a.server.handled + b.server.handled + c.server.handled;
  double amplification = static_cast<double>(attempts) / kCalls;
  std::printf("no healthy instance: %d calls, %d attempts (%.3f per call), median %s, p99 %s, "
              "ejected %zu\n",
              kCalls, attempts, amplification, absl::FormatDuration(took[kCalls / 2]).c_str(),
              absl::FormatDuration(took[kCalls * 99 / 100]).c_str(), sc->stats().ejected);
  // The budget's bound: 20% of the calls, plus its floor of 10/s over its
  // 10s ttl (100 retries), which weighs less the longer the run.
  EXPECT_LE(amplification, 1.0 + 0.2 + 100.0 / kCalls + 0.001);
  EXPECT_EQ(sc->stats().ejected, 3u);
  EXPECT_LT(took[kCalls / 2], absl::Milliseconds(50));
}

// --- Active health checks ---

TEST(ServiceChannelHealthCheckTest, NotServingEndpointLeavesRotationAndComesBack) {
  TestServer a(Echo), b(Echo);
  auto sc = Open({a.address(), b.address()},
                 {{"load_balancer", json::parse(R"([{"round_robin": {}}])")},
                  {"health_check", json::parse(R"({"interval": "50ms", "timeout": "40ms",
                      "unhealthy_threshold": 2, "healthy_threshold": 2})")}});
  WarmUp(*sc, 10);
  a.server.SetServing(false);
  ASSERT_TRUE(Eventually([&] { return sc->stats().unhealthy == 1; }, absl::Seconds(5)));
  int before = a.handled.load();
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(sc->CallBlocking("Echo/Say", "x").status.ok());
  EXPECT_EQ(a.handled.load(), before);  // all went to b
  a.server.SetServing(true);
  ASSERT_TRUE(Eventually([&] { return sc->stats().unhealthy == 0; }, absl::Seconds(5)));
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(sc->CallBlocking("Echo/Say", "x").status.ok());
  EXPECT_GE(a.handled.load() - before, 15);
}

TEST(ServiceChannelHealthCheckTest, UnreachableEndpointIsMarkedUnhealthy) {
  TestServer a(Echo);
  std::string dead = absl::StrCat("127.0.0.1:", testing::PickFreePort());
  auto sc = Open({a.address(), dead},
                 {{"health_check", json::parse(R"({"interval": "50ms", "timeout": "40ms",
                      "unhealthy_threshold": 2})")}});
  ASSERT_TRUE(Eventually([&] { return sc->stats().unhealthy == 1; }, absl::Seconds(5)));
  for (const auto& e : sc->EndpointStates()) {
    EXPECT_EQ(e.health_check_ok, e.address == a.address()) << e.address;
  }
}

TEST(ServiceChannelTest, CancelEndsTheCallAndItsAttemptsOnTheServer) {
  std::atomic<int> cancelled{0};
  TestServer a(SlowEcho(absl::Seconds(3), &cancelled)), b(SlowEcho(absl::Seconds(3), &cancelled));
  auto sc = Open({a.address(), b.address()}, {{"hedging", {{"delay", "20ms"}}}});
  WarmUp(*sc, 0);
  CallOptions o;
  o.idempotent = true;
  core::Notification done;
  CallResult result;
  CallHandle h = sc->Call("Echo/Say", "x", o, [&](CallResult r) {
    result = std::move(r);
    done.Notify();
  });
  // Both the first attempt and its hedge are running.
  ASSERT_TRUE(Eventually([&] { return a.handled.load() + b.handled.load() == 2; },
                         absl::Seconds(5)));
  absl::Time start = absl::Now();
  h.Cancel();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(1)));
  EXPECT_EQ(result.status.code(), absl::StatusCode::kCancelled) << result.status;
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
  ASSERT_TRUE(Eventually([&] { return cancelled.load() == 2; }, absl::Seconds(3)));
  h.Cancel();  // a second cancel does nothing
}

// --- Seams for the mesh: a shared discovery, an endpoint filter, another
// transport ---

TEST(ServiceChannelTest, SubsetsShareOneDiscoveryOverAnInMemoryTransport) {
  auto loop = std::shared_ptr<runtime::EventLoop>(runtime::EventLoop::Create("ctl").value());
  json endpoints = json::parse(R"({"static": {"endpoints": [
      {"address": "10.0.0.1:1", "metadata": {"version": "v1"}},
      {"address": "10.0.0.2:1", "metadata": {"version": "v1"}},
      {"address": "10.0.0.3:1", "metadata": {"version": "v2"}}]}})");
  std::shared_ptr<discovery::Discovery> d =
      discovery::Discovery::Create("echo", endpoints, loop.get()).value();
  auto factory = testing::InMemoryChannel::Factory(
      [](const std::string& address, absl::string_view, absl::string_view request,
         const CallOptions&) {
        CallResult r;
        r.payload = absl::StrCat(address, ":", request);
        return r;
      });
  auto open = [&](std::string version) {
    ServiceChannelOptions o;
    o.control_loop = loop;
    o.shared_discovery = d;
    o.channel_factory = factory;
    o.endpoint_filter = [version](const discovery::Endpoint& e) {
      auto it = e.metadata.find("version");
      return it != e.metadata.end() && it->second == version;
    };
    auto sc = ServiceChannel::Create("echo", json(), o);
    EXPECT_TRUE(sc.ok()) << sc.status();
    EXPECT_TRUE((*sc)->WaitForEndpoints(absl::Seconds(5)));
    return *std::move(sc);
  };
  auto v1 = open("v1");
  auto v2 = open("v2");
  EXPECT_EQ(v1->Endpoints(), (std::vector<std::string>{"10.0.0.1:1", "10.0.0.2:1"}));
  EXPECT_EQ(v2->Endpoints(), (std::vector<std::string>{"10.0.0.3:1"}));
  for (int i = 0; i < 10; ++i) {
    CallResult r = v2->CallBlocking("Echo/Say", "hi");
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.payload, "10.0.0.3:1:hi");
    EXPECT_EQ(r.endpoint, "10.0.0.3:1");
  }
  // Asynchronous calls over it complete at once, on this thread.
  bool done = false;
  v1->Call("Echo/Say", "x", {}, [&](CallResult r) { done = r.status.ok(); });
  EXPECT_TRUE(done);
  // Describe names every layer with its settings, top to bottom.
  std::vector<std::string> roles;
  for (const auto& [role, text] : v1->Describe()) {
    roles.push_back(role);
    EXPECT_FALSE(text.empty()) << role;
  }
  EXPECT_EQ(roles, (std::vector<std::string>{"fault", "deadline", "retry", "hedging",
                                             "circuit breaker", "balancer", "endpoint health",
                                             "pool"}));
  v1.reset();
  v2.reset();
  d.reset();
}

// A channel with its own runtime destroyed while calls wait to retry and to
// hedge: every call ends exactly once, before the destructor returns (which
// may run on a reactor that held the channel to start a hedge, right after
// the test dropped it).
TEST(ServiceChannelTest, DestroyedUnderLoadWithTimersPendingEndsEveryCallFirst) {
  std::atomic<bool> failing{true};
  TestServer a([&](server::ServerCall& call, std::string* out) {
    if (failing.load()) return absl::UnavailableError("down");
    return Echo(call, out);
  });
  TestServer b(SlowEcho(absl::Milliseconds(300)));
  for (int round = 0; round < 3; ++round) {
    auto sc = Open({a.address(), b.address()},
                   {{"retry", json::parse(R"({"max_attempts": 5, "backoff": {"base": "200ms", "max": "400ms"},
                                              "budget": {"ratio": 1.0}})")},
                    {"hedging", {{"delay", "100ms"}, {"max_extra_load", 1.0}}}});
    auto results = std::make_shared<std::atomic<int>>(0);
    CallOptions o;
    o.idempotent = true;
    for (int i = 0; i < 50; ++i) {
      sc->Call("Echo/Say", "x", o, [results](CallResult) { ++*results; });
    }
    // Each round tears down at a later stage: first attempts, then hedges
    // (100ms) and retry backoffs pending.
    absl::SleepFor(absl::Milliseconds(20 + 40 * round));
    // Dropping our reference destroys the channel unless a reactor holds it
    // for the moment of starting a hedge or a retry whose timer fired just
    // now (round 2 tears down right at the hedge delay): then that reactor
    // destroys it a moment later. Either way every call ends exactly once,
    // in the destructor.
    std::weak_ptr<ServiceChannel> weak = sc;
    sc.reset();
    const absl::Time give_up = absl::Now() + absl::Seconds(5);
    while ((!weak.expired() || results->load() < 50) && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_EQ(results->load(), 50) << "round " << round;
    absl::SleepFor(absl::Milliseconds(50));
    EXPECT_EQ(results->load(), 50) << "round " << round << ": a callback ran twice";
  }
}

}  // namespace
}  // namespace meshlib::client
