// MeshConfig: the parsed, validated mesh.json (see DESIGN.md for its shape).
//
//   absl::StatusOr<config::MeshConfig> cfg = config::LoadMeshConfigFile("mesh.json");
//   if (!cfg.ok()) { std::cerr << cfg.status().message(); }  // names the field path
//   const config::ServiceConfig* echo = cfg->Find("echo");
//
// Every error names the offending field's path and the rule it broke, e.g.
// `services.echo.timeout: "fast" is not a duration (examples: "250ms", "1s")`.
// Every section is validated here by the parser of the layer that reads
// it (discovery by its kind, load_balancer by its policy, retry, hedging,
// circuit_breaker, outlier_detection, health_check, fault), so a bad file
// fails at load; the sections are also kept raw for those layers, which
// parse them again when they are built.
//
// Threading: the result is an immutable value; share it freely.
#ifndef MESHLIB_CONFIG_CONFIG_H_
#define MESHLIB_CONFIG_CONFIG_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/config/json_fields.h"
#include "nlohmann/json.hpp"

namespace meshlib::config {

struct ServiceConfig {
  std::string name;
  // The `discovery` object ({"<kind>": {...}}), validated by its kind's
  // resolver factory; discovery::Discovery::Create takes it as it is.
  nlohmann::json discovery;
  std::string discovery_kind;  // "static", "file", "dns", "etcd", ...
  // The policy chosen from `load_balancer` (the first known name);
  // "round_robin" when the list is absent.
  std::string load_balancer = "round_robin";
  // Per-call timeout. Default 1s.
  absl::Duration timeout = absl::Seconds(1);
  // The service's whole JSON object, for layers that parse their own section.
  nlohmann::json raw;
};

struct MeshConfig {
  std::map<std::string, ServiceConfig> services;
  const ServiceConfig* Find(absl::string_view name) const;
};

absl::StatusOr<MeshConfig> ParseMeshConfig(absl::string_view json_text);
absl::StatusOr<MeshConfig> LoadMeshConfigFile(const std::string& path);

}  // namespace meshlib::config

#endif  // MESHLIB_CONFIG_CONFIG_H_
