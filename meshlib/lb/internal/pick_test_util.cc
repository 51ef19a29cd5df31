#include "meshlib/lb/internal/pick_test_util.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace meshlib::lb_internal {

std::vector<lb::LbEndpoint> MakeEndpoints(const std::vector<uint32_t>& weights,
                                          const lb::EndpointStatsOptions& options) {
  std::vector<lb::LbEndpoint> v;
  for (size_t i = 0; i < weights.size(); ++i) {
    lb::LbEndpoint e;
    e.endpoint.address = "127.0.0.1:" + std::to_string(7000 + i);
    e.endpoint.weight = weights[i];
    e.stats = std::make_shared<lb::EndpointStats>(options);
    v.push_back(std::move(e));
  }
  return v;
}

std::vector<lb::LbEndpoint> MakeEndpoints(int n, const lb::EndpointStatsOptions& options) {
  return MakeEndpoints(std::vector<uint32_t>(n, 1), options);
}

absl::StatusOr<std::unique_ptr<lb::Policy>> MakePolicy(absl::string_view list_json,
                                                       runtime::Clock* clock) {
  auto choice = lb::PolicyRegistry::Global().Select(
      nlohmann::json::parse(list_json.begin(), list_json.end()), "lb");
  if (!choice.ok()) return choice.status();
  lb::PolicyContext ctx;
  ctx.clock = clock;
  return choice->factory->Create(choice->config, choice->path, ctx);
}

std::vector<int> CountPicks(const lb::Picker& picker, size_t size, int picks) {
  std::vector<int> count(size, 0);
  for (int k = 0; k < picks; ++k) {
    int i = picker.Pick({});
    if (i < 0 || static_cast<size_t>(i) >= size) {
      ADD_FAILURE() << "pick " << k << " returned " << i << " (size " << size << ")";
      continue;
    }
    ++count[i];
  }
  return count;
}

}  // namespace meshlib::lb_internal
