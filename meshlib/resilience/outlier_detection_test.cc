#include "meshlib/resilience/outlier_detection.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/testing/fake_executor.h"

namespace meshlib::resilience {
namespace {

using Host = OutlierDetector::Host;

// Consecutive failures only, every host may go: each test turns on what it
// exercises.
OutlierDetectionOptions ConsecutiveOnly() {
  OutlierDetectionOptions o;
  o.consecutive_failures = 5;
  o.interval = absl::Seconds(10);
  o.base_ejection_time = absl::Seconds(30);
  o.max_ejection_time = absl::Seconds(300);
  o.max_ejection_percent = 100;
  o.success_rate.enabled = false;
  return o;
}

// Plays the control loop: Evaluate at every NextEvaluation() up to `until`.
void RunUntil(OutlierDetector& od, testing::FakeExecutor& clock, absl::Time until) {
  for (absl::Time next = od.NextEvaluation(); next <= until; next = od.NextEvaluation()) {
    clock.AdvanceTo(std::max(next, clock.Now()));
    od.Evaluate();
  }
  clock.AdvanceTo(until);
}

void Fail(Host& h, int n) {
  for (int i = 0; i < n; ++i) h.Record(/*failure=*/true);
}

void Results(Host& h, int ok, int failed) {
  for (int i = 0; i < ok; ++i) h.Record(false);
  for (int i = 0; i < failed; ++i) h.Record(true);
}

const OutlierHostStats& HostStats(const OutlierDetectorStats& s, const std::string& address) {
  for (const auto& h : s.hosts) {
    if (h.address == address) return h;
  }
  static const OutlierHostStats* none = new OutlierHostStats;
  ADD_FAILURE() << "no stats for " << address;
  return *none;
}

// Ejects `h` by consecutive failures and returns how long the ejection lasts.
absl::Duration EjectByFailures(OutlierDetector& od, testing::FakeExecutor& clock, Host& h) {
  Fail(h, static_cast<int>(od.options().consecutive_failures));
  od.Evaluate();
  EXPECT_EQ(h.state(), OutlierState::kEjected);
  return HostStats(od.Stats(), h.address()).ejected_until - clock.Now();
}

// Lets the ejection of `h` run out so that it is in probation.
void ExpireEjection(OutlierDetector& od, testing::FakeExecutor& clock, Host& h) {
  RunUntil(od, clock, HostStats(od.Stats(), h.address()).ejected_until);
  ASSERT_EQ(h.state(), OutlierState::kProbation);
}

TEST(OutlierDetectionTest, ConsecutiveFailuresEjectAndASuccessResetsTheRun) {
  testing::FakeExecutor clock;
  OutlierDetector od(ConsecutiveOnly(), &clock);
  auto h = od.AddHost("10.0.0.1:7001");
  od.AddHost("10.0.0.2:7001");

  for (int i = 0; i < 4; ++i) EXPECT_FALSE(h->Record(true));
  EXPECT_FALSE(h->Record(false));  // breaks the run
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(h->Record(true));
  EXPECT_FALSE(od.Evaluate());
  EXPECT_EQ(h->state(), OutlierState::kHealthy);

  EXPECT_TRUE(h->Record(true));  // the fifth in a row: evaluate now
  EXPECT_EQ(h->state(), OutlierState::kHealthy);  // the control thread ejects
  EXPECT_TRUE(od.Evaluate());
  EXPECT_EQ(h->state(), OutlierState::kEjected);
  EXPECT_FALSE(od.Evaluate());  // nothing new

  OutlierDetectorStats s = od.Stats();
  EXPECT_EQ(s.ejections_consecutive_failures, 1u);
  EXPECT_EQ(s.ejected, 1);
  const OutlierHostStats& hs = HostStats(s, "10.0.0.1:7001");
  EXPECT_EQ(hs.times_ejected, 1u);
  EXPECT_EQ(hs.last_ejection_reason, EjectionReason::kConsecutiveFailures);
  EXPECT_EQ(hs.ejected_until, clock.Now() + absl::Seconds(30));
  EXPECT_EQ(HostStats(s, "10.0.0.2:7001").state, OutlierState::kHealthy);

  // Results that arrive while it is out are ignored.
  EXPECT_FALSE(h->Record(true));
}

TEST(OutlierDetectionTest, ConsecutiveFailuresZeroDisablesIt) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  o.consecutive_failures = 0;
  OutlierDetector od(o, &clock);
  auto h = od.AddHost("a");
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(h->Record(true));
  RunUntil(od, clock, clock.Now() + absl::Minutes(1));
  EXPECT_EQ(h->state(), OutlierState::kHealthy);
}

TEST(OutlierDetectionTest, EjectionTimeGrowsWithEachEjectionInARowUpToTheCap) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  o.base_ejection_time = absl::Seconds(30);
  o.max_ejection_time = absl::Seconds(100);
  OutlierDetector od(o, &clock);
  auto h = od.AddHost("a");

