#include "meshlib/discovery/resolver.h"

#include <atomic>
#include <vector>

#include "gtest/gtest.h"
#include "meshlib/core/sync.h"

namespace meshlib::discovery {
namespace {

using json = nlohmann::json;

// A resolver the test drives by hand through its sink.
class ManualResolver final : public Resolver {
 public:
  explicit ManualResolver(ResolverSink** out) : out_(out) {}
  void Start(ResolverSink* sink) override { *out_ = sink; }

 private:
  ResolverSink** out_;
};

class ManualFactory final : public ResolverFactory {
 public:
  explicit ManualFactory(ResolverSink** out) : out_(out) {}
  std::string kind() const override { return "manual"; }
  absl::Status Validate(const json& c, absl::string_view path) const override {
    if (!c.is_object()) return absl::InvalidArgumentError(std::string(path) + ": must be an object");
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<Resolver>> Create(const ResolverArgs&) const override {
    return std::make_unique<ManualResolver>(out_);
  }

 private:
  ResolverSink** out_;
};

class DiscoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = runtime::EventLoop::Create("control").value();
    registry_.Register(std::make_unique<ManualFactory>(&sink_));
    d_ = Discovery::Create("svc", json{{"manual", json::object()}}, loop_.get(), "", registry_)
             .value();
    loop_->RunAndWait([] {});  // Start ran
    ASSERT_NE(sink_, nullptr);
  }
  void Publish(std::vector<const char*> addrs) {
    loop_->RunAndWait([&] {
      std::vector<Endpoint> v;
      for (const char* a : addrs) v.push_back(Endpoint{a});
      sink_->Publish(std::move(v));
    });
  }

  std::unique_ptr<runtime::EventLoop> loop_;
  ResolverRegistry registry_;
  ResolverSink* sink_ = nullptr;
  std::unique_ptr<Discovery> d_;
};

TEST_F(DiscoveryTest, ErrorKeepsLastGoodSetAndCounts) {
  EXPECT_EQ(d_->Current(), nullptr);
  EXPECT_FALSE(d_->WaitForEndpoints(absl::Milliseconds(10)));
  Publish({"127.0.0.1:1", "127.0.0.1:2"});
  ASSERT_TRUE(d_->WaitForEndpoints(absl::Seconds(1)));
  auto good = d_->Current();
  loop_->RunAndWait([&] { sink_->ReportError(absl::UnavailableError("source down")); });
  EXPECT_EQ(d_->Current(), good);
  DiscoveryStats s = d_->stats();
  EXPECT_EQ(s.updates, 1u);
  EXPECT_EQ(s.errors, 1u);
  EXPECT_EQ(s.last_error.message(), "source down");
}

TEST_F(DiscoveryTest, SubscribersGetCurrentThenEveryUpdateOnce) {
  Publish({"127.0.0.1:1"});
  std::vector<size_t> sizes;  // loop thread only
  uint64_t id = d_->Subscribe([&](std::shared_ptr<const EndpointSet> s) { sizes.push_back(s->size()); });
  Publish({"127.0.0.1:1", "127.0.0.1:2"});
  Publish({"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"});
  d_->Unsubscribe(id);
  Publish({"127.0.0.1:4"});
  loop_->RunAndWait([] {});
  EXPECT_EQ(sizes, (std::vector<size_t>{1, 2, 3}));
}

TEST_F(DiscoveryTest, UnsubscribeFromOtherThreadWhileUpdating) {
  std::atomic<int> calls{0};
  for (int round = 0; round < 200; ++round) {
    uint64_t id = d_->Subscribe([&](std::shared_ptr<const EndpointSet>) { ++calls; });
    loop_->Post([this] { sink_->Publish({Endpoint{"127.0.0.1:9"}}); });
    d_->Unsubscribe(id);
    int after = calls.load();
    loop_->RunAndWait([] {});
    EXPECT_EQ(calls.load(), after);  // nothing ran after Unsubscribe returned
  }
}

TEST(ResolverRegistryTest, ValidatesDiscoveryObject) {
  auto& r = ResolverRegistry::Global();
  EXPECT_NE(r.Find("static"), nullptr);
  auto st = r.ValidateDiscovery(json::parse(R"({"carrier_pigeon":{}})"), "services.a.discovery");
  EXPECT_NE(st.message().find("services.a.discovery.carrier_pigeon: unknown discovery kind"),
            std::string::npos)
      << st;
  st = r.ValidateDiscovery(json::parse(R"({"static":{},"dns":{}})"), "d");
  EXPECT_NE(st.message().find("exactly one kind"), std::string::npos) << st;
  st = r.ValidateDiscovery(json::parse(R"({"static":{"endpoints":["1.2.3.4:5","x"]}})"), "d");
  EXPECT_NE(st.message().find("d.static.endpoints[1]"), std::string::npos) << st;
  EXPECT_TRUE(r.ValidateDiscovery(json::parse(R"({"static":{"endpoints":["[::1]:5"]}})"), "d").ok());
}

TEST(StaticResolverTest, PublishesOnStart) {
  auto loop = runtime::EventLoop::Create("control").value();
  auto d = Discovery::Create(
                "svc", json::parse(R"({"static":{"endpoints":["127.0.0.1:2","[::1]:1"]}})"),
                loop.get())
               .value();
  ASSERT_TRUE(d->WaitForEndpoints(absl::Seconds(5)));
  EXPECT_EQ(d->Current()->ToString(), "127.0.0.1:2, [::1]:1");
  EXPECT_EQ(d->kind(), "static");
}

}  // namespace
}  // namespace meshlib::discovery
