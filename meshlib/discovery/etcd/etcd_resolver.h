// The "etcd" discovery kind: the instances registered under a key prefix in
// etcd (see docs/discovery.md, "Self-registration"), read once and then followed
// with a watch.
//
//   "discovery": {"etcd": {
//     "endpoints": ["127.0.0.1:2379", "127.0.0.1:22379"],  // required, "host:port"
//     "prefix": "/meshlib/services/echo/",                 // required, non-empty
//     "dial_timeout": "2s",        // TCP connect to one member; 1ms..1m, default 2s
//     "request_timeout": "5s",     // one request to one member; 1ms..10m, default 5s
//     "retry_backoff": {"base": "100ms", "max": "5s"}      // reconnects, jittered;
//   }}                                                      // base 1ms..1m, max >= base
//
// Each key `<prefix><host:port>` holds {"address": "host:port", "weight": 1,
// "zone": "a", "metadata": {...}} (weight, zone, metadata, priority
// optional). An entry is skipped, and reported through the sink with its
// key, when its value is not a JSON object of that shape, when the key's
// suffix is not a host:port literal, or when the value's address differs
// from the key's suffix (after canonicalisation, so "[::1]:80" matches
// "[0::1]:80"): the key is what the instance deletes when it leaves, so a
// value that names another address could outlive it. A later put with a
// bad value removes the key's endpoint from the set.
//
// Behaviour: list the prefix and publish the set (an empty prefix is an
// empty set, published; a failure publishes nothing), then watch from the
// listed revision + 1 so that nothing between the list and the watch is
// missed, and publish after every batch of events that changes the set.
// When the watch breaks (member down, restart, bad message), the last set
// stays, the error is reported, and the watch resumes after a jittered
// backoff from the last revision seen + 1; if etcd answers that the
// revision was compacted, or cancels the watch, the prefix is listed again.
// Several endpoints: each request tries the next member when one fails.
//
// Threading: as every Resolver, on the control loop only; no threads.
#ifndef MESHLIB_DISCOVERY_ETCD_ETCD_RESOLVER_H_
#define MESHLIB_DISCOVERY_ETCD_ETCD_RESOLVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/discovery/resolver.h"

namespace meshlib::discovery {

std::unique_ptr<ResolverFactory> MakeEtcdResolverFactory();

// Reads one registration: key `<prefix><host:port>` and its JSON value.
// Errors say what is wrong with the entry (not which key: the caller adds it).
absl::StatusOr<Endpoint> ParseEtcdRegistration(absl::string_view prefix, absl::string_view key,
                                               absl::string_view value);

}  // namespace meshlib::discovery

#endif  // MESHLIB_DISCOVERY_ETCD_ETCD_RESOLVER_H_
