// Typed stubs against a real server on loopback: raw and JSON round trips in
// every call style, options reaching the server, encode and decode failures,
// user codecs, and a stub over a ServiceChannel. A recording Caller checks
// that every option is handed over unchanged.
#include "meshlib/stub/stub.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "meshlib/client/channel.h"
#include "meshlib/client/service_channel.h"
#include "meshlib/server/server.h"
#include "meshlib/stub/typed_server.h"
#include "nlohmann/json.hpp"

namespace shapes {

struct Point {
  int x = 0;
  int y = 0;
  std::string label;
  bool operator==(const Point& o) const { return x == o.x && y == o.y && label == o.label; }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Point, x, y, label)

// Encodes only while `text` is valid UTF-8 (nlohmann_json refuses otherwise).
struct Note {
  std::string text;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Note, text)

struct Refused {};
void to_json(nlohmann::json&, const Refused&) { throw std::runtime_error("refused to serialize"); }
void from_json(const nlohmann::json&, Refused&) {}

// A type with a codec of its own: a specialization of Codec beside it.
struct Celsius {
  double degrees = 0;
};

}  // namespace shapes

namespace meshlib::stub {

template <>
struct Codec<shapes::Celsius> {
  static absl::Status Encode(const shapes::Celsius& c, std::string* out) {
    *out = absl::StrCat(c.degrees, "C");
    return absl::OkStatus();
  }
  static absl::Status Decode(absl::string_view bytes, shapes::Celsius* out) {
    if (bytes.empty() || bytes.back() != 'C' ||
        !absl::SimpleAtod(bytes.substr(0, bytes.size() - 1), &out->degrees)) {
      return absl::InvalidArgumentError(absl::StrCat("not a temperature: '", bytes, "'"));
    }
    return absl::OkStatus();
  }
};

namespace {

using ::testing::HasSubstr;
using shapes::Point;

constexpr absl::Duration kWaitLimit = absl::Seconds(30);

// A user codec passed explicitly: int32 as 4 big-endian bytes.
struct Int32Codec {
  static absl::Status Encode(const int32_t& v, std::string* out) {
    const uint32_t u = static_cast<uint32_t>(v);
    *out = {static_cast<char>(u >> 24), static_cast<char>(u >> 16), static_cast<char>(u >> 8),
            static_cast<char>(u)};
    return absl::OkStatus();
  }
  static absl::Status Decode(absl::string_view bytes, int32_t* out) {
    if (bytes.size() != 4) {
      return absl::InvalidArgumentError(absl::StrCat("want 4 bytes, got ", bytes.size()));
    }
    uint32_t u = 0;
    for (char c : bytes) u = (u << 8) | static_cast<uint8_t>(c);
    *out = static_cast<int32_t>(u);
    return absl::OkStatus();
  }
};

// Waits for one value set from another thread. std::mutex rather than
// absl::Notification: Debian's Abseil is not built for TSan.
template <typename T>
class Slot {
 public:
  void Set(T value) {
    std::lock_guard<std::mutex> lock(mu_);
    value_ = std::move(value);
    set_ = true;
    cv_.notify_all();
  }
  bool Wait(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return set_; });
  }
  bool is_set() {
    std::lock_guard<std::mutex> lock(mu_);
    return set_;
  }
  T Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(value_);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
  T value_{};
};

class StubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Echo/Say as echo_server serves it: the payload back, the server's name
    // in the reply metadata.
    ASSERT_TRUE(server_
                    .RegisterAsync("Echo/Say",
                                   [this](std::shared_ptr<server::ServerCall> call) {
                                     echo_calls_.fetch_add(1);
                                     call->AddResponseMetadata("server", "s1");
                                     call->Finish(absl::OkStatus(), call->request());
                                   })
                    .ok());
    // The request's "tenant" metadata, as the reply.
    ASSERT_TRUE(server_
                    .RegisterSync("Meta/Tenant",
                                  [](server::ServerCall& call, std::string* out) {
                                    *out = std::string(call.MetadataValue("tenant"));
                                    return absl::OkStatus();
                                  })
                    .ok());
    // Never answers: the server ends the call at its deadline, or when the
    // connection closes.
    ASSERT_TRUE(server_.RegisterAsync("Test/Hang", [](std::shared_ptr<server::ServerCall>) {}).ok());
    ASSERT_TRUE(server_
                    .RegisterAsync("Test/NotJson",
                                   [](std::shared_ptr<server::ServerCall> call) {
                                     call->Finish(absl::OkStatus(), "<html>surprise</html>");
                                   })
                    .ok());
    ASSERT_TRUE(server_
                    .RegisterAsync("Test/NotFound",
                                   [](std::shared_ptr<server::ServerCall> call) {
                                     call->AddResponseMetadata("why", "missing");
                                     call->Finish(absl::NotFoundError("no key 'k' in table t"));
                                   })
                    .ok());
    ASSERT_TRUE((RegisterTyped<int32_t, int32_t, Int32Codec, Int32Codec>(
                     server_, "Math/Double",
                     [](const int32_t& v, server::ServerCall&) -> absl::StatusOr<int32_t> {
                       return v * 2;
                     }))
                    .ok());
    ASSERT_TRUE((RegisterTyped<shapes::Celsius, shapes::Celsius>(
                     server_, "Temp/Warm",
                     [](const shapes::Celsius& c,
                        server::ServerCall&) -> absl::StatusOr<shapes::Celsius> {
                       return shapes::Celsius{c.degrees + 1.5};
                     }))
                    .ok());
    absl::StatusOr<int> port = server_.Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok()) << port.status();
    client::ChannelOptions options;
    options.default_timeout = absl::Seconds(10);
    auto channel = client::Channel::Create(server_.address(), options);
    ASSERT_TRUE(channel.ok()) << channel.status();
    channel_ = *std::move(channel);
  }

  static server::ServerOptions ServerOpts() {
    server::ServerOptions o;
    o.io_threads = 1;
    o.worker_threads = 2;
    return o;
  }

  server::Server server_{ServerOpts()};
  std::atomic<int> echo_calls_{0};
  std::shared_ptr<client::Channel> channel_;
};

TEST_F(StubTest, RawStringsRoundTripUnchanged) {
  Stub<std::string, std::string> say(*channel_, "Echo/Say");
  absl::StatusOr<std::string> r = say.Call("hello");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "hello");

  const std::string binary("\0\x01\xfe\xff", 4);
  r = say.Call(binary);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, binary);
  EXPECT_EQ(say.method(), "Echo/Say");
}

TEST_F(StubTest, JsonStructRoundTripsInEveryCallStyle) {
  Stub<Point, Point> echo(*channel_, "Echo/Say");
  const Point p{3, -4, "Zürich"};

  absl::StatusOr<Point> blocking = echo.Call(p);
  ASSERT_TRUE(blocking.ok()) << blocking.status();
  EXPECT_EQ(*blocking, p);

  Slot<absl::StatusOr<Point>> slot;
  echo.Call(p, {}, [&](absl::StatusOr<Point> r) { slot.Set(std::move(r)); });
  ASSERT_TRUE(slot.Wait(kWaitLimit));
  absl::StatusOr<Point> via_callback = slot.Take();
  ASSERT_TRUE(via_callback.ok()) << via_callback.status();
  EXPECT_EQ(*via_callback, p);

  std::future<absl::StatusOr<Point>> future = echo.CallFuture(p);
  ASSERT_EQ(future.wait_for(absl::ToChronoNanoseconds(kWaitLimit)), std::future_status::ready);
  absl::StatusOr<Point> via_future = future.get();
  ASSERT_TRUE(via_future.ok()) << via_future.status();
  EXPECT_EQ(*via_future, p);
}

TEST_F(StubTest, JsonValueAndExplicitJsonStub) {
  Stub<nlohmann::json, nlohmann::json> echo(*channel_, "Echo/Say");
  nlohmann::json doc = {{"ids", {1, 2, 3}}, {"ok", true}};
  absl::StatusOr<nlohmann::json> r = echo.Call(doc);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, doc);

  JsonStub<std::vector<int>, std::vector<int>> ints(*channel_, "Echo/Say");
  absl::StatusOr<std::vector<int>> v = ints.Call({5, 6, 7});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, (std::vector<int>{5, 6, 7}));
}

