#include "meshlib/lb/least_request/least_request.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/lb/internal/weights.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

constexpr int kMaxChoices = 10;

struct LeastRequestConfig {
  int choice_count = 2;
  double active_request_bias = 1.0;
};

struct Entry {
  int index;                   // into the Build() vector
  const EndpointStats* stats;  // null: no signal (counts as idle)
};

int64_t InFlight(const Entry& e) {
  return e.stats == nullptr ? 0 : std::max<int64_t>(0, e.stats->in_flight());
}

class LeastRequestPicker final : public Picker {
 public:
  LeastRequestPicker(std::vector<Entry> entries, std::vector<std::shared_ptr<EndpointStats>> keep,
                     std::optional<lb_internal::AliasTable> table, LeastRequestConfig config)
      : entries_(std::move(entries)),
        keep_(std::move(keep)),
        table_(std::move(table)),
        config_(config) {}

  int Pick(const PickArgs&) const override {
    const uint32_t n = static_cast<uint32_t>(entries_.size());
    if (n == 0) return kNoEndpoint;
    if (n == 1) return entries_[0].index;
    FastRandom& r = ThreadRandom();
    return table_ ? PickWeighted(r) : PickEqual(r, n);
  }

 private:
  int PickEqual(FastRandom& r, uint32_t n) const {
    const uint32_t c = static_cast<uint32_t>(config_.choice_count);
    if (n <= c) {  // compare them all, from a random start so ties spread
      uint32_t start = r.Below(n);
      uint32_t best = start;
      int64_t best_load = InFlight(entries_[start]);
      for (uint32_t k = 1; k < n; ++k) {
        uint32_t i = start + k < n ? start + k : start + k - n;
        int64_t load = InFlight(entries_[i]);
        if (load < best_load) best = i, best_load = load;
      }
      return entries_[best].index;
    }
    auto [a, b] = lb_internal::DistinctPair(r, n);
    int64_t load_a = InFlight(entries_[a]), load_b = InFlight(entries_[b]);
    uint32_t best = load_b < load_a ? b : a;
    int64_t best_load = std::min(load_a, load_b);
    if (c > 2) {
      uint32_t seen[kMaxChoices] = {a, b};
      for (uint32_t k = 2; k < c; ++k) {
        uint32_t i;
        bool fresh;
        do {  // n > c, so a fresh one turns up quickly
          i = r.Below(n);
          fresh = std::find(seen, seen + k, i) == seen + k;
        } while (!fresh);
        seen[k] = i;
        int64_t load = InFlight(entries_[i]);
        if (load < best_load) best = i, best_load = load;
      }
    }
    return entries_[best].index;
  }

  int PickWeighted(FastRandom& r) const {
    const int c = config_.choice_count;
    uint32_t cand[kMaxChoices];
    for (int k = 0; k < c; ++k) cand[k] = table_->Sample(r);
    const double bias = config_.active_request_bias;
    if (bias == 0) return entries_[cand[0]].index;
    // Each candidate came in proportion to its weight; keep one in
    // proportion to (in_flight + 1)^-bias, so the product is Envoy's
    // effective weight.
    double keep[kMaxChoices];
    double sum = 0;
    for (int k = 0; k < c; ++k) {
      double load = static_cast<double>(InFlight(entries_[cand[k]]) + 1);
      keep[k] = bias == 1.0 ? 1.0 / load : std::pow(load, -bias);
      sum += keep[k];
    }
    double u = lb_internal::Uniform01(r) * sum;
    for (int k = 0; k < c - 1; ++k) {
      if (u < keep[k]) return entries_[cand[k]].index;
      u -= keep[k];
    }
    return entries_[cand[c - 1]].index;
  }

  const std::vector<Entry> entries_;
  const std::vector<std::shared_ptr<EndpointStats>> keep_;  // owns what entries_ point to
  const std::optional<lb_internal::AliasTable> table_;     // set iff weights differ
  const LeastRequestConfig config_;
};

class LeastRequest final : public Policy {
 public:
  explicit LeastRequest(LeastRequestConfig config) : config_(config) {}
  std::string name() const override { return "least_request"; }
  std::string Describe() const override {
    return absl::StrCat("least_request(choice_count=", config_.choice_count,
                        ", active_request_bias=", config_.active_request_bias, ")");
  }
  std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) override {
    lb_internal::Usable u = lb_internal::SelectUsable(endpoints);
    std::vector<Entry> entries;
    std::vector<std::shared_ptr<EndpointStats>> keep;
    for (int i : u.indices) {
      entries.push_back({i, endpoints[i].stats.get()});
      keep.push_back(endpoints[i].stats);
    }
    std::optional<lb_internal::AliasTable> table;
    if (!u.equal_weights) table.emplace(u.weights);
    return std::make_unique<LeastRequestPicker>(std::move(entries), std::move(keep),
                                                std::move(table), config_);
  }

 private:
  const LeastRequestConfig config_;
};

absl::Status ParseConfig(const json& config, absl::string_view path, LeastRequestConfig* out) {
  if (auto st = core::CheckObject(config, path, {"choice_count", "active_request_bias"});
      !st.ok()) {
    return st;
  }
  int64_t choices = out->choice_count;
  if (auto st = core::OptionalInt(config, path, "choice_count", 2, kMaxChoices, &choices);
      !st.ok()) {
    return st;
  }
  out->choice_count = static_cast<int>(choices);
  return core::OptionalDouble(config, path, "active_request_bias", 0.0, 100.0,
                                &out->active_request_bias);
}

class LeastRequestFactory final : public PolicyFactory {
 public:
  std::string name() const override { return "least_request"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    LeastRequestConfig c;
    return ParseConfig(config, path, &c);
  }
  absl::StatusOr<std::unique_ptr<Policy>> Create(const json& config, absl::string_view path,
                                                 const PolicyContext&) const override {
    LeastRequestConfig c;
    if (auto st = ParseConfig(config, path, &c); !st.ok()) return st;
    return std::make_unique<LeastRequest>(c);
  }
};

}  // namespace

std::unique_ptr<PolicyFactory> MakeLeastRequestFactory() {
  return std::make_unique<LeastRequestFactory>();
}

}  // namespace meshlib::lb
