// ServiceChannel on fake time: the calls' timers (hedge delay, retry
// backoff, injected delay) run on a testing::FakeExecutor and the call path
// reads its clock (ServiceChannelOptions::timers and ::clock), so these
// tests move time by hand and never sleep.
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/client/service_channel.h"
#include "meshlib/testing/fake_executor.h"
#include "meshlib/testing/manual_channel.h"

namespace meshlib::client {
namespace {

using testing::ManualChannel;

class FakeTimeTest : public ::testing::Test {
 protected:
  std::shared_ptr<ServiceChannel> Make(const std::string& policies) {
    ServiceChannelOptions o;
    o.timers = &time_;
    o.clock = &time_;
    o.channel.default_timeout = absl::Seconds(5);
    nlohmann::json j = nlohmann::json::parse(policies);
    for (auto& [k, v] : j.items()) {
      if (k == "retry") o.retry = v;
      if (k == "hedging") o.hedging = v;
      if (k == "fault") o.fault = v;
    }
    o.channel_factory = [this](const std::string& address)
        -> absl::StatusOr<std::shared_ptr<EndpointChannel>> {
      auto ch = std::make_shared<ManualChannel>(address);
      std::lock_guard<std::mutex> lock(mu_);
      channels_[address] = ch.get();
      return ch;
    };
    auto sc = ServiceChannel::Create(
        "svc",
        nlohmann::json::parse(R"({"static": {"endpoints": [{"address": "10.0.0.1:1"},
                                  {"address": "10.0.0.2:1"}, {"address": "10.0.0.3:1"}]}})"),
        o);
    EXPECT_TRUE(sc.ok()) << sc.status();
    EXPECT_TRUE((*sc)->WaitForEndpoints(absl::Seconds(5)));
    return *sc;
  }
  // Calls made so far, by endpoint.
  std::vector<std::pair<ManualChannel*, size_t>> Sent() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::pair<ManualChannel*, size_t>> out;
    for (auto& [addr, ch] : channels_) {
      for (size_t i = 0; i < ch->calls.size(); ++i) out.emplace_back(ch, i);
    }
    return out;
  }

  testing::FakeExecutor time_;
  std::mutex mu_;
  std::map<std::string, ManualChannel*> channels_;  // guarded by mu_
};

struct Outcome {
  bool done = false;
  CallResult result;
  // The callback that records the call's outcome here.
  CallCallback Record() {
    return [this](CallResult r) {
      done = true;
      result = std::move(r);
    };
  }
};

CallOptions Idempotent() {
  CallOptions o;
  o.idempotent = true;
  return o;
}

TEST_F(FakeTimeTest, AHedgeGoesOutExactlyAtItsDelayAndTheLoserIsCancelled) {
  auto sc = Make(R"({"hedging": {"delay": "50ms", "max_attempts": 2}})");
  Outcome out;
  sc->Call("Echo/Say", "x", Idempotent(), out.Record());
  ASSERT_EQ(Sent().size(), 1u);
  const auto first = Sent()[0];
  time_.AdvanceBy(absl::Milliseconds(49));
  EXPECT_EQ(Sent().size(), 1u) << "hedged before its delay";
  time_.AdvanceBy(absl::Milliseconds(1));
  auto sent = Sent();
  ASSERT_EQ(sent.size(), 2u) << "no hedge at its delay";
  const auto hedge = sent[0] == first ? sent[1] : sent[0];
  EXPECT_NE(hedge.first, first.first) << "the hedge went to the same endpoint";
  // The hedge answers first: it wins, the first attempt is cancelled.
  hedge.first->Answer(hedge.second, absl::StatusCode::kOk);
  ASSERT_TRUE(out.done);
  EXPECT_TRUE(out.result.status.ok()) << out.result.status;
  EXPECT_EQ(out.result.endpoint, hedge.first->address());
  EXPECT_TRUE(first.first->calls[first.second]->cancelled) << "the losing attempt goes on";
  EXPECT_EQ(sc->stats().hedges, 1u);
  EXPECT_EQ(time_.PendingTimers(), 0u) << "a timer outlived the call";
}

