#include "meshlib/runtime/event_loop.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "meshlib/core/sync.h"
#include "meshlib/runtime/thread_pool.h"

namespace meshlib::runtime {
namespace {

using ::testing::ElementsAre;

// Generous: these bound how long a broken build hangs, they are not latency
// assertions (sanitizer builds on two shared cores are slow).
constexpr absl::Duration kWaitLimit = absl::Seconds(30);

std::unique_ptr<EventLoop> MakeLoop(const std::string& name = "test-loop") {
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create(name);
  EXPECT_TRUE(loop.ok()) << loop.status();
  return loop.ok() ? *std::move(loop) : nullptr;
}

// Runs `fn` on the loop thread and waits for it to finish.
template <typename Fn>
bool RunOnLoop(EventLoop& loop, Fn fn) {
  core::Notification done;
  loop.Post([&] {
    fn();
    done.Notify();
  });
  return done.WaitForNotificationWithTimeout(kWaitLimit);
}

// --- Post ---

TEST(EventLoopTest, CreateNamesTheLoop) {
  auto loop = MakeLoop("io-7");
  ASSERT_NE(loop, nullptr);
  EXPECT_EQ(loop->name(), "io-7");
}

TEST(EventLoopTest, PostRunsOnTheLoopThread) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  EXPECT_FALSE(loop->InExecutorThread());

  bool in_executor = false;
  std::thread::id ran_on;
  core::Notification done;
  loop->Post([&] {
    in_executor = loop->InExecutorThread();
    ran_on = std::this_thread::get_id();
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_TRUE(in_executor);
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_FALSE(loop->InExecutorThread());
}

TEST(EventLoopTest, PostedTasksRunInFifoOrder) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  constexpr int kTasks = 1000;
  std::vector<int> order;  // touched only on the loop thread until `done`
  core::Notification done;
  for (int i = 0; i < kTasks; ++i) {
    loop->Post([&order, i] { order.push_back(i); });
  }
  loop->Post([&] { done.Notify(); });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
  ASSERT_EQ(order.size(), static_cast<size_t>(kTasks));
  for (int i = 0; i < kTasks; ++i) ASSERT_EQ(order[i], i);
}

TEST(EventLoopTest, TaskPostedFromTheLoopRunsAfterEarlierTasks) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  std::vector<std::string> order;  // loop thread only until `done`
  core::Notification gate, done;
  // Hold the loop so that a and b are both queued before a runs; otherwise
  // a could post c before the test thread posts b, and c would rightly come
  // first.
  loop->Post([&] { gate.WaitForNotificationWithTimeout(kWaitLimit); });
  loop->Post([&] {
    order.push_back("a");
    loop->Post([&] {
      order.push_back("c");
      done.Notify();
    });
  });
  loop->Post([&] { order.push_back("b"); });
  gate.Notify();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_THAT(order, ElementsAre("a", "b", "c"));
}

TEST(EventLoopTest, FourThreadsPostingTenThousandTasksEachAllRun) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 10'000;
  std::atomic<int> ran{0};
  std::atomic<int> wrong_thread{0};
  // Per-producer FIFO: the loop sees each producer's tasks in order.
  std::array<int, kThreads> last_seen;  // loop thread only
  last_seen.fill(-1);
  std::atomic<int> out_of_order{0};
  core::Notification all_ran;

  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        loop->Post([&, t, i] {
          if (!loop->InExecutorThread()) wrong_thread.fetch_add(1);
          if (last_seen[t] != i - 1) out_of_order.fetch_add(1);
          last_seen[t] = i;
          if (ran.fetch_add(1) + 1 == kThreads * kPerThread) all_ran.Notify();
        });
      }
    });
  }
  for (auto& p : producers) p.join();
  ASSERT_TRUE(all_ran.WaitForNotificationWithTimeout(kWaitLimit)) << "ran " << ran.load();
  EXPECT_EQ(ran.load(), kThreads * kPerThread);
  EXPECT_EQ(wrong_thread.load(), 0);
  EXPECT_EQ(out_of_order.load(), 0);
}

// --- timers ---

TEST(EventLoopTest, RunAfterFiresNotEarlierThanRequested) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  // From another thread: each timer fires no earlier than its delay after the
  // moment it was scheduled.
  for (absl::Duration d : {absl::Milliseconds(20), absl::Microseconds(1500),
                           absl::ZeroDuration()}) {
    core::Notification fired;
    absl::Time fired_at;
    const absl::Time before = absl::Now();
    loop->RunAfter(d, [&] {
      fired_at = absl::Now();
      fired.Notify();
    });
    ASSERT_TRUE(fired.WaitForNotificationWithTimeout(kWaitLimit)) << d;
    EXPECT_GE(fired_at - before, d) << "timer of " << d << " fired early";
  }
}

