// MeshConfig: the parsed, validated mesh.json (docs/configuration.md is the
// reference of every key and of the contract it keeps).
//
//   absl::StatusOr<config::MeshConfig> cfg = config::LoadMeshConfigFile("mesh.json");
//   if (!cfg.ok()) { std::cerr << cfg.status().message(); }  // names the field path
//   const config::ServiceConfig* echo = cfg->Find("echo");
//   if (echo->retry.max_attempts > 1) ...
//
// The whole document is parsed once, into typed values: every section by
// the parser of the layer that uses it (discovery by its kind,
// load_balancer by its policy, retry, hedging, circuit_breaker,
// outlier_detection, health_check, fault, and the routing here), so a bad
// file fails at load and a valid one needs no further checks. Every error
// names the offending field's path and the rule it broke, e.g.
// `services.echo.timeout: "fast" is not a duration (examples: "250ms", "1s")`
// or `services.echo.retry.max_attempts: must be an integer between 1 and 10`.
// Unknown keys are errors at every level. Each service's JSON object is
// also kept (`raw`), as is the whole document (`MeshConfig::raw`).
//
// Threading: the result is an immutable value; share it freely.
#ifndef MESHLIB_CONFIG_CONFIG_H_
#define MESHLIB_CONFIG_CONFIG_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/tls/credentials.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/config/routing_config.h"
#include "meshlib/resilience/circuit_breaker.h"
#include "meshlib/resilience/fault_injection.h"
#include "meshlib/resilience/health_check.h"
#include "meshlib/resilience/hedging_policy.h"
#include "meshlib/resilience/outlier_detection.h"
#include "meshlib/resilience/retry_policy.h"
#include "nlohmann/json.hpp"

namespace meshlib::config {

struct ServiceConfig {
  // Its key in `services`; non-empty.
  std::string name;
  // The `discovery` object ({"<kind>": {...}}), validated by its kind's
  // resolver factory; discovery::Discovery::Create takes it as it is.
  // Required.
  nlohmann::json discovery;
  std::string discovery_kind;  // "static", "file", "dns", "etcd", ...
  // The policy chosen from `load_balancer` (the first name this build
  // knows); "round_robin" when the list is absent.
  std::string load_balancer = "round_robin";
  // The chosen policy's config object, validated by its factory ({} when
  // the list is absent), and its path in the document (e.g.
  // "services.echo.load_balancer[0].p2c_peak_ewma"), for
  // lb::PolicyFactory::Create.
  nlohmann::json load_balancer_config = nlohmann::json::object();
  std::string load_balancer_path;
  // The `load_balancer` list as written; null when absent (which
  // lb::PolicyRegistry::Select and client::ServiceChannelOptions read as
  // round_robin).
  nlohmann::json load_balancer_list;
  // Per-call timeout, unless the call sets its own. Default 1s; > 0.
  absl::Duration timeout = absl::Seconds(1);
  // `retry`. Absent: max_attempts 1 (no retries beyond the transparent one)
  // and the other fields' defaults; present without max_attempts: 3.
  resilience::RetryPolicy retry;
  // `hedging`. Absent: enabled == false.
  resilience::HedgingPolicy hedging;
  // `circuit_breaker`. Absent: the defaults (1024 / 1024 / 3).
  resilience::CircuitBreakerOptions circuit_breaker;
  // `outlier_detection`; nullopt when absent (no outlier detection).
  std::optional<resilience::OutlierDetectionOptions> outlier_detection;
  // `health_check`; nullopt when absent (no active health checks).
  std::optional<resilience::HealthCheckOptions> health_check;
  // `fault`. Absent: none (enabled() == false). A route's own `fault`
  // replaces it for the calls taking that route.
  resilience::FaultInjection fault;
  // `subsets`, sorted by name; empty when absent.
  std::vector<SubsetConfig> subsets;
  // `routes`, in order (the first that matches a call wins); empty when
  // absent: every call uses every endpoint.
  std::vector<RouteConfig> routes;
  // `tls`: how the service is called over TLS (ca_file, cert_file,
  // key_file, server_name, identities, handshake_timeout, reload_interval).
  // nullopt: the mesh's `tls`, if any, else plaintext.
  std::optional<tls::TlsOptions> tls;
  // `protocol`: how the service's endpoints are called: "meshlib"
  // (default, meshlib's own framing) or "grpc" (gRPC over HTTP/2; method
  // "Echo/Say" is the path "/Echo/Say"). The stack above is the same.
  enum class Protocol { kMeshlib, kGrpc };
  Protocol protocol = Protocol::kMeshlib;
  // The service's whole JSON object.
  nlohmann::json raw;

  // The subset named `name`; nullptr when there is none.
  const SubsetConfig* FindSubset(absl::string_view name) const;
};

// The top-level `mesh` object: settings of the process's mesh, shared by
// every service.
struct MeshSettings {
  // This process's zone, for zone-aware balancing (lb::PolicyContext::
  // local_zone; the locality policy's own `local_zone` overrides it).
  // Default "": unknown.
  std::string zone;
  // Reactor threads of the clients' runtime. Default 1; 1-64.
  int io_threads = 1;
  // How long each of those reactors keeps polling after it did work before
  // it sleeps (runtime::EventLoopOptions::busy_poll): replies arriving
  // within it find the thread awake, saving the wake-up of an idle CPU, at
  // the price of up to this much CPU per burst. Default 0 (off); 0-1ms.
  absl::Duration busy_poll = absl::ZeroDuration();
  // TCP connections to each endpoint (client::ChannelOptions::connections).
  // Default 1; 1-64.
  int connections_per_endpoint = 1;
  // How long a client replaced by a config reload keeps serving the calls
  // it has in flight before it closes. Default 30s; 0s-1h.
  absl::Duration drain_timeout = absl::Seconds(30);
  // `tls`: the default for every service without its own. nullopt: none.
  std::optional<tls::TlsOptions> tls;
};

struct MeshConfig {
  std::map<std::string, ServiceConfig> services;
  // `mesh`; the defaults when absent.
  MeshSettings mesh;
  // The whole parsed document.
  nlohmann::json raw;

  const ServiceConfig* Find(absl::string_view name) const;
  // The TLS settings a service is called with (its own, else the mesh's);
  // null: plaintext.
  const tls::TlsOptions* TlsFor(const ServiceConfig& service) const;
};

// A `tls` object of mesh.json, validated for a client at `path`.
absl::StatusOr<tls::TlsOptions> ParseTls(const nlohmann::json& j, absl::string_view path);

// Parses and validates a mesh.json document. The top level is an object
// with `services` (required) and `mesh` (optional).
absl::StatusOr<MeshConfig> ParseMeshConfig(absl::string_view json_text);
absl::StatusOr<MeshConfig> ParseMeshConfigJson(const nlohmann::json& root);
// Reads and parses a file; errors are prefixed with its path.
absl::StatusOr<MeshConfig> LoadMeshConfigFile(const std::string& path);

}  // namespace meshlib::config

#endif  // MESHLIB_CONFIG_CONFIG_H_
