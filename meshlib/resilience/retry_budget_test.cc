#include "meshlib/resilience/retry_budget.h"

#include "gtest/gtest.h"
#include "meshlib/testing/fake_executor.h"

namespace meshlib::resilience {
namespace {

TEST(RetryBudgetTest, FloorAloneAllowsMinPerSecondTimesTtl) {
  testing::FakeExecutor clock;
  RetryBudget b(RetryBudgetOptions{0.2, 10, absl::Seconds(10)}, &clock);
  int allowed = 0;
  while (b.TryWithdraw()) ++allowed;
  EXPECT_EQ(allowed, 100);  // 10/s over a 10s window
}

TEST(RetryBudgetTest, RatioOfRecentCallsOnTopOfTheFloor) {
  testing::FakeExecutor clock;
  RetryBudget b(RetryBudgetOptions{0.2, 0, absl::Seconds(10)}, &clock);
  for (int i = 0; i < 1000; ++i) b.Deposit();
  int allowed = 0;
  while (b.TryWithdraw()) ++allowed;
  EXPECT_EQ(allowed, 200);
  // Amplification stays bounded: 1000 calls + 200 retries = 1.2x.
}

TEST(RetryBudgetTest, OldCallsAgeOutOfTheWindow) {
  testing::FakeExecutor clock;
  RetryBudget b(RetryBudgetOptions{0.5, 0, absl::Seconds(10)}, &clock);
  for (int i = 0; i < 100; ++i) b.Deposit();
  EXPECT_DOUBLE_EQ(b.Balance(), 50);
  clock.AdvanceBy(absl::Seconds(5));
  EXPECT_DOUBLE_EQ(b.Balance(), 50);  // still inside the window
  clock.AdvanceBy(absl::Seconds(6));
  EXPECT_DOUBLE_EQ(b.Balance(), 0);  // aged out
  EXPECT_FALSE(b.TryWithdraw());
}

TEST(RetryBudgetTest, SpentRetriesComeBackAsTheyAgeOut) {
  testing::FakeExecutor clock;
  RetryBudget b(RetryBudgetOptions{0, 1, absl::Seconds(10)}, &clock);
  int first = 0;
  while (b.TryWithdraw()) ++first;
  EXPECT_EQ(first, 10);
  EXPECT_FALSE(b.TryWithdraw());
  clock.AdvanceBy(absl::Seconds(11));
  EXPECT_TRUE(b.TryWithdraw());
}

TEST(RetryBudgetTest, ValidateNamesTheField) {
  EXPECT_FALSE((RetryBudgetOptions{-1, 10, absl::Seconds(10)}).Validate().ok());
  EXPECT_FALSE((RetryBudgetOptions{0.2, -1, absl::Seconds(10)}).Validate().ok());
  EXPECT_FALSE((RetryBudgetOptions{0.2, 10, absl::Milliseconds(10)}).Validate().ok());
  EXPECT_TRUE(RetryBudgetOptions{}.Validate().ok());
}

}  // namespace
}  // namespace meshlib::resilience
