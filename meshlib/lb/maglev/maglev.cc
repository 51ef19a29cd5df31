#include "meshlib/lb/maglev/maglev.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/lb/internal/hash_members.h"

namespace meshlib::lb {
namespace {

using json = nlohmann::json;

constexpr int64_t kDefaultTableSize = 65537;
constexpr int64_t kMaxTableSize = 5000011;  // Envoy's limit (a prime)
// Seeds of the two address hashes behind each permutation. Part of the
// table's definition: changing either moves keys between clients of
// different builds.
constexpr uint64_t kOffsetSeed = 0;
constexpr uint64_t kSkipSeed = 0x9E3779B97F4A7C15ull;
// Above this many member checks per table entry, the fill schedules turns
// with a heap instead of scanning every member every round.
constexpr uint64_t kMaxScansPerEntry = 16;

bool IsPrime(int64_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (int64_t d = 3; d * d <= n; d += 2) {
    if (n % d == 0) return false;
  }
  return true;
}

struct MaglevConfig {
  int64_t table_size = kDefaultTableSize;
};

absl::StatusOr<MaglevConfig> ParseConfig(const json& config, absl::string_view path) {
  if (auto st = core::CheckObject(config, path, {"table_size"}); !st.ok()) return st;
  MaglevConfig c;
  if (auto st = core::OptionalInt(config, path, "table_size", 2, kMaxTableSize, &c.table_size);
      !st.ok()) {
    return st;
  }
  if (!IsPrime(c.table_size)) {
    // A prime size makes every skip in 1..M-1 coprime with M, so each
    // permutation visits every entry: the fill always terminates.
    return core::FieldError(core::JoinPath(path, "table_size"),
                              absl::StrCat("must be a prime number (got ", c.table_size,
                                           "; e.g. 65537, 655373, 5000011)"));
  }
  return c;
}

using lb_internal::HashMember;
using lb_internal::HashMembers;

// Fills the table: members take turns in rounds k = 1, 2, ...; member r
// takes a turn in round k when k * w_r >= (its turns so far) * w_max, so
// the heaviest member takes one every round (Envoy's weighted Maglev, in
// integers). A turn claims the member's next preferred entry that is still
// free. All state lives in flat arrays: `next` is the member's current
// position in its permutation, advanced by adding `skip` mod M (no
// multiplication or division per probe).
class TableFiller {
 public:
  TableFiller(uint32_t m, std::vector<uint32_t> next, std::vector<uint32_t> skip,
              std::vector<int32_t> owner)
      : m_(m),
        next_(std::move(next)),
        skip_(std::move(skip)),
        owner_(std::move(owner)),
        table_(m, -1),
        taken_(m / 64 + 1, 0) {}

  // Looks at every member in every round: the plain loop of the paper and
  // Envoy, best while weights are close (Maglev::Build chooses).
  void FillByRounds(const std::vector<uint64_t>& weight, uint64_t w_max) {
    const size_t n = owner_.size();
    std::vector<uint64_t> target(n, 0);  // turns so far * w_max
    for (uint64_t round = 1;; ++round) {
      for (size_t r = 0; r < n; ++r) {
        if (round * weight[r] < target[r]) continue;
        target[r] += w_max;
        if (Claim(r)) return;
      }
    }
  }

  // The same turns in the same order, from a min-heap of (round, member):
  // when one member is much heavier than the rest, most members sit out
  // most rounds, and scanning all of them each round would cost
  // O(rounds * members).
  void FillByHeap(const std::vector<uint64_t>& weight, uint64_t w_max) {
    const size_t n = owner_.size();
    // Round (high 32 bits) and member (low 32 bits) in one key. The
    // heaviest member takes a turn every round and each turn fills one
    // entry, so no turn comes after round M and rounds fit in 32 bits.
    std::vector<uint64_t> heap_storage;
    heap_storage.reserve(n);
    std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<uint64_t>> heap(
        std::greater<uint64_t>(), std::move(heap_storage));
    for (size_t r = 0; r < n; ++r) heap.push((uint64_t{1} << 32) | r);
    std::vector<uint64_t> turns(n, 0);
    while (!heap.empty()) {
      const uint64_t top = heap.top();
      heap.pop();
      const uint64_t round = top >> 32;
      const size_t r = static_cast<size_t>(top & 0xffffffffu);
      if (Claim(r)) return;
      ++turns[r];
      // The first round after this one with round * w >= turns * w_max.
      uint64_t due = (turns[r] * w_max + weight[r] - 1) / weight[r];
      due = std::max(due, round + 1);
      if (due <= m_) heap.push((due << 32) | r);
    }
  }

