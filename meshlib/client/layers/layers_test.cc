// The client's layers one by one: what each decides, counts and prints.
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "meshlib/client/layers/balancer_layer.h"
#include "meshlib/client/layers/breaker_layer.h"
#include "meshlib/client/layers/deadline_layer.h"
#include "meshlib/client/layers/endpoint_health_layer.h"
#include "meshlib/client/layers/fault_layer.h"
#include "meshlib/client/layers/hedging_layer.h"
#include "meshlib/client/layers/retry_layer.h"
#include "meshlib/transport/frame.h"
#include "meshlib/testing/fake_executor.h"

namespace meshlib::client {
namespace {

CallResult Failed(absl::StatusCode code, bool not_processed = false) {
  CallResult r;
  r.status = absl::Status(code, "failed");
  r.not_processed = not_processed;
  return r;
}

struct RetryFixture {
  explicit RetryFixture(resilience::RetryPolicy p, double ratio = 1.0, int floor = 0) {
    p.budget.ratio = ratio;
    p.budget.min_per_second = floor;
    budget = std::make_shared<resilience::RetryBudget>(p.budget, &clock);
    breaker = std::make_shared<resilience::CircuitBreaker>(resilience::CircuitBreakerOptions{},
                                                           "svc");
    layer = std::make_unique<RetryLayer>(p, budget, breaker);
  }
  void Deposit(int n) {
    CallInfo c;
    c.start = clock.Now();
    for (int i = 0; i < n; ++i) ASSERT_TRUE(layer->Admit(c).ok());
  }
  testing::FakeExecutor clock;
  std::shared_ptr<resilience::RetryBudget> budget;
  std::shared_ptr<resilience::CircuitBreaker> breaker;
  std::unique_ptr<RetryLayer> layer;
};

resilience::RetryPolicy ThreeAttempts() {
  resilience::RetryPolicy p;
  p.max_attempts = 3;
  p.retry_on = {absl::StatusCode::kUnavailable};
  return p;
}

TEST(RetryLayerTest, UnsentCallsGoOnceMoreElsewhereWithoutAPolicy) {
  RetryFixture f(resilience::RetryPolicy{});
  f.Deposit(10);
  bool used = false;
  absl::Duration delay;
  CallResult unsent = Failed(absl::StatusCode::kUnavailable, /*not_processed=*/true);
  EXPECT_EQ(f.layer->Decide(unsent, false, 1, /*several=*/true, &used, &delay),
            RetryLayer::Next::kTransparent);
  EXPECT_TRUE(used);
  EXPECT_EQ(delay, absl::ZeroDuration());
  // Once only, and never with a single endpoint.
  EXPECT_EQ(f.layer->Decide(unsent, false, 1, true, &used, &delay), RetryLayer::Next::kDone);
  bool fresh = false;
  EXPECT_EQ(f.layer->Decide(unsent, false, 1, false, &fresh, &delay), RetryLayer::Next::kDone);
  // A failure that reached a handler is not retried without a policy.
  fresh = false;
  EXPECT_EQ(f.layer->Decide(Failed(absl::StatusCode::kUnavailable), true, 1, true, &fresh, &delay),
            RetryLayer::Next::kDone);
  EXPECT_EQ(f.layer->transparent_retries(), 1u);
}

TEST(RetryLayerTest, RetriesIdempotentCallsOnListedCodesWhileAttemptsRemain) {
  RetryFixture f(ThreeAttempts());
  f.Deposit(10);
  bool used = false;
  absl::Duration delay;
  CallResult unavailable = Failed(absl::StatusCode::kUnavailable);
  EXPECT_EQ(f.layer->Decide(unavailable, true, 1, true, &used, &delay), RetryLayer::Next::kRetry);
  EXPECT_GE(delay, absl::ZeroDuration());
  EXPECT_LE(delay, absl::Milliseconds(250));
  f.layer->EndRetry();
  // Not idempotent, not a listed code, or out of attempts: done.
  EXPECT_EQ(f.layer->Decide(unavailable, false, 1, true, &used, &delay), RetryLayer::Next::kDone);
  EXPECT_EQ(f.layer->Decide(Failed(absl::StatusCode::kInternal), true, 1, true, &used, &delay),
            RetryLayer::Next::kDone);
  EXPECT_EQ(f.layer->Decide(unavailable, true, 3, true, &used, &delay), RetryLayer::Next::kDone);
  EXPECT_EQ(f.layer->retries(), 1u);
}

TEST(RetryLayerTest, AnExpiredPerTryTimeoutIsRetried) {
  resilience::RetryPolicy p = ThreeAttempts();
  RetryFixture without(p);
  without.Deposit(10);
  p.per_try_timeout = absl::Milliseconds(100);
  RetryFixture with(p);
  with.Deposit(10);
  bool used = false;
  absl::Duration delay;
  CallResult expired = Failed(absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(without.layer->Decide(expired, true, 1, true, &used, &delay),
            RetryLayer::Next::kDone);
  EXPECT_EQ(with.layer->Decide(expired, true, 1, true, &used, &delay), RetryLayer::Next::kRetry);
}

TEST(RetryLayerTest, TheBudgetBoundsRetries) {
  RetryFixture f(ThreeAttempts(), /*ratio=*/0.5, /*floor=*/0);
  f.Deposit(4);  // earns 2 retries
  int retried = 0;
  for (int i = 0; i < 5; ++i) {
    bool used = false;
    absl::Duration delay;
    if (f.layer->Decide(Failed(absl::StatusCode::kUnavailable), true, 1, true, &used, &delay) ==
        RetryLayer::Next::kRetry) {
      ++retried;
      f.layer->EndRetry();
    }
  }
  EXPECT_EQ(retried, 2);
  EXPECT_EQ(f.layer->denied(), 3u);
}

TEST(RetryLayerTest, ServerPushbackSetsTheDelayOrForbidsTheRetry) {
  RetryFixture f(ThreeAttempts());
  f.Deposit(10);
  bool used = false;
  absl::Duration delay;
  CallResult r = Failed(absl::StatusCode::kUnavailable);
  r.metadata.emplace_back(transport::kRetryPushbackKey, "70");
  EXPECT_EQ(f.layer->Decide(r, true, 1, true, &used, &delay), RetryLayer::Next::kRetry);
  EXPECT_EQ(delay, absl::Milliseconds(70));
  f.layer->EndRetry();
  r.metadata[0].second = "-1";
  EXPECT_EQ(f.layer->Decide(r, true, 1, true, &used, &delay), RetryLayer::Next::kDone);
  EXPECT_EQ(f.layer->pushback_stops(), 1u);
}

TEST(HedgingLayerTest, HedgesDrawOnBothBudgets) {
  testing::FakeExecutor clock;
  resilience::HedgingPolicy p;
  p.enabled = true;
  p.delay = absl::Milliseconds(20);
  resilience::RetryBudgetOptions hb;
  hb.ratio = 0.5;
  hb.min_per_second = 0;
  auto hedge_budget = std::make_shared<resilience::RetryBudget>(hb, &clock);
  resilience::RetryBudgetOptions rb;
  rb.ratio = 1;
  rb.min_per_second = 0;
  auto retry_budget = std::make_shared<resilience::RetryBudget>(rb, &clock);
  HedgingLayer layer(p, hedge_budget, retry_budget, nullptr);
  EXPECT_EQ(layer.hooks(), Layer::kAdmit);  // no percentile: nothing to observe
  CallOptions idempotent;
  idempotent.idempotent = true;
  EXPECT_TRUE(layer.Applies(idempotent));
  EXPECT_FALSE(layer.Applies(CallOptions{}));
  EXPECT_EQ(layer.NextDelay(), absl::Milliseconds(20));
  CallInfo c;
  c.start = clock.Now();
  c.hedged = true;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(layer.Admit(c).ok());
    retry_budget->Deposit(c.start);
  }
  EXPECT_TRUE(layer.TryStartHedge());
  EXPECT_TRUE(layer.TryStartHedge());
  EXPECT_FALSE(layer.TryStartHedge());  // max_extra_load 50% of 4 calls
  EXPECT_EQ(layer.hedges(), 2u);
  EXPECT_EQ(layer.denied(), 1u);
}

TEST(BreakerLayerTest, AdmitsUpToMaxRequestsAndReleases) {
  resilience::CircuitBreakerOptions o;
  o.max_requests = 2;
  BreakerLayer layer(std::make_shared<resilience::CircuitBreaker>(o, "svc"));
  CallInfo c;
  EXPECT_TRUE(layer.Admit(c).ok());
  EXPECT_TRUE(layer.Admit(c).ok());
  absl::Status refused = layer.Admit(c);
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("svc"), std::string::npos) << refused;
  layer.Release();
  EXPECT_TRUE(layer.Admit(c).ok());
  EXPECT_NE(layer.Describe().find("max_requests 2"), std::string::npos) << layer.Describe();
}

TEST(DeadlineLayerTest, EachAttemptCarriesWhatIsLeftCappedByThePerTryTimeout) {
  DeadlineLayer layer(absl::Seconds(1), absl::Milliseconds(300));
  absl::Time now = absl::FromUnixSeconds(1000);
  CallOptions o;
  EXPECT_EQ(layer.DeadlineOf(o, now), now + absl::Seconds(1));
  o.timeout = absl::Milliseconds(500);
  EXPECT_EQ(layer.DeadlineOf(o, now), now + absl::Milliseconds(500));
  o.deadline = now + absl::Milliseconds(200);
  EXPECT_EQ(layer.DeadlineOf(o, now), now + absl::Milliseconds(200));
  CallOptions attempt;
  layer.ShapeAttempt(CallOptions{}, now + absl::Seconds(1), absl::Seconds(1), &attempt);
  EXPECT_EQ(attempt.timeout, absl::Milliseconds(300));
  layer.ShapeAttempt(CallOptions{}, now + absl::Seconds(1), absl::Milliseconds(100), &attempt);
  EXPECT_EQ(attempt.timeout, absl::Milliseconds(100));
  EXPECT_NE(layer.Describe().find("each attempt at most 300ms"), std::string::npos);
}

TEST(EndpointHealthLayerTest, OnlyEndpointFailuresCountAndLosingHedgesGiveTheProbeBack) {
  EXPECT_TRUE(IsEndpointFailure(Failed(absl::StatusCode::kUnavailable)));
  EXPECT_TRUE(IsEndpointFailure(Failed(absl::StatusCode::kDeadlineExceeded)));
  EXPECT_FALSE(IsEndpointFailure(Failed(absl::StatusCode::kNotFound)));
  EXPECT_FALSE(IsEndpointFailure(Failed(absl::StatusCode::kCancelled)));

  testing::FakeExecutor clock;
  resilience::OutlierDetectionOptions o;
  o.consecutive_failures = 2;
  auto detector = std::make_unique<resilience::OutlierDetector>(o, &clock);
  auto host = detector->AddHost("10.0.0.1:1");
  int signals = 0;
  EndpointHealthLayer layer(std::move(detector), std::nullopt, "", [&] { ++signals; });
  AttemptInfo a;
  a.outlier = host.get();
  layer.OnAttemptEnd(a, Failed(absl::StatusCode::kNotFound));   // about the request
  layer.OnAttemptEnd(a, Failed(absl::StatusCode::kCancelled));  // a losing hedge
  EXPECT_EQ(signals, 0);
  layer.OnAttemptEnd(a, Failed(absl::StatusCode::kUnavailable));
  layer.OnAttemptEnd(a, Failed(absl::StatusCode::kUnavailable));
  EXPECT_EQ(signals, 1);  // two in a row: an evaluation is due
  EXPECT_NE(layer.Describe().find("2 failures in a row"), std::string::npos) << layer.Describe();
}

TEST(FaultLayerTest, DescribesWhatItInjects) {
  EXPECT_EQ(FaultLayer(resilience::FaultInjection{}).Describe(), "none");
  resilience::FaultInjection f;
  f.abort_percent = 10;
  f.abort_code = absl::StatusCode::kUnavailable;
  FaultLayer layer(f);
  EXPECT_NE(layer.fault(), nullptr);
  EXPECT_EQ(layer.Describe(), "abort 10% with UNAVAILABLE");
}

}  // namespace
}  // namespace meshlib::client
