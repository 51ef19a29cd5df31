#include "meshlib/etcd/registrar.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "meshlib/core/log.h"

namespace meshlib::etcd {

absl::StatusOr<std::unique_ptr<Registrar>> Registrar::Create(RegistrarOptions options,
                                                             runtime::EventLoop* loop) {
  if (absl::Status st = options.etcd.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("etcd registration: etcd.", st.message()));
  }
  if (options.prefix.empty()) {
    return absl::InvalidArgumentError("etcd registration: prefix: must not be empty");
  }
  absl::StatusOr<std::string> address = discovery::CanonicalAddress(options.endpoint.address);
  if (!address.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("etcd registration: endpoint.address: ",
                                                   address.status().message()));
  }
  options.endpoint.address = *address;
  if (options.ttl < absl::Seconds(1) || options.ttl > absl::Hours(1)) {
    return absl::InvalidArgumentError("etcd registration: ttl: must be between 1s and 1h");
  }
  if (options.keepalive_interval < absl::ZeroDuration() ||
      options.keepalive_interval > options.ttl / 2) {
    return absl::InvalidArgumentError(
        "etcd registration: keepalive_interval: must be between 0 (ttl/3) and ttl/2");
  }
  if (options.revoke_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("etcd registration: revoke_timeout: must be > 0");
  }
  if (absl::Status st = options.retry.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("etcd registration: retry.", st.message()));
  }
  std::unique_ptr<runtime::EventLoop> own;
  if (loop == nullptr) {
    auto l = runtime::EventLoop::Create("etcd-registrar");
    if (!l.ok()) return l.status();
    own = *std::move(l);
    loop = own.get();
  }
  std::unique_ptr<Registrar> r(new Registrar(std::move(options), std::move(own), loop));
  // A request that hangs must give up in time for another try before the
  // lease runs out: a keepalive sent at ttl/3 that times out at ttl/3 +
  // ttl/2 still leaves a retry before the lease expires.
  EtcdClientOptions client_options = r->options_.etcd;
  client_options.request_timeout = std::min(client_options.request_timeout, r->options_.ttl / 2);
  client_options.dial_timeout = std::min(client_options.dial_timeout, r->options_.ttl / 2);
  auto client = EtcdClient::Create(loop, client_options);
  if (!client.ok()) return client.status();
  Registrar* raw = r.get();
  loop->Post([raw, client = *std::move(client)]() mutable {
    raw->client_ = std::move(client);
    raw->Grant();
  });
  return r;
}

Registrar::Registrar(RegistrarOptions options, std::unique_ptr<runtime::EventLoop> own_loop,
                     runtime::EventLoop* loop)
    : options_(std::move(options)),
      key_(absl::StrCat(options_.prefix, options_.endpoint.address)),
      value_(discovery::EndpointToJson(options_.endpoint).dump()),
      ttl_seconds_(absl::ToInt64Seconds(absl::Ceil(options_.ttl, absl::Seconds(1)))),
      keepalive_interval_(options_.keepalive_interval > absl::ZeroDuration()
                              ? options_.keepalive_interval
                              : options_.ttl / 3),
      own_loop_(std::move(own_loop)),
      loop_(loop),
      backoff_(options_.retry, options_.seed != 0
                                   ? options_.seed
                                   : static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()))) {}

Registrar::~Registrar() {
  Stop().IgnoreError();
  loop_->RunAndWait([this] {
    loop_->Cancel(timer_);
    call_.reset();
    client_.reset();
  });
  own_loop_.reset();
}

void Registrar::Grant() {
  if (stopping_) return;
  call_ = client_->LeaseGrant(ttl_seconds_, [this](absl::StatusOr<Lease> r) {
    if (!r.ok()) return Retry(r.status(), "granting a lease", &Registrar::Grant);
    lease_id_ = r->id;
    {
      core::MutexLock lock(&mu_);
      ++stats_.grants;
      stats_.lease_id = lease_id_;
    }
    Put();
  });
}

