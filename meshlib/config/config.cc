#include "meshlib/config/config.h"

#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/discovery/resolver.h"
#include "meshlib/lb/policy.h"

namespace meshlib::config {

// The JSON field helpers (meshlib/core/json_fields.h).
using core::FieldError;
using core::JoinPath;
using core::CheckObject;
using core::ParseDurationField;
using core::OptionalDuration;
using core::OptionalInt;
using core::ParseJsonText;

namespace {

using json = nlohmann::json;

// Reads an optional section with `parse` into `*out`; absent leaves `*out`.
template <typename T, typename Parse>
absl::Status Section(const json& service, absl::string_view path, absl::string_view key,
                     Parse parse, T* out) {
  auto it = service.find(std::string(key));
  if (it == service.end()) return absl::OkStatus();
  auto parsed = parse(*it, JoinPath(path, key));
  if (!parsed.ok()) return parsed.status();
  *out = *std::move(parsed);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<tls::TlsOptions> ParseTls(const json& j, absl::string_view path) {
  if (auto st = CheckObject(j, path,
                            {"ca_file", "cert_file", "key_file", "server_name", "identities",
                             "handshake_timeout", "reload_interval"});
      !st.ok()) {
    return st;
  }
  tls::TlsOptions o;
  for (auto [key, out] : {std::pair<const char*, std::string*>{"ca_file", &o.ca_file},
                          {"cert_file", &o.cert_file},
                          {"key_file", &o.key_file},
                          {"server_name", &o.server_name}}) {
    auto it = j.find(key);
    if (it == j.end()) continue;
    if (!it->is_string() || it->get<std::string>().empty()) {
      return FieldError(JoinPath(path, key), "must be a non-empty string");
    }
    *out = it->get<std::string>();
  }
  if (auto ids = j.find("identities"); ids != j.end()) {
    if (!ids->is_array()) return FieldError(JoinPath(path, "identities"), "must be an array");
    for (size_t i = 0; i < ids->size(); ++i) {
      if (!(*ids)[i].is_string()) {
        return FieldError(absl::StrCat(path, ".identities[", i, "]"), "must be a string");
      }
      o.identities.push_back((*ids)[i].get<std::string>());
    }
  }
  if (auto st = OptionalDuration(j, path, "handshake_timeout", absl::Milliseconds(1),
                                 absl::Minutes(1), &o.handshake_timeout);
      !st.ok()) {
    return st;
  }
  if (auto st = OptionalDuration(j, path, "reload_interval", absl::ZeroDuration(), absl::Hours(1),
                                 &o.reload_interval);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = o.Validate(tls::Role::kClient); !st.ok()) {
    // "tls.ca_file: ..." -> "<path>.ca_file: ..."
    std::string m(st.message());
    if (m.rfind("tls.", 0) == 0) m = absl::StrCat(path, ".", m.substr(4));
    return absl::InvalidArgumentError(m);
  }
  return o;
}

namespace {

absl::StatusOr<MeshSettings> ParseMeshSettings(const json& j, absl::string_view path) {
  if (auto st = CheckObject(j, path,
                            {"zone", "io_threads", "busy_poll", "connections_per_endpoint",
                             "drain_timeout", "tls"});
      !st.ok()) {
    return st;
  }
  MeshSettings m;
  if (auto z = j.find("zone"); z != j.end()) {
    // "" is allowed: it says "unknown", as the default does.
    if (!z->is_string()) return FieldError(JoinPath(path, "zone"), "must be a string");
    m.zone = z->get<std::string>();
  }
  int64_t io_threads = m.io_threads;
  if (auto st = OptionalInt(j, path, "io_threads", 1, 64, &io_threads); !st.ok()) return st;
  m.io_threads = static_cast<int>(io_threads);
  if (auto st = OptionalDuration(j, path, "busy_poll", absl::ZeroDuration(),
                                 absl::Milliseconds(1), &m.busy_poll);
      !st.ok()) {
    return st;
  }
  int64_t connections = m.connections_per_endpoint;
  if (auto st = OptionalInt(j, path, "connections_per_endpoint", 1, 64, &connections); !st.ok()) {
    return st;
  }
  m.connections_per_endpoint = static_cast<int>(connections);
  if (auto st = OptionalDuration(j, path, "drain_timeout", absl::ZeroDuration(), absl::Hours(1),
                                 &m.drain_timeout);
      !st.ok()) {
    return st;
  }
  if (auto st = Section(j, path, "tls", ParseTls, &m.tls); !st.ok()) return st;
  return m;
}

absl::StatusOr<ServiceConfig> ParseService(const std::string& name, const json& s,
                                           const std::string& path) {
  if (name.empty()) return FieldError(path, "service name must not be empty");
  if (auto st = CheckObject(s, path,
                            {"discovery", "load_balancer", "timeout", "retry", "hedging",
                             "circuit_breaker", "outlier_detection", "health_check", "fault",
                             "subsets", "routes", "tls", "protocol"});
      !st.ok()) {
    return st;
  }
  ServiceConfig sc;
  sc.name = name;
  sc.raw = s;

  auto disc = s.find("discovery");
  if (disc == s.end()) return FieldError(JoinPath(path, "discovery"), "required");
  if (auto st = discovery::ResolverRegistry::Global().ValidateDiscovery(
          *disc, JoinPath(path, "discovery"));
      !st.ok()) {
    return st;
  }
  sc.discovery = *disc;
  sc.discovery_kind = disc->begin().key();

  if (auto p = s.find("protocol"); p != s.end()) {
    const std::string pp = JoinPath(path, "protocol");
    if (!p->is_string()) return FieldError(pp, "must be a string: \"meshlib\" or \"grpc\"");
    const std::string v = p->get<std::string>();
    if (v == "grpc") {
      sc.protocol = ServiceConfig::Protocol::kGrpc;
    } else if (v != "meshlib") {
      return FieldError(pp, absl::StrCat("unknown protocol \"", v,
                                         "\"; expected \"meshlib\" or \"grpc\""));
    }
  }

  if (auto t = s.find("timeout"); t != s.end()) {
    std::string tp = JoinPath(path, "timeout");
    auto d = ParseDurationField(*t, tp);
    if (!d.ok()) return d.status();
    if (*d <= absl::ZeroDuration()) return FieldError(tp, "must be > 0");
    sc.timeout = *d;
  }

  {
    auto lb = s.find("load_balancer");
    if (lb != s.end()) sc.load_balancer_list = *lb;
    // Select reads null as "round_robin with defaults".
    auto choice = lb::PolicyRegistry::Global().Select(lb != s.end() ? *lb : json(),
                                                      JoinPath(path, "load_balancer"));
    if (!choice.ok()) return choice.status();
    sc.load_balancer = choice->factory->name();
    sc.load_balancer_config = choice->config;
    sc.load_balancer_path = choice->path;
  }

  if (auto st = Section(s, path, "retry", resilience::ParseRetryPolicy, &sc.retry); !st.ok()) {
    return st;
  }
  if (auto st = Section(s, path, "hedging", resilience::ParseHedgingPolicy, &sc.hedging);
      !st.ok()) {
    return st;
  }
  if (auto st = Section(s, path, "circuit_breaker", resilience::ParseCircuitBreaker,
                        &sc.circuit_breaker);
      !st.ok()) {
    return st;
  }
  if (auto st = Section(s, path, "outlier_detection", resilience::ParseOutlierDetection,
                        &sc.outlier_detection);
      !st.ok()) {
    return st;
  }
  if (auto st = Section(s, path, "health_check", resilience::ParseHealthCheck, &sc.health_check);
      !st.ok()) {
    return st;
  }
  // gRPC services are probed with the standard gRPC health service unless
  // the configuration names a method.
  if (sc.health_check.has_value() && sc.protocol == ServiceConfig::Protocol::kGrpc &&
      !s.at("health_check").contains("method")) {
    sc.health_check->method = transport::kGrpcHealthCheckMethod;
  }
  if (auto st = Section(s, path, "fault", resilience::ParseFaultInjection, &sc.fault); !st.ok()) {
    return st;
  }
  if (auto st = Section(s, path, "tls", ParseTls, &sc.tls); !st.ok()) return st;
  if (auto st = Section(s, path, "subsets", ParseSubsets, &sc.subsets); !st.ok()) return st;
  // After subsets: every route's subset names are checked against them.
  if (auto st = Section(
          s, path, "routes",
          [&](const json& j, absl::string_view p) { return ParseRoutes(j, p, sc.subsets); },
          &sc.routes);
      !st.ok()) {
    return st;
  }
  return sc;
}

}  // namespace

const SubsetConfig* ServiceConfig::FindSubset(absl::string_view name) const {
  for (const SubsetConfig& s : subsets) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const ServiceConfig* MeshConfig::Find(absl::string_view name) const {
  auto it = services.find(std::string(name));
  return it == services.end() ? nullptr : &it->second;
}

const tls::TlsOptions* MeshConfig::TlsFor(const ServiceConfig& service) const {
  if (service.tls.has_value()) return &*service.tls;
  if (mesh.tls.has_value()) return &*mesh.tls;
  return nullptr;
}

absl::StatusOr<MeshConfig> ParseMeshConfigJson(const json& root) {
  if (!root.is_object()) return FieldError("(root)", "must be a JSON object");
  if (auto st = CheckObject(root, "", {"services", "mesh"}); !st.ok()) return st;
  MeshConfig cfg;
  if (auto m = root.find("mesh"); m != root.end()) {
    auto mesh = ParseMeshSettings(*m, "mesh");
    if (!mesh.ok()) return mesh.status();
    cfg.mesh = *std::move(mesh);
  }
  auto services = root.find("services");
  if (services == root.end()) return FieldError("services", "required");
  if (!services->is_object()) {
    return FieldError("services", "must be an object of service name -> service");
  }
  for (auto it = services->begin(); it != services->end(); ++it) {
    auto sc = ParseService(it.key(), it.value(), absl::StrCat("services.", it.key()));
    if (!sc.ok()) return sc.status();
    cfg.services.emplace(it.key(), *std::move(sc));
  }
  cfg.raw = root;
  return cfg;
}

absl::StatusOr<MeshConfig> ParseMeshConfig(absl::string_view text) {
  auto parsed = ParseJsonText(text, "mesh config");
  if (!parsed.ok()) return parsed.status();
  return ParseMeshConfigJson(*parsed);
}

absl::StatusOr<MeshConfig> LoadMeshConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read mesh config \"", path, "\""));
  std::stringstream ss;
  ss << in.rdbuf();
  auto cfg = ParseMeshConfig(ss.str());
  if (!cfg.ok()) {
    return absl::Status(cfg.status().code(), absl::StrCat(path, ": ", cfg.status().message()));
  }
  return cfg;
}

}  // namespace meshlib::config
