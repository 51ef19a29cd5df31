#include "meshlib/lb/ring_hash/ring_hash.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/lb/internal/hash_members.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

constexpr int64_t kDefaultMinRingSize = 1024;
constexpr int64_t kMaxRingSize = 8 * 1024 * 1024;  // Envoy's (and gRPC's) hard limit

struct RingHashConfig {
  int64_t minimum_ring_size = kDefaultMinRingSize;
  int64_t maximum_ring_size = kMaxRingSize;
};

absl::StatusOr<RingHashConfig> ParseConfig(const json& config, absl::string_view path) {
  if (auto st = core::CheckObject(config, path, {"minimum_ring_size", "maximum_ring_size"});
      !st.ok()) {
    return st;
  }
  RingHashConfig c;
  if (auto st = core::OptionalInt(config, path, "minimum_ring_size", 1, kMaxRingSize,
                                    &c.minimum_ring_size);
      !st.ok()) {
    return st;
  }
  if (auto st = core::OptionalInt(config, path, "maximum_ring_size", 1, kMaxRingSize,
                                    &c.maximum_ring_size);
      !st.ok()) {
    return st;
  }
  if (c.minimum_ring_size > c.maximum_ring_size) {
    return core::FieldError(core::JoinPath(path, "minimum_ring_size"),
                              absl::StrCat("must be <= maximum_ring_size (", c.minimum_ring_size,
                                           " > ", c.maximum_ring_size, ")"));
  }
  return c;
}

using lb_internal::HashMember;
using lb_internal::HashMembers;

class RingHashPicker final : public Picker {
 public:
  RingHashPicker(std::vector<uint64_t> points, std::vector<int32_t> owners)
      : points_(std::move(points)), owners_(std::move(owners)) {
    if (points_.empty()) return;
    // Index the ring by the top bits of a point: about one point per
    // bucket (at most 2^16 buckets, 256 KiB), so a lookup reads two bucket
    // bounds and searches the few points between them instead of the whole
    // ring. Same answer as a binary search over the ring, fewer dependent
    // cache misses.
    int bits = 1;
    while (bits < kMaxIndexBits && (size_t{1} << bits) < points_.size()) ++bits;
    shift_ = 64 - bits;
    const size_t buckets = size_t{1} << bits;
    bucket_start_.resize(buckets + 1);
    size_t i = 0;
    for (size_t b = 0; b < buckets; ++b) {
      while (i < points_.size() && (points_[i] >> shift_) < b) ++i;
      bucket_start_[b] = static_cast<uint32_t>(i);
    }
    bucket_start_[buckets] = static_cast<uint32_t>(points_.size());
  }

  int Pick(const PickArgs& args) const override {
    const size_t n = points_.size();
    if (n == 0) return kNoEndpoint;
    const uint64_t h = args.has_hash ? args.hash : ThreadRandom().Next();
    // The first point >= h is among the points sharing h's top bits, or
    // else the first point after them.
    const size_t b = static_cast<size_t>(h >> shift_);
    const uint32_t lo = bucket_start_[b];
    const uint32_t hi = bucket_start_[b + 1];
    size_t i = hi;
    if (lo < hi) {
      // Branch-free lower bound: the select compiles to a conditional
      // move, so lookups do not pay for mispredicted branches.
      const uint64_t* base = points_.data() + lo;
      size_t len = hi - lo;
      while (len > 1) {
        const size_t half = len / 2;
        base = base[half - 1] < h ? base + half : base;
        len -= half;
      }
      i = static_cast<size_t>(base - points_.data()) + (*base < h ? 1 : 0);
    }
    if (i == n) i = 0;  // past the last point: wrap to the first
    return owners_[i];
  }

 private:
  static constexpr int kMaxIndexBits = 16;

  // Sorted ring points and, in parallel, the endpoint index owning each: the
  // search touches only the 8-byte points.
  const std::vector<uint64_t> points_;
  const std::vector<int32_t> owners_;
  // bucket_start_[b]: the first point whose top bits are >= b; one more
  // entry at the end holds the ring size.
  std::vector<uint32_t> bucket_start_;
  int shift_ = 63;
};

