// Caller: anything that makes calls by method name: a Channel to one
// endpoint, a ServiceChannel over a discovered service, a mesh Client with
// its whole stack. Typed stubs (meshlib/stub) and interceptors work against
// this interface, so they work with all of them.
//
//   void Greet(client::Caller& caller) {
//     client::CallResult r = caller.CallBlocking("Echo/Say", "hi", {});
//   }
//
// Threading: implementations are thread-safe; callbacks run on reactor
// threads (or on the caller's thread when a call fails before it is sent)
// and must not block.
#ifndef MESHLIB_CLIENT_CALLER_H_
#define MESHLIB_CLIENT_CALLER_H_

#include "absl/strings/string_view.h"
#include "meshlib/client/call_types.h"

namespace meshlib::client {

class Caller {
 public:
  virtual ~Caller() = default;
  // Starts a call; `done` runs exactly once with its result.
  virtual CallHandle Call(absl::string_view method, absl::string_view request,
                          const CallOptions& options, CallCallback done) = 0;
  // Makes a call and waits for its result.
  virtual CallResult CallBlocking(absl::string_view method, absl::string_view request,
                                  const CallOptions& options = {}) = 0;
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_CALLER_H_
