// typed_client: the first client to write. It calls echo_server's Echo/Say
// through typed stubs: once with a plain string, once with a struct that
// travels as JSON (echo_server returns any payload unchanged).
//
//   bazel-bin/examples/echo/echo_server --port=7001 --name=a &
//   bazel-bin/examples/typed/typed_client --target=127.0.0.1:7001
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "meshlib/client/service_channel.h"
#include "meshlib/stub/stub.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, target, "127.0.0.1:7001", "echo_server HOST:PORT");

namespace {

// Any type with to_json/from_json travels as JSON; this macro writes both.
struct Order {
  std::string item;
  int quantity = 0;
  std::vector<std::string> notes;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Order, item, quantity, notes)

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace client = meshlib::client;
  namespace stub = meshlib::stub;

  // A service with one endpoint from a static list; the stubs would work the
  // same over any other discovery, or over a plain client::Channel.
  auto echo = client::ServiceChannel::Create(
      "echo", {{"static", {{"endpoints", {absl::GetFlag(FLAGS_target)}}}}}, {});
  if (!echo.ok()) {
    std::fprintf(stderr, "typed_client: %s\n", echo.status().ToString().c_str());
    return 1;
  }
  if (!(*echo)->WaitForEndpoints(absl::Seconds(5))) {
    std::fprintf(stderr, "typed_client: no endpoints for echo\n");
    return 1;
  }
  std::shared_ptr<client::Caller> caller = *std::move(echo);

  // Strings travel as their bytes.
  stub::Stub<std::string, std::string> say(caller, "Echo/Say");
  absl::StatusOr<std::string> text =
      say.Call("hello", stub::CallOptionsBuilder().Timeout(absl::Seconds(1)));
  if (!text.ok()) {
    std::fprintf(stderr, "typed_client: Echo/Say: %s\n", text.status().ToString().c_str());
    return 1;
  }
  std::printf("string reply: %s\n", text->c_str());

  // A struct travels as JSON; CallWithDetails also says who answered.
  stub::Stub<Order, Order> order(caller, "Echo/Say");
  stub::TypedResult<Order> r = order.CallWithDetails(
      {"coffee", 2, {"oat milk", "no sugar"}},
      stub::CallOptionsBuilder().Timeout(absl::Seconds(1)).Idempotent());
  if (!r.ok()) {
    std::fprintf(stderr, "typed_client: Echo/Say: %s\n", r.status.ToString().c_str());
    return 1;
  }
  std::printf("struct reply: %d x %s (%s), from %s (server %s)\n", r.value.quantity,
              r.value.item.c_str(), absl::StrJoin(r.value.notes, ", ").c_str(),
              r.endpoint.c_str(), std::string(r.MetadataValue("server")).c_str());
  return 0;
}