TEST(EventLoopTest, TimersFireInDueOrderAndNotEarly) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  struct Fired {
    absl::Duration delay;
    absl::Time at;
  };
  std::vector<Fired> fired;  // loop thread only until `done`
  absl::Time base;
  core::Notification done;
  // Scheduled from inside one task: none can fire before all are scheduled,
  // so the firing order depends only on the due times.
  loop->Post([&] {
    base = loop->Now();
    for (absl::Duration d : {absl::Milliseconds(30), absl::Milliseconds(1),
                             absl::Microseconds(1500), absl::ZeroDuration(),
                             absl::Milliseconds(1)}) {
      loop->RunAt(base + d, [&, d] {
        fired.push_back({d, absl::Now()});
        if (fired.size() == 5) done.Notify();
      });
    }
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
  ASSERT_EQ(fired.size(), 5u);
  for (const Fired& f : fired) {
    EXPECT_GE(f.at, base + f.delay) << "timer of " << f.delay << " fired early";
  }
  EXPECT_EQ(fired[0].delay, absl::ZeroDuration());
  EXPECT_EQ(fired[1].delay, absl::Milliseconds(1));
  EXPECT_EQ(fired[2].delay, absl::Milliseconds(1));
  EXPECT_EQ(fired[3].delay, absl::Microseconds(1500));
  EXPECT_EQ(fired[4].delay, absl::Milliseconds(30));
}

TEST(EventLoopTest, RunAtInThePastFiresPromptly) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  core::Notification done;
  TimerId id = loop->RunAt(absl::Now() - absl::Hours(1), [&] { done.Notify(); });
  EXPECT_TRUE(id.valid());
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
}

TEST(EventLoopTest, CancelPreventsFiring) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  std::atomic<bool> cancelled_fired{false};
  // 200 ms: far enough that the test thread cannot lose the race to it.
  TimerId id = loop->RunAfter(absl::Milliseconds(200), [&] { cancelled_fired = true; });
  ASSERT_TRUE(id.valid());
  EXPECT_TRUE(loop->Cancel(id));
  EXPECT_FALSE(loop->Cancel(id));  // only once

  // A later timer firing proves the loop went past the cancelled one's time.
  core::Notification later;
  loop->RunAfter(absl::Milliseconds(250), [&] { later.Notify(); });
  ASSERT_TRUE(later.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_FALSE(cancelled_fired.load());
}

TEST(EventLoopTest, CancelAfterFiringReturnsFalse) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  core::Notification fired;
  TimerId id = loop->RunAfter(absl::Milliseconds(1), [&] { fired.Notify(); });
  ASSERT_TRUE(fired.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_FALSE(loop->Cancel(id));
  EXPECT_FALSE(loop->Cancel(TimerId{}));
}

TEST(EventLoopTest, CancelFromInsideTheRunningTimerReturnsFalse) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  TimerId id;
  std::mutex id_mu;
  std::atomic<int> result{-1};
  core::Notification done;
  {
    std::lock_guard<std::mutex> lock(id_mu);
    id = loop->RunAfter(absl::Milliseconds(5), [&] {
      std::lock_guard<std::mutex> lock(id_mu);
      result = loop->Cancel(id) ? 1 : 0;
      done.Notify();
    });
  }
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_EQ(result.load(), 0);
}

// The loop caps each sleep at 500 ms (event_loop.cc, kMaxSleep), so a loop
// that missed a wake-up would still run an earlier timer within 500 ms of
// starting its sleep. Right after RunOnLoop the loop has just begun such a
// sleep; a missed wake-up then shows as ~500 ms of latency, a working one as
// ~5 ms. The bound sits halfway, far from both.
constexpr absl::Duration kPromptly = absl::Milliseconds(250);

TEST(EventLoopTest, EarlierTimerFromAnotherThreadWakesASleepingLoop) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  std::atomic<bool> long_fired{false};
  loop->RunAfter(absl::Seconds(10), [&] { long_fired = true; });
  // Let the loop settle into its sleep: after this task it has nothing left
  // to do but wait for the 10 s timer.
  ASSERT_TRUE(RunOnLoop(*loop, [] {}));

  core::Notification short_fired;
  absl::Time scheduled, fired_at;
  std::thread other([&] {
    scheduled = absl::Now();
    loop->RunAfter(absl::Milliseconds(5), [&] {
      fired_at = absl::Now();
      short_fired.Notify();
    });
  });
  other.join();
  ASSERT_TRUE(short_fired.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_LT(fired_at - scheduled, kPromptly) << "the loop slept through an earlier timer";
  EXPECT_GE(fired_at - scheduled, absl::Milliseconds(5));
  EXPECT_FALSE(long_fired.load());
}

