// Resolvers and Discovery: where a service's endpoint set comes from.
//
// One Resolver per discovery kind ("static", "file", "dns", "etcd"; users may
// register more) turns the `discovery` object of a service in mesh.json into
// a stream of endpoint sets. A Discovery owns one resolver and is what the
// rest of meshlib talks to: it keeps the last good set, counts updates and
// errors, and pushes new sets to subscribers on the control-plane loop, never
// on the request path.
//
//   auto d = discovery::Discovery::Create(
//       "echo", {{"dns", {{"name", "_echo._tcp.mesh.test"}}}}, control_loop).value();
//   d->Subscribe([](std::shared_ptr<const discovery::EndpointSet> set) { ... });
//   std::shared_ptr<const discovery::EndpointSet> now = d->Current();
//
// The rule every resolver follows: on any failure it reports the error and
// publishes nothing, so subscribers keep the last good set. A resolver
// publishes an empty set only when the source says so authoritatively (e.g.
// every instance deregistered from etcd), never because it hiccuped.
//
// Threading: Resolver methods run on the control loop only. Discovery's
// public methods are thread-safe; subscriber callbacks run on the control
// loop, in order, and must not block.
#ifndef MESHLIB_DISCOVERY_RESOLVER_H_
#define MESHLIB_DISCOVERY_RESOLVER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/core/sync.h"
#include "meshlib/discovery/endpoint.h"
#include "meshlib/runtime/event_loop.h"
#include "nlohmann/json.hpp"

namespace meshlib::discovery {

// Where a resolver reports. Loop thread only.
class ResolverSink {
 public:
  virtual ~ResolverSink() = default;
  // A complete, good endpoint set (replaces the previous one).
  virtual void Publish(std::vector<Endpoint> endpoints) = 0;
  // Something went wrong; the last good set stays. The message names the
  // source and what was wrong with it.
  virtual void ReportError(absl::Status error) = 0;
};

class Resolver {
 public:
  // Destroyed on the control loop; must cancel its timers and fds.
  virtual ~Resolver() = default;
  // Called once on the control loop; reports to `sink` from then on until
  // destroyed. `sink` outlives the resolver.
  virtual void Start(ResolverSink* sink) = 0;
};

struct ResolverArgs {
  std::string service;  // for messages
  // The kind's own object, e.g. {"name": "_echo._tcp.mesh.test"} for dns.
  nlohmann::json config;
  // Its path in mesh.json, e.g. "services.echo.discovery.dns", for errors.
  std::string path;
  runtime::EventLoop* loop = nullptr;  // the control loop
  uint64_t seed = 0;                   // for jitter; 0 = from the time
};

class ResolverFactory {
 public:
  virtual ~ResolverFactory() = default;
  virtual std::string kind() const = 0;
  // Checks the kind's config object; errors name `path` and the rule.
  virtual absl::Status Validate(const nlohmann::json& config, absl::string_view path) const = 0;
  virtual absl::StatusOr<std::unique_ptr<Resolver>> Create(const ResolverArgs& args) const = 0;
};

// Discovery kinds by name. Global() starts with the built-in kinds.
class ResolverRegistry {
 public:
  // Every built-in kind, and those added by AddToGlobal before it was
  // first read; immutable from then on. Defined in //meshlib/discovery.
  static const ResolverRegistry& Global();
  // Adds a kind to Global(), at start-up: once Global() has been read (a
  // configuration parsed, a discovery made) it is FAILED_PRECONDITION.
  static absl::Status AddToGlobal(std::unique_ptr<ResolverFactory> factory);
  // Replaces a kind of the same name. Thread-safe.
  void Register(std::unique_ptr<ResolverFactory> factory);
  // nullptr when unknown. The factory lives as long as the registry.
  const ResolverFactory* Find(absl::string_view kind) const;
  std::vector<std::string> Kinds() const;

  // Validates a whole `discovery` object ({"<kind>": {...}}) at `path`.
  absl::Status ValidateDiscovery(const nlohmann::json& discovery, absl::string_view path) const;

 private:
  mutable core::Mutex mu_;
  std::map<std::string, std::shared_ptr<ResolverFactory>, std::less<>> factories_
      ABSL_GUARDED_BY(mu_);
};

struct DiscoveryStats {
  uint64_t updates = 0;  // sets published
  uint64_t errors = 0;   // errors reported
  absl::Status last_error;  // OK when none yet
  absl::Time last_update = absl::InfinitePast();
  absl::Time last_error_time = absl::InfinitePast();
};

class Discovery {
 public:
  using Callback = std::function<void(std::shared_ptr<const EndpointSet>)>;

  // `discovery` is the service's `discovery` object ({"<kind>": {...}});
  // `path` is its path in mesh.json for messages. The resolver starts on
  // `loop`, which must outlive the Discovery.
  static absl::StatusOr<std::unique_ptr<Discovery>> Create(
      std::string service, const nlohmann::json& discovery, runtime::EventLoop* loop,
      std::string path = "", const ResolverRegistry& registry = ResolverRegistry::Global(),
      uint64_t seed = 0);
  // Stops the resolver (waits for the control loop when called elsewhere).
  ~Discovery();

  // The last good set; nullptr until the first one.
  std::shared_ptr<const EndpointSet> Current() const;
  DiscoveryStats stats() const;
  const std::string& kind() const { return kind_; }

  // `cb` runs on the control loop with the current set (if any) soon after
  // this call, then with every new one. Returns an id for Unsubscribe.
  uint64_t Subscribe(Callback cb);
  // After this returns, `cb` is not running and will not run again (unless
  // called from inside the callback itself, which is allowed).
  void Unsubscribe(uint64_t id);

  // Blocks until a set is available (true) or `timeout` passes (false).
  bool WaitForEndpoints(absl::Duration timeout) const;

 private:
  class Sink;
  Discovery(std::string service, std::string kind, runtime::EventLoop* loop);

  const std::string service_;
  const std::string kind_;
  runtime::EventLoop* const loop_;
  std::unique_ptr<Sink> sink_;
  std::unique_ptr<Resolver> resolver_;  // loop thread only

  mutable core::Mutex mu_;
  mutable std::condition_variable cv_;  // with mu_.native()
  std::shared_ptr<const EndpointSet> current_ ABSL_GUARDED_BY(mu_);
  DiscoveryStats stats_ ABSL_GUARDED_BY(mu_);
  struct Subscriber {
    Callback cb;
    const EndpointSet* delivered = nullptr;  // loop thread only
  };
  std::map<uint64_t, std::shared_ptr<Subscriber>> subscribers_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace meshlib::discovery

#endif  // MESHLIB_DISCOVERY_RESOLVER_H_
