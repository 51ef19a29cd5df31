#include "meshlib/metrics/metrics.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
  int64_t ns = absl::ToInt64Nanoseconds(d);
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
std::string LabelText(const std::vector<std::string>& names,
                      const std::vector<std::string>& values,
                      const std::pair<std::string, std::string>* extra = nullptr) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, out.empty() ? "{" : ",", names[i], "=\"",
                    EscapeLabelValue(i < values.size() ? values[i] : ""), "\"");
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

// The exposition of one family: its header, then its lines.
struct Block {
  std::string help;
  Type type = Type::kGauge;
  std::string lines;
};

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

std::string Registry::Prometheus() const {
  std::map<std::string, Block> blocks;
  std::vector<Collector> collectors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, family] : counters_) {
      Block& b = blocks[name];
      b.help = family->help();
      b.type = Type::kCounter;
      family->ForEach([&](const std::vector<std::string>& values, const Counter& c) {
        absl::StrAppend(&b.lines, name, LabelText(family->label_names(), values), " ",
                        c.Value(), "\n");
      });
    }
    for (const auto& [name, family] : gauges_) {
      Block& b = blocks[name];
      b.help = family->help();
      b.type = Type::kGauge;
      family->ForEach([&](const std::vector<std::string>& values, const Gauge& g) {
        absl::StrAppend(&b.lines, name, LabelText(family->label_names(), values), " ",
                        g.Value(), "\n");
      });
    }
    for (const auto& [name, family] : histograms_) {
      Block& b = blocks[name];
      b.help = family->help();
      b.type = Type::kHistogram;
      family->ForEach([&](const std::vector<std::string>& values, const Histogram& h) {
        const Histogram::Snapshot s = h.Read();
        int64_t cumulative = 0;
        for (int i = 0; i <= Histogram::kBuckets; ++i) {
          cumulative += s.counts[i];
          std::pair<std::string, std::string> le = {
              "le", i == Histogram::kBuckets ? "+Inf" : FormatBound(Histogram::Bounds()[i])};
          absl::StrAppend(&b.lines, name, "_bucket", LabelText(family->label_names(), values, &le),
                          " ", cumulative, "\n");
        }
        const std::string labels = LabelText(family->label_names(), values);
        absl::StrAppend(&b.lines, name, "_sum", labels, " ", FormatDouble(s.sum_seconds), "\n");
        absl::StrAppend(&b.lines, name, "_count", labels, " ", s.count, "\n");
      });
    }
    for (const auto& [id, c] : collectors_) collectors.push_back(c);
  }
  // Collectors run outside the lock: they read live state that may take
  // locks of its own.
  for (const Collector& c : collectors) {
    for (const CollectedFamily& f : c.families) {
      Block& b = blocks[f.name];
      if (b.help.empty()) {
        b.help = f.help;
        b.type = f.type;
      }
    }
    std::vector<Sample> samples;
    c.collect(&samples);
    for (const Sample& s : samples) {
      std::vector<std::string> names, values;
      for (const auto& [k, v] : s.labels) {
        names.push_back(k);
        values.push_back(v);
      }
      absl::StrAppend(&blocks[s.name].lines, s.name, LabelText(names, values), " ",
                      FormatDouble(s.value), "\n");
    }
  }
  std::string out;
  for (const auto& [name, b] : blocks) {
    if (b.lines.empty()) continue;
    std::string help;
    for (char c : b.help) {
      if (c == '\\') {
        help += "\\\\";
      } else if (c == '\n') {
        help += "\\n";
      } else {
        help += c;
      }
    }
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", TypeName(b.type),
                    "\n", b.lines);
  }
  return out;
}

std::string Registry::Json() const {
  nlohmann::json out = nlohmann::json::object();
  std::vector<Collector> collectors;
  auto labels_of = [](const std::vector<std::string>& names,
                      const std::vector<std::string>& values) {
    nlohmann::json l = nlohmann::json::object();
    for (size_t i = 0; i < names.size(); ++i) l[names[i]] = i < values.size() ? values[i] : "";
    return l;
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, family] : counters_) {
      nlohmann::json& f = out[name];
      f["type"] = "counter";
      f["help"] = family->help();
      f["samples"] = nlohmann::json::array();
      family->ForEach([&](const std::vector<std::string>& values, const Counter& c) {
        f["samples"].push_back(
            {{"labels", labels_of(family->label_names(), values)}, {"value", c.Value()}});
      });
    }
    for (const auto& [name, family] : gauges_) {
      nlohmann::json& f = out[name];
      f["type"] = "gauge";
      f["help"] = family->help();
      f["samples"] = nlohmann::json::array();
      family->ForEach([&](const std::vector<std::string>& values, const Gauge& g) {
        f["samples"].push_back(
            {{"labels", labels_of(family->label_names(), values)}, {"value", g.Value()}});
      });
    }
    for (const auto& [name, family] : histograms_) {
      nlohmann::json& f = out[name];
      f["type"] = "histogram";
      f["help"] = family->help();
      f["samples"] = nlohmann::json::array();
      family->ForEach([&](const std::vector<std::string>& values, const Histogram& h) {
        const Histogram::Snapshot s = h.Read();
        nlohmann::json buckets = nlohmann::json::array();
        int64_t cumulative = 0;
        for (int i = 0; i < Histogram::kBuckets; ++i) {
          cumulative += s.counts[i];
          buckets.push_back({absl::ToDoubleSeconds(Histogram::Bounds()[i]), cumulative});
        }
        f["samples"].push_back({{"labels", labels_of(family->label_names(), values)},
                                {"count", s.count},
                                {"sum", s.sum_seconds},
                                {"p50", s.Quantile(0.5)},
                                {"p90", s.Quantile(0.9)},
                                {"p99", s.Quantile(0.99)},
                                {"buckets", std::move(buckets)}});
      });
    }
    for (const auto& [id, c] : collectors_) collectors.push_back(c);
  }
  for (const Collector& c : collectors) {
    for (const CollectedFamily& f : c.families) {
      nlohmann::json& j = out[f.name];
      if (!j.contains("type")) {
        j["type"] = TypeName(f.type);
        j["help"] = f.help;
        j["samples"] = nlohmann::json::array();
      }
    }
    std::vector<Sample> samples;
    c.collect(&samples);
    for (const Sample& s : samples) {
      nlohmann::json l = nlohmann::json::object();
      for (const auto& [k, v] : s.labels) l[k] = v;
      out[s.name]["samples"].push_back({{"labels", std::move(l)}, {"value", s.value}});
    }
  }
  return out.dump();
}

Registry& DefaultRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

}  // namespace meshlib::metrics
