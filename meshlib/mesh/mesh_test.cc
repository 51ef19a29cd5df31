#include "meshlib/mesh/mesh.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "absl/strings/numbers.h"
#include "meshlib/admin/test_http.h"
#include "meshlib/core/sync.h"
#include "meshlib/server/server.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib::mesh {
namespace {

using client::CallOptions;
using client::CallResult;
using json = nlohmann::json;
using testing::Eventually;

// An in-process server whose Echo/Say answers with its name and records
// the request metadata key "x-user".
struct NamedServer {
  explicit NamedServer(std::string n) : name(std::move(n)) {
    server::ServerOptions o;
    o.io_threads = 1;
    server = std::make_unique<server::Server>(o);
    EXPECT_TRUE(server
                    ->RegisterSync("Echo/Say",
                                   [this](server::ServerCall& call, std::string* out) {
                                     ++handled;
                                     if (failing.load()) return absl::UnavailableError("down");
                                     if (!call.MetadataValue("x-user").empty()) ++with_user;
                                     if (int64_t ms = delay_ms.load(); ms > 0) {
                                       absl::SleepFor(absl::Milliseconds(ms));
                                     }
                                     *out = name;
                                     return absl::OkStatus();
                                   })
                    .ok());
    EXPECT_TRUE(server->Start("127.0.0.1:0").ok());
  }
  std::string address() const { return server->address(); }
  std::string name;
  std::atomic<int64_t> delay_ms{0};  // set while handlers run
  std::atomic<bool> failing{false};
  std::atomic<int> handled{0};
  std::atomic<int> with_user{0};
  std::unique_ptr<server::Server> server;
};

config::MeshConfig Config(const std::string& text) {
  auto cfg = config::ParseMeshConfig(text);
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  return *std::move(cfg);
}

std::string Endpoint(const NamedServer& s, const std::string& version) {
  return absl::StrCat(R"({"address": ")", s.address(), R"(", "metadata": {"version": ")",
                      version, R"("}})");
}

class MeshTest : public ::testing::Test {
 protected:
  MeshTest() : v1a("v1a"), v1b("v1b"), v2("v2") {}
  std::string Endpoints() {
    return absl::StrCat("[", Endpoint(v1a, "v1"), ",", Endpoint(v1b, "v1"), ",",
                        Endpoint(v2, "v2"), "]");
  }
  std::string ServiceJson(const std::string& extra) {
    return absl::StrCat(R"({"services": {"echo": {"discovery": {"static": {"endpoints": )",
                        Endpoints(), R"(}}, "timeout": "2s")", extra.empty() ? "" : ", ", extra,
                        "}}}");
  }
  NamedServer v1a, v1b, v2;
};

