#include "meshlib/config/routing_config.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "meshlib/core/json_fields.h"

namespace meshlib::config {

// The JSON field helpers (meshlib/core/json_fields.h).
using core::FieldError;
using core::JoinPath;
using core::CheckObject;
using core::OptionalInt;
using core::OptionalString;

namespace {

using json = nlohmann::json;

// "(subsets: v1, v2)", for an error about a name not among them.
std::string KnownSubsets(const std::vector<SubsetConfig>& subsets) {
  if (subsets.empty()) return "(the service has no \"subsets\")";
  return absl::StrCat("(subsets: ",
                      absl::StrJoin(subsets, ", ",
                                    [](std::string* out, const SubsetConfig& s) {
                                      out->append(s.name);
                                    }),
                      ")");
}

bool HasSubset(const std::vector<SubsetConfig>& subsets, absl::string_view name) {
  return std::any_of(subsets.begin(), subsets.end(),
                     [&](const SubsetConfig& s) { return s.name == name; });
}

absl::Status ParseMatch(const json& j, absl::string_view path, RouteMatch* out) {
  if (auto st = CheckObject(j, path, {"method", "metadata"}); !st.ok()) return st;
  if (auto m = j.find("method"); m != j.end()) {
    std::string mp = JoinPath(path, "method");
    if (!m->is_string() || m->get<std::string>().empty()) {
      return FieldError(mp, "must be a non-empty string: a method name (\"Kv/Put\") or a "
                            "prefix ending in * (\"Kv/*\")");
    }
    std::string method = m->get<std::string>();
    size_t star = method.find('*');
    if (star != std::string::npos && star != method.size() - 1) {
      return FieldError(mp, absl::StrCat("\"", method,
                                         "\": * is allowed only at the end (a prefix)"));
    }
    out->method_prefix = star != std::string::npos;
    if (out->method_prefix) method.pop_back();
    out->method = std::move(method);
  }
  if (auto md = j.find("metadata"); md != j.end()) {
    std::string mp = JoinPath(path, "metadata");
    if (!md->is_object()) {
      return FieldError(mp, "must be an object of request-metadata key -> value (\"*\": present)");
    }
    for (auto it = md->begin(); it != md->end(); ++it) {
      if (it.key().empty()) return FieldError(mp, "keys must not be empty");
      if (!it.value().is_string()) {
        return FieldError(JoinPath(mp, it.key()),
                          "must be a string: the exact value, or \"*\" for any value");
      }
      out->metadata.emplace_back(it.key(), it.value().get<std::string>());
    }
  }
  return absl::OkStatus();
}

absl::Status ParseSplit(const json& j, absl::string_view path,
                        const std::vector<SubsetConfig>& subsets, RouteConfig* out) {
  if (!j.is_object() || j.empty()) {
    return FieldError(path, absl::StrCat("must be a non-empty object of subset name -> weight (0-",
                                         kMaxSplitWeight, ")"));
  }
  uint64_t total = 0;
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string ep = JoinPath(path, it.key());
    if (!HasSubset(subsets, it.key())) {
      return FieldError(ep, absl::StrCat("no subset named \"", it.key(), "\" ",
                                         KnownSubsets(subsets)));
    }
    int64_t weight = 0;
    if (auto st = OptionalInt(j, path, it.key(), 0, kMaxSplitWeight, &weight); !st.ok()) {
      return st;
    }
    total += static_cast<uint64_t>(weight);
    out->split.emplace_back(it.key(), static_cast<uint32_t>(weight));
  }
  if (total == 0) return FieldError(path, "needs at least one weight > 0");
  return absl::OkStatus();
}

absl::StatusOr<RouteConfig> ParseRoute(const json& j, absl::string_view path, size_t index,
                                       const std::vector<SubsetConfig>& subsets) {
  if (auto st = CheckObject(j, path, {"name", "match", "subset", "split", "fault"}); !st.ok()) {
    return st;
  }
  RouteConfig r;
  r.name = absl::StrCat("routes[", index, "]");
  if (auto st = OptionalString(j, path, "name", &r.name); !st.ok()) return st;
  if (auto m = j.find("match"); m != j.end()) {
    if (auto st = ParseMatch(*m, JoinPath(path, "match"), &r.match); !st.ok()) return st;
  }
  auto subset = j.find("subset");
  auto split = j.find("split");
  if ((subset == j.end()) == (split == j.end())) {
    return FieldError(path, "needs exactly one of \"subset\" (a subset name) or \"split\" "
                            "(subset name -> weight)");
  }
  if (subset != j.end()) {
    std::string sp = JoinPath(path, "subset");
    if (!subset->is_string() || subset->get<std::string>().empty()) {
      return FieldError(sp, "must be a non-empty string: a name from the service's \"subsets\"");
    }
    const std::string name = subset->get<std::string>();
    if (!HasSubset(subsets, name)) {
      return FieldError(sp, absl::StrCat("no subset named \"", name, "\" ", KnownSubsets(subsets)));
    }
    r.split.emplace_back(name, 1);
  } else {
    if (auto st = ParseSplit(*split, JoinPath(path, "split"), subsets, &r); !st.ok()) return st;
  }
  if (auto f = j.find("fault"); f != j.end()) {
    auto fault = resilience::ParseFaultInjection(*f, JoinPath(path, "fault"));
    if (!fault.ok()) return fault.status();
    r.fault = *fault;
  }
  return r;
}

// True when `metadata` has `key` with `value` ("*": any value).
bool HasPair(const transport::Metadata& metadata, absl::string_view key,
             absl::string_view value) {
  for (const auto& [k, v] : metadata) {
    if (k == key && (value == "*" || v == value)) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::vector<SubsetConfig>> ParseSubsets(const json& j, absl::string_view path) {
  if (!j.is_object()) {
    return FieldError(path, "must be an object of subset name -> {endpoint-metadata key: value}");
  }
  std::vector<SubsetConfig> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key().empty()) return FieldError(path, "subset names must not be empty");
    std::string sp = JoinPath(path, it.key());
    if (!it.value().is_object()) {
      return FieldError(sp, "must be an object of endpoint-metadata key -> exact value");
    }
    SubsetConfig s;
    s.name = it.key();
    for (auto kv = it.value().begin(); kv != it.value().end(); ++kv) {
      if (kv.key().empty()) return FieldError(sp, "metadata keys must not be empty");
      if (!kv.value().is_string()) return FieldError(JoinPath(sp, kv.key()), "must be a string");
      s.match.emplace(kv.key(), kv.value().get<std::string>());
    }
    out.push_back(std::move(s));
  }
  return out;  // nlohmann::json objects iterate in key order: sorted by name
}

absl::StatusOr<std::vector<RouteConfig>> ParseRoutes(const json& j, absl::string_view path,
                                                     const std::vector<SubsetConfig>& subsets) {
  if (!j.is_array()) return FieldError(path, "must be a list of route objects");
  std::vector<RouteConfig> out;
  for (size_t i = 0; i < j.size(); ++i) {
    std::string rp = absl::StrCat(path, "[", i, "]");
    auto route = ParseRoute(j[i], rp, i, subsets);
    if (!route.ok()) return route.status();
    for (size_t k = 0; k < out.size(); ++k) {
      if (out[k].name == route->name) {
        // Names label the route in errors and metrics; two alike would
        // make them ambiguous.
        return FieldError(JoinPath(rp, "name"),
                          absl::StrCat("\"", route->name, "\" is already the name of ", path,
                                       "[", k, "]"));
      }
    }
    out.push_back(*std::move(route));
  }
  return out;
}

bool SubsetMatches(const SubsetConfig& subset, const discovery::Endpoint& endpoint) {
  for (const auto& [key, value] : subset.match) {
    auto it = endpoint.metadata.find(key);
    if (it != endpoint.metadata.end()) {
      if (it->second != value) return false;
    } else if (key == "zone") {
      if (endpoint.zone != value) return false;
    } else {
      return false;
    }
  }
  return true;
}

bool RouteMatches(const RouteMatch& match, absl::string_view method,
                  const transport::Metadata& request_metadata) {
  if (!match.method.empty()) {
    if (match.method_prefix ? !absl::StartsWith(method, match.method) : method != match.method) {
      return false;
    }
  }
  for (const auto& [key, value] : match.metadata) {
    if (!HasPair(request_metadata, key, value)) return false;
  }
  return true;
}

const RouteConfig* FirstMatchingRoute(const std::vector<RouteConfig>& routes,
                                      absl::string_view method,
                                      const transport::Metadata& request_metadata) {
  for (const RouteConfig& r : routes) {
    if (RouteMatches(r.match, method, request_metadata)) return &r;
  }
  return nullptr;
}

int PickSplit(const RouteConfig& route, uint64_t random64,
              absl::FunctionRef<bool(size_t)> usable) {
  // At most a few entries: two passes over them beat keeping a table.
  uint64_t total = 0;
  for (size_t i = 0; i < route.split.size(); ++i) {
    if (route.split[i].second > 0 && usable(i)) total += route.split[i].second;
  }
  if (total == 0) return -1;
  // Uniform in [0, total) (Lemire's multiply-shift).
  uint64_t point =
      static_cast<uint64_t>((static_cast<unsigned __int128>(random64) * total) >> 64);
  int last = -1;
  for (size_t i = 0; i < route.split.size(); ++i) {
    uint32_t w = route.split[i].second;
    if (w == 0 || !usable(i)) continue;
    if (point < w) return static_cast<int>(i);
    point -= w;
    last = static_cast<int>(i);
  }
  return last;  // unreachable unless usable() changed its answer between passes
}

}  // namespace meshlib::config
