#include "meshlib/client/service_channel.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "meshlib/server/server.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib::client {
namespace {

using json = nlohmann::json;

using testing::Eventually;

// An in-process echo server that can delay its answers.
struct EchoServer {
  explicit EchoServer(absl::Duration delay = absl::ZeroDuration(), uint32_t max_streams = 1000,
                      bool fail = false)
      : server(Options(max_streams)) {
    EXPECT_TRUE(server
                    .RegisterSync("Echo/Say",
                                  [this, delay, fail](server::ServerCall& call, std::string* out) {
                                    ++handled;
                                    if (delay > absl::ZeroDuration()) absl::SleepFor(delay);
                                    if (fail) return absl::UnavailableError("failing on purpose");
                                    *out = call.request();
                                    return absl::OkStatus();
                                  })
                    .ok());
    EXPECT_TRUE(server.Start("127.0.0.1:0").ok());
  }
  static server::ServerOptions Options(uint32_t max_streams) {
    server::ServerOptions o;
    o.io_threads = 1;
    o.max_concurrent_streams = max_streams;
    return o;
  }
  std::string address() const { return server.address(); }
  std::atomic<int> handled{0};
  server::Server server;
};

class ServiceChannelTest : public ::testing::Test {
 protected:
  void SetUp() override { path_ = testing::MakeTempDir("service_channel") + "/echo.json"; }

  // Publishes `addrs` through the endpoint file (rename, as deploy tools do).
  void SetEndpoints(const std::vector<std::string>& addrs) {
    json j = {{"endpoints", addrs}};
    std::ofstream(path_ + ".tmp", std::ios::trunc) << j.dump();
    ASSERT_EQ(rename((path_ + ".tmp").c_str(), path_.c_str()), 0);
  }
  std::shared_ptr<ServiceChannel> Open(json retry = json(), json breaker = json()) {
    ServiceChannelOptions o;
    o.channel.default_timeout = absl::Seconds(5);
    o.retry = std::move(retry);
    o.circuit_breaker = std::move(breaker);
    auto sc = ServiceChannel::Create(
        "echo", json{{"file", {{"path", path_}, {"poll_interval", "50ms"}}}}, o);
    EXPECT_TRUE(sc.ok()) << sc.status();
    return *std::move(sc);
  }
  static std::string Joined(const ServiceChannel& sc) {
    return absl::StrJoin(sc.Endpoints(), ",");
  }

  std::string path_;
};

TEST_F(ServiceChannelTest, NoEndpointsYetFailsFastNamingDiscovery) {
  auto sc = Open();  // the file does not exist
  ASSERT_TRUE(Eventually([&] { return sc->stats().discovery.errors > 0; }, absl::Seconds(5)));
  CallResult r = sc->CallBlocking("Echo/Say", "x");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(r.status.message(), "no endpoints yet")) << r.status;
  EXPECT_TRUE(absl::StrContains(r.status.message(), "does not exist")) << r.status;
  EXPECT_TRUE(r.not_processed);
}

TEST_F(ServiceChannelTest, SpreadsCallsOverEveryEndpoint) {
  EchoServer a, b, c;
  SetEndpoints({a.address(), b.address(), c.address()});
  auto sc = Open();
  ASSERT_TRUE(sc->WaitForEndpoints(absl::Seconds(5)));
  // Wait until all are connected so round-robin covers all three.
  std::map<std::string, int> by;
  for (int i = 0; i < 300; ++i) {
    CallResult r = sc->CallBlocking("Echo/Say", "hi");
    ASSERT_TRUE(r.status.ok()) << r.status;
    ++by[r.endpoint];
  }
  ASSERT_EQ(by.size(), 3u);
  for (const auto& [addr, n] : by) EXPECT_GE(n, 50) << addr;
}

