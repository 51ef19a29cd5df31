#include "meshlib/config/config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/transport/socket.h"

namespace meshlib::config {
namespace {

using json = nlohmann::json;

absl::Status FieldError(absl::string_view path, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", rule));
}

// Line and column of a byte offset, for JSON syntax errors.
std::string Position(absl::string_view text, size_t byte) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return absl::StrCat("line ", line, ", column ", col);
}

const std::vector<std::string>& KnownServiceKeys() {
  static const auto* keys = new std::vector<std::string>{
      "discovery", "load_balancer", "timeout", "retry", "hedging",
      "circuit_breaker", "outlier_detection"};
  return *keys;
}

absl::Status ParseDiscovery(const json& j, absl::string_view path, ServiceConfig* out) {
  if (!j.is_object() || j.size() != 1) {
    return FieldError(path, "must be an object with exactly one kind (static, file, dns, etcd)");
  }
  auto it = j.begin();
  std::string kind_path = absl::StrCat(path, ".", it.key());
  if (it.key() != "static") {
    if (it.key() == "file" || it.key() == "dns" || it.key() == "etcd") {
      return FieldError(kind_path, "this discovery kind is not available in this build yet");
    }
    return FieldError(kind_path, "unknown discovery kind (known: static, file, dns, etcd)");
  }
  const json& st = it.value();
  if (!st.is_object()) return FieldError(kind_path, "must be an object");
  for (auto f = st.begin(); f != st.end(); ++f) {
    if (f.key() != "endpoints") {
      return FieldError(absl::StrCat(kind_path, ".", f.key()), "unknown key (known: endpoints)");
    }
  }
  auto eps = st.find("endpoints");
  std::string eps_path = absl::StrCat(kind_path, ".endpoints");
  if (eps == st.end()) return FieldError(eps_path, "required");
  if (!eps->is_array() || eps->empty()) return FieldError(eps_path, "must be a non-empty list");
  for (size_t i = 0; i < eps->size(); ++i) {
    std::string ep_path = absl::StrCat(eps_path, "[", i, "]");
    const json& e = (*eps)[i];
    if (!e.is_string()) return FieldError(ep_path, "must be a \"host:port\" string");
    auto addr = transport::ParseHostPort(e.get<std::string>());
    if (!addr.ok()) return FieldError(ep_path, addr.status().message());
    if (addr->port() == 0) return FieldError(ep_path, "port must be 1-65535");
    out->static_endpoints.push_back(e.get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<absl::Duration> ParseDurationField(const json& j, absl::string_view path) {
  if (!j.is_string()) {
    return FieldError(path, "must be a duration string (examples: \"250ms\", \"1s\")");
  }
  absl::Duration d;
  if (!absl::ParseDuration(j.get<std::string>(), &d)) {
    return FieldError(path, absl::StrCat("\"", j.get<std::string>(),
                                         "\" is not a duration (examples: \"250ms\", \"1s\")"));
  }
  return d;
}

const ServiceConfig* MeshConfig::Find(absl::string_view name) const {
  auto it = services.find(std::string(name));
  return it == services.end() ? nullptr : &it->second;
}

absl::StatusOr<MeshConfig> ParseMeshConfig(absl::string_view text) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("mesh config is not valid JSON at ", Position(text, e.byte > 0 ? e.byte - 1 : 0),
                     ": ", e.what()));
  }
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
    if (auto st = ParseDiscovery(*disc, absl::StrCat(path, ".discovery"), &sc); !st.ok()) {
      return st;
    }
    if (auto t = s.find("timeout"); t != s.end()) {
      auto d = ParseDurationField(*t, absl::StrCat(path, ".timeout"));
      if (!d.ok()) return d.status();
      if (*d <= absl::ZeroDuration()) return FieldError(absl::StrCat(path, ".timeout"), "must be > 0");
      sc.timeout = *d;
    }
    for (const char* key : {"retry", "hedging", "circuit_breaker", "outlier_detection"}) {
      if (auto f = s.find(key); f != s.end() && !f->is_object()) {
        return FieldError(absl::StrCat(path, ".", key), "must be an object");
      }
    }
    if (auto lb = s.find("load_balancer"); lb != s.end()) {
      if (!lb->is_array()) {
        return FieldError(absl::StrCat(path, ".load_balancer"),
                          "must be a list of {name: config} objects");
      }
      for (size_t i = 0; i < lb->size(); ++i) {
        if (!(*lb)[i].is_object() || (*lb)[i].size() != 1) {
          return FieldError(absl::StrCat(path, ".load_balancer[", i, "]"),
                            "must be an object with exactly one policy name");
        }
      }
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