TEST(EventLoopTest, PostFromAnotherThreadWakesAnIdleLoop) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(RunOnLoop(*loop, [] {}));  // the loop has just gone to sleep
    core::Notification ran;
    absl::Time ran_at;
    const absl::Time posted = absl::Now();
    loop->Post([&] {
      ran_at = absl::Now();
      ran.Notify();
    });
    ASSERT_TRUE(ran.WaitForNotificationWithTimeout(kWaitLimit));
    EXPECT_LT(ran_at - posted, kPromptly) << "round " << round << ": Post did not wake the loop";
  }
}

TEST(EventLoopTest, EarlierTimerFromTheLoopThreadIsHonoured) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  loop->RunAfter(absl::Seconds(10), [] {});
  ASSERT_TRUE(RunOnLoop(*loop, [] {}));
  core::Notification fired;
  absl::Time scheduled, fired_at;  // loop thread only until `fired`
  loop->Post([&] {
    scheduled = absl::Now();
    loop->RunAfter(absl::Milliseconds(5), [&] {
      fired_at = absl::Now();
      fired.Notify();
    });
  });
  ASSERT_TRUE(fired.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_LT(fired_at - scheduled, kPromptly);
  EXPECT_GE(fired_at - scheduled, absl::Milliseconds(5));
}

TEST(EventLoopTest, ManyThreadsSchedulingTimersAllFire) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  std::atomic<int> fired{0};
  std::atomic<int> cancelled{0};
  core::Notification all;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        // Every third one is cancelled again; the rest must fire.
        TimerId id = loop->RunAfter(absl::Microseconds((i * 37 + t * 11) % 3000), [&] {
          if (fired.fetch_add(1) + 1 + cancelled.load() == kThreads * kPerThread) {
            all.Notify();
          }
        });
        if (i % 3 == 0 && loop->Cancel(id)) cancelled.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  // A last no-op timer re-checks the total once every producer is done.
  loop->RunAfter(absl::Milliseconds(5), [&] {
    if (fired.load() + cancelled.load() == kThreads * kPerThread) all.Notify();
  });
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(kWaitLimit))
      << "fired " << fired.load() << " cancelled " << cancelled.load();
  EXPECT_EQ(fired.load() + cancelled.load(), kThreads * kPerThread);
}

// --- coarse timers (RunAtCoarse) ---

TEST(EventLoopTest, CoarseTimersFireNotEarlyAndWithinAFewMilliseconds) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  // Near the wheel's start, inside its near slots, past them (a far block
  // brought near on the way), and beyond the wheel (kept as RunAt keeps it).
  for (absl::Duration d : {absl::ZeroDuration(), absl::Microseconds(300), absl::Milliseconds(7),
                           absl::Milliseconds(1300)}) {
    core::Notification fired;
    absl::Time fired_at;
    const absl::Time when = absl::Now() + d;
    TimerId id = loop->RunAtCoarse(when, [&] {
      fired_at = absl::Now();
      fired.Notify();
    });
    ASSERT_TRUE(id.valid());
    ASSERT_TRUE(fired.WaitForNotificationWithTimeout(kWaitLimit)) << d;
    EXPECT_GE(fired_at, when) << "coarse timer of " << d << " fired early";
    EXPECT_FALSE(loop->Cancel(id)) << "a timer that ran cannot be cancelled";
  }
}

TEST(EventLoopTest, CoarseTimerFarBeyondTheWheelCanBeCancelled) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  std::atomic<bool> ran{false};
  TimerId id = loop->RunAtCoarse(absl::Now() + absl::Hours(2), [&] { ran = true; });
  TimerId never = loop->RunAtCoarse(absl::InfiniteFuture(), [&] { ran = true; });
  EXPECT_TRUE(loop->Cancel(id));
  EXPECT_TRUE(loop->Cancel(never));
  EXPECT_FALSE(loop->Cancel(id));
  loop.reset();
  EXPECT_FALSE(ran.load());
}

