#include "meshlib/metrics/metrics.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "meshlib/core/fast_time.h"
#include "nlohmann/json.hpp"

namespace meshlib::metrics {

namespace internal {

namespace {
std::atomic<int> next_shard{0};
thread_local int thread_shard = -1;
}  // namespace

int ThreadShard() {
  if (thread_shard < 0) {
    thread_shard = next_shard.fetch_add(1, std::memory_order_relaxed) & (kShards - 1);
  }
  return thread_shard;
}

}  // namespace internal

int64_t Counter::Value() const {
  int64_t sum = 0;
  for (const Shard& s : shards_) sum += s.value.load(std::memory_order_relaxed);
  return sum;
}

const std::array<absl::Duration, Histogram::kBuckets>& Histogram::Bounds() {
  static const std::array<absl::Duration, kBuckets> bounds = {
      absl::Microseconds(100), absl::Microseconds(250), absl::Microseconds(500),
      absl::Milliseconds(1),   absl::Microseconds(2500), absl::Milliseconds(5),
      absl::Milliseconds(10),  absl::Milliseconds(25),  absl::Milliseconds(50),
      absl::Milliseconds(100), absl::Milliseconds(250), absl::Milliseconds(500),
      absl::Seconds(1),        absl::Milliseconds(2500), absl::Seconds(5),
      absl::Seconds(10)};
  return bounds;
}

namespace {
// Histogram::Bounds() in nanoseconds, for Observe (no guard, no conversion).
constexpr std::array<int64_t, Histogram::kBuckets> kBoundsNs = {
    100'000,       250'000,       500'000,       1'000'000,     2'500'000,     5'000'000,
    10'000'000,    25'000'000,    50'000'000,    100'000'000,   250'000'000,   500'000'000,
    1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};
}  // namespace

void Histogram::Observe(absl::Duration d) {
  int64_t ns = core::NanosOf(d);
  if (ns < 0) ns = 0;
  const int bucket = static_cast<int>(
      std::lower_bound(kBoundsNs.begin(), kBoundsNs.end(), ns) - kBoundsNs.begin());
  Shard& s = shards_[internal::ThreadShard()];
  s.counts[bucket].fetch_add(1, std::memory_order_relaxed);
  s.sum_ns.fetch_add(ns, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot out;
  int64_t sum_ns = 0;
  for (const Shard& s : shards_) {
    for (int i = 0; i <= kBuckets; ++i) out.counts[i] += s.counts[i].load(std::memory_order_relaxed);
    sum_ns += s.sum_ns.load(std::memory_order_relaxed);
  }
  for (int64_t c : out.counts) out.count += c;
  out.sum_seconds = static_cast<double>(sum_ns) / 1e9;
  return out;
}

double Histogram::Snapshot::Quantile(double q) const {
  if (count == 0) return 0;
  const double rank = std::clamp(q, 0.0, 1.0) * static_cast<double>(count);
  double below = 0;
  for (int i = 0; i <= kBuckets; ++i) {
    if (counts[i] == 0) continue;
    if (below + static_cast<double>(counts[i]) >= rank) {
      const double lo = i == 0 ? 0 : absl::ToDoubleSeconds(Bounds()[i - 1]);
      // Past the last bound: the last bound is the best we can say.
      if (i == kBuckets) return absl::ToDoubleSeconds(Bounds()[kBuckets - 1]);
      const double hi = absl::ToDoubleSeconds(Bounds()[i]);
      return lo + (hi - lo) * ((rank - below) / static_cast<double>(counts[i]));
    }
    below += static_cast<double>(counts[i]);
  }
  return absl::ToDoubleSeconds(Bounds()[kBuckets - 1]);
}

namespace {

template <typename Map, typename F>
auto& AddFamily(std::mutex& mu, Map& map, const std::string& name, const std::string& help,
                std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = map[name];
  if (slot == nullptr) slot = std::make_unique<F>(name, help, std::move(label_names));
  return *slot;
}

std::string FormatDouble(double v) { return absl::StrFormat("%.17g", v); }

std::string FormatBound(absl::Duration d) {
  return absl::StrFormat("%g", absl::ToDoubleSeconds(d));
}

// {a="x",b="y"} (with `extra` appended), or "" with no labels.
std::string LabelText(const std::vector<std::pair<std::string, std::string>>& labels,
                      const std::pair<std::string, std::string>* extra = nullptr) {
  std::string out;
  for (const auto& [name, value] : labels) {
    absl::StrAppend(&out, out.empty() ? "{" : ",", name, "=\"", EscapeLabelValue(value), "\"");
  }
  if (extra != nullptr) {
    absl::StrAppend(&out, out.empty() ? "{" : ",", extra->first, "=\"",
                    EscapeLabelValue(extra->second), "\"");
  }
  if (!out.empty()) out += "}";
  return out;
}

const char* TypeName(Type t) {
  switch (t) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

CounterFamily& Registry::AddCounter(const std::string& name, const std::string& help,
                                    std::vector<std::string> label_names) {
  return AddFamily<decltype(counters_), CounterFamily>(mu_, counters_, name, help,
                                                       std::move(label_names));
}

GaugeFamily& Registry::AddGauge(const std::string& name, const std::string& help,
                                std::vector<std::string> label_names) {
  return AddFamily<decltype(gauges_), GaugeFamily>(mu_, gauges_, name, help,
                                                   std::move(label_names));
}

HistogramFamily& Registry::AddHistogram(const std::string& name, const std::string& help,
                                        std::vector<std::string> label_names) {
  return AddFamily<decltype(histograms_), HistogramFamily>(mu_, histograms_, name, help,
                                                           std::move(label_names));
}

int Registry::AddCollector(std::vector<CollectedFamily> families,
                           std::function<void(std::vector<Sample>*)> collect) {
  std::lock_guard<std::mutex> lock(mu_);
  int id = next_collector_++;
  collectors_[id] = Collector{std::move(families), std::move(collect)};
  return id;
}

void Registry::RemoveCollector(int id) {
  std::function<void(std::vector<Sample>*)> dropped;  // destroyed outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  auto it = collectors_.find(id);
  if (it == collectors_.end()) return;
  dropped = std::move(it->second.collect);
  collectors_.erase(it);
}

std::map<std::string, FamilySnapshot> Registry::Snapshot() const {
  std::map<std::string, FamilySnapshot> out;
  auto labels_of = [](const std::vector<std::string>& names,
                      const std::vector<std::string>& values) {
    std::vector<std::pair<std::string, std::string>> labels;
    labels.reserve(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      labels.emplace_back(names[i], i < values.size() ? values[i] : "");
    }
    return labels;
  };
  std::vector<Collector> collectors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, family] : counters_) {
      FamilySnapshot& f = out[name];
      f.help = family->help();
      f.type = Type::kCounter;
      family->ForEach([&](const std::vector<std::string>& values, const Counter& c) {
        f.points.push_back({labels_of(family->label_names(), values),
                            static_cast<double>(c.Value()), {}});
      });
    }
    for (const auto& [name, family] : gauges_) {
      FamilySnapshot& f = out[name];
      f.help = family->help();
      f.type = Type::kGauge;
      family->ForEach([&](const std::vector<std::string>& values, const Gauge& g) {
        f.points.push_back({labels_of(family->label_names(), values),
                            static_cast<double>(g.Value()), {}});
      });
    }
    for (const auto& [name, family] : histograms_) {
      FamilySnapshot& f = out[name];
      f.help = family->help();
      f.type = Type::kHistogram;
      family->ForEach([&](const std::vector<std::string>& values, const Histogram& h) {
        f.points.push_back({labels_of(family->label_names(), values), 0, h.Read()});
      });
    }
    for (const auto& [id, c] : collectors_) collectors.push_back(c);
  }
  // Collectors run outside the lock: they read live state that may take
  // locks of its own.
  for (const Collector& c : collectors) {
    for (const CollectedFamily& cf : c.families) {
      auto [it, inserted] = out.try_emplace(cf.name);
      if (inserted) {
        it->second.help = cf.help;
        it->second.type = cf.type;
      }
    }
    std::vector<Sample> samples;
    c.collect(&samples);
    for (Sample& s : samples) {
      out[s.name].points.push_back({std::move(s.labels), s.value, {}});
    }
  }
  return out;
}

std::string Registry::Prometheus() const {
  std::string out;
  for (const auto& [name, f] : Snapshot()) {
    if (f.points.empty()) continue;
    std::string help;
    for (char c : f.help) {
      if (c == '\\') {
        help += "\\\\";
      } else if (c == '\n') {
        help += "\\n";
      } else {
        help += c;
      }
    }
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", TypeName(f.type),
                    "\n");
    for (const Point& p : f.points) {
      if (f.type != Type::kHistogram) {
        absl::StrAppend(&out, name, LabelText(p.labels), " ", FormatDouble(p.value), "\n");
        continue;
      }
      const Histogram::Snapshot& s = p.histogram;
      int64_t cumulative = 0;
      for (int i = 0; i <= Histogram::kBuckets; ++i) {
        cumulative += s.counts[i];
        std::pair<std::string, std::string> le = {
            "le", i == Histogram::kBuckets ? "+Inf" : FormatBound(Histogram::Bounds()[i])};
        absl::StrAppend(&out, name, "_bucket", LabelText(p.labels, &le), " ", cumulative, "\n");
      }
      const std::string labels = LabelText(p.labels);
      absl::StrAppend(&out, name, "_sum", labels, " ", FormatDouble(s.sum_seconds), "\n");
      absl::StrAppend(&out, name, "_count", labels, " ", s.count, "\n");
    }
  }
  return out;
}

