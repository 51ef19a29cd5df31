#include "meshlib/discovery/builtin.h"

#include <atomic>

#include "absl/strings/str_cat.h"

#include "meshlib/discovery/dns_resolver.h"
#include "meshlib/discovery/etcd_resolver.h"
#include "meshlib/discovery/file_resolver.h"
#include "meshlib/discovery/static_resolver.h"

namespace meshlib::discovery {

void RegisterBuiltinResolvers(ResolverRegistry& registry) {
  registry.Register(MakeStaticResolverFactory());
  registry.Register(MakeFileResolverFactory());
  registry.Register(MakeDnsResolverFactory());
  registry.Register(MakeEtcdResolverFactory());
}

namespace {

// The global registry, sealed at its first read.
struct GlobalResolvers {
  ResolverRegistry registry;
  std::atomic<bool> sealed{false};
};

GlobalResolvers& Globals() {
  static GlobalResolvers* const g = [] {
    auto* g = new GlobalResolvers();
    RegisterBuiltinResolvers(g->registry);
    return g;
  }();
  return *g;
}

}  // namespace

const ResolverRegistry& ResolverRegistry::Global() {
  GlobalResolvers& g = Globals();
  g.sealed.store(true, std::memory_order_release);
  return g.registry;
}

absl::Status ResolverRegistry::AddToGlobal(std::unique_ptr<ResolverFactory> factory) {
  GlobalResolvers& g = Globals();
  if (g.sealed.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "discovery kind ", factory->kind(),
        ": the global registry is in use already; add kinds at start-up, before any "
        "configuration is parsed or discovery made"));
  }
  g.registry.Register(std::move(factory));
  return absl::OkStatus();
}

}  // namespace meshlib::discovery