class RingHash final : public Policy {
 public:
  explicit RingHash(RingHashConfig config) : config_(config) {}
  std::string name() const override { return "ring_hash"; }
  std::string Describe() const override {
    return absl::StrCat("ring_hash{minimum_ring_size=", config_.minimum_ring_size,
                        ", maximum_ring_size=", config_.maximum_ring_size, "}");
  }

  std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) override {
    std::vector<HashMember> members = HashMembers(endpoints);
    if (members.empty()) {
      return std::make_unique<RingHashPicker>(std::vector<uint64_t>{}, std::vector<int32_t>{});
    }

    // Envoy's sizing, in exact integer arithmetic (Envoy uses doubles, whose
    // rounding can hand one endpoint an extra point). With W the total
    // weight and w_min the smallest weight, the scale is
    //   s = min(ceil(min_ring * w_min / W) * W / w_min, max_ring)
    // so that the lightest endpoint gets a whole number of points, and an
    // endpoint gets s * w / W points, rounded through running sums (the
    // first i endpoints hold ceil(s * (w_1 + ... + w_i) / W) points).
    using u128 = unsigned __int128;
    u128 total = 0;
    uint64_t w_min = UINT64_MAX;
    for (const HashMember& m : members) {
      total += m.weight;
      w_min = std::min(w_min, m.weight);
    }
    const u128 min_ring = static_cast<u128>(config_.minimum_ring_size);
    const u128 max_ring = static_cast<u128>(config_.maximum_ring_size);
    const u128 per_min = (min_ring * w_min + total - 1) / total;  // points of the lightest
    const bool capped = per_min * total > max_ring * w_min;
    // Points held by endpoints whose weights sum to `cumulative`.
    auto points_up_to = [&](u128 cumulative) -> uint64_t {
      u128 num = capped ? max_ring * cumulative : per_min * cumulative;
      u128 den = capped ? total : static_cast<u128>(w_min);
      return static_cast<uint64_t>((num + den - 1) / den);
    };
    const uint64_t ring_size = points_up_to(total);

    // (point, rank in address order): sorting the pairs breaks the (rare)
    // equal points by address, the same in every client.
    std::vector<std::pair<uint64_t, uint32_t>> ring;
    ring.reserve(ring_size);
    std::string key;
    u128 cumulative = 0;
    uint64_t placed = 0;
    for (size_t r = 0; r < members.size(); ++r) {
      cumulative += members[r].weight;
      const uint64_t upto = points_up_to(cumulative);
      const std::string& address = endpoints[members[r].index].endpoint.address;
      key.assign(address);
      key.push_back('_');
      const size_t prefix = key.size();
      for (uint64_t i = 0; placed < upto; ++i, ++placed) {
        key.resize(prefix);
        absl::StrAppend(&key, i);
        ring.emplace_back(Hash64(key), static_cast<uint32_t>(r));
      }
    }
    std::sort(ring.begin(), ring.end());

    std::vector<uint64_t> points(ring.size());
    std::vector<int32_t> owners(ring.size());
    for (size_t i = 0; i < ring.size(); ++i) {
      points[i] = ring[i].first;
      owners[i] = members[ring[i].second].index;
    }
    return std::make_unique<RingHashPicker>(std::move(points), std::move(owners));
  }

 private:
  const RingHashConfig config_;
};

class RingHashFactory final : public PolicyFactory {
 public:
  std::string name() const override { return "ring_hash"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    return ParseConfig(config, path).status();
  }
  absl::StatusOr<std::unique_ptr<Policy>> Create(const json& config, absl::string_view path,
                                                 const PolicyContext&) const override {
    auto c = ParseConfig(config, path);
    if (!c.ok()) return c.status();
    return std::make_unique<RingHash>(*c);
  }
};

}  // namespace

std::unique_ptr<PolicyFactory> MakeRingHashFactory() { return std::make_unique<RingHashFactory>(); }

}  // namespace meshlib::lb
