#include "meshlib/lb/aperture/aperture.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/lb/internal/child_policy.h"

namespace meshlib::lb {

using json = nlohmann::json;

namespace {

constexpr uint64_t kVirtualPeers = uint64_t{1} << 20;  // random aperture's ring of peers
constexpr double kWeightScale = 1000;                  // weight of a full member, per unit

// Ring order: by Hash64(address), ties by address, then by position.
std::vector<int> RingOrder(const std::vector<LbEndpoint>& endpoints) {
  std::vector<std::pair<uint64_t, int>> keyed;
  keyed.reserve(endpoints.size());
  for (size_t i = 0; i < endpoints.size(); ++i) {
    keyed.emplace_back(Hash64(endpoints[i].endpoint.address), static_cast<int>(i));
  }
  std::sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    const std::string& x = endpoints[a.second].endpoint.address;
    const std::string& y = endpoints[b.second].endpoint.address;
    return x != y ? x < y : a.second < b.second;
  });
  std::vector<int> order;
  order.reserve(keyed.size());
  for (const auto& k : keyed) order.push_back(k.second);
  return order;
}

}  // namespace

std::vector<ApertureMember> ApertureSubset(const std::vector<LbEndpoint>& endpoints,
                                           uint64_t client, uint64_t peers, int64_t size) {
  std::vector<ApertureMember> out;
  const uint64_t S = endpoints.size();
  if (S == 0) return out;
  const std::vector<int> order = RingOrder(endpoints);
  const uint64_t P = std::max<uint64_t>(1, peers);
  // Positions are in units of 1 / (P * S) of the ring: endpoint j owns
  // [j * P, (j + 1) * P), client k's arc starts at k * S. P < 2^31 and
  // S < 2^31 keep every position below 2^63.
  const uint64_t L = P * S;
  const uint64_t a = static_cast<uint64_t>(std::max<int64_t>(1, size));
  const uint64_t len = std::max(a * P, S);
  if (a >= S || len >= L) {
    for (int i : order) out.push_back({i, 1.0});
    return out;
  }
  const uint64_t start = (client % P) * S;
  const uint64_t end = start + len;  // may pass L: the arc wraps

  // Coverage (how many arcs hold a point) is periodic with the client
  // spacing S: q + 1 on the first r units of each period, q on the rest.
  const uint64_t q = len / S, r = len % S;
  const double per_period = static_cast<double>(r) / (q + 1) + static_cast<double>(S - r) / q;
  auto partial = [&](uint64_t t) {  // integral of 1/coverage over [0, t) of a period
    return static_cast<double>(std::min(t, r)) / (q + 1) +
           static_cast<double>(t > r ? t - r : 0) / q;
  };
  auto integral = [&](uint64_t lo, uint64_t hi) {  // of 1/coverage over [lo, hi)
    return static_cast<double>(hi / S - lo / S) * per_period + partial(hi % S) - partial(lo % S);
  };

  for (uint64_t m = start / P; m * P < end; ++m) {
    const uint64_t lo = std::max(start, m * P), hi = std::min(end, (m + 1) * P);
    if (hi <= lo) continue;
    // A full slot covered q times has share 1.
    const double share = integral(lo, hi) * static_cast<double>(q) / static_cast<double>(P);
    const int index = order[m % S];
    if (!out.empty() && out.front().index == index) {
      out.front().share += share;  // the arc's two ends in one slot
    } else {
      out.push_back({index, share});
    }
  }
  return out;
}

namespace {

using lb_internal::ChildPolicies;
using lb_internal::SubsetPicker;

class AperturePicker final : public Picker {
 public:
  explicit AperturePicker(std::shared_ptr<const SubsetPicker> child) : child_(std::move(child)) {}
  int Pick(const PickArgs& args) const override { return child_->Pick(args); }

 private:
  const std::shared_ptr<const SubsetPicker> child_;
};

class Aperture final : public Policy {
 public:
  Aperture(int64_t size, uint64_t client, uint64_t peers, bool random, PolicyChoice child,
           const PolicyContext& ctx)
      : size_(size), client_(client), peers_(peers), random_(random), children_(std::move(child), ctx) {}

  absl::Status Init() { return children_.Init(); }

  std::string name() const override { return "aperture"; }