  std::vector<int32_t> TakeTable() { return std::move(table_); }

 private:
  // Member r claims its next free entry; true once the table is full.
  bool Claim(size_t r) {
    uint32_t c = next_[r];
    const uint32_t s = skip_[r];
    while (taken_[c >> 6] & (uint64_t{1} << (c & 63))) {
      c += s;  // < 2M, no overflow: M <= 5000011
      if (c >= m_) c -= m_;
    }
    taken_[c >> 6] |= uint64_t{1} << (c & 63);
    table_[c] = owner_[r];
    c += s;
    if (c >= m_) c -= m_;
    next_[r] = c;
    return ++filled_ == m_;
  }

  const uint32_t m_;
  std::vector<uint32_t> next_;
  const std::vector<uint32_t> skip_;
  const std::vector<int32_t> owner_;
  std::vector<int32_t> table_;  // endpoint index per entry
  // One bit per entry, set once taken: the probes (about M ln M of them,
  // most hitting taken entries late in the fill) read this instead of the
  // table. At M = 65537 that gains little (8 KiB vs 256 KiB, both cached);
  // at M = 5000011 it is 610 KiB of bits instead of a 20 MB table.
  std::vector<uint64_t> taken_;
  uint32_t filled_ = 0;
};

class MaglevPicker final : public Picker {
 public:
  explicit MaglevPicker(std::vector<int32_t> table)
      : table_(std::move(table)), size_(table_.size()) {}
  int Pick(const PickArgs& args) const override {
    if (size_ == 0) return kNoEndpoint;
    if (!args.has_hash) return table_[ThreadRandom().Below(static_cast<uint32_t>(size_))];
    return table_[args.hash % size_];
  }

 private:
  const std::vector<int32_t> table_;
  const uint64_t size_;
};

class Maglev final : public Policy {
 public:
  explicit Maglev(MaglevConfig config) : config_(config) {}
  std::string name() const override { return "maglev"; }
  std::string Describe() const override {
    return absl::StrCat("maglev{table_size=", config_.table_size, "}");
  }

  std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) override {
    std::vector<HashMember> members = HashMembers(endpoints);
    if (members.empty()) return std::make_unique<MaglevPicker>(std::vector<int32_t>{});

    const uint32_t m = static_cast<uint32_t>(config_.table_size);
    const size_t n = members.size();
    std::vector<uint32_t> offset(n), skip(n);
    std::vector<int32_t> owner(n);
    std::vector<uint64_t> weight(n);
    uint64_t w_max = 0;
    uint64_t w_total = 0;
    for (size_t r = 0; r < n; ++r) {
      const std::string& address = endpoints[members[r].index].endpoint.address;
      offset[r] = static_cast<uint32_t>(Hash64(address, kOffsetSeed) % m);
      skip[r] = static_cast<uint32_t>(Hash64(address, kSkipSeed) % (m - 1) + 1);
      owner[r] = members[r].index;
      weight[r] = members[r].weight;
      w_max = std::max(w_max, weight[r]);
      w_total += weight[r];
    }
    TableFiller filler(m, std::move(offset), std::move(skip), std::move(owner));
    // Scanning every member every round costs rounds * n = M * w_max / mean
    // weight checks: cheap while weights are close (the common case), not
    // when one member outweighs the rest by orders of magnitude. A scan
    // check costs a fraction of a heap operation (~log2 n compares).
    if (w_max * n <= kMaxScansPerEntry * w_total) {
      filler.FillByRounds(weight, w_max);
    } else {
      filler.FillByHeap(weight, w_max);
    }
    return std::make_unique<MaglevPicker>(filler.TakeTable());
  }

 private:
  const MaglevConfig config_;
};

class MaglevFactory final : public PolicyFactory {
 public:
  std::string name() const override { return "maglev"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    return ParseConfig(config, path).status();
  }
  absl::StatusOr<std::unique_ptr<Policy>> Create(const json& config, absl::string_view path,
                                                 const PolicyContext&) const override {
    auto c = ParseConfig(config, path);
    if (!c.ok()) return c.status();
    return std::make_unique<Maglev>(*c);
  }
};

}  // namespace

std::unique_ptr<PolicyFactory> MakeMaglevFactory() { return std::make_unique<MaglevFactory>(); }

}  // namespace meshlib::lb
