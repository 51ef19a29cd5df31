// The deadline of the call being served on this thread, so that calls a
// handler makes inherit it.
//
// A server installs a ScopedDeadline around every handler it runs. Every
// outgoing call made on that thread while it is installed (client::Channel,
// client::ServiceChannel, and so the mesh's stubs) takes the earlier of its
// own deadline and this one, and sends what remains of it to the next
// server. A chain of services therefore stops working on a call its first
// caller no longer waits for, as gRPC's deadline propagation and Finagle's
// Deadline context do.
//
//   absl::Status Handle(server::ServerCall& call, std::string* out) {
//     // CurrentDeadline() == call.deadline() here: the backend call below
//     // gets at most what is left of it.
//     auto r = backend->CallBlocking("Db/Get", key);
//     ...
//   }
//
// An async handler that calls out later, from a callback on another thread,
// passes the deadline itself (client::CallOptions::deadline =
// call->deadline()) or re-installs it there with a ScopedDeadline.
//
// Scopes nest: an inner scope can only shorten the deadline, never extend
// it. Thread-local; no locks.
#ifndef MESHLIB_CORE_DEADLINE_CONTEXT_H_
#define MESHLIB_CORE_DEADLINE_CONTEXT_H_

#include <algorithm>

#include "absl/time/time.h"

namespace meshlib::core {

namespace internal {
// Defined in deadline_context.cc (a function-local static of an inline
// function would be a "unique" symbol that libmeshlib.so cannot keep
// private).
extern thread_local absl::Time thread_deadline;
inline absl::Time& ThreadDeadline() { return thread_deadline; }
}  // namespace internal

// The deadline installed on this thread; InfiniteFuture when none.
inline absl::Time CurrentDeadline() { return internal::ThreadDeadline(); }

// Installs `deadline` (or keeps the current one, when that is earlier) for
// the scope's lifetime.
class ScopedDeadline {
 public:
  explicit ScopedDeadline(absl::Time deadline) : saved_(internal::ThreadDeadline()) {
    internal::ThreadDeadline() = std::min(saved_, deadline);
  }
  ~ScopedDeadline() { internal::ThreadDeadline() = saved_; }
  ScopedDeadline(const ScopedDeadline&) = delete;
  ScopedDeadline& operator=(const ScopedDeadline&) = delete;

 private:
  const absl::Time saved_;
};

// Clears the installed deadline for the scope's lifetime: for work a
// handler starts that must outlive its call (a background refresh).
class ScopedNoDeadline {
 public:
  ScopedNoDeadline() : saved_(internal::ThreadDeadline()) {
    internal::ThreadDeadline() = absl::InfiniteFuture();
  }
  ~ScopedNoDeadline() { internal::ThreadDeadline() = saved_; }
  ScopedNoDeadline(const ScopedNoDeadline&) = delete;
  ScopedNoDeadline& operator=(const ScopedNoDeadline&) = delete;

 private:
  const absl::Time saved_;
};

}  // namespace meshlib::core

#endif  // MESHLIB_CORE_DEADLINE_CONTEXT_H_