  EXPECT_EQ(EjectByFailures(od, clock, *h), absl::Seconds(30));
  std::vector<absl::Duration> lengths;
  for (int i = 0; i < 4; ++i) {
    ExpireEjection(od, clock, *h);
    ASSERT_TRUE(h->TryTakeProbe());
    EXPECT_TRUE(h->Record(true));  // the probe failed
    EXPECT_TRUE(od.Evaluate());
    ASSERT_EQ(h->state(), OutlierState::kEjected);
    lengths.push_back(HostStats(od.Stats(), "a").ejected_until - clock.Now());
  }
  EXPECT_EQ(lengths, (std::vector<absl::Duration>{absl::Seconds(60), absl::Seconds(90),
                                                  absl::Seconds(100), absl::Seconds(100)}));
  EXPECT_EQ(HostStats(od.Stats(), "a").times_ejected, 5u);
  // The multiplier stopped at the cap, so that decay brings the ejection
  // time down from the cap at once.
  EXPECT_EQ(HostStats(od.Stats(), "a").ejection_multiplier, 4);
}

TEST(OutlierDetectionTest, MaxEjectionTimeBelowBaseMeansBase) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  o.base_ejection_time = absl::Seconds(30);
  o.max_ejection_time = absl::Seconds(5);
  OutlierDetector od(o, &clock);
  auto h = od.AddHost("a");
  EXPECT_EQ(EjectByFailures(od, clock, *h), absl::Seconds(30));
  ExpireEjection(od, clock, *h);
  ASSERT_TRUE(h->TryTakeProbe());
  h->Record(true);
  od.Evaluate();
  EXPECT_EQ(HostStats(od.Stats(), "a").ejected_until - clock.Now(), absl::Seconds(30));
}

// Ejected twice in a row (multiplier 2), then back: returns the ejection
// length a new run of failures gets after `healthy_for`.
absl::Duration EjectionAfterBeingHealthyFor(absl::Duration healthy_for) {
  testing::FakeExecutor clock;
  OutlierDetector od(ConsecutiveOnly(), &clock);  // interval 10s, base 30s
  auto h = od.AddHost("a");
  EjectByFailures(od, clock, *h);
  ExpireEjection(od, clock, *h);
  EXPECT_TRUE(h->TryTakeProbe());
  h->Record(true);
  od.Evaluate();  // 60s
  ExpireEjection(od, clock, *h);
  EXPECT_TRUE(h->TryTakeProbe());
  EXPECT_TRUE(h->Record(false));
  EXPECT_TRUE(od.Evaluate());
  EXPECT_EQ(h->state(), OutlierState::kHealthy);
  EXPECT_EQ(HostStats(od.Stats(), "a").ejection_multiplier, 2);
  RunUntil(od, clock, clock.Now() + healthy_for);
  return EjectByFailures(od, clock, *h);
}