// The bar: endpoints join and leave under load and no call fails because of it.
TEST_F(ServiceChannelTest, FollowsAdditionsAndRemovalsUnderLoadWithoutFailedCalls) {
  EchoServer s1, s2, s3, s4;
  SetEndpoints({s1.address(), s2.address()});
  auto sc = Open();
  ASSERT_TRUE(sc->WaitForEndpoints(absl::Seconds(5)));

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  core::Mutex mu;
  std::map<std::string, int> by_endpoint;  // guarded by mu
  std::string first_error;                 // guarded by mu
  std::vector<int> calls_done(4, 0);       // per load thread; guarded by mu
  std::vector<std::thread> load;
  for (int t = 0; t < 4; ++t) {
    load.emplace_back([&, t] {
      while (!stop.load()) {
        CallResult r = sc->CallBlocking("Echo/Say", "x");
        core::MutexLock lock(&mu);
        ++calls_done[t];
        if (r.status.ok()) {
          ++ok;
          ++by_endpoint[r.endpoint];
        } else {
          ++failed;
          if (first_error.empty()) first_error = r.status.ToString();
        }
      }
    });
  }
  auto count = [&](const std::string& a) {
    core::MutexLock lock(&mu);
    return by_endpoint[a];
  };
  auto reset = [&] {
    core::MutexLock lock(&mu);
    by_endpoint.clear();
  };
  auto done_so_far = [&] {
    core::MutexLock lock(&mu);
    return calls_done;
  };
  // True once every load thread has finished (and counted) more calls than
  // in `before`, i.e. the call each one had going at that moment.
  auto each_thread_moved_past = [&](const std::vector<int>& before) {
    std::vector<int> now = done_so_far();
    for (size_t t = 0; t < now.size(); ++t) {
      if (now[t] <= before[t]) return false;
    }
    return true;
  };
  auto applied = [&](std::vector<std::string> want) {
    std::vector<std::string> got = sc->Endpoints();
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    return got == want;
  };
  // The load is flowing before the set changes.
  EXPECT_TRUE(Eventually([&] { return ok.load() > 20; }, absl::Seconds(10)));
  // Add s3 and s4: they start taking calls.
  SetEndpoints({s1.address(), s2.address(), s3.address(), s4.address()});
  EXPECT_TRUE(Eventually([&] { return count(s3.address()) > 20 && count(s4.address()) > 20; },
                         absl::Seconds(10)));
  // Remove s1 and s2 (their servers keep running, as during a redeploy).
  SetEndpoints({s3.address(), s4.address()});
  ASSERT_TRUE(Eventually([&] { return Joined(*sc) == absl::StrCat(s3.address(), ",", s4.address()) ||
                                      Joined(*sc) == absl::StrCat(s4.address(), ",", s3.address()); },
                         absl::Seconds(10)));
  // Calls picked before the switch may still land on s1 and s2: wait until
  // each load thread has finished the call it had going.
  std::vector<int> before = done_so_far();
  EXPECT_TRUE(Eventually([&] { return each_thread_moved_past(before); }, absl::Seconds(10)));
  reset();
  // A window of load in which s1 and s2 must get nothing.
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(count(s1.address()), 0);
  EXPECT_EQ(count(s2.address()), 0);
  // Swap back and forth a few times under load, each set applied before the
  // next is published.
  for (int i = 0; i < 5; ++i) {
    SetEndpoints({s1.address(), s4.address()});
    EXPECT_TRUE(Eventually([&] { return applied({s1.address(), s4.address()}); },
                           absl::Seconds(10)));
    SetEndpoints({s2.address(), s3.address()});
    EXPECT_TRUE(Eventually([&] { return applied({s2.address(), s3.address()}); },
                           absl::Seconds(10)));
  }
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_EQ(failed.load(), 0) << first_error;
  EXPECT_GT(ok.load(), 100);
  EXPECT_GE(sc->stats().endpoint_updates, 12u);
  // Removed channels are closed once their calls are done.
  EXPECT_TRUE(Eventually([&] { return sc->stats().draining == 0; }, absl::Seconds(5)));
}