TEST_F(StubTest, DetailsCarryMetadataAndEndpoint) {
  Stub<Point, Point> echo(*channel_, "Echo/Say");
  TypedResult<Point> r = echo.CallWithDetails({1, 2, "a"});
  ASSERT_TRUE(r.ok()) << r.status;
  EXPECT_EQ(r.value, (Point{1, 2, "a"}));
  EXPECT_EQ(r.endpoint, server_.address());
  EXPECT_EQ(r.MetadataValue("server"), "s1");
  EXPECT_EQ(r.MetadataValue("absent"), "");

  Slot<TypedResult<Point>> slot;
  echo.CallWithDetails({5, 6, "b"}, {}, [&](TypedResult<Point> r) { slot.Set(std::move(r)); });
  ASSERT_TRUE(slot.Wait(kWaitLimit));
  TypedResult<Point> async = slot.Take();
  ASSERT_TRUE(async.ok()) << async.status;
  EXPECT_EQ(async.value, (Point{5, 6, "b"}));
  EXPECT_EQ(async.endpoint, server_.address());
  EXPECT_EQ(async.MetadataValue("server"), "s1");
}

TEST_F(StubTest, RequestMetadataReachesTheServer) {
  Stub<std::string, std::string> tenant(*channel_, "Meta/Tenant");
  absl::StatusOr<std::string> r =
      tenant.Call("", CallOptionsBuilder().AddMetadata("tenant", "acme").Idempotent());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "acme");
}

TEST_F(StubTest, TimeoutEndsTheCallWithDeadlineExceeded) {
  Stub<Point, Point> hang(*channel_, "Test/Hang");
  const absl::Time start = absl::Now();
  absl::StatusOr<Point> r = hang.Call({}, CallOptionsBuilder().Timeout(absl::Milliseconds(50)));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_LT(absl::Now() - start, kWaitLimit);

  std::future<absl::StatusOr<Point>> f =
      hang.CallFuture({}, CallOptionsBuilder().Timeout(absl::Milliseconds(50)));
  ASSERT_EQ(f.wait_for(absl::ToChronoNanoseconds(kWaitLimit)), std::future_status::ready);
  EXPECT_EQ(f.get().status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(StubTest, HandleCancelsTheCall) {
  Stub<Point, Point> hang(*channel_, "Test/Hang");
  Slot<absl::StatusOr<Point>> slot;
  client::CallHandle h = hang.Call({}, {}, [&](absl::StatusOr<Point> r) { slot.Set(std::move(r)); });
  h.Cancel();
  ASSERT_TRUE(slot.Wait(kWaitLimit));
  EXPECT_EQ(slot.Take().status().code(), absl::StatusCode::kCancelled);
}

TEST_F(StubTest, ServerErrorPassesThroughUnchanged) {
  Stub<Point, Point> lookup(*channel_, "Test/NotFound");
  TypedResult<Point> r = lookup.CallWithDetails({});
  EXPECT_EQ(r.status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r.status.message(), "no key 'k' in table t");
  EXPECT_EQ(r.endpoint, server_.address());
  EXPECT_EQ(r.MetadataValue("why"), "missing");

  absl::StatusOr<Point> plain = lookup.Call({});
  EXPECT_EQ(plain.status(), r.status);
}

TEST_F(StubTest, UnencodableRequestIsInvalidArgumentAndNotSent) {
  Stub<shapes::Note, shapes::Note> note(*channel_, "Echo/Say");
  const shapes::Note bad{"caf\xe9"};  // Latin-1, not UTF-8

  absl::StatusOr<shapes::Note> r = note.Call(bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("Echo/Say: cannot encode request"));
  EXPECT_THAT(r.status().message(), HasSubstr("UTF-8"));
  EXPECT_THAT(r.status().message(), HasSubstr("type_error.316"));

  // The callback runs before Call returns, on this thread; nothing to cancel.
  bool ran = false;
  client::CallHandle h = note.Call(bad, {}, [&](absl::StatusOr<shapes::Note> r) {
    ran = true;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  });
  EXPECT_TRUE(ran);
  EXPECT_EQ(h.cancellable(), nullptr);

  std::future<absl::StatusOr<shapes::Note>> f = note.CallFuture(bad);
  ASSERT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(f.get().status().code(), absl::StatusCode::kInvalidArgument);

  TypedResult<shapes::Note> d = note.CallWithDetails(bad);
  EXPECT_EQ(d.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d.endpoint, "");

  Stub<shapes::Refused, Point> refused(*channel_, "Echo/Say");
  absl::StatusOr<Point> thrown = refused.Call({});
  EXPECT_EQ(thrown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(thrown.status().message(), HasSubstr("refused to serialize"));

  // Nothing reached the server; a good request on the same stub still does.
  EXPECT_EQ(echo_calls_.load(), 0);
  ASSERT_TRUE(note.Call({"café"}).ok());
  EXPECT_EQ(echo_calls_.load(), 1);
}

TEST_F(StubTest, UndecodableReplyIsInternalNamingMethodAndEndpoint) {
  Stub<Point, Point> stub(*channel_, "Test/NotJson");
  absl::StatusOr<Point> r = stub.Call({});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(),
              HasSubstr(absl::StrCat("Test/NotJson: cannot decode reply from ",
                                     server_.address(), ": ")));
  EXPECT_THAT(r.status().message(), HasSubstr("parse error"));

  Slot<TypedResult<Point>> slot;
  stub.CallWithDetails({}, {}, [&](TypedResult<Point> r) { slot.Set(std::move(r)); });
  ASSERT_TRUE(slot.Wait(kWaitLimit));
  TypedResult<Point> d = slot.Take();
  EXPECT_EQ(d.status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(d.endpoint, server_.address());
  EXPECT_EQ(d.value, Point{});
}

TEST_F(StubTest, UserCodecsWorkBothWays) {
  // Passed explicitly.
  Stub<int32_t, int32_t, Int32Codec, Int32Codec> twice(*channel_, "Math/Double");
  for (int32_t v : {21, -7, 0, 1 << 29}) {
    absl::StatusOr<int32_t> r = twice.Call(v);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, v * 2);
  }
  // Its decode errors are the stub's INTERNAL.
  Stub<std::string, int32_t, Codec<std::string>, Int32Codec> odd(*channel_, "Echo/Say");
  absl::StatusOr<int32_t> r = odd.Call("abc");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(), HasSubstr("want 4 bytes, got 3"));

  // Through a Codec specialization: the default, no codec named.
  Stub<shapes::Celsius, shapes::Celsius> warm(*channel_, "Temp/Warm");
  absl::StatusOr<shapes::Celsius> c = warm.Call({20});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->degrees, 21.5);
}