TEST(OutlierDetectionTest, MultiplierDecaysByOnePerIntervalSpentHealthy) {
  // Straight back to failing: the multiplier grows from 2 to 3.
  EXPECT_EQ(EjectionAfterBeingHealthyFor(absl::ZeroDuration()), absl::Seconds(90));
  // Before the next sweep: no decay yet.
  EXPECT_EQ(EjectionAfterBeingHealthyFor(absl::Seconds(9)), absl::Seconds(90));
  // One sweep after a whole interval healthy: 2 -> 1, then the ejection
  // makes it 2.
  EXPECT_EQ(EjectionAfterBeingHealthyFor(absl::Seconds(10)), absl::Seconds(60));
  // Long enough to decay fully: as if it had never been ejected.
  EXPECT_EQ(EjectionAfterBeingHealthyFor(absl::Seconds(60)), absl::Seconds(30));
}

TEST(OutlierDetectionTest, ProbationAllowsOneProbeAtATimeAndItsSuccessRestoresTheHost) {
  testing::FakeExecutor clock;
  OutlierDetector od(ConsecutiveOnly(), &clock);
  auto h = od.AddHost("a");
  od.AddHost("b");
  EXPECT_FALSE(h->TryTakeProbe());  // healthy: no probing needed
  EjectByFailures(od, clock, *h);
  EXPECT_FALSE(h->TryTakeProbe());  // ejected: no traffic at all

  RunUntil(od, clock, clock.Now() + absl::Seconds(29));
  EXPECT_EQ(h->state(), OutlierState::kEjected);
  clock.AdvanceBy(absl::Seconds(1));
  EXPECT_TRUE(od.Evaluate());  // the ejection ran out: a state change
  EXPECT_EQ(h->state(), OutlierState::kProbation);
  EXPECT_EQ(od.Stats().in_probation, 1);

  // A result that is not the probe's is ignored.
  EXPECT_FALSE(h->Record(false));
  EXPECT_FALSE(od.Evaluate());
  EXPECT_EQ(h->state(), OutlierState::kProbation);

  EXPECT_TRUE(h->TryTakeProbe());
  EXPECT_FALSE(h->TryTakeProbe());
  EXPECT_FALSE(h->TryTakeProbe());
  h->ReleaseProbe();  // not sent after all
  EXPECT_TRUE(h->TryTakeProbe());
  EXPECT_FALSE(h->TryTakeProbe());

  EXPECT_TRUE(h->Record(false));  // the probe succeeded: evaluate now
  EXPECT_FALSE(h->TryTakeProbe());  // still one probe until the control thread decides
  EXPECT_TRUE(od.Evaluate());
  EXPECT_EQ(h->state(), OutlierState::kHealthy);
  EXPECT_FALSE(h->TryTakeProbe());

  OutlierDetectorStats s = od.Stats();
  EXPECT_EQ(s.probes_ok, 1u);
  EXPECT_EQ(s.probes_failed, 0u);
  EXPECT_EQ(s.ejected + s.in_probation, 0);

  // Back in full rotation: a fresh run of failures is needed again.
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(h->Record(true));
  EXPECT_TRUE(h->Record(true));
}

TEST(OutlierDetectionTest, FailedProbeEjectsAgainAtOnceForLonger) {
  testing::FakeExecutor clock;
  OutlierDetector od(ConsecutiveOnly(), &clock);
  auto h = od.AddHost("a");
  EjectByFailures(od, clock, *h);
  ExpireEjection(od, clock, *h);
  ASSERT_TRUE(h->TryTakeProbe());
  EXPECT_TRUE(h->Record(true));
  EXPECT_FALSE(h->TryTakeProbe());  // no second probe meanwhile
  EXPECT_TRUE(od.Evaluate());       // no need to wait for the interval
  EXPECT_EQ(h->state(), OutlierState::kEjected);
  OutlierDetectorStats s = od.Stats();
  EXPECT_EQ(s.probes_failed, 1u);
  EXPECT_EQ(s.ejections_failed_probe, 1u);
  EXPECT_EQ(HostStats(s, "a").ejected_until, clock.Now() + absl::Seconds(60));
  EXPECT_EQ(HostStats(s, "a").last_ejection_reason, EjectionReason::kFailedProbe);
}

