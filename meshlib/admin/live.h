// The data behind the live page (`/`): once a second, the registry's golden
// metrics turned into what an operator looks at, with a few minutes of
// history.
//
// Per service (from meshlib_client_*): calls per second, success rate, p50
// and p99 latency, calls so far. Per endpoint of a service: its share of
// the service's attempts, attempts per second, success rate, latency
// estimate, in flight, ejected or healthy. Per served method (from
// meshlib_server_*): the same as a service. Rates, success rates and
// percentiles are over the last `window` samples; the history keeps one
// point per sample, each over its own second.
//
//   LiveView live(metrics::DefaultRegistry());
//   live.Sample(absl::Now());   // once a second (AdminOptions::tick)
//   std::string json = live.Json();
//
// Thread-safe.
#ifndef MESHLIB_ADMIN_LIVE_H_
#define MESHLIB_ADMIN_LIVE_H_

#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "meshlib/admin/admin_server.h"
#include "meshlib/metrics/metrics.h"

namespace meshlib::admin {

class LiveView {
 public:
  struct Options {
    int history = 300;  // samples kept (five minutes at one a second)
    int window = 5;     // samples the current numbers are computed over
  };
  explicit LiveView(metrics::Registry& registry) : LiveView(registry, Options()) {}
  LiveView(metrics::Registry& registry, Options options);

  // Reads the registry and appends one point to every series.
  void Sample(absl::Time now);

  // {"time": seconds, "interval": seconds,
  //  "services": [{"name", "calls", "rate", "success", "p50", "p99",
  //                "history": {"rate": [...], "success": [...], "p50": [...], "p99": [...]},
  //                "endpoints": [{"address", "share", "rate", "success", "latency",
  //                               "in_flight", "ejected", "unreachable", "attempts",
  //                               "history": {"rate": [...], "success": [...],
  //                                           "latency": [...]}}]}],
  //  "served": [{"name" (the method), "calls", "rate", "success", "p50", "p99",
  //              "history": {...}}]}
  // Latencies in seconds, success as a fraction (null while nothing was
  // called in the window), history oldest first.
  std::string Json() const;

 private:
  // Cumulative counts at one sample.
  struct Totals {
    absl::Time at;
    double calls = 0;
    double ok = 0;
    metrics::Histogram::Snapshot latency;
  };
  struct EndpointState {
    Totals totals;  // attempts
    double latency_estimate = 0;
    double in_flight = 0;
    bool ejected = false;
    bool unreachable = false;
    bool present = false;  // listed by discovery at the last sample
  };
  struct Series {
    std::deque<Totals> samples;  // the last window + 1 cumulative readings
    std::map<std::string, std::deque<double>> history;
  };
  struct EndpointSeries {
    Series series;
    EndpointState last;
  };
  struct ServiceSeries {
    Series series;
    std::map<std::string, EndpointSeries> endpoints;
  };

  void Push(Series& s, const Totals& now, absl::Time previous);
  void Record(Series& s, const std::string& key, double value);

  metrics::Registry& registry_;
  Options options_;
  mutable std::mutex mu_;
  absl::Time last_sample_ = absl::InfinitePast();
  std::map<std::string, ServiceSeries> services_;
  std::map<std::string, Series> served_;
};

// The Content-Security-Policy the live page is served with.
inline constexpr char kLivePagePolicy[] =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// The HTML of the live page: one self-contained document (its script and
// styles inline) that polls /live.json every second.
const std::string& LivePageHtml();

// Every standard page over `registry`: /metrics, /metrics.json, the live
// page at / and its data at /live.json. Sets `options->tick` to sample the
// live view once a second.
AdminServer::Handlers StandardPages(metrics::Registry& registry, AdminOptions* options);

}  // namespace meshlib::admin

#endif  // MESHLIB_ADMIN_LIVE_H_
