// FakeExecutor: an Executor whose time stands still until a test moves it.
//
//   testing::FakeExecutor ex;
//   bool fired = false;
//   ex.RunAfter(absl::Seconds(1), [&] { fired = true; });
//   ex.AdvanceBy(absl::Milliseconds(999));  // not yet
//   ex.AdvanceBy(absl::Milliseconds(1));    // fired == true
//
// Tasks run only inside RunPending/AdvanceBy/AdvanceTo, on the calling thread,
// so a test is deterministic. Threading: thread-safe; InExecutorThread() is
// true only while a task runs.
#ifndef MESHLIB_TESTING_FAKE_EXECUTOR_H_
#define MESHLIB_TESTING_FAKE_EXECUTOR_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "meshlib/core/sync.h"
#include "meshlib/runtime/executor.h"

namespace meshlib::testing {

class FakeExecutor final : public runtime::Executor {
 public:
  explicit FakeExecutor(absl::Time start = absl::UnixEpoch() + absl::Hours(1))
      : now_(start) {}

  absl::Time Now() override;
  void Post(Task task) override;
  runtime::TimerId RunAt(absl::Time when, Task task) override;
  bool Cancel(runtime::TimerId id) override;
  bool InExecutorThread() const override { return running_; }

  // Runs posted tasks and due timers until none is left. Returns how many ran.
  int RunPending();
  // Moves time forward, firing timers in order at their due time.
  void AdvanceBy(absl::Duration d) { AdvanceTo(Now() + d); }
  void AdvanceTo(absl::Time t);
  size_t PendingTimers();

 private:
  bool RunOne() ABSL_LOCKS_EXCLUDED(mu_);

  core::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  std::vector<Task> posted_ ABSL_GUARDED_BY(mu_);
  absl::btree_map<std::pair<absl::Time, uint64_t>, Task> timers_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  bool running_ = false;
};

}  // namespace meshlib::testing

#endif  // MESHLIB_TESTING_FAKE_EXECUTOR_H_