TEST_F(ServiceChannelTest, RemovedEndpointFinishesItsCallInFlight) {
  EchoServer slow(absl::Milliseconds(500));
  EchoServer fast;
  SetEndpoints({slow.address()});
  auto sc = Open();
  ASSERT_TRUE(sc->WaitForEndpoints(absl::Seconds(5)));
  core::Notification done;
  CallResult result;
  sc->Call("Echo/Say", "slow one", CallOptions{}, [&](CallResult r) {
    result = std::move(r);
    done.Notify();
  });
  // The call is on the slow server when its endpoint is removed.
  EXPECT_TRUE(Eventually([&] { return slow.handled.load() == 1; }, absl::Seconds(5)));
  SetEndpoints({fast.address()});
  ASSERT_TRUE(Eventually([&] { return Joined(*sc) == fast.address(); }, absl::Seconds(5)));
  EXPECT_EQ(sc->stats().draining, 1u);
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.payload, "slow one");
  EXPECT_EQ(result.endpoint, slow.address());
  EXPECT_TRUE(Eventually([&] { return sc->stats().draining == 0; }, absl::Seconds(5)));
  EXPECT_EQ(sc->CallBlocking("Echo/Say", "x").endpoint, fast.address());
}

TEST_F(ServiceChannelTest, RefusedCallGoesOnceToAnotherEndpoint) {
  EchoServer live;
  // Connected and ready, but refuses every call before any handler runs
  // (as a draining or overloaded server does): each refusal is provably not
  // processed, so the call goes to the live endpoint instead.
  EchoServer refusing(absl::ZeroDuration(), /*max_streams=*/0);
  std::string dead = refusing.address();
  SetEndpoints({dead, live.address()});
  auto sc = Open();
  ASSERT_TRUE(sc->WaitForEndpoints(absl::Seconds(5)));
  for (int i = 0; i < 20; ++i) {
    CallResult r = sc->CallBlocking("Echo/Say", "x");
    ASSERT_TRUE(r.status.ok()) << i << ": " << r.status;
    EXPECT_EQ(r.endpoint, live.address());
    core::Notification done;
    sc->Call("Echo/Say", "y", CallOptions{}, [&](CallResult r) {
      EXPECT_TRUE(r.status.ok()) << r.status;
      done.Notify();
    });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  }
  EXPECT_GT(sc->stats().transparent_retries, 0u);

  // With only the refusing endpoint left there is nowhere else to go: the
  // refusal is the answer.
  SetEndpoints({dead});
  ASSERT_TRUE(Eventually([&] { return Joined(*sc) == dead; }, absl::Seconds(5)));
  CallResult r = sc->CallBlocking("Echo/Say", "x");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kResourceExhausted) << r.status;
  EXPECT_TRUE(r.not_processed);
}

TEST_F(ServiceChannelTest, IdempotentCallsAreRetriedElsewhereOnTheirCodes) {
  EchoServer good;
  EchoServer bad(absl::ZeroDuration(), 1000, /*fail=*/true);
  SetEndpoints({good.address(), bad.address()});
  auto sc = Open(json::parse(
      R"({"max_attempts": 3, "retry_on": ["UNAVAILABLE"], "backoff": {"base": "1ms", "max": "5ms"}})"));
  ASSERT_TRUE(sc->WaitForEndpoints(absl::Seconds(5)));
  CallOptions idem;
  idem.idempotent = true;
  for (int i = 0; i < 40; ++i) {
    CallResult r = sc->CallBlocking("Echo/Say", "x", idem);
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.endpoint, good.address());
    core::Notification done;
    sc->Call("Echo/Say", "y", idem, [&](CallResult r) {
      EXPECT_TRUE(r.status.ok()) << r.status;
      done.Notify();
    });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  }
  uint64_t retried = sc->stats().retries;
  EXPECT_GT(retried, 10u);  // about half the first attempts hit the failing one
  EXPECT_GT(bad.handled.load(), 10);

  // Not idempotent: the handler ran, so the failure stands.
  int failed = 0;
  for (int i = 0; i < 40; ++i) failed += sc->CallBlocking("Echo/Say", "x").status.ok() ? 0 : 1;
  EXPECT_GT(failed, 5);
  EXPECT_EQ(sc->stats().retries, retried);
}

