// Registers the discovery kinds that ship with meshlib: static, file, dns,
// etcd. ResolverRegistry::Global() does this on first use.
#ifndef MESHLIB_DISCOVERY_BUILTIN_H_
#define MESHLIB_DISCOVERY_BUILTIN_H_

#include "meshlib/discovery/resolver.h"

namespace meshlib::discovery {

void RegisterBuiltinResolvers(ResolverRegistry& registry);

}  // namespace meshlib::discovery

#endif  // MESHLIB_DISCOVERY_BUILTIN_H_
