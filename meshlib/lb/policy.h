// Load-balancing policies: the interface, the picker the request path reads,
// and the registry that chooses a policy from mesh.json.
//
//   "load_balancer": [{"p2c_peak_ewma": {"decay": "10s"}}, {"round_robin": {}}]
//
// The list is ordered; the first name this build knows is used (so a config
// can name a policy a newer build adds, with a fallback). A policy lives on
// the control side: for every endpoint-set update (or health change) it
// builds an immutable Picker, which the client publishes for the request
// path. Picking takes no lock: a picker reads its own immutable arrays plus
// the endpoints' atomic load signals (EndpointStats).
//
//   auto factory = lb::PolicyRegistry::Global().Select(config["load_balancer"],
//                                                      "services.echo.load_balancer");
//   std::unique_ptr<lb::Policy> policy = (*factory)->Create(ctx);
//   std::unique_ptr<lb::Picker> picker = policy->Build(endpoints);
//   int i = picker->Pick(lb::PickArgs{});   // index into `endpoints`
//
// Threading: Policy methods run on one (control) thread. Picker::Pick is
// thread-safe and lock-free; pickers are immutable apart from atomics.
#ifndef MESHLIB_LB_POLICY_H_
#define MESHLIB_LB_POLICY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/core/sync.h"
#include "meshlib/discovery/endpoint.h"
#include "meshlib/lb/endpoint_stats.h"
#include "meshlib/runtime/executor.h"
#include "nlohmann/json.hpp"

namespace meshlib::lb {

// One endpoint as a policy sees it.
struct LbEndpoint {
  discovery::Endpoint endpoint;  // address, weight, priority, zone, metadata
  // Shared with the client stack, which reports every call's outcome; kept
  // across updates for an endpoint that stays.
  std::shared_ptr<EndpointStats> stats;
  // False while outlier detection or health checks have ejected it.
  bool healthy = true;
};

// What a call tells the picker.
struct PickArgs {
  // For ring_hash / maglev: the call's hash key (e.g. of a user id). Calls
  // without one (has_hash false) get a random point.
  uint64_t hash = 0;
  bool has_hash = false;
};

// Returned when a picker has nothing to offer (empty set).
inline constexpr int kNoEndpoint = -1;

class Picker {
 public:
  virtual ~Picker() = default;
  // An index into the endpoint list the picker was built from, or
  // kNoEndpoint. Thread-safe, lock-free.
  virtual int Pick(const PickArgs& args) const = 0;
};

// What a policy gets from the client that owns it.
class PolicyRegistry;

struct PolicyContext {
  runtime::Clock* clock = nullptr;  // never null in Create(); RealClock() by default
  uint64_t seed = 0;                // for randomness; 0 = from the time
  std::string local_zone;           // for zone-aware routing; "" = unknown
  // For aperture: this client's identity among its peers (e.g. a hash of
  // host:pid) and how many peers there are; 0 = unknown.
  uint64_t client_id = 0;
  int peer_count = 0;
  // Where a policy with a child (aperture, locality) finds the child's
  // factory. Null: PolicyRegistry::Global().
  const PolicyRegistry* registry = nullptr;
};

class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string name() const = 0;
  // Builds the picker for `endpoints` (the whole current set). Never null;
  // an empty set yields a picker that returns kNoEndpoint.
  virtual std::unique_ptr<Picker> Build(const std::vector<LbEndpoint>& endpoints) = 0;
  // Effective settings, for Describe().
  virtual std::string Describe() const { return name(); }
  // How the client should make EndpointStats for this policy's endpoints
  // (EWMA decay, latency assumed for a new endpoint, failure penalty).
  // Policies that do not rank by latency keep the defaults.
  virtual EndpointStatsOptions StatsOptions() const { return EndpointStatsOptions(); }
  // Whether the client should connect to (and health-check) every endpoint
  // of the set at once. A policy that only ever picks a few of them
  // (aperture) says no: an endpoint then connects at its first pick, and is
  // probed only while connected, so connections stay bounded by the subset.
  virtual bool ConnectsToEveryEndpoint() const { return true; }
};

class PolicyFactory {
 public:
  virtual ~PolicyFactory() = default;
  virtual std::string name() const = 0;
  // Checks the policy's config object; errors name `path` and the rule.
  virtual absl::Status Validate(const nlohmann::json& config, absl::string_view path) const = 0;
  virtual absl::StatusOr<std::unique_ptr<Policy>> Create(const nlohmann::json& config,
                                                         absl::string_view path,
                                                         const PolicyContext& ctx) const = 0;
};

// A policy chosen from a `load_balancer` list.
struct PolicyChoice {
  const PolicyFactory* factory = nullptr;
  nlohmann::json config;  // its object
  std::string path;       // e.g. "services.echo.load_balancer[1].round_robin"
};

class PolicyRegistry {
 public:
  // Every built-in policy, and those added by AddToGlobal before it was
  // first read; immutable from then on. Defined in //meshlib/lb.
  static const PolicyRegistry& Global();
  // Adds a policy to Global(), at start-up: once Global() has been read
  // (a configuration parsed, a channel made) it is FAILED_PRECONDITION.
  static absl::Status AddToGlobal(std::unique_ptr<PolicyFactory> factory);
  // Adds every built-in policy to `registry` (what Global() holds), for a
  // registry of one's own with more.
  static void RegisterBuiltins(PolicyRegistry& registry);
  void Register(std::unique_ptr<PolicyFactory> factory);
  const PolicyFactory* Find(absl::string_view name) const;
  std::vector<std::string> Names() const;

  // The first entry of `list` whose name is registered, its config
  // validated. An absent/null list means round_robin with defaults. Errors
  // name the path: not a list, an entry that is not {name: object}, no
  // known name at all (listing the known ones), or the chosen policy's
  // config. Entries after the chosen one are not validated (a newer
  // build's policy may be listed as a fallback-free preference).
  absl::StatusOr<PolicyChoice> Select(const nlohmann::json& list, absl::string_view path) const;

 private:
  mutable core::Mutex mu_;
  std::map<std::string, std::shared_ptr<PolicyFactory>, std::less<>> factories_
      ABSL_GUARDED_BY(mu_);
};

// Helpers for policies.

// A fast, seedable generator (splitmix64 stream) for pickers; one per
// thread (ThreadRandom), so random picks need no lock and share no cache
// line.
class FastRandom {
 public:
  explicit FastRandom(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0 (Lemire's multiply-shift; bias < n / 2^64).
  uint32_t Below(uint32_t n) {
    return static_cast<uint32_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }

 private:
  uint64_t state_;
};

// This thread's generator; seeded from the time and the thread on first use.
FastRandom& ThreadRandom();
// Tests: makes this thread's random picks reproducible from here on.
void ReseedThreadRandom(uint64_t seed);

// A 64-bit hash of bytes that is the same in every process and build
// (FNV-1a, then a 64-bit finalizer), so that every client of a service puts
// the same key on the same endpoint. For hash keys and ring points.
uint64_t Hash64(absl::string_view bytes, uint64_t seed = 0);

}  // namespace meshlib::lb

#endif  // MESHLIB_LB_POLICY_H_