TEST(EventLoopTest, CancelledCoarseTimersNeverRunAndTheirIdsStayDead) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  constexpr int kTimers = 2000;
  std::atomic<int> ran_cancelled{0};
  std::atomic<int> ran_kept{0};
  std::vector<TimerId> cancelled;
  // Spread over near slots and far blocks (0.3 s to 3 s: none can come due
  // before it is cancelled, even on a slow sanitizer build); every other one
  // is cancelled at once.
  const absl::Time base = absl::Now();
  for (int i = 0; i < kTimers; ++i) {
    const absl::Duration d = absl::Milliseconds(300) + absl::Microseconds((i * 7919) % 2'700'000);
    if (i % 2 == 0) {
      TimerId id = loop->RunAtCoarse(base + d, [&] { ran_cancelled.fetch_add(1); });
      ASSERT_TRUE(loop->Cancel(id));
      cancelled.push_back(id);
    } else {
      loop->RunAtCoarse(base + d, [&] { ran_kept.fetch_add(1); });
    }
  }
  // The cancelled ones' nodes are reused now: their old ids must not
  // cancel the timers that took their place.
  core::Notification reused_fired;
  std::vector<TimerId> reused;
  std::atomic<int> reused_ran{0};
  for (int i = 0; i < 10; ++i) {
    reused.push_back(loop->RunAtCoarse(absl::Now() + absl::Milliseconds(50), [&] {
      if (reused_ran.fetch_add(1) + 1 == 10) reused_fired.Notify();
    }));
  }
  for (const TimerId& id : cancelled) EXPECT_FALSE(loop->Cancel(id));
  ASSERT_TRUE(reused_fired.WaitForNotificationWithTimeout(kWaitLimit));
  core::Notification after;
  loop->RunAt(base + absl::Milliseconds(3100), [&] { after.Notify(); });
  ASSERT_TRUE(after.WaitForNotificationWithTimeout(kWaitLimit));
  // Coarse timers may run up to a millisecond after plain ones of the same
  // time: give the last slot time to pass.
  core::Notification settled;
  loop->RunAfter(absl::Milliseconds(20), [&] { settled.Notify(); });
  ASSERT_TRUE(settled.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_EQ(ran_cancelled.load(), 0);
  EXPECT_EQ(ran_kept.load(), kTimers / 2);
}