TEST_F(MeshTest, ClientCallsTheServiceAndDescribesItsStack) {
  auto mesh = Mesh::Create(Config(ServiceJson(R"("retry": {"max_attempts": 2})"))).value();
  auto echo = mesh->Client("echo").value();
  EXPECT_EQ(mesh->Client("echo").value(), echo);  // one per service
  for (int i = 0; i < 30; ++i) {
    CallResult r = echo->CallBlocking("Echo/Say", "hi");
    ASSERT_TRUE(r.status.ok()) << r.status;
  }
  std::string d = echo->Describe();
  for (const char* role : {"interceptors", "routing", "fault", "deadline", "retry", "hedging",
                           "circuit breaker", "balancer", "endpoint health", "pool",
                           "endpoints"}) {
    EXPECT_TRUE(absl::StrContains(d, absl::StrCat("  ", role))) << role << "\n" << d;
  }
  EXPECT_TRUE(absl::StrContains(d, "up to 2 attempts")) << d;
  EXPECT_EQ(echo->stats().calls, 30u);
  auto missing = mesh->Client("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "services: echo"));
}

TEST_F(MeshTest, RoutesByMetadataAndSplitsBetweenSubsets) {
  auto mesh = Mesh::Create(Config(ServiceJson(R"(
      "subsets": {"v1": {"version": "v1"}, "v2": {"version": "v2"}},
      "routes": [
        {"name": "canary-header", "match": {"metadata": {"x-canary": "true"}}, "subset": "v2"},
        {"name": "canary-split", "split": {"v1": 80, "v2": 20}}
      ])")))
                  .value();
  auto echo = mesh->Client("echo").value();
  CallOptions canary;
  canary.metadata.emplace_back("x-canary", "true");
  for (int i = 0; i < 20; ++i) {
    CallResult r = echo->CallBlocking("Echo/Say", "x", canary);
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.payload, "v2");
  }
  std::map<std::string, int> by;
  const int n = 1000;
  for (int i = 0; i < n; ++i) {
    CallResult r = echo->CallBlocking("Echo/Say", "x");
    ASSERT_TRUE(r.status.ok()) << r.status;
    ++by[r.payload];
  }
  EXPECT_NEAR(by["v2"], 200, 60);
  EXPECT_NEAR(by["v1a"] + by["v1b"], 800, 60);
  ClientStats st = echo->stats();
  ASSERT_EQ(st.routes.size(), 2u);
  EXPECT_EQ(st.routes[0].name, "canary-header");
  EXPECT_EQ(st.routes[0].calls, 20u);
  EXPECT_EQ(st.routes[1].calls, static_cast<uint64_t>(n));
  EXPECT_EQ(st.routes[1].by_subset[1].first, "v2");
  EXPECT_EQ(st.routes[1].by_subset[1].second, static_cast<uint64_t>(by["v2"]));
  std::string d = echo->Describe();
  EXPECT_TRUE(absl::StrContains(d, "canary-header: x-canary=true -> v2")) << d;
  EXPECT_TRUE(absl::StrContains(d, "canary-split: any call -> v1 80%, v2 20%")) << d;
  EXPECT_TRUE(absl::StrContains(d, "v2 {version=v2}: 1 endpoint(s)")) << d;
}

TEST_F(MeshTest, RouteFaultAbortsOnlyItsCalls) {
  auto mesh = Mesh::Create(Config(ServiceJson(R"(
      "subsets": {"v2": {"version": "v2"}},
      "routes": [{"name": "broken", "match": {"method": "Echo/*"},
                  "subset": "v2", "fault": {"abort": {"percent": 100, "code": "ABORTED"}}}])")))
                  .value();
  auto echo = mesh->Client("echo").value();
  CallResult r = echo->CallBlocking("Echo/Say", "x");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(v2.handled.load(), 0);
  EXPECT_EQ(echo->stats().faults_aborted, 1u);
  // Another method matches no route: every endpoint, no fault.
  CallResult other = echo->CallBlocking("Other/Call", "x");
  EXPECT_EQ(other.status.code(), absl::StatusCode::kUnimplemented) << other.status;
  EXPECT_EQ(echo->stats().unrouted, 1u);
}

struct AuthInterceptor : Interceptor {
  std::string name() const override { return "auth"; }
  absl::Status Before(absl::string_view method, CallOptions& o) override {
    if (method == "Forbidden/Call") return absl::PermissionDeniedError("not allowed here");
    o.metadata.emplace_back("x-user", "alice");
    return absl::OkStatus();
  }
  void After(absl::string_view, const CallOptions&, CallResult& r, absl::Duration) override {
    ++seen;
    if (!r.status.ok()) ++failures;
  }
  std::atomic<int> seen{0}, failures{0};
};

TEST_F(MeshTest, InterceptorsAddMetadataAndSeeResults) {
  auto mesh = Mesh::Create(Config(ServiceJson(""))).value();
  auto echo = mesh->Client("echo").value();
  auto auth = std::make_shared<AuthInterceptor>();
  echo->AddInterceptor(auth);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
  core::Notification done;
  echo->Call("Echo/Say", "x", {}, [&](CallResult r) {
    EXPECT_TRUE(r.status.ok());
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_EQ(v1a.with_user + v1b.with_user + v2.with_user, 11);
  EXPECT_EQ(auth->seen.load(), 11);
  CallResult denied = echo->CallBlocking("Forbidden/Call", "x");
  EXPECT_EQ(denied.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(echo->Describe(), "interceptors     auth")) << echo->Describe();
}

TEST_F(MeshTest, ApplyReplacesTheStackWithoutFailingCallsInFlight) {
  for (NamedServer* s : {&v1a, &v1b, &v2}) s->delay_ms = 200;
  auto mesh = Mesh::Create(Config(ServiceJson(""))).value();
  auto echo = mesh->Client("echo").value();
  ASSERT_TRUE(echo->WaitForEndpoints(absl::Seconds(5)));
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> calls;
  for (int i = 0; i < 6; ++i) {
    calls.emplace_back([&] {
      CallResult r = echo->CallBlocking("Echo/Say", "x");
      (r.status.ok() ? ok : failed)++;
    });
  }
  // The calls are in flight: every one has reached a handler.
  EXPECT_TRUE(Eventually(
      [&] { return v1a.handled.load() + v1b.handled.load() + v2.handled.load() >= 6; },
      absl::Seconds(5)));
  ASSERT_TRUE(mesh->Apply(Config(ServiceJson(R"("retry": {"max_attempts": 3})"))).ok());
  EXPECT_EQ(mesh->reload_stats().generation, 2u);
  EXPECT_TRUE(absl::StrContains(echo->Describe(), "up to 3 attempts"));
  for (auto& t : calls) t.join();
  EXPECT_EQ(ok.load(), 6);
  EXPECT_EQ(failed.load(), 0);
  // A service removed by a reload answers NOT_FOUND.
  ASSERT_TRUE(mesh->Apply(Config(R"({"services": {"other": {"discovery": {"static": {"endpoints": ["127.0.0.1:1"]}}}}})")).ok());
  EXPECT_EQ(echo->CallBlocking("Echo/Say", "x").status.code(), absl::StatusCode::kNotFound);
}

// The bar: a config reload every 200ms (here; 1s in the end-to-end test)
// under steady load, and no call fails because of it.
TEST_F(MeshTest, ReloadsUnderLoadFailNoCall) {
  auto mesh = Mesh::Create(Config(ServiceJson(""))).value();
  auto echo = mesh->Client("echo").value();
  ASSERT_TRUE(echo->WaitForEndpoints(absl::Seconds(5)));
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::string first_error;
  std::mutex mu;
  std::vector<std::thread> load;
  for (int t = 0; t < 4; ++t) {
    load.emplace_back([&] {
      while (!stop.load()) {
        CallResult r = echo->CallBlocking("Echo/Say", "x");
        if (r.status.ok()) {
          ++ok;
        } else {
          ++failed;
          std::lock_guard<std::mutex> lock(mu);
          if (first_error.empty()) first_error = r.status.ToString();
        }
      }
    });
  }
  // Async calls too.
  std::atomic<int> async_ok{0}, async_failed{0}, async_out{0};
  std::thread async_load([&] {
    while (!stop.load()) {
      ++async_out;
      echo->Call("Echo/Say", "y", {}, [&](CallResult r) {
        (r.status.ok() ? async_ok : async_failed)++;
        --async_out;
      });
      absl::SleepFor(absl::Microseconds(500));  // paces the async load
    }
  });
  const char* variants[] = {
      R"("load_balancer": [{"round_robin": {}}])",
      R"("load_balancer": [{"p2c_peak_ewma": {}}], "retry": {"max_attempts": 2})",
      R"("subsets": {"v1": {"version": "v1"}}, "routes": [{"split": {"v1": 1}}])",
      R"("hedging": {"delay": "50ms"}, "outlier_detection": {"interval": "1s"})",
  };
  for (int i = 0; i < 15; ++i) {
    absl::SleepFor(absl::Milliseconds(200));  // the reload period under test
    ASSERT_TRUE(mesh->Apply(Config(ServiceJson(variants[i % 4]))).ok());
  }
  stop = true;
  for (auto& t : load) t.join();
  async_load.join();
  ASSERT_TRUE(Eventually([&] { return async_out.load() == 0; }, absl::Seconds(5)));
  EXPECT_EQ(failed.load(), 0) << first_error;
  EXPECT_EQ(async_failed.load(), 0);
  EXPECT_GT(ok.load(), 100);
  EXPECT_EQ(mesh->reload_stats().applied, 15u);
}

TEST_F(MeshTest, WatchedFileReloadsValidDocumentsAndRejectsBrokenOnes) {
  std::string path = testing::MakeTempDir("mesh") + "/mesh.json";
  auto write = [&](const std::string& text) {
    std::ofstream(path + ".tmp", std::ios::trunc) << text;
    ASSERT_EQ(rename((path + ".tmp").c_str(), path.c_str()), 0);
  };
  write(ServiceJson(""));
  MeshOptions o;
  o.file_poll_interval = absl::Milliseconds(20);
  auto mesh = Mesh::Open(path, o).value();
  auto echo = mesh->Client("echo").value();
  ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
  write(ServiceJson(R"("retry": {"max_attempts": 4})"));
  ASSERT_TRUE(Eventually([&] { return mesh->reload_stats().generation == 2; }, absl::Seconds(5)));
  EXPECT_TRUE(absl::StrContains(echo->Describe(), "up to 4 attempts"));
  // Broken: rejected with the field path, the old configuration stays.
  write(ServiceJson(R"("retry": {"max_attempts": 40})"));
  ASSERT_TRUE(Eventually([&] { return mesh->reload_stats().rejected == 1; }, absl::Seconds(5)));
  EXPECT_TRUE(absl::StrContains(mesh->reload_stats().last_error.message(),
                                "services.echo.retry.max_attempts"))
      << mesh->reload_stats().last_error;
  EXPECT_EQ(mesh->reload_stats().generation, 2u);
  ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
  write("{ not json");
  ASSERT_TRUE(Eventually([&] { return mesh->reload_stats().rejected == 2; }, absl::Seconds(5)));
  ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
}

// Subsets share the service's verdict on an endpoint: an endpoint ejected
// by calls through one route is out for every call, and probes are sent
// once per endpoint, not once per subset.
TEST_F(MeshTest, SubsetsShareEndpointHealth) {
  auto mesh = Mesh::Create(Config(ServiceJson(R"(
      "load_balancer": [{"round_robin": {}}],
      "outlier_detection": {"consecutive_failures": 3, "interval": "10s",
                            "base_ejection_time": "30s", "max_ejection_percent": 50},
      "health_check": {"interval": "50ms", "timeout": "40ms"},
      "subsets": {"v1": {"version": "v1"}, "v2": {"version": "v2"}},
      "routes": [{"name": "old", "match": {"metadata": {"x-old": "*"}}, "subset": "v1"}])")))
                  .value();
  auto echo = mesh->Client("echo").value();
  CallOptions old;
  old.metadata.emplace_back("x-old", "1");
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x", old).status.ok());
  v1a.failing = true;
  // Through the route, v1a fails three times in a row and is ejected. The
  // ejection is applied on the control loop, so a call or two may still
  // reach v1a meanwhile (more under a sanitizer); once it is out, calls
  // through the route succeed.
  auto v1a_ejected = [&] {
    for (const client::EndpointState& e : echo->EndpointStates()) {
      if (e.address == v1a.address()) return e.outlier == "ejected";
    }
    return false;
  };
  int failed = 0;
  for (int i = 0; i < 200 && !v1a_ejected(); ++i) {
    failed += !echo->CallBlocking("Echo/Say", "x", old).status.ok();
  }
  ASSERT_TRUE(v1a_ejected());
  EXPECT_GE(failed, 3);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x", old).status.ok());
  // Calls no route matches use every endpoint: v1a is out for them too.
  int before = v1a.handled.load();
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
  EXPECT_EQ(v1a.handled.load(), before);
  for (const client::EndpointState& e : echo->EndpointStates()) {
    EXPECT_EQ(e.outlier, e.address == v1a.address() ? "ejected" : "healthy") << e.address;
  }
  EXPECT_EQ(echo->stats().ejections, 1u);
  // One prober per endpoint: about 1s / 50ms probes of v2 in a second, not
  // twice that (v2 is in the whole service and in subset v2).
  int64_t probes_before = v2.server->stats().health_checks;
  absl::SleepFor(absl::Seconds(1));
  int64_t probes = v2.server->stats().health_checks - probes_before;
  EXPECT_GE(probes, 8);
  EXPECT_LE(probes, 25);
}

// A reload keeps what the client learned of the endpoints that stay: an
// ejected endpoint stays ejected, a slow one keeps its latency estimate, and
// in-flight counts and the retry budget are the same objects, so a reload
// is not a fresh start for a fleet with a bad instance.
TEST_F(MeshTest, ReloadKeepsWhatTheClientLearned) {
  const std::string common = R"(
      "outlier_detection": {"consecutive_failures": 3, "interval": "10s",
                            "base_ejection_time": "30s", "max_ejection_percent": 50})";
  auto mesh = Mesh::Create(Config(ServiceJson(
                               absl::StrCat(R"("load_balancer": [{"round_robin": {}}],)", common))))
                  .value();
  auto echo = mesh->Client("echo").value();
  v1b.delay_ms = 30;
  for (int i = 0; i < 12; ++i) echo->CallBlocking("Echo/Say", "x");
  v2.failing = true;
  for (int i = 0; i < 20; ++i) echo->CallBlocking("Echo/Say", "x");
  auto state_of = [&](const NamedServer& s) {
    for (const client::EndpointState& e : echo->EndpointStates()) {
      if (e.address == s.address()) return e;
    }
    return client::EndpointState();
  };
  ASSERT_EQ(state_of(v2).outlier, "ejected");
  absl::Duration slow_estimate = state_of(v1b).latency_ewma;
  ASSERT_GE(slow_estimate, absl::Milliseconds(10));
  // A reload that changes the retry policy and the balancer.
  ASSERT_TRUE(mesh->Apply(Config(ServiceJson(absl::StrCat(
                              R"("load_balancer": [{"least_request": {}}],
                                 "retry": {"max_attempts": 2},)",
                              common))))
                  .ok());
  EXPECT_EQ(echo->stats().generation, 2u);
  EXPECT_EQ(state_of(v2).outlier, "ejected");
  EXPECT_GE(state_of(v1b).latency_ewma, absl::Milliseconds(10));
  int before = v2.handled.load();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
  EXPECT_EQ(v2.handled.load(), before);  // still out after the reload
  v1b.delay_ms = 0;
}

// The reload rules of docs/mesh.md: a replaced stack's calls end when
// mesh.drain_timeout passes; io_threads cannot change live; a new stack
// with no endpoints does not replace one that has some.
TEST_F(MeshTest, DrainTimeoutEndsTheCallsOfAReplacedStack) {
  auto with = [&](const std::string& extra) {
    std::string doc = ServiceJson(extra);
    return Config(absl::StrCat(R"({"mesh": {"drain_timeout": "200ms"}, )", doc.substr(1)));
  };
  auto mesh = Mesh::Create(with(R"("load_balancer": [{"round_robin": {}}])")).value();
  auto echo = mesh->Client("echo").value();
  for (NamedServer* s : {&v1a, &v1b, &v2}) s->delay_ms = 1000;
  core::Notification done;
  CallResult got;
  CallOptions o;
  o.timeout = absl::Seconds(5);
  echo->Call("Echo/Say", "x", o, [&](CallResult r) {
    got = std::move(r);
    done.Notify();
  });
  // The call is on the server before the reload replaces its stack.
  EXPECT_TRUE(Eventually(
      [&] { return v1a.handled.load() + v1b.handled.load() + v2.handled.load() >= 1; },
      absl::Seconds(5)));
  ASSERT_TRUE(mesh->Apply(with(R"("load_balancer": [{"least_request": {}}])")).ok());
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(got.status.code(), absl::StatusCode::kCancelled) << got.status;
  // Ended by the drain timeout, not answered: the server takes 1s.
  EXPECT_TRUE(absl::StrContains(got.status.message(), "drain_timeout")) << got.status;
  for (NamedServer* s : {&v1a, &v1b, &v2}) s->delay_ms = 0;
}

TEST_F(MeshTest, AReloadCannotChangeIoThreads) {
  auto mesh = Mesh::Create(Config(ServiceJson(""))).value();
  auto echo = mesh->Client("echo").value();
  std::string doc = ServiceJson(R"("retry": {"max_attempts": 2})");
  absl::Status st =
      mesh->Apply(Config(absl::StrCat(R"({"mesh": {"io_threads": 2}, )", doc.substr(1))));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "mesh.io_threads")) << st;
  EXPECT_EQ(mesh->reload_stats().generation, 1u);
  EXPECT_EQ(mesh->reload_stats().rejected, 1u);
  EXPECT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
}

TEST_F(MeshTest, AReloadCannotChangeBusyPoll) {
  auto mesh = Mesh::Create(Config(ServiceJson(""))).value();
  auto echo = mesh->Client("echo").value();
  std::string doc = ServiceJson("");
  absl::Status st =
      mesh->Apply(Config(absl::StrCat(R"({"mesh": {"busy_poll": "50us"}, )", doc.substr(1))));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "mesh.busy_poll: cannot change")) << st;
  EXPECT_EQ(mesh->reload_stats().generation, 1u);
  EXPECT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
}

// Times the thread `tid` went to sleep (blocked) so far.
int64_t VoluntarySwitches(long tid) {
  std::ifstream in(absl::StrCat("/proc/self/task/", tid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "voluntary_ctxt_switches:")) {
      int64_t n = -1;
      std::string value(absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)));
      if (absl::SimpleAtoi(value, &n)) return n;
    }
  }
  return -1;
}

