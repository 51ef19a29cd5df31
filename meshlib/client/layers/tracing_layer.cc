#include "meshlib/client/layers/tracing_layer.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/core/trace_context.h"

namespace meshlib::client {

namespace {

std::optional<core::TraceContext> TraceOf(const Metadata* metadata) {
  if (metadata == nullptr) return std::nullopt;
  return core::TraceContext::FromMetadata(*metadata);
}

}  // namespace

TracingLayer::TracingLayer(SpanExporter exporter, std::string service)
    : exporter_(std::move(exporter)), service_(std::move(service)) {}

std::string TracingLayer::Describe() const {
  return absl::StrCat("spans of service \"", service_, "\"'s calls and attempts to the exporter");
}

void TracingLayer::Export(const Span& span) const {
  try {
    exporter_(span);
  } catch (...) {
    // The application's exporter failed; the call goes on regardless.
  }
}

void TracingLayer::OnAttemptEnd(const AttemptInfo& attempt, const CallResult& result) {
  Span s;
  s.kind = Span::Kind::kAttempt;
  if (std::optional<core::TraceContext> trace = TraceOf(attempt.metadata)) {
    s.trace_id = trace->TraceIdHex();
    s.parent_span_id = trace->SpanIdHex();
    s.span_id = trace->Child().SpanIdHex();
  } else {
    s.span_id = core::TraceContext::NewRoot().SpanIdHex();
  }
  s.service = service_;
  s.method = std::string(attempt.method);
  s.endpoint = std::string(attempt.endpoint);
  s.attempt = attempt.number;
  s.end = attempt.end;
  s.start = attempt.end - attempt.latency;
  s.status = result.status;
  Export(s);
}

void TracingLayer::OnCallEnd(const CallEndInfo& call, const CallResult& result) {
  Span s;
  s.kind = Span::Kind::kCall;
  if (std::optional<core::TraceContext> trace = TraceOf(call.metadata)) {
    s.trace_id = trace->TraceIdHex();
    s.span_id = trace->SpanIdHex();
  } else {
    s.span_id = core::TraceContext::NewRoot().SpanIdHex();
  }
  s.service = service_;
  s.method = std::string(call.method);
  s.endpoint = result.endpoint;
  s.attempt = call.attempts;
  s.end = call.end;
  s.start = call.end - call.latency;
  s.status = result.status;
  Export(s);
}

}  // namespace meshlib::client
