// The mesh's pool of connections (meshlib::mesh internals).
#ifndef MESHLIB_MESH_INTERNAL_CONNECTION_POOL_H_
#define MESHLIB_MESH_INTERNAL_CONNECTION_POOL_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "meshlib/client/channel.h"
#include "meshlib/client/endpoint_channel.h"
#include "meshlib/grpc/grpc_channel.h"
#include "meshlib/runtime/event_loop.h"

namespace meshlib::mesh::internal {

// Connections by endpoint address (and connection count), shared by every
// channel of every stack, so that subsets and reloads do not open their
// own. Held by the channel factories of the stacks, which can outlive the
// mesh's core by a moment.
class ConnectionPool {
 public:
  // `grpc`: gRPC over HTTP/2 (grpc::GrpcChannel) instead of meshlib's own
  // protocol (client::Channel).
  absl::StatusOr<std::shared_ptr<client::EndpointChannel>> Get(
      const std::string& address, const client::ChannelOptions& options, bool grpc = false) {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) {
      return absl::CancelledError(absl::StrCat("mesh closed: no new connection to ", address));
    }
    // Services calling one address with different protocols or TLS
    // settings get different connections.
    auto& slot = pool_[absl::StrCat(address, "#", options.connections, "#",
                                    reinterpret_cast<uintptr_t>(options.tls.get()),
                                    grpc ? "#grpc" : "")];
    if (auto ch = slot.lock()) return ch;
    std::shared_ptr<client::EndpointChannel> ch;
    if (grpc) {
      auto created = grpc::GrpcChannel::Create(address, options);
      if (!created.ok()) return created.status();
      ch = runtime::ShareOffLoop(std::move(*created));
    } else {
      auto created = client::Channel::Create(address, options);
      if (!created.ok()) return created.status();
      ch = runtime::ShareOffLoop(std::move(*created));
    }
    slot = ch;
    // Forget addresses whose channels are gone, now and then.
    if (pool_.size() > 64) {
      for (auto it = pool_.begin(); it != pool_.end();) {
        it = it->second.expired() ? pool_.erase(it) : std::next(it);
      }
    }
    return ch;
  }
  // Every channel still in use (for the metrics).
  std::vector<std::shared_ptr<client::EndpointChannel>> Live() {
    std::vector<std::shared_ptr<client::EndpointChannel>> live;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [key, weak] : pool_) {
      if (auto ch = weak.lock()) live.push_back(std::move(ch));
    }
    return live;
  }
  // Closes every pooled connection: calls in flight on them (blocking ones
  // included) end with CANCELLED; no new connection is made.
  void Shutdown() {
    std::vector<std::shared_ptr<client::EndpointChannel>> live;
    {
      std::lock_guard<std::mutex> lock(mu_);
      shut_down_ = true;
      for (auto& [key, weak] : pool_) {
        if (auto ch = weak.lock()) live.push_back(std::move(ch));
      }
    }
    for (auto& ch : live) ch->Shutdown();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::weak_ptr<client::EndpointChannel>> pool_;  // guarded by mu_
  bool shut_down_ = false;                                       // guarded by mu_
};

}  // namespace meshlib::mesh::internal

#endif  // MESHLIB_MESH_INTERNAL_CONNECTION_POOL_H_
