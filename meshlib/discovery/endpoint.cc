#include "meshlib/discovery/endpoint.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"
#include "meshlib/transport/socket.h"

namespace meshlib::discovery {

using json = nlohmann::json;
using core::FieldError;

absl::StatusOr<std::string> CanonicalAddress(absl::string_view host_port) {
  auto addr = transport::ParseHostPort(host_port);
  if (!addr.ok()) return addr.status();
  if (addr->port() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", host_port, "\": port must be between 1 and 65535"));
  }
  return addr->ToString();
}

absl::StatusOr<Endpoint> EndpointFromJson(const json& j, absl::string_view path) {
  Endpoint e;
  const json* address = nullptr;
  std::string address_path(path);
  if (j.is_string()) {
    address = &j;
  } else if (j.is_object()) {
    if (auto st = core::CheckObject(j, path, {"address", "weight", "priority", "zone", "metadata"});
        !st.ok()) {
      return st;
    }
    auto it = j.find("address");
    address_path = core::JoinPath(path, "address");
    if (it == j.end()) return FieldError(address_path, "required");
    address = &*it;
    int64_t weight = 1, priority = 0;
    if (auto st = core::OptionalInt(j, path, "weight", 0, 1000000, &weight); !st.ok()) return st;
    if (auto st = core::OptionalInt(j, path, "priority", 0, 65535, &priority); !st.ok()) {
      return st;
    }
    e.weight = static_cast<uint32_t>(weight);
    e.priority = static_cast<uint32_t>(priority);
    if (auto z = j.find("zone"); z != j.end()) {
      if (!z->is_string()) return FieldError(core::JoinPath(path, "zone"), "must be a string");
      e.zone = z->get<std::string>();
    }
    if (auto m = j.find("metadata"); m != j.end()) {
      std::string mp = core::JoinPath(path, "metadata");
      if (!m->is_object()) return FieldError(mp, "must be an object of strings");
      for (auto kv = m->begin(); kv != m->end(); ++kv) {
        if (!kv.value().is_string()) {
          return FieldError(core::JoinPath(mp, kv.key()), "must be a string");
        }
        e.metadata.emplace(kv.key(), kv.value().get<std::string>());
      }
    }
  } else {
    return FieldError(path, "must be a \"host:port\" string or an object with \"address\"");
  }
  if (!address->is_string()) return FieldError(address_path, "must be a \"host:port\" string");
  auto canonical = CanonicalAddress(address->get<std::string>());
  if (!canonical.ok()) return FieldError(address_path, canonical.status().message());
  e.address = *std::move(canonical);
  return e;
}

json EndpointToJson(const Endpoint& e) {
  json j = {{"address", e.address}, {"weight", e.weight}};
  if (e.priority != 0) j["priority"] = e.priority;
  if (!e.zone.empty()) j["zone"] = e.zone;
  if (!e.metadata.empty()) j["metadata"] = e.metadata;
  return j;
}

std::shared_ptr<const EndpointSet> EndpointSet::Create(std::vector<Endpoint> endpoints) {
  std::stable_sort(endpoints.begin(), endpoints.end(),
                   [](const Endpoint& a, const Endpoint& b) { return a.address < b.address; });
  endpoints.erase(std::unique(endpoints.begin(), endpoints.end(),
                              [](const Endpoint& a, const Endpoint& b) {
                                return a.address == b.address;
                              }),
                  endpoints.end());
  endpoints.shrink_to_fit();
  return std::shared_ptr<const EndpointSet>(new EndpointSet(std::move(endpoints)));
}

const Endpoint* EndpointSet::Find(absl::string_view address) const {
  auto it = std::lower_bound(
      endpoints_.begin(), endpoints_.end(), address,
      [](const Endpoint& e, absl::string_view a) { return absl::string_view(e.address) < a; });
  if (it == endpoints_.end() || it->address != address) return nullptr;
  return &*it;
}

std::string EndpointSet::ToString() const {
  std::string out;
  for (const Endpoint& e : endpoints_) {
    if (!out.empty()) out += ", ";
    out += e.address;
  }
  return out;
}

EndpointSetDiff Diff(const EndpointSet* prev, const EndpointSet& next) {
  EndpointSetDiff d;
  static const std::vector<Endpoint> kNone;
  const std::vector<Endpoint>& a = prev ? prev->endpoints() : kNone;
  const std::vector<Endpoint>& b = next.endpoints();
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (j == b.size() || (i < a.size() && a[i].address < b[j].address)) {
      d.removed.push_back(&a[i++]);
    } else if (i == a.size() || b[j].address < a[i].address) {
      d.added.push_back(&b[j++]);
    } else {
      if (a[i] != b[j]) d.changed.push_back(&b[j]);
      ++i;
      ++j;
    }
  }
  return d;
}

}  // namespace meshlib::discovery
