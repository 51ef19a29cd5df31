#include "meshlib/lb/internal/child_policy.h"

#include <utility>

#include "meshlib/core/json_fields.h"

namespace meshlib::lb_internal {

using json = nlohmann::json;

absl::StatusOr<lb::PolicyChoice> SelectChild(const json& parent, absl::string_view parent_path,
                                              const lb::PolicyRegistry* registry) {
  static const json kAbsent;  // null: Select's "round_robin with defaults"
  const json* list = &kAbsent;
  if (parent.is_object()) {
    auto it = parent.find("policy");
    if (it != parent.end()) list = &*it;
  }
  const lb::PolicyRegistry& r = registry != nullptr ? *registry : lb::PolicyRegistry::Global();
  return r.Select(*list, core::JoinPath(parent_path, "policy"));
}

ChildPolicies::ChildPolicies(lb::PolicyChoice choice, lb::PolicyContext ctx)
    : choice_(std::move(choice)), ctx_(std::move(ctx)) {}

absl::Status ChildPolicies::Init() {
  auto p = choice_.factory->Create(choice_.config, choice_.path, ctx_);
  if (!p.ok()) return p.status();
  prototype_ = std::shared_ptr<lb::Policy>(*std::move(p));
  return absl::OkStatus();
}

std::shared_ptr<lb::Policy> ChildPolicies::Slot(const std::string& slot) {
  Entry& e = slots_[slot];
  e.used = true;
  if (e.policy == nullptr) {
    auto p = choice_.factory->Create(choice_.config, choice_.path, ctx_);
    // The same config was created once in Init(), so this does not fail in
    // practice; should it, sharing the first instance beats serving nothing.
    e.policy = p.ok() ? std::shared_ptr<lb::Policy>(*std::move(p)) : prototype_;
  }
  return e.policy;
}

void ChildPolicies::BeginBuild() {
  for (auto& [name, e] : slots_) e.used = false;
}

std::shared_ptr<const SubsetPicker> ChildPolicies::Build(
    const std::string& slot, const std::vector<lb::LbEndpoint>& endpoints, std::vector<int> map,
    Edit edit) {
  std::vector<lb::LbEndpoint> subset;
  subset.reserve(map.size());
  for (int i : map) {
    subset.push_back(endpoints[i]);
    if (edit != nullptr) edit(subset.back());
  }
  return BuildCopied(slot, subset, std::move(map));
}

std::shared_ptr<const SubsetPicker> ChildPolicies::BuildCopied(
    const std::string& slot, const std::vector<lb::LbEndpoint>& subset, std::vector<int> map) {
  std::shared_ptr<lb::Policy> policy = Slot(slot);
  std::unique_ptr<lb::Picker> picker = policy->Build(subset);
  return std::make_shared<const SubsetPicker>(std::move(policy), std::move(picker),
                                              std::move(map));
}

void ChildPolicies::EndBuild() {
  for (auto it = slots_.begin(); it != slots_.end();) {
    it = it->second.used ? std::next(it) : slots_.erase(it);
  }
}

std::string ChildPolicies::Describe() const {
  return prototype_ != nullptr ? prototype_->Describe() : choice_.factory->name();
}

lb::EndpointStatsOptions ChildPolicies::StatsOptions() const {
  return prototype_ != nullptr ? prototype_->StatsOptions() : lb::EndpointStatsOptions();
}

}  // namespace meshlib::lb_internal
