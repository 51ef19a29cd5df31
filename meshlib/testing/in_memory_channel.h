// InMemoryChannel: an EndpointChannel with no network under it. Each call
// is answered by a function, at once, on the calling thread, so that tests
// and benchmarks can run the whole client stack (ServiceChannel, a mesh
// Client) over a transport that costs next to nothing.
//
//   auto factory = testing::InMemoryChannel::Factory(
//       [](const std::string& address, absl::string_view method, absl::string_view request,
//          const client::CallOptions&) {
//         client::CallResult r;
//         r.payload = std::string(request);
//         return r;
//       });
//   client::ServiceChannelOptions o;
//   o.channel_factory = factory;
//
// The result's `endpoint` is set to the channel's address. Threading:
// thread-safe when the handler is.
#ifndef MESHLIB_TESTING_IN_MEMORY_CHANNEL_H_
#define MESHLIB_TESTING_IN_MEMORY_CHANNEL_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "meshlib/client/endpoint_channel.h"

namespace meshlib::testing {

class InMemoryChannel final : public client::EndpointChannel {
 public:
  using Handler = std::function<client::CallResult(
      const std::string& address, absl::string_view method, absl::string_view request,
      const client::CallOptions& options)>;

  InMemoryChannel(std::string address, Handler handler)
      : address_(std::move(address)), handler_(std::move(handler)) {}

  // For ServiceChannelOptions::channel_factory.
  static std::function<absl::StatusOr<std::shared_ptr<client::EndpointChannel>>(
      const std::string&)>
  Factory(Handler handler) {
    return [handler](const std::string& address)
               -> absl::StatusOr<std::shared_ptr<client::EndpointChannel>> {
      return std::make_shared<InMemoryChannel>(address, handler);
    };
  }

  client::CallHandle Call(absl::string_view method, absl::string_view request,
                          const client::CallOptions& options,
                          client::CallCallback done) override {
    done(CallBlocking(method, request, options));
    return client::CallHandle();
  }
  client::CallResult CallBlocking(absl::string_view method, absl::string_view request,
                                  const client::CallOptions& options = {}) override {
    calls_.fetch_add(1, std::memory_order_relaxed);
    client::CallResult r = handler_(address_, method, request, options);
    r.endpoint = address_;
    return r;
  }
  const std::string& address() const override { return address_; }
  int ReadyConnections() const override { return 1; }
  bool Unreachable() const override { return false; }
  size_t CallsOutstanding() const override { return 0; }
  void Connect() override {}

  uint64_t calls() const { return calls_.load(std::memory_order_relaxed); }

 private:
  const std::string address_;
  const Handler handler_;
  std::atomic<uint64_t> calls_{0};
};

}  // namespace meshlib::testing

#endif  // MESHLIB_TESTING_IN_MEMORY_CHANNEL_H_
