#include "meshlib/lb/round_robin/round_robin.h"

#include <atomic>
#include <vector>

#include "meshlib/core/json_fields.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

class RoundRobinPicker final : public Picker {
 public:
  RoundRobinPicker(std::vector<int> indices, uint64_t start)
      : indices_(std::move(indices)), next_(start) {}
  int Pick(const PickArgs&) const override {
    if (indices_.empty()) return kNoEndpoint;
    uint64_t n = next_.fetch_add(1, std::memory_order_relaxed);
    return indices_[n % indices_.size()];
  }

 private:
  const std::vector<int> indices_;
  mutable std::atomic<uint64_t> next_;
};

class RoundRobin final : public Policy {
 public:
  std::string name() const override { return "round_robin"; }
  std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) override {
    std::vector<int> healthy;
    for (size_t i = 0; i < endpoints.size(); ++i) {
      if (endpoints[i].healthy) healthy.push_back(static_cast<int>(i));
    }
    if (healthy.empty()) {  // none healthy: everyone, rather than no one
      for (size_t i = 0; i < endpoints.size(); ++i) healthy.push_back(static_cast<int>(i));
    }
    return std::make_unique<RoundRobinPicker>(std::move(healthy), ThreadRandom().Next());
  }
};

class RoundRobinFactory final : public PolicyFactory {
 public:
  std::string name() const override { return "round_robin"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    return core::CheckObject(config, path, {});
  }
  absl::StatusOr<std::unique_ptr<Policy>> Create(const json& config, absl::string_view path,
                                                 const PolicyContext&) const override {
    if (auto st = Validate(config, path); !st.ok()) return st;
    return std::make_unique<RoundRobin>();
  }
};

}  // namespace

std::unique_ptr<PolicyFactory> MakeRoundRobinFactory() {
  return std::make_unique<RoundRobinFactory>();
}

}  // namespace meshlib::lb
