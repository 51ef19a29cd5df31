// A Mesh on fake time (MeshOptions::timers and ::clock): the whole stack's
// timers run on a testing::FakeExecutor, so a hedge or a retry's backoff is
// checked to the millisecond without sleeping.
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/testing/fake_executor.h"
#include "meshlib/testing/manual_channel.h"

namespace meshlib::mesh {
namespace {

using testing::ManualChannel;

class MeshFakeTimeTest : public ::testing::Test {
 protected:
  std::unique_ptr<Mesh> Make(const std::string& policies) {
    auto cfg = config::ParseMeshConfig(absl::StrCat(
        R"({"services": {"echo": {"discovery": {"static": {"endpoints": [)",
        R"({"address": "10.0.0.1:1"}, {"address": "10.0.0.2:1"}]}}, "timeout": "2s", )",
        policies, "}}}"));
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    MeshOptions o;
    o.timers = &time_;
    o.clock = &time_;
    o.channel_factory = [this](const std::string& address)
        -> absl::StatusOr<std::shared_ptr<client::EndpointChannel>> {
      auto& ch = channels_[address];
      if (ch == nullptr) ch = std::make_shared<ManualChannel>(address);
      return ch;
    };
    return Mesh::Create(*std::move(cfg), o).value();
  }
  size_t Sent() {
    size_t n = 0;
    for (auto& [a, ch] : channels_) n += ch->calls.size();
    return n;
  }

  testing::FakeExecutor time_;
  std::map<std::string, std::shared_ptr<ManualChannel>> channels_;
};

TEST_F(MeshFakeTimeTest, HedgesAtItsDelayAndRetriesAfterItsBackoff) {
  auto mesh = Make(R"("hedging": {"delay": "30ms", "max_attempts": 2},
                     "retry": {"max_attempts": 3, "retry_on": ["UNAVAILABLE"],
                               "backoff": {"base": "80ms", "max": "80ms"}})");
  auto echo = mesh->Client("echo").value();
  ASSERT_TRUE(echo->WaitForEndpoints(absl::Seconds(5)));
  client::CallOptions o;
  o.idempotent = true;
  bool done = false;
  client::CallResult got;
  echo->Call("Echo/Say", "x", o, [&](client::CallResult r) {
    done = true;
    got = std::move(r);
  });
  ASSERT_EQ(Sent(), 1u);
  time_.AdvanceBy(absl::Milliseconds(29));
  EXPECT_EQ(Sent(), 1u);
  time_.AdvanceBy(absl::Milliseconds(1));
  ASSERT_EQ(Sent(), 2u) << "no hedge at 30ms";
  // Both attempts fail: the call waits out its backoff, then tries again.
  for (auto& [a, ch] : channels_) ch->Answer(0, absl::StatusCode::kUnavailable);
  EXPECT_FALSE(done);
  time_.AdvanceBy(absl::Milliseconds(80));
  ASSERT_EQ(Sent(), 3u) << "no retry after the backoff";
  for (auto& [a, ch] : channels_) {
    if (ch->calls.size() == 2) ch->Answer(1, absl::StatusCode::kOk);
  }
  ASSERT_TRUE(done);
  EXPECT_TRUE(got.status.ok()) << got.status;
  ClientStats stats = echo->stats();
  EXPECT_EQ(stats.hedges, 1u);
  EXPECT_EQ(stats.retries, 1u);
}

}  // namespace
}  // namespace meshlib::mesh
