// Endpoint and EndpointSet: what discovery publishes.
//
// An EndpointSet is immutable once built and shared by pointer, so the
// request path can hold a snapshot while discovery replaces it atomically:
//
//   std::vector<discovery::Endpoint> v = ...;
//   std::shared_ptr<const discovery::EndpointSet> set =
//       discovery::EndpointSet::Create(std::move(v));
//   for (const auto& e : set->endpoints()) Dial(e.address);
//
// Threading: an EndpointSet is immutable; share it across threads freely.
#ifndef MESHLIB_DISCOVERY_ENDPOINT_H_
#define MESHLIB_DISCOVERY_ENDPOINT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace meshlib::discovery {

struct Endpoint {
  // What the client dials: "127.0.0.1:7001" or "[::1]:7001" (always a
  // literal address; names are resolved by discovery, not by the transport).
  std::string address;
  // Relative share of traffic. Default 1; 0 means "only if nothing else".
  uint32_t weight = 1;
  // Lower is preferred (DNS SRV priority); balancers fail over to the next
  // priority when too few endpoints of the best one are healthy. Default 0.
  uint32_t priority = 0;
  std::string zone;
  std::map<std::string, std::string> metadata;

  friend bool operator==(const Endpoint& a, const Endpoint& b) {
    return a.address == b.address && a.weight == b.weight && a.priority == b.priority &&
           a.zone == b.zone && a.metadata == b.metadata;
  }
  friend bool operator!=(const Endpoint& a, const Endpoint& b) { return !(a == b); }
};

// Validates a dialable "IPv4:port" / "[IPv6]:port" literal with a port in
// 1-65535 and returns it in canonical form ("[::1]:80", not "[0::1]:80").
absl::StatusOr<std::string> CanonicalAddress(absl::string_view host_port);

// Reads an endpoint from JSON, either a "host:port" string or an object
// {"address": "host:port", "weight": 1, "priority": 0, "zone": "a",
//  "metadata": {"k": "v"}} (all but address optional). Errors name `path`.
absl::StatusOr<Endpoint> EndpointFromJson(const nlohmann::json& j, absl::string_view path);
nlohmann::json EndpointToJson(const Endpoint& e);

class EndpointSet {
 public:
  // Sorts by address; when an address repeats, the first occurrence wins.
  static std::shared_ptr<const EndpointSet> Create(std::vector<Endpoint> endpoints);

  const std::vector<Endpoint>& endpoints() const { return endpoints_; }
  size_t size() const { return endpoints_.size(); }
  bool empty() const { return endpoints_.empty(); }
  // Binary search by address; nullptr when absent.
  const Endpoint* Find(absl::string_view address) const;
  // Addresses joined with ", " (for logs and messages).
  std::string ToString() const;

 private:
  explicit EndpointSet(std::vector<Endpoint> e) : endpoints_(std::move(e)) {}
  std::vector<Endpoint> endpoints_;  // sorted by address, unique
};

// What changed between two sets, computed by one merge pass (O(n + m)).
struct EndpointSetDiff {
  std::vector<const Endpoint*> added;    // in `next`
  std::vector<const Endpoint*> removed;  // in `prev`
  std::vector<const Endpoint*> changed;  // in `next`: same address, other attributes
  bool empty() const { return added.empty() && removed.empty() && changed.empty(); }
};
// `prev` may be null (everything in `next` is added).
EndpointSetDiff Diff(const EndpointSet* prev, const EndpointSet& next);

}  // namespace meshlib::discovery

#endif  // MESHLIB_DISCOVERY_ENDPOINT_H_
