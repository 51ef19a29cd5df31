#include "meshlib/lb/locality/locality.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/lb/internal/child_policy.h"

namespace meshlib::lb {

using json = nlohmann::json;
using lb_internal::ChildPolicies;
using lb_internal::SubsetPicker;

namespace {

constexpr uint32_t kZoneScale = 10000;  // zone shares in 1/10000, as Envoy

// Zone routing for one level that is not in panic (section 3 of the header).
void PlanZones(const std::vector<LbEndpoint>& endpoints, const LocalityOptions& options,
               const std::string& local_zone, LocalityPlan::Level& level) {
  if (!options.zone_aware || local_zone.empty()) return;
  struct Count {
    uint64_t total = 0;
    uint64_t healthy = 0;
  };
  std::map<std::string, Count> zones;
  for (int i : level.members) {
    Count& c = zones[endpoints[i].endpoint.zone];
    ++c.total;
    if (endpoints[i].healthy) ++c.healthy;
  }
  auto local = zones.find(local_zone);
  if (local == zones.end() || local->second.healthy == 0) return;
  int zones_with_healthy = 0;
  for (const auto& [zone, c] : zones) zones_with_healthy += c.healthy > 0 ? 1 : 0;
  if (zones_with_healthy < 2) return;  // nothing to choose between
  if (static_cast<int64_t>(level.healthy) < options.min_cluster_size) return;

  const uint64_t total = level.members.size();
  const uint64_t healthy = level.healthy;
  auto client_share = [&](const Count& c) { return kZoneScale * c.total / total; };
  auto upstream_share = [&](const Count& c) { return kZoneScale * c.healthy / healthy; };
  const uint64_t local_client = client_share(local->second);
  const uint64_t local_upstream = upstream_share(local->second);
  if (local_upstream >= local_client) {
    level.zone_mode = LocalityPlan::ZoneMode::kLocal;
    return;
  }
  level.zone_mode = LocalityPlan::ZoneMode::kResidual;
  level.local_share = static_cast<uint32_t>(local_upstream * kZoneScale / local_client);
  for (const auto& [zone, c] : zones) {
    if (zone == local_zone) continue;
    const uint64_t up = upstream_share(c), cl = client_share(c);
    if (up > cl) level.residual.emplace_back(zone, static_cast<uint32_t>(up - cl));
  }
}

}  // namespace

LocalityPlan PlanLocality(const std::vector<LbEndpoint>& endpoints,
                          const LocalityOptions& options, const std::string& local_zone) {
  LocalityPlan plan;
  plan.local_zone = options.zone_aware ? local_zone : "";
  std::map<uint32_t, std::vector<int>> by_priority;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    by_priority[endpoints[i].endpoint.priority].push_back(static_cast<int>(i));
  }
  if (by_priority.empty()) return plan;

  const uint64_t opf = static_cast<uint64_t>(std::llround(options.overprovisioning_factor * 100));
  uint32_t sum_health = 0;
  for (auto& [priority, members] : by_priority) {
    LocalityPlan::Level level;
    level.priority = priority;
    level.members = std::move(members);
    for (int i : level.members) level.healthy += endpoints[i].healthy ? 1 : 0;
    level.health = static_cast<uint32_t>(
        std::min<uint64_t>(100, opf * level.healthy / level.members.size()));
    sum_health += level.health;
    plan.levels.push_back(std::move(level));
  }
  const uint32_t normalized = std::min<uint32_t>(100, sum_health);

  // Panic is judged only when the healthy endpoints of all levels together
  // cannot take the load (Envoy's recalculatePerPriorityPanic).
  const bool panic_enabled = options.panic_threshold > 0;
  bool all_panic = panic_enabled && normalized < 100;
  for (LocalityPlan::Level& level : plan.levels) {
    level.panic = panic_enabled && normalized < 100 &&
                  100.0 * level.healthy / level.members.size() < options.panic_threshold;
    all_panic = all_panic && level.panic;
  }

