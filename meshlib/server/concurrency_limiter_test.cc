// The adaptive concurrency limiter on a manual clock: closed-loop clients
// against a simulated server whose latency is a model of its concurrency,
// stepped one millisecond at a time, so every run is the same.
#include "meshlib/server/concurrency_limiter.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <functional>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "meshlib/testing/fake_executor.h"

namespace meshlib::server {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kBase = absl::Milliseconds(10);

// Latency of a call admitted while `in_flight` calls (itself included) run.
using LatencyModel = std::function<absl::Duration(int64_t in_flight)>;

LatencyModel Constant(absl::Duration latency) {
  return [latency](int64_t) { return latency; };
}

// A server with `capacity` workers: beyond them, calls share the time.
LatencyModel Capacity(int64_t capacity, absl::Duration base = kBase) {
  return [capacity, base](int64_t in_flight) {
    return base * std::max(1.0, static_cast<double>(in_flight) / static_cast<double>(capacity));
  };
}

// What happened during one Simulation::Run.
struct Span {
  int64_t admitted = 0;
  int64_t shed = 0;
  std::vector<int64_t> limits;            // limit() at each step
  std::vector<absl::Duration> latencies;  // of admitted calls

  int64_t MaxLimit() const { return *std::max_element(limits.begin(), limits.end()); }
  int64_t MinLimit() const { return *std::min_element(limits.begin(), limits.end()); }
  int64_t MedianLimit() const {
    std::vector<int64_t> v = limits;
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  }
  absl::Duration MedianLatency() const {
    std::vector<absl::Duration> v = latencies;
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v.empty() ? absl::ZeroDuration() : v[v.size() / 2];
  }
};

// `clients` callers, each sending its next call as soon as the last one
// ends, or 5ms after a refusal.
class Simulation {
 public:
  Simulation(ConcurrencyLimiter& limiter, testing::FakeExecutor& clock, int clients,
             LatencyModel model)
      : limiter_(limiter), clock_(clock), target_clients_(clients), ready_(clients),
        active_clients_(clients), model_(std::move(model)) {}

  void SetModel(LatencyModel model) { model_ = std::move(model); }
  void SetClients(int clients) {
    if (clients > active_clients_) {
      ready_ += clients - active_clients_;
      active_clients_ = clients;
    }
    target_clients_ = clients;  // extra clients retire as they become free
  }

  // Lets the calls in flight end (with their samples) and sends no more.
  void Finish() {
    while (!in_flight_.empty()) {
      clock_.AdvanceTo(std::max(clock_.Now(), in_flight_.top().end));
      limiter_.Release(in_flight_.top().latency);
      in_flight_.pop();
    }
  }

  Span Run(absl::Duration duration) {
    Span span;
    const absl::Time end = clock_.Now() + duration;
    while (clock_.Now() < end) {
      const absl::Time now = clock_.Now();
      while (!in_flight_.empty() && in_flight_.top().end <= now) {
        limiter_.Release(in_flight_.top().latency);
        in_flight_.pop();
        Free();
      }
      while (!backing_off_.empty() && backing_off_.front() <= now) {
        backing_off_.pop_front();
        Free();
      }
      for (; ready_ > 0; --ready_) {
        if (limiter_.TryAcquire()) {
          const absl::Duration latency = model_(static_cast<int64_t>(in_flight_.size()) + 1);
          in_flight_.push({now + latency, latency});
          ++span.admitted;
          span.latencies.push_back(latency);
        } else {
          ++span.shed;
          backing_off_.push_back(now + absl::Milliseconds(5));
        }
      }
      span.limits.push_back(limiter_.limit());
      clock_.AdvanceBy(absl::Milliseconds(1));
    }
    return span;
  }

 private:
  struct Call {
    absl::Time end;
    absl::Duration latency;
    bool operator>(const Call& o) const { return end > o.end; }
  };

  void Free() {
    if (active_clients_ > target_clients_) {
      --active_clients_;
    } else {
      ++ready_;
    }
  }