TEST_F(FakeTimeTest, NoHedgeForACallAnsweredBeforeItsDelay) {
  auto sc = Make(R"({"hedging": {"delay": "50ms", "max_attempts": 2}})");
  Outcome out;
  sc->Call("Echo/Say", "x", Idempotent(), out.Record());
  auto sent = Sent();
  ASSERT_EQ(sent.size(), 1u);
  time_.AdvanceBy(absl::Milliseconds(20));
  sent[0].first->Answer(sent[0].second, absl::StatusCode::kOk);
  ASSERT_TRUE(out.done);
  time_.AdvanceBy(absl::Seconds(1));
  EXPECT_EQ(Sent().size(), 1u);
  EXPECT_EQ(sc->stats().hedges, 0u);
}

TEST_F(FakeTimeTest, ARetryWaitsOutItsBackoff) {
  // Backoff of exactly 100ms: base and cap equal, full jitter within it.
  auto sc = Make(R"({"retry": {"max_attempts": 2, "retry_on": ["UNAVAILABLE"],
                     "backoff": {"base": "100ms", "max": "100ms"}}})");
  Outcome out;
  sc->Call("Echo/Say", "x", Idempotent(), out.Record());
  auto sent = Sent();
  ASSERT_EQ(sent.size(), 1u);
  sent[0].first->Answer(sent[0].second, absl::StatusCode::kUnavailable);
  EXPECT_FALSE(out.done);
  EXPECT_EQ(Sent().size(), 1u) << "retried before any backoff";
  time_.AdvanceBy(absl::Milliseconds(100));
  sent = Sent();
  ASSERT_EQ(sent.size(), 2u) << "not retried after the longest backoff";
  for (auto& [ch, i] : sent) {
    if (ch->calls[i]->done) ch->Answer(i, absl::StatusCode::kOk);
  }
  ASSERT_TRUE(out.done);
  EXPECT_TRUE(out.result.status.ok()) << out.result.status;
  EXPECT_EQ(sc->stats().retries, 1u);
}

TEST_F(FakeTimeTest, AnInjectedDelayHoldsTheCallUntilItPasses) {
  auto sc = Make(R"({"fault": {"delay": {"percent": 100, "duration": "200ms"}}})");
  Outcome out;
  sc->Call("Echo/Say", "x", CallOptions{}, out.Record());
  EXPECT_EQ(Sent().size(), 0u);
  time_.AdvanceBy(absl::Milliseconds(199));
  EXPECT_EQ(Sent().size(), 0u) << "sent before the injected delay passed";
  time_.AdvanceBy(absl::Milliseconds(1));
  auto sent = Sent();
  ASSERT_EQ(sent.size(), 1u);
  sent[0].first->Answer(sent[0].second, absl::StatusCode::kOk);
  ASSERT_TRUE(out.done);
  EXPECT_TRUE(out.result.status.ok());
  EXPECT_EQ(sc->stats().faults_delayed, 1u);
}

TEST_F(FakeTimeTest, ClosingEndsACallWaitingOnItsBackoff) {
  auto sc = Make(R"({"retry": {"max_attempts": 2, "retry_on": ["UNAVAILABLE"],
                     "backoff": {"base": "100ms", "max": "100ms"}}})");
  Outcome out;
  sc->Call("Echo/Say", "x", Idempotent(), out.Record());
  auto sent = Sent();
  ASSERT_EQ(sent.size(), 1u);
  sent[0].first->Answer(sent[0].second, absl::StatusCode::kUnavailable);
  ASSERT_FALSE(out.done);
  sc->Close("test");
  ASSERT_TRUE(out.done);
  EXPECT_EQ(out.result.status.code(), absl::StatusCode::kCancelled) << out.result.status;
  time_.AdvanceBy(absl::Seconds(1));
  EXPECT_EQ(Sent().size(), 1u) << "retried after Close";
}

}  // namespace
}  // namespace meshlib::client
