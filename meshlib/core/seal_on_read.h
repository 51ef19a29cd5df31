// SealOnRead: a process-wide registry that takes additions at start-up and
// is immutable from its first read on (the global balancing-policy and
// discovery-kind registries).
//
//   static core::SealOnRead<PolicyRegistry>* g =
//       new core::SealOnRead<PolicyRegistry>(&PolicyRegistry::RegisterBuiltins);
//   g->Add(std::move(factory));       // true: added; false: already read
//   const PolicyRegistry& r = g->Read();
//
// Threading: Read and Add are thread-safe (the registry's Register must be).
#ifndef MESHLIB_CORE_SEAL_ON_READ_H_
#define MESHLIB_CORE_SEAL_ON_READ_H_

#include <atomic>
#include <memory>

namespace meshlib::core {

template <typename Registry>
class SealOnRead {
 public:
  // `fill` registers what the registry starts with.
  explicit SealOnRead(void (*fill)(Registry&)) { fill(registry_); }

  // The registry; no addition is taken after this.
  const Registry& Read() {
    sealed_.store(true, std::memory_order_release);
    return registry_;
  }
  // Registers `factory` unless the registry has been read (then false).
  template <typename Factory>
  bool Add(std::unique_ptr<Factory> factory) {
    if (sealed_.load(std::memory_order_acquire)) return false;
    registry_.Register(std::move(factory));
    return true;
  }

 private:
  Registry registry_;
  std::atomic<bool> sealed_{false};
};

}  // namespace meshlib::core

#endif  // MESHLIB_CORE_SEAL_ON_READ_H_
