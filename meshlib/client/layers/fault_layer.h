// FaultLayer: delays or fails a share of calls before they are sent
// (resilience::FaultInjection, the service's `fault` section), to test how
// callers cope. On top of the stack: an injected failure is what the
// caller sees, and is never retried.
#ifndef MESHLIB_CLIENT_LAYERS_FAULT_LAYER_H_
#define MESHLIB_CLIENT_LAYERS_FAULT_LAYER_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "meshlib/client/layer.h"
#include "meshlib/resilience/fault_injection.h"

namespace meshlib::client {

class FaultLayer final : public Layer {
 public:
  explicit FaultLayer(resilience::FaultInjection fault) : fault_(std::move(fault)) {}
  absl::string_view role() const override { return "fault"; }
  std::string Describe() const override;

  // The service's fault injection, or null when it injects nothing. (A
  // route may bring its own instead; the engine applies whichever holds.)
  const resilience::FaultInjection* fault() const { return fault_.enabled() ? &fault_ : nullptr; }
  void CountDelayed() { delayed_.fetch_add(1, std::memory_order_relaxed); }
  void CountAborted() { aborted_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t delayed() const { return delayed_.load(std::memory_order_relaxed); }
  uint64_t aborted() const { return aborted_.load(std::memory_order_relaxed); }

 private:
  const resilience::FaultInjection fault_;
  std::atomic<uint64_t> delayed_{0};
  std::atomic<uint64_t> aborted_{0};
};

}  // namespace meshlib::client

#endif  // MESHLIB_CLIENT_LAYERS_FAULT_LAYER_H_
