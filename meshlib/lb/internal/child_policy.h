// Shared by the composite policies (locality, aperture): the child policy a
// wrapper delegates to, named by a nested `load_balancer`-style list, and
// pickers the child builds over subsets of the wrapper's endpoints.
//
//   auto spec = lb_internal::SelectChild(config, path);   // config["policy"]
//   lb_internal::ChildPolicies children(*spec, ctx);
//   children.BeginBuild();
//   auto sub = children.Build("p0/healthy", endpoints, {0, 2, 5});
//   children.EndBuild();       // drops the slots this build did not use
//   int i = sub->Pick(args);   // an index into `endpoints` (0, 2 or 5)
//
// A wrapper keeps one child Policy instance per named slot (a priority, a
// zone, ...) so that a child with state across builds sees one consistent
// stream of subsets.
//
// Threading: ChildPolicies runs on the wrapper's control thread;
// SubsetPicker::Pick is thread-safe and lock-free, like every Picker.
#ifndef MESHLIB_LB_INTERNAL_CHILD_POLICY_H_
#define MESHLIB_LB_INTERNAL_CHILD_POLICY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/lb/policy.h"
#include "nlohmann/json.hpp"

namespace meshlib::lb_internal {

// The child named by `parent["policy"]` (a list shaped like `load_balancer`,
// resolved with PolicyRegistry::Global().Select at "<parent_path>.policy";
// absent means round_robin). Errors name the path.
// `registry`: where the child's factory is found (null: the global one).
absl::StatusOr<lb::PolicyChoice> SelectChild(const nlohmann::json& parent,
                                             absl::string_view parent_path,
                                             const lb::PolicyRegistry* registry = nullptr);

// A child's picker over a subset; Pick maps the child's index back to the
// wrapper's endpoint vector.
class SubsetPicker {
 public:
  SubsetPicker(std::shared_ptr<lb::Policy> owner, std::unique_ptr<lb::Picker> picker,
               std::vector<int> map)
      : owner_(std::move(owner)), picker_(std::move(picker)), map_(std::move(map)) {}

  int Pick(const lb::PickArgs& args) const {
    const int i = picker_->Pick(args);
    if (i < 0 || static_cast<size_t>(i) >= map_.size()) return lb::kNoEndpoint;
    return map_[i];
  }
  // Indices (into the wrapper's vector) the child was built over.
  const std::vector<int>& members() const { return map_; }

 private:
  // Keeps the child policy alive as long as a picker it built may run, even
  // after the wrapper has dropped the slot.
  const std::shared_ptr<lb::Policy> owner_;
  const std::unique_ptr<lb::Picker> picker_;
  const std::vector<int> map_;
};

class ChildPolicies {
 public:
  ChildPolicies(lb::PolicyChoice choice, lb::PolicyContext ctx);

  // Creates the first instance, so that a child that cannot be created
  // fails the wrapper's Create() rather than a later Build().
  absl::Status Init();

  void BeginBuild();
  // The child of `slot` built over `subset`: endpoints[map[0]], ... with the
  // changes `edit` makes to each copy (e.g. marking all healthy in panic
  // mode); `edit` may be null.
  using Edit = void (*)(lb::LbEndpoint&);
  std::shared_ptr<const SubsetPicker> Build(const std::string& slot,
                                            const std::vector<lb::LbEndpoint>& endpoints,
                                            std::vector<int> map, Edit edit = nullptr);
  // As Build, with the subset's endpoints already copied (and edited).
  std::shared_ptr<const SubsetPicker> BuildCopied(const std::string& slot,
                                                  const std::vector<lb::LbEndpoint>& subset,
                                                  std::vector<int> map);
  void EndBuild();

  // The child's Describe() and StatsOptions().
  std::string Describe() const;
  lb::EndpointStatsOptions StatsOptions() const;

 private:
  std::shared_ptr<lb::Policy> Slot(const std::string& slot);

  const lb::PolicyChoice choice_;
  const lb::PolicyContext ctx_;
  std::shared_ptr<lb::Policy> prototype_;  // the first instance; answers Describe()
  struct Entry {
    std::shared_ptr<lb::Policy> policy;
    bool used = false;
  };
  std::map<std::string, Entry> slots_;
};

}  // namespace meshlib::lb_internal

#endif  // MESHLIB_LB_INTERNAL_CHILD_POLICY_H_