TEST(OutlierDetectionTest, ProbeNeverRecordedIsReleasedAfterAWholeInterval) {
  testing::FakeExecutor clock;
  OutlierDetector od(ConsecutiveOnly(), &clock);
  auto h = od.AddHost("a");
  EjectByFailures(od, clock, *h);
  ExpireEjection(od, clock, *h);
  ASSERT_TRUE(h->TryTakeProbe());  // ... and the caller forgets it
  RunUntil(od, clock, clock.Now() + absl::Seconds(10));
  EXPECT_FALSE(h->TryTakeProbe());  // not yet a whole interval for sure
  RunUntil(od, clock, clock.Now() + absl::Seconds(10));
  EXPECT_TRUE(h->TryTakeProbe());
  EXPECT_EQ(od.Stats().probes_lost, 1u);
  // The new probe's result counts as usual.
  EXPECT_TRUE(h->Record(false));
  od.Evaluate();
  EXPECT_EQ(h->state(), OutlierState::kHealthy);
}

TEST(OutlierDetectionTest, ConcurrentCallersGetExactlyOneProbe) {
  testing::FakeExecutor clock;
  OutlierDetector od(ConsecutiveOnly(), &clock);
  auto h = od.AddHost("a");
  constexpr int kThreads = 8;
  for (int round = 0; round < 20; ++round) {
    EjectByFailures(od, clock, *h);
    ExpireEjection(od, clock, *h);
    std::atomic<int> ready{0};
    std::atomic<int> winners{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        ready.fetch_add(1);
        while (ready.load() < kThreads) std::this_thread::yield();
        for (int i = 0; i < 1000; ++i) {
          if (h->TryTakeProbe()) winners.fetch_add(1);
        }
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(winners.load(), 1) << "round " << round;
    h->Record(false);
    od.Evaluate();
    ASSERT_EQ(h->state(), OutlierState::kHealthy);
  }
}

TEST(OutlierDetectionTest, ConcurrentTakeAndReleaseNeverHasTwoProbesOut) {
  testing::FakeExecutor clock;
  OutlierDetector od(ConsecutiveOnly(), &clock);
  auto h = od.AddHost("a");
  EjectByFailures(od, clock, *h);
  ExpireEjection(od, clock, *h);
  constexpr int kThreads = 8;
  std::atomic<int> holders{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> taken{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        if (!h->TryTakeProbe()) continue;
        taken.fetch_add(1);
        if (holders.fetch_add(1) != 0) overlaps.fetch_add(1);
        holders.fetch_sub(1);
        h->ReleaseProbe();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_GT(taken.load(), 0);
  EXPECT_TRUE(h->TryTakeProbe());  // released every time
}

struct Traffic {
  int hosts_with_volume;  // get `attempts` each; the others one fewer
  int attempts;
  int64_t minimum_hosts = 5;
};

// Ten hosts: nine at 99% success, "h0" at 70%; returns whether h0 was ejected
// for its success rate at the first sweep.
bool SuccessRateEjectsTheOutlier(const Traffic& traffic) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  o.consecutive_failures = 0;
  o.success_rate = SuccessRateOptions{};  // on: 1.9 stdev, 5 hosts, 100 attempts
  o.success_rate.minimum_hosts = traffic.minimum_hosts;
  OutlierDetector od(o, &clock);
  std::vector<std::shared_ptr<Host>> hosts;
  for (int i = 0; i < 10; ++i) hosts.push_back(od.AddHost(absl::StrCat("h", i)));
  for (int i = 0; i < 10; ++i) {
    int attempts = i < traffic.hosts_with_volume ? traffic.attempts : traffic.attempts - 1;
    int failures = i == 0 ? attempts * 30 / 100 : attempts / 100;
    Results(*hosts[i], attempts - failures, failures);
  }
  EXPECT_FALSE(od.Evaluate());  // statistics wait for the interval
  clock.AdvanceBy(o.interval);
  bool changed = od.Evaluate();
  for (int i = 1; i < 10; ++i) EXPECT_EQ(hosts[i]->state(), OutlierState::kHealthy) << i;
  OutlierDetectorStats s = od.Stats();
  EXPECT_EQ(HostStats(s, "h0").last_interval_attempts,
            static_cast<uint64_t>(traffic.hosts_with_volume > 0 ? traffic.attempts
                                                                : traffic.attempts - 1));
  bool ejected = hosts[0]->state() == OutlierState::kEjected;
  EXPECT_EQ(changed, ejected);
  EXPECT_EQ(s.ejections_success_rate, ejected ? 1u : 0u);
  if (ejected) {
    EXPECT_EQ(HostStats(s, "h0").last_ejection_reason, EjectionReason::kSuccessRate);
  }
  return ejected;
}

TEST(OutlierDetectionTest, SuccessRateEjectsTheOutlierAmongTenHosts) {
  EXPECT_TRUE(SuccessRateEjectsTheOutlier({10, 100}));
}

TEST(OutlierDetectionTest, SuccessRateNeedsMinimumHostsWithVolume) {
  EXPECT_TRUE(SuccessRateEjectsTheOutlier({5, 100, /*minimum_hosts=*/5}));
  EXPECT_FALSE(SuccessRateEjectsTheOutlier({5, 100, /*minimum_hosts=*/6}));
  EXPECT_FALSE(SuccessRateEjectsTheOutlier({4, 100}));  // only 4 hosts judged
}

TEST(OutlierDetectionTest, SuccessRateNeedsRequestVolume) {
  EXPECT_FALSE(SuccessRateEjectsTheOutlier({0, 100}));  // 99 attempts each
}

TEST(OutlierDetectionTest, SuccessRateRecordsLastIntervalAndResetsCounters) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  OutlierDetector od(o, &clock);
  auto h = od.AddHost("a");
  Results(*h, 3, 1);
  RunUntil(od, clock, clock.Now() + o.interval);
  EXPECT_EQ(HostStats(od.Stats(), "a").last_interval_attempts, 4u);
  EXPECT_DOUBLE_EQ(*HostStats(od.Stats(), "a").last_interval_success_rate, 75.0);
  RunUntil(od, clock, clock.Now() + o.interval);
  EXPECT_EQ(HostStats(od.Stats(), "a").last_interval_attempts, 0u);
  EXPECT_FALSE(HostStats(od.Stats(), "a").last_interval_success_rate.has_value());
}

TEST(OutlierDetectionTest, FailurePercentageEjectsAtOrAboveTheThreshold) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  o.consecutive_failures = 0;
  o.failure_percentage.enabled = true;  // 85%, 5 hosts, 50 attempts
  OutlierDetector od(o, &clock);
  std::vector<std::shared_ptr<Host>> hosts;
  for (int i = 0; i < 5; ++i) hosts.push_back(od.AddHost(absl::StrCat("h", i)));
  // Interleaved so that no run of failures matters.
  auto mixed = [](Host& h, int ok, int failed) {
    const int n = ok + failed;
    for (int i = 0; i < n; ++i) h.Record(/*failure=*/i * failed / n != (i + 1) * failed / n);
  };
  mixed(*hosts[0], 5, 45);   // 90% failures
  mixed(*hosts[1], 8, 42);   // 84%
  mixed(*hosts[2], 50, 0);
  mixed(*hosts[3], 9, 51);   // exactly 85%
  mixed(*hosts[4], 1, 49);   // 98%, worst
  clock.AdvanceBy(o.interval);
  EXPECT_TRUE(od.Evaluate());
  EXPECT_EQ(hosts[0]->state(), OutlierState::kEjected);
  EXPECT_EQ(hosts[1]->state(), OutlierState::kHealthy);
  EXPECT_EQ(hosts[2]->state(), OutlierState::kHealthy);
  EXPECT_EQ(hosts[3]->state(), OutlierState::kEjected);
  EXPECT_EQ(hosts[4]->state(), OutlierState::kEjected);
  EXPECT_EQ(od.Stats().ejections_failure_percentage, 3u);
  EXPECT_EQ(HostStats(od.Stats(), "h4").last_ejection_reason,
            EjectionReason::kFailurePercentage);
}

