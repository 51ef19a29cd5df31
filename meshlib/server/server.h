// Server: serves methods by name over meshlib's protocol.
//
//   server::Server server(server::ServerOptions{});
//   server.RegisterAsync("Echo/Say", [](std::shared_ptr<server::ServerCall> call) {
//     call->Finish(absl::OkStatus(), call->request());   // on the I/O thread
//   });
//   server.RegisterSync("Db/Get", [](server::ServerCall& call, std::string* out) {
//     return LookUp(call.request(), out);                  // on a worker thread
//   });
//   absl::StatusOr<int> port = server.Start("127.0.0.1:0");
//   ...
//   server.Shutdown(absl::Seconds(5));  // drain: finish calls in flight, then close
//
// Async handlers run on the connection's reactor thread and must not block;
// they finish the call from any thread, now or later. Sync handlers run on a
// worker pool and may block.
//
// While a handler runs (a sync handler on its worker, an async handler during
// its invocation), the call's deadline is installed as the thread's
// core::CurrentDeadline(), so calls the handler makes inherit it. A sync call
// whose deadline passes while it waits for a worker is answered
// DEADLINE_EXCEEDED without running its handler, as is a call that arrives
// with no time left.
//
// Protection (see docs/resilience.md, "Server-side protection"): every server
// answers transport::kHealthCheckMethod itself (ServerOptions::health_service),
// and can cap the calls it runs at once with an adaptive limit
// (ServerOptions::adaptive_concurrency), refusing the excess at once.
//
// Threading: Register* before Start. Start, Shutdown and the accessors are
// thread-safe. ServerCall methods are thread-safe.
#ifndef MESHLIB_SERVER_SERVER_H_
#define MESHLIB_SERVER_SERVER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/core/sync.h"
#include "meshlib/metrics/metrics.h"
#include "absl/time/time.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/runtime/thread_pool.h"
#include "meshlib/server/concurrency_limiter.h"
#include "meshlib/transport/byte_stream.h"
#include "meshlib/transport/frame.h"

namespace meshlib::admin {
class AdminServer;
}  // namespace meshlib::admin

namespace meshlib::tls {
class CredentialsWatcher;
class Handshake;
}  // namespace meshlib::tls

