// EventLoop: one reactor thread over epoll, with timers and posted tasks.
//
//   auto loop = EventLoop::Create("io-0").value();
//   loop->Post([&] { loop->Watch(fd, EPOLLIN, &handler); });
//   ...
//   loop.reset();  // stops the thread; tasks not yet run are destroyed
//
// Threading: Post, RunAt, Cancel and Now are thread-safe. Watch, Unwatch and
// DeferToEndOfIteration must be called on the loop's own thread; that is what
// makes dispatch lock-free, and it lets an fd handler be destroyed right after
// Unwatch even while other events for it sit in the current epoll batch.
#ifndef MESHLIB_RUNTIME_EVENT_LOOP_H_
#define MESHLIB_RUNTIME_EVENT_LOOP_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "meshlib/core/fast_time.h"
#include "meshlib/core/sync.h"
#include "meshlib/runtime/executor.h"

namespace meshlib::runtime {

// Receives readiness events for a watched file descriptor, on the loop thread.
class FdHandler {
 public:
  virtual ~FdHandler() = default;
  // `events` is a mask of EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP.
  virtual void OnFdEvents(uint32_t events) = 0;
};

struct EventLoopOptions {
  // After doing work, poll for this long (yielding the CPU between polls)
  // before sleeping in epoll_wait. The next event of a busy connection then
  // finds the thread awake instead of paying the wake-up of an idle CPU,
  // which costs tens of microseconds on virtual machines. Costs up to this
  // much CPU per burst of activity. Default 0 (off); at most 1ms.
  absl::Duration busy_poll = absl::ZeroDuration();
};

class EventLoop final : public Executor {
 public:
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create(std::string name,
                                                           EventLoopOptions options = {});
  ~EventLoop() override;

  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Executor.
  absl::Time Now() override { return absl::Now(); }
  void Post(Task task) override;
  TimerId RunAt(absl::Time when, Task task) override;
  bool Cancel(TimerId id) override;

  // As RunAt, for timers that are nearly always cancelled long before they
  // are due (a call's deadline): adding and cancelling one costs O(1), on a
  // timing wheel, where RunAt keeps its timers sorted. The task runs at or
  // up to about a millisecond after `when`; relative to RunAt's timers,
  // order is kept only to that precision. A timer further ahead than the
  // wheel's span (about a minute) is kept as RunAt keeps it. Thread-safe;
  // cancelled with Cancel.
  TimerId RunAtCoarse(absl::Time when, Task task);
  bool InExecutorThread() const override;

  // Runs `task` on the loop thread and waits for it to finish (runs it
  // inline when called on the loop thread). Must not be called from a task
  // the loop is waiting on.
  void RunAndWait(Task task);

  // Loop thread only. Level-triggered; `events` as for epoll_ctl.
  absl::Status Watch(int fd, uint32_t events, FdHandler* handler);
  absl::Status Rewatch(int fd, uint32_t events);
  void Unwatch(int fd);

  // Loop thread only: runs `task` after this iteration's events, timers and
  // posted tasks, before the loop sleeps again. Used to coalesce many small
  // writes into one syscall.
  void DeferToEndOfIteration(Task task);

  const std::string& name() const { return name_; }

  // The loop whose thread is calling, or nullptr off any loop thread.
  static EventLoop* Current();