TEST(OutlierDetectionTest, FailurePercentageIsOffByDefaultAndNeedsMinimumHosts) {
  for (bool enabled : {false, true}) {
    testing::FakeExecutor clock;
    OutlierDetectionOptions o = ConsecutiveOnly();
    o.consecutive_failures = 0;
    o.failure_percentage.enabled = enabled;
    OutlierDetector od(o, &clock);
    // Four hosts: one below minimum_hosts (5).
    std::vector<std::shared_ptr<Host>> hosts;
    for (int i = 0; i < 4; ++i) {
      hosts.push_back(od.AddHost(absl::StrCat("h", i)));
      for (int k = 0; k < 100; ++k) hosts.back()->Record(i == 0 || k % 10 == 0);
    }
    clock.AdvanceBy(o.interval);
    EXPECT_FALSE(od.Evaluate());
    EXPECT_EQ(hosts[0]->state(), OutlierState::kHealthy);
  }
  OutlierDetectionOptions defaults;
  EXPECT_FALSE(defaults.failure_percentage.enabled);
}

TEST(OutlierDetectionTest, MaxEjectionPercentCapsHostsOutOfRotation) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  o.max_ejection_percent = 50;
  OutlierDetector od(o, &clock);
  std::vector<std::shared_ptr<Host>> hosts;
  for (int i = 0; i < 10; ++i) hosts.push_back(od.AddHost(absl::StrCat("h", i)));
  for (auto& h : hosts) Fail(*h, 5);
  EXPECT_TRUE(od.Evaluate());
  OutlierDetectorStats s = od.Stats();
  EXPECT_EQ(s.ejected, 5);
  EXPECT_EQ(s.ejections_over_limit, 5u);

  // Hosts in probation still count: the others stay in until one is back.
  RunUntil(od, clock, clock.Now() + absl::Seconds(30));
  s = od.Stats();
  EXPECT_EQ(s.in_probation, 5);
  EXPECT_EQ(s.ejected + s.in_probation, 5);
  for (auto& h : hosts) {
    if (h->state() != OutlierState::kProbation) continue;
    ASSERT_TRUE(h->TryTakeProbe());
    h->Record(false);
    break;
  }
  od.Evaluate();  // one back; a still-failing host takes its place
  s = od.Stats();
  EXPECT_EQ(s.ejected + s.in_probation, 5);
  EXPECT_EQ(s.ejected, 1);
}