  if (all_panic) {
    // Envoy's recalculateLoadInTotalPanic: by endpoint counts.
    uint32_t remaining = 100;
    for (LocalityPlan::Level& level : plan.levels) {
      level.load = static_cast<uint32_t>(100 * level.members.size() / endpoints.size());
      remaining -= level.load;
    }
    plan.levels.front().load += remaining;
  } else if (normalized == 0) {
    // No level's health rounds above 0, yet not all are in panic (panic is
    // off, or the threshold is below the few healthy ones' share): serve
    // the first level that has a healthy endpoint, if any, rather than none.
    for (LocalityPlan::Level& level : plan.levels) {
      if (level.healthy > 0) {
        level.load = 100;
        break;
      }
    }
  } else {
    // Envoy's distributeLoad.
    uint32_t remaining = 100;
    int first_available = -1;
    for (size_t i = 0; i < plan.levels.size(); ++i) {
      LocalityPlan::Level& level = plan.levels[i];
      if (first_available < 0 && level.health > 0) first_available = static_cast<int>(i);
      level.load = std::min<uint32_t>(remaining, level.health * 100 / normalized);
      remaining -= level.load;
    }
    plan.levels[first_available].load += remaining;
  }

  for (LocalityPlan::Level& level : plan.levels) {
    if (!level.panic && level.healthy > 0) PlanZones(endpoints, options, plan.local_zone, level);
  }
  return plan;
}

namespace {

// One level as the picker sees it.
struct Route {
  uint32_t cumulative_load = 0;  // this level and all before it, percent
  // The level's picker: all members (panic), its healthy ones (no zone
  // routing) or its local zone's healthy ones.
  std::shared_ptr<const SubsetPicker> main;
  // kResidual: picks with zone draw < local_share use `main`; the others
  // go to others[i] for the first i with draw' < cumulative_residual[i].
  uint32_t local_share = kZoneScale;
  std::vector<uint64_t> cumulative_residual;
  std::vector<std::shared_ptr<const SubsetPicker>> others;
};

class LocalityPicker final : public Picker {
 public:
  explicit LocalityPicker(std::vector<Route> routes) : routes_(std::move(routes)) {}

  int Pick(const PickArgs& args) const override {
    if (routes_.empty()) return kNoEndpoint;
    const uint64_t h = args.has_hash ? args.hash : ThreadRandom().Next();
    const uint32_t p = static_cast<uint32_t>(h % 100);
    const Route* r = &routes_.back();
    for (const Route& candidate : routes_) {
      if (p < candidate.cumulative_load) {
        r = &candidate;
        break;
      }
    }
    if (r->others.empty()) return r->main->Pick(args);
    const uint32_t u = static_cast<uint32_t>((h / 100) % kZoneScale);
    if (u < r->local_share) return r->main->Pick(args);
    // u - local_share is uniform over [0, kZoneScale - local_share); stretch
    // it over the residual capacities.
    const uint64_t t = uint64_t{u - r->local_share} * r->cumulative_residual.back() /
                       (kZoneScale - r->local_share);
    for (size_t i = 0; i < r->others.size(); ++i) {
      if (t < r->cumulative_residual[i]) return r->others[i]->Pick(args);
    }
    return r->others.back()->Pick(args);
  }

 private:
  const std::vector<Route> routes_;
};

class Locality final : public Policy {
 public:
  Locality(LocalityOptions options, std::string local_zone, PolicyChoice child,
           const PolicyContext& ctx)
      : options_(std::move(options)),
        local_zone_(std::move(local_zone)),
        children_(std::move(child), ctx) {}

  absl::Status Init() { return children_.Init(); }

  std::string name() const override { return "locality"; }

