#include "meshlib/lb/weighted_round_robin/weighted_round_robin.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <vector>

#include "meshlib/core/json_fields.h"
#include "meshlib/lb/internal/weights.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMinScheduleCap = 1 << 16;
constexpr uint64_t kScheduleSlotsPerEndpoint = 64;

class WeightedRoundRobinPicker final : public Picker {
 public:
  WeightedRoundRobinPicker(std::vector<int> schedule, uint64_t start)
      : schedule_(std::move(schedule)), next_(start) {}
  int Pick(const PickArgs&) const override {
    if (schedule_.empty()) return kNoEndpoint;
    uint64_t n = next_.fetch_add(1, std::memory_order_relaxed);
    return schedule_[n % schedule_.size()];
  }

 private:
  const std::vector<int> schedule_;
  // Its own cache line: every pick writes it, and schedule_ is read-only.
  alignas(64) mutable std::atomic<uint64_t> next_;
};

// One period of the earliest-deadline-first order for `weights` (> 0):
// entries are positions in `weights`.
std::vector<uint32_t> Schedule(std::vector<uint64_t> weights) {
  const size_t n = weights.size();
  uint64_t g = 0;
  for (uint64_t w : weights) g = std::gcd(g, w);
  uint64_t total = 0;
  for (uint64_t& w : weights) total += (w /= g);
  const uint64_t cap = std::max<uint64_t>(kMinScheduleCap, kScheduleSlotsPerEndpoint * n);
  if (total > cap) {
    const double scale = static_cast<double>(cap) / static_cast<double>(total);
    total = 0;
    for (uint64_t& w : weights) {
      w = std::max<uint64_t>(1, std::llround(static_cast<double>(w) * scale));
      total += w;
    }
  }
  // Turn k of endpoint i is due at (2k + 1) / (2 w_i), in (0, 1). Sorting
  // all `total` turns by due time is a bucket sort (bucket = floor(due x
  // total), about one turn each) and then an exact sort inside each bucket
  // (cross-multiplied, < 2 x total^2, far below 2^64), ties by position.
  auto bucket = [&](uint32_t i, uint64_t k) { return (2 * k + 1) * total / (2 * weights[i]); };
  std::vector<uint32_t> first(total + 1, 0);
  for (uint32_t i = 0; i < n; ++i) {
    for (uint64_t k = 0; k < weights[i]; ++k) ++first[bucket(i, k) + 1];
  }
  for (uint64_t b = 0; b < total; ++b) first[b + 1] += first[b];
  struct Turn {
    uint32_t who;
    uint32_t k;
  };
  std::vector<Turn> turns(total);
  std::vector<uint32_t> fill(first.begin(), first.end() - 1);
  for (uint32_t i = 0; i < n; ++i) {
    for (uint64_t k = 0; k < weights[i]; ++k) {
      turns[fill[bucket(i, k)]++] = Turn{i, static_cast<uint32_t>(k)};
    }
  }
  auto due_before = [&](const Turn& a, const Turn& b) {
    uint64_t lhs = (2 * uint64_t{a.k} + 1) * weights[b.who];
    uint64_t rhs = (2 * uint64_t{b.k} + 1) * weights[a.who];
    return lhs != rhs ? lhs < rhs : a.who < b.who;
  };
  for (uint64_t b = 0; b < total; ++b) {
    if (first[b + 1] - first[b] > 1) {
      std::sort(turns.begin() + first[b], turns.begin() + first[b + 1], due_before);
    }
  }
  std::vector<uint32_t> out;
  out.reserve(total);
  for (const Turn& t : turns) out.push_back(t.who);
  return out;
}

class WeightedRoundRobin final : public Policy {
 public:
  std::string name() const override { return "weighted_round_robin"; }
  std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) override {
    lb_internal::Usable u = lb_internal::SelectUsable(endpoints);
    std::vector<int> schedule;
    if (u.equal_weights) {
      schedule = std::move(u.indices);  // plain round robin
    } else {
      std::vector<uint64_t> w(u.weights.begin(), u.weights.end());
      for (uint32_t pos : Schedule(std::move(w))) schedule.push_back(u.indices[pos]);
    }
    return std::make_unique<WeightedRoundRobinPicker>(std::move(schedule),
                                                      ThreadRandom().Next());
  }
};

class WeightedRoundRobinFactory final : public PolicyFactory {
 public:
  std::string name() const override { return "weighted_round_robin"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    return core::CheckObject(config, path, {});
  }
  absl::StatusOr<std::unique_ptr<Policy>> Create(const json& config, absl::string_view path,
                                                 const PolicyContext&) const override {
    if (auto st = Validate(config, path); !st.ok()) return st;
    return std::make_unique<WeightedRoundRobin>();
  }
};

}  // namespace

std::unique_ptr<PolicyFactory> MakeWeightedRoundRobinFactory() {
  return std::make_unique<WeightedRoundRobinFactory>();
}

}  // namespace meshlib::lb