  ConcurrencyLimiter& limiter_;
  testing::FakeExecutor& clock_;
  int target_clients_;
  int ready_;
  int active_clients_;
  LatencyModel model_;
  std::priority_queue<Call, std::vector<Call>, std::greater<Call>> in_flight_;
  std::deque<absl::Time> backing_off_;
};

AdaptiveConcurrencyOptions TestOptions() {
  AdaptiveConcurrencyOptions o;
  o.enabled = true;
  o.seed = 42;
  return o;
}

std::unique_ptr<ConcurrencyLimiter> MakeLimiter(const AdaptiveConcurrencyOptions& options,
                                                testing::FakeExecutor& clock) {
  auto limiter = ConcurrencyLimiter::Create(options, clock);
  EXPECT_TRUE(limiter.ok()) << limiter.status();
  return limiter.ok() ? *std::move(limiter) : nullptr;
}

TEST(ConcurrencyLimiterTest, ValidateNamesTheField) {
  auto error_of = [](auto mutate) {
    AdaptiveConcurrencyOptions o;
    mutate(o);
    return std::string(o.Validate().message());
  };
  EXPECT_TRUE(AdaptiveConcurrencyOptions{}.Validate().ok());
  EXPECT_THAT(error_of([](auto& o) { o.min_limit = 0; }),
              HasSubstr("adaptive_concurrency.min_limit: must be >= 1, got 0"));
  EXPECT_THAT(error_of([](auto& o) { o.max_limit = 10; }),
              HasSubstr("adaptive_concurrency.initial_limit: must be between min_limit (3) "
                        "and max_limit (10), got 20"));
  EXPECT_THAT(error_of([](auto& o) { o.max_limit = 2; }),
              HasSubstr("adaptive_concurrency.max_limit"));
  EXPECT_THAT(error_of([](auto& o) { o.tolerance = 0.9; }),
              HasSubstr("adaptive_concurrency.tolerance"));
  EXPECT_THAT(error_of([](auto& o) { o.smoothing = 0; }),
              HasSubstr("adaptive_concurrency.smoothing"));
  EXPECT_THAT(error_of([](auto& o) { o.percentile = std::nan(""); }),
              HasSubstr("adaptive_concurrency.percentile"));
  EXPECT_THAT(error_of([](auto& o) { o.window = absl::ZeroDuration(); }),
              HasSubstr("adaptive_concurrency.window"));
  EXPECT_THAT(error_of([](auto& o) { o.probe_interval = absl::Milliseconds(10); }),
              HasSubstr("adaptive_concurrency.probe_interval"));
  EXPECT_THAT(error_of([](auto& o) { o.probe_jitter = 1; }),
              HasSubstr("adaptive_concurrency.probe_jitter"));
  EXPECT_THAT(error_of([](auto& o) { o.probe_samples = 0; }),
              HasSubstr("adaptive_concurrency.probe_samples"));

  AdaptiveConcurrencyOptions infinite;
  infinite.probe_interval = absl::InfiniteDuration();
  EXPECT_TRUE(infinite.Validate().ok());

  testing::FakeExecutor clock;
  AdaptiveConcurrencyOptions bad;
  bad.min_limit = -1;
  auto limiter = ConcurrencyLimiter::Create(bad, clock);
  EXPECT_EQ(limiter.status().code(), absl::StatusCode::kInvalidArgument);
}

// Until the no-load latency is known the limit is min_limit; then it starts
// from initial_limit, and admits exactly that many.
TEST(ConcurrencyLimiterTest, FirstProbeMeasuresNoLoadLatencyAtMinLimit) {
  testing::FakeExecutor clock;
  auto limiter = MakeLimiter(TestOptions(), clock);
  ASSERT_NE(limiter, nullptr);
  EXPECT_EQ(limiter->limit(), 3);
  EXPECT_TRUE(limiter->snapshot().probing);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter->TryAcquire());
  EXPECT_FALSE(limiter->TryAcquire());
  EXPECT_EQ(limiter->in_flight(), 3);
  for (int i = 0; i < 3; ++i) limiter->ReleaseWithoutSample();

  // 25 calls of 20ms, three at a time; the probe ends at a window's end.
  for (int i = 0; i < 25 && limiter->snapshot().probing; ++i) {
    ASSERT_TRUE(limiter->TryAcquire());
    clock.AdvanceBy(absl::Milliseconds(20));
    limiter->Release(absl::Milliseconds(20));
  }
  clock.AdvanceBy(absl::Milliseconds(100));
  ASSERT_TRUE(limiter->TryAcquire());
  limiter->Release(absl::Milliseconds(20));

  ConcurrencyLimiter::Snapshot s = limiter->snapshot();
  EXPECT_FALSE(s.probing);
  EXPECT_EQ(s.probes_completed, 1);
  EXPECT_EQ(s.no_load_latency, absl::Milliseconds(20));
  EXPECT_EQ(s.limit, 20);
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(limiter->TryAcquire()) << i;
  EXPECT_FALSE(limiter->TryAcquire());
  limiter->ReleaseWithoutSample();
  EXPECT_TRUE(limiter->TryAcquire());
}

// (a) Latency that does not depend on load: the limit grows past what the
// clients need and nothing is shed once it has.
TEST(ConcurrencyLimiterTest, SteadyLatencyGrowsTheLimitWellAboveTheNeed) {
  testing::FakeExecutor clock;
  auto limiter = MakeLimiter(TestOptions(), clock);
  ASSERT_NE(limiter, nullptr);
  Simulation sim(*limiter, clock, /*clients=*/60, Constant(kBase));
  sim.Run(absl::Seconds(20));
  Span last = sim.Run(absl::Seconds(10));
  EXPECT_EQ(last.shed, 0);
  EXPECT_GE(last.MinLimit(), 90);  // 1.5x the 60 calls in flight
  EXPECT_LE(last.MaxLimit(), 1000);
  EXPECT_EQ(limiter->snapshot().no_load_latency, kBase);
}

