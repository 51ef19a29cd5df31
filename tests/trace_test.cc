// Trace context across a chain of real servers: a call into "front"
// carrying a traceparent reaches "back" (called by front's handler through
// a mesh) with the same trace id and a new span id, for synchronous and
// asynchronous handlers and for blocking and callback calls; a call with no
// trace starts none.
#include <algorithm>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/config/config.h"
#include "meshlib/core/sync.h"
#include "meshlib/core/trace_context.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/server/server.h"

namespace meshlib {
namespace {

std::unique_ptr<mesh::Mesh> MeshTo(const std::string& service, const std::string& address) {
  auto cfg = config::ParseMeshConfig(absl::StrCat(
      R"({"services": {")", service, R"(": {"discovery": {"static": {"endpoints": [")", address,
      R"("]}}, "timeout": "5s"}}})"));
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  auto m = mesh::Mesh::Create(*std::move(cfg));
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

class TraceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // back answers with the traceparent it received ("" when none).
    ASSERT_TRUE(back_.RegisterAsync("Back/Say", [](std::shared_ptr<server::ServerCall> call) {
                       call->Finish(absl::OkStatus(),
                                    std::string(call->MetadataValue(core::kTraceparentKey)));
                     }).ok());
    auto port = back_.Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok()) << port.status();
    back_mesh_ = MeshTo("back", back_.address());
    back_client_ = back_mesh_->Client("back").value();

    // front's sync handler calls back blocking; its async handler calls
    // back with a callback.
    auto backc = back_client_;
    ASSERT_TRUE(front_.RegisterSync("Front/Blocking",
                                    [backc](server::ServerCall&, std::string* out) {
                                      client::CallResult r =
                                          backc->CallBlocking("Back/Say", "x", {});
                                      *out = r.payload;
                                      return r.status;
                                    })
                    .ok());
    ASSERT_TRUE(front_.RegisterAsync("Front/Async", [backc](std::shared_ptr<server::ServerCall> call) {
                       backc->Call("Back/Say", "x", {}, [call](client::CallResult r) {
                         call->Finish(r.status, r.payload);
                       });
                     }).ok());
    port = front_.Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok()) << port.status();
    front_mesh_ = MeshTo("front", front_.address());
    front_client_ = front_mesh_->Client("front").value();
  }

  server::Server back_, front_;
  std::unique_ptr<mesh::Mesh> back_mesh_, front_mesh_;
  std::shared_ptr<mesh::Client> back_client_, front_client_;
};

TEST_F(TraceTest, ACallWhileServingContinuesTheTrace) {
  const core::TraceContext root = core::TraceContext::NewRoot();
  for (const char* method : {"Front/Blocking", "Front/Async"}) {
    client::CallOptions o;
    o.metadata.emplace_back(core::kTraceparentKey, root.Traceparent());
    client::CallResult r = front_client_->CallBlocking(method, "hi", o);
    ASSERT_TRUE(r.status.ok()) << method << ": " << r.status;
    std::optional<core::TraceContext> seen = core::TraceContext::Parse(r.payload);
    ASSERT_TRUE(seen.has_value()) << method << ": back saw \"" << r.payload << "\"";
    EXPECT_EQ(seen->trace_id, root.trace_id) << method;
    EXPECT_NE(seen->span_id, root.span_id) << method;  // a new span for the hop
  }
}

TEST_F(TraceTest, NoTraceInNoTraceOut) {
  for (const char* method : {"Front/Blocking", "Front/Async"}) {
    client::CallResult r = front_client_->CallBlocking(method, "hi", {});
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.payload, "") << method;
  }
  // A malformed traceparent is not continued either.
  client::CallOptions o;
  o.metadata.emplace_back(core::kTraceparentKey, "00-zz-yy-01");
  client::CallResult r = front_client_->CallBlocking("Front/Blocking", "hi", o);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.payload, "");
}

