// Mutex, MutexLock, SpinLock and Notification over the C++ standard library.
//
//   core::Mutex mu;
//   int n ABSL_GUARDED_BY(mu) = 0;
//   { core::MutexLock lock(&mu); ++n; }
//
//   core::Notification done;
//   pool.Submit([&] { Work(); done.Notify(); });
//   done.WaitForNotificationWithTimeout(absl::Seconds(5));
//
// Why not absl::Mutex: Debian's Abseil is built with its deadlock detector
// on, which costs a graph update on every lock and on every mutex's
// destruction (measured at several percent of a call on the request path),
// and it synchronises through raw futexes that ThreadSanitizer cannot see
// in an uninstrumented library, so every hand-off through it would be
// reported as a race. std::mutex is pthread-based: cheap, and TSan-visible.
// Clang's thread-safety annotations still apply.
//
// Threading: all methods are thread-safe.
#ifndef MESHLIB_CORE_SYNC_H_
#define MESHLIB_CORE_SYNC_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace meshlib::core {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A lock for critical sections of a few dozen instructions that never
// block, on the request path (a call's state, a registry shard): taking it
// is one atomic exchange and releasing it a plain store, where a
// std::mutex pays an atomic read-modify-write for each. A waiter spins
// briefly, then yields its CPU (the holder may have been preempted).
// BasicLockable: use it with std::lock_guard and std::unique_lock.
class ABSL_LOCKABLE SpinLock {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    if (!held_.exchange(true, std::memory_order_acquire)) return;
    LockSlow();
  }
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    return !held_.load(std::memory_order_relaxed) &&
           !held_.exchange(true, std::memory_order_acquire);
  }
  void unlock() ABSL_UNLOCK_FUNCTION() { held_.store(false, std::memory_order_release); }

 private:
  void LockSlow() {
    for (int spins = 0;; ++spins) {
      while (held_.load(std::memory_order_relaxed)) {
        if (spins++ < 64) {
#if defined(__x86_64__) || defined(__i386__)
          __builtin_ia32_pause();
#endif
        } else {
          std::this_thread::yield();
        }
      }
      if (!held_.exchange(true, std::memory_order_acquire)) return;
    }
  }
  std::atomic<bool> held_{false};
};

// Holds a SpinLock for a scope, as MutexLock holds a Mutex. Unlike
// std::lock_guard it carries the thread-safety annotations, so use it where
// the members the lock protects are marked ABSL_GUARDED_BY; std::unique_lock
// where the lock is released before the scope ends.
class ABSL_SCOPED_LOCKABLE SpinLockHolder {
 public:
  explicit SpinLockHolder(SpinLock* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->lock(); }
  ~SpinLockHolder() ABSL_UNLOCK_FUNCTION() { mu_->unlock(); }
  SpinLockHolder(const SpinLockHolder&) = delete;
  SpinLockHolder& operator=(const SpinLockHolder&) = delete;

 private:
  SpinLock* const mu_;
};

// A one-shot event, as absl::Notification.
class Notification {
 public:
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    notified_ = true;
    cv_.notify_all();
  }
  bool HasBeenNotified() {
    std::lock_guard<std::mutex> lock(mu_);
    return notified_;
  }
  void WaitForNotification() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return notified_; });
  }
  // True if notified within `timeout`.
  bool WaitForNotificationWithTimeout(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return notified_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;
};

}  // namespace meshlib::core

#endif  // MESHLIB_CORE_SYNC_H_
