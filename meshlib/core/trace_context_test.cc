#include "meshlib/core/trace_context.h"

#include "gtest/gtest.h"

namespace meshlib::core {
namespace {

constexpr char kExample[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceContextTest, ParsesAndFormatsTheSpecExample) {
  std::optional<TraceContext> t = TraceContext::Parse(kExample, "rojo=00f067aa0ba902b7");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->TraceIdHex(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(t->SpanIdHex(), "00f067aa0ba902b7");
  EXPECT_EQ(t->flags, 1);
  EXPECT_EQ(t->tracestate, "rojo=00f067aa0ba902b7");
  EXPECT_EQ(t->Traceparent(), kExample);
}

TEST(TraceContextTest, RefusesWhatTheSpecRefuses) {
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",         // short
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",      // upper case
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",      // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",      // zero span id
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      // version ff
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  // 00 is exact
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
       }) {
    EXPECT_FALSE(TraceContext::Parse(bad).has_value()) << bad;
  }
  // A later version may append fields.
  EXPECT_TRUE(
      TraceContext::Parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")
          .has_value());
}

TEST(TraceContextTest, ChildKeepsTheTraceWithANewSpan) {
  TraceContext root = TraceContext::NewRoot();
  EXPECT_TRUE(TraceContext::Parse(root.Traceparent()).has_value());
  TraceContext child = root.Child();
  EXPECT_EQ(child.trace_id, root.trace_id);
  EXPECT_NE(child.span_id, root.span_id);
  EXPECT_NE(TraceContext::NewRoot().trace_id, root.trace_id);
}

TEST(TraceContextTest, PropagatesOnlyWhileServingATrace) {
  std::vector<std::pair<std::string, std::string>> md;
  EXPECT_FALSE(PropagateTrace(&md));
  EXPECT_TRUE(md.empty());
  TraceContext incoming = *TraceContext::Parse(kExample, "k=v");
  {
    ScopedTrace scope(&incoming);
    ASSERT_EQ(CurrentTrace(), &incoming);
    EXPECT_TRUE(PropagateTrace(&md));
    ASSERT_EQ(md.size(), 2u);
    std::optional<TraceContext> sent = TraceContext::FromMetadata(md);
    ASSERT_TRUE(sent.has_value());
    EXPECT_EQ(sent->trace_id, incoming.trace_id);
    EXPECT_NE(sent->span_id, incoming.span_id);
    EXPECT_EQ(sent->tracestate, "k=v");
    EXPECT_FALSE(PropagateTrace(&md));  // the metadata's own traceparent wins
  }
  EXPECT_EQ(CurrentTrace(), nullptr);
}

}  // namespace
}  // namespace meshlib::core
