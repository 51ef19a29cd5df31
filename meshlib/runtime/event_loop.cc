#include "meshlib/runtime/event_loop.h"

#include <errno.h>
#include <string.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <limits>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace meshlib::runtime {
namespace {
constexpr absl::Duration kMaxSleep = absl::Milliseconds(500);
thread_local EventLoop* current_loop = nullptr;
}  // namespace

EventLoop* EventLoop::Current() { return current_loop; }

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(std::string name,
                                                           EventLoopOptions options) {
  if (options.busy_poll < absl::ZeroDuration() || options.busy_poll > absl::Milliseconds(1)) {
    return absl::InvalidArgumentError("busy_poll: must be between 0 and 1ms");
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    return absl::InternalError(absl::StrCat("epoll_create1: ", strerror(errno)));
  }
  int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    int err = errno;
    close(ep);
    return absl::InternalError(absl::StrCat("eventfd: ", strerror(err)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev) != 0) {
    int err = errno;
    close(ep);
    close(wake);
    return absl::InternalError(absl::StrCat("epoll_ctl(eventfd): ", strerror(err)));
  }
  std::unique_ptr<EventLoop> loop(new EventLoop(std::move(name), ep, wake));
  loop->busy_poll_nanos_ = absl::ToInt64Nanoseconds(options.busy_poll);
  EventLoop* raw = loop.get();
  loop->thread_ = std::thread([raw] { raw->Run(); });
  return loop;
}

EventLoop::EventLoop(std::string name, int epoll_fd, int wake_fd)
    : name_(std::move(name)), epoll_fd_(epoll_fd), wake_fd_(wake_fd) {}

EventLoop::~EventLoop() {
  stop_.store(true, std::memory_order_release);
  Wake();
  if (thread_.joinable()) thread_.join();
  // Destroy leftover tasks while the descriptors are still ours: their
  // destructors may Post to this loop, and a Wake() after close() would
  // write into whatever file now has that number. Tasks posted meanwhile are
  // destroyed too, unrun; bounded, since a task cannot post forever.
  for (int round = 0; round < 16; ++round) {
    std::vector<Task> posted;
    absl::btree_map<std::pair<absl::Time, uint64_t>, Task> timers;
    std::vector<WheelTimer> wheel;
    {
      core::SpinLockHolder lock(&mu_);
      posted.swap(posted_);
      timers.swap(timers_);
      wheel.swap(wheel_nodes_);
      wheel_free_.clear();
      wheel_head_.assign(kNearSlots + kFarSlots, kNil);
      wheel_tail_.assign(kNearSlots + kFarSlots, kNil);
      std::fill(std::begin(near_bits_), std::end(near_bits_), 0);
      wheel_count_ = 0;
    }
    if (posted.empty() && timers.empty() && wheel.empty()) break;
  }
  close(wake_fd_);
  close(epoll_fd_);
}

bool EventLoop::InExecutorThread() const {
  return thread_id_.load(std::memory_order_acquire) == std::this_thread::get_id();
}

void EventLoop::Wake() {
  uint64_t one = 1;
  // EAGAIN means the counter is saturated: the loop is awake anyway.
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
}

void EventLoop::Post(Task task) {
  bool wake;
  {
    core::SpinLockHolder lock(&mu_);
    wake = posted_.empty();
    posted_.push_back(std::move(task));
  }
  if (wake && !InExecutorThread()) Wake();
}

TimerId EventLoop::AddTimerLocked(absl::Time when, Task task) {
  TimerId id;
  id.when = when;
  id.seq = next_timer_seq_++;
  timers_.emplace(std::make_pair(when, id.seq), std::move(task));
  return id;
}

bool EventLoop::MustWakeForLocked(absl::Time when) {
  if (when >= sleep_until_) return false;
  sleep_until_ = when;
  return true;
}

TimerId EventLoop::RunAt(absl::Time when, Task task) {
  TimerId id;
  bool wake;
  {
    core::SpinLockHolder lock(&mu_);
    id = AddTimerLocked(when, std::move(task));
    wake = MustWakeForLocked(when);
  }
  if (wake && !InExecutorThread()) Wake();
  return id;
}

