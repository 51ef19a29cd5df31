// ServiceChannel: calls to a service whose endpoints come from discovery.
//
// It subscribes to the service's Discovery and keeps one Channel per
// endpoint. An update is applied on the control loop, off the request path:
// channels for new endpoints start connecting, and a new immutable snapshot
// replaces the old one for new calls. A removed endpoint's channel leaves the
// snapshot at once but lives on until its outstanding calls have completed
// (or `drain_timeout` passes), so an update never fails a call in flight.
//
//   auto sc = client::ServiceChannel::Create(
//       "echo", nlohmann::json::parse(R"({"dns": {"name": "_echo._tcp.mesh.test"}})"),
//       client::ServiceChannelOptions{}).value();
//   sc->WaitForEndpoints(absl::Seconds(5));
//   client::CallResult r = sc->CallBlocking("Echo/Say", "hi");
//
// A call refused before any handler saw it (a draining server's refusal, a
// connection that could not be set up: CallResult::not_processed) is sent
// once more to another endpoint within its deadline, as gRPC's transparent
// retry does; that is what keeps a deregistering, draining instance from
// failing the calls that raced its removal. Policy-driven retries (status
// codes, budgets) are the retry layer's job.
//
// Balancing here is round-robin over endpoints that have a ready connection
// (falling back to all of them when none is ready yet), so a just-added
// endpoint takes traffic once it is connected, not while it is still
// connecting. Weights, priorities and the other policies belong to the
// load-balancing layer that replaces this picker.
//
// Threading: all methods are thread-safe. Callbacks run on reactor threads
// and must not block or destroy the ServiceChannel.
#ifndef MESHLIB_CLIENT_SERVICE_CHANNEL_H_
#define MESHLIB_CLIENT_SERVICE_CHANNEL_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/client/channel.h"
#include "meshlib/discovery/resolver.h"
#include "nlohmann/json.hpp"

namespace meshlib::client {

struct ServiceChannelOptions {
  // For every endpoint's channel. `channel.runtime` is shared by all of them
  // (created once here when not given).
  ChannelOptions channel;
  // The control-plane loop for discovery and updates; default: own one.
  std::shared_ptr<runtime::EventLoop> control_loop;
  // How long a removed endpoint's channel may keep calls in flight before it
  // is closed (and they fail with CANCELLED). Default: channel.default_timeout
  // (no call can outlive it anyway), at most 5 minutes.
  absl::Duration drain_timeout = absl::ZeroDuration();
  // Path of `discovery` in the config, for messages. Default
  // "services.<service>.discovery".
  std::string config_path;
  uint64_t seed = 0;
};

struct ServiceChannelStats {
  uint64_t endpoint_updates = 0;  // discovery sets applied
  size_t endpoints = 0;           // in the current snapshot
  size_t draining = 0;            // removed channels still finishing calls
  uint64_t transparent_retries = 0;
  discovery::DiscoveryStats discovery;
};

class ServiceChannel {
 public:
  static absl::StatusOr<std::unique_ptr<ServiceChannel>> Create(
      std::string service, const nlohmann::json& discovery, ServiceChannelOptions options);
  ~ServiceChannel();
  ServiceChannel(const ServiceChannel&) = delete;
  ServiceChannel& operator=(const ServiceChannel&) = delete;

  CallHandle Call(absl::string_view method, absl::string_view request,
                  const CallOptions& options, CallCallback done);
  CallResult CallBlocking(absl::string_view method, absl::string_view request,
                          const CallOptions& options = {});

  // Blocks until discovery has produced endpoints and they are applied.
  bool WaitForEndpoints(absl::Duration timeout);
  // Addresses in the current snapshot, sorted.
  std::vector<std::string> Endpoints() const;
  ServiceChannelStats stats() const;
  const std::string& service() const { return service_; }
  const discovery::Discovery& discovery() const { return *discovery_; }

 private:
  struct Snapshot {
    std::shared_ptr<const discovery::EndpointSet> set;
    std::vector<std::shared_ptr<Channel>> channels;  // parallel to set->endpoints()
  };
  struct Draining {
    std::shared_ptr<Channel> channel;
    absl::Time deadline;
  };

  ServiceChannel(std::string service, ServiceChannelOptions options);
  void Apply(std::shared_ptr<const discovery::EndpointSet> set);  // control loop
  void CollectDrained();                                            // control loop
  // The returned channel stays alive while `s` is held.
  Channel* Pick(const Snapshot& s);
  // Another endpoint than `avoid`, ready ones first; nullptr when none.
  Channel* PickOther(const Snapshot& s, const std::string& avoid);
  CallResult NoEndpoints() const;

  const std::string service_;
  ServiceChannelOptions options_;
  std::shared_ptr<runtime::EventLoop> control_;
  std::unique_ptr<discovery::Discovery> discovery_;
  uint64_t subscription_ = 0;

  // Read by every call (std::atomic_load/atomic_store); replaced by Apply.
  std::shared_ptr<const Snapshot> snapshot_;
  std::atomic<uint32_t> next_{0};

  // Control loop only.
  std::map<std::string, std::shared_ptr<Channel>, std::less<>> channels_;
  std::vector<Draining> draining_;
  runtime::TimerId drain_timer_;
  std::atomic<uint64_t> updates_{0};
  std::atomic<size_t> draining_count_{0};
  std::atomic<uint64_t> transparent_retries_{0};

  core::Mutex mu_;
  std::condition_variable cv_;  // with mu_.native(): a snapshot arrived
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_SERVICE_CHANNEL_H_