TEST_F(StubTest, SharedCallerIsKeptAlive) {
  auto owned = client::Channel::Create(server_.address(), {});
  ASSERT_TRUE(owned.ok()) << owned.status();
  Stub<std::string, std::string> say(std::shared_ptr<client::Caller>(*std::move(owned)),
                                     "Echo/Say");
  Stub<std::string, std::string> copy = say;
  absl::StatusOr<std::string> r = copy.Call("still here");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "still here");
}

TEST_F(StubTest, OneStubSharedByThreads) {
  Stub<Point, Point> echo(channel_, "Echo/Say");
  constexpr int kThreads = 4;
  constexpr int kCalls = 50;
  std::atomic<int> ok{0};
  std::atomic<int> async_ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const Point p{t, i, "p"};
        absl::StatusOr<Point> r = echo.Call(p);
        if (r.ok() && *r == p) ok.fetch_add(1);
        std::future<absl::StatusOr<Point>> f = echo.CallFuture(p);
        absl::StatusOr<Point> fr = f.get();
        if (fr.ok() && *fr == p) async_ok.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kCalls);
  EXPECT_EQ(async_ok.load(), kThreads * kCalls);
}

TEST_F(StubTest, WorksOverAServiceChannel) {
  auto service = client::ServiceChannel::Create(
      "echo", nlohmann::json{{"static", {{"endpoints", {server_.address()}}}}}, {});
  ASSERT_TRUE(service.ok()) << service.status();
  ASSERT_TRUE((*service)->WaitForEndpoints(kWaitLimit));
  Stub<Point, Point> echo(std::shared_ptr<client::Caller>(*std::move(service)), "Echo/Say");
  TypedResult<Point> r = echo.CallWithDetails({7, 8, "svc"}, CallOptionsBuilder().Idempotent());
  ASSERT_TRUE(r.ok()) << r.status;
  EXPECT_EQ(r.value, (Point{7, 8, "svc"}));
  EXPECT_EQ(r.endpoint, server_.address());
}

