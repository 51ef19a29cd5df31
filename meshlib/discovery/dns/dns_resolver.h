// The "dns" discovery kind: a service's endpoints from DNS, through c-ares on
// the control loop (no thread per query, no blocking call).
//
//   "discovery": {"dns": {"name": "_echo._tcp.mesh.test",
//                         "servers": ["127.0.0.1:5353"]}}
//   "discovery": {"dns": {"name": "echo.mesh.test", "port": 7001, "family": "ipv4"}}
//
// A name starting with "_" is an SRV name: each SRV record's target is
// resolved to its A and/or AAAA addresses (an IP-literal target is used as
// is), and every address becomes an endpoint with the record's port,
// Endpoint::priority = SRV priority and Endpoint::weight = SRV weight. SRV
// weight 0 stays 0, which Endpoint reads as "only if nothing else" (RFC
// 2782: "a very small chance of being selected"). Metadata "dns_target"
// holds the record's target name. Any other name is resolved to its A and/or
// AAAA addresses, each an endpoint with the configured "port" and weight 1.
// When two records give the same address, the lower priority (then the
// higher weight) wins.
//
// Keys of the kind's object:
//   name         required. SRV when it starts with "_", else A/AAAA.
//   port         A/AAAA names: required, 1-65535. SRV names: not allowed.
//   servers      list of "ip:port" ("[::1]:53" for IPv6; a bare IP means
//                port 53). Default: the system's resolv.conf.
//   family       "any" (default: A and AAAA), "ipv4" (A), "ipv6" (AAAA). For
//                SRV names it applies to the targets.
//   min_refresh  default "5s" }  the records' minimum TTL, clamped to these,
//   max_refresh  default "300s"} is when the name is resolved again;
//                10ms-24h; min_refresh <= max_refresh.
//   jitter       default 0.1, range 0-0.5: the interval is multiplied by a
//                uniform factor in [1 - jitter, 1].
//   timeout      default "2s", 10ms-60s: per query attempt (c-ares doubles it
//                on each pass over the servers).
//   tries        default 2, 1-10: attempts per query and server.
//
// Failures (timeout, SERVFAIL, NXDOMAIN, no records, a malformed answer,
// every SRV target failing) are reported to the sink with the name, the
// servers and what went wrong, e.g.
//   dns _echo._tcp.mesh.test (servers 127.0.0.1:5353): SRV query timed out
// and nothing is published, so the last good set stays; the name is then
// resolved again after a backoff starting at min(min_refresh / 4, 250ms)
// and growing up to max_refresh. When only some SRV targets fail, the
// endpoints of the others are published and the rest reported. A set equal
// to the last one published is not published again (fewer subscriber
// wake-ups), and an empty set is never published.
//
// Threading: as every Resolver, the resolver runs on the control loop only.
#ifndef MESHLIB_DISCOVERY_DNS_DNS_RESOLVER_H_
#define MESHLIB_DISCOVERY_DNS_DNS_RESOLVER_H_

#include <memory>

#include "meshlib/discovery/resolver.h"

namespace meshlib::discovery {

std::unique_ptr<ResolverFactory> MakeDnsResolverFactory();

}  // namespace meshlib::discovery

#endif  // MESHLIB_DISCOVERY_DNS_DNS_RESOLVER_H_
