// The configuration read from a key in a real etcd and watched: a valid new
// value is applied, a broken one rejected, and etcd going away and coming
// back does not disturb the clients.
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/testing/etcd_test_server.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/server/server.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib::mesh {
namespace {

using testing::Eventually;

TEST(MeshEtcdTest, ConfigurationKeyIsWatchedAndApplied) {
  testing::EtcdTestServer etcd;
  ASSERT_TRUE(etcd.ok());
  server::ServerOptions so;
  so.io_threads = 1;
  server::Server echo(so);
  ASSERT_TRUE(echo.RegisterSync("Echo/Say", [](server::ServerCall& c, std::string* out) {
                    *out = c.request();
                    return absl::OkStatus();
                  }).ok());
  ASSERT_TRUE(echo.Start("127.0.0.1:0").ok());
  auto document = [&](int attempts) {
    return absl::StrCat(R"({"services": {"echo": {"discovery": {"static": {"endpoints": [")",
                        echo.address(), R"("]}}, "retry": {"max_attempts": )", attempts, "}}}}");
  };
  const std::string key = "/meshlib/config/mesh.json";
  ASSERT_TRUE(etcd.Put(key, document(2)).ok());

  // The process starts from its local copy, then follows the key.
  auto initial = config::ParseMeshConfig(document(1));
  ASSERT_TRUE(initial.ok()) << initial.status();
  MeshOptions o;
  o.etcd_endpoints = {etcd.endpoint()};
  o.etcd_key = key;
  auto mesh = Mesh::Create(*std::move(initial), o).value();
  auto client = mesh->Client("echo").value();
  ASSERT_TRUE(Eventually([&] { return absl::StrContains(client->Describe(), "up to 2 attempts"); },
                         absl::Seconds(10)))
      << client->Describe();
  ASSERT_TRUE(etcd.Put(key, document(4)).ok());
  ASSERT_TRUE(Eventually([&] { return absl::StrContains(client->Describe(), "up to 4 attempts"); },
                         absl::Seconds(10)));
  ASSERT_TRUE(etcd.Put(key, document(11)).ok());  // out of range: rejected
  ASSERT_TRUE(Eventually([&] { return mesh->reload_stats().rejected == 1; }, absl::Seconds(10)));
  EXPECT_TRUE(absl::StrContains(mesh->reload_stats().last_error.message(),
                                "services.echo.retry.max_attempts"));
  EXPECT_TRUE(absl::StrContains(client->Describe(), "up to 4 attempts"));
  EXPECT_TRUE(client->CallBlocking("Echo/Say", "x").status.ok());
  // etcd down: calls go on with the last configuration; back up, a change
  // made meanwhile is seen.
  etcd.Kill();
  EXPECT_TRUE(client->CallBlocking("Echo/Say", "x").status.ok());
  ASSERT_TRUE(etcd.Restart());
  ASSERT_TRUE(etcd.Put(key, document(5)).ok());
  ASSERT_TRUE(Eventually([&] { return absl::StrContains(client->Describe(), "up to 5 attempts"); },
                         absl::Seconds(15)))
      << client->Describe();
  EXPECT_TRUE(client->CallBlocking("Echo/Say", "x").status.ok());
}

}  // namespace
}  // namespace meshlib::mesh
