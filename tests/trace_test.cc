// Trace context across a chain of real servers: a call into "front"
// carrying a traceparent reaches "back" (called by front's handler through
// a mesh) with the same trace id and a new span id, for synchronous and
// asynchronous handlers and for blocking and callback calls; a call with no
// trace starts none.
#include <memory>
#include <string>

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

}  // namespace
}  // namespace meshlib