TEST_F(ServiceChannelTest, RetryBudgetBoundsAmplificationWhenEverythingFails) {
  EchoServer a(absl::ZeroDuration(), 1000, true), b(absl::ZeroDuration(), 1000, true);
  SetEndpoints({a.address(), b.address()});
  auto sc = Open(json::parse(R"({"max_attempts": 5, "backoff": {"base": "1ms", "max": "1ms"},
                                  "budget": {"ratio": 0.2, "min_per_second": 1, "ttl": "10s"}})"));
  ASSERT_TRUE(sc->WaitForEndpoints(absl::Seconds(5)));
  CallOptions idem;
  idem.idempotent = true;
  const int kCalls = 1000;
  for (int i = 0; i < kCalls; ++i) {
    CallResult r = sc->CallBlocking("Echo/Say", "x", idem);
    ASSERT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  }
  int attempts = a.handled.load() + b.handled.load();
  double amplification = static_cast<double>(attempts) / kCalls;
  // Without a budget this would be 5x; the budget allows 0.2 of the calls
  // plus 1/s over 10s.
  EXPECT_LE(attempts, kCalls + kCalls / 5 + 10 + 1);
  EXPECT_GT(sc->stats().retries_denied, 0u);
  std::cout << "attempts per call with every endpoint failing: " << amplification << "\n";
}

TEST_F(ServiceChannelTest, CircuitBreakerFailsFastOverMaxRequests) {
  EchoServer slow(absl::Milliseconds(300));
  SetEndpoints({slow.address()});
  auto sc = Open(json(), json::parse(R"({"max_requests": 2})"));
  ASSERT_TRUE(sc->WaitForEndpoints(absl::Seconds(5)));
  core::Notification first, second;
  sc->Call("Echo/Say", "1", CallOptions{}, [&](CallResult r) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    first.Notify();
  });
  sc->Call("Echo/Say", "2", CallOptions{}, [&](CallResult r) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    second.Notify();
  });
  absl::Time t0 = absl::Now();
  CallResult over = sc->CallBlocking("Echo/Say", "3");
  EXPECT_LT(absl::Now() - t0, absl::Milliseconds(100));  // at once, not after the slow ones
  EXPECT_EQ(over.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(over.status.message(), "max_requests (2)")) << over.status;
  ASSERT_TRUE(first.WaitForNotificationWithTimeout(absl::Seconds(5)));
  ASSERT_TRUE(second.WaitForNotificationWithTimeout(absl::Seconds(5)));
  // Slots come back as calls finish.
  EXPECT_TRUE(sc->CallBlocking("Echo/Say", "4").status.ok());
  EXPECT_EQ(sc->stats().breaker_overflows, 1u);
}

TEST_F(ServiceChannelTest, MaxRetriesBoundsConcurrentRetries) {
  EchoServer a(absl::ZeroDuration(), 1000, true), b(absl::ZeroDuration(), 1000, true);
  SetEndpoints({a.address(), b.address()});
  auto sc = Open(json::parse(R"({"max_attempts": 3, "budget": {"ratio": 10}})"),
                 json::parse(R"({"max_retries": 0})"));
  ASSERT_TRUE(sc->WaitForEndpoints(absl::Seconds(5)));
  CallOptions idem;
  idem.idempotent = true;
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(sc->CallBlocking("Echo/Say", "x", idem).status.code(),
              absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(sc->stats().retries, 0u);
  EXPECT_EQ(a.handled.load() + b.handled.load(), 20);
  EXPECT_EQ(sc->stats().breaker_overflows, 20u);
}

TEST_F(ServiceChannelTest, BadUpdateKeepsServingFromTheLastGoodSet) {
  EchoServer a;
  SetEndpoints({a.address()});
  auto sc = Open();
  ASSERT_TRUE(sc->WaitForEndpoints(absl::Seconds(5)));
  std::ofstream(path_, std::ios::trunc) << "{\"endpoints\": [";
  ASSERT_TRUE(Eventually([&] { return sc->stats().discovery.errors > 0; }, absl::Seconds(5)));
  CallResult r = sc->CallBlocking("Echo/Say", "still here");
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.endpoint, a.address());
}

}  // namespace
}  // namespace meshlib::client