 private:
  EventLoop(std::string name, int epoll_fd, int wake_fd);
  void Run();
  void Wake();
  int ComputeTimeoutMs();
  bool RunExpiredTimers();  // true if any ran
  // The coarse timers' wheel (RunAtCoarse).
  TimerId AddTimerLocked(absl::Time when, Task task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t TickAtOrAfter(absl::Time t) const;  // the first tick boundary >= t
  int64_t TickBefore(absl::Time t) const;     // the last tick boundary <= t
  absl::Time TimeOfTick(int64_t tick) const {
    return core::TimePlus(epoch_, absl::Milliseconds(tick));
  }
  // The first tick after wheel_tick_ with a timer in its near slot, or -1.
  int64_t NextWheelTickLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Links a node into the slot its tick belongs to now.
  void PlaceWheelLocked(uint32_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnlinkWheelLocked(uint32_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Advances the wheel to `now`: brings far timers into the near slots as
  // their block comes within reach, and appends the ids of the timers due
  // to `due`, in tick order (they stay on the wheel until taken).
  void AdvanceWheelLocked(absl::Time now, std::vector<TimerId>* due)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  TimerId WheelIdOf(uint32_t index) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the wheel timer `id` names and returns its task; empty if it
  // ran or was cancelled.
  Task TakeWheelLocked(TimerId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Notes a timer due at `when`; true if the sleeping loop must be woken.
  bool MustWakeForLocked(absl::Time when) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool RunPostedTasks();

  const std::string name_;
  const int epoll_fd_;
  const int wake_fd_;
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_{};
  std::atomic<bool> stop_{false};

  // Loop-thread state.
  absl::flat_hash_map<int, FdHandler*> handlers_;
  std::vector<Task> deferred_;
  int64_t busy_poll_nanos_ = 0;
  int64_t last_work_nanos_ = 0;

  // Held for a few instructions at a time (a push, a wheel slot, a swap) by
  // the loop and by any thread posting or arming a timer: a spin lock costs
  // a fraction of a mutex there.
  core::SpinLock mu_;
  std::vector<Task> posted_ ABSL_GUARDED_BY(mu_);
  absl::btree_map<std::pair<absl::Time, uint64_t>, Task> timers_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_timer_seq_ ABSL_GUARDED_BY(mu_) = 1;

  // The wheel, two levels. A timer's tick is the first millisecond
  // boundary (counted from epoch_) at or after its time; it runs once the
  // wheel has advanced to its tick. Near slot i (of kNearSlots) holds timers
  // whose tick is i modulo kNearSlots, all below (near_block_ + 1) *
  // kBlockTicks, which is within kNearSlots ticks of wheel_tick_. Far slot j
  // (of kFarSlots) holds the later timers of block j modulo kFarSlots (a
  // block is kBlockTicks ticks); a block moves to the near slots when the
  // wheel comes within reach of it. That is at least kNearSlots -
  // kBlockTicks ms before its first tick: more than the loop ever sleeps
  // (kMaxSleep), so no far timer needs a wake-up of its own. Timers live in
  // wheel_nodes_ (reused through wheel_free_), linked per slot; a TimerId
  // names one by its index and the node's generation, with kWheelFlag set.
  static constexpr int64_t kNearSlots = 1024;
  static constexpr int64_t kFarSlots = 1024;
  static constexpr int64_t kBlockTicks = 64;
  static constexpr uint64_t kWheelFlag = uint64_t{1} << 63;
  static constexpr uint32_t kNil = ~uint32_t{0};
  struct WheelTimer {
    Task task;
    int64_t tick = 0;
    uint32_t slot = 0;  // near slots first, then far ones
    uint32_t generation = 0;
    uint32_t prev = kNil;
    uint32_t next = kNil;
    bool used = false;
  };
  const absl::Time epoch_ = absl::Now();
  std::vector<WheelTimer> wheel_nodes_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> wheel_free_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> wheel_head_ ABSL_GUARDED_BY(mu_) =
      std::vector<uint32_t>(kNearSlots + kFarSlots, kNil);
  std::vector<uint32_t> wheel_tail_ ABSL_GUARDED_BY(mu_) =
      std::vector<uint32_t>(kNearSlots + kFarSlots, kNil);
  uint64_t near_bits_[kNearSlots / 64] ABSL_GUARDED_BY(mu_) = {};  // non-empty near slots
  int64_t wheel_tick_ ABSL_GUARDED_BY(mu_) = 0;  // every tick up to here has run
  // Every block up to here is in the near slots.
  int64_t near_block_ ABSL_GUARDED_BY(mu_) = kNearSlots / kBlockTicks - 1;
  size_t wheel_count_ ABSL_GUARDED_BY(mu_) = 0;
  // When the loop will next wake by itself; a timer due earlier must wake it.
  absl::Time sleep_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// Destruction that must not run on a reactor thread.
//
// Destroying an EventLoop joins its thread, and most objects that own
// connections or loops wait on a loop while they go (RunAndWait). Done on a
// reactor thread, either can wait on itself, or on a loop that waits on this
// one. Whatever meshlib shares between calls (a runtime, a control loop, a
// ServiceChannel, a pooled Channel, a mesh's core) is held by a shared_ptr
// made by ShareOffLoop: when its last reference drops on a reactor thread
// (say, in a call's callback) it is destroyed on a background thread
// instead; anywhere else, at once.
//
//   std::shared_ptr<Thing> t = runtime::ShareOffLoop(std::make_unique<Thing>());

// Runs `destroy` now when the calling thread is no EventLoop's; otherwise
// hands it to a background thread, which runs such tasks in order.
void DestroyOffLoop(absl::AnyInvocable<void() &&> destroy);
// Waits until every task handed to DestroyOffLoop so far has run (tests,
// and an orderly exit).
void WaitForDeferredDestruction();

template <typename T>
std::shared_ptr<T> ShareOffLoop(std::unique_ptr<T> owned) {
  return std::shared_ptr<T>(owned.release(), [](T* p) {
    DestroyOffLoop([p] { delete p; });
  });
}

// A fixed set of event loops; connections are spread over them.
class Runtime {
 public:
  // `threads` <= 0 picks the number of CPUs.
  static absl::StatusOr<std::shared_ptr<Runtime>> Create(int threads, std::string name,
                                                         EventLoopOptions options = {});
  size_t size() const { return loops_.size(); }
  EventLoop& loop(size_t i) { return *loops_[i]; }
  // Round-robin choice of a loop for a new connection.
  EventLoop& NextLoop();

 private:
  explicit Runtime(std::vector<std::unique_ptr<EventLoop>> loops)
      : loops_(std::move(loops)) {}
  std::vector<std::unique_ptr<EventLoop>> loops_;
  std::atomic<size_t> next_{0};
};

}  // namespace meshlib::runtime

#endif  // MESHLIB_RUNTIME_EVENT_LOOP_H_