TEST(OutlierDetectionTest, MaxEjectionPercentStillAllowsOneHost) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  o.max_ejection_percent = 10;  // of 3 hosts: rounds to none
  OutlierDetector od(o, &clock);
  auto a = od.AddHost("a");
  auto b = od.AddHost("b");
  od.AddHost("c");
  Fail(*a, 5);
  EXPECT_TRUE(od.Evaluate());
  EXPECT_EQ(a->state(), OutlierState::kEjected);
  Fail(*b, 5);
  EXPECT_FALSE(od.Evaluate());
  EXPECT_EQ(b->state(), OutlierState::kHealthy);
  EXPECT_EQ(od.Stats().ejections_over_limit, 1u);
}

TEST(OutlierDetectionTest, MaxEjectionPercentZeroOnlyCounts) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  o.max_ejection_percent = 0;
  OutlierDetector od(o, &clock);
  auto a = od.AddHost("a");
  Fail(*a, 5);
  EXPECT_FALSE(od.Evaluate());
  EXPECT_EQ(a->state(), OutlierState::kHealthy);
  EXPECT_EQ(od.Stats().ejections_over_limit, 1u);
}

TEST(OutlierDetectionTest, RemovingAHostFreesItsPlaceAndKeepsItsHandleUsable) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  o.max_ejection_percent = 10;
  OutlierDetector od(o, &clock);
  auto a = od.AddHost("a");
  auto b = od.AddHost("b");
  EXPECT_EQ(od.AddHost("a"), a);  // already tracked: the same handle
  Fail(*a, 5);
  od.Evaluate();
  Fail(*b, 5);
  od.Evaluate();
  EXPECT_EQ(b->state(), OutlierState::kHealthy);  // a holds the one place

  EXPECT_TRUE(od.RemoveHost("a"));
  EXPECT_FALSE(od.RemoveHost("a"));
  EXPECT_TRUE(od.Evaluate());  // b's run is still over the threshold
  EXPECT_EQ(b->state(), OutlierState::kEjected);
  OutlierDetectorStats s = od.Stats();
  ASSERT_EQ(s.hosts.size(), 1u);
  EXPECT_EQ(s.hosts[0].address, "b");
  EXPECT_EQ(s.ejected, 1);

  // The removed handle is inert, not dangling; the next ejection expiry is
  // b's alone.
  a->Record(true);
  a->TryTakeProbe();
  EXPECT_EQ(od.NextEvaluation(), clock.Now() + absl::Seconds(10));  // sweep first
  od.AddHost("a");  // back: a new, healthy host
  EXPECT_EQ(od.Stats().hosts.size(), 2u);
}

