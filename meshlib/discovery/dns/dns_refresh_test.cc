#include "meshlib/discovery/dns/dns_refresh.h"

#include <cmath>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace meshlib::discovery_internal {
namespace {

TEST(RefreshDelayTest, ClampsTheTtl) {
  RefreshPolicy p;
  p.min_refresh = absl::Seconds(5);
  p.max_refresh = absl::Seconds(300);
  p.jitter = 0;
  EXPECT_EQ(RefreshDelay(absl::ZeroDuration(), p, 0.5), absl::Seconds(5));
  EXPECT_EQ(RefreshDelay(absl::Seconds(1), p, 0.5), absl::Seconds(5));
  EXPECT_EQ(RefreshDelay(absl::Seconds(60), p, 0.5), absl::Seconds(60));
  EXPECT_EQ(RefreshDelay(absl::Seconds(86400), p, 0.5), absl::Seconds(300));
  EXPECT_EQ(RefreshDelay(absl::Seconds(std::numeric_limits<uint32_t>::max()), p, 0.5),
            absl::Seconds(300));
}

TEST(RefreshDelayTest, JitterOnlyShortens) {
  RefreshPolicy p;
  p.min_refresh = absl::Seconds(1);
  p.max_refresh = absl::Seconds(100);
  p.jitter = 0.1;
  EXPECT_EQ(RefreshDelay(absl::Seconds(10), p, 0.0), absl::Seconds(10));
  EXPECT_EQ(RefreshDelay(absl::Seconds(10), p, 1.0), absl::Seconds(9));
  EXPECT_EQ(RefreshDelay(absl::Seconds(10), p, 0.5), absl::Milliseconds(9500));
  // Out-of-range draws are clamped, not trusted.
  EXPECT_EQ(RefreshDelay(absl::Seconds(10), p, -3.0), absl::Seconds(10));
  EXPECT_EQ(RefreshDelay(absl::Seconds(10), p, 7.0), absl::Seconds(9));
  EXPECT_EQ(RefreshDelay(absl::Seconds(10), p, std::nan("")), absl::Seconds(10));

  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  absl::Duration lo = absl::InfiniteDuration(), hi = absl::ZeroDuration();
  for (int i = 0; i < 10000; ++i) {
    absl::Duration d = RefreshDelay(absl::Seconds(10), p, u(rng));
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_GE(lo, absl::Seconds(9));
  EXPECT_LE(hi, absl::Seconds(10));
  // The draws spread over the range rather than sitting at one end.
  EXPECT_LT(lo, absl::Milliseconds(9050));
  EXPECT_GT(hi, absl::Milliseconds(9950));
}

TEST(RefreshDelayTest, MinAboveMaxDoesNotMisbehave) {
  RefreshPolicy p;
  p.min_refresh = absl::Seconds(10);
  p.max_refresh = absl::Seconds(1);
  p.jitter = 0;
  EXPECT_EQ(RefreshDelay(absl::Seconds(5), p, 0), absl::Seconds(10));
}

TEST(FailureBackoffTest, StartsSmallGrowsAndIsCapped) {
  RefreshPolicy p;  // 5s / 300s
  core::BackoffOptions o = FailureBackoff(p);
  EXPECT_TRUE(o.Validate().ok());
  EXPECT_EQ(o.initial, absl::Milliseconds(250));
  EXPECT_EQ(o.max, absl::Seconds(300));

  p.min_refresh = absl::Milliseconds(200);
  p.max_refresh = absl::Seconds(1);
  o = FailureBackoff(p);
  EXPECT_TRUE(o.Validate().ok());
  EXPECT_EQ(o.initial, absl::Milliseconds(50));
  core::Backoff b(o, 1);
  absl::Duration first = b.Next();
  EXPECT_GE(first, absl::Milliseconds(40));
  EXPECT_LE(first, absl::Milliseconds(60));
  absl::Duration last;
  for (int i = 0; i < 20; ++i) last = b.Next();
  EXPECT_GE(last, absl::Milliseconds(800));   // grew to the cap...
  EXPECT_LE(last, absl::Milliseconds(1200));  // ...and stays there, give or take jitter

  p.min_refresh = absl::Milliseconds(10);
  p.max_refresh = absl::Milliseconds(10);
  EXPECT_TRUE(FailureBackoff(p).Validate().ok());
}

}  // namespace
}  // namespace meshlib::discovery_internal
