// Inline time arithmetic for the call path.
//
// absl::Time and absl::Duration define + and -, and the conversions to
// integers, out of line (absl/time/duration.cc). With Abseil linked as a
// shared library, as Debian ships it, each is a call through the PLT, and a
// call through the mesh does about fifteen of them. These helpers do the
// same arithmetic inline on nanosecond counts for the values the call path
// sees (finite times within a century of the Unix epoch, finite durations
// shorter than a century) and hand anything else (infinities, extremes) to
// absl's own operators, so results are absl's. Precision: a nanosecond
// (absl keeps quarter nanoseconds; absl::Now() has none below a nanosecond).
#ifndef MESHLIB_CORE_FAST_TIME_H_
#define MESHLIB_CORE_FAST_TIME_H_

#include <cstdint>

#include "absl/base/optimization.h"
#include "absl/time/time.h"

namespace meshlib::core {
namespace fast_time_internal {

// Seconds either side of the epoch (about 126 years) within which values are
// handled here: sums and differences of two such values fit in int64 ns.
inline constexpr int64_t kMaxSeconds = 4'000'000'000;

// The nanoseconds of `d` when it is finite and shorter than kMaxSeconds.
inline bool SmallNanos(absl::Duration d, int64_t* ns) {
  const int64_t hi = absl::time_internal::GetRepHi(d);
  const uint32_t lo = absl::time_internal::GetRepLo(d);  // quarter ns; ~0u: infinite
  if (ABSL_PREDICT_FALSE(lo == ~uint32_t{0} || hi >= kMaxSeconds || hi <= -kMaxSeconds)) {
    return false;
  }
  *ns = hi * 1'000'000'000 + static_cast<int64_t>(lo / 4);
  return true;
}

}  // namespace fast_time_internal

// Nanoseconds since the Unix epoch of a time within about a century of it;
// false for any other (then use absl::ToUnixNanos, which saturates).
inline bool UnixNanosOf(absl::Time t, int64_t* ns) {
  return fast_time_internal::SmallNanos(absl::time_internal::ToUnixDuration(t), ns);
}

// absl::ToUnixNanos(t).
inline int64_t UnixNanos(absl::Time t) {
  int64_t ns;
  if (ABSL_PREDICT_TRUE(UnixNanosOf(t, &ns))) return ns;
  return absl::ToUnixNanos(t);
}

// a - b, as absl computes it.
inline absl::Duration TimeBetween(absl::Time a, absl::Time b) {
  int64_t x, y;
  if (ABSL_PREDICT_TRUE(UnixNanosOf(a, &x) && UnixNanosOf(b, &y))) {
    return absl::Nanoseconds(x - y);
  }
  return a - b;
}

// t + d, as absl computes it.
inline absl::Time TimePlus(absl::Time t, absl::Duration d) {
  int64_t x, y;
  if (ABSL_PREDICT_TRUE(UnixNanosOf(t, &x) && fast_time_internal::SmallNanos(d, &y))) {
    return absl::FromUnixNanos(x + y);
  }
  return t + d;
}

// absl::ToInt64Nanoseconds(d): truncated toward zero, saturating.
inline int64_t NanosOf(absl::Duration d) {
  int64_t ns;
  if (ABSL_PREDICT_TRUE(fast_time_internal::SmallNanos(d, &ns))) {
    // A negative duration with a fraction of a nanosecond: absl truncates
    // toward zero, the division above toward minus infinity.
    if (ns < 0 && absl::time_internal::GetRepLo(d) % 4 != 0) ++ns;
    return ns;
  }
  return absl::ToInt64Nanoseconds(d);
}

// absl::ToDoubleNanoseconds(d), to within a nanosecond.
inline double DoubleNanosOf(absl::Duration d) {
  int64_t ns;
  if (ABSL_PREDICT_TRUE(fast_time_internal::SmallNanos(d, &ns))) {
    return static_cast<double>(ns) +
           static_cast<double>(absl::time_internal::GetRepLo(d) % 4) / 4;
  }
  return absl::ToDoubleNanoseconds(d);
}

// absl::ToInt64Nanoseconds(a - b).
inline int64_t NanosBetween(absl::Time a, absl::Time b) {
  int64_t x, y;
  if (ABSL_PREDICT_TRUE(UnixNanosOf(a, &x) && UnixNanosOf(b, &y))) return x - y;
  return absl::ToInt64Nanoseconds(a - b);
}

}  // namespace meshlib::core

#endif  // MESHLIB_CORE_FAST_TIME_H_
