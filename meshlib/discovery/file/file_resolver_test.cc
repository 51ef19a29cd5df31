#include "meshlib/discovery/file/file_resolver.h"

#include <stdio.h>
#include <sys/stat.h>

#include <fstream>
#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib::discovery {
namespace {

using json = nlohmann::json;

using testing::Eventually;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

// Writes a sibling file and renames it over `path`, as deploy tools do.
void ReplaceByRename(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  WriteFile(tmp, text);
  ASSERT_EQ(rename(tmp.c_str(), path.c_str()), 0);
}

std::string Current(const Discovery& d) {
  auto s = d.Current();
  return s ? s->ToString() : "(none)";
}

class FileResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = runtime::EventLoop::Create("control").value();
    dir_ = testing::MakeTempDir("file_resolver");
    path_ = dir_ + "/echo.json";
  }
  std::unique_ptr<Discovery> Start(const std::string& poll_interval) {
    json cfg = {{"file", {{"path", path_}, {"poll_interval", poll_interval}}}};
    auto d = Discovery::Create("echo", cfg, loop_.get());
    EXPECT_TRUE(d.ok()) << d.status();
    return *std::move(d);
  }

  std::unique_ptr<runtime::EventLoop> loop_;
  std::string dir_, path_;
};

TEST_F(FileResolverTest, ReadsTheFileAndFollowsInPlaceWritesAndRenames) {
  WriteFile(path_, R"({"endpoints": ["127.0.0.1:7001", {"address": "[::1]:7002", "weight": 3}]})");
  // A long poll interval: changes must be seen through inotify.
  auto d = Start("60s");
  ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(5)));
  EXPECT_EQ(Current(*d), "127.0.0.1:7001, [::1]:7002");
  EXPECT_EQ(d->Current()->Find("[::1]:7002")->weight, 3u);

  WriteFile(path_, R"({"endpoints": ["127.0.0.1:7003"]})");
  EXPECT_TRUE(Eventually([&] { return Current(*d) == "127.0.0.1:7003"; }, absl::Seconds(5)))
      << Current(*d);

  ReplaceByRename(path_, R"({"endpoints": ["127.0.0.1:7004", "127.0.0.1:7005"]})");
  EXPECT_TRUE(Eventually([&] { return Current(*d) == "127.0.0.1:7004, 127.0.0.1:7005"; },
                         absl::Seconds(5)))
      << Current(*d);
  // The rename replaced the inode; the directory watch still sees the next one.
  ReplaceByRename(path_, R"({"endpoints": ["127.0.0.1:7006"]})");
  EXPECT_TRUE(Eventually([&] { return Current(*d) == "127.0.0.1:7006"; }, absl::Seconds(5)))
      << Current(*d);
  EXPECT_EQ(d->stats().errors, 0u) << d->stats().last_error;
}

TEST_F(FileResolverTest, MalformedFileKeepsLastGoodSetAndNamesTheLine) {
  WriteFile(path_, R"({"endpoints": ["127.0.0.1:7001"]})");
  auto d = Start("60s");
  ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(5)));

  WriteFile(path_, "{\n  \"endpoints\": [\n    \"127.0.0.1:7002\",,\n  ]\n}\n");
  ASSERT_TRUE(Eventually([&] { return d->stats().errors >= 1; }, absl::Seconds(5)));
  DiscoveryStats s = d->stats();
  EXPECT_EQ(s.last_error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.last_error.message(), "line 3")) << s.last_error;
  EXPECT_TRUE(absl::StrContains(s.last_error.message(), path_)) << s.last_error;
  EXPECT_EQ(Current(*d), "127.0.0.1:7001");

  // Well-formed JSON with a bad entry: the error names the entry.
  WriteFile(path_, R"({"endpoints": ["127.0.0.1:7002", "not-an-address"]})");
  ASSERT_TRUE(Eventually([&] { return d->stats().errors >= 2; }, absl::Seconds(5)));
  EXPECT_TRUE(absl::StrContains(d->stats().last_error.message(), "endpoints[1]"))
      << d->stats().last_error;
  // An empty list or an empty (half-written) file never empties the service.
  WriteFile(path_, R"({"endpoints": []})");
  ASSERT_TRUE(Eventually([&] { return d->stats().errors >= 3; }, absl::Seconds(5)));
  WriteFile(path_, "");
  ASSERT_TRUE(Eventually([&] { return d->stats().errors >= 4; }, absl::Seconds(5)));
  EXPECT_EQ(Current(*d), "127.0.0.1:7001");
  EXPECT_EQ(d->stats().updates, 1u);

  // Fixed: recovers.
  WriteFile(path_, R"({"endpoints": ["127.0.0.1:7009"]})");
  EXPECT_TRUE(Eventually([&] { return Current(*d) == "127.0.0.1:7009"; }, absl::Seconds(5)));
}

