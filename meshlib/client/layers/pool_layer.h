// PoolLayer: the connections to each endpoint. One channel per endpoint
// (client::Channel with the service's ChannelOptions, or what the channel
// factory makes: a mesh shares one pool of connections among all its
// stacks). A removed endpoint's channel leaves the picker at once but
// drains: it lives until its calls have completed, or `drain_timeout`
// passes. At the bottom of the stack.
#ifndef MESHLIB_CLIENT_LAYERS_POOL_LAYER_H_
#define MESHLIB_CLIENT_LAYERS_POOL_LAYER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "meshlib/client/channel.h"
#include "meshlib/client/endpoint_channel.h"
#include "meshlib/client/layer.h"

namespace meshlib::client {

class PoolLayer final : public Layer {
 public:
  using Factory =
      std::function<absl::StatusOr<std::shared_ptr<EndpointChannel>>(const std::string&)>;
  // `factory`: null for a client::Channel made with `options`.
  PoolLayer(ChannelOptions options, Factory factory, absl::Duration drain_timeout)
      : options_(std::move(options)), factory_(std::move(factory)), drain_timeout_(drain_timeout) {}
  absl::string_view role() const override { return "pool"; }
  std::string Describe() const override;

  // Control loop.
  absl::StatusOr<std::shared_ptr<EndpointChannel>> Open(const std::string& address) const;
  // The endpoint left: its channel finishes its calls, within drain_timeout.
  void Drain(std::shared_ptr<EndpointChannel> channel, absl::Time now);
  // Closes drained channels; true while some are still draining.
  bool CollectDrained(absl::Time now);
  // Ends every drain now (the channel is going away).
  void Clear() { draining_.clear(); }

  size_t draining() const { return draining_count_.load(std::memory_order_relaxed); }
  // The endpoint counts Describe() prints (set when the picker changes).
  void SetCounts(size_t endpoints, size_t ejected, size_t unhealthy) {
    endpoints_.store(endpoints, std::memory_order_relaxed);
    ejected_.store(ejected, std::memory_order_relaxed);
    unhealthy_.store(unhealthy, std::memory_order_relaxed);
  }

 private:
  struct Draining {
    std::shared_ptr<EndpointChannel> channel;
    absl::Time deadline;
  };
  const ChannelOptions options_;
  const Factory factory_;
  const absl::Duration drain_timeout_;
  std::vector<Draining> draining_;  // control loop
  std::atomic<size_t> draining_count_{0};
  std::atomic<size_t> endpoints_{0};
  std::atomic<size_t> ejected_{0};
  std::atomic<size_t> unhealthy_{0};
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYERS_POOL_LAYER_H_
