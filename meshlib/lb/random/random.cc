#include "meshlib/lb/random/random.h"

#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/lb/internal/weights.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

class RandomPicker final : public Picker {
 public:
  RandomPicker(std::vector<int> indices, std::optional<lb_internal::AliasTable> table)
      : indices_(std::move(indices)), table_(std::move(table)) {}
  int Pick(const PickArgs&) const override {
    if (indices_.empty()) return kNoEndpoint;
    FastRandom& r = ThreadRandom();
    uint32_t i = table_ ? table_->Sample(r) : r.Below(static_cast<uint32_t>(indices_.size()));
    return indices_[i];
  }

 private:
  const std::vector<int> indices_;
  const std::optional<lb_internal::AliasTable> table_;  // absent: uniform
};

class Random final : public Policy {
 public:
  explicit Random(bool weighted) : weighted_(weighted) {}
  std::string name() const override { return "random"; }
  std::string Describe() const override {
    return absl::StrCat("random(weighted=", weighted_ ? "true" : "false", ")");
  }
  std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) override {
    lb_internal::Usable u = lb_internal::SelectUsable(endpoints);
    std::optional<lb_internal::AliasTable> table;
    if (weighted_ && !u.equal_weights) table.emplace(u.weights);
    return std::make_unique<RandomPicker>(std::move(u.indices), std::move(table));
  }

 private:
  const bool weighted_;
};

absl::Status ParseConfig(const json& config, absl::string_view path, bool* weighted) {
  if (auto st = core::CheckObject(config, path, {"weighted"}); !st.ok()) return st;
  auto it = config.find("weighted");
  if (it != config.end()) {
    if (!it->is_boolean()) {
      return core::FieldError(core::JoinPath(path, "weighted"), "must be true or false");
    }
    *weighted = it->get<bool>();
  }
  return absl::OkStatus();
}

class RandomFactory final : public PolicyFactory {
 public:
  std::string name() const override { return "random"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    bool weighted = true;
    return ParseConfig(config, path, &weighted);
  }
  absl::StatusOr<std::unique_ptr<Policy>> Create(const json& config, absl::string_view path,
                                                 const PolicyContext&) const override {
    bool weighted = true;
    if (auto st = ParseConfig(config, path, &weighted); !st.ok()) return st;
    return std::make_unique<Random>(weighted);
  }
};

}  // namespace

std::unique_ptr<PolicyFactory> MakeRandomFactory() { return std::make_unique<RandomFactory>(); }

}  // namespace meshlib::lb