// A chain of calls, each started from the previous one's callback (on the
// mesh's reactor). Every call in flight holds the chain, so a test that gives
// up waiting leaves nothing dangling behind it.
struct CallChain {
  std::shared_ptr<Client> echo;
  std::atomic<long> tid{0};  // the reactor thread that ran the first callback
  std::atomic<int> left{0};
  std::atomic<int> failed{0};
  core::Notification done;

  static void Next(std::shared_ptr<CallChain> c) {
    Client* echo = c->echo.get();
    echo->Call("Echo/Say", "x", CallOptions(), [c = std::move(c)](CallResult r) mutable {
      if (c->tid.load() == 0) c->tid = static_cast<long>(syscall(SYS_gettid));
      if (!r.status.ok()) ++c->failed;
      if (c->left.fetch_sub(1) == 1) return c->done.Notify();
      Next(std::move(c));
    });
  }
};

// Runs `calls` calls one after another on the mesh's reactor; returns how
// often that reactor thread slept meanwhile, or -1.
int64_t ReactorSleepsDuringChain(std::shared_ptr<Client> echo, int calls) {
  auto warm = std::make_shared<CallChain>();  // finds the reactor's thread
  warm->echo = echo;
  warm->left = 1;
  CallChain::Next(warm);
  if (!warm->done.WaitForNotificationWithTimeout(absl::Seconds(10))) return -1;
  const long tid = warm->tid.load();
  const int64_t before = VoluntarySwitches(tid);
  auto chain = std::make_shared<CallChain>();
  chain->echo = std::move(echo);
  chain->left = calls;
  CallChain::Next(chain);
  if (!chain->done.WaitForNotificationWithTimeout(absl::Seconds(30)) ||
      chain->failed.load() > 0) {
    return -1;
  }
  const int64_t after = VoluntarySwitches(tid);
  return before < 0 || after < 0 ? -1 : after - before;
}