namespace meshlib::server {

using transport::Metadata;

struct ServerOptions {
  // Reactor threads. 0 = one per CPU. Ignored when `runtime` is set.
  int io_threads = 0;
  // Share an existing runtime (e.g. with clients in the same process).
  std::shared_ptr<runtime::Runtime> runtime;
  // Reactor busy polling (see runtime::EventLoopOptions). Default off.
  // Ignored when `runtime` is set.
  absl::Duration busy_poll = absl::ZeroDuration();
  // Threads for sync handlers. Default 4.
  int worker_threads = 4;
  // Calls in flight on one connection; beyond it a request is refused with
  // RESOURCE_EXHAUSTED (marked refused: safe to retry elsewhere). Default 1000.
  uint32_t max_concurrent_streams = 1000;
  // Frame size and metadata limits, as in the protocol. Default 16 MiB frames.
  transport::FrameLimits limits;
  // A connection with no call in flight that receives nothing for this long
  // is closed (clients that connect and never send, half-sent frames).
  // Default 5 minutes.
  absl::Duration idle_timeout = absl::Minutes(5);
  // listen() backlog. Default 1024.
  int backlog = 1024;
  // Answer transport::kHealthCheckMethod ("meshlib.Health/Check") on the
  // reactor thread: OK with payload "SERVING", or UNAVAILABLE "NOT_SERVING"
  // after SetServing(false) and from the start of Shutdown. Health checks
  // take no worker, no stream slot and no adaptive-limit slot, and are never
  // shed. A handler registered for that method replaces this one. Default
  // true.
  bool health_service = true;
  // Adaptive limit on the calls served at once, across connections (see
  // concurrency_limiter.h). When enabled, a call arriving while the limit's
  // worth of calls are in flight is refused at once with RESOURCE_EXHAUSTED,
  // marked refused (never processed: a client may retry it elsewhere).
  // Default off. Validated by Start.
  AdaptiveConcurrencyOptions adaptive_concurrency;
  // Where the server's golden metrics go (meshlib_server_requests_total by
  // method and code, meshlib_server_request_duration_seconds by method;
  // see docs/metrics.md). Default: the process's registry. Null: none.
  // Must outlive the server and every call it served.
  metrics::Registry* metrics = &metrics::DefaultRegistry();
  // Opens the admin endpoint on this address at Start ("127.0.0.1:0" picks
  // a free port; see docs/metrics.md): the live page at /, /live.json,
  // /metrics, /metrics.json over `metrics` (the process's registry when
  // null), and /server.json (this server's stats). It closes when the
  // server has shut down. Empty (the default): none.
  std::string admin_address;
  // TLS on the port (tls/credentials.h, role kServer): every connection
  // starts with a TLS 1.3 handshake, with the credentials current then (so
  // rotated files apply to new connections only). With a CA in it, clients
  // must present a certificate that chains to it. Null: plaintext.
  std::shared_ptr<tls::CredentialsWatcher> tls;
  // With `tls`: the client identities (SPIFFE IDs) allowed per method; a
  // method not listed takes the watcher's options().identities (empty:
  // any client the CA signed). A caller without an identity gets
  // UNAUTHENTICATED, one not allowed PERMISSION_DENIED, naming both.
  std::map<std::string, std::vector<std::string>> method_identities;
};

// One registered method's metrics: found once, at Start.
struct ServerMethodMetrics {
  static constexpr int kCodes = 17;
  std::array<metrics::Counter*, kCodes> requests{};
  metrics::Histogram* latency = nullptr;
  void Record(const absl::Status& status, absl::Duration latency);
};

// Counters since Start; see Server::stats().
struct ServerStats {
  // Calls received for a registered method, whatever became of them (shed
  // and expired ones included). Not counted: built-in health checks, unknown
  // methods, malformed requests and refusals over max_concurrent_streams.
  int64_t calls = 0;
  // Calls being served right now (as Server::active_calls()).
  int64_t active_calls = 0;
  // Calls answered DEADLINE_EXCEEDED without running their handler: they
  // arrived with no time left, or their deadline passed while they waited
  // for a worker.
  int64_t rejected_expired = 0;
  // Calls refused by the adaptive concurrency limit.
  int64_t shed = 0;
  // The adaptive concurrency limit now; 0 when it is disabled.
  int64_t concurrency_limit = 0;
  // Health checks answered by the built-in health service.
  int64_t health_checks = 0;
  // Connections accepted, and closed, since Start.
  int64_t connections_opened = 0;
  int64_t connections_closed = 0;
  // TLS handshakes that failed (untrusted or missing client certificates,
  // plaintext or garbage clients, timeouts).
  int64_t tls_handshake_failures = 0;
};

class CallHost;
class Server;
struct CallCounter;

// One call being served. Shared by the server and the handler.
class ServerCall : public std::enable_shared_from_this<ServerCall> {
 public:
  const std::string& method() const { return request_.method; }
  const std::string& request() const { return request_.payload; }
  const Metadata& metadata() const { return request_.metadata; }
  // Value of a request metadata key, or "" when absent.
  absl::string_view MetadataValue(absl::string_view key) const;
  // When the caller stops waiting: InfiniteFuture if it sent no deadline.
  absl::Time deadline() const { return deadline_; }
  absl::Duration RemainingTime() const;
  // True once the caller cancelled, the deadline passed, or the connection
  // closed. A handler doing long work should check it.
  bool IsCancelled() const { return cancelled_.load(std::memory_order_acquire); }
  // Runs `fn` once when the call is cancelled: on the reactor thread, or
  // right away on the calling thread if the call already is cancelled.
  void OnCancel(absl::AnyInvocable<void()> fn);
  const std::string& peer() const;
  // The caller's SPIFFE ID as its TLS certificate proved it; "" on a
  // plaintext server or for a client without one.
  const std::string& peer_identity() const;
  // The reactor that owns this call's connection: for timers in async
  // handlers. Valid until the server shuts down.
  runtime::Executor& executor() const;

