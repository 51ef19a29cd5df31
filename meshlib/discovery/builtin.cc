#include "meshlib/discovery/builtin.h"

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

const ResolverRegistry& ResolverRegistry::Global() {
  static ResolverRegistry* registry = [] {
    auto* r = new ResolverRegistry();
    RegisterBuiltinResolvers(*r);
    return r;
  }();
  return *registry;
}

}  // namespace meshlib::discovery
