// TracingLayer: hands each call and each of its attempts, as they end, to
// an application's span exporter, so that meshlib's calls appear in
// whatever tracer the application uses (OpenTelemetry, Zipkin, logs).
//
//   options.span_exporter = [](const client::Span& s) { my_tracer.Record(s); };
//
// A call's span is the one its W3C traceparent names (the span the server
// sees as its parent, core/trace_context.h); each attempt is a child span
// of it with its own id, its endpoint and its number. The exporter runs on
// the thread that ended the call or attempt (often a reactor thread): it
// must be quick and must not block or call meshlib synchronously; queue
// the span and ship it elsewhere. An exception it throws is dropped.
#ifndef MESHLIB_CLIENT_LAYERS_TRACING_LAYER_H_
#define MESHLIB_CLIENT_LAYERS_TRACING_LAYER_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "meshlib/client/layer.h"

namespace meshlib::client {

struct Span {
  enum class Kind { kCall, kAttempt };
  Kind kind = Kind::kCall;
  // 32 lower-case hex digits; empty when the call carried no trace context.
  std::string trace_id;
  // 16 hex digits. A call's: its traceparent's span id (a random one
  // without trace context); an attempt's: new.
  std::string span_id;
  // An attempt's: its call's span id. A call's: empty.
  std::string parent_span_id;
  std::string service;
  std::string method;
  // An attempt's: the endpoint it went to. A call's: the one that answered
  // (empty when none did).
  std::string endpoint;
  // An attempt's: its number in the call (1, 2, ... in the order sent,
  // retries and hedges alike). A call's: the attempts it sent.
  int attempt = 0;
  absl::Time start;
  absl::Time end;
  absl::Status status;
};

using SpanExporter = std::function<void(const Span&)>;

class TracingLayer final : public Layer {
 public:
  TracingLayer(SpanExporter exporter, std::string service);

  absl::string_view role() const override { return "tracing"; }
  std::string Describe() const override;
  uint32_t hooks() const override { return kAttemptEnd | kCallEnd; }
  void OnAttemptEnd(const AttemptInfo& attempt, const CallResult& result) override;
  void OnCallEnd(const CallEndInfo& call, const CallResult& result) override;

 private:
  void Export(const Span& span) const;

  const SpanExporter exporter_;
  const std::string service_;
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYERS_TRACING_LAYER_H_
