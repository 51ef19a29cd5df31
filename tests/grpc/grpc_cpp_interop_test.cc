// Interop with gRPC C++ (Debian's libgrpc++): meshlib's gRPC client and
// the mesh against benchmarks/grpc/grpc_echo_server, and gRPC's C++ client
// (benchmarks/grpc/grpc_echo_client, which exits non-zero on any failed call
// or wrong-sized reply) against meshlib's echo_server.
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/config/config.h"
#include "meshlib/grpc/grpc_channel.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/testing/subprocess.h"
#include "nlohmann/json.hpp"

namespace meshlib {
namespace {

using testing::Subprocess;

std::string StartServer(Subprocess& p) {
  const std::string line = p.WaitForLine("listening on ", absl::Seconds(20));
  EXPECT_FALSE(line.empty()) << p.err();
  return line.substr(13);
}

TEST(GrpcCppInteropTest, MeshlibClientAndMeshAgainstGrpcCppServer) {
  Subprocess server({testing::Runfile("benchmarks/grpc_echo_server"), "--port=0"});
  const std::string address = StartServer(server);
  auto ch = grpc::GrpcChannel::Create(address, client::ChannelOptions{});
  ASSERT_TRUE(ch.ok()) << ch.status();
  client::CallOptions o;
  o.timeout = absl::Seconds(10);
  std::mt19937 rng(11);
  for (size_t size : {size_t{0}, size_t{64}, size_t{65536}, size_t{1} << 20, size_t{3} << 20}) {
    std::string payload(size, '\0');
    for (char& c : payload) c = static_cast<char>(rng());
    client::CallResult r = (*ch)->CallBlocking("Echo/Say", payload, o);
    ASSERT_TRUE(r.status.ok()) << size << ": " << r.status;
    EXPECT_TRUE(r.payload == payload) << size;
  }
  client::CallResult u = (*ch)->CallBlocking("Echo/Nope", "x", o);
  EXPECT_EQ(u.status.code(), absl::StatusCode::kUnimplemented) << u.status;

  auto cfg = config::ParseMeshConfig(absl::StrCat(
      R"({"services": {"echo": {"protocol": "grpc", "timeout": "5s",
          "discovery": {"static": {"endpoints": [")",
      address, R"("]}}, "retry": {"max_attempts": 2}}}})"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  mesh::MeshOptions mo;
  mo.metrics = nullptr;
  auto m = mesh::Mesh::Create(*std::move(cfg), mo);
  ASSERT_TRUE(m.ok()) << m.status();
  auto c = (*m)->Client("echo");
  ASSERT_TRUE(c.ok()) << c.status();
  for (int i = 0; i < 100; ++i) {
    client::CallResult r = (*c)->CallBlocking("Echo/Say", absl::StrCat("mesh-", i));
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.payload, absl::StrCat("mesh-", i));
  }
}

TEST(GrpcCppInteropTest, GrpcCppClientAgainstMeshlibEchoServer) {
  Subprocess server({testing::Runfile("examples/echo/echo_server"), "--port=0",
                     "--io_threads=1"});
  const std::string address = StartServer(server);
  for (const char* mode : {"pingpong", "throughput"}) {
    for (const char* payload : {"64", "200000"}) {
      Subprocess client({testing::Runfile("benchmarks/grpc_echo_client"),
                         "--address=" + address, absl::StrCat("--mode=", mode),
                         absl::StrCat("--payload=", payload), "--duration=500ms",
                         "--warmup=100ms", "--connections=2", "--inflight=16", "--json"});
      ASSERT_EQ(client.Wait(absl::Seconds(60)), 0)
          << mode << " " << payload << ": " << client.err() << client.out();
      nlohmann::json j = nlohmann::json::parse(client.out(), nullptr, false);
      ASSERT_FALSE(j.is_discarded()) << client.out();
      EXPECT_GT(j["calls"].get<int64_t>(), 10) << client.out();
    }
  }
}

}  // namespace
}  // namespace meshlib
