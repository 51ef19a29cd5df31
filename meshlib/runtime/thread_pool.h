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

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"

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
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::AnyInvocable<void()>> queue_;  // guarded by mu_
  bool stop_ = false;                             // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace meshlib::runtime

#endif  // MESHLIB_RUNTIME_THREAD_POOL_H_