TEST(OutlierDetectionTest, NextEvaluationIsTheSweepOrTheEarliestEjectionEnd) {
  testing::FakeExecutor clock;
  OutlierDetectionOptions o = ConsecutiveOnly();
  o.interval = absl::Seconds(10);
  o.base_ejection_time = absl::Seconds(3);
  OutlierDetector od(o, &clock);
  const absl::Time start = clock.Now();
  EXPECT_EQ(od.NextEvaluation(), start + absl::Seconds(10));
  auto a = od.AddHost("a");
  auto b = od.AddHost("b");
  clock.AdvanceBy(absl::Seconds(1));
  Fail(*a, 5);
  od.Evaluate();
  EXPECT_EQ(od.NextEvaluation(), start + absl::Seconds(4));  // a's ejection ends
  clock.AdvanceBy(absl::Seconds(1));
  Fail(*b, 5);
  od.Evaluate();
  EXPECT_EQ(od.NextEvaluation(), start + absl::Seconds(4));  // still a's, the earlier
  clock.AdvanceTo(start + absl::Seconds(4));
  EXPECT_TRUE(od.Evaluate());
  EXPECT_EQ(a->state(), OutlierState::kProbation);
  EXPECT_EQ(od.NextEvaluation(), start + absl::Seconds(5));  // b's
  clock.AdvanceTo(start + absl::Seconds(5));
  od.Evaluate();
  EXPECT_EQ(od.NextEvaluation(), start + absl::Seconds(10));  // the sweep
  clock.AdvanceTo(start + absl::Seconds(10));
  od.Evaluate();
  EXPECT_EQ(od.NextEvaluation(), start + absl::Seconds(20));
}

TEST(OutlierDetectionTest, ParseDefaultsAreEnvoys) {
  auto o = ParseOutlierDetection(nlohmann::json::object(), "od");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->consecutive_failures, 5);
  EXPECT_EQ(o->interval, absl::Seconds(10));
  EXPECT_EQ(o->base_ejection_time, absl::Seconds(30));
  EXPECT_EQ(o->max_ejection_time, absl::Seconds(300));
  EXPECT_EQ(o->max_ejection_percent, 10);
  EXPECT_TRUE(o->success_rate.enabled);
  EXPECT_DOUBLE_EQ(o->success_rate.stdev_factor, 1.9);
  EXPECT_EQ(o->success_rate.minimum_hosts, 5);
  EXPECT_EQ(o->success_rate.request_volume, 100);
  EXPECT_FALSE(o->failure_percentage.enabled);
  EXPECT_EQ(o->failure_percentage.threshold, 85);
  EXPECT_EQ(o->failure_percentage.minimum_hosts, 5);
  EXPECT_EQ(o->failure_percentage.request_volume, 50);
  EXPECT_TRUE(o->Validate().ok());
}

