#include "meshlib/admin/live.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "meshlib/admin/admin_server.h"
#include "meshlib/admin/test_http.h"
#include "nlohmann/json.hpp"

namespace meshlib::admin {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'800'000'000);

// A registry with the client's and server's golden families, and discovery's
// view of the endpoints through a collector, as a mesh records them.
class LiveViewTest : public ::testing::Test {
 protected:
  LiveViewTest() {
    requests_ = &registry_.AddCounter("meshlib_client_requests_total", "", {"service", "method", "code"});
    latency_ = &registry_.AddHistogram("meshlib_client_request_duration_seconds", "",
                                       {"service", "method"});
    attempts_ = &registry_.AddCounter("meshlib_client_attempts_total", "",
                                      {"service", "endpoint", "code"});
    served_ = &registry_.AddCounter("meshlib_server_requests_total", "", {"method", "code"});
    served_latency_ = &registry_.AddHistogram("meshlib_server_request_duration_seconds", "",
                                              {"method"});
    registry_.AddCollector({{"meshlib_endpoint_ejected", "", metrics::Type::kGauge},
                            {"meshlib_endpoint_latency_estimate_seconds", "",
                             metrics::Type::kGauge}},
                           [this](std::vector<metrics::Sample>* out) {
                             for (const std::string& e : listed_) {
                               out->push_back({"meshlib_endpoint_ejected",
                                               {{"service", "echo"}, {"endpoint", e}},
                                               e == ejected_ ? 1.0 : 0.0});
                               out->push_back({"meshlib_endpoint_latency_estimate_seconds",
                                               {{"service", "echo"}, {"endpoint", e}},
                                               0.002});
                             }
                           });
  }

  // `n` calls of echo with `code`, each taking `took`, spread over endpoints.
  void Calls(int n, const std::string& code, absl::Duration took, const std::string& endpoint) {
    requests_->With({"echo", "Echo/Say", code}).Add(n);
    attempts_->With({"echo", endpoint, code}).Add(n);
    for (int i = 0; i < n; ++i) latency_->With({"echo", "Echo/Say"}).Observe(took);
  }

  nlohmann::json Service(const nlohmann::json& j, const std::string& name) {
    for (const auto& s : j["services"]) {
      if (s["name"] == name) return s;
    }
    ADD_FAILURE() << "no service " << name << " in " << j.dump();
    return nlohmann::json::object();
  }

  nlohmann::json Endpoint(const nlohmann::json& service, const std::string& address) {
    for (const auto& e : service["endpoints"]) {
      if (e["address"] == address) return e;
    }
    return nullptr;
  }

