// Mutex, MutexLock and Notification over the C++ standard library.
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

#include <chrono>
#include <condition_variable>
#include <mutex>

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
