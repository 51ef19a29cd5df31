#include "meshlib/config/config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/discovery/resolver.h"
#include "meshlib/lb/policy.h"
#include "meshlib/resilience/circuit_breaker.h"
#include "meshlib/resilience/fault_injection.h"
#include "meshlib/resilience/hedging_policy.h"
#include "meshlib/resilience/health_check.h"
#include "meshlib/resilience/outlier_detection.h"
#include "meshlib/resilience/retry_policy.h"

namespace meshlib::config {
namespace {

using json = nlohmann::json;

const std::vector<std::string>& KnownServiceKeys() {
  static const auto* keys = new std::vector<std::string>{
      "discovery", "load_balancer", "timeout", "retry", "hedging",
      "circuit_breaker", "outlier_detection", "health_check", "fault"};
  return *keys;
}

}  // namespace

const ServiceConfig* MeshConfig::Find(absl::string_view name) const {
  auto it = services.find(std::string(name));
  return it == services.end() ? nullptr : &it->second;
}

absl::StatusOr<MeshConfig> ParseMeshConfig(absl::string_view text) {
  auto parsed = ParseJsonText(text, "mesh config");
  if (!parsed.ok()) return parsed.status();
  json root = *std::move(parsed);
  if (!root.is_object()) return FieldError("(root)", "must be a JSON object");
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() != "services") return FieldError(it.key(), "unknown key (known: services)");
  }
  auto services = root.find("services");
  if (services == root.end()) return FieldError("services", "required");
  if (!services->is_object()) return FieldError("services", "must be an object");
  MeshConfig cfg;
  for (auto it = services->begin(); it != services->end(); ++it) {
    std::string path = absl::StrCat("services.", it.key());
    if (it.key().empty()) return FieldError(path, "service name must not be empty");
    const json& s = it.value();
    if (!s.is_object()) return FieldError(path, "must be an object");
    ServiceConfig sc;
    sc.name = it.key();
    sc.raw = s;
    for (auto f = s.begin(); f != s.end(); ++f) {
      const auto& known = KnownServiceKeys();
      if (std::find(known.begin(), known.end(), f.key()) == known.end()) {
        return FieldError(absl::StrCat(path, ".", f.key()),
                          absl::StrCat("unknown key (known: ", absl::StrJoin(known, ", "), ")"));
      }
    }
    auto disc = s.find("discovery");
    if (disc == s.end()) return FieldError(absl::StrCat(path, ".discovery"), "required");
    if (auto st = discovery::ResolverRegistry::Global().ValidateDiscovery(
            *disc, absl::StrCat(path, ".discovery"));
        !st.ok()) {
      return st;
    }
    sc.discovery = *disc;
    sc.discovery_kind = disc->begin().key();
    if (auto t = s.find("timeout"); t != s.end()) {
      auto d = ParseDurationField(*t, absl::StrCat(path, ".timeout"));
      if (!d.ok()) return d.status();
      if (*d <= absl::ZeroDuration()) return FieldError(absl::StrCat(path, ".timeout"), "must be > 0");
      sc.timeout = *d;
    }
    if (auto r = s.find("retry"); r != s.end()) {
      auto policy = resilience::ParseRetryPolicy(*r, absl::StrCat(path, ".retry"));
      if (!policy.ok()) return policy.status();
    }
    if (auto cb = s.find("circuit_breaker"); cb != s.end()) {
      auto parsed = resilience::ParseCircuitBreaker(*cb, absl::StrCat(path, ".circuit_breaker"));
      if (!parsed.ok()) return parsed.status();
    }
    if (auto od = s.find("outlier_detection"); od != s.end()) {
      auto parsed =
          resilience::ParseOutlierDetection(*od, absl::StrCat(path, ".outlier_detection"));
      if (!parsed.ok()) return parsed.status();
    }
    if (auto hc = s.find("health_check"); hc != s.end()) {
      auto parsed = resilience::ParseHealthCheck(*hc, absl::StrCat(path, ".health_check"));
      if (!parsed.ok()) return parsed.status();
    }
    if (auto h = s.find("hedging"); h != s.end()) {
      auto parsed = resilience::ParseHedgingPolicy(*h, absl::StrCat(path, ".hedging"));
      if (!parsed.ok()) return parsed.status();
    }
    if (auto f = s.find("fault"); f != s.end()) {
      auto parsed = resilience::ParseFaultInjection(*f, absl::StrCat(path, ".fault"));
      if (!parsed.ok()) return parsed.status();
    }
    if (auto lb = s.find("load_balancer"); lb != s.end()) {
      auto choice = lb::PolicyRegistry::Global().Select(*lb, absl::StrCat(path, ".load_balancer"));
      if (!choice.ok()) return choice.status();
      sc.load_balancer = choice->factory->name();
    }
    cfg.services.emplace(sc.name, std::move(sc));
  }
  return cfg;
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
