// W3C trace context (https://www.w3.org/TR/trace-context/, "traceparent"
// and "tracestate"), carried in call metadata the way deadlines travel:
// a server installs the context of the call it serves on the handler's
// thread, and calls made from there continue the trace (same trace id, a
// new span id) by themselves.
//
//   traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//                version-trace id (32 hex)-parent span id (16 hex)-flags
//
//   core::TraceContext root = core::TraceContext::NewRoot();
//   opts.metadata.emplace_back("traceparent", root.Traceparent());
//   ...
//   core::ScopedTrace scope(incoming);      // while serving a call
//   mesh_client->Call(...);                 // carries incoming.Child()
#ifndef MESHLIB_CORE_TRACE_CONTEXT_H_
#define MESHLIB_CORE_TRACE_CONTEXT_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace meshlib::core {

inline constexpr char kTraceparentKey[] = "traceparent";
inline constexpr char kTracestateKey[] = "tracestate";

struct TraceContext {
  std::array<uint8_t, 16> trace_id{};
  std::array<uint8_t, 8> span_id{};
  uint8_t flags = 1;       // bit 0: sampled
  std::string tracestate;  // passed along as it came

  // A traceparent as the specification defines it (version 00, or a later
  // version's first four fields), or nullopt: wrong length, upper-case or
  // non-hex digits, an all-zero trace or span id, version ff.
  static std::optional<TraceContext> Parse(absl::string_view traceparent,
                                           absl::string_view tracestate = "");
  // From call metadata (traceparent, tracestate), or nullopt.
  static std::optional<TraceContext> FromMetadata(
      const std::vector<std::pair<std::string, std::string>>& metadata);
  // A new trace: random trace and span ids, sampled.
  static TraceContext NewRoot();
  // The same trace, a new span: what a call made while serving this one
  // carries.
  TraceContext Child() const;

  std::string Traceparent() const;  // "00-<trace id>-<span id>-<flags>"
  std::string TraceIdHex() const;
  std::string SpanIdHex() const;
};

// The trace of the call this thread is serving, or null.
const TraceContext* CurrentTrace();

// Installs `trace` as the thread's current one for the scope's lifetime.
class ScopedTrace {
 public:
  explicit ScopedTrace(const TraceContext* trace);
  ~ScopedTrace();
  ScopedTrace(const ScopedTrace&) = delete;
  ScopedTrace& operator=(const ScopedTrace&) = delete;

 private:
  const TraceContext* const saved_;
};

// Adds traceparent (and tracestate) for a call to `metadata` when the
// thread serves a traced call and the metadata carries none yet: the
// current trace's child. Returns whether it added.
bool PropagateTrace(std::vector<std::pair<std::string, std::string>>* metadata);

}  // namespace meshlib::core

#endif  // MESHLIB_CORE_TRACE_CONTEXT_H_
