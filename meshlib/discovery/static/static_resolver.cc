#include "meshlib/discovery/static/static_resolver.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/core/json_fields.h"

namespace meshlib::discovery {
namespace {

using json = nlohmann::json;

absl::StatusOr<std::vector<Endpoint>> ParseStatic(const json& config, absl::string_view path) {
  if (auto st = core::CheckObject(config, path, {"endpoints"}); !st.ok()) return st;
  auto it = config.find("endpoints");
  if (it == config.end()) return core::FieldError(core::JoinPath(path, "endpoints"), "required");
  return ParseEndpointList(*it, core::JoinPath(path, "endpoints"));
}

class StaticResolver final : public Resolver {
 public:
  explicit StaticResolver(std::vector<Endpoint> endpoints) : endpoints_(std::move(endpoints)) {}
  void Start(ResolverSink* sink) override { sink->Publish(endpoints_); }

 private:
  const std::vector<Endpoint> endpoints_;
};

class StaticResolverFactory final : public ResolverFactory {
 public:
  std::string kind() const override { return "static"; }
  absl::Status Validate(const json& config, absl::string_view path) const override {
    return ParseStatic(config, path).status();
  }
  absl::StatusOr<std::unique_ptr<Resolver>> Create(const ResolverArgs& args) const override {
    auto eps = ParseStatic(args.config, args.path);
    if (!eps.ok()) return eps.status();
    return std::make_unique<StaticResolver>(*std::move(eps));
  }
};

}  // namespace

absl::StatusOr<std::vector<Endpoint>> ParseEndpointList(const json& list, absl::string_view path) {
  if (!list.is_array() || list.empty()) return core::FieldError(path, "must be a non-empty list");
  std::vector<Endpoint> out;
  out.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    auto e = EndpointFromJson(list[i], absl::StrCat(path, "[", i, "]"));
    if (!e.ok()) return e.status();
    out.push_back(*std::move(e));
  }
  return out;
}

std::unique_ptr<ResolverFactory> MakeStaticResolverFactory() {
  return std::make_unique<StaticResolverFactory>();
}

}  // namespace meshlib::discovery
