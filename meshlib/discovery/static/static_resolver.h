// The "static" discovery kind: a fixed list of endpoints from mesh.json.
//
//   "discovery": {"static": {"endpoints": ["127.0.0.1:7001", "[::1]:7002",
//                                          {"address": "127.0.0.1:7003", "weight": 3,
//                                           "zone": "b"}]}}
//
// Entries are "host:port" literals (IPv4 or bracketed IPv6) or endpoint
// objects (see EndpointFromJson). The set is published once, at start.
#ifndef MESHLIB_DISCOVERY_STATIC_STATIC_RESOLVER_H_
#define MESHLIB_DISCOVERY_STATIC_STATIC_RESOLVER_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/discovery/resolver.h"

namespace meshlib::discovery {

// Reads a non-empty "endpoints" list at `path` (shared with the file kind).
absl::StatusOr<std::vector<Endpoint>> ParseEndpointList(const nlohmann::json& list,
                                                        absl::string_view path);

std::unique_ptr<ResolverFactory> MakeStaticResolverFactory();

}  // namespace meshlib::discovery

#endif  // MESHLIB_DISCOVERY_STATIC_STATIC_RESOLVER_H_
