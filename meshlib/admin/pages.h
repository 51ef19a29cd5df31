// The admin endpoint's standard pages over a metrics registry:
//
//   /metrics       the Prometheus text exposition (format 0.0.4)
//   /metrics.json  the same state as JSON (histograms with p50/p90/p99)
//
// Callers add their own (a mesh's stacks, the live page) to the map.
#ifndef MESHLIB_ADMIN_PAGES_H_
#define MESHLIB_ADMIN_PAGES_H_

#include "meshlib/admin/admin_server.h"
#include "meshlib/metrics/metrics.h"

namespace meshlib::admin {

// The content type of the Prometheus text exposition.
inline constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";

AdminServer::Handlers MetricsPages(metrics::Registry& registry);

}  // namespace meshlib::admin

#endif  // MESHLIB_ADMIN_PAGES_H_
