#include "meshlib/lb/p2c_peak_ewma/p2c_peak_ewma.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/lb/internal/weights.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

struct P2cConfig {
  absl::Duration decay = absl::Seconds(10);
  absl::Duration default_rtt = absl::Milliseconds(30);
  absl::Duration failure_penalty = absl::Seconds(1);
};

struct Entry {
  int index;                   // into the Build() vector
  const EndpointStats* stats;  // null: no signal (costs default_rtt)
};

// The cost of one more call on an endpoint, as of time `stamp_ns`:
// cost(now) = base x exp(-(now - stamp_ns) / decay_ns), or just `base` when
// stamp_ns is 0 (nothing that decays).
struct Cost {
  double base;
  int64_t stamp_ns;
  double decay_ns;
};

// exp(x), with a short series where |x| is tiny: two endpoints that both
// served calls in the last few ms differ by |x| ~ 1e-4 at a 10s decay, and
// the series is then exact to ~1e-14 at a fraction of the cost.
double Exp(double x) {
  if (x > -0x1.0p-10 && x < 0x1.0p-10) return 1 + x * (1 + x * (0.5 + x * (1.0 / 6)));
  return std::exp(std::clamp(x, -700.0, 700.0));  // 0 x inf would be NaN
}

class P2cPeakEwmaPicker final : public Picker {
 public:
  P2cPeakEwmaPicker(std::vector<Entry> entries, std::vector<std::shared_ptr<EndpointStats>> keep,
                    std::optional<lb_internal::AliasTable> table, runtime::Clock* clock,
                    absl::Duration default_rtt)
      : entries_(std::move(entries)),
        keep_(std::move(keep)),
        table_(std::move(table)),
        clock_(clock),
        default_rtt_ns_(absl::ToDoubleNanoseconds(default_rtt)) {}

  int Pick(const PickArgs&) const override {
    const uint32_t n = static_cast<uint32_t>(entries_.size());
    if (n == 0) return kNoEndpoint;
    if (n == 1) return entries_[0].index;
    FastRandom& r = ThreadRandom();
    uint32_t a, b;
    if (table_) {
      a = table_->Sample(r);
      b = table_->Sample(r);
      for (int redraw = 0; redraw < 2 && b == a; ++redraw) b = table_->Sample(r);
      if (b == a) return entries_[a].index;
    } else {
      std::tie(a, b) = lb_internal::DistinctPair(r, n);
    }
    return Cheaper(CostOf(entries_[b]), CostOf(entries_[a])) ? entries_[b].index
                                                             : entries_[a].index;
  }

 private:
  Cost CostOf(const Entry& e) const {
    if (e.stats == nullptr) return Cost{default_rtt_ns_, 0, 0};
    double pending = static_cast<double>(std::max<int64_t>(0, e.stats->in_flight()));
    if (e.stats->calls() == 0) {
      // Never answered: probe it first; while probes are out, assume
      // default_rtt (see the header).
      return Cost{pending == 0 ? 0.0 : default_rtt_ns_ * (pending + 1), 0, 0};
    }
    // Finagle: latency x (outstanding + 1).
    return Cost{e.stats->ewma_nanos() * (pending + 1), e.stats->last_update_unix_nanos(),
                e.stats->decay_nanos()};
  }

  // x(now) < y(now). When both decay alike, now cancels out of the ratio
  // x(now) / y(now) = (x.base / y.base) x exp((x.stamp - y.stamp) / decay),
  // so the usual case needs one exp and no clock. (The same as comparing
  // PeakEwmaNanos(now) x (in_flight + 1) but for PeakEwmaNanos's clamping
  // of a stamp later than `now`, which only a race can produce.)
  bool Cheaper(const Cost& x, const Cost& y) const {
    if (x.base == 0 || y.base == 0) return x.base < y.base;  // decay cannot change that
    if (x.stamp_ns != 0 && y.stamp_ns != 0 && x.decay_ns == y.decay_ns) {
      return x.base * Exp(static_cast<double>(x.stamp_ns - y.stamp_ns) / x.decay_ns) < y.base;
    }
    int64_t now = absl::ToUnixNanos(clock_->Now());
    return AsOf(x, now) < AsOf(y, now);
  }