// A Caller that records what it is given and answers with a set result.
class RecordingCaller : public client::Caller {
 public:
  explicit RecordingCaller(client::CallResult answer) : answer_(std::move(answer)) {}
  client::CallHandle Call(absl::string_view method, absl::string_view request,
                          const client::CallOptions& options, client::CallCallback done) override {
    Record(method, request, options);
    done(answer_);
    return client::CallHandle();
  }
  client::CallResult CallBlocking(absl::string_view method, absl::string_view request,
                                  const client::CallOptions& options) override {
    Record(method, request, options);
    return answer_;
  }

  int calls = 0;
  std::string method;
  std::string request;
  client::CallOptions options;

 private:
  void Record(absl::string_view m, absl::string_view r, const client::CallOptions& o) {
    ++calls;
    method = std::string(m);
    request = std::string(r);
    options = o;
  }
  client::CallResult answer_;
};

TEST(StubOptionsTest, EveryOptionIsHandedToTheCaller) {
  client::CallResult answer;
  answer.payload = R"({"x":1,"y":2,"label":""})";
  answer.endpoint = "10.0.0.9:7001";
  RecordingCaller caller(answer);
  Stub<Point, Point> stub(caller, "Geo/Move");
  const absl::Time deadline = absl::FromUnixSeconds(2000000000);
  const client::CallOptions options = CallOptionsBuilder()
                                          .Timeout(absl::Milliseconds(123))
                                          .Deadline(deadline)
                                          .Idempotent()
                                          .HashKey(0xfeedULL)
                                          .AddMetadata("a", "1")
                                          .AddMetadata("a", "2");
  for (int style = 0; style < 3; ++style) {
    absl::StatusOr<Point> r;
    if (style == 0) r = stub.Call({9, 9, "req"}, options);
    if (style == 1) stub.Call({9, 9, "req"}, options, [&](absl::StatusOr<Point> x) { r = x; });
    if (style == 2) r = stub.CallFuture({9, 9, "req"}, options).get();
    ASSERT_TRUE(r.ok()) << style << ": " << r.status();
    EXPECT_EQ(*r, (Point{1, 2, ""}));
    EXPECT_EQ(caller.method, "Geo/Move");
    EXPECT_EQ(nlohmann::json::parse(caller.request),
              nlohmann::json::parse(R"({"x":9,"y":9,"label":"req"})"));
    EXPECT_EQ(caller.options.timeout, absl::Milliseconds(123));
    EXPECT_EQ(caller.options.deadline, deadline);
    EXPECT_TRUE(caller.options.idempotent);
    EXPECT_TRUE(caller.options.has_hash_key);
    EXPECT_EQ(caller.options.hash_key, 0xfeedULL);
    EXPECT_EQ(caller.options.metadata, (client::Metadata{{"a", "1"}, {"a", "2"}}));
  }
  EXPECT_EQ(caller.calls, 3);

  // Defaults stay defaults.
  ASSERT_TRUE(stub.Call({}).ok());
  EXPECT_EQ(caller.options.timeout, absl::ZeroDuration());
  EXPECT_EQ(caller.options.deadline, absl::InfiniteFuture());
  EXPECT_FALSE(caller.options.idempotent);
  EXPECT_FALSE(caller.options.has_hash_key);
  EXPECT_TRUE(caller.options.metadata.empty());
}

TEST(StubOptionsTest, UndecodableReplyWithoutEndpointSaysSo) {
  client::CallResult answer;
  answer.payload = "{";
  RecordingCaller caller(answer);
  Stub<Point, Point> stub(caller, "Geo/Move");
  absl::StatusOr<Point> r = stub.Call({});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(),
              HasSubstr("Geo/Move: cannot decode reply from an unknown endpoint"));
}

TEST(StubOptionsTest, UnencodableRequestNeverReachesTheCaller) {
  RecordingCaller caller(client::CallResult{});
  Stub<shapes::Note, shapes::Note> stub(caller, "Notes/Add");
  absl::StatusOr<shapes::Note> r = stub.Call({"\xc3\x28"});  // a broken two-byte sequence
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("Notes/Add: cannot encode request: "));
  stub.Call({"\xff"}, {}, [](absl::StatusOr<shapes::Note>) {});
  EXPECT_FALSE(stub.CallFuture({"\xff"}).get().ok());
  EXPECT_FALSE(stub.CallWithDetails({"\xff"}).ok());
  EXPECT_EQ(caller.calls, 0);
}

}  // namespace
}  // namespace meshlib::stub
