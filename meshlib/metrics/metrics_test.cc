#include "meshlib/metrics/metrics.h"

#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace meshlib::metrics {
namespace {

TEST(CounterTest, SumsAcrossThreads) {
  Counter c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&c] {
      for (int i = 0; i < 10000; ++i) c.Add();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.Value(), 80000);
  c.Add(5);
  EXPECT_EQ(c.Value(), 80005);
}

TEST(HistogramTest, BucketsCountAndQuantiles) {
  Histogram h;
  for (int i = 0; i < 90; ++i) h.Observe(absl::Microseconds(50));   // bucket 0 (<= 100us)
  for (int i = 0; i < 9; ++i) h.Observe(absl::Milliseconds(3));     // (2.5ms, 5ms]
  h.Observe(absl::Seconds(30));                                      // +Inf
  h.Observe(absl::Milliseconds(-1));                                 // clamped to 0
  Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.count, 101);
  EXPECT_EQ(s.counts[0], 91);
  EXPECT_EQ(s.counts[5], 9);
  EXPECT_EQ(s.counts[Histogram::kBuckets], 1);
  EXPECT_NEAR(s.sum_seconds, 90 * 50e-6 + 9 * 3e-3 + 30, 1e-9);
  EXPECT_LE(s.Quantile(0.5), 100e-6);
  EXPECT_GT(s.Quantile(0.95), 2.5e-3);
  EXPECT_LE(s.Quantile(0.95), 5e-3);
  EXPECT_EQ(Histogram::Snapshot{}.Quantile(0.5), 0);
}

TEST(HistogramTest, ConcurrentObservations) {
  Histogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 5000; ++i) h.Observe(absl::Microseconds(100 * (t + 1)));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h.Read().count, 20000);
}

TEST(RegistryTest, PrometheusTextFormat) {
  Registry r;
  CounterFamily& requests =
      r.AddCounter("meshlib_client_requests_total", "Calls.", {"service", "method", "code"});
  requests.With({"echo", "Echo/Say", "OK"}).Add(3);
  requests.With({"echo", "Echo/Say", "UNAVAILABLE"}).Add();
  // The same label set is the same counter; the same name the same family.
  requests.With({"echo", "Echo/Say", "OK"}).Add();
  EXPECT_EQ(&r.AddCounter("meshlib_client_requests_total", "other", {}), &requests);
  r.AddCounter("odd_total", "Escaping.", {"v"}).With({"a\"b\\c\nd"}).Add();
  HistogramFamily& latency =
      r.AddHistogram("meshlib_client_request_duration_seconds", "Latency.", {"service"});
  latency.With({"echo"}).Observe(absl::Milliseconds(2));
  latency.With({"echo"}).Observe(absl::Seconds(20));
  r.AddGauge("in_flight", "Now.", {}).With({}).Set(7);

  std::string text = r.Prometheus();
  EXPECT_TRUE(absl::StrContains(text, "# HELP meshlib_client_requests_total Calls.\n"
                                      "# TYPE meshlib_client_requests_total counter\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "meshlib_client_requests_total{service=\"echo\",method=\"Echo/Say\",code=\"OK\"} 4\n"));
  EXPECT_TRUE(absl::StrContains(text, "odd_total{v=\"a\\\"b\\\\c\\nd\"} 1\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "# TYPE meshlib_client_request_duration_seconds histogram"));
  EXPECT_TRUE(absl::StrContains(
      text, "meshlib_client_request_duration_seconds_bucket{service=\"echo\",le=\"0.0025\"} 1\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "meshlib_client_request_duration_seconds_bucket{service=\"echo\",le=\"+Inf\"} 2\n"));
  EXPECT_TRUE(absl::StrContains(
      text, "meshlib_client_request_duration_seconds_count{service=\"echo\"} 2\n"));
  EXPECT_TRUE(absl::StrContains(text, "in_flight 7\n"));
}

TEST(RegistryTest, CollectorsAndJson) {
  Registry r;
  r.AddCounter("calls_total", "Calls.", {"code"}).With({"OK"}).Add(2);
  r.AddHistogram("latency_seconds", "Latency.", {}).With({}).Observe(absl::Milliseconds(1));
  int id = r.AddCollector({{"meshlib_endpoint_ejected", "Ejected (1) or not (0).", Type::kGauge}},
                          [](std::vector<Sample>* out) {
                            out->push_back({"meshlib_endpoint_ejected",
                                            {{"service", "echo"}, {"endpoint", "127.0.0.1:1"}},
                                            1});
                          });
  std::string text = r.Prometheus();
  EXPECT_TRUE(absl::StrContains(text, "# TYPE meshlib_endpoint_ejected gauge\n"
                                      "meshlib_endpoint_ejected{service=\"echo\",endpoint=\"127.0.0.1:1\"} 1\n"))
      << text;
  nlohmann::json j = nlohmann::json::parse(r.Json());
  EXPECT_EQ(j["calls_total"]["type"], "counter");
  EXPECT_EQ(j["calls_total"]["samples"][0]["labels"]["code"], "OK");
  EXPECT_EQ(j["calls_total"]["samples"][0]["value"], 2);
  EXPECT_EQ(j["latency_seconds"]["samples"][0]["count"], 1);
  EXPECT_EQ(j["meshlib_endpoint_ejected"]["samples"][0]["value"], 1);
  r.RemoveCollector(id);
  EXPECT_FALSE(absl::StrContains(r.Prometheus(), "meshlib_endpoint_ejected"));
  r.RemoveCollector(id);  // twice: nothing
}

}  // namespace
}  // namespace meshlib::metrics
