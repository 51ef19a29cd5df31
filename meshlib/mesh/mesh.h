// Mesh and Client: the API an application uses.
//
//   auto mesh = meshlib::mesh::Mesh::Open("mesh.json").value();  // loads, then watches it
//   std::shared_ptr<meshlib::mesh::Client> echo = mesh->Client("echo").value();
//   meshlib::client::CallOptions o;
//   o.idempotent = true;
//   meshlib::client::CallResult r = echo->CallBlocking("Echo/Say", "hi", o);
//   std::cout << echo->Describe();
//
// A Mesh owns what its clients share: the reactor threads, a control loop,
// one Discovery per service (so routing subsets and configuration reloads
// watch a source once), and a pool of connections by endpoint address. A
// Client is the service's stack of layers, built in one function
// (BuildStack in mesh.cc), top to bottom:
//
//   interceptors     the application's own (auth headers, logging), in the
//                    order added
//   routing          the first matching route picks a subset, or a weighted
//                    split between subsets; no route: every endpoint
//   fault            the route's fault injection, else the service's
//   deadline, retry, hedging, circuit breaker, balancer, endpoint health,
//   pool             a client::ServiceChannel per subset (see
//                    meshlib/client/service_channel.h and docs/resilience.md)
//
// Describe() prints it with the effective settings.
//
// Configuration changes without a restart: Mesh::Open watches its file
// (and MeshOptions::etcd_config an etcd key); Apply() takes a new document
// directly. A valid document replaces every client's stack: calls already
// in flight finish on the stack they started on, new calls take the new
// one, and the old stack closes once its calls are done (or the mesh's
// drain_timeout passes). Connections are pooled by address, so a reload
// does not reconnect. An invalid document is rejected with its errors
// (ReloadStats::last_error) and the old configuration stays.
//
// Threading: all methods are thread-safe. A Client may be used from any
// thread and outlives a reload. Dropping a Client lets its calls in flight
// finish on their stack (bounded by their deadlines and the mesh's
// drain_timeout); destroying the Mesh ends them (see ~Mesh). Blocking calls
// (CallBlocking, Mesh::Client, Mesh::Apply) made on a reactor thread, i.e.
// inside a callback, fail at once with FAILED_PRECONDITION instead of
// waiting on the thread that would have to answer them.
#ifndef MESHLIB_MESH_MESH_H_
#define MESHLIB_MESH_MESH_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/client/caller.h"
#include "meshlib/client/layers/tracing_layer.h"
#include "meshlib/client/endpoint_channel.h"
#include "meshlib/client/endpoint_state.h"
#include "meshlib/config/config.h"
#include "meshlib/core/rcu.h"
#include "meshlib/metrics/metrics.h"
#include "meshlib/runtime/executor.h"

namespace meshlib::admin {
class AdminServer;
}  // namespace meshlib::admin

namespace meshlib::mesh {

// An application's hook around every call of a Client: adds metadata (an
// auth header), logs, measures. Interceptors run at the top of the stack,
// before routing, in the order they were added; After runs in reverse
// order. They must be thread-safe and must not block.
class Interceptor {
 public:
  virtual ~Interceptor() = default;
  // Shown by Describe().
  virtual std::string name() const = 0;
  // Before the call goes down the stack. May change the options (metadata,
  // timeout, idempotent, hash key). A non-OK status fails the call with it,
  // without sending anything.
  virtual absl::Status Before(absl::string_view method, client::CallOptions& options) {
    return absl::OkStatus();
  }
  // With the result, before the caller sees it (may change it). On the
  // thread that completes the call.
  virtual void After(absl::string_view method, const client::CallOptions& options,
                     client::CallResult& result, absl::Duration latency) {}
};

struct RouteStats {
  std::string name;
  uint64_t calls = 0;
  // Calls per subset of the route's split.
  std::vector<std::pair<std::string, uint64_t>> by_subset;
};

struct ClientStats {
  uint64_t generation = 0;  // configuration generation of the current stack
  uint64_t calls = 0;
  uint64_t unrouted = 0;    // calls no route matched (sent to every endpoint)
  std::vector<RouteStats> routes;  // the current configuration's routes
  uint64_t faults_delayed = 0, faults_aborted = 0;
  // Summed over the current stack's channels and every stack it replaced.
  uint64_t retries = 0, transparent_retries = 0, retries_denied = 0;
  uint64_t hedges = 0, hedges_denied = 0, breaker_overflows = 0, pushback_stops = 0;
  uint64_t ejections = 0;
  std::string policy;
};

struct ReloadStats {
  uint64_t generation = 0;  // 1 for the first configuration
  uint64_t applied = 0;     // reloads applied (the first load not counted)
  uint64_t rejected = 0;    // documents rejected (invalid)
  absl::Status last_error;  // of the last rejected document
  absl::Time last_applied = absl::InfinitePast();
};

namespace internal {
struct MeshCore;
struct Stack;
class Watcher;
}  // namespace internal

class Client final : public client::Caller {
 public:
  ~Client() override;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  client::CallHandle Call(absl::string_view method, absl::string_view request,
                          const client::CallOptions& options, client::CallCallback done) override;
  client::CallResult CallBlocking(absl::string_view method, absl::string_view request,
                                  const client::CallOptions& options = {}) override;

  // Adds `interceptor` below those added before (it sees the call after
  // them). Applies to calls that start afterwards.
  void AddInterceptor(std::shared_ptr<Interceptor> interceptor);

