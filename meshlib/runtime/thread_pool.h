// ThreadPool: a fixed set of worker threads for work that may block (a
// server's synchronous handlers), so that reactor threads never do.
//
//   ThreadPool pool(4, "handlers");
//   pool.Submit([] { SlowThing(); });
//
// Threading: Submit is thread-safe. The destructor runs what was submitted,
// then joins the workers.
#ifndef MESHLIB_RUNTIME_THREAD_POOL_H_
#define MESHLIB_RUNTIME_THREAD_POOL_H_

#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace meshlib::runtime {

class ThreadPool {
 public:
  ThreadPool(int threads, std::string name);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Submit(absl::AnyInvocable<void()> task);

 private:
  void Work();

  const std::string name_;
  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace meshlib::runtime

#endif  // MESHLIB_RUNTIME_THREAD_POOL_H_
