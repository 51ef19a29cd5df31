#include "meshlib/resilience/latency_tracker.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "meshlib/testing/fake_executor.h"

namespace meshlib::resilience {
namespace {

TEST(LatencyTrackerTest, BucketsCoverValuesWithinSixPercent) {
  for (uint64_t us : {0ull, 1ull, 15ull, 16ull, 17ull, 100ull, 999ull, 12345ull, 5000000ull}) {
    int b = LatencyTracker::BucketOf(us);
    uint64_t upper = LatencyTracker::BucketUpperMicros(b);
    EXPECT_GT(upper, us) << us;
    EXPECT_LE(static_cast<double>(upper), static_cast<double>(us) * 1.07 + 1) << us;
    if (b > 0) {
      EXPECT_LE(LatencyTracker::BucketUpperMicros(b - 1), us) << us;
    }
  }
}

TEST(LatencyTrackerTest, NoAnswerBelowMinSamples) {
  testing::FakeExecutor clock;
  LatencyTracker t({absl::Seconds(5), 100, absl::ZeroDuration()}, &clock);
  for (int i = 0; i < 99; ++i) t.Record(absl::Milliseconds(1));
  EXPECT_FALSE(t.Percentile(95).has_value());
  t.Record(absl::Milliseconds(1));
  EXPECT_TRUE(t.Percentile(95).has_value());
}

TEST(LatencyTrackerTest, PercentileOfAKnownDistribution) {
  testing::FakeExecutor clock;
  LatencyTracker t({absl::Seconds(5), 100, absl::ZeroDuration()}, &clock);
  // 1..1000 ms, once each: p50 ~ 500ms, p95 ~ 950ms, p99 ~ 990ms.
  for (int i = 1; i <= 1000; ++i) t.Record(absl::Milliseconds(i));
  for (double p : {50.0, 95.0, 99.0}) {
    double got = absl::ToDoubleMilliseconds(*t.Percentile(p));
    EXPECT_GE(got, p * 10) << p;
    EXPECT_LE(got, p * 10 * 1.07) << p;
  }
}

TEST(LatencyTrackerTest, ForgetsOldLatenciesAfterTwoWindows) {
  testing::FakeExecutor clock;
  LatencyTracker t({absl::Seconds(5), 10, absl::ZeroDuration()}, &clock);
  for (int i = 0; i < 100; ++i) t.Record(absl::Milliseconds(100));
  clock.AdvanceBy(absl::Seconds(5));  // a new window: the old one still counts
  for (int i = 0; i < 100; ++i) t.Record(absl::Milliseconds(1));
  EXPECT_GE(*t.Percentile(90), absl::Milliseconds(100));
  clock.AdvanceBy(absl::Seconds(5));  // the 100ms window is gone
  for (int i = 0; i < 100; ++i) t.Record(absl::Milliseconds(1));
  EXPECT_LE(*t.Percentile(90), absl::Microseconds(1100));
  clock.AdvanceBy(absl::Seconds(20));  // long silence: nothing left
  EXPECT_EQ(t.SampleCount(), 0);
  EXPECT_FALSE(t.Percentile(90).has_value());
}

TEST(LatencyTrackerTest, CachesForRefresh) {
  testing::FakeExecutor clock;
  LatencyTracker t({absl::Seconds(60), 10, absl::Milliseconds(100)}, &clock);
  for (int i = 0; i < 100; ++i) t.Record(absl::Milliseconds(1));
  absl::Duration first = *t.Percentile(50);
  for (int i = 0; i < 1000; ++i) t.Record(absl::Milliseconds(50));
  EXPECT_EQ(*t.Percentile(50), first);  // cached
  clock.AdvanceBy(absl::Milliseconds(101));
  EXPECT_GE(*t.Percentile(50), absl::Milliseconds(50));
}

TEST(LatencyTrackerTest, ConcurrentRecordersLoseNoSampleWithinAWindow) {
  testing::FakeExecutor clock;
  LatencyTracker t({absl::Hours(1), 10, absl::ZeroDuration()}, &clock);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&t, k] {
      for (int i = 0; i < 20000; ++i) t.Record(absl::Microseconds(100 * (k + 1)));
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(t.SampleCount(), 80000);
  EXPECT_GE(*t.Percentile(99), absl::Microseconds(400));
}

}  // namespace
}  // namespace meshlib::resilience
