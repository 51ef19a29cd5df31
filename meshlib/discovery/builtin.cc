#include "meshlib/discovery/builtin.h"

#include "absl/strings/str_cat.h"
#include "meshlib/core/seal_on_read.h"

#include "meshlib/discovery/dns/dns_resolver.h"
#include "meshlib/discovery/etcd/etcd_resolver.h"
#include "meshlib/discovery/file/file_resolver.h"
#include "meshlib/discovery/static/static_resolver.h"

namespace meshlib::discovery {

void RegisterBuiltinResolvers(ResolverRegistry& registry) {
  registry.Register(MakeStaticResolverFactory());
  registry.Register(MakeFileResolverFactory());
  registry.Register(MakeDnsResolverFactory());
  registry.Register(MakeEtcdResolverFactory());
}

namespace {

core::SealOnRead<ResolverRegistry>& Globals() {
  static auto* const g = new core::SealOnRead<ResolverRegistry>(&RegisterBuiltinResolvers);
  return *g;
}

}  // namespace

const ResolverRegistry& ResolverRegistry::Global() { return Globals().Read(); }

absl::Status ResolverRegistry::AddToGlobal(std::unique_ptr<ResolverFactory> factory) {
  std::string kind = factory->kind();
  if (Globals().Add(std::move(factory))) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "discovery kind ", kind,
      ": the global registry is in use already; add kinds at start-up, before any "
      "configuration is parsed or discovery made"));
}

}  // namespace meshlib::discovery
