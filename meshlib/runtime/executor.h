// Executor: where meshlib runs its work and its timers.
//
// Everything in meshlib that happens "later" (a deadline firing, a reconnect
// after backoff, a deferred write) goes through this interface, so that tests
// can replace the real reactor with `testing::FakeExecutor` and drive time by
// hand instead of sleeping.
//
//   Executor& ex = ...;
//   ex.Post([] { DoSomething(); });
//   TimerId t = ex.RunAfter(absl::Milliseconds(250), [] { OnTimeout(); });
//   ex.Cancel(t);  // true if it had not started yet
//
// Threading: every method is thread-safe and may be called from any thread,
// including from inside a task run by this executor.
#ifndef MESHLIB_RUNTIME_EXECUTOR_H_
#define MESHLIB_RUNTIME_EXECUTOR_H_

#include <cstdint>

#include "absl/functional/any_invocable.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace meshlib::runtime {

// Time source. Injected everywhere a policy reads the time.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
};

// The process's wall clock.
Clock& RealClock();

// Identifies a scheduled timer. A default-constructed id names no timer.
struct TimerId {
  absl::Time when = absl::InfinitePast();
  uint64_t seq = 0;
  bool valid() const { return seq != 0; }
};

class Executor : public Clock {
 public:
  using Task = absl::AnyInvocable<void()>;

  ~Executor() override = default;

  // Runs `task` soon, on this executor's thread, after tasks posted earlier.
  virtual void Post(Task task) = 0;

  // Runs `task` on this executor's thread at or soon after `when`.
  virtual TimerId RunAt(absl::Time when, Task task) = 0;
  TimerId RunAfter(absl::Duration delay, Task task) {
    return RunAt(Now() + delay, std::move(task));
  }

  // Cancels a timer. Returns true if the task had not started and now never
  // will; false if it already ran, is running, or the id is unknown.
  virtual bool Cancel(TimerId id) = 0;

  // True when called from the thread that runs this executor's tasks.
  virtual bool InExecutorThread() const = 0;
};

}  // namespace meshlib::runtime

#endif  // MESHLIB_RUNTIME_EXECUTOR_H_
