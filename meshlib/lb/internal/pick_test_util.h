// Helpers for the load-balancing policies' tests: endpoints with given
// weights, a policy made from a "load_balancer" list as the client does,
// and pick counts.
//
//   auto eps = lb_internal::MakeEndpoints({1, 2, 7});
//   auto policy = lb_internal::MakePolicy(R"([{"random": {}}])", &clock);
//   std::vector<int> n = lb_internal::CountPicks(*(*policy)->Build(eps), eps.size(), 10000);
//
// Threading: CountPicks picks on the calling thread only.
#ifndef MESHLIB_LB_INTERNAL_PICK_TEST_UTIL_H_
#define MESHLIB_LB_INTERNAL_PICK_TEST_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meshlib/lb/policy.h"
#include "meshlib/runtime/executor.h"

namespace meshlib::lb_internal {

// Endpoints 127.0.0.1:7000.. with these weights, healthy, each with its
// own EndpointStats made from `options`.
std::vector<lb::LbEndpoint> MakeEndpoints(const std::vector<uint32_t>& weights,
                                          const lb::EndpointStatsOptions& options = {});
// `n` endpoints of weight 1. (Beware: MakeEndpoints({9}) is this one, with
// 9 endpoints; spell one weight as std::vector<uint32_t>{9}.)
std::vector<lb::LbEndpoint> MakeEndpoints(int n, const lb::EndpointStatsOptions& options = {});

// Selects from `list_json` (path "lb") and creates with `clock`.
absl::StatusOr<std::unique_ptr<lb::Policy>> MakePolicy(absl::string_view list_json,
                                                       runtime::Clock* clock);

// How often each of `size` indices came up in `picks` picks; a pick
// outside [0, size) fails the current test.
std::vector<int> CountPicks(const lb::Picker& picker, size_t size, int picks);

}  // namespace meshlib::lb_internal

#endif  // MESHLIB_LB_INTERNAL_PICK_TEST_UTIL_H_
