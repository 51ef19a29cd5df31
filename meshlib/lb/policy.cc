#include "meshlib/lb/policy.h"

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "meshlib/core/json_fields.h"

namespace meshlib::lb {

using json = nlohmann::json;

void PolicyRegistry::Register(std::unique_ptr<PolicyFactory> factory) {
  core::MutexLock lock(&mu_);
  std::string name = factory->name();
  factories_[name] = std::move(factory);
}

const PolicyFactory* PolicyRegistry::Find(absl::string_view name) const {
  core::MutexLock lock(&mu_);
  auto it = factories_.find(name);
  return it == factories_.end() ? nullptr : it->second.get();
}

std::vector<std::string> PolicyRegistry::Names() const {
  core::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [name, f] : factories_) out.push_back(name);
  return out;
}

absl::StatusOr<PolicyChoice> PolicyRegistry::Select(const json& list,
                                                    absl::string_view path) const {
  if (list.is_null()) {
    PolicyChoice c;
    c.factory = Find("round_robin");
    if (c.factory == nullptr) return absl::InternalError("round_robin is not registered");
    c.config = json::object();
    c.path = absl::StrCat(path, "(default round_robin)");
    return c;
  }
  if (!list.is_array() || list.empty()) {
    return core::FieldError(path, "must be a non-empty list of {name: config} objects");
  }
  std::vector<std::string> unknown;
  for (size_t i = 0; i < list.size(); ++i) {
    std::string entry_path = absl::StrCat(path, "[", i, "]");
    const json& e = list[i];
    if (!e.is_object() || e.size() != 1) {
      return core::FieldError(entry_path, "must be an object with exactly one policy name");
    }
    auto it = e.begin();
    const PolicyFactory* f = Find(it.key());
    if (f == nullptr) {
      unknown.push_back(it.key());
      continue;
    }
    std::string policy_path = core::JoinPath(entry_path, it.key());
    if (auto st = f->Validate(it.value(), policy_path); !st.ok()) return st;
    return PolicyChoice{f, it.value(), policy_path};
  }
  return core::FieldError(path, absl::StrCat("no known policy (listed: ",
                                               absl::StrJoin(unknown, ", "), "; known: ",
                                               absl::StrJoin(Names(), ", "), ")"));
}

namespace {
thread_local bool random_seeded = false;
thread_local FastRandom random_state(0);
}  // namespace

FastRandom& ThreadRandom() {
  if (!random_seeded) {
    static std::atomic<uint64_t> thread_counter{0};
    uint64_t seed = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) ^
                    (thread_counter.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15ull);
    random_state = FastRandom(seed);
    random_seeded = true;
  }
  return random_state;
}

void ReseedThreadRandom(uint64_t seed) {
  random_state = FastRandom(seed);
  random_seeded = true;
}

uint64_t Hash64(absl::string_view bytes, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  // Finalizer (from splitmix64) so that nearby keys spread over the range.
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

}  // namespace meshlib::lb
