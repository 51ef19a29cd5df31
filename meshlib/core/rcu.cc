#include "meshlib/core/rcu.h"

namespace meshlib::core::rcu_internal {

thread_local size_t thread_shard = kNoShard;

size_t AssignThreadShard() {
  static std::atomic<size_t> next{0};
  thread_shard = next.fetch_add(1, std::memory_order_relaxed) % kShards;
  return thread_shard;
}

}  // namespace meshlib::core::rcu_internal
