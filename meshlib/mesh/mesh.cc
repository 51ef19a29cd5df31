// The public face of a mesh: Mesh and Client. What they share (MeshCore),
// how a Client's stack is built and routed (Stack, BuildStack, Route), the
// connection pool and the configuration watcher are units of their own
// under internal/.
#include "meshlib/mesh/mesh.h"

#include <algorithm>
#include <functional>
#include <mutex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "meshlib/admin/admin_server.h"
#include "meshlib/admin/live.h"
#include "meshlib/client/channel.h"
#include "meshlib/client/service_channel.h"
#include "meshlib/core/log.h"
#include "meshlib/core/trace_context.h"
#include "meshlib/mesh/internal/mesh_core.h"
#include "meshlib/mesh/internal/stack.h"
#include "meshlib/mesh/internal/watcher.h"
#include "meshlib/runtime/event_loop.h"

namespace meshlib::mesh {

using client::CallHandle;
using client::CallOptions;
using client::CallResult;
using json = nlohmann::json;

namespace {
CallResult Failed(absl::Status status) {
  CallResult r;
  r.status = std::move(status);
  return r;
}
CallResult NotInConfiguration(const std::string& service, uint64_t generation) {
  return Failed(absl::NotFoundError(absl::StrCat(
      "service ", service, " is not in the configuration (generation ", generation, ")")));
}
}  // namespace

// --- Client ---

Client::Client(std::string service, std::shared_ptr<internal::MeshCore> core,
               std::shared_ptr<const internal::Stack> stack)
    : service_(std::move(service)),
      core_(std::move(core)),
      stack_(std::make_unique<std::shared_ptr<const internal::Stack>>(std::move(stack))) {}

Client::~Client() { core_->Retire(stack()); }

std::shared_ptr<const internal::Stack> Client::stack() const {
  core::RcuReadGuard guard(stack_);
  return *stack_.Get(guard);
}

void Client::Replace(std::shared_ptr<const internal::Stack> next, bool shares_channels) {
  // Callers hold MeshCore::apply_mu: one replacement at a time.
  std::shared_ptr<const internal::Stack> old = stack();
  stack_.Update(std::make_unique<std::shared_ptr<const internal::Stack>>(std::move(next)));
  core_->Retire(std::move(old), /*owns_channels=*/!shares_channels);
}

void Client::AddInterceptor(std::shared_ptr<Interceptor> interceptor) {
  std::lock_guard<std::mutex> lock(core_->apply_mu);
  auto next = std::make_shared<internal::Stack>(*stack());
  next->interceptors.push_back(std::move(interceptor));
  Replace(std::move(next), /*shares_channels=*/true);
}

namespace {
CallResult MeshClosed(const std::string& service, absl::string_view method) {
  return Failed(absl::CancelledError(
      absl::StrCat("mesh closed: call to ", service, " ", method, " not sent")));
}

// A call that ends before reaching a channel still counts in the service's
// metrics and spans (when the stack has a channel to count it with).
CallResult Unsent(const internal::Stack& s, absl::string_view method, const CallOptions& options,
                  CallResult r) {
  if (s.all != nullptr) s.all->RecordUnsent(method, options, r);
  return r;
}

// With a span exporter, a call outside any trace starts one: the options
// with a new root traceparent, or nullopt when it needs none.
std::optional<CallOptions> StartTrace(const internal::MeshCore& core, const CallOptions& options) {
  if (!core.options.span_exporter) return std::nullopt;
  for (const auto& [key, value] : options.metadata) {
    if (key == core::kTraceparentKey) return std::nullopt;
  }
  CallOptions traced = options;
  traced.metadata.emplace_back(core::kTraceparentKey, core::TraceContext::NewRoot().Traceparent());
  return traced;
}
}  // namespace

CallHandle Client::Call(absl::string_view method, absl::string_view request,
                        const CallOptions& options, client::CallCallback done) {
  if (core::CurrentTrace() != nullptr) {
    // Serving a traced call: this one continues the trace (a new span).
    CallOptions traced = options;
    if (core::PropagateTrace(&traced.metadata)) {
      core::ScopedTrace none(nullptr);
      return Call(method, request, traced, std::move(done));
    }
  }
  if (std::optional<CallOptions> traced = StartTrace(*core_, options)) {
    return Call(method, request, *traced, std::move(done));
  }
  std::shared_ptr<const internal::Stack> s = stack();
  if (core_->closed.load(std::memory_order_acquire)) {
    // Not counted: the registry need not outlive the mesh.
    done(MeshClosed(service_, method));
    return CallHandle();
  }
  if (s->service == nullptr) {
    done(NotInConfiguration(service_, s->generation));
    return CallHandle();
  }
  s->counters->calls.fetch_add(1, std::memory_order_relaxed);
  if (s->interceptors.empty()) {
    // The common path: no copy of the options, no wrapper around `done`.
    internal::Routed routed = internal::Route(*s, method, options);
    if (!routed.error.ok()) {
      done(Unsent(*s, method, options, Failed(routed.error)));
      return CallHandle();
    }
    // The fault (the route's, else the service's) is applied by the
    // channel, whose timers end with it; the call holds the stack (and so
    // the fault) until it ends.
    // `s` stays held here too: the call may end (and release its copy) on
    // another thread before CallWithFault returns, and the stack owns the
    // target channel.
    client::ServiceChannel* target = routed.target;
    return target->CallWithFault(method, request, options, routed.fault, std::move(done), s);
  }
  // Interceptors are told each call's latency.
  absl::Time start = absl::Now();
  CallOptions opts = options;
  // Interceptors, in order; one that fails the call ends it here, and those
  // before it see the failure.
  for (size_t i = 0; i < s->interceptors.size(); ++i) {
    if (absl::Status st = s->interceptors[i]->Before(method, opts); !st.ok()) {
      CallResult r = Unsent(*s, method, opts, Failed(std::move(st)));
      for (size_t j = i; j-- > 0;) s->interceptors[j]->After(method, opts, r, absl::Now() - start);
      done(std::move(r));
      return CallHandle();
    }
  }
  internal::Routed routed = internal::Route(*s, method, opts);
  if (!routed.error.ok()) {
    CallResult r = Unsent(*s, method, opts, Failed(routed.error));
    for (size_t j = s->interceptors.size(); j-- > 0;) {
      s->interceptors[j]->After(method, opts, r, absl::Now() - start);
    }
    done(std::move(r));
    return CallHandle();
  }
  // As above; the stack, held by the completion, keeps the fault alive.
  client::ServiceChannel* target = routed.target;
  return target->CallWithFault(
      method, request, opts, routed.fault,
      [s, method = std::string(method), opts, start, done = std::move(done)](CallResult r) mutable {
        for (size_t j = s->interceptors.size(); j-- > 0;) {
          s->interceptors[j]->After(method, opts, r, absl::Now() - start);
        }
        done(std::move(r));
      });
}

CallResult Client::CallBlocking(absl::string_view method, absl::string_view request,
                                const CallOptions& options) {
  if (core::CurrentTrace() != nullptr) {
    CallOptions traced = options;
    if (core::PropagateTrace(&traced.metadata)) {
      core::ScopedTrace none(nullptr);
      return CallBlocking(method, request, traced);
    }
  }
  if (std::optional<CallOptions> traced = StartTrace(*core_, options)) {
    return CallBlocking(method, request, *traced);
  }
  std::shared_ptr<const internal::Stack> s = stack();
  if (core_->closed.load(std::memory_order_acquire)) {
    return MeshClosed(service_, method);  // not counted, as above
  }
  if (std::optional<CallResult> refused = client::RefuseBlockingOnReactor(method)) {
    return Unsent(*s, method, options, *std::move(refused));
  }
  if (s->service == nullptr) {
    return NotInConfiguration(service_, s->generation);
  }
  s->counters->calls.fetch_add(1, std::memory_order_relaxed);
  // Interceptors are told each call's latency; without any, no clock read.
  absl::Time start = s->interceptors.empty() ? absl::InfinitePast() : absl::Now();
  CallOptions opts = options;
  size_t ran = 0;
  CallResult r;
  for (; ran < s->interceptors.size(); ++ran) {
    if (absl::Status st = s->interceptors[ran]->Before(method, opts); !st.ok()) {
      r = Unsent(*s, method, opts, Failed(std::move(st)));
      break;
    }
  }
  if (ran == s->interceptors.size()) {
    internal::Routed routed = internal::Route(*s, method, opts);
    r = routed.error.ok()
            ? routed.target->CallBlockingWithFault(method, request, opts, routed.fault)
            : Unsent(*s, method, opts, Failed(routed.error));
  }
  for (size_t j = ran; j-- > 0;) s->interceptors[j]->After(method, opts, r, absl::Now() - start);
  return r;
}

std::string Client::Describe() const {
  std::shared_ptr<const internal::Stack> s = stack();
  std::ostringstream out;
  out << "client " << service_ << ", configuration generation " << s->generation << "\n";
  if (s->service == nullptr) {
    out << "  (not in the configuration: calls fail with NOT_FOUND)\n";
    return out.str();
  }
  auto line = [&](absl::string_view role, absl::string_view text) {
    out << "  " << role << std::string(role.size() < 17 ? 17 - role.size() : 1, ' ') << text
        << "\n";
  };
  std::vector<std::string> names;
  for (const auto& i : s->interceptors) names.push_back(i->name());
  line("interceptors", names.empty() ? "none" : absl::StrJoin(names, ", "));
  const config::ServiceConfig& svc = *s->service;
  if (svc.routes.empty()) {
    line("routing", "none: every call may use every endpoint");
  } else {
    for (size_t i = 0; i < svc.routes.size(); ++i) {
      const config::RouteConfig& r = svc.routes[i];
      std::vector<std::string> conds;
      if (!r.match.method.empty() || r.match.method_prefix) {
        conds.push_back(absl::StrCat("method ", r.match.method, r.match.method_prefix ? "*" : ""));
      }
      for (const auto& [k, v] : r.match.metadata) conds.push_back(absl::StrCat(k, "=", v));
      uint32_t total = 0;
      for (const auto& [n, w] : r.split) total += w;
      std::vector<std::string> targets;
      for (const auto& [n, w] : r.split) {
        targets.push_back(r.split.size() == 1
                              ? n
                              : absl::StrCat(n, " ", total ? 100.0 * w / total : 0.0, "%"));
      }
      line(i == 0 ? "routing" : "",
           absl::StrCat(i + 1, ". ", r.name, ": ",
                        conds.empty() ? "any call" : absl::StrJoin(conds, " and "), " -> ",
                        absl::StrJoin(targets, ", "),
                        r.fault.has_value() ? " (with its own fault injection)" : ""));
    }
    line("", "otherwise: every endpoint");
  }
  for (const internal::SubsetChannel& sc : s->subsets) {
    std::vector<std::string> m;
    for (const auto& [k, v] : sc.config->match) m.push_back(absl::StrCat(k, "=", v));
    line(&sc == &s->subsets.front() ? "subsets" : "",
         absl::StrCat(sc.config->name, " {", absl::StrJoin(m, ", "), "}: ",
                      sc.channel->endpoint_count(), " endpoint(s)"));
  }
  for (const auto& [role, text] : s->all->Describe()) {
    if (role == "fault") {
      std::string f = text;
      if (svc.fault.enabled()) {
        f = absl::StrCat(svc.fault.delay_percent > 0
                             ? absl::StrCat("delay ", svc.fault.delay_percent, "% by ",
                                            absl::FormatDuration(svc.fault.delay), "; ")
                             : "",
                         svc.fault.abort_percent > 0
                             ? absl::StrCat("abort ", svc.fault.abort_percent, "% with ",
                                            absl::StatusCodeToString(svc.fault.abort_code))
                             : "");
      }
      line(role, f);
      continue;
    }
    if (role == "pool" && !core_->options.channel_factory) {
      line(role, absl::StrCat(s->all->endpoint_count(), " endpoints, ",
                              s->mesh_config->mesh.connections_per_endpoint,
                              " connection(s) each, pooled by address (shared by the subsets "
                              "and across reloads), ",
                              svc.protocol == config::ServiceConfig::Protocol::kGrpc
                                  ? "gRPC over HTTP/2"
                                  : "meshlib protocol"));
      continue;
    }
    line(role, text);
  }
  if (const tls::TlsOptions* t = s->mesh_config->TlsFor(svc)) {
    auto w = core_->TlsFor(*t, svc.tls.has_value() ? absl::StrCat("services.", service_, ".tls")
                                                   : "mesh.tls");
    line("tls", w.ok() ? (*w)->Describe() : std::string(w.status().message()));
  } else {
    line("tls", "none: plaintext");
  }
  std::vector<std::string> eps;
  for (const client::EndpointState& e : s->all->EndpointStates()) {
    eps.push_back(absl::StrCat(e.address, " ", e.healthy ? "healthy" : "out", e.outlier != "healthy" ? absl::StrCat(" (", e.outlier, ")") : ""));
  }
  line("endpoints", eps.empty() ? "none yet" : absl::StrJoin(eps, "; "));
  return out.str();
}

ClientStats Client::stats() const {
  std::shared_ptr<const internal::Stack> s = stack();
  ClientStats st;
  {
    std::lock_guard<std::mutex> lock(s->counters->mu);
    st = s->counters->retired;
  }
  st.generation = s->generation;
  st.calls = s->counters->calls.load(std::memory_order_relaxed);
  st.unrouted = s->counters->unrouted.load(std::memory_order_relaxed);
  for (const internal::RouteRuntime& r : s->routes) {
    RouteStats rs;
    rs.name = r.config->name;
    rs.calls = r.hits->load(std::memory_order_relaxed);
    for (size_t i = 0; i < r.config->split.size(); ++i) {
      rs.by_subset.emplace_back(r.config->split[i].first,
                                r.split_hits[i]->load(std::memory_order_relaxed));
    }
    st.routes.push_back(std::move(rs));
  }
  s->AddChannelCounters(&st);
  if (s->all != nullptr) st.policy = s->all->stats().policy;
  return st;
}

std::vector<client::EndpointState> Client::EndpointStates() const {
  std::shared_ptr<const internal::Stack> s = stack();
  if (s->all == nullptr) return {};
  return s->all->EndpointStates();
}

bool Client::WaitForEndpoints(absl::Duration timeout) const {
  std::shared_ptr<const internal::Stack> s = stack();
  if (s->all == nullptr) return false;
  return s->all->WaitForEndpoints(timeout);
}

// --- Mesh ---

namespace {

// What a mesh reports at each scrape, read from its live state.
std::vector<metrics::CollectedFamily> MeshMetricFamilies() {
  using metrics::Type;
  return {
      {"meshlib_endpoint_ejected", "1 while outlier detection or a health check keeps the "
                                   "endpoint out of the balancer, else 0.", Type::kGauge},
      {"meshlib_endpoint_in_flight", "Attempts outstanding on the endpoint.", Type::kGauge},
      {"meshlib_endpoint_unreachable",
       "1 while every connection to the endpoint failed to connect and waits to try again.",
       Type::kGauge},
      {"meshlib_endpoint_latency_estimate_seconds",
       "The balancer's latency estimate of the endpoint (EWMA).", Type::kGauge},
      {"meshlib_client_retries_total", "Retries sent (the transparent ones included).",
       Type::kCounter},
      {"meshlib_client_retries_denied_total",
       "Retries the retry budget or the breaker refused.", Type::kCounter},
      {"meshlib_client_hedges_total", "Hedged attempts sent.", Type::kCounter},
      {"meshlib_client_hedges_denied_total", "Hedges the hedge budget refused.",
       Type::kCounter},
      {"meshlib_client_breaker_overflows_total", "Calls the circuit breaker refused.",
       Type::kCounter},
      {"meshlib_client_ejections_total", "Endpoints ejected by outlier detection.",
       Type::kCounter},
      {"meshlib_client_connections_opened_total",
       "Connections opened to the endpoint (by every service calling it).", Type::kCounter},
      {"meshlib_client_connections_closed_total",
       "Connections to the endpoint that closed (lost, drained or shut).", Type::kCounter},
      {"meshlib_client_connections", "Connections to the endpoint ready now.", Type::kGauge},
      {"meshlib_tls_certificate_expiry_timestamp_seconds",
       "When the certificate this side presents expires (Unix time).", Type::kGauge},
      {"meshlib_tls_reload_errors_total",
       "Changed TLS files that failed their checks (the old credentials were kept).",
       Type::kCounter},
      {"meshlib_mesh_reloads_total", "Configurations applied after the first.",
       Type::kCounter},
      {"meshlib_mesh_reloads_rejected_total", "Configuration documents rejected.",
       Type::kCounter},
  };
}

void CollectMeshMetrics(internal::MeshCore& core, std::vector<metrics::Sample>* out) {
  std::vector<std::shared_ptr<Client>> clients;
  ReloadStats reload;
  {
    std::lock_guard<std::mutex> lock(core.mu);
    for (const auto& [name, weak] : core.clients) {
      if (auto c = weak.lock()) clients.push_back(std::move(c));
    }
    reload = core.reload;
  }
  // Channels are pooled by address (and connection count): one endpoint
  // may have two.
  struct Connections {
    int64_t opened = 0, closed = 0, ready = 0;
  };
  std::map<std::string, Connections> by_endpoint;
  if (core.pool != nullptr) {
    for (const auto& ch : core.pool->Live()) {
      const client::EndpointChannel::ConnectionCounts n = ch->connection_counts();
      Connections& c = by_endpoint[ch->address()];
      c.opened += n.opened;
      c.closed += n.closed;
      c.ready += ch->ReadyConnections();
    }
  }
  for (const auto& [endpoint, c] : by_endpoint) {
    const std::vector<std::pair<std::string, std::string>> labels = {{"endpoint", endpoint}};
    out->push_back(
        {"meshlib_client_connections_opened_total", labels, static_cast<double>(c.opened)});
    out->push_back(
        {"meshlib_client_connections_closed_total", labels, static_cast<double>(c.closed)});
    out->push_back({"meshlib_client_connections", labels, static_cast<double>(c.ready)});
  }
  std::vector<std::shared_ptr<tls::CredentialsWatcher>> watchers;
  {
    std::lock_guard<std::mutex> lock(core.tls_mu);
    for (const auto& [key, weak] : core.tls_watchers) {
      if (auto w = weak.lock()) watchers.push_back(std::move(w));
    }
  }
  for (const auto& w : watchers) {
    const tls::CredentialsStats st = w->stats();
    const std::vector<std::pair<std::string, std::string>> labels = {
        {"side", "client"}, {"identity", st.identity}, {"certificate", w->options().cert_file}};
    if (st.not_after != absl::InfiniteFuture()) {
      out->push_back({"meshlib_tls_certificate_expiry_timestamp_seconds", labels,
                      absl::ToDoubleSeconds(st.not_after - absl::UnixEpoch())});
    }
    out->push_back(
        {"meshlib_tls_reload_errors_total", labels, static_cast<double>(st.reload_errors)});
  }
  out->push_back({"meshlib_mesh_reloads_total", {}, static_cast<double>(reload.applied)});
  out->push_back(
      {"meshlib_mesh_reloads_rejected_total", {}, static_cast<double>(reload.rejected)});
  for (const auto& c : clients) {
    const std::string& service = c->service();
    for (const client::EndpointState& e : c->EndpointStates()) {
      std::vector<std::pair<std::string, std::string>> labels = {{"service", service},
                                                                 {"endpoint", e.address}};
      out->push_back({"meshlib_endpoint_ejected", labels, e.healthy ? 0.0 : 1.0});
      out->push_back({"meshlib_endpoint_in_flight", labels, static_cast<double>(e.in_flight)});
      out->push_back({"meshlib_endpoint_unreachable", labels, e.unreachable ? 1.0 : 0.0});
      out->push_back({"meshlib_endpoint_latency_estimate_seconds", labels,
                      absl::ToDoubleSeconds(e.latency_ewma)});
    }
    const ClientStats st = c->stats();
    const std::vector<std::pair<std::string, std::string>> labels = {{"service", service}};
    out->push_back({"meshlib_client_retries_total", labels,
                    static_cast<double>(st.retries + st.transparent_retries)});
    out->push_back(
        {"meshlib_client_retries_denied_total", labels, static_cast<double>(st.retries_denied)});
    out->push_back({"meshlib_client_hedges_total", labels, static_cast<double>(st.hedges)});
    out->push_back(
        {"meshlib_client_hedges_denied_total", labels, static_cast<double>(st.hedges_denied)});
    out->push_back({"meshlib_client_breaker_overflows_total", labels,
                    static_cast<double>(st.breaker_overflows)});
    out->push_back({"meshlib_client_ejections_total", labels, static_cast<double>(st.ejections)});
  }
}

// Every client this mesh made that is still in use.
std::vector<std::shared_ptr<Client>> LiveClients(internal::MeshCore& core) {
  std::vector<std::shared_ptr<Client>> clients;
  std::lock_guard<std::mutex> lock(core.mu);
  for (const auto& [name, weak] : core.clients) {
    if (auto c = weak.lock()) clients.push_back(std::move(c));
  }
  return clients;
}

// The mesh's own admin pages, beside the standard ones.
void AddMeshPages(std::weak_ptr<internal::MeshCore> weak, admin::AdminServer::Handlers* pages) {
  (*pages)["/stacks"] = [weak](const admin::HttpRequest&) {
    std::shared_ptr<internal::MeshCore> core = weak.lock();
    if (core == nullptr) return admin::HttpResponse{503, "text/plain; charset=utf-8", "mesh closed\n"};
    std::string out;
    for (const auto& c : LiveClients(*core)) {
      absl::StrAppend(&out, "== ", c->service(), "\n", c->Describe(), "\n");
    }
    if (out.empty()) out = "no clients yet\n";
    return admin::HttpResponse{200, "text/plain; charset=utf-8", std::move(out)};
  };
  (*pages)["/endpoints.json"] = [weak](const admin::HttpRequest&) {
    std::shared_ptr<internal::MeshCore> core = weak.lock();
    if (core == nullptr) return admin::HttpResponse{503, "text/plain; charset=utf-8", "mesh closed\n"};
    nlohmann::json out = nlohmann::json::object();
    for (const auto& c : LiveClients(*core)) {
      nlohmann::json eps = nlohmann::json::array();
      for (const client::EndpointState& e : c->EndpointStates()) {
        eps.push_back({{"address", e.address},
                       {"healthy", e.healthy},
                       {"outlier", e.outlier},
                       {"health_check_ok", e.health_check_ok},
                       {"connected", e.connected},
                       {"unreachable", e.unreachable},
                       {"in_flight", e.in_flight},
                       {"calls", e.calls},
                       {"failures", e.failures},
                       {"latency_estimate_seconds", absl::ToDoubleSeconds(e.latency_ewma)}});
      }
      out[c->service()] = std::move(eps);
    }
    return admin::HttpResponse{200, "application/json", out.dump()};
  };
}

}  // namespace

Mesh::Mesh(std::shared_ptr<internal::MeshCore> core) : core_(std::move(core)) {}

absl::StatusOr<std::unique_ptr<Mesh>> Mesh::Create(config::MeshConfig config,
                                                   MeshOptions options) {
  if (!options.etcd_endpoints.empty() && options.etcd_key.empty()) {
    return absl::InvalidArgumentError("MeshOptions.etcd_key: needed with etcd_endpoints");
  }
  auto core = runtime::ShareOffLoop(std::make_unique<internal::MeshCore>());
  core->options = options;
  runtime::EventLoopOptions loop_options;
  loop_options.busy_poll = config.mesh.busy_poll;
  auto rt = runtime::Runtime::Create(config.mesh.io_threads, "mesh-io", loop_options);
  if (!rt.ok()) return rt.status();
  core->runtime = *std::move(rt);
  auto loop = runtime::EventLoop::Create("mesh-ctl");
  if (!loop.ok()) return loop.status();
  core->control = runtime::ShareOffLoop(std::move(*loop));
  core->config = std::make_shared<const config::MeshConfig>(std::move(config));
  core->reload.generation = 1;
  core->reload.last_applied = absl::Now();
  std::unique_ptr<Mesh> mesh(new Mesh(core));
  if (!options.etcd_endpoints.empty() || !options.watch_path.empty()) {
    mesh->watcher_ = std::make_unique<internal::Watcher>(core, options.watch_path);
  }
  if (!options.admin_address.empty()) {
    admin::AdminOptions ao;
    ao.address = options.admin_address;
    metrics::Registry& registry =
        options.metrics != nullptr ? *options.metrics : metrics::DefaultRegistry();
    admin::AdminServer::Handlers pages = admin::StandardPages(registry, &ao);
    AddMeshPages(core, &pages);
    auto started = admin::AdminServer::Start(ao, std::move(pages));
    if (!started.ok()) {
      return absl::Status(started.status().code(),
                          absl::StrCat("MeshOptions.admin_address: ", started.status().message()));
    }
    mesh->admin_ = *std::move(started);
  }
  if (options.metrics != nullptr) {
    mesh->metrics_collector_ = options.metrics->AddCollector(
        MeshMetricFamilies(), [weak = std::weak_ptr<internal::MeshCore>(core)](
                                  std::vector<metrics::Sample>* out) {
          if (auto c = weak.lock()) CollectMeshMetrics(*c, out);
        });
  }
  return mesh;
}

absl::StatusOr<std::unique_ptr<Mesh>> Mesh::Open(const std::string& path, MeshOptions options) {
  auto cfg = config::LoadMeshConfigFile(path);
  if (!cfg.ok()) return cfg.status();
  options.watch_path = path;
  return Create(*std::move(cfg), std::move(options));
}

Mesh::~Mesh() {
  admin_.reset();  // no page reads the mesh from here on
  if (metrics_collector_ != 0) core_->options.metrics->RemoveCollector(metrics_collector_);
  // Calls end first (on this thread, whatever it is), then the watcher
  // stops and the core goes; the waiting parts of that (joining the
  // watcher's thread, the loops) move off a reactor thread.
  core_->Close();
  runtime::DestroyOffLoop([watcher = std::move(watcher_), core = std::move(core_)]() mutable {
    watcher.reset();
    core.reset();
  });
}

std::string Mesh::admin_address() const { return admin_ != nullptr ? admin_->address() : ""; }

absl::StatusOr<std::shared_ptr<Client>> Mesh::Client(absl::string_view service) {
  if (std::optional<CallResult> refused = client::RefuseBlockingOnReactor("Mesh::Client")) {
    return refused->status;
  }
  std::lock_guard<std::mutex> apply(core_->apply_mu);
  std::shared_ptr<const config::MeshConfig> cfg;
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(core_->mu);
    auto it = core_->clients.find(std::string(service));
    if (it != core_->clients.end()) {
      if (auto c = it->second.lock()) return c;
    }
    cfg = core_->config;
    generation = core_->reload.generation;
  }
  if (cfg->Find(service) == nullptr) {
    std::vector<std::string> names;
    for (const auto& [n, s] : cfg->services) names.push_back(n);
    return absl::NotFoundError(absl::StrCat("no service \"", service,
                                            "\" in the configuration (services: ",
                                            absl::StrJoin(names, ", "), ")"));
  }
  auto stack = internal::BuildStack(*core_, std::string(service), cfg, generation, {}, nullptr);
  if (!stack.ok()) return stack.status();
  auto client = std::make_shared<mesh::Client>(std::string(service), core_, *std::move(stack));
  std::lock_guard<std::mutex> lock(core_->mu);
  core_->clients[std::string(service)] = client;
  return client;
}

absl::Status Mesh::Apply(config::MeshConfig config) { return core_->Apply(std::move(config)); }

ReloadStats Mesh::reload_stats() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  return core_->reload;
}

std::shared_ptr<const config::MeshConfig> Mesh::config() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  return core_->config;
}

}  // namespace meshlib::mesh