TEST(EventLoopTest, CoarseTimerCancelsAnotherDueInTheSameMillisecond) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  std::atomic<bool> second_ran{false};
  std::atomic<bool> cancelled{false};
  std::atomic<bool> self_cancel{true};
  core::Notification done;
  // Both added from one task, with the same time: they are due together,
  // the first in order runs first and cancels the second, then itself (too
  // late: it is running).
  loop->Post([&] {
    const absl::Time when = absl::Now() + absl::Milliseconds(5);
    auto second = std::make_shared<TimerId>();
    auto first = std::make_shared<TimerId>();
    *first = loop->RunAtCoarse(when, [&, second, first] {
      cancelled = loop->Cancel(*second);
      self_cancel = loop->Cancel(*first);
      done.Notify();
    });
    *second = loop->RunAtCoarse(when, [&] { second_ran = true; });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
  core::Notification later;
  loop->RunAfter(absl::Milliseconds(10), [&] { later.Notify(); });
  ASSERT_TRUE(later.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_TRUE(cancelled.load());
  EXPECT_FALSE(self_cancel.load());
  EXPECT_FALSE(second_ran.load());
}

TEST(EventLoopTest, CoarseTimersFromManyThreadsAllRunOrAreCancelled) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 1000;
  std::atomic<int> fired{0};
  std::atomic<int> cancelled{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        TimerId id = loop->RunAtCoarse(
            absl::Now() + absl::Microseconds((i * 37 + t * 11) % 5000),
            [&] { fired.fetch_add(1); });
        if (i % 3 == 0 && loop->Cancel(id)) cancelled.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  const absl::Time give_up = absl::Now() + kWaitLimit;
  while (fired.load() + cancelled.load() < kThreads * kPerThread && absl::Now() < give_up) {
    core::Notification tick;
    loop->RunAfter(absl::Milliseconds(2), [&] { tick.Notify(); });
    ASSERT_TRUE(tick.WaitForNotificationWithTimeout(kWaitLimit));
  }
  EXPECT_EQ(fired.load() + cancelled.load(), kThreads * kPerThread);
}

TEST(EventLoopTest, CoarseTimerAddedWhileTheLoopSleepsWakesIt) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  // Let the loop go to sleep with nothing to do (up to its longest sleep).
  ASSERT_TRUE(RunOnLoop(*loop, [] {}));
  absl::SleepFor(absl::Milliseconds(20));
  core::Notification fired;
  const absl::Time start = absl::Now();
  loop->RunAtCoarse(start + absl::Milliseconds(5), [&] { fired.Notify(); });
  ASSERT_TRUE(fired.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_LT(absl::Now() - start, kPromptly) << "the loop slept through a coarse timer";
}

// --- fd watching ---

class RecordingHandler : public FdHandler {
 public:
  explicit RecordingHandler(int fd) : fd_(fd) {}
  void OnFdEvents(uint32_t events) override {
    uint64_t value = 0;
    // Drain, so that the level-triggered fd does not fire again.
    if (read(fd_, &value, sizeof(value)) == sizeof(value)) total_ += value;
    calls_.fetch_add(1);
    last_events_.store(events);
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
  bool WaitForCalls(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(kWaitLimit),
                        [&] { return calls_.load() >= n; });
  }
  int calls() const { return calls_.load(); }
  uint32_t last_events() const { return last_events_.load(); }
  uint64_t total() const { return total_.load(); }

 private:
  const int fd_;
  std::atomic<int> calls_{0};
  std::atomic<uint32_t> last_events_{0};
  std::atomic<uint64_t> total_{0};
  std::mutex mu_;
  std::condition_variable cv_;
};

void Bump(int efd, uint64_t v) {
  ASSERT_EQ(write(efd, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v)));
}

TEST(EventLoopTest, WatchDeliversEpollinAndUnwatchStopsIt) {
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  RecordingHandler handler(efd);
  {
    auto loop = MakeLoop();
    ASSERT_NE(loop, nullptr);
    absl::Status watched = absl::UnknownError("not run");
    ASSERT_TRUE(RunOnLoop(*loop, [&] { watched = loop->Watch(efd, EPOLLIN, &handler); }));
    ASSERT_TRUE(watched.ok()) << watched;
    EXPECT_EQ(handler.calls(), 0);  // nothing to read yet

    Bump(efd, 3);
    ASSERT_TRUE(handler.WaitForCalls(1));
    EXPECT_TRUE(handler.last_events() & EPOLLIN);
    EXPECT_EQ(handler.total(), 3u);

    Bump(efd, 4);
    ASSERT_TRUE(handler.WaitForCalls(2));
    EXPECT_EQ(handler.total(), 7u);

    // Watching the same fd twice is an error naming the fd.
    absl::Status again;
    ASSERT_TRUE(RunOnLoop(*loop, [&] { again = loop->Watch(efd, EPOLLIN, &handler); }));
    EXPECT_EQ(again.code(), absl::StatusCode::kInternal);
    EXPECT_NE(std::string(again.message()).find("fd " + std::to_string(efd)),
              std::string::npos)
        << again;

    ASSERT_TRUE(RunOnLoop(*loop, [&] { loop->Unwatch(efd); }));
    const int calls_before = handler.calls();
    Bump(efd, 5);
    // The fd is readable before these tasks are posted, so a still-watched fd
    // would be dispatched in the iteration that runs them, or earlier.
    ASSERT_TRUE(RunOnLoop(*loop, [] {}));
    ASSERT_TRUE(RunOnLoop(*loop, [] {}));
    EXPECT_EQ(handler.calls(), calls_before);
    EXPECT_EQ(handler.total(), 7u);
    ASSERT_TRUE(RunOnLoop(*loop, [&] { loop->Unwatch(efd); }));  // idempotent
  }
  close(efd);
}

TEST(EventLoopTest, WatchDeliversPipeHangup) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  RecordingHandler handler(fds[0]);
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  absl::Status watched;
  ASSERT_TRUE(RunOnLoop(*loop, [&] { watched = loop->Watch(fds[0], EPOLLIN, &handler); }));
  ASSERT_TRUE(watched.ok()) << watched;
  close(fds[1]);
  ASSERT_TRUE(handler.WaitForCalls(1));
  EXPECT_TRUE(handler.last_events() & EPOLLHUP) << handler.last_events();
  ASSERT_TRUE(RunOnLoop(*loop, [&] { loop->Unwatch(fds[0]); }));
  loop.reset();
  close(fds[0]);
}

TEST(EventLoopTest, RewatchChangesTheInterestSet) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  RecordingHandler handler(-1);  // never reads: EPOLLOUT is what we look at
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  absl::Status watched, rewatched;
  // Nothing to read on sv[0]: EPOLLIN alone stays quiet...
  ASSERT_TRUE(RunOnLoop(*loop, [&] { watched = loop->Watch(sv[0], EPOLLIN, &handler); }));
  ASSERT_TRUE(watched.ok()) << watched;
  ASSERT_TRUE(RunOnLoop(*loop, [] {}));
  EXPECT_EQ(handler.calls(), 0);
  // ...and asking for EPOLLOUT reports the socket writable.
  ASSERT_TRUE(RunOnLoop(*loop, [&] {
    rewatched = loop->Rewatch(sv[0], EPOLLIN | EPOLLOUT);
  }));
  ASSERT_TRUE(rewatched.ok()) << rewatched;
  ASSERT_TRUE(handler.WaitForCalls(1));
  EXPECT_TRUE(handler.last_events() & EPOLLOUT);
  ASSERT_TRUE(RunOnLoop(*loop, [&] { loop->Unwatch(sv[0]); }));
  loop.reset();
  close(sv[0]);
  close(sv[1]);
}

