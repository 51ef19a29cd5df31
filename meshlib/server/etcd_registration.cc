#include "meshlib/server/etcd_registration.h"

#include <utility>

namespace meshlib::server {

absl::StatusOr<std::shared_ptr<etcd::Registrar>> RegisterInEtcd(Server& server,
                                                                etcd::RegistrarOptions options) {
  if (options.endpoint.address.empty()) {
    options.endpoint.address = server.address();
    if (options.endpoint.address.empty()) {
      return absl::FailedPreconditionError("RegisterInEtcd: the server has not started");
    }
  }
  auto registrar = etcd::Registrar::Create(std::move(options));
  if (!registrar.ok()) return registrar.status();
  std::shared_ptr<etcd::Registrar> shared = *std::move(registrar);
  server.AddPreShutdownHook([shared] { shared->Stop().IgnoreError(); });
  return shared;
}

}  // namespace meshlib::server
