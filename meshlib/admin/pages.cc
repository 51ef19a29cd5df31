#include "meshlib/admin/pages.h"

namespace meshlib::admin {

AdminServer::Handlers MetricsPages(metrics::Registry& registry) {
  AdminServer::Handlers h;
  metrics::Registry* r = &registry;
  h["/metrics"] = [r](const HttpRequest&) {
    return HttpResponse{200, kPrometheusContentType, r->Prometheus()};
  };
  h["/metrics.json"] = [r](const HttpRequest&) {
    return HttpResponse{200, "application/json", r->Json()};
  };
  return h;
}

}  // namespace meshlib::admin