// The header promises that a handler may be destroyed right after Unwatch
// even while its events sit in the current epoll batch. Two ready fds land
// in one batch; whichever handler runs first unwatches and deletes the
// other, which then must not be called (ASan would flag a use after free).
class KillerHandler : public FdHandler {
 public:
  KillerHandler(EventLoop* loop, int fd, std::unique_ptr<KillerHandler>* victim,
                int victim_fd, std::atomic<int>* calls, core::Notification* done)
      : loop_(loop), fd_(fd), victim_(victim), victim_fd_(victim_fd), calls_(calls),
        done_(done) {}
  void OnFdEvents(uint32_t) override {
    calls_->fetch_add(1);
    if (*victim_ != nullptr) {
      loop_->Unwatch(victim_fd_);
      victim_->reset();
    }
    loop_->Unwatch(fd_);
    done_->Notify();
  }

 private:
  EventLoop* loop_;
  int fd_;
  std::unique_ptr<KillerHandler>* victim_;
  int victim_fd_;
  std::atomic<int>* calls_;
  core::Notification* done_;
};

TEST(EventLoopTest, HandlerDeletedAfterUnwatchInTheSameBatchIsNotCalled) {
  int a = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);  // both readable from the start
  int b = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  std::atomic<int> calls{0};
  core::Notification done;
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  std::unique_ptr<KillerHandler> ha, hb;
  ha = std::make_unique<KillerHandler>(loop.get(), a, &hb, b, &calls, &done);
  hb = std::make_unique<KillerHandler>(loop.get(), b, &ha, a, &calls, &done);
  absl::Status wa, wb;
  ASSERT_TRUE(RunOnLoop(*loop, [&] {
    wa = loop->Watch(a, EPOLLIN, ha.get());
    wb = loop->Watch(b, EPOLLIN, hb.get());
  }));
  ASSERT_TRUE(wa.ok()) << wa;
  ASSERT_TRUE(wb.ok()) << wb;
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
  ASSERT_TRUE(RunOnLoop(*loop, [] {}));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE((ha == nullptr) != (hb == nullptr));  // exactly one was deleted
  loop.reset();
  close(a);
  close(b);
}

// --- DeferToEndOfIteration ---

TEST(EventLoopTest, DeferredTasksRunAfterThePostedTasksOfTheSameIteration) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  std::vector<std::string> order;  // loop thread only until `done`
  core::Notification done;
  loop->Post([&] {
    order.push_back("setup");
    // Posted from the loop thread, t1 and t2 form the next iteration's batch.
    loop->Post([&] {
      order.push_back("t1");
      loop->DeferToEndOfIteration([&] {
        order.push_back("deferred");
        // Posted now: next iteration. Deferred now: still this one.
        loop->Post([&] {
          order.push_back("next-iteration");
          done.Notify();
        });
        loop->DeferToEndOfIteration([&] { order.push_back("deferred-by-deferred"); });
      });
    });
    loop->Post([&] { order.push_back("t2"); });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_THAT(order, ElementsAre("setup", "t1", "t2", "deferred", "deferred-by-deferred",
                                 "next-iteration"));
}

TEST(EventLoopTest, TaskDeferredByATimerOrHandlerWaitsForThatIterationsPostedTasks) {
  int efd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);  // readable from the start
  ASSERT_GE(efd, 0);
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  std::vector<std::string> order;  // loop thread only until `done`
  core::Notification done;

  class DeferringHandler : public FdHandler {
   public:
    DeferringHandler(EventLoop* loop, int fd, std::vector<std::string>* order)
        : loop_(loop), fd_(fd), order_(order) {}
    void OnFdEvents(uint32_t) override {
      uint64_t v;
      [[maybe_unused]] ssize_t n = read(fd_, &v, sizeof(v));
      loop_->Unwatch(fd_);
      order_->push_back("handler");
      loop_->DeferToEndOfIteration([this] { order_->push_back("deferred-by-handler"); });
    }

   private:
    EventLoop* loop_;
    int fd_;
    std::vector<std::string>* order_;
  } handler(loop.get(), efd, &order);

  // One setup task arranges a ready fd, an expired timer and a posted task,
  // so that all three are handled in the next iteration.
  loop->Post([&] {
    order.push_back("setup");
    absl::Status s = loop->Watch(efd, EPOLLIN, &handler);
    if (!s.ok()) order.push_back(std::string(s.message()));
    loop->RunAt(absl::InfinitePast(), [&] {
      order.push_back("timer");
      loop->DeferToEndOfIteration([&] {
        order.push_back("deferred-by-timer");
        done.Notify();
      });
    });
    loop->Post([&] { order.push_back("posted"); });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
  EXPECT_THAT(order, ElementsAre("setup", "handler", "timer", "posted", "deferred-by-handler",
                                 "deferred-by-timer"));
  loop.reset();
  close(efd);
}

TEST(EventLoopTest, DeferredTasksRunBeforeTheLoopSleeps) {
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  core::Notification done;
  // Nothing else is pending: the deferred task must not wait for a wake-up.
  loop->Post([&] { loop->DeferToEndOfIteration([&] { done.Notify(); }); });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));
}