  // The stack, top to bottom, with effective settings and endpoint counts.
  std::string Describe() const;
  ClientStats stats() const;
  // Every endpoint of the service (all subsets) with its health.
  std::vector<client::EndpointState> EndpointStates() const;
  // Blocks until the service has endpoints (true) or `timeout` passes.
  bool WaitForEndpoints(absl::Duration timeout) const;
  const std::string& service() const { return service_; }

  // Made by Mesh::Client.
  Client(std::string service, std::shared_ptr<internal::MeshCore> core,
         std::shared_ptr<const internal::Stack> stack);

 private:
  friend struct internal::MeshCore;
  friend class Mesh;
  std::shared_ptr<const internal::Stack> stack() const;
  // `shares_channels`: `next` keeps the old stack's channels (a new
  // interceptor), so retiring the old one must not close them.
  void Replace(std::shared_ptr<const internal::Stack> next, bool shares_channels);

  const std::string service_;
  const std::shared_ptr<internal::MeshCore> core_;
  // Read by every call without a lock; replaced under MeshCore::apply_mu.
  core::RcuPtr<std::shared_ptr<const internal::Stack>> stack_;
};

struct MeshOptions {
  // A file to watch for new versions of the configuration (Open sets it to
  // the file it loads). Empty: none.
  std::string watch_path;
  // An etcd key holding the configuration document, watched like
  // discovery: each valid new value is applied. Empty endpoints: none.
  std::vector<std::string> etcd_endpoints;
  std::string etcd_key;
  // How often Open's file is checked for changes (stat; read when its
  // size, time or inode changed). Default 200ms.
  absl::Duration file_poll_interval = absl::Milliseconds(200);
  // Makes the connection to one endpoint. Null: a pooled client::Channel
  // (TCP). Tests and benchmarks plug in other transports (e.g.
  // testing::InMemoryChannel).
  std::function<absl::StatusOr<std::shared_ptr<client::EndpointChannel>>(const std::string&)>
      channel_factory;
  // Longest a new stack waits for its first endpoints before it replaces
  // the old one on a reload (the old one keeps serving meanwhile). Default
  // 2s.
  absl::Duration ready_timeout = absl::Seconds(2);
  // Where calls wait (retry backoff, hedge delay, injected delay) and the
  // clock their layers read (see client::ServiceChannelOptions::timers):
  // tests pass a testing::FakeExecutor as both. Null: the mesh's reactors
  // and the wall clock. Both must outlive the mesh.
  runtime::Executor* timers = nullptr;
  runtime::Clock* clock = nullptr;
  // Where the services' golden metrics go (meshlib_client_*: requests by
  // method and code, their latency, attempts by endpoint and code; see
  // docs/metrics.md). Default: the process's registry, which echo_server's
  // and meshcall's --admin_port expose. Null: none recorded. Must outlive
  // the mesh.
  metrics::Registry* metrics = &metrics::DefaultRegistry();
  // Receives a span for every call and every attempt as it ends (see
  // client/layers/tracing_layer.h: ids, endpoint, attempt number, times,
  // status). With one, a call that is not part of a trace starts one (a
  // traceparent in its metadata), so every call can be followed to the
  // server. Empty: none, and no trace is started.
  client::SpanExporter span_exporter;
  // Opens the admin endpoint on this address ("127.0.0.1:0" picks a free
  // port; see docs/metrics.md): the live page at /, /live.json, /metrics,
  // /metrics.json over `metrics` (the process's registry when null), and
  // this mesh's /stacks (every client's Describe()) and /endpoints.json
  // (every endpoint with its health). Empty (the default): none.
  std::string admin_address;
};

class Mesh {
 public:
  static absl::StatusOr<std::unique_ptr<Mesh>> Create(config::MeshConfig config,
                                                      MeshOptions options = {});
  // Loads `path` and watches it: a changed valid document is applied, an
  // invalid one rejected (see reload_stats()).
  static absl::StatusOr<std::unique_ptr<Mesh>> Open(const std::string& path,
                                                    MeshOptions options = {});
  // Ends every call still in flight, exactly once, with CANCELLED:
  // callback calls (their callbacks run before this returns, or are
  // running on a reactor thread), blocking calls (they return), calls
  // waiting on a backoff or hedge delay. Clients kept afterwards fail every
  // call at once with CANCELLED. Any thread, including a call's callback:
  // what must wait (joining threads) moves off a reactor thread.
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  // The client of `service` (one per service, shared). NOT_FOUND when the
  // configuration has no such service; a build error (e.g. a discovery
  // source that cannot start) as is. The first call for a service waits
  // (up to MeshOptions::ready_timeout) for its endpoints; get clients at
  // start-up, not from a call's callback.
  absl::StatusOr<std::shared_ptr<mesh::Client>> Client(absl::string_view service);

  // Applies a new configuration to every client (see above). Blocking;
  // returns the first error of building the new stacks, in which case
  // nothing changed.
  absl::Status Apply(config::MeshConfig config);
  ReloadStats reload_stats() const;
  std::shared_ptr<const config::MeshConfig> config() const;
  // The admin endpoint's address as bound ("127.0.0.1:PORT"), or "" when
  // MeshOptions::admin_address asked for none.
  std::string admin_address() const;

 private:
  explicit Mesh(std::shared_ptr<internal::MeshCore> core);

  std::shared_ptr<internal::MeshCore> core_;
  std::unique_ptr<internal::Watcher> watcher_;
  // MeshOptions::admin_address's server; stopped first when the mesh goes.
  std::unique_ptr<admin::AdminServer> admin_;
  // The collector of the mesh's live state in options.metrics (0: none).
  int metrics_collector_ = 0;
};

}  // namespace meshlib::mesh

#endif  // MESHLIB_MESH_MESH_H_
