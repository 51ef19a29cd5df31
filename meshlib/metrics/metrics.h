// Metrics that cost little on the call path: counters and histograms whose
// updates go to one of several cache-line-sized shards picked by the
// updating thread (no lock, and no cache line bounced between threads that
// update the same metric), summed only when read.
//
//   metrics::Registry registry;
//   metrics::CounterFamily& requests = registry.AddCounter(
//       "meshlib_client_requests_total", "Calls as the application saw them.",
//       {"service", "method", "code"});
//   metrics::Counter& ok = requests.With({"echo", "Echo/Say", "OK"});   // cache it
//   ok.Add();                                                            // the hot path
//   std::string text = registry.Prometheus();                            // a scrape
//
// Families and label sets are made once (a lock, an allocation); callers
// keep the returned references, which live as long as the registry.
// Values computed at scrape time (gauges from live state) come from
// collectors (Registry::AddCollector).
//
// Threading: everything is thread-safe.
#ifndef MESHLIB_METRICS_METRICS_H_
#define MESHLIB_METRICS_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace meshlib::metrics {

namespace internal {
// Shards per metric. A power of two.
inline constexpr int kShards = 8;
// The shard of the calling thread: threads take shards round-robin.
int ThreadShard();
}  // namespace internal

// A count that only goes up.
class Counter {
 public:
  void Add(int64_t n = 1) {
    shards_[internal::ThreadShard()].value.fetch_add(n, std::memory_order_relaxed);
  }
  int64_t Value() const;

 private:
  struct alignas(64) Shard {
    std::atomic<int64_t> value{0};
  };
  std::array<Shard, internal::kShards> shards_;
};

// A value that goes up and down (in flight, connections open).
class Gauge {
 public:
  void Add(int64_t n) { value_.fetch_add(n, std::memory_order_relaxed); }
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  int64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Latencies (or any durations) in fixed buckets, in seconds when exposed.
// The bounds (upper, inclusive) are kLatencyBounds: 100 µs to 10 s.
class Histogram {
 public:
  static constexpr int kBuckets = 16;  // finite bounds; +Inf is one more
  static const std::array<absl::Duration, kBuckets>& Bounds();

  void Observe(absl::Duration d);

  struct Snapshot {
    std::array<int64_t, kBuckets + 1> counts{};  // per bucket, not cumulative; [kBuckets] = +Inf
    int64_t count = 0;
    double sum_seconds = 0;
    // The value under which a fraction `q` (0..1) of observations fall,
    // interpolated within its bucket; 0 when empty.
    double Quantile(double q) const;
  };
  Snapshot Read() const;

 private:
  struct alignas(64) Shard {
    std::array<std::atomic<int64_t>, kBuckets + 1> counts{};
    std::atomic<int64_t> sum_ns{0};
  };
  std::array<Shard, internal::kShards> shards_;
};

enum class Type { kCounter, kGauge, kHistogram };

// One metric name with its label names; its members are label sets.
template <typename Metric>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names)
      : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}

  // The metric for these label values (as many as the label names; extra
  // ones are dropped, missing ones are ""). Made at first use; the same one
  // after. Lives as long as the family.
  Metric& With(const std::vector<std::string>& values) {
    std::vector<std::string> key = values;
    key.resize(label_names_.size());
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) return *it->second;
    members_.emplace_back();
    index_.emplace(std::move(key), &members_.back());
    return members_.back();
  }

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Calls fn(label_values, metric) for each member, in label order.
  void ForEach(const std::function<void(const std::vector<std::string>&, const Metric&)>& fn)
      const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, metric] : index_) fn(key, *metric);
  }

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  mutable std::mutex mu_;
  std::deque<Metric> members_;  // stable addresses
  std::map<std::vector<std::string>, Metric*> index_;
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// One sample a collector reports at scrape time.
struct Sample {
  std::string name;  // the family
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;
};

// What a collector declares: a family whose samples it computes.
struct CollectedFamily {
  std::string name;
  std::string help;
  Type type = Type::kGauge;
};

// One labelled member of a family as read at one moment.
struct Point {
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;               // counters and gauges
  Histogram::Snapshot histogram;  // histograms
};

// A family as read at one moment: every member, collectors' samples included.
struct FamilySnapshot {
  std::string help;
  Type type = Type::kGauge;
  std::vector<Point> points;
};

// Every family of a process (or of a Mesh, a Server), and the exposition.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // A family by name: made at the first call, the same one after (the help
  // and label names of the first call win).
  CounterFamily& AddCounter(const std::string& name, const std::string& help,
                            std::vector<std::string> label_names);
  GaugeFamily& AddGauge(const std::string& name, const std::string& help,
                        std::vector<std::string> label_names);
  HistogramFamily& AddHistogram(const std::string& name, const std::string& help,
                                std::vector<std::string> label_names);

  // `collect` adds samples of `families` at each scrape (gauges read from
  // live state: endpoints ejected, connections open). The returned id
  // removes it.
  int AddCollector(std::vector<CollectedFamily> families,
                   std::function<void(std::vector<Sample>*)> collect);
  void RemoveCollector(int id);

  // Every family with its members, by name: what the expositions print and
  // what the live page samples. Collectors run outside the registry's lock.
  std::map<std::string, FamilySnapshot> Snapshot() const;
  // The Prometheus text exposition format, version 0.0.4.
  std::string Prometheus() const;
  // The same state as JSON: {"<family>": {"type": ..., "help": ...,
  // "samples": [{"labels": {...}, "value": V} or, for histograms,
  // {"labels": {...}, "count": N, "sum": S, "p50": .., "p90": .., "p99": ..,
  // "buckets": [[le, cumulative], ...]}]}}.
  std::string Json() const;

 private:
  struct Collector {
    std::vector<CollectedFamily> families;
    std::function<void(std::vector<Sample>*)> collect;
  };

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<CounterFamily>> counters_;
  std::map<std::string, std::unique_ptr<GaugeFamily>> gauges_;
  std::map<std::string, std::unique_ptr<HistogramFamily>> histograms_;
  std::map<int, Collector> collectors_;
  int next_collector_ = 1;
};

// The process's registry: what echo_server, meshcall, Mesh and Server
// record into unless told otherwise.
Registry& DefaultRegistry();

// The exposition's escaping of a label value (backslash, quote, newline).
std::string EscapeLabelValue(const std::string& v);

}  // namespace meshlib::metrics

#endif  // MESHLIB_METRICS_METRICS_H_