// Spans, exported as calls and attempts end: a retried call against one
// failing and one answering server gives one call span and one span per
// attempt, in one trace, attempts numbered in order and children of the
// call's span, which is the span the server received as its parent.
class SpanExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(failing_.RegisterSync("Echo/Say", [](server::ServerCall&, std::string*) {
                         return absl::UnavailableError("always failing");
                       }).ok());
    ASSERT_TRUE(answering_.RegisterSync("Echo/Say", [](server::ServerCall& call, std::string* out) {
                           *out = std::string(call.MetadataValue(core::kTraceparentKey));
                           return absl::OkStatus();
                         }).ok());
    ASSERT_TRUE(failing_.Start("127.0.0.1:0").ok());
    ASSERT_TRUE(answering_.Start("127.0.0.1:0").ok());
    auto cfg = config::ParseMeshConfig(absl::StrCat(
        R"({"services": {"echo": {"discovery": {"static": {"endpoints": [")", failing_.address(),
        R"(", ")", answering_.address(), R"("]}}, "timeout": "5s",
            "load_balancer": [{"round_robin": {}}],
            "retry": {"max_attempts": 3, "retry_on": ["UNAVAILABLE"]}}}})"));
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    mesh::MeshOptions options;
    options.span_exporter = [this](const client::Span& s) {
      core::MutexLock lock(&mu_);
      spans_.push_back(s);
      if (s.kind == client::Span::Kind::kCall) ++calls_ended_;
    };
    auto m = mesh::Mesh::Create(*std::move(cfg), options);
    ASSERT_TRUE(m.ok()) << m.status();
    mesh_ = *std::move(m);
    client_ = mesh_->Client("echo").value();
    ASSERT_TRUE(client_->WaitForEndpoints(absl::Seconds(5)));
  }

  static client::CallOptions Idempotent() {
    client::CallOptions o;
    o.idempotent = true;
    return o;
  }

  // The spans of the call that `seen_by_server` (its traceparent) names.
  void CheckOneCall(const std::string& seen_by_server, const std::vector<client::Span>& spans) {
    std::optional<core::TraceContext> server_parent = core::TraceContext::Parse(seen_by_server);
    ASSERT_TRUE(server_parent.has_value()) << "the server saw \"" << seen_by_server << "\"";
    const client::Span* call = nullptr;
    std::vector<const client::Span*> attempts;
    for (const client::Span& s : spans) {
      if (s.trace_id != server_parent->TraceIdHex()) continue;
      if (s.kind == client::Span::Kind::kCall) {
        call = &s;
      } else {
        attempts.push_back(&s);
      }
    }
    ASSERT_NE(call, nullptr);
    EXPECT_EQ(call->span_id, server_parent->SpanIdHex()) << "the server's parent is the call";
    EXPECT_EQ(call->service, "echo");
    EXPECT_EQ(call->method, "Echo/Say");
    EXPECT_TRUE(call->status.ok()) << call->status;
    EXPECT_EQ(call->endpoint, answering_.address());
    EXPECT_LE(call->start, call->end);
    ASSERT_EQ(static_cast<int>(attempts.size()), call->attempt);
    std::sort(attempts.begin(), attempts.end(),
              [](const client::Span* a, const client::Span* b) { return a->attempt < b->attempt; });
    for (size_t i = 0; i < attempts.size(); ++i) {
      const client::Span& a = *attempts[i];
      EXPECT_EQ(a.attempt, static_cast<int>(i) + 1);
      EXPECT_EQ(a.parent_span_id, call->span_id);
      EXPECT_NE(a.span_id, call->span_id);
      EXPECT_EQ(a.span_id.size(), 16u);
      EXPECT_GE(a.start, call->start);
      EXPECT_LE(a.end, call->end);
      const bool last = i + 1 == attempts.size();
      // Every attempt but the last went to the failing server.
      EXPECT_EQ(a.endpoint, last ? answering_.address() : failing_.address()) << i;
      EXPECT_EQ(a.status.code(), last ? absl::StatusCode::kOk : absl::StatusCode::kUnavailable)
          << a.status;
    }
  }

  core::Mutex mu_;
  std::vector<client::Span> spans_;
  int calls_ended_ = 0;
  server::Server failing_, answering_;
  std::unique_ptr<mesh::Mesh> mesh_;
  std::shared_ptr<mesh::Client> client_;
};

TEST_F(SpanExportTest, BlockingCallsGiveACallSpanAndASpanPerAttempt) {
  bool retried = false;
  for (int i = 0; i < 6; ++i) {
    client::CallResult r = client_->CallBlocking("Echo/Say", "hi", Idempotent());
    ASSERT_TRUE(r.status.ok()) << r.status;
    std::vector<client::Span> spans;
    {
      core::MutexLock lock(&mu_);
      spans = spans_;
    }
    CheckOneCall(r.payload, spans);
    for (const client::Span& s : spans) retried |= s.attempt > 1;
  }
  EXPECT_TRUE(retried) << "round robin over a failing server retried some call";
}

TEST_F(SpanExportTest, CallbackCallsToo) {
  std::vector<std::string> seen(6);
  core::Notification all;
  std::atomic<int> left{6};
  for (int i = 0; i < 6; ++i) {
    client_->Call("Echo/Say", "hi", Idempotent(), [&, i](client::CallResult r) {
      EXPECT_TRUE(r.status.ok()) << r.status;
      seen[i] = r.payload;
      if (--left == 0) all.Notify();
    });
  }
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // The call span is exported just before the callback runs.
  std::vector<client::Span> spans;
  {
    core::MutexLock lock(&mu_);
    spans = spans_;
    EXPECT_EQ(calls_ended_, 6);
  }
  for (const std::string& s : seen) CheckOneCall(s, spans);
}

TEST_F(SpanExportTest, ACallInATraceKeepsItsTraceId) {
  const core::TraceContext root = core::TraceContext::NewRoot();
  client::CallOptions o = Idempotent();
  o.metadata.emplace_back(core::kTraceparentKey, root.Traceparent());
  client::CallResult r = client_->CallBlocking("Echo/Say", "hi", o);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.payload, root.Traceparent());
  core::MutexLock lock(&mu_);
  ASSERT_FALSE(spans_.empty());
  for (const client::Span& s : spans_) EXPECT_EQ(s.trace_id, root.TraceIdHex());
}

TEST_F(SpanExportTest, AThrowingExporterDoesNotHurtTheCall) {
  mesh::MeshOptions options;
  options.span_exporter = [](const client::Span&) { throw std::runtime_error("exporter down"); };
  auto cfg = config::ParseMeshConfig(absl::StrCat(
      R"({"services": {"echo": {"discovery": {"static": {"endpoints": [")", answering_.address(),
      R"("]}}}}})"));
  ASSERT_TRUE(cfg.ok());
  auto m = mesh::Mesh::Create(*std::move(cfg), options);
  ASSERT_TRUE(m.ok());
  auto c = (*m)->Client("echo").value();
  client::CallResult r = c->CallBlocking("Echo/Say", "hi", {});
  EXPECT_TRUE(r.status.ok()) << r.status;
}

}  // namespace
}  // namespace meshlib
