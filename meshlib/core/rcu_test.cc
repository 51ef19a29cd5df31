#include "meshlib/core/rcu.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace meshlib::core {
namespace {

// An object that knows when it was used after deletion.
struct Tracked {
  explicit Tracked(int v) : value(v) { alive.store(true); }
  ~Tracked() { alive.store(false); }
  int value;
  std::atomic<bool> alive{false};
};

TEST(RcuPtrTest, ReadersNeverSeeADeletedObject) {
  RcuPtr<Tracked> ptr(std::make_unique<Tracked>(0));
  std::atomic<bool> stop{false};
  std::atomic<int64_t> reads{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        RcuReadGuard g(ptr);
        Tracked* p = ptr.Get(g);
        if (p == nullptr || !p->alive.load()) ++bad;
        reads.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  // Let every reader start (slow under sanitizers) before updating.
  while (reads.load() < 1000) std::this_thread::yield();
  for (int i = 1; i <= 2000; ++i) ptr.Update(std::make_unique<Tracked>(i));
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0);
  RcuReadGuard g(ptr);
  EXPECT_EQ(ptr.Get(g)->value, 2000);
}

TEST(RcuPtrTest, UpdateWaitsForAReaderThatHoldsTheOldObject) {
  RcuPtr<Tracked> ptr(std::make_unique<Tracked>(1));
  std::atomic<bool> holding{false}, release{false};
  std::atomic<bool> seen_alive_at_end{false};
  std::thread reader([&] {
    RcuReadGuard g(ptr);
    Tracked* p = ptr.Get(g);
    holding = true;
    while (!release.load()) std::this_thread::yield();
    seen_alive_at_end = p->alive.load();
  });
  while (!holding.load()) std::this_thread::yield();
  std::atomic<bool> updated{false};
  std::thread writer([&] {
    ptr.Update(std::make_unique<Tracked>(2));
    updated = true;
  });
  // A window in which Update must not return: the reader still holds the
  // old object.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(updated.load());  // still waiting for the reader
  release = true;
  reader.join();
  writer.join();
  EXPECT_TRUE(seen_alive_at_end.load());
  EXPECT_TRUE(updated.load());
}

}  // namespace
}  // namespace meshlib::core