int64_t EventLoop::TickAtOrAfter(absl::Time t) const {
  const int64_t ns = core::NanosBetween(t, epoch_);  // saturates
  if (ns > std::numeric_limits<int64_t>::max() - 1'000'000) {
    return std::numeric_limits<int64_t>::max() / 2;  // beyond any wheel
  }
  return ns <= 0 ? 0 : (ns + 999'999) / 1'000'000;
}

int64_t EventLoop::TickBefore(absl::Time t) const {
  const int64_t ns = core::NanosBetween(t, epoch_);
  return ns <= 0 ? 0 : ns / 1'000'000;
}

TimerId EventLoop::RunAtCoarse(absl::Time when, Task task) {
  TimerId id;
  bool wake;
  {
    core::SpinLockHolder lock(&mu_);
    const int64_t tick = when == absl::InfiniteFuture() ? -1 : TickAtOrAfter(when);
    if (tick <= wheel_tick_ || tick >= (near_block_ + 1 + kFarSlots) * kBlockTicks) {
      id = AddTimerLocked(when, std::move(task));  // due, or beyond the wheel
    } else {
      uint32_t index;
      if (!wheel_free_.empty()) {
        index = wheel_free_.back();
        wheel_free_.pop_back();
      } else {
        index = static_cast<uint32_t>(wheel_nodes_.size());
        wheel_nodes_.emplace_back();
      }
      WheelTimer& node = wheel_nodes_[index];
      node.task = std::move(task);
      node.tick = tick;
      node.generation = (node.generation + 1) & 0x7fffffffu;
      node.used = true;
      PlaceWheelLocked(index);
      ++wheel_count_;
      id = WheelIdOf(index);
      id.when = when;
      when = TimeOfTick(tick);  // when the loop must be awake for it
    }
    wake = MustWakeForLocked(when);
  }
  if (wake && !InExecutorThread()) Wake();
  return id;
}

void EventLoop::PlaceWheelLocked(uint32_t index) {
  WheelTimer& node = wheel_nodes_[index];
  const bool near = node.tick < (near_block_ + 1) * kBlockTicks;
  const size_t slot = near ? static_cast<size_t>(node.tick % kNearSlots)
                           : static_cast<size_t>(kNearSlots + (node.tick / kBlockTicks) % kFarSlots);
  node.slot = static_cast<uint32_t>(slot);
  node.prev = wheel_tail_[slot];
  node.next = kNil;
  if (node.prev != kNil) wheel_nodes_[node.prev].next = index;
  else wheel_head_[slot] = index;
  wheel_tail_[slot] = index;
  if (near) near_bits_[slot / 64] |= uint64_t{1} << (slot % 64);
}

TimerId EventLoop::WheelIdOf(uint32_t index) const {
  TimerId id;
  id.when = TimeOfTick(wheel_nodes_[index].tick);
  id.seq = kWheelFlag | (uint64_t{wheel_nodes_[index].generation} << 32) | index;
  return id;
}

EventLoop::Task EventLoop::TakeWheelLocked(TimerId id) {
  const uint32_t index = static_cast<uint32_t>(id.seq);
  const uint32_t generation = static_cast<uint32_t>(id.seq >> 32) & 0x7fffffffu;
  if (index >= wheel_nodes_.size()) return nullptr;
  WheelTimer& node = wheel_nodes_[index];
  if (!node.used || node.generation != generation) return nullptr;  // ran, or cancelled
  Task task = std::move(node.task);
  node.task = nullptr;
  UnlinkWheelLocked(index);
  return task;
}

void EventLoop::UnlinkWheelLocked(uint32_t index) {
  WheelTimer& node = wheel_nodes_[index];
  const size_t slot = node.slot;
  if (node.prev != kNil) wheel_nodes_[node.prev].next = node.next;
  else wheel_head_[slot] = node.next;
  if (node.next != kNil) wheel_nodes_[node.next].prev = node.prev;
  else wheel_tail_[slot] = node.prev;
  if (slot < static_cast<size_t>(kNearSlots) && wheel_head_[slot] == kNil) {
    near_bits_[slot / 64] &= ~(uint64_t{1} << (slot % 64));
  }
  node.used = false;
  node.prev = node.next = kNil;
  wheel_free_.push_back(index);
  --wheel_count_;
}

int64_t EventLoop::NextWheelTickLocked() const {
  if (wheel_count_ == 0) return -1;
  for (int64_t t = wheel_tick_ + 1; t <= wheel_tick_ + kNearSlots;) {
    const size_t slot = static_cast<size_t>(t % kNearSlots);
    const uint64_t bits = near_bits_[slot / 64] >> (slot % 64);
    if (bits != 0) return t + __builtin_ctzll(bits);
    t += 64 - static_cast<int64_t>(slot % 64);  // the next word's first slot
  }
  return -1;  // only far timers, which kMaxSleep's wake-ups bring near
}

void EventLoop::AdvanceWheelLocked(absl::Time now, std::vector<TimerId>* due) {
  const int64_t now_tick = TickBefore(now);
  if (now_tick <= wheel_tick_) return;
  // Far blocks now within reach move to the near slots. Every far timer's
  // block lies within kFarSlots blocks after near_block_: one pass over the
  // far slots at most.
  const int64_t new_block = (now_tick + kNearSlots) / kBlockTicks - 1;
  const int64_t last = std::min(new_block, near_block_ + kFarSlots);
  const int64_t first = near_block_ + 1;
  near_block_ = new_block;
  for (int64_t b = first; b <= last && wheel_count_ > 0; ++b) {
    const size_t slot = static_cast<size_t>(kNearSlots + b % kFarSlots);
    uint32_t index = wheel_head_[slot];
    wheel_head_[slot] = wheel_tail_[slot] = kNil;
    while (index != kNil) {
      const uint32_t next = wheel_nodes_[index].next;
      PlaceWheelLocked(index);
      index = next;
    }
  }
  // The near slots of the ticks passed, in tick order. After a long stall
  // a slot can also hold a later tick's timers: those stay.
  const int64_t end = std::min(now_tick, wheel_tick_ + kNearSlots);
  for (int64_t t = wheel_tick_ + 1; t <= end && wheel_count_ > 0;) {
    const size_t slot = static_cast<size_t>(t % kNearSlots);
    const uint64_t bits = near_bits_[slot / 64] >> (slot % 64);
    if (bits == 0) {
      t += 64 - static_cast<int64_t>(slot % 64);
      continue;
    }
    if (const int64_t skip = __builtin_ctzll(bits); skip > 0) {
      t += skip;
      continue;
    }
    for (uint32_t index = wheel_head_[slot]; index != kNil;
         index = wheel_nodes_[index].next) {
      const WheelTimer& node = wheel_nodes_[index];
      if (node.tick <= now_tick) due->push_back(WheelIdOf(index));
    }
    ++t;
  }
  wheel_tick_ = now_tick;
}

bool EventLoop::Cancel(TimerId id) {
  if (!id.valid()) return false;
  Task victim;  // destroyed outside the lock
  core::SpinLockHolder lock(&mu_);
  if ((id.seq & kWheelFlag) != 0) {
    victim = TakeWheelLocked(id);
    return static_cast<bool>(victim);
  }
  auto it = timers_.find(std::make_pair(id.when, id.seq));
  if (it == timers_.end()) return false;
  victim = std::move(it->second);
  timers_.erase(it);
  return true;
}

void EventLoop::RunAndWait(Task task) {
  if (InExecutorThread()) {
    task();
    return;
  }
  core::Notification done;
  Post([&] {
    task();
    done.Notify();
  });
  done.WaitForNotification();
}

absl::Status EventLoop::Watch(int fd, uint32_t events, FdHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    return absl::InternalError(
        absl::StrCat("epoll_ctl(ADD, fd ", fd, "): ", strerror(errno)));
  }
  handlers_[fd] = handler;
  return absl::OkStatus();
}