TEST(OutlierDetectionTest, ParseReadsEveryKey) {
  auto o = ParseOutlierDetection(nlohmann::json::parse(R"({
      "consecutive_failures": 3, "interval": "1s", "base_ejection_time": "5s",
      "max_ejection_time": "1m", "max_ejection_percent": 50,
      "success_rate": {"enabled": false, "stdev_factor": 1, "minimum_hosts": 3,
                       "request_volume": 20},
      "failure_percentage": {"threshold": 60, "minimum_hosts": 2, "request_volume": 10}})"),
                                 "od");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->consecutive_failures, 3);
  EXPECT_EQ(o->interval, absl::Seconds(1));
  EXPECT_EQ(o->base_ejection_time, absl::Seconds(5));
  EXPECT_EQ(o->max_ejection_time, absl::Minutes(1));
  EXPECT_EQ(o->max_ejection_percent, 50);
  EXPECT_FALSE(o->success_rate.enabled);
  EXPECT_DOUBLE_EQ(o->success_rate.stdev_factor, 1);
  EXPECT_EQ(o->success_rate.minimum_hosts, 3);
  EXPECT_EQ(o->success_rate.request_volume, 20);
  EXPECT_TRUE(o->failure_percentage.enabled);  // present means on
  EXPECT_EQ(o->failure_percentage.threshold, 60);
  EXPECT_EQ(o->failure_percentage.minimum_hosts, 2);
  EXPECT_EQ(o->failure_percentage.request_volume, 10);

  o = ParseOutlierDetection(nlohmann::json::parse(R"({"failure_percentage": {"enabled": false}})"),
                            "od");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->failure_percentage.enabled);
}

TEST(OutlierDetectionTest, ParseErrorsNameTheFieldPath) {
  struct Case {
    const char* json;
    const char* error;
  };
  const Case cases[] = {
      {R"({"max_ejection_percent": 101})",
       "services.echo.outlier_detection.max_ejection_percent: must be an integer between 0 and "
       "100"},
      {R"({"consecutive_failures": -1})",
       "services.echo.outlier_detection.consecutive_failures: must be an integer"},
      {R"({"interval": "soon"})",
       "services.echo.outlier_detection.interval: \"soon\" is not a duration"},
      {R"({"interval": "1ms"})",
       "services.echo.outlier_detection.interval: must be between 10ms and 1h"},
      {R"({"base_ejection_time": 30})",
       "services.echo.outlier_detection.base_ejection_time: must be a duration string"},
      {R"({"consecutive_5xx": 5})",
       "services.echo.outlier_detection.consecutive_5xx: unknown key"},
      {R"({"success_rate": null})",
       "services.echo.outlier_detection.success_rate: must be an object"},
      {R"({"success_rate": {"enabled": "no"}})",
       "services.echo.outlier_detection.success_rate.enabled: must be true or false"},
      {R"({"success_rate": {"stdev_factor": -1}})",
       "services.echo.outlier_detection.success_rate.stdev_factor: must be a number"},
      {R"({"success_rate": {"minimum_hosts": 0}})",
       "services.echo.outlier_detection.success_rate.minimum_hosts: must be an integer"},
      {R"({"failure_percentage": {"threshold": 200}})",
       "services.echo.outlier_detection.failure_percentage.threshold: must be an integer"},
      {R"({"failure_percentage": {"volume": 1}})",
       "services.echo.outlier_detection.failure_percentage.volume: unknown key"},
      {R"([])", "services.echo.outlier_detection: must be an object"},
  };
  for (const Case& c : cases) {
    auto o = ParseOutlierDetection(nlohmann::json::parse(c.json),
                                   "services.echo.outlier_detection");
    ASSERT_FALSE(o.ok()) << c.json;
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(o.status().message(), c.error)) << o.status().message();
  }
}

TEST(OutlierDetectionTest, ValidateChecksTheSameRanges) {
  OutlierDetectionOptions o;
  o.max_ejection_percent = 101;
  EXPECT_TRUE(absl::StartsWith(o.Validate().message(), "max_ejection_percent:"));
  o = OutlierDetectionOptions{};
  o.interval = absl::ZeroDuration();
  EXPECT_TRUE(absl::StartsWith(o.Validate().message(), "interval:"));
  o = OutlierDetectionOptions{};
  o.failure_percentage.request_volume = 0;
  EXPECT_TRUE(absl::StartsWith(o.Validate().message(), "failure_percentage.request_volume:"));
}

TEST(OutlierDetectionTest, NamesForStats) {
  EXPECT_EQ(OutlierStateName(OutlierState::kProbation), "probation");
  EXPECT_EQ(EjectionReasonName(EjectionReason::kSuccessRate), "success_rate");
}

}  // namespace
}  // namespace meshlib::resilience