// Clients that need far less than the limit give it no reason to grow.
TEST(ConcurrencyLimiterTest, LimitDoesNotRunAheadOfTheLoad) {
  testing::FakeExecutor clock;
  auto limiter = MakeLimiter(TestOptions(), clock);
  ASSERT_NE(limiter, nullptr);
  Simulation sim(*limiter, clock, /*clients=*/5, Constant(kBase));
  sim.Run(absl::Seconds(1));
  Span span = sim.Run(absl::Seconds(20));
  EXPECT_EQ(span.MinLimit(), 20);
  EXPECT_EQ(span.MaxLimit(), 20);
  EXPECT_GT(limiter->snapshot().limit_updates, 100);  // it was adjusting, not stuck
}

// (b) Latency that grows with concurrency past a capacity of 10: 200
// clients, whom the server cannot all serve at once. The limit settles near
// the capacity (the tolerance allows 1.5x, plus headroom) instead of
// admitting everyone, and stays there through several probes: the no-load
// latency does not drift up with the overload.
TEST(ConcurrencyLimiterTest, LatencyThatGrowsWithLoadHoldsTheLimitNearCapacity) {
  constexpr int64_t kCapacity = 10;
  testing::FakeExecutor clock;
  AdaptiveConcurrencyOptions options = TestOptions();
  options.probe_interval = absl::Seconds(10);
  auto limiter = MakeLimiter(options, clock);
  ASSERT_NE(limiter, nullptr);
  Simulation sim(*limiter, clock, /*clients=*/200, Capacity(kCapacity));
  sim.Run(absl::Seconds(10));
  Span early = sim.Run(absl::Seconds(10));
  sim.Run(absl::Seconds(30));
  Span late = sim.Run(absl::Seconds(10));

  for (const Span* span : {&early, &late}) {
    EXPECT_LE(span->MaxLimit(), 3 * kCapacity);
    EXPECT_GE(span->MedianLimit(), kCapacity);  // the server is kept busy
    EXPECT_LE(span->MedianLatency(), 3 * kBase);
    EXPECT_GT(span->shed, 0);
    // Throughput near the capacity's 1000 calls/s.
    EXPECT_GE(span->admitted, 8000);
  }
  EXPECT_LE(late.MedianLimit(), early.MedianLimit() + 2);
  EXPECT_GE(limiter->snapshot().probes_completed, 5);
  EXPECT_EQ(limiter->snapshot().no_load_latency, kBase);
}

// (c) The server slows down (its capacity drops from plenty to 3) for 20s;
// the limit falls, and once the capacity is back it grows back above what
// the 30 clients need.
TEST(ConcurrencyLimiterTest, LimitRecoversAfterTheOverloadEnds) {
  testing::FakeExecutor clock;
  AdaptiveConcurrencyOptions options = TestOptions();
  options.probe_interval = absl::InfiniteDuration();  // the gradient alone
  auto limiter = MakeLimiter(options, clock);
  ASSERT_NE(limiter, nullptr);
  Simulation sim(*limiter, clock, /*clients=*/30, Constant(kBase));
  Span before = sim.Run(absl::Seconds(20));
  EXPECT_GE(before.limits.back(), 45);

  sim.SetModel(Capacity(3));
  Span overload = sim.Run(absl::Seconds(20));
  EXPECT_LE(overload.limits.back(), 12);
  EXPECT_GT(overload.shed, 0);

  sim.SetModel(Constant(kBase));
  sim.Run(absl::Seconds(15));
  Span after = sim.Run(absl::Seconds(5));
  EXPECT_GE(after.MinLimit(), 30);
  EXPECT_EQ(after.shed, 0);
}

// The no-load latency itself rises for good (heavier requests): at first the
// limiter takes it for queueing and sheds, until the next probe measures the
// new no-load latency and the limit grows back. Without probes it would not.
TEST(ConcurrencyLimiterTest, ProbeFollowsANoLoadLatencyThatRoseForGood) {
  auto run = [](absl::Duration probe_interval, ConcurrencyLimiter::Snapshot* end) {
    testing::FakeExecutor clock;
    AdaptiveConcurrencyOptions options = TestOptions();
    options.probe_interval = probe_interval;
    auto limiter = MakeLimiter(options, clock);
    Simulation sim(*limiter, clock, /*clients=*/30, Constant(kBase));
    sim.Run(absl::Seconds(5));
    sim.SetModel(Constant(4 * kBase));
    sim.Run(absl::Seconds(25));
    Span last = sim.Run(absl::Seconds(5));
    *end = limiter->snapshot();
    return last;
  };
  ConcurrencyLimiter::Snapshot probed, unprobed;
  Span with_probes = run(absl::Seconds(10), &probed);
  Span without = run(absl::InfiniteDuration(), &unprobed);

  EXPECT_EQ(probed.no_load_latency, 4 * kBase);
  EXPECT_GE(with_probes.MedianLimit(), 30);
  EXPECT_EQ(unprobed.no_load_latency, kBase);
  EXPECT_LE(without.MedianLimit(), 10);
}