absl::Status EventLoop::Rewatch(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) != 0) {
    return absl::InternalError(
        absl::StrCat("epoll_ctl(MOD, fd ", fd, "): ", strerror(errno)));
  }
  return absl::OkStatus();
}

void EventLoop::Unwatch(int fd) {
  if (handlers_.erase(fd) == 0) return;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

void EventLoop::DeferToEndOfIteration(Task task) {
  deferred_.push_back(std::move(task));
}

int EventLoop::ComputeTimeoutMs() {
  core::SpinLockHolder lock(&mu_);
  if (!posted_.empty() || !deferred_.empty()) {
    sleep_until_ = absl::InfinitePast();
    return 0;
  }
  absl::Time now = absl::Now();
  if (wheel_count_ == 0) {
    // An empty wheel moves to now for free, keeping its span ahead of the
    // clock (nothing can be due in the ticks it skips).
    const int64_t now_tick = TickBefore(now);
    if (now_tick > wheel_tick_) {
      wheel_tick_ = now_tick;
      near_block_ = (now_tick + kNearSlots) / kBlockTicks - 1;
    }
  }
  // Never sleep longer than kMaxSleep. Far-off timers (call deadlines are
  // seconds away) then rarely need a cross-thread wake-up when they are
  // added: only a timer due before the loop would wake anyway costs one.
  absl::Time next = now + kMaxSleep;
  if (!timers_.empty()) next = std::min(next, timers_.begin()->first.first);
  if (int64_t tick = NextWheelTickLocked(); tick >= 0) next = std::min(next, TimeOfTick(tick));
  sleep_until_ = next;
  absl::Duration wait = next - now;
  if (wait <= absl::ZeroDuration()) return 0;
  // Round up so that a timer never fires early.
  return static_cast<int>(
      absl::ToInt64Milliseconds(absl::Ceil(wait, absl::Milliseconds(1))));
}

bool EventLoop::RunExpiredTimers() {
  absl::Time now = absl::Now();
  bool ran = false;
  // Coarse timers due: taken one at a time, so that one of them may still
  // cancel another due in the same millisecond, as with RunAt's timers.
  std::vector<TimerId> due;
  {
    core::SpinLockHolder lock(&mu_);
    AdvanceWheelLocked(now, &due);
  }
  for (const TimerId& id : due) {
    Task task;
    {
      core::SpinLockHolder lock(&mu_);
      task = TakeWheelLocked(id);
    }
    if (!task) continue;  // cancelled meanwhile
    task();
    ran = true;
  }
  for (;;) {
    Task task;
    {
      core::SpinLockHolder lock(&mu_);
      if (timers_.empty()) return ran;
      auto it = timers_.begin();
      if (it->first.first > now) return ran;
      task = std::move(it->second);
      timers_.erase(it);
    }
    task();
    ran = true;
  }
}

bool EventLoop::RunPostedTasks() {
  std::vector<Task> batch;
  {
    core::SpinLockHolder lock(&mu_);
    batch.swap(posted_);
  }
  for (Task& t : batch) t();
  return !batch.empty();
}

void EventLoop::Run() {
  thread_id_.store(std::this_thread::get_id(), std::memory_order_release);
  current_loop = this;
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  while (!stop_.load(std::memory_order_acquire)) {
    int timeout = ComputeTimeoutMs();
    // Busy polling: right after work, poll instead of sleeping for a short,
    // bounded while. The next event of a busy connection then finds this
    // thread running and pays no wake-up of an idle CPU. Yield between polls
    // so a thread sharing this CPU is not starved.
    if (timeout != 0 && busy_poll_nanos_ > 0 &&
        absl::GetCurrentTimeNanos() - last_work_nanos_ < busy_poll_nanos_) {
      sched_yield();
      timeout = 0;
    }
    int n = epoll_wait(epoll_fd_, events, kMaxEvents, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "meshlib: event loop %s: epoll_wait: %s\n",
                   name_.c_str(), strerror(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        uint64_t drained;
        [[maybe_unused]] ssize_t r = read(wake_fd_, &drained, sizeof(drained));
        continue;
      }
      auto it = handlers_.find(fd);
      if (it == handlers_.end()) continue;  // unwatched earlier in this batch
      it->second->OnFdEvents(events[i].events);
    }
    bool worked = n > 0;
    // One critical section in the common case (no timer due): note that we
    // are awake, and take the posted tasks.
    bool timers_due;
    std::vector<Task> posted;
    {
      core::SpinLockHolder lock(&mu_);
      sleep_until_ = absl::InfinitePast();  // awake: nobody needs to wake us
      if (!timers_.empty() || wheel_count_ > 0) {
        const absl::Time now = absl::Now();
        timers_due = (!timers_.empty() && timers_.begin()->first.first <= now) ||
                     (wheel_count_ > 0 && TickBefore(now) > wheel_tick_);
      } else {
        timers_due = false;
      }
      if (!timers_due) posted.swap(posted_);
    }
    if (timers_due) {
      worked |= RunExpiredTimers();
      worked |= RunPostedTasks();  // timers run before tasks posted with them
    } else {
      for (Task& t : posted) t();
      worked |= !posted.empty();
    }
    if (worked && busy_poll_nanos_ > 0) last_work_nanos_ = absl::GetCurrentTimeNanos();
    while (!deferred_.empty()) {
      std::vector<Task> batch;
      batch.swap(deferred_);
      for (Task& t : batch) t();
    }
  }
  // Flush what is deferred so that nothing is silently dropped on stop.
  while (!deferred_.empty()) {
    std::vector<Task> batch;
    batch.swap(deferred_);
    for (Task& t : batch) t();
  }
}

absl::StatusOr<std::shared_ptr<Runtime>> Runtime::Create(int threads, std::string name,
                                                         EventLoopOptions options) {
  if (threads <= 0) {
    threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  std::vector<std::unique_ptr<EventLoop>> loops;
  for (int i = 0; i < threads; ++i) {
    auto loop = EventLoop::Create(absl::StrCat(name, "-", i), options);
    if (!loop.ok()) return loop.status();
    loops.push_back(*std::move(loop));
  }
  return ShareOffLoop(std::unique_ptr<Runtime>(new Runtime(std::move(loops))));
}

namespace {

// The background thread of DestroyOffLoop. Created at first use and never
// destroyed (a static destructor could run while it works); what it holds
// at exit stays reachable, so leak checkers do not report it.
class OffLoopDestroyer {
 public:
  static OffLoopDestroyer& Get() {
    static OffLoopDestroyer* const instance = new OffLoopDestroyer();
    return *instance;
  }
  void Add(absl::AnyInvocable<void() &&> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(task));
      ++added_;
    }
    cv_.notify_all();
  }
  void WaitForAll() {
    std::unique_lock<std::mutex> lock(mu_);
    uint64_t target = added_;
    cv_.wait(lock, [&] { return done_ >= target; });
  }

 private:
  OffLoopDestroyer() {
    std::thread([this] { Run(); }).detach();
  }
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return !queue_.empty(); });
      auto task = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      std::move(task)();
      lock.lock();
      ++done_;
      cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::AnyInvocable<void() &&>> queue_;  // guarded by mu_
  uint64_t added_ = 0, done_ = 0;                     // guarded by mu_
};

}  // namespace

void DestroyOffLoop(absl::AnyInvocable<void() &&> destroy) {
  if (EventLoop::Current() == nullptr) {
    std::move(destroy)();
    return;
  }
  OffLoopDestroyer::Get().Add(std::move(destroy));
}

void WaitForDeferredDestruction() {
  if (EventLoop::Current() != nullptr) return;  // would wait on itself
  OffLoopDestroyer::Get().WaitForAll();
}

EventLoop& Runtime::NextLoop() {
  return *loops_[next_.fetch_add(1, std::memory_order_relaxed) % loops_.size()];
}

}  // namespace meshlib::runtime