// mesh.busy_poll reaches the mesh's reactors: while replies come within
// it, the reactor polls instead of sleeping in epoll_wait. Without it the
// reactor sleeps while each call waits for its reply.
TEST_F(MeshTest, BusyPollKeepsTheReactorAwakeBetweenReplies) {
  constexpr int kCalls = 200;
  const std::string one = absl::StrCat(
      R"({"services": {"echo": {"discovery": {"static": {"endpoints": [")", v1a.address(),
      R"("]}}, "timeout": "10s"}}})");
  auto polling = Mesh::Create(Config(absl::StrCat(
                                  R"({"mesh": {"busy_poll": "1ms"}, )", one.substr(1))))
                     .value();
  EXPECT_EQ(polling->config()->mesh.busy_poll, absl::Milliseconds(1));
  auto echo = polling->Client("echo").value();
  const int64_t sleeps = ReactorSleepsDuringChain(echo, kCalls);
  ASSERT_GE(sleeps, 0);
  // Each reply comes within microseconds; a slept reactor is the exception
  // (a reply later than 1ms: the server thread was not scheduled meanwhile).
  EXPECT_LT(sleeps, kCalls / 4) << "reactor slept " << sleeps << " times in " << kCalls
                                << " calls";
}

// connections_per_endpoint can change live: the new stack's channels open
// that many connections to each endpoint; the old ones close with it.
TEST_F(MeshTest, AReloadAppliesConnectionsPerEndpoint) {
  auto doc = [&](int connections) {
    std::string service = ServiceJson("");
    return absl::StrCat(R"({"mesh": {"connections_per_endpoint": )", connections, "}, ",
                        service.substr(1));
  };
  auto mesh = Mesh::Create(Config(doc(1))).value();
  auto echo = mesh->Client("echo").value();
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
  for (NamedServer* s : {&v1a, &v1b, &v2}) EXPECT_EQ(s->server->connection_count(), 1u);
  ASSERT_TRUE(mesh->Apply(Config(doc(3))).ok());
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
  // The replaced stack's connections close once it is reaped (no call
  // holds it); each server then holds the new stack's three.
  for (NamedServer* s : {&v1a, &v1b, &v2}) {
    EXPECT_TRUE(Eventually([&] { return s->server->connection_count() == 3; }, absl::Seconds(5)))
        << s->name << " holds " << s->server->connection_count() << " connections";
  }
  EXPECT_TRUE(absl::StrContains(echo->Describe(), "3 connection(s) each")) << echo->Describe();
}

