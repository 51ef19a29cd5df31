#include "meshlib/core/fast_time.h"

#include <cstdlib>
#include <limits>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace meshlib::core {
namespace {

std::vector<absl::Time> Times() {
  const absl::Time now = absl::Now();
  return {now,
          now + absl::Nanoseconds(1),
          now - absl::Hours(24 * 365),
          absl::UnixEpoch(),
          absl::UnixEpoch() - absl::Nanoseconds(1),
          absl::UnixEpoch() - absl::Seconds(1) + absl::Nanoseconds(250),
          absl::FromUnixSeconds(3'999'999'999),   // just inside the fast range
          absl::FromUnixSeconds(4'000'000'000),   // just outside: absl's path
          absl::FromUnixSeconds(-3'999'999'999),
          absl::FromUnixSeconds(-4'000'000'000),
          absl::FromUnixSeconds(int64_t{1} << 40),
          absl::UniversalEpoch(),
          absl::InfiniteFuture(),
          absl::InfinitePast()};
}

std::vector<absl::Duration> Durations() {
  return {absl::ZeroDuration(),
          absl::Nanoseconds(1),
          absl::Nanoseconds(-1),
          absl::Milliseconds(1500),
          -absl::Milliseconds(1500),
          absl::Nanoseconds(1) / 4,    // a quarter nanosecond
          -absl::Nanoseconds(1) / 4,
          absl::Nanoseconds(-7) - absl::Nanoseconds(1) / 4,
          absl::Hours(24 * 365 * 100),
          absl::Seconds(3'999'999'999),
          absl::Seconds(4'000'000'000),
          -absl::Seconds(4'000'000'000),
          absl::Seconds(int64_t{1} << 50),
          absl::InfiniteDuration(),
          -absl::InfiniteDuration()};
}

// Every helper against absl's own operator, over ordinary values, the edges
// of the fast range, values past them and infinities. Where absl keeps a
// fraction of a nanosecond the helpers round it to whole nanoseconds.
TEST(FastTimeTest, AgreesWithAbsl) {
  for (absl::Time a : Times()) {
    for (absl::Time b : Times()) {
      const absl::Duration want = a - b;
      if (want == absl::InfiniteDuration() || want == -absl::InfiniteDuration() ||
          absl::Trunc(want, absl::Nanoseconds(1)) == want) {
        EXPECT_EQ(TimeBetween(a, b), want) << a << " - " << b;
      } else {
        EXPECT_LE(absl::AbsDuration(TimeBetween(a, b) - want), absl::Nanoseconds(1))
            << a << " - " << b;
      }
      if (a - b != absl::InfiniteDuration() && a - b != -absl::InfiniteDuration()) {
        EXPECT_LE(std::abs(NanosBetween(a, b) - absl::ToInt64Nanoseconds(a - b)), 1)
            << a << " - " << b;
      } else {
        EXPECT_EQ(NanosBetween(a, b), absl::ToInt64Nanoseconds(a - b)) << a << " - " << b;
      }
    }
    for (absl::Duration d : Durations()) {
      const absl::Time want = a + d;
      const absl::Time got = TimePlus(a, d);
      if (want == absl::InfiniteFuture() || want == absl::InfinitePast()) {
        EXPECT_EQ(got, want) << a << " + " << d;
      } else {
        EXPECT_LE(absl::AbsDuration(got - want), absl::Nanoseconds(1)) << a << " + " << d;
      }
    }
    int64_t ns;
    if (UnixNanosOf(a, &ns)) {
      EXPECT_EQ(ns, absl::ToUnixNanos(a)) << a;
    }
  }
  for (absl::Duration d : Durations()) EXPECT_EQ(NanosOf(d), absl::ToInt64Nanoseconds(d)) << d;
}

// Values that come from the clock have no fraction of a nanosecond: there
// the helpers are exact.
TEST(FastTimeTest, ExactOnClockReadings) {
  const absl::Time start = absl::Now();
  const absl::Time later = start + absl::Milliseconds(3) + absl::Nanoseconds(17);
  EXPECT_EQ(TimeBetween(later, start), absl::Milliseconds(3) + absl::Nanoseconds(17));
  EXPECT_EQ(TimeBetween(start, later), -(absl::Milliseconds(3) + absl::Nanoseconds(17)));
  EXPECT_EQ(TimePlus(start, absl::Seconds(1)), start + absl::Seconds(1));
  EXPECT_EQ(TimePlus(start, -absl::Seconds(1)), start - absl::Seconds(1));
  EXPECT_EQ(NanosBetween(later, start), 3'000'017);
  EXPECT_EQ(TimeBetween(absl::InfiniteFuture(), start), absl::InfiniteDuration());
  EXPECT_EQ(TimeBetween(start, absl::InfiniteFuture()), -absl::InfiniteDuration());
  EXPECT_EQ(TimePlus(start, absl::InfiniteDuration()), absl::InfiniteFuture());
  EXPECT_EQ(NanosBetween(absl::InfiniteFuture(), start),
            std::numeric_limits<int64_t>::max());
}

}  // namespace
}  // namespace meshlib::core