TEST_F(FileResolverTest, MissingFileIsReportedThenPickedUpWhenItAppears) {
  auto d = Start("60s");
  ASSERT_TRUE(Eventually([&] { return d->stats().errors >= 1; }, absl::Seconds(5)));
  EXPECT_EQ(d->stats().last_error.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(d->Current(), nullptr);
  ReplaceByRename(path_, R"({"endpoints": ["127.0.0.1:7001"]})");
  EXPECT_TRUE(d->WaitForEndpoints(absl::Seconds(5)));
}

TEST_F(FileResolverTest, PollingFindsTheFileWhenItsDirectoryAppearsLater) {
  path_ = dir_ + "/later/echo.json";
  auto d = Start("50ms");
  ASSERT_TRUE(Eventually([&] { return d->stats().errors >= 1; }, absl::Seconds(5)));
  ASSERT_EQ(mkdir((dir_ + "/later").c_str(), 0755), 0);
  WriteFile(path_, R"({"endpoints": ["127.0.0.1:7001"]})");
  EXPECT_TRUE(d->WaitForEndpoints(absl::Seconds(5)));
  // Once the directory exists, inotify is set up again on the next poll.
  WriteFile(path_, R"({"endpoints": ["127.0.0.1:7002"]})");
  EXPECT_TRUE(Eventually([&] { return Current(*d) == "127.0.0.1:7002"; }, absl::Seconds(5)));
}

TEST(FileResolverConfigTest, ErrorsNameTheField) {
  auto& r = ResolverRegistry::Global();
  auto st = r.ValidateDiscovery(json::parse(R"({"file":{}})"), "services.e.discovery");
  EXPECT_TRUE(absl::StrContains(st.message(), "services.e.discovery.file.path: required")) << st;
  st = r.ValidateDiscovery(json::parse(R"({"file":{"path":"x","poll_interval":"1h"}})"), "d");
  EXPECT_TRUE(absl::StrContains(st.message(), "d.file.poll_interval: must be between")) << st;
  st = r.ValidateDiscovery(json::parse(R"({"file":{"path":"x","watch":true}})"), "d");
  EXPECT_TRUE(absl::StrContains(st.message(), "d.file.watch: unknown key")) << st;
}

TEST(ParseEndpointFileTest, RejectsOtherShapes) {
  EXPECT_FALSE(ParseEndpointFile("[]", "f").ok());
  EXPECT_FALSE(ParseEndpointFile(R"({"endpoints": "127.0.0.1:1"})", "f").ok());
  EXPECT_FALSE(ParseEndpointFile(R"({"endpoints": ["127.0.0.1:1"], "x": 1})", "f").ok());
  EXPECT_FALSE(ParseEndpointFile("\xff\xfe", "f").ok());
  auto ok = ParseEndpointFile(R"({"endpoints": ["127.0.0.1:1"]})", "f");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->size(), 1u);
}

}  // namespace
}  // namespace meshlib::discovery