  std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) override {
    const LocalityPlan plan = PlanLocality(endpoints, options_, local_zone_);
    std::vector<Route> routes;
    uint32_t cumulative = 0;
    children_.BeginBuild();
    for (const LocalityPlan::Level& level : plan.levels) {
      if (level.load == 0) continue;
      cumulative += level.load;
      const std::string slot = absl::StrCat("p", level.priority, "/");
      Route route;
      route.cumulative_load = cumulative;
      if (level.panic) {
        route.main = children_.Build(slot + "all", endpoints, level.members,
                                     [](LbEndpoint& e) { e.healthy = true; });
        routes.push_back(std::move(route));
        continue;
      }
      // Healthy members by zone ("" holds them all when zones do not count).
      const bool by_zone = level.zone_mode != LocalityPlan::ZoneMode::kNone;
      std::map<std::string, std::vector<int>> healthy;
      for (int i : level.members) {
        if (!endpoints[i].healthy) continue;
        healthy[by_zone ? endpoints[i].endpoint.zone : std::string()].push_back(i);
      }
      if (!by_zone) {
        route.main = children_.Build(slot + "healthy", endpoints, std::move(healthy[""]));
      } else {
        route.main = children_.Build(absl::StrCat(slot, "zone:", plan.local_zone), endpoints,
                                     healthy[plan.local_zone]);
      }
      if (level.zone_mode == LocalityPlan::ZoneMode::kResidual) {
        route.local_share = level.local_share;
        if (level.residual.empty()) {
          // Rounding left no zone with spare capacity: spread the rest over
          // every healthy endpoint outside the local zone.
          std::vector<int> rest;
          for (const auto& [zone, members] : healthy) {
            if (zone != plan.local_zone) rest.insert(rest.end(), members.begin(), members.end());
          }
          std::sort(rest.begin(), rest.end());
          route.others.push_back(children_.Build(slot + "non-local", endpoints, std::move(rest)));
          route.cumulative_residual.push_back(1);
        } else {
          uint64_t sum = 0;
          for (const auto& [zone, capacity] : level.residual) {
            sum += capacity;
            route.cumulative_residual.push_back(sum);
            route.others.push_back(
                children_.Build(absl::StrCat(slot, "zone:", zone), endpoints, healthy[zone]));
          }
        }
      }
      routes.push_back(std::move(route));
    }
    children_.EndBuild();
    return std::make_unique<LocalityPicker>(std::move(routes));
  }

  std::string Describe() const override {
    return absl::StrCat("locality(panic_threshold=", options_.panic_threshold,
                        ", overprovisioning_factor=", options_.overprovisioning_factor,
                        ", zone_aware=", options_.zone_aware ? "true" : "false",
                        ", local_zone=", local_zone_.empty() ? "(none)" : local_zone_,
                        ", min_cluster_size=", options_.min_cluster_size,
                        ", policy=", children_.Describe(), ")");
  }

  EndpointStatsOptions StatsOptions() const override { return children_.StatsOptions(); }

 private:
  const LocalityOptions options_;
  const std::string local_zone_;
  ChildPolicies children_;
};

absl::StatusOr<LocalityOptions> ParseOptions(const json& config, absl::string_view path) {
  if (auto st = core::CheckObject(config, path,
                                    {"policy", "panic_threshold", "overprovisioning_factor",
                                     "zone_aware", "local_zone", "min_cluster_size"});
      !st.ok()) {
    return st;
  }
  LocalityOptions o;
  if (auto st = core::OptionalDouble(config, path, "panic_threshold", 0, 100, &o.panic_threshold);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalDouble(config, path, "overprovisioning_factor", 1, 100,
                                       &o.overprovisioning_factor);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalBool(config, path, "zone_aware", &o.zone_aware); !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalString(config, path, "local_zone", &o.local_zone); !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalInt(config, path, "min_cluster_size", 0, INT32_MAX,
                                    &o.min_cluster_size);
      !st.ok()) {
    return st;
  }
  return o;
}

class LocalityFactory final : public PolicyFactory {
 public:
  std::string name() const override { return "locality"; }

  absl::Status Validate(const json& config, absl::string_view path) const override {
    if (auto o = ParseOptions(config, path); !o.ok()) return o.status();
    return lb_internal::SelectChild(config, path).status();
  }

  absl::StatusOr<std::unique_ptr<Policy>> Create(const json& config, absl::string_view path,
                                                 const PolicyContext& ctx) const override {
    auto options = ParseOptions(config, path);
    if (!options.ok()) return options.status();
    auto child = lb_internal::SelectChild(config, path, ctx.registry);
    if (!child.ok()) return child.status();
    std::string zone = options->local_zone.empty() ? ctx.local_zone : options->local_zone;
    auto policy = std::make_unique<Locality>(*std::move(options), std::move(zone),
                                             *std::move(child), ctx);
    if (auto st = policy->Init(); !st.ok()) return st;
    return std::unique_ptr<Policy>(std::move(policy));
  }
};

}  // namespace

std::unique_ptr<PolicyFactory> MakeLocalityFactory() {
  return std::make_unique<LocalityFactory>();
}

}  // namespace meshlib::lb