  static double AsOf(const Cost& c, int64_t now_ns) {
    if (c.stamp_ns == 0) return c.base;
    double elapsed = static_cast<double>(std::max<int64_t>(0, now_ns - c.stamp_ns));
    return c.base * std::exp(-elapsed / c.decay_ns);
  }

  const std::vector<Entry> entries_;
  const std::vector<std::shared_ptr<EndpointStats>> keep_;  // owns what entries_ point to
  const std::optional<lb_internal::AliasTable> table_;     // set iff weights differ
  runtime::Clock* const clock_;                              // when costs do not share a decay
  const double default_rtt_ns_;
};

class P2cPeakEwma final : public Policy {
 public:
  P2cPeakEwma(P2cConfig config, runtime::Clock* clock) : config_(config), clock_(clock) {}
  std::string name() const override { return "p2c_peak_ewma"; }
  std::string Describe() const override {
    return absl::StrCat("p2c_peak_ewma(decay=", absl::FormatDuration(config_.decay),
                        ", default_rtt=", absl::FormatDuration(config_.default_rtt),
                        ", failure_penalty=", absl::FormatDuration(config_.failure_penalty), ")");
  }
  EndpointStatsOptions StatsOptions() const override {
    EndpointStatsOptions o;
    o.decay = config_.decay;
    o.initial = config_.default_rtt;
    o.failure_penalty = config_.failure_penalty;
    return o;
  }
  std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) override {
    for (const LbEndpoint& e : endpoints) {
      if (e.stats != nullptr) e.stats->set_failure_penalty(config_.failure_penalty);
    }
    lb_internal::Usable u = lb_internal::SelectUsable(endpoints);
    std::vector<Entry> entries;
    std::vector<std::shared_ptr<EndpointStats>> keep;
    for (int i : u.indices) {
      entries.push_back({i, endpoints[i].stats.get()});
      keep.push_back(endpoints[i].stats);
    }
    std::optional<lb_internal::AliasTable> table;
    if (!u.equal_weights) table.emplace(u.weights);
    return std::make_unique<P2cPeakEwmaPicker>(std::move(entries), std::move(keep),
                                               std::move(table), clock_, config_.default_rtt);
  }

 private:
  const P2cConfig config_;
  runtime::Clock* const clock_;
};

absl::Status ParseConfig(const json& config, absl::string_view path, P2cConfig* out) {
  if (auto st = core::CheckObject(config, path, {"decay", "default_rtt", "failure_penalty"});
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(config, path, "decay", absl::Milliseconds(1),
                                         absl::Hours(1), &out->decay);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDuration(config, path, "default_rtt", absl::Microseconds(1),
                                         absl::Minutes(1), &out->default_rtt);
      !st.ok()) {
    return st;
  }
  return core::OptionalDuration(config, path, "failure_penalty", absl::ZeroDuration(),
                                  absl::Hours(1), &out->failure_penalty);
}

class P2cPeakEwmaFactory final : public PolicyFactory {
 public:
  std::string name() const override { return "p2c_peak_ewma"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    P2cConfig c;
    return ParseConfig(config, path, &c);
  }
  absl::StatusOr<std::unique_ptr<Policy>> Create(const json& config, absl::string_view path,
                                                 const PolicyContext& ctx) const override {
    P2cConfig c;
    if (auto st = ParseConfig(config, path, &c); !st.ok()) return st;
    runtime::Clock* clock = ctx.clock != nullptr ? ctx.clock : &runtime::RealClock();
    return std::make_unique<P2cPeakEwma>(c, clock);
  }
};

}  // namespace

std::unique_ptr<PolicyFactory> MakeP2cPeakEwmaFactory() {
  return std::make_unique<P2cPeakEwmaFactory>();
}

}  // namespace meshlib::lb