void Registrar::Put() {
  if (stopping_) return;
  call_ = client_->Put(key_, value_, lease_id_, [this](absl::StatusOr<int64_t> r) {
    if (!r.ok()) {
      if (r.status().code() == absl::StatusCode::kNotFound) {
        // The lease expired before the key was attached to it.
        lease_id_ = 0;
        return Retry(r.status(), "putting the key", &Registrar::Grant);
      }
      return Retry(r.status(), "putting the key", &Registrar::Put);
    }
    {
      core::MutexLock lock(&mu_);
      ++stats_.puts;
    }
    backoff_.Reset();
    SetRegistered(true);
    core::Log(core::LogLevel::kInfo,
              absl::StrCat("etcd: registered ", key_, " with lease ", lease_id_, " (ttl ",
                           ttl_seconds_, "s) at ", client_->preferred_endpoint()));
    timer_ = loop_->RunAfter(keepalive_interval_, [this] { KeepAlive(); });
  });
}

void Registrar::KeepAlive() {
  if (stopping_) return;
  call_ = client_->LeaseKeepAlive(lease_id_, [this](absl::StatusOr<int64_t> ttl) {
    if (!ttl.ok()) return Retry(ttl.status(), "keeping the lease alive", &Registrar::KeepAlive);
    if (*ttl <= 0) {
      {
        core::MutexLock lock(&mu_);
        ++stats_.leases_lost;
        stats_.lease_id = 0;
      }
      SetRegistered(false);
      core::Log(core::LogLevel::kWarning,
                absl::StrCat("etcd: lease ", lease_id_, " of ", key_,
                             " is gone (expired or revoked); registering again"));
      lease_id_ = 0;
      Grant();
      return;
    }
    {
      core::MutexLock lock(&mu_);
      ++stats_.keepalives;
    }
    backoff_.Reset();
    timer_ = loop_->RunAfter(keepalive_interval_, [this] { KeepAlive(); });
  });
}

void Registrar::Retry(const absl::Status& st, const char* doing, void (Registrar::*next)()) {
  absl::Duration delay = backoff_.Next();
  {
    core::MutexLock lock(&mu_);
    ++stats_.errors;
    stats_.last_error = st;
  }
  core::Log(core::LogLevel::kWarning,
            absl::StrCat("etcd registration of ", key_, ": ", doing, ": ", st.ToString(),
                         "; retrying in ", absl::FormatDuration(delay)));
  timer_ = loop_->RunAfter(delay, [this, next] { (this->*next)(); });
}

void Registrar::SetRegistered(bool registered) {
  {
    core::MutexLock lock(&mu_);
    stats_.registered = registered;
  }
  registered_cv_.notify_all();
}

void Registrar::Revoke(std::shared_ptr<core::Notification> done,
                       std::shared_ptr<absl::Status> result) {
  const int64_t id = lease_id_;
  call_ = client_->LeaseRevoke(id, [this, id, done, result](absl::Status st) {
    if (st.ok()) {
      lease_id_ = 0;
      {
        core::MutexLock lock(&mu_);
        stats_.lease_id = 0;
      }
      SetRegistered(false);
      core::Log(core::LogLevel::kInfo,
                absl::StrCat("etcd: deregistered ", key_, " (revoked lease ", id, ")"));
    }
    *result = std::move(st);
    done->Notify();
  });
}

absl::Status Registrar::Stop() {
  core::MutexLock stop_lock(&stop_mu_);
  if (stopped_) return stop_result_;
  stopped_ = true;
  auto done = std::make_shared<core::Notification>();
  auto result = std::make_shared<absl::Status>();
  loop_->Post([this, done, result] {
    stopping_ = true;
    loop_->Cancel(timer_);
    call_.reset();
    if (lease_id_ == 0 || client_ == nullptr) {
      done->Notify();  // nothing granted, nothing to revoke
      return;
    }
    Revoke(done, result);
  });
  const bool finished = done->WaitForNotificationWithTimeout(options_.revoke_timeout);
  // Whatever is still in flight stops here; the lease then expires by itself.
  loop_->RunAndWait([this] { call_.reset(); });
  if (finished) {
    stop_result_ = *result;
  } else {
    stop_result_ = absl::DeadlineExceededError(
        absl::StrCat("etcd: revoking the lease of ", key_, " took more than ",
                     absl::FormatDuration(options_.revoke_timeout),
                     "; the key stays until its lease expires"));
  }
  if (!stop_result_.ok()) {
    core::Log(core::LogLevel::kWarning, std::string(stop_result_.message()));
  }
  return stop_result_;
}

bool Registrar::WaitUntilRegistered(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_.native());
  return registered_cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                                 [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                   return stats_.registered;
                                 });
}

RegistrarStats Registrar::stats() const {
  core::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace meshlib::etcd
