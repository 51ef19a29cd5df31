#include "meshlib/client/service_channel.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/core/log.h"

namespace meshlib::client {

namespace {

constexpr absl::Duration kDrainCheck = absl::Milliseconds(50);

// Whether a failed attempt may go once more to another endpoint without any
// retry policy: the request provably never reached a handler (refused by a
// draining server, connection never established), so even a call that is
// not idempotent is safe to send again. gRPC calls this a transparent retry.
bool TransparentlyRetryable(const CallResult& r) { return !r.status.ok() && r.not_processed; }

}  // namespace

ServiceChannel::ServiceChannel(std::string service, ServiceChannelOptions options)
    : service_(std::move(service)), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<ServiceChannel>> ServiceChannel::Create(
    std::string service, const nlohmann::json& discovery, ServiceChannelOptions options) {
  if (auto st = options.channel.Validate(); !st.ok()) return st;
  if (options.drain_timeout <= absl::ZeroDuration()) {
    options.drain_timeout = std::min(options.channel.default_timeout, absl::Minutes(5));
  }
  if (options.config_path.empty()) options.config_path = absl::StrCat("services.", service);
  if (options.lb_context.clock == nullptr) options.lb_context.clock = &runtime::RealClock();
  if (options.lb_context.seed == 0) options.lb_context.seed = options.seed;
  auto choice = lb::PolicyRegistry::Global().Select(
      options.load_balancer, absl::StrCat(options.config_path, ".load_balancer"));
  if (!choice.ok()) return choice.status();
  auto policy = choice->factory->Create(choice->config, choice->path, options.lb_context);
  if (!policy.ok()) return policy.status();
  resilience::CircuitBreakerOptions breaker;
  if (!options.circuit_breaker.is_null()) {
    auto parsed = resilience::ParseCircuitBreaker(
        options.circuit_breaker, absl::StrCat(options.config_path, ".circuit_breaker"));
    if (!parsed.ok()) return parsed.status();
    breaker = *parsed;
  }
  resilience::RetryPolicy retry;
  if (!options.retry.is_null()) {
    auto parsed = resilience::ParseRetryPolicy(options.retry,
                                               absl::StrCat(options.config_path, ".retry"));
    if (!parsed.ok()) return parsed.status();
    retry = *std::move(parsed);
  }

  if (options.channel.runtime == nullptr) {
    auto rt = runtime::Runtime::Create(options.channel.io_threads, absl::StrCat(service, "-io"),
                                       runtime::EventLoopOptions{options.channel.busy_poll});
    if (!rt.ok()) return rt.status();
    options.channel.runtime = *std::move(rt);
  }
  std::unique_ptr<ServiceChannel> sc(new ServiceChannel(service, options));
  sc->policy_ = *std::move(policy);
  sc->retry_ = retry;
  sc->budget_ = std::make_unique<resilience::RetryBudget>(retry.budget, &runtime::RealClock());
  sc->breaker_ = std::make_unique<resilience::CircuitBreaker>(breaker, service);
  if (options.control_loop != nullptr) {
    sc->control_ = options.control_loop;
  } else {
    auto loop = runtime::EventLoop::Create(absl::StrCat(service, "-ctl"));
    if (!loop.ok()) return loop.status();
    sc->control_ = std::shared_ptr<runtime::EventLoop>(std::move(*loop));
  }
  auto d = discovery::Discovery::Create(service, discovery, sc->control_.get(),
                                        absl::StrCat(options.config_path, ".discovery"),
                                        discovery::ResolverRegistry::Global(), options.seed);
  if (!d.ok()) return d.status();
  sc->discovery_ = *std::move(d);
  ServiceChannel* raw = sc.get();
  sc->subscription_ = sc->discovery_->Subscribe(
      [raw](std::shared_ptr<const discovery::EndpointSet> set) { raw->Apply(std::move(set)); });
  return sc;
}

ServiceChannel::~ServiceChannel() {
  // Retries waiting out their backoff end with CANCELLED instead of
  // starting; wait for their timers (each at most one backoff away).
  closing_.store(true, std::memory_order_release);
  absl::Time give_up = absl::Now() + retry_.backoff_max + absl::Seconds(1);
  while (pending_retries_.load(std::memory_order_acquire) > 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  discovery_->Unsubscribe(subscription_);
  discovery_.reset();
  control_->RunAndWait([this] {
    control_->Cancel(drain_timer_);
    // Channels close here, off the request path; calls still in flight on
    // them complete with CANCELLED.
    snapshot_.Update(nullptr);
    members_.clear();
    draining_.clear();
  });
}

void ServiceChannel::Apply(std::shared_ptr<const discovery::EndpointSet> set) {
  auto snap = std::make_unique<Snapshot>();
  std::map<std::string, Member, std::less<>> next;
  std::vector<discovery::Endpoint> kept;
  std::vector<lb::LbEndpoint> lb_endpoints;
  kept.reserve(set->size());
  lb_endpoints.reserve(set->size());
  for (const discovery::Endpoint& e : set->endpoints()) {
    Member m;
    if (auto it = members_.find(e.address); it != members_.end()) {
      m = it->second;
    } else {
      auto created = Channel::Create(e.address, options_.channel);
      if (!created.ok()) {
        // Discovery validated the address; this is a resource failure.
        core::Log(core::LogLevel::kWarning,
                  absl::StrCat(service_, ": cannot open a channel to ", e.address, ": ",
                               created.status().ToString()));
        continue;
      }
      m.channel = std::shared_ptr<Channel>(std::move(*created));
      m.channel->Connect();
      m.stats = std::make_shared<lb::EndpointStats>(policy_->StatsOptions());
    }
    kept.push_back(e);
    lb_endpoints.push_back(lb::LbEndpoint{e, m.stats, true});
    snap->members.push_back(m);
    next.emplace(e.address, std::move(m));
  }
  if (kept.size() != set->size()) set = discovery::EndpointSet::Create(std::move(kept));
  snap->set = set;
  snap->picker = policy_->Build(lb_endpoints);
  for (auto& [addr, m] : members_) {
    if (!next.count(addr)) draining_.push_back({m.channel, absl::Now() + options_.drain_timeout});
  }
  members_ = std::move(next);
  std::vector<std::string> addresses;
  std::map<std::string, std::shared_ptr<lb::EndpointStats>, std::less<>> stats;
  for (const auto& [addr, m] : members_) {
    addresses.push_back(addr);
    stats.emplace(addr, m.stats);
  }
  size_t count = snap->members.size();
  // Waits (briefly) for calls still picking from the old snapshot.
  snapshot_.Update(std::move(snap));
  endpoint_count_.store(count, std::memory_order_relaxed);
  {
    core::MutexLock lock(&mu_);
    addresses_ = std::move(addresses);
    stats_by_address_ = std::move(stats);
  }
  cv_.notify_all();
  updates_.fetch_add(1, std::memory_order_relaxed);
  CollectDrained();
}

void ServiceChannel::CollectDrained() {
  absl::Time now = absl::Now();
  // A draining channel is closed once nothing can start a call on it (no
  // snapshot or caller holds it: use_count 1) and none is outstanding, or
  // when its drain time is up.
  draining_.erase(std::remove_if(draining_.begin(), draining_.end(),
                                 [now](const Draining& d) {
                                   return (d.channel.use_count() == 1 &&
                                           d.channel->CallsOutstanding() == 0) ||
                                          now >= d.deadline;
                                 }),
                  draining_.end());
  draining_count_.store(draining_.size(), std::memory_order_relaxed);
  if (!draining_.empty() && !drain_timer_.valid()) {
    drain_timer_ = control_->RunAfter(kDrainCheck, [this] {
      drain_timer_ = {};
      CollectDrained();
    });
  }
}

bool ServiceChannel::PickMember(const CallOptions& options,
                                const std::vector<std::string>& avoid, Picked* out) const {
  core::RcuReadGuard guard(snapshot_);
  const Snapshot* s = snapshot_.Get(guard);
  if (s == nullptr || s->members.empty()) return false;
  auto avoided = [&](int i) {
    return std::find(avoid.begin(), avoid.end(), s->members[i].channel->address()) != avoid.end();
  };
  lb::PickArgs args;
  args.hash = options.hash_key;
  args.has_hash = options.has_hash_key;
  int i = s->picker->Pick(args);
  if (!avoid.empty() && s->members.size() > 1) {
    // A retry: ask the policy again a few times, then take the next endpoint
    // in order that was not tried, so the retry lands elsewhere.
    for (int tries = 0; tries < 3 && (i < 0 || avoided(i)); ++tries) {
      args.has_hash = false;
      i = s->picker->Pick(args);
    }
    if (i < 0 || avoided(i)) {
      int n = static_cast<int>(s->members.size());
      int from = i < 0 ? 0 : i;
      for (int k = 1; k <= n; ++k) {
        int j = (from + k) % n;
        if (!avoided(j)) {
          i = j;
          break;
        }
      }
    }
  }
  if (i < 0 || static_cast<size_t>(i) >= s->members.size()) return false;
  out->channel = s->members[i].channel;
  out->stats = s->members[i].stats;
  return true;
}

CallResult ServiceChannel::NoEndpoints() const {
  discovery::DiscoveryStats ds = discovery_->stats();
  std::string why = ds.updates == 0 ? "discovery has produced no endpoints yet"
                                    : "the endpoint set is empty";
  if (!ds.last_error.ok()) {
    absl::StrAppend(&why, " (last discovery error: ", ds.last_error.message(), ")");
  }
  CallResult r;
  r.status = absl::UnavailableError(absl::StrCat("service ", service_, ": ", why));
  r.not_processed = true;
  return r;
}

ServiceChannel::Next ServiceChannel::Decide(const CallResult& r, const CallOptions& options,
                                            int attempts, bool* transparent_used,
                                            absl::Time deadline) {
  if (r.status.ok() || absl::Now() >= deadline) return Next::kDone;
  bool several = endpoint_count_.load(std::memory_order_relaxed) > 1;
  if (TransparentlyRetryable(r) && !*transparent_used && several) {
    *transparent_used = true;
    transparent_retries_.fetch_add(1, std::memory_order_relaxed);
    return Next::kTransparent;
  }
  bool retryable = (options.idempotent && retry_.RetriesOn(r.status.code())) ||
                   TransparentlyRetryable(r);
  if (!retryable || attempts >= retry_.max_attempts) return Next::kDone;
  if (!breaker_->TryStartRetry()) return Next::kDone;  // max_retries outstanding
  if (!budget_->TryWithdraw()) {
    breaker_->EndRetry();
    retries_denied_.fetch_add(1, std::memory_order_relaxed);
    return Next::kDone;
  }
  retries_.fetch_add(1, std::memory_order_relaxed);
  return Next::kRetry;
}

// One asynchronous call across its attempts. If it is destroyed before it
// completed (its retry timer dropped with a stopping runtime), the caller
// still hears of it: CANCELLED.
struct ServiceChannel::CallState {
  std::string method, request;
  CallOptions options;
  CallCallback done;
  absl::Time deadline;
  int attempts = 0;  // made by the retry policy's count
  bool transparent_used = false;
  std::vector<std::string> tried;
  runtime::EventLoop* timer_loop = nullptr;
  resilience::CircuitBreaker* breaker = nullptr;  // counts this call active
  bool retry_outstanding = false;                 // holds a max_retries slot

  void Finish(CallResult r) {
    if (retry_outstanding) {
      retry_outstanding = false;
      breaker->EndRetry();
    }
    if (breaker != nullptr) {
      breaker->EndRequest();
      breaker = nullptr;
    }
    if (done) {
      CallCallback d = std::move(done);
      done = nullptr;
      d(std::move(r));
    }
  }
  ~CallState() {
    if (done) {
      CallResult r;
      r.status = absl::CancelledError("call abandoned while waiting to retry");
      Finish(std::move(r));
    }
  }
};

void ServiceChannel::Attempt(std::shared_ptr<CallState> st) {
  absl::Duration left = st->deadline - absl::Now();
  if (left <= absl::ZeroDuration()) {
    CallResult r;
    r.status = absl::DeadlineExceededError(
        absl::StrCat("deadline passed after ", st->attempts, " attempt(s)"));
    return st->Finish(std::move(r));
  }
  Picked picked;
  if (!PickMember(st->options, st->tried, &picked)) return st->Finish(NoEndpoints());
  CallOptions attempt = st->options;
  attempt.timeout = left;
  if (retry_.per_try_timeout > absl::ZeroDuration()) {
    attempt.timeout = std::min(attempt.timeout, retry_.per_try_timeout);
  }
  bool pending = picked.channel->ReadyConnections() == 0;
  if (pending) {
    if (absl::Status st_pending = breaker_->TryStartPending(); !st_pending.ok()) {
      CallResult r;
      r.status = st_pending;
      r.not_processed = true;
      return st->Finish(std::move(r));
    }
  }
  st->tried.push_back(picked.channel->address());
  absl::Time start = absl::Now();
  picked.stats->OnCallStart();
  Channel* channel = picked.channel.get();
  channel->Call(
      st->method, st->request, attempt,
      [this, st, stats = std::move(picked.stats), start, pending](CallResult r) mutable {
        absl::Time now = absl::Now();
        stats->OnCallEnd(now - start, r.status.ok(), now);
        if (pending) breaker_->EndPending();
        if (st->retry_outstanding) {
          st->retry_outstanding = false;
          breaker_->EndRetry();
        }
        if (closing_.load(std::memory_order_acquire)) return st->Finish(std::move(r));
        bool transparent_before = st->transparent_used;
        Next next = Decide(r, st->options, st->attempts, &st->transparent_used, st->deadline);
        if (next == Next::kDone) return st->Finish(std::move(r));
        if (next == Next::kTransparent && !transparent_before) return Attempt(std::move(st));
        ++st->attempts;
        st->retry_outstanding = true;  // Decide took a max_retries slot
        absl::Duration delay = retry_.Backoff(st->attempts - 1, lb::ThreadRandom().Next());
        runtime::EventLoop* loop = st->timer_loop;
        pending_retries_.fetch_add(1, std::memory_order_acq_rel);
        loop->RunAfter(delay, [this, st = std::move(st)]() mutable {
          if (closing_.load(std::memory_order_acquire)) {
            CallResult closed;
            closed.status = absl::CancelledError("service channel closed before the retry");
            st->Finish(std::move(closed));
          } else {
            Attempt(std::move(st));
          }
          pending_retries_.fetch_sub(1, std::memory_order_acq_rel);
        });
      });
}

CallHandle ServiceChannel::Call(absl::string_view method, absl::string_view request,
                                const CallOptions& options, CallCallback done) {
  if (absl::Status admitted = breaker_->TryStartRequest(); !admitted.ok()) {
    CallResult r;
    r.status = admitted;
    r.not_processed = true;
    done(std::move(r));
    return CallHandle();
  }
  budget_->Deposit();
  auto st = std::make_shared<CallState>();
  st->breaker = breaker_.get();
  st->method = std::string(method);
  st->request = std::string(request);
  st->options = options;
  st->done = std::move(done);
  st->deadline = absl::Now() + (options.timeout > absl::ZeroDuration()
                                    ? options.timeout
                                    : options_.channel.default_timeout);
  st->attempts = 1;
  st->timer_loop = &options_.channel.runtime->NextLoop();
  Attempt(std::move(st));
  return CallHandle();
}

CallResult ServiceChannel::CallBlocking(absl::string_view method, absl::string_view request,
                                        const CallOptions& options) {
  if (absl::Status admitted = breaker_->TryStartRequest(); !admitted.ok()) {
    CallResult r;
    r.status = admitted;
    r.not_processed = true;
    return r;
  }
  struct Active {
    resilience::CircuitBreaker* b;
    bool retry = false;
    ~Active() {
      if (retry) b->EndRetry();
      b->EndRequest();
    }
  } active{breaker_.get()};
  budget_->Deposit();
  absl::Time deadline = absl::Now() + (options.timeout > absl::ZeroDuration()
                                           ? options.timeout
                                           : options_.channel.default_timeout);
  std::vector<std::string> tried;
  bool transparent_used = false;
  int attempts = 1;
  for (;;) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      CallResult r;
      r.status = absl::DeadlineExceededError(
          absl::StrCat("deadline passed after ", attempts, " attempt(s)"));
      return r;
    }
    Picked picked;
    if (!PickMember(options, tried, &picked)) return NoEndpoints();
    CallOptions attempt = options;
    attempt.timeout = left;
    if (retry_.per_try_timeout > absl::ZeroDuration()) {
      attempt.timeout = std::min(attempt.timeout, retry_.per_try_timeout);
    }
    bool pending = picked.channel->ReadyConnections() == 0;
    if (pending) {
      if (absl::Status st_pending = breaker_->TryStartPending(); !st_pending.ok()) {
        CallResult r;
        r.status = st_pending;
        r.not_processed = true;
        return r;
      }
    }
    tried.push_back(picked.channel->address());
    absl::Time start = absl::Now();
    picked.stats->OnCallStart();
    CallResult r = picked.channel->CallBlocking(method, request, attempt);
    absl::Time end = absl::Now();
    picked.stats->OnCallEnd(end - start, r.status.ok(), end);
    if (pending) breaker_->EndPending();
    if (active.retry) {
      active.retry = false;
      breaker_->EndRetry();
    }
    bool transparent_before = transparent_used;
    Next next = Decide(r, options, attempts, &transparent_used, deadline);
    if (next == Next::kDone) return r;
    if (next == Next::kTransparent && !transparent_before) continue;
    active.retry = true;  // Decide took a max_retries slot
    ++attempts;
    absl::SleepFor(std::min(retry_.Backoff(attempts - 1, lb::ThreadRandom().Next()),
                            deadline - absl::Now()));
  }
}

bool ServiceChannel::WaitForEndpoints(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_.native());
  return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                      [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !addresses_.empty(); });
}

std::vector<std::string> ServiceChannel::Endpoints() const {
  core::MutexLock lock(&mu_);
  return addresses_;
}

std::shared_ptr<lb::EndpointStats> ServiceChannel::EndpointStatsFor(
    absl::string_view address) const {
  core::MutexLock lock(&mu_);
  auto it = stats_by_address_.find(address);
  return it == stats_by_address_.end() ? nullptr : it->second;
}

ServiceChannelStats ServiceChannel::stats() const {
  ServiceChannelStats st;
  st.endpoint_updates = updates_.load(std::memory_order_relaxed);
  st.endpoints = endpoint_count_.load(std::memory_order_relaxed);
  st.draining = draining_count_.load(std::memory_order_relaxed);
  st.transparent_retries = transparent_retries_.load(std::memory_order_relaxed);
  st.retries = retries_.load(std::memory_order_relaxed);
  st.retries_denied = retries_denied_.load(std::memory_order_relaxed);
  st.breaker_overflows = breaker_->overflows();
  st.policy = policy_->Describe();
  st.discovery = discovery_->stats();
  return st;
}

}  // namespace meshlib::client
