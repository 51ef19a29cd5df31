// Registrar: keeps one service instance registered in etcd, as docs/discovery.md
// ("Self-registration") describes: key `<prefix><host:port>`, value the
// endpoint as JSON, attached to a lease that is kept alive while the
// instance runs and revoked when it stops cleanly, so that a crashed
// instance disappears when its lease expires.
//
//   etcd::RegistrarOptions o;
//   o.etcd.endpoints = {"127.0.0.1:2379"};
//   o.prefix = "/meshlib/services/echo/";
//   o.endpoint.address = "127.0.0.1:7001";
//   o.endpoint.zone = "a";
//   auto reg = etcd::Registrar::Create(std::move(o)).value();  // registers in the background
//   reg->WaitUntilRegistered(absl::Seconds(5));                  // optional
//   ...
//   reg->Stop();  // revokes the lease (deleting the key), waiting at most revoke_timeout
//
// For a meshlib Server, server::RegisterInEtcd (meshlib/server/etcd_registration.h)
// does this and deregisters at the start of Server::Shutdown, before draining.
//
// What it does: grant a lease of `ttl`; put the key with it; send a
// keep-alive every ttl/3. A keep-alive answered with TTL 0 means etcd lost
// the lease (it expired while etcd was unreachable, or someone revoked it):
// the registrar grants a new one and puts the key again. Failed requests are
// retried with a jittered backoff, and each is counted and logged; the
// registrar never gives up until stopped.
//
// Threading: all public methods are thread-safe, except that Stop and the
// destructor must not run on the registrar's loop thread (they wait on it).
#ifndef MESHLIB_ETCD_REGISTRAR_H_
#define MESHLIB_ETCD_REGISTRAR_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "meshlib/core/backoff.h"
#include "meshlib/core/sync.h"
#include "meshlib/discovery/endpoint.h"
#include "meshlib/etcd/etcd_client.h"
#include "meshlib/runtime/event_loop.h"

namespace meshlib::etcd {

struct RegistrarOptions {
  // Where etcd is, and request timeouts (see EtcdClientOptions). Required.
  // The timeouts are capped at ttl/2, so that a request that hangs gives up
  // in time for another try before the lease expires.
  EtcdClientOptions etcd;
  // Key prefix of the service, e.g. "/meshlib/services/echo/". Required.
  std::string prefix;
  // The instance. `address` is required, a host:port literal clients can
  // dial (it is also the key's suffix); weight, priority, zone and metadata
  // go into the value.
  discovery::Endpoint endpoint;
  // Lease TTL, rounded up to whole seconds; etcd may raise it to its own
  // minimum. How long a crashed instance stays listed. Default 10s; 1s to 1h.
  absl::Duration ttl = absl::Seconds(10);
  // Between keep-alives. Default (zero): ttl / 3. At most ttl / 2.
  absl::Duration keepalive_interval = absl::ZeroDuration();
  // How long Stop waits for the revoke before leaving the key to its lease.
  // Default 2s.
  absl::Duration revoke_timeout = absl::Seconds(2);
  // Delays between retries of failed requests. Default 100ms, growing x1.6
  // up to 2s, +-20% jitter.
  core::BackoffOptions retry = {absl::Milliseconds(100), 1.6, 0.2, absl::Seconds(2)};
  // Jitter seed; 0 = from the time.
  uint64_t seed = 0;
};

struct RegistrarStats {
  bool registered = false;  // the key is (as far as we know) in etcd
  int64_t lease_id = 0;     // current lease, 0 when none
  uint64_t grants = 0;      // leases granted
  uint64_t puts = 0;        // successful puts of the key
  uint64_t keepalives = 0;  // successful keep-alives
  uint64_t leases_lost = 0; // keep-alives that found the lease gone
  uint64_t errors = 0;      // failed requests
  absl::Status last_error;
};

class Registrar {
 public:
  // Validates the options and starts registering on `loop` (nullptr: the
  // registrar runs its own loop thread). `loop` must outlive the registrar.
  static absl::StatusOr<std::unique_ptr<Registrar>> Create(RegistrarOptions options,
                                                           runtime::EventLoop* loop = nullptr);
  // Stop() if not stopped yet.
  ~Registrar();
  Registrar(const Registrar&) = delete;
  Registrar& operator=(const Registrar&) = delete;

  // Stops keeping the lease alive and revokes it, which deletes the key.
  // Waits up to revoke_timeout; OK if the revoke succeeded (or there was
  // nothing to revoke), else why not (the key then lives until its lease
  // expires). Idempotent: later calls return the first result.
  absl::Status Stop();

  // True as soon as the key is in etcd (as far as the registrar knows);
  // false if it is not within `timeout`.
  bool WaitUntilRegistered(absl::Duration timeout);
  RegistrarStats stats() const;
  const std::string& key() const { return key_; }
  const std::string& value() const { return value_; }

 private:
  Registrar(RegistrarOptions options, std::unique_ptr<runtime::EventLoop> own_loop,
            runtime::EventLoop* loop);

  // Loop thread only.
  void Grant();
  void Put();
  void KeepAlive();
  void Revoke(std::shared_ptr<core::Notification> done, std::shared_ptr<absl::Status> result);
  void Retry(const absl::Status& st, const char* doing, void (Registrar::*next)());
  void SetRegistered(bool registered);

  const RegistrarOptions options_;
  const std::string key_;
  const std::string value_;
  const int64_t ttl_seconds_;
  const absl::Duration keepalive_interval_;
  std::unique_ptr<runtime::EventLoop> own_loop_;
  runtime::EventLoop* const loop_;

  // Loop thread only.
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<EtcdCall> call_;
  runtime::TimerId timer_;
  core::Backoff backoff_;
  int64_t lease_id_ = 0;
  bool stopping_ = false;

  mutable core::Mutex mu_;
  std::condition_variable registered_cv_;  // with mu_.native()
  RegistrarStats stats_ ABSL_GUARDED_BY(mu_);

  // Serialises Stop calls; never taken on the loop thread.
  core::Mutex stop_mu_;
  bool stopped_ ABSL_GUARDED_BY(stop_mu_) = false;
  absl::Status stop_result_ ABSL_GUARDED_BY(stop_mu_);
};

}  // namespace meshlib::etcd

#endif  // MESHLIB_ETCD_REGISTRAR_H_