// --- shutdown ---

// Counts its destructions; `ran` counts calls.
struct Tracked {
  std::atomic<int>* destroyed;
  explicit Tracked(std::atomic<int>* d) : destroyed(d) {}
  ~Tracked() { destroyed->fetch_add(1); }
};

TEST(EventLoopTest, DestroyingTheLoopReleasesPendingTasksAndTimers) {
  std::atomic<int> destroyed{0};
  std::atomic<int> timers_ran{0};
  std::atomic<int> tasks_ran{0};
  constexpr int kTasks = 100;
  constexpr int kTimers = 50;
  {
    auto loop = MakeLoop();
    ASSERT_NE(loop, nullptr);
    // Hold the loop thread so that tasks pile up behind it.
    core::Notification release;
    loop->Post([&] { release.WaitForNotificationWithTimeout(kWaitLimit); });
    for (int i = 0; i < kTasks; ++i) {
      loop->Post([t = std::make_unique<Tracked>(&destroyed), &tasks_ran] {
        tasks_ran.fetch_add(1);
      });
    }
    for (int i = 0; i < kTimers; ++i) {
      loop->RunAfter(absl::Hours(1) + absl::Seconds(i),
                     [t = std::make_unique<Tracked>(&destroyed), &timers_ran] {
                       timers_ran.fetch_add(1);
                     });
      // Coarse timers too: in the near slots, in a far block, and beyond the
      // wheel.
      for (absl::Duration d : {absl::Milliseconds(800), absl::Seconds(5), absl::Hours(1)}) {
        loop->RunAtCoarse(absl::Now() + d + absl::Milliseconds(i),
                          [t = std::make_unique<Tracked>(&destroyed), &timers_ran] {
                            timers_ran.fetch_add(1);
                          });
      }
    }
    std::thread releaser([&] { release.Notify(); });
    loop.reset();  // joins the loop thread
    releaser.join();
  }
  EXPECT_EQ(destroyed.load(), kTasks + 4 * kTimers);  // each exactly once, none leaked
  EXPECT_EQ(timers_ran.load(), 0);
  EXPECT_LE(tasks_ran.load(), kTasks);
}

TEST(EventLoopTest, DeferredTasksAreFlushedOnStop) {
  std::atomic<bool> ran{false};
  {
    auto loop = MakeLoop();
    ASSERT_NE(loop, nullptr);
    ASSERT_TRUE(RunOnLoop(*loop, [&] {
      loop->DeferToEndOfIteration([&] { ran = true; });
    }));
  }
  EXPECT_TRUE(ran.load());
}

// The destructor destroys leftover tasks "outside the lock: their destructors
// may Post". A destructor that posts back to the dying loop (a connection's
// last reference sitting in a pending timer) must not make the loop write its
// wake-up word into a descriptor it no longer owns. Here the destructor opens
// a socket pair first, the way any other thread of the process might at that
// moment, and checks that no stray bytes arrive on it.
class PostsOnDestroy {
 public:
  PostsOnDestroy(EventLoop* loop, std::atomic<int>* stray_bytes)
      : loop_(loop), stray_bytes_(stray_bytes) {}
  PostsOnDestroy(const PostsOnDestroy&) = delete;
  PostsOnDestroy& operator=(const PostsOnDestroy&) = delete;
  ~PostsOnDestroy() {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return;
    loop_->Post([] {});
    int total = 0;
    for (int fd : sv) {
      char buf[64];
      ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0) total += static_cast<int>(n);
    }
    stray_bytes_->store(total);
    close(sv[0]);
    close(sv[1]);
  }

 private:
  EventLoop* loop_;
  std::atomic<int>* stray_bytes_;
};