  metrics::Registry registry_;
  metrics::CounterFamily* requests_;
  metrics::HistogramFamily* latency_;
  metrics::CounterFamily* attempts_;
  metrics::CounterFamily* served_;
  metrics::HistogramFamily* served_latency_;
  std::vector<std::string> listed_ = {"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"};
  std::string ejected_ = "10.0.0.3:1";
};

TEST_F(LiveViewTest, RatesSuccessAndPercentilesOverTheWindow) {
  LiveView live(registry_);
  live.Sample(kStart);
  Calls(60, "OK", absl::Milliseconds(1), "10.0.0.1:1");
  Calls(30, "OK", absl::Milliseconds(1), "10.0.0.2:1");
  Calls(10, "UNAVAILABLE", absl::Milliseconds(300), "10.0.0.2:1");
  live.Sample(kStart + absl::Seconds(1));
  Calls(100, "OK", absl::Milliseconds(1), "10.0.0.1:1");
  live.Sample(kStart + absl::Seconds(2));

  nlohmann::json j = nlohmann::json::parse(live.Json());
  nlohmann::json echo = Service(j, "echo");
  EXPECT_DOUBLE_EQ(echo["calls"].get<double>(), 200);
  EXPECT_DOUBLE_EQ(echo["rate"].get<double>(), 100);  // 200 calls in 2 s
  EXPECT_DOUBLE_EQ(echo["success"].get<double>(), 190.0 / 200);
  EXPECT_LE(echo["p50"].get<double>(), 0.001);
  EXPECT_GT(echo["p99"].get<double>(), 0.1);  // the slow failures are the top 5%

  // One point per sample, each over its own second.
  EXPECT_EQ(echo["history"]["rate"], nlohmann::json({0.0, 100.0, 100.0}));
  EXPECT_TRUE(echo["history"]["success"][0].is_null());
  EXPECT_DOUBLE_EQ(echo["history"]["success"][1].get<double>(), 0.9);
  EXPECT_DOUBLE_EQ(echo["history"]["success"][2].get<double>(), 1.0);

  nlohmann::json e1 = Endpoint(echo, "10.0.0.1:1");
  nlohmann::json e2 = Endpoint(echo, "10.0.0.2:1");
  nlohmann::json e3 = Endpoint(echo, "10.0.0.3:1");
  ASSERT_FALSE(e1.is_null());
  ASSERT_FALSE(e2.is_null());
  ASSERT_FALSE(e3.is_null()) << "listed by discovery, shown though never called";
  EXPECT_DOUBLE_EQ(e1["share"].get<double>(), 160.0 / 200);
  EXPECT_DOUBLE_EQ(e2["share"].get<double>(), 40.0 / 200);
  EXPECT_DOUBLE_EQ(e3["share"].get<double>(), 0);
  EXPECT_DOUBLE_EQ(e2["success"].get<double>(), 30.0 / 40);
  EXPECT_TRUE(e3["success"].is_null());
  EXPECT_EQ(e1["ejected"], false);
  EXPECT_EQ(e3["ejected"], true);
  EXPECT_DOUBLE_EQ(e1["latency"].get<double>(), 0.002);
  EXPECT_EQ(e1["attempts"].get<double>(), 160);
}

TEST_F(LiveViewTest, AnEndpointDiscoveryDroppedShowsOnlyWhileCalled) {
  LiveView live(registry_, {.history = 10, .window = 2});
  live.Sample(kStart);
  Calls(10, "OK", absl::Milliseconds(1), "10.0.0.2:1");
  listed_ = {"10.0.0.1:1"};  // .2 and .3 leave discovery
  live.Sample(kStart + absl::Seconds(1));
  nlohmann::json echo = Service(nlohmann::json::parse(live.Json()), "echo");
  nlohmann::json e2 = Endpoint(echo, "10.0.0.2:1");
  ASSERT_FALSE(e2.is_null()) << "called in the window";
  EXPECT_EQ(e2["present"], false);
  EXPECT_TRUE(e2["latency"].is_null());
  EXPECT_TRUE(Endpoint(echo, "10.0.0.3:1").is_null()) << "gone and never called";

  live.Sample(kStart + absl::Seconds(2));
  live.Sample(kStart + absl::Seconds(3));
  echo = Service(nlohmann::json::parse(live.Json()), "echo");
  EXPECT_TRUE(Endpoint(echo, "10.0.0.2:1").is_null()) << "not called for a whole window";
  EXPECT_FALSE(Endpoint(echo, "10.0.0.1:1").is_null());
}

TEST_F(LiveViewTest, HistoryIsBounded) {
  LiveView live(registry_, {.history = 4, .window = 2});
  for (int i = 0; i < 20; ++i) {
    Calls(i, "OK", absl::Milliseconds(1), "10.0.0.1:1");
    live.Sample(kStart + absl::Seconds(i));
  }
  nlohmann::json echo = Service(nlohmann::json::parse(live.Json()), "echo");
  EXPECT_EQ(echo["history"]["rate"], nlohmann::json({16.0, 17.0, 18.0, 19.0}));
  EXPECT_EQ(Endpoint(echo, "10.0.0.1:1")["history"]["rate"].size(), 4u);
  EXPECT_DOUBLE_EQ(echo["rate"].get<double>(), 18.5);  // (18 + 19) / 2 s
}

TEST_F(LiveViewTest, ServedMethods) {
  LiveView live(registry_);
  live.Sample(kStart);
  served_->With({"Echo/Say", "OK"}).Add(8);
  served_->With({"Echo/Say", "INTERNAL"}).Add(2);
  for (int i = 0; i < 10; ++i) served_latency_->With({"Echo/Say"}).Observe(absl::Milliseconds(2));
  live.Sample(kStart + absl::Seconds(2));
  nlohmann::json j = nlohmann::json::parse(live.Json());
  ASSERT_EQ(j["served"].size(), 1u) << j.dump();
  EXPECT_EQ(j["served"][0]["name"], "Echo/Say");
  EXPECT_DOUBLE_EQ(j["served"][0]["rate"].get<double>(), 5);
  EXPECT_DOUBLE_EQ(j["served"][0]["success"].get<double>(), 0.8);
  EXPECT_GT(j["served"][0]["p50"].get<double>(), 0.001);
}

TEST_F(LiveViewTest, NothingRecordedIsAnEmptyPageNotAnError) {
  metrics::Registry empty;
  LiveView live(empty);
  EXPECT_EQ(nlohmann::json::parse(live.Json())["services"].size(), 0u);
  live.Sample(kStart);
  nlohmann::json j = nlohmann::json::parse(live.Json());
  EXPECT_EQ(j["services"].size(), 0u);
  EXPECT_EQ(j["served"].size(), 0u);
}

TEST_F(LiveViewTest, StandardPagesServeThePageItsDataAndTheMetrics) {
  AdminOptions options;
  options.tick_interval = absl::Milliseconds(20);
  AdminServer::Handlers pages = StandardPages(registry_, &options);
  ASSERT_TRUE(options.tick) << "the live view samples on the server's tick";
  auto server = AdminServer::Start(options, std::move(pages));
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();

  std::string page = testing::Exchange(port, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(page, "HTTP/1.1 200 ")) << page.substr(0, 200);
  EXPECT_TRUE(absl::StrContains(page, "Content-Type: text/html")) << page.substr(0, 300);
  EXPECT_TRUE(absl::StrContains(page, "Content-Security-Policy: default-src 'none';"));
  EXPECT_TRUE(absl::StrContains(page, "fetch(\"live.json\""));
  // Self-contained: nothing the browser would load from elsewhere.
  for (const char* outside : {"src=", "href=", "@import", "url(", "https:"}) {
    EXPECT_FALSE(absl::StrContains(page, outside)) << outside;
  }

  // The tick samples without anyone asking: calls show up in /live.json.
  Calls(50, "OK", absl::Milliseconds(1), "10.0.0.1:1");
  nlohmann::json echo;
  for (int i = 0; i < 500; ++i) {
    std::string r = testing::Exchange(port, "GET /live.json HTTP/1.1\r\n\r\n");
    ASSERT_TRUE(absl::StrContains(r, "Content-Type: application/json")) << r.substr(0, 300);
    nlohmann::json j = nlohmann::json::parse(r.substr(r.find("\r\n\r\n") + 4));
    if (!j["services"].empty() && j["services"][0]["calls"].get<double>() == 50) {
      echo = j["services"][0];
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_FALSE(echo.is_null()) << "the 50 calls never reached /live.json";
  EXPECT_EQ(echo["endpoints"].size(), 3u);

  std::string metrics = testing::Exchange(port, "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(metrics, "meshlib_client_requests_total{service=\"echo\"")) << metrics;
}

}  // namespace
}  // namespace meshlib::admin
