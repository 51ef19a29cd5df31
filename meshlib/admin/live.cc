#include "meshlib/admin/live.h"

#include <cmath>
#include <limits>
#include <memory>
#include <utility>

#include "meshlib/admin/pages.h"
#include "nlohmann/json.hpp"

namespace meshlib::admin {

namespace {

constexpr double kNone = std::numeric_limits<double>::quiet_NaN();  // JSON null

const std::string& Label(const metrics::Point& p, const char* name) {
  static const std::string* empty = new std::string();
  for (const auto& [k, v] : p.labels) {
    if (k == name) return v;
  }
  return *empty;
}

bool IsOk(const metrics::Point& p) { return Label(p, "code") == "OK"; }

void Merge(metrics::Histogram::Snapshot& into, const metrics::Histogram::Snapshot& h) {
  for (size_t i = 0; i < into.counts.size(); ++i) into.counts[i] += h.counts[i];
  into.count += h.count;
  into.sum_seconds += h.sum_seconds;
}

// What was observed between two cumulative readings.
metrics::Histogram::Snapshot Between(const metrics::Histogram::Snapshot& before,
                                     const metrics::Histogram::Snapshot& after) {
  metrics::Histogram::Snapshot d;
  for (size_t i = 0; i < d.counts.size(); ++i) {
    d.counts[i] = std::max<int64_t>(0, after.counts[i] - before.counts[i]);
    d.count += d.counts[i];
  }
  d.sum_seconds = std::max(0.0, after.sum_seconds - before.sum_seconds);
  return d;
}

template <typename F>
void ForEachPoint(const std::map<std::string, metrics::FamilySnapshot>& snap,
                  const char* family, F fn) {
  auto it = snap.find(family);
  if (it == snap.end()) return;
  for (const metrics::Point& p : it->second.points) fn(p);
}

nlohmann::json Number(double v) {
  if (std::isnan(v)) return nullptr;
  return v;
}

nlohmann::json Numbers(const std::deque<double>& values) {
  nlohmann::json out = nlohmann::json::array();
  for (double v : values) out.push_back(Number(v));
  return out;
}

}  // namespace

LiveView::LiveView(metrics::Registry& registry, Options options)
    : registry_(registry), options_(options) {
  if (options_.history < 1) options_.history = 1;
  if (options_.window < 1) options_.window = 1;
}

void LiveView::Record(Series& s, const std::string& key, double value) {
  std::deque<double>& h = s.history[key];
  h.push_back(value);
  while (static_cast<int>(h.size()) > options_.history) h.pop_front();
}

void LiveView::Push(Series& s, const Totals& now, absl::Time previous) {
  if (s.samples.empty() && previous != absl::InfinitePast()) {
    // New since the last sample: its counts started from zero then.
    Totals zero;
    zero.at = previous;
    s.samples.push_back(zero);
  }
  double rate = 0, success = kNone, p50 = kNone, p99 = kNone;
  if (!s.samples.empty()) {
    const Totals& prev = s.samples.back();
    const double seconds = std::max(1e-3, absl::ToDoubleSeconds(now.at - prev.at));
    const double calls = std::max(0.0, now.calls - prev.calls);
    rate = calls / seconds;
    if (calls > 0) success = std::max(0.0, now.ok - prev.ok) / calls;
    const metrics::Histogram::Snapshot d = Between(prev.latency, now.latency);
    if (d.count > 0) {
      p50 = d.Quantile(0.5);
      p99 = d.Quantile(0.99);
    }
  }
  Record(s, "rate", rate);
  Record(s, "success", success);
  Record(s, "p50", p50);
  Record(s, "p99", p99);
  s.samples.push_back(now);
  while (static_cast<int>(s.samples.size()) > options_.window + 1) s.samples.pop_front();
}

void LiveView::Sample(absl::Time now) {
  const std::map<std::string, metrics::FamilySnapshot> snap = registry_.Snapshot();
  std::map<std::string, Totals> services, served;
  std::map<std::string, std::map<std::string, EndpointState>> endpoints;

  ForEachPoint(snap, "meshlib_client_requests_total", [&](const metrics::Point& p) {
    Totals& t = services[Label(p, "service")];
    t.calls += p.value;
    if (IsOk(p)) t.ok += p.value;
  });
  ForEachPoint(snap, "meshlib_client_request_duration_seconds", [&](const metrics::Point& p) {
    Merge(services[Label(p, "service")].latency, p.histogram);
  });
  ForEachPoint(snap, "meshlib_client_attempts_total", [&](const metrics::Point& p) {
    Totals& t = endpoints[Label(p, "service")][Label(p, "endpoint")].totals;
    t.calls += p.value;
    if (IsOk(p)) t.ok += p.value;
  });
  ForEachPoint(snap, "meshlib_endpoint_ejected", [&](const metrics::Point& p) {
    EndpointState& e = endpoints[Label(p, "service")][Label(p, "endpoint")];
    e.present = true;
    e.ejected = p.value > 0;
  });
  ForEachPoint(snap, "meshlib_endpoint_unreachable", [&](const metrics::Point& p) {
    endpoints[Label(p, "service")][Label(p, "endpoint")].unreachable = p.value > 0;
  });
  ForEachPoint(snap, "meshlib_endpoint_in_flight", [&](const metrics::Point& p) {
    endpoints[Label(p, "service")][Label(p, "endpoint")].in_flight = p.value;
  });
  ForEachPoint(snap, "meshlib_endpoint_latency_estimate_seconds", [&](const metrics::Point& p) {
    endpoints[Label(p, "service")][Label(p, "endpoint")].latency_estimate = p.value;
  });
  ForEachPoint(snap, "meshlib_server_requests_total", [&](const metrics::Point& p) {
    Totals& t = served[Label(p, "method")];
    t.calls += p.value;
    if (IsOk(p)) t.ok += p.value;
  });
  ForEachPoint(snap, "meshlib_server_request_duration_seconds", [&](const metrics::Point& p) {
    Merge(served[Label(p, "method")].latency, p.histogram);
  });
  for (const auto& [name, eps] : endpoints) services[name];  // a service not called yet

  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time previous = last_sample_;
  last_sample_ = now;
  for (auto& [name, totals] : services) {
    totals.at = now;
    ServiceSeries& s = services_[name];
    Push(s.series, totals, previous);
    // Endpoints discovery no longer lists keep their series (they come back
    // after a restart) but are only shown while they were called lately.
    for (auto& [address, e] : s.endpoints) e.last.present = false;
    for (auto& [address, state] : endpoints[name]) {
      state.totals.at = now;
      EndpointSeries& e = s.endpoints[address];
      Push(e.series, state.totals, previous);
      Record(e.series, "latency", state.present ? state.latency_estimate : kNone);
      e.last = state;
    }
  }
  for (auto& [name, totals] : served) {
    totals.at = now;
    Push(served_[name], totals, previous);
  }
}

std::string LiveView::Json() const {
  std::lock_guard<std::mutex> lock(mu_);
  // The current numbers: over the window, oldest to newest reading.
  auto summarize = [](const Series& s, nlohmann::json& out) {
    double rate = 0, success = kNone, p50 = kNone, p99 = kNone, calls = 0, window_calls = 0;
    if (!s.samples.empty()) {
      const Totals& first = s.samples.front();
      const Totals& last = s.samples.back();
      calls = last.calls;
      if (s.samples.size() > 1) {
        window_calls = std::max(0.0, last.calls - first.calls);
        rate = window_calls / std::max(1e-3, absl::ToDoubleSeconds(last.at - first.at));
        if (window_calls > 0) success = std::max(0.0, last.ok - first.ok) / window_calls;
        const metrics::Histogram::Snapshot d = Between(first.latency, last.latency);
        if (d.count > 0) {
          p50 = d.Quantile(0.5);
          p99 = d.Quantile(0.99);
        }
      }
    }
    out["calls"] = calls;
    out["rate"] = rate;
    out["success"] = Number(success);
    out["p50"] = Number(p50);
    out["p99"] = Number(p99);
    return window_calls;
  };
  nlohmann::json out = nlohmann::json::object();
  out["services"] = nlohmann::json::array();
  out["served"] = nlohmann::json::array();
  for (const auto& [name, s] : services_) {
    nlohmann::json svc = {{"name", name}};
    summarize(s.series, svc);
    svc["history"] = {{"rate", Numbers(s.series.history.at("rate"))},
                      {"success", Numbers(s.series.history.at("success"))},
                      {"p50", Numbers(s.series.history.at("p50"))},
                      {"p99", Numbers(s.series.history.at("p99"))}};
    std::vector<std::pair<const std::string*, nlohmann::json>> eps;
    double attempts = 0;
    for (const auto& [address, e] : s.endpoints) {
      nlohmann::json ep = {{"address", address}};
      const double window_attempts = summarize(e.series, ep);
      if (!e.last.present && window_attempts == 0) continue;  // gone, and not called lately
      ep["attempts"] = ep["calls"];
      ep.erase("calls");
      ep.erase("p50");
      ep.erase("p99");
      ep["window_attempts"] = window_attempts;
      ep["latency"] = e.last.present ? Number(e.last.latency_estimate) : nullptr;
      ep["in_flight"] = e.last.in_flight;
      ep["ejected"] = e.last.ejected;
      ep["unreachable"] = e.last.unreachable;
      ep["present"] = e.last.present;
      ep["history"] = {{"rate", Numbers(e.series.history.at("rate"))},
                       {"success", Numbers(e.series.history.at("success"))},
                       {"latency", Numbers(e.series.history.at("latency"))}};
      attempts += window_attempts;
      eps.emplace_back(&address, std::move(ep));
    }
    svc["endpoints"] = nlohmann::json::array();
    for (auto& [address, ep] : eps) {
      ep["share"] = attempts > 0 ? nlohmann::json(ep["window_attempts"].get<double>() / attempts)
                                 : nlohmann::json(nullptr);
      ep.erase("window_attempts");
      svc["endpoints"].push_back(std::move(ep));
    }
    out["services"].push_back(std::move(svc));
  }
  for (const auto& [name, s] : served_) {
    nlohmann::json m = {{"name", name}};
    summarize(s, m);
    m["history"] = {{"rate", Numbers(s.history.at("rate"))},
                    {"success", Numbers(s.history.at("success"))},
                    {"p50", Numbers(s.history.at("p50"))},
                    {"p99", Numbers(s.history.at("p99"))}};
    out["served"].push_back(std::move(m));
  }
  out["time"] = last_sample_ == absl::InfinitePast() ? 0.0 : absl::ToUnixMillis(last_sample_) / 1000.0;
  out["interval"] = 1.0;
  out["history"] = options_.history;
  return out.dump();
}

AdminServer::Handlers StandardPages(metrics::Registry& registry, AdminOptions* options) {
  AdminServer::Handlers h = MetricsPages(registry);
  auto live = std::make_shared<LiveView>(registry);
  options->tick = [live] { live->Sample(absl::Now()); };
  h["/live.json"] = [live](const HttpRequest&) {
    return HttpResponse{200, "application/json", live->Json()};
  };
  h["/"] = [](const HttpRequest&) {
    // The browser itself refuses anything from elsewhere: scripts and
    // styles only inline, fetches only from this server, no images, frames
    // or forms.
    return HttpResponse{200,
                        "text/html; charset=utf-8",
                        LivePageHtml(),
                        {{"Content-Security-Policy", kLivePagePolicy},
                         {"X-Content-Type-Options", "nosniff"}}};
  };
  return h;
}

}  // namespace meshlib::admin