TEST(EventLoopTest, TaskDestroyedAtShutdownMayPostWithoutTouchingReusedFds) {
  std::atomic<int> stray_bytes{-1};
  auto loop = MakeLoop();
  ASSERT_NE(loop, nullptr);
  EventLoop* raw = loop.get();  // unique_ptr::reset nulls `loop` before deleting
  loop->RunAfter(absl::Hours(1),
                 [p = std::make_unique<PostsOnDestroy>(raw, &stray_bytes)] {});
  loop.reset();
  EXPECT_EQ(stray_bytes.load(), 0)
      << "the loop's Wake() wrote into an fd opened after the loop closed its eventfd";
}

// --- Runtime ---

TEST(RuntimeTest, CreatesTheRequestedLoopsAndCyclesThroughThem) {
  absl::StatusOr<std::shared_ptr<Runtime>> rt = Runtime::Create(3, "rt");
  ASSERT_TRUE(rt.ok()) << rt.status();
  Runtime& r = **rt;
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r.loop(0).name(), "rt-0");
  EXPECT_EQ(r.loop(1).name(), "rt-1");
  EXPECT_EQ(r.loop(2).name(), "rt-2");
  std::set<EventLoop*> distinct = {&r.loop(0), &r.loop(1), &r.loop(2)};
  EXPECT_EQ(distinct.size(), 3u);

  EventLoop* seq[6];
  for (EventLoop*& l : seq) l = &r.NextLoop();
  EXPECT_EQ(seq[0], &r.loop(0));
  EXPECT_EQ(seq[1], &r.loop(1));
  EXPECT_EQ(seq[2], &r.loop(2));
  EXPECT_EQ(seq[3], &r.loop(0));
  EXPECT_EQ(seq[4], &r.loop(1));
  EXPECT_EQ(seq[5], &r.loop(2));

  // Each loop has its own thread.
  std::set<std::thread::id> threads;
  for (size_t i = 0; i < r.size(); ++i) {
    std::thread::id id;
    ASSERT_TRUE(RunOnLoop(r.loop(i), [&] { id = std::this_thread::get_id(); }));
    threads.insert(id);
    EXPECT_FALSE(r.loop((i + 1) % 3).InExecutorThread());
  }
  EXPECT_EQ(threads.size(), 3u);
}

TEST(RuntimeTest, ZeroThreadsMeansOneLoopPerCpu) {
  absl::StatusOr<std::shared_ptr<Runtime>> rt = Runtime::Create(0, "auto");
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_EQ((*rt)->size(),
            static_cast<size_t>(std::max(1u, std::thread::hardware_concurrency())));
}

// --- ThreadPool ---

TEST(ThreadPoolTest, RunsEverythingSubmittedBeforeTheDestructorReturns) {
  constexpr int kTasks = 5000;
  std::atomic<int> ran{0};
  std::mutex ids_mu;
  std::set<std::thread::id> ids;
  {
    ThreadPool pool(4, "workers");
    for (int i = 0; i < kTasks; ++i) {
      pool.Submit([&] {
        ran.fetch_add(1);
        std::lock_guard<std::mutex> lock(ids_mu);
        ids.insert(std::this_thread::get_id());
      });
    }
  }
  EXPECT_EQ(ran.load(), kTasks);
  EXPECT_LE(ids.size(), 4u);
  EXPECT_EQ(ids.count(std::this_thread::get_id()), 0u);
}

TEST(ThreadPoolTest, TasksSubmittedByTasksDuringShutdownStillRun) {
  std::atomic<int> ran{0};
  ThreadPool* p = nullptr;
  // Declared before the pool: the pool's destructor still runs it.
  std::function<void(int)> step = [&](int left) {
    ran.fetch_add(1);
    if (left > 0) p->Submit([&step, left] { step(left - 1); });
  };
  {
    ThreadPool pool(2, "chain");
    p = &pool;
    // Each task submits the next: the chain is still growing while the
    // destructor waits.
    pool.Submit([&] { step(99); });
  }
  EXPECT_EQ(ran.load(), 100);
}

TEST(ThreadPoolTest, ZeroThreadsStillRunsWork) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(0, "min");
    pool.Submit([&] { ran.fetch_add(1); });
  }
  EXPECT_EQ(ran.load(), 1);
}

TEST(ThreadPoolTest, WorkRunsWhileThePoolIsAlive) {
  ThreadPool pool(2, "live");
  core::Notification done;
  pool.Submit([&] { done.Notify(); });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kWaitLimit));  // not only at destruction
}

}  // namespace
}  // namespace meshlib::runtime
