// Registering a meshlib Server in etcd, and leaving before it drains.
//
//   server::Server server;
//   ... server.Start("127.0.0.1:0") ...
//   etcd::RegistrarOptions reg;
//   reg.etcd.endpoints = {"127.0.0.1:2379"};
//   reg.prefix = "/meshlib/services/echo/";
//   reg.endpoint.zone = "a";                 // address: server.address() by default
//   absl::StatusOr<std::shared_ptr<etcd::Registrar>> r = server::RegisterInEtcd(server, reg);
//   ...
//   server.Shutdown(absl::Seconds(10));      // revokes the lease first (<= revoke_timeout),
//                                            // then stops accepting and drains
//
// The registration runs in the background (see etcd::Registrar): this call
// returns before the key is in etcd; r->WaitUntilRegistered() waits for it.
//
// Threading: thread-safe; call after Server::Start.
#ifndef MESHLIB_SERVER_ETCD_REGISTRATION_H_
#define MESHLIB_SERVER_ETCD_REGISTRATION_H_

#include <memory>

#include "absl/status/statusor.h"
#include "meshlib/etcd/registrar.h"
#include "meshlib/server/server.h"

namespace meshlib::server {

// Registers `server` under options.prefix, with options.endpoint.address
// defaulting to server.address(), and deregisters at the start of
// server.Shutdown (or its destructor). Errors: FAILED_PRECONDITION before
// Start; INVALID_ARGUMENT for bad options (naming the field).
absl::StatusOr<std::shared_ptr<etcd::Registrar>> RegisterInEtcd(Server& server,
                                                                etcd::RegistrarOptions options);

}  // namespace meshlib::server

#endif  // MESHLIB_SERVER_ETCD_REGISTRATION_H_
