// RcuPtr: a pointer that many threads read without locks while one writer
// replaces it now and then (read-copy-update with two-phase grace periods).
//
//   core::RcuPtr<Picker> picker(std::make_unique<Picker>(...));
//   {
//     core::RcuReadGuard guard(picker);        // a few ns, no lock, no RMW on shared lines
//     const Picker* p = picker.Get(guard);     // valid until the guard ends
//     p->Pick(...);
//   }
//   picker.Update(std::make_unique<Picker>(...));  // control plane: waits for readers of the old one
//
// Readers announce themselves in per-thread-shard counters for the current
// epoch parity. Update() publishes the new object, then flips the epoch
// twice, each time waiting until the counters of the parity it left reach
// zero, so no reader that could still see the old object remains; then it
// deletes it. Readers must hold a guard only briefly (the length of a pick,
// not of a call): Update() spins (yielding) until they leave.
//
// Threading: any number of readers on any threads; Update() from one thread
// at a time (it serialises itself) and never while holding a guard.
#ifndef MESHLIB_CORE_RCU_H_
#define MESHLIB_CORE_RCU_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

namespace meshlib::core {

namespace rcu_internal {
inline constexpr size_t kShards = 32;
// This thread's shard: assigned round-robin at first use, so two threads
// rarely share a counter's cache line. The state lives in rcu.cc, not in
// function-local statics of an inline function: those would be "unique"
// symbols that a shared library (libmeshlib.so) cannot keep private.
inline constexpr size_t kNoShard = ~size_t{0};
extern thread_local size_t thread_shard;  // kNoShard until assigned
size_t AssignThreadShard();
inline size_t ThreadShard() {
  size_t shard = thread_shard;
  return shard != kNoShard ? shard : AssignThreadShard();
}
struct alignas(64) Counter {
  std::atomic<int64_t> n{0};
};
}  // namespace rcu_internal

template <typename T>
class RcuPtr;

// Marks the calling thread as reading `ptr` until destroyed.
class RcuReadGuard {
 public:
  template <typename T>
  explicit RcuReadGuard(const RcuPtr<T>& ptr)
      : counter_(&ptr.counters_[ptr.epoch_.load(std::memory_order_seq_cst) & 1]
                                [rcu_internal::ThreadShard()]
                                    .n) {
    counter_->fetch_add(1, std::memory_order_seq_cst);
  }
  ~RcuReadGuard() { counter_->fetch_sub(1, std::memory_order_release); }
  RcuReadGuard(const RcuReadGuard&) = delete;
  RcuReadGuard& operator=(const RcuReadGuard&) = delete;

 private:
  std::atomic<int64_t>* counter_;
};

template <typename T>
class RcuPtr {
 public:
  explicit RcuPtr(std::unique_ptr<T> initial = nullptr) : ptr_(initial.release()) {}
  ~RcuPtr() { delete ptr_.load(std::memory_order_acquire); }
  RcuPtr(const RcuPtr&) = delete;
  RcuPtr& operator=(const RcuPtr&) = delete;

  // The current object (may be null); valid while `guard` lives.
  T* Get(const RcuReadGuard&) const { return ptr_.load(std::memory_order_seq_cst); }

  // Publishes `next` and deletes the previous object once no reader can see
  // it. Returns after that.
  void Update(std::unique_ptr<T> next) {
    std::lock_guard<std::mutex> lock(update_mu_);
    T* old = ptr_.exchange(next.release(), std::memory_order_seq_cst);
    Synchronize();
    delete old;
  }

 private:
  friend class RcuReadGuard;

  // Two flips: a reader that read the epoch before the first flip may have
  // entered either parity's counter by the time we look, so both are
  // drained in turn.
  void Synchronize() {
    for (int phase = 0; phase < 2; ++phase) {
      uint64_t left = epoch_.fetch_add(1, std::memory_order_seq_cst) & 1;
      for (;;) {
        int64_t sum = 0;
        for (const auto& c : counters_[left]) sum += c.n.load(std::memory_order_seq_cst);
        if (sum == 0) break;
        std::this_thread::yield();
      }
    }
  }

  std::atomic<T*> ptr_;
  mutable std::atomic<uint64_t> epoch_{0};
  mutable rcu_internal::Counter counters_[2][rcu_internal::kShards];
  std::mutex update_mu_;
};

}  // namespace meshlib::core

#endif  // MESHLIB_CORE_RCU_H_
