#include "meshlib/testing/fake_executor.h"

namespace meshlib::testing {

absl::Time FakeExecutor::Now() {
  core::MutexLock lock(&mu_);
  return now_;
}

void FakeExecutor::Post(Task task) {
  core::MutexLock lock(&mu_);
  posted_.push_back(std::move(task));
}

runtime::TimerId FakeExecutor::RunAt(absl::Time when, Task task) {
  core::MutexLock lock(&mu_);
  runtime::TimerId id{when, next_seq_++};
  timers_.emplace(std::make_pair(when, id.seq), std::move(task));
  return id;
}

bool FakeExecutor::Cancel(runtime::TimerId id) {
  Task victim;
  core::MutexLock lock(&mu_);
  auto it = timers_.find(std::make_pair(id.when, id.seq));
  if (it == timers_.end()) return false;
  victim = std::move(it->second);
  timers_.erase(it);
  return true;
}

bool FakeExecutor::RunOne() {
  Task task;
  {
    core::MutexLock lock(&mu_);
    if (!posted_.empty()) {
      task = std::move(posted_.front());
      posted_.erase(posted_.begin());
    } else if (!timers_.empty() && timers_.begin()->first.first <= now_) {
      task = std::move(timers_.begin()->second);
      timers_.erase(timers_.begin());
    } else {
      return false;
    }
  }
  running_ = true;
  task();
  running_ = false;
  return true;
}

int FakeExecutor::RunPending() {
  int n = 0;
  while (RunOne()) ++n;
  return n;
}

void FakeExecutor::AdvanceTo(absl::Time t) {
  for (;;) {
    RunPending();
    core::MutexLock lock(&mu_);
    if (timers_.empty() || timers_.begin()->first.first > t) {
      if (now_ < t) now_ = t;
      break;
    }
    // Step to the next due timer so tasks observe the time they were due.
    if (now_ < timers_.begin()->first.first) now_ = timers_.begin()->first.first;
  }
  RunPending();
}

size_t FakeExecutor::PendingTimers() {
  core::MutexLock lock(&mu_);
  return timers_.size();
}

}  // namespace meshlib::testing
