// typed_client: the first client to write. It reads mesh.json, asks the
// mesh for the "echo" service's client, and calls echo_server's Echo/Say
// through typed stubs: once with a plain string, once with a struct that
// travels as JSON (echo_server returns any payload unchanged).
//
//   bazel-bin/examples/echo/echo_server --port=7001 --name=a &
//   bazel-bin/examples/echo/echo_server --port=7002 --name=b &
//   bazel-bin/examples/typed/typed_client --config=examples/typed/mesh.json
//
// Without --config it builds the configuration for one --target itself.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/stub/stub.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, config, "", "mesh.json with an \"echo\" service");
ABSL_FLAG(std::string, target, "127.0.0.1:7001", "without --config: echo_server HOST:PORT");

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

  // The mesh: every service's discovery, balancing and resilience, from one
  // JSON document (watched for changes when it comes from a file).
  absl::StatusOr<std::unique_ptr<meshlib::mesh::Mesh>> mesh;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    mesh = meshlib::mesh::Mesh::Open(absl::GetFlag(FLAGS_config));
  } else {
    nlohmann::json doc = {
        {"services",
         {{"echo",
           {{"discovery", {{"static", {{"endpoints", {absl::GetFlag(FLAGS_target)}}}}}},
            {"retry", {{"max_attempts", 3}}}}}}}};
    auto cfg = meshlib::config::ParseMeshConfigJson(doc);
    mesh = cfg.ok() ? meshlib::mesh::Mesh::Create(*std::move(cfg)) : cfg.status();
  }
  if (!mesh.ok()) {
    std::fprintf(stderr, "typed_client: %s\n", mesh.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::shared_ptr<meshlib::mesh::Client>> echo = (*mesh)->Client("echo");
  if (!echo.ok()) {
    std::fprintf(stderr, "typed_client: %s\n", echo.status().ToString().c_str());
    return 1;
  }
  std::shared_ptr<client::Caller> caller = *echo;

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
  // What the client did with the calls: its layers and their settings.
  std::printf("\n%s", (*echo)->Describe().c_str());
  return 0;
}