  // Adds metadata to the response. Before Finish.
  void AddResponseMetadata(std::string key, std::string value);
  // Tells the client when it may retry this call (response metadata
  // transport::kRetryPushbackKey, as gRPC's grpc-retry-pushback-ms): wait
  // `delay` first, rounded up to whole milliseconds. A negative or infinite
  // `delay` sends "-1": do not retry this call at all. Meant for failures
  // that a quick retry would only make worse (overload, a rate limit).
  // Replaces an earlier pushback on the same call. Before Finish.
  void SetRetryPushback(absl::Duration delay);
  // Sends the response. Once; later calls are ignored. Any thread.
  void Finish(absl::Status status, std::string response = {});

  // Made by the server only.
  ServerCall(std::shared_ptr<CallHost> conn, uint32_t stream_id,
             transport::Request request, absl::Time arrival, absl::Time deadline,
             bool sync, bool holds_limiter_slot);
  ~ServerCall();

 private:
  friend class CallHost;
  friend class ServerConnection;
  // Where a sync call is: waiting for a worker, handed to its handler, or
  // answered without running it. Async calls start kRunning.
  enum Stage : int { kQueued, kRunning, kNotRun };

  void Cancel();  // reactor thread
  // Finish, saying whether the outcome came from the handler: only then is
  // the call's latency a sample for the adaptive limit.
  void FinishInternal(absl::Status status, std::string response, bool from_handler);
  // kQueued -> `to`; false if the call already left kQueued.
  bool LeaveQueue(Stage to);
  // One holder of the call's adaptive-limit slot (its reply; for a sync
  // call also its worker) is done; the last one frees the slot.
  void DropLimiterRef();

  const std::shared_ptr<CallHost> conn_;
  const uint32_t stream_id_;
  const transport::Request request_;
  const absl::Time arrival_;  // when the request was read
  const absl::Time deadline_;
  const bool holds_limiter_slot_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> finished_{false};
  std::atomic<int> stage_;
  std::atomic<int> limiter_refs_;
  // Where this call's outcome is counted (null: no metrics). Set before the
  // handler runs.
  ServerMethodMetrics* metrics_ = nullptr;
  std::atomic<bool> latency_is_sample_{false};
  // Held for a few instructions (a metadata entry, a timer id, the cancel
  // hook) by the handler and the reactor: a spin lock.
  core::SpinLock mu_;
  Metadata response_metadata_;            // guarded by mu_
  runtime::TimerId deadline_timer_;       // guarded by mu_
  absl::AnyInvocable<void()> on_cancel_;  // guarded by mu_
};

using AsyncHandler = std::function<void(std::shared_ptr<ServerCall>)>;
using SyncHandler = std::function<absl::Status(ServerCall&, std::string* response)>;

class Server {
 public:
  explicit Server(ServerOptions options = {});
  ~Server();  // Shutdown(0) if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Errors: ALREADY_EXISTS for a duplicate method, FAILED_PRECONDITION after Start.
  absl::Status RegisterAsync(std::string method, AsyncHandler handler);
  absl::Status RegisterSync(std::string method, SyncHandler handler);

  // Binds and starts serving. `address` is "host:port"; port 0 picks a free
  // one. Returns the bound port.
  absl::StatusOr<int> Start(absl::string_view address);
  // "host:port" actually bound, after Start.
  std::string address() const;
  // The admin endpoint's address as bound, or "" without one.
  std::string admin_address() const;