// A probe measures only calls it admitted: those admitted before it may
// have queued, and would make the no-load latency look slow.
TEST(ConcurrencyLimiterTest, ProbeIgnoresCallsAdmittedBeforeIt) {
  testing::FakeExecutor clock;
  AdaptiveConcurrencyOptions options = TestOptions();
  options.probe_interval = absl::Seconds(1);
  options.probe_jitter = 0;
  options.probe_samples = 5;
  auto limiter = MakeLimiter(options, clock);
  ASSERT_NE(limiter, nullptr);
  Simulation sim(*limiter, clock, /*clients=*/10, Constant(kBase));
  sim.Run(absl::Milliseconds(500));
  sim.Finish();
  ASSERT_EQ(limiter->snapshot().probes_completed, 1);

  // Ten slow calls start before the next probe and end during it.
  std::vector<absl::Time> started;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(limiter->TryAcquire());
    started.push_back(clock.Now());
  }
  while (!limiter->snapshot().probing) {
    clock.AdvanceBy(absl::Milliseconds(10));
    if (limiter->TryAcquire()) limiter->Release(kBase);  // a fast call now and then
  }
  for (absl::Time t : started) {
    clock.AdvanceBy(absl::Milliseconds(1));
    limiter->Release(clock.Now() - t);
  }
  // Then calls admitted by the probe, of 10ms.
  for (int i = 0; i < 50 && limiter->snapshot().probing; ++i) {
    ASSERT_TRUE(limiter->TryAcquire());
    clock.AdvanceBy(kBase);
    limiter->Release(kBase);
  }
  EXPECT_EQ(limiter->snapshot().probes_completed, 2);
  EXPECT_EQ(limiter->snapshot().no_load_latency, kBase);
}

// Calls released without a sample (cancelled ones) free their slot but say
// nothing about latency, however long they took.
TEST(ConcurrencyLimiterTest, ReleaseWithoutSampleFreesTheSlotOnly) {
  testing::FakeExecutor clock;
  auto limiter = MakeLimiter(TestOptions(), clock);
  ASSERT_NE(limiter, nullptr);
  Simulation sim(*limiter, clock, /*clients=*/15, Constant(kBase));
  sim.Run(absl::Seconds(5));
  sim.Finish();
  const int64_t limit = limiter->limit();
  const int64_t updates = limiter->snapshot().limit_updates;
  for (int round = 0; round < 100; ++round) {
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(limiter->TryAcquire());
    clock.AdvanceBy(absl::Seconds(1));  // very slow, if they were samples
    for (int i = 0; i < 10; ++i) limiter->ReleaseWithoutSample();
  }
  EXPECT_EQ(limiter->in_flight(), 0);
  EXPECT_EQ(limiter->limit(), limit);
  EXPECT_EQ(limiter->snapshot().limit_updates, updates);
}

// Many threads at once never get more than the limit admitted.
TEST(ConcurrencyLimiterTest, ConcurrentCallersNeverExceedTheLimit) {
  AdaptiveConcurrencyOptions options = TestOptions();
  options.min_limit = options.initial_limit = options.max_limit = 8;
  options.window = absl::Milliseconds(1);  // many updates race with the calls
  options.min_window_samples = 1;
  options.probe_interval = absl::Seconds(1);
  auto created = ConcurrencyLimiter::Create(options);  // the real clock
  ASSERT_TRUE(created.ok()) << created.status();
  ConcurrencyLimiter& limiter = **created;

  std::atomic<int> running{0};
  std::atomic<int> most{0};
  std::atomic<int64_t> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        if (!limiter.TryAcquire()) continue;
        admitted.fetch_add(1);
        const int now = running.fetch_add(1) + 1;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        running.fetch_sub(1);
        if ((i + t) % 3 == 0) {
          limiter.ReleaseWithoutSample();
        } else {
          limiter.Release(absl::Microseconds(50 + i % 100));
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(most.load(), 8);
  EXPECT_GT(admitted.load(), 0);
  EXPECT_EQ(limiter.in_flight(), 0);
  EXPECT_EQ(limiter.limit(), 8);
}

}  // namespace
}  // namespace meshlib::server
