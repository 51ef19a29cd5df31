#include "meshlib/core/backoff.h"

#include "gtest/gtest.h"

namespace meshlib::core {
namespace {

TEST(BackoffTest, GrowsByMultiplierWithinJitterAndCaps) {
  BackoffOptions o;
  o.initial = absl::Milliseconds(100);
  o.multiplier = 2;
  o.jitter = 0.2;
  o.max = absl::Milliseconds(1000);
  Backoff b(o, 7);
  absl::Duration expected = absl::Milliseconds(100);
  for (int i = 0; i < 10; ++i) {
    absl::Duration d = b.Next();
    EXPECT_GE(d, expected * 0.8) << "attempt " << i;
    EXPECT_LE(d, expected * 1.2) << "attempt " << i;
    expected = std::min(expected * 2, absl::Milliseconds(1000));
  }
  b.Reset();
  EXPECT_LE(b.Next(), absl::Milliseconds(120));
}

TEST(BackoffTest, JitterSpreadsClients) {
  BackoffOptions o;
  Backoff a(o, 1), b(o, 2);
  EXPECT_NE(a.Next(), b.Next());
}

TEST(BackoffTest, SameSeedSameDelays) {
  BackoffOptions o;
  Backoff a(o, 3), b(o, 3);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(a.Next(), b.Next());
}

TEST(BackoffTest, ValidateRejectsNonsense) {
  BackoffOptions o;
  o.jitter = 1.5;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = BackoffOptions{};
  o.max = absl::Milliseconds(1);
  EXPECT_NE(o.Validate().message().find("backoff.max"), absl::string_view::npos);
  EXPECT_TRUE(BackoffOptions{}.Validate().ok());
}

}  // namespace
}  // namespace meshlib::core