  std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) override {
    std::vector<ApertureMember> members = ApertureSubset(endpoints, client_, peers_, size_);
    bool any_healthy_inside = false;
    for (const ApertureMember& m : members) any_healthy_inside |= endpoints[m.index].healthy;
    bool any_healthy = false;
    for (const LbEndpoint& e : endpoints) any_healthy |= e.healthy;

    std::vector<LbEndpoint> subset;
    std::vector<int> map;
    if (!any_healthy_inside && any_healthy) {
      // Every member is ejected: better a connection outside the arc than
      // no answer.
      subset = endpoints;
      map.resize(endpoints.size());
      std::iota(map.begin(), map.end(), 0);
    } else {
      subset.reserve(members.size());
      map.reserve(members.size());
      for (const ApertureMember& m : members) {
        subset.push_back(endpoints[m.index]);
        uint32_t& w = subset.back().endpoint.weight;
        if (w > 0) {
          const double scaled = std::round(static_cast<double>(w) * kWeightScale * m.share);
          w = static_cast<uint32_t>(std::clamp(scaled, 1.0, static_cast<double>(UINT32_MAX)));
        }
        map.push_back(m.index);
      }
    }
    children_.BeginBuild();
    auto child = children_.BuildCopied("aperture", subset, std::move(map));
    children_.EndBuild();
    return std::make_unique<AperturePicker>(std::move(child));
  }

  std::string Describe() const override {
    return absl::StrCat("aperture(size=", size_, ", coordinate=", client_, "/", peers_,
                        random_ ? " (random)" : "", ", policy=", children_.Describe(), ")");
  }

  EndpointStatsOptions StatsOptions() const override { return children_.StatsOptions(); }
  bool ConnectsToEveryEndpoint() const override { return false; }

 private:
  const int64_t size_;
  const uint64_t client_;
  const uint64_t peers_;
  const bool random_;
  ChildPolicies children_;
};

absl::StatusOr<ApertureOptions> ParseOptions(const json& config, absl::string_view path) {
  if (auto st = core::CheckObject(config, path, {"policy", "size", "client_id", "peer_count"});
      !st.ok()) {
    return st;
  }
  ApertureOptions o;
  if (auto st = core::OptionalInt(config, path, "size", 1, INT32_MAX, &o.size); !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalInt(config, path, "client_id", 0, INT64_MAX, &o.client_id);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalInt(config, path, "peer_count", 1, INT32_MAX, &o.peer_count);
      !st.ok()) {
    return st;
  }
  if (o.client_id >= 0 && o.peer_count > 0 && o.client_id >= o.peer_count) {
    return core::FieldError(core::JoinPath(path, "client_id"),
                              absl::StrCat("must be less than peer_count (", o.peer_count, ")"));
  }
  return o;
}

class ApertureFactory final : public PolicyFactory {
 public:
  std::string name() const override { return "aperture"; }

  absl::Status Validate(const json& config, absl::string_view path) const override {
    if (auto o = ParseOptions(config, path); !o.ok()) return o.status();
    return lb_internal::SelectChild(config, path).status();
  }

  absl::StatusOr<std::unique_ptr<Policy>> Create(const json& config, absl::string_view path,
                                                 const PolicyContext& ctx) const override {
    auto o = ParseOptions(config, path);
    if (!o.ok()) return o.status();
    auto child = lb_internal::SelectChild(config, path, ctx.registry);
    if (!child.ok()) return child.status();
    const uint64_t peers =
        o->peer_count > 0 ? static_cast<uint64_t>(o->peer_count)
                          : static_cast<uint64_t>(std::max(0, std::min(ctx.peer_count, INT32_MAX)));
    uint64_t client = o->client_id >= 0 ? static_cast<uint64_t>(o->client_id) : ctx.client_id;
    const bool random = peers == 0;
    if (random && o->client_id >= 0) {
      return core::FieldError(core::JoinPath(path, "client_id"),
                                "needs peer_count (in this config or from the client)");
    }
    uint64_t ring_peers = peers;
    if (random) {
      ring_peers = kVirtualPeers;
      client = ctx.seed != 0 ? FastRandom(ctx.seed ^ 0x61706572747572ull).Next()
                             : ThreadRandom().Next();
    }
    auto policy = std::make_unique<Aperture>(o->size, client % ring_peers, ring_peers, random,
                                             *std::move(child), ctx);
    if (auto st = policy->Init(); !st.ok()) return st;
    return std::unique_ptr<Policy>(std::move(policy));
  }
};

}  // namespace

std::unique_ptr<PolicyFactory> MakeApertureFactory() {
  return std::make_unique<ApertureFactory>();
}

}  // namespace meshlib::lb
