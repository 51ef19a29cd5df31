#include "meshlib/testing/fake_executor.h"

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshlib::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

const absl::Time kStart = absl::UnixEpoch() + absl::Hours(1);

TEST(FakeExecutorTest, TimeStandsStillUntilMoved) {
  FakeExecutor ex;
  EXPECT_EQ(ex.Now(), kStart);
  EXPECT_EQ(ex.RunPending(), 0);
  EXPECT_EQ(ex.Now(), kStart);

  FakeExecutor custom(absl::UnixEpoch() + absl::Seconds(5));
  EXPECT_EQ(custom.Now(), absl::UnixEpoch() + absl::Seconds(5));
}

TEST(FakeExecutorTest, PostedTasksRunInOrderOnlyWhenPumped) {
  FakeExecutor ex;
  std::vector<int> order;
  for (int i = 0; i < 5; ++i) ex.Post([&order, i] { order.push_back(i); });
  EXPECT_THAT(order, IsEmpty());  // nothing runs by itself
  EXPECT_EQ(ex.RunPending(), 5);
  EXPECT_THAT(order, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_EQ(ex.RunPending(), 0);
}

TEST(FakeExecutorTest, TasksPostedByTasksRunAfterEarlierOnes) {
  FakeExecutor ex;
  std::vector<std::string> order;
  ex.Post([&] {
    order.push_back("a");
    ex.Post([&] { order.push_back("c"); });
  });
  ex.Post([&] { order.push_back("b"); });
  EXPECT_EQ(ex.RunPending(), 3);
  EXPECT_THAT(order, ElementsAre("a", "b", "c"));
}

TEST(FakeExecutorTest, InExecutorThreadOnlyInsideATask) {
  FakeExecutor ex;
  EXPECT_FALSE(ex.InExecutorThread());
  bool inside = false;
  ex.Post([&] { inside = ex.InExecutorThread(); });
  ex.RunPending();
  EXPECT_TRUE(inside);
  EXPECT_FALSE(ex.InExecutorThread());
}

TEST(FakeExecutorTest, TimersFireInTimeOrderAtTheirDueTime) {
  FakeExecutor ex;
  std::vector<std::pair<int, absl::Duration>> fired;  // (id, Now() - start)
  auto record = [&](int id) {
    return [&, id] { fired.emplace_back(id, ex.Now() - kStart); };
  };
  // Scheduled out of order; two share a due time and keep scheduling order.
  ex.RunAfter(absl::Seconds(3), record(3));
  ex.RunAfter(absl::Seconds(1), record(1));
  ex.RunAfter(absl::Seconds(2), record(20));
  ex.RunAfter(absl::Seconds(2), record(21));
  ex.RunAt(kStart + absl::Milliseconds(500), record(0));
  EXPECT_EQ(ex.PendingTimers(), 5u);

  ex.AdvanceBy(absl::Seconds(10));
  EXPECT_THAT(fired, ElementsAre(std::make_pair(0, absl::Milliseconds(500)),
                                 std::make_pair(1, absl::Seconds(1)),
                                 std::make_pair(20, absl::Seconds(2)),
                                 std::make_pair(21, absl::Seconds(2)),
                                 std::make_pair(3, absl::Seconds(3))));
  EXPECT_EQ(ex.Now(), kStart + absl::Seconds(10));
  EXPECT_EQ(ex.PendingTimers(), 0u);
}

TEST(FakeExecutorTest, AdvanceByDoesNotFireEarly) {
  FakeExecutor ex;
  int fired = 0;
  ex.RunAfter(absl::Seconds(1), [&] { ++fired; });
  ex.AdvanceBy(absl::Milliseconds(999));
  EXPECT_EQ(fired, 0);
  EXPECT_EQ(ex.Now(), kStart + absl::Milliseconds(999));
  EXPECT_EQ(ex.RunPending(), 0);  // pumping without moving time fires nothing
  EXPECT_EQ(fired, 0);
  ex.AdvanceBy(absl::Nanoseconds(999'999));
  EXPECT_EQ(fired, 0);
  ex.AdvanceBy(absl::Nanoseconds(1));
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(ex.Now(), kStart + absl::Seconds(1));
}

TEST(FakeExecutorTest, ZeroDelayTimerFiresOnRunPending) {
  FakeExecutor ex;
  int fired = 0;
  ex.RunAfter(absl::ZeroDuration(), [&] { ++fired; });
  EXPECT_EQ(ex.RunPending(), 1);
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(ex.Now(), kStart);
}

TEST(FakeExecutorTest, AdvanceToThePastDoesNotMoveTimeBack) {
  FakeExecutor ex;
  ex.AdvanceBy(absl::Seconds(5));
  ex.AdvanceTo(kStart);
  EXPECT_EQ(ex.Now(), kStart + absl::Seconds(5));
}

TEST(FakeExecutorTest, CancelBeforeFiring) {
  FakeExecutor ex;
  int fired = 0;
  runtime::TimerId a = ex.RunAfter(absl::Seconds(1), [&] { fired += 1; });
  runtime::TimerId b = ex.RunAfter(absl::Seconds(1), [&] { fired += 10; });
  EXPECT_TRUE(a.valid());
  EXPECT_TRUE(ex.Cancel(a));
  EXPECT_FALSE(ex.Cancel(a));  // only once
  EXPECT_EQ(ex.PendingTimers(), 1u);
  ex.AdvanceBy(absl::Seconds(2));
  EXPECT_EQ(fired, 10);  // b, the other timer at the same time, still fires
  EXPECT_FALSE(ex.Cancel(b));
}

TEST(FakeExecutorTest, CancelAfterFiringReturnsFalse) {
  FakeExecutor ex;
  int fired = 0;
  runtime::TimerId id = ex.RunAfter(absl::Seconds(1), [&] { ++fired; });
  ex.AdvanceBy(absl::Seconds(1));
  EXPECT_EQ(fired, 1);
  EXPECT_FALSE(ex.Cancel(id));
}

TEST(FakeExecutorTest, CancelFromInsideTheRunningTimerReturnsFalse) {
  FakeExecutor ex;
  runtime::TimerId id;
  bool cancelled = true;
  id = ex.RunAfter(absl::Seconds(1), [&] { cancelled = ex.Cancel(id); });
  ex.AdvanceBy(absl::Seconds(1));
  EXPECT_FALSE(cancelled);
}

TEST(FakeExecutorTest, CancelUnknownIds) {
  FakeExecutor ex;
  EXPECT_FALSE(ex.Cancel(runtime::TimerId{}));
  runtime::TimerId id = ex.RunAfter(absl::Seconds(1), [] {});
  runtime::TimerId wrong_time = id;
  wrong_time.when += absl::Nanoseconds(1);
  EXPECT_FALSE(ex.Cancel(wrong_time));
  EXPECT_EQ(ex.PendingTimers(), 1u);
}

TEST(FakeExecutorTest, TimerScheduledByATimerFiresAtItsOwnDueTime) {
  FakeExecutor ex;
  std::vector<absl::Duration> fired;
  ex.RunAfter(absl::Seconds(1), [&] {
    fired.push_back(ex.Now() - kStart);
    // Due inside the same AdvanceBy window: must fire at 1.5 s, not at 10 s.
    ex.RunAfter(absl::Milliseconds(500), [&] {
      fired.push_back(ex.Now() - kStart);
      ex.RunAfter(absl::Seconds(20), [&] { fired.push_back(ex.Now() - kStart); });
    });
  });
  ex.RunAfter(absl::Seconds(2), [&] { fired.push_back(ex.Now() - kStart); });

  ex.AdvanceBy(absl::Seconds(10));
  EXPECT_THAT(fired, ElementsAre(absl::Seconds(1), absl::Milliseconds(1500),
                                 absl::Seconds(2)));
  EXPECT_EQ(ex.PendingTimers(), 1u);  // the 21.5 s one
  ex.AdvanceBy(absl::Seconds(20));
  EXPECT_THAT(fired, ElementsAre(absl::Seconds(1), absl::Milliseconds(1500),
                                 absl::Seconds(2), absl::Milliseconds(21500)));
}

TEST(FakeExecutorTest, TaskPostedByATimerRunsBeforeLaterTimers) {
  FakeExecutor ex;
  std::vector<std::pair<std::string, absl::Duration>> order;
  ex.RunAfter(absl::Seconds(1), [&] {
    ex.Post([&] { order.emplace_back("posted", ex.Now() - kStart); });
  });
  ex.RunAfter(absl::Seconds(2), [&] { order.emplace_back("timer", ex.Now() - kStart); });
  ex.AdvanceBy(absl::Seconds(3));
  EXPECT_THAT(order, ElementsAre(std::make_pair("posted", absl::Seconds(1)),
                                 std::make_pair("timer", absl::Seconds(2))));
}

TEST(FakeExecutorTest, TimerInThePastFiresOnNextPump) {
  FakeExecutor ex;
  ex.AdvanceBy(absl::Seconds(10));
  absl::Time seen;
  ex.RunAt(kStart, [&] { seen = ex.Now(); });
  EXPECT_EQ(ex.RunPending(), 1);
  EXPECT_EQ(seen, kStart + absl::Seconds(10));  // time does not go back
}

}  // namespace
}  // namespace meshlib::testing