TEST_F(MeshTest, AStackWithoutEndpointsDoesNotReplaceOneWithEndpoints) {
  MeshOptions options;
  options.ready_timeout = absl::Milliseconds(200);
  auto mesh = Mesh::Create(Config(ServiceJson("")), options).value();
  auto echo = mesh->Client("echo").value();
  ASSERT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());
  const std::string missing = testing::MakeTempDir("noeps") + "/absent.json";
  absl::Status st = mesh->Apply(Config(absl::StrCat(
      R"({"services": {"echo": {"discovery": {"file": {"path": ")", missing, R"("}}}}})")));
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "services.echo.discovery")) << st;
  EXPECT_EQ(mesh->reload_stats().generation, 1u);
  EXPECT_TRUE(echo->CallBlocking("Echo/Say", "x").status.ok());  // the old stack serves
}

// MeshOptions::admin_address: the standard pages over the mesh's registry,
// and its own (/stacks, /endpoints.json); gone with the mesh.
TEST_F(MeshTest, AdminEndpointShowsTheMeshItsClientsAndEndpoints) {
  metrics::Registry registry;
  MeshOptions options;
  options.metrics = &registry;
  options.admin_address = "127.0.0.1:0";
  auto m = Mesh::Create(Config(ServiceJson("")), options);
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string address = (*m)->admin_address();
  ASSERT_TRUE(absl::StartsWith(address, "127.0.0.1:")) << address;
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port));
  auto body = [port](const std::string& path) {
    std::string r = admin::testing::Exchange(port, absl::StrCat("GET ", path, " HTTP/1.1\r\n\r\n"));
    EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 200 ")) << path << ": " << r.substr(0, 200);
    size_t at = r.find("\r\n\r\n");
    return at == std::string::npos ? std::string() : r.substr(at + 4);
  };
  EXPECT_EQ(body("/stacks"), "no clients yet\n");

  auto echo = (*m)->Client("echo");
  ASSERT_TRUE(echo.ok()) << echo.status();
  ASSERT_TRUE((*echo)->CallBlocking("Echo/Say", "hi").status.ok());

  std::string stacks = body("/stacks");
  EXPECT_TRUE(absl::StrContains(stacks, "== echo")) << stacks;
  EXPECT_TRUE(absl::StrContains(stacks, "balancer")) << stacks;
  json endpoints = json::parse(body("/endpoints.json"));
  ASSERT_EQ(endpoints["echo"].size(), 3u) << endpoints.dump();
  int64_t calls = 0;
  for (const json& e : endpoints["echo"]) {
    EXPECT_EQ(e["healthy"], true) << e.dump();
    calls += e["calls"].get<int64_t>();
  }
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(absl::StrContains(
      body("/metrics"),
      R"(meshlib_client_requests_total{service="echo",method="Echo/Say",code="OK"} 1)"));
  EXPECT_TRUE(absl::StrContains(body("/"), "<!DOCTYPE html>"));

  m->reset();
  EXPECT_EQ(admin::testing::Connect(port), -1) << "the admin endpoint closes with the mesh";
}