std::string Registry::Json() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, f] : Snapshot()) {
    nlohmann::json& j = out[name];
    j["type"] = TypeName(f.type);
    j["help"] = f.help;
    j["samples"] = nlohmann::json::array();
    for (const Point& p : f.points) {
      nlohmann::json labels = nlohmann::json::object();
      for (const auto& [k, v] : p.labels) labels[k] = v;
      if (f.type != Type::kHistogram) {
        j["samples"].push_back({{"labels", std::move(labels)}, {"value", p.value}});
        continue;
      }
      const Histogram::Snapshot& s = p.histogram;
      nlohmann::json buckets = nlohmann::json::array();
      int64_t cumulative = 0;
      for (int i = 0; i < Histogram::kBuckets; ++i) {
        cumulative += s.counts[i];
        buckets.push_back({absl::ToDoubleSeconds(Histogram::Bounds()[i]), cumulative});
      }
      j["samples"].push_back({{"labels", std::move(labels)},
                              {"count", s.count},
                              {"sum", s.sum_seconds},
                              {"p50", s.Quantile(0.5)},
                              {"p90", s.Quantile(0.9)},
                              {"p99", s.Quantile(0.99)},
                              {"buckets", std::move(buckets)}});
    }
  }
  return out.dump();
}

Registry& DefaultRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

}  // namespace meshlib::metrics