  // Graceful stop: stop accepting, tell every client (GOAWAY) to send new
  // calls elsewhere, wait up to `drain_timeout` for calls in flight, then
  // close every connection (calls still running are cancelled). Blocking;
  // idempotent; must not be called from a handler.
  void Shutdown(absl::Duration drain_timeout);

  // Runs `hook` at the start of Shutdown, before the server stops accepting
  // and drains: the place to leave service discovery (see
  // server::RegisterInEtcd), so that clients stop picking this instance
  // while it still answers. Hooks run once, in the order added, on the
  // thread calling Shutdown, and should bound their own waits. A hook added
  // after Shutdown began never runs. Thread-safe.
  void AddPreShutdownHook(absl::AnyInvocable<void()> hook);

  // Calls being served right now, across connections.
  int64_t active_calls() const;
  size_t connection_count();
  ServerStats stats() const;

  // What the built-in health service answers: SERVING (true, the initial
  // state) or NOT_SERVING. Shutdown sets NOT_SERVING for good. Any thread.
  void SetServing(bool serving);

 private:
  friend class CallHost;
  friend class ServerConnection;
  friend class ServerCall;
  friend class GrpcServerConnection;
  class Acceptor;
  class Sniffer;

  struct Method {
    AsyncHandler async;
    SyncHandler sync;
    // Made at Start; owned by the CallCounter, which calls outlive.
    ServerMethodMetrics* metrics = nullptr;
  };
  const Method* FindMethod(absl::string_view name) const;
  void OnAccepted(int fd, std::string peer);
  // A connected stream (TCP, or TLS after its handshake) starts serving.
  void StartConnection(runtime::EventLoop* loop, std::unique_ptr<transport::ByteStream> stream,
                       std::string peer_identity);
  // The same for a gRPC client (HTTP/2 preface, or ALPN h2).
  void StartGrpcConnection(runtime::EventLoop* loop, std::unique_ptr<transport::ByteStream> stream,
                           std::string peer_identity);
  void ForgetSniffer(Sniffer* sniffer);
  // With TLS: whether `identity` may call `method`.
  absl::Status Authorize(const std::string& method, const std::string& identity) const;
  void OnConnectionClosed(CallHost* conn);
  bool Serving() const;

  const ServerOptions options_;
  std::shared_ptr<runtime::Runtime> runtime_;
  std::unique_ptr<runtime::ThreadPool> workers_;
  absl::flat_hash_map<std::string, Method> methods_;  // frozen at Start
  // The built-in health service answers; set at Start.
  bool builtin_health_ = false;
  std::unique_ptr<Acceptor> acceptor_;
  // Made at construction (so that the accessors never race with Start);
  // holds the adaptive limiter when it is enabled and its options are valid.
  const std::shared_ptr<CallCounter> counter_;
  // Why the adaptive_concurrency options are invalid; Start returns it.
  absl::Status limiter_error_;
  // The collector of the server's live state in options.metrics (0: none).
  int metrics_collector_ = 0;
  // ServerOptions::admin_address's server.
  std::unique_ptr<admin::AdminServer> admin_;
  std::string address_;
  std::atomic<bool> started_{false};
  std::atomic<bool> serving_{true};
  std::atomic<bool> shutting_down_{false};

  core::Mutex mu_;
  absl::flat_hash_map<CallHost*, std::shared_ptr<CallHost>> conns_
      ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<absl::AnyInvocable<void()>> pre_shutdown_hooks_ ABSL_GUARDED_BY(mu_);
  // Plaintext connections whose protocol is not known yet.
  absl::flat_hash_map<Sniffer*, std::shared_ptr<Sniffer>> sniffers_ ABSL_GUARDED_BY(mu_);
  // TLS handshakes running; Shutdown cancels them.
  absl::flat_hash_map<tls::Handshake*, std::shared_ptr<tls::Handshake>> handshakes_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace meshlib::server

#endif  // MESHLIB_SERVER_SERVER_H_
