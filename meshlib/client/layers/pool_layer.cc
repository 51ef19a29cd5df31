#include "meshlib/client/layers/pool_layer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "meshlib/runtime/event_loop.h"

namespace meshlib::client {

absl::StatusOr<std::shared_ptr<EndpointChannel>> PoolLayer::Open(
    const std::string& address) const {
  if (factory_) return factory_(address);
  auto ch = Channel::Create(address, options_);
  if (!ch.ok()) return ch.status();
  return std::shared_ptr<EndpointChannel>(runtime::ShareOffLoop(std::move(*ch)));
}

void PoolLayer::Drain(std::shared_ptr<EndpointChannel> channel, absl::Time now) {
  draining_.push_back({std::move(channel), now + drain_timeout_});
  draining_count_.store(draining_.size(), std::memory_order_relaxed);
}

bool PoolLayer::CollectDrained(absl::Time now) {
  // A draining channel is closed once nothing can start a call on it (no
  // snapshot or caller holds it: use_count 1) and none is outstanding, or
  // when its drain time is up.
  draining_.erase(std::remove_if(draining_.begin(), draining_.end(),
                                 [now](const Draining& d) {
                                   return (d.channel.use_count() == 1 &&
                                           d.channel->CallsOutstanding() == 0) ||
                                          now >= d.deadline;
                                 }),
                  draining_.end());
  draining_count_.store(draining_.size(), std::memory_order_relaxed);
  return !draining_.empty();
}

std::string PoolLayer::Describe() const {
  return absl::StrCat(endpoints_.load(std::memory_order_relaxed), " endpoints (",
                      ejected_.load(std::memory_order_relaxed), " ejected, ",
                      unhealthy_.load(std::memory_order_relaxed), " unhealthy), ",
                      factory_ ? "custom transport"
                               : absl::StrCat(options_.connections, " connection(s) each"),
                      ", connect timeout ", absl::FormatDuration(options_.connect_timeout));
}

}  // namespace meshlib::client