// A call refused above the channels (here by an interceptor) is still a
// request in the service's metrics, with the refusal's code.
TEST_F(MeshTest, RefusedCallsCountInTheServicesMetrics) {
  struct Refuser : Interceptor {
    std::string name() const override { return "refuser"; }
    absl::Status Before(absl::string_view, client::CallOptions&) override {
      return absl::PermissionDeniedError("not you");
    }
  };
  metrics::Registry registry;
  MeshOptions options;
  options.metrics = &registry;
  auto m = Mesh::Create(Config(ServiceJson("")), options);
  ASSERT_TRUE(m.ok()) << m.status();
  auto echo = (*m)->Client("echo").value();
  echo->AddInterceptor(std::make_shared<Refuser>());
  EXPECT_EQ(echo->CallBlocking("Echo/Say", "hi").status.code(),
            absl::StatusCode::kPermissionDenied);
  core::Notification done;
  echo->Call("Echo/Say", "hi", {}, [&](CallResult r) {
    EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied);
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_TRUE(absl::StrContains(
      registry.Prometheus(),
      R"(meshlib_client_requests_total{service="echo",method="Echo/Say",code="PERMISSION_DENIED"} 2)"))
      << registry.Prometheus();
  EXPECT_EQ(v1a.handled + v1b.handled + v2.handled, 0);
}

TEST_F(MeshTest, ABadAdminAddressFailsCreateAndSaysWhich) {
  MeshOptions options;
  options.admin_address = "no port here";
  auto m = Mesh::Create(Config(ServiceJson("")), options);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_TRUE(absl::StrContains(m.status().message(), "MeshOptions.admin_address")) << m.status();
}

}  // namespace
}  // namespace meshlib::mesh
