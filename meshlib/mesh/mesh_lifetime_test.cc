// Lifetimes of calls against the objects they run through: destroying a
// Mesh or dropping a Client with thousands of calls in flight (callback,
// blocking, hedged, waiting on a retry backoff), from the main thread,
// another thread or a call's own callback; blocking calls made on a
// reactor thread; hedged and retried calls across reloads. Each call must
// complete exactly once, nothing may touch freed memory (run under ASan
// and TSan), and nothing may hang.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "meshlib/admin/test_http.h"
#include "meshlib/core/sync.h"
#include "gtest/gtest.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/runtime/event_loop.h"
#include "meshlib/server/server.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib::mesh {
namespace {

using client::CallOptions;
using client::CallResult;
using testing::Eventually;

// An in-process echo server: slow (so calls stay in flight), and failing a
// share of calls with UNAVAILABLE (so calls retry and wait on backoffs).
struct SlowServer {
  SlowServer(absl::Duration delay, int fail_every) {
    server::ServerOptions o;
    o.io_threads = 1;
    o.worker_threads = 8;
    server = std::make_unique<server::Server>(o);
    EXPECT_TRUE(server
                    ->RegisterSync("Echo/Say",
                                   [this, delay, fail_every](server::ServerCall& call,
                                                             std::string* out) {
                                     int n = ++handled;
                                     if (fail_every > 0 && n % fail_every == 0) {
                                       return absl::UnavailableError("flaky");
                                     }
                                     absl::SleepFor(delay);
                                     *out = std::string(call.request());
                                     return absl::OkStatus();
                                   })
                    .ok());
    EXPECT_TRUE(server->Start("127.0.0.1:0").ok());
  }
  std::atomic<int> handled{0};
  std::unique_ptr<server::Server> server;
};

// Records that each call completes exactly once.
struct Ledger {
  explicit Ledger(int n) : seen(n) {
    for (auto& s : seen) s.store(0);
  }
  void Done(int i, const CallResult& r) {
    if (seen[i].fetch_add(1) != 0) twice.fetch_add(1);
    if (!r.status.ok() && failed.fetch_add(1) < 5) {
      std::lock_guard<std::mutex> lock(mu);
      first_failures.push_back(r.status.ToString());
    }
    completed.fetch_add(1);
  }
  std::string FirstFailures() {
    std::lock_guard<std::mutex> lock(mu);
    std::string out;
    for (const auto& f : first_failures) absl::StrAppend(&out, "\n  ", f);
    return out;
  }
  std::mutex mu;
  std::vector<std::string> first_failures;
  std::vector<std::atomic<int>> seen;
  std::atomic<int> completed{0}, twice{0}, failed{0};
};

class MeshLifetimeTest : public ::testing::Test {
 protected:
  MeshLifetimeTest()
      : fast(absl::Milliseconds(1), 0),
        slow(absl::Milliseconds(40), 0),
        flaky(absl::Milliseconds(5), 3) {}

  std::string Json(const std::string& extra = "") {
    return absl::StrCat(
        R"({"services": {"echo": {"discovery": {"static": {"endpoints": [")",
        fast.server->address(), R"(", ")", slow.server->address(), R"(", ")",
        flaky.server->address(), R"("]}}, "timeout": "5s",
          "retry": {"max_attempts": 4, "backoff": {"base": "20ms", "max": "200ms"},
                    "retry_on": ["UNAVAILABLE"], "budget": {"ratio": 1.0}},
          "hedging": {"delay": "2ms", "max_attempts": 2, "max_extra_load": 1.0})",
        extra, "}}}");
  }
  std::unique_ptr<Mesh> NewMesh(const std::string& extra = "", MeshOptions options = {}) {
    auto cfg = config::ParseMeshConfig(Json(extra));
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    auto mesh = Mesh::Create(*std::move(cfg), options);
    EXPECT_TRUE(mesh.ok()) << mesh.status();
    return *std::move(mesh);
  }

  SlowServer fast, slow, flaky;
};

CallOptions Idempotent() {
  CallOptions o;
  o.idempotent = true;
  return o;
}

// How the Mesh goes in one round.
enum class Teardown {
  kDropClientThenMesh,    // the client first, then the mesh, on this thread
  kMeshThenClient,        // the mesh first while the client is still held
  kMeshOnAnotherThread,   // the mesh destroyed by another thread
  kMeshInsideCallback,    // the mesh destroyed by a call's own callback
};

void RunRound(MeshLifetimeTest* t, std::unique_ptr<Mesh> mesh, Teardown how, int calls) {
  auto echo = mesh->Client("echo");
  ASSERT_TRUE(echo.ok()) << echo.status();
  std::shared_ptr<Client> client = *std::move(echo);
  auto ledger = std::make_shared<Ledger>(calls + 4);
  // A few blocking calls on their own threads, in flight at teardown.
  std::vector<std::thread> blocking;
  std::atomic<int> blocking_started{0};
  for (int b = 0; b < 4; ++b) {
    blocking.emplace_back([client, ledger, b, calls, &blocking_started] {
      ++blocking_started;
      CallResult r = client->CallBlocking("Echo/Say", "blocking", Idempotent());
      ledger->Done(calls + b, r);
    });
  }
  // The mesh, handed to whoever destroys it.
  auto holder = std::make_shared<std::unique_ptr<Mesh>>(std::move(mesh));
  std::atomic<bool> destroy_in_callback{how == Teardown::kMeshInsideCallback};
  core::Notification destroyed_in_callback;
  std::mutex holder_mu;
  for (int i = 0; i < calls; ++i) {
    client->Call("Echo/Say", absl::StrCat("call ", i), Idempotent(), [&, i, ledger](CallResult r) {
      ledger->Done(i, r);
      // The 100th completion destroys the mesh from its own callback.
      if (ledger->completed.load() >= 100 && destroy_in_callback.exchange(false)) {
        std::unique_ptr<Mesh> m;
        {
          std::lock_guard<std::mutex> lock(holder_mu);
          m = std::move(*holder);
        }
        m.reset();
        destroyed_in_callback.Notify();
      }
    });
  }
  // Teardown comes with some calls answered and most in flight.
  EXPECT_TRUE(Eventually([&] { return blocking_started.load() == 4; }, absl::Seconds(10)));
  EXPECT_TRUE(Eventually([&] { return ledger->completed.load() > 0; }, absl::Seconds(10)));
  auto destroy_mesh = [&] {
    std::unique_ptr<Mesh> m;
    {
      std::lock_guard<std::mutex> lock(holder_mu);
      m = std::move(*holder);
    }
    m.reset();
  };
  switch (how) {
    case Teardown::kDropClientThenMesh:
      client.reset();
      destroy_mesh();
      break;
    case Teardown::kMeshThenClient:
      destroy_mesh();
      client.reset();
      break;
    case Teardown::kMeshOnAnotherThread: {
      std::thread other(destroy_mesh);
      client.reset();
      other.join();
      break;
    }
    case Teardown::kMeshInsideCallback:
      client.reset();
      // Bounded: every call ends within its 5s timeout at worst.
      EXPECT_TRUE(destroyed_in_callback.WaitForNotificationWithTimeout(absl::Seconds(20)));
      destroy_mesh();  // in case fewer than 100 completed
      break;
  }
  for (auto& th : blocking) th.join();
  // Every call has completed, exactly once, by the time the mesh is gone
  // (the blocking ones by the time their threads returned).
  EXPECT_TRUE(Eventually([&] { return ledger->completed.load() == calls + 4; },
                         absl::Seconds(10)))
      << ledger->completed.load() << " of " << calls + 4 << " completed";
  EXPECT_EQ(ledger->twice.load(), 0);
  for (int i = 0; i < calls + 4; ++i) ASSERT_EQ(ledger->seen[i].load(), 1) << "call " << i;
}

TEST_F(MeshLifetimeTest, DestroyingTheMeshEndsEveryCallExactlyOnce) {
  const Teardown kinds[] = {Teardown::kDropClientThenMesh, Teardown::kMeshThenClient,
                            Teardown::kMeshOnAnotherThread, Teardown::kMeshInsideCallback};
#if defined(__SANITIZE_THREAD__)
  const int rounds = 8;  // ThreadSanitizer runs each round ~10x slower
#else
  const int rounds = 30;
#endif
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    RunRound(this, NewMesh(), kinds[round % 4], 2000);
    if (HasFatalFailure()) return;
  }
}

// Scrapes (the registry's expositions, and the mesh's own admin pages)
// running all the time while meshes with calls in flight are destroyed
// every way: a scrape never reads a mesh that is going or gone.
TEST_F(MeshLifetimeTest, ScrapingWhileMeshesComeAndGo) {
  const Teardown kinds[] = {Teardown::kDropClientThenMesh, Teardown::kMeshThenClient,
                            Teardown::kMeshOnAnotherThread, Teardown::kMeshInsideCallback};
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    MeshOptions options;
    options.admin_address = "127.0.0.1:0";
    options.span_exporter = [](const client::Span&) {};
    std::unique_ptr<Mesh> mesh = NewMesh("", options);
    const std::string admin = mesh->admin_address();
    int port = 0;
    ASSERT_TRUE(absl::SimpleAtoi(admin.substr(admin.rfind(':') + 1), &port)) << admin;
    std::atomic<bool> stop{false};
    std::atomic<int> scrapes{0};
    std::thread scraper([&] {
      const char* paths[] = {"/metrics", "/endpoints.json", "/stacks", "/live.json",
                             "/metrics.json"};
      for (int i = 0; !stop.load(); ++i) {
        std::string text = metrics::DefaultRegistry().Prometheus();
        EXPECT_FALSE(text.empty());
        // Refused once the mesh (and its admin endpoint) is gone.
        admin::testing::Exchange(port, absl::StrCat("GET ", paths[i % 5], " HTTP/1.1\r\n\r\n"));
        ++scrapes;
      }
    });
    RunRound(this, std::move(mesh), kinds[round % 4], 500);
    EXPECT_TRUE(Eventually([&] { return scrapes.load() > 2; }, absl::Seconds(10)));
    stop = true;
    scraper.join();
    if (HasFatalFailure()) return;
  }
}

TEST_F(MeshLifetimeTest, CallsAfterTheMeshIsGoneFailFast) {
  auto mesh = NewMesh();
  std::shared_ptr<Client> client = mesh->Client("echo").value();
  ASSERT_TRUE(client->CallBlocking("Echo/Say", "x", Idempotent()).status.ok());
  mesh.reset();
  absl::Time start = absl::Now();
  CallResult r = client->CallBlocking("Echo/Say", "x", Idempotent());
  EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled) << r.status;
  core::Notification done;
  client->Call("Echo/Say", "x", Idempotent(), [&](CallResult r) {
    EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled) << r.status;
    done.Notify();
  });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(1)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

// A blocking call inside a callback runs on a reactor thread, which would
// have to read its own reply: it must fail at once, never hang.
TEST_F(MeshLifetimeTest, BlockingCallOnAReactorThreadFailsAtOnce) {
  for (const std::string& extra : {std::string(R"(, "load_balancer": [{"round_robin": {}}])"),
                                  std::string()}) {
    auto cfg = config::ParseMeshConfig(
        extra.empty() ? Json()
                      : absl::StrCat(R"({"services": {"echo": {"discovery": {"static": )",
                                     R"({"endpoints": [")", fast.server->address(),
                                     R"("]}}, "timeout": "500ms")", extra, "}}}"));
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    auto mesh = Mesh::Create(*std::move(cfg)).value();
    std::shared_ptr<Client> client = mesh->Client("echo").value();
    for (bool idempotent : {false, true}) {
      CallOptions o;
      o.idempotent = idempotent;
      o.timeout = absl::Milliseconds(500);
      core::Notification done;
      CallResult inner;
      absl::Duration took;
      client->Call("Echo/Say", "outer", o, [&](CallResult) {
        absl::Time start = absl::Now();
        inner = client->CallBlocking("Echo/Say", "inner", o);
        took = absl::Now() - start;
        done.Notify();
      });
      ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)))
          << "a blocking call inside a callback hung";
      EXPECT_EQ(inner.status.code(), absl::StatusCode::kFailedPrecondition) << inner.status;
      EXPECT_NE(inner.status.message().find("reactor"), absl::string_view::npos)
          << inner.status;
      EXPECT_LT(took, absl::Milliseconds(100));
    }
  }
}

TEST_F(MeshLifetimeTest, DroppingClientsWhileCallsRun) {
  auto mesh = NewMesh();
  for (int round = 0; round < 10; ++round) {
    std::shared_ptr<Client> client = mesh->Client("echo").value();
    auto ledger = std::make_shared<Ledger>(500);
    for (int i = 0; i < 500; ++i) {
      client->Call("Echo/Say", "x", Idempotent(),
                   [ledger, i](CallResult r) { ledger->Done(i, r); });
    }
    // Some calls answered, the rest in flight when the client goes.
    EXPECT_TRUE(Eventually([&] { return ledger->completed.load() > 0; }, absl::Seconds(10)));
    client.reset();  // ends its calls: each completes once (CANCELLED or answered)
    EXPECT_TRUE(Eventually([&] { return ledger->completed.load() == 500; }, absl::Seconds(10)))
        << ledger->completed.load();
    EXPECT_EQ(ledger->twice.load(), 0);
  }
  // The mesh still works for a new client.
  std::shared_ptr<Client> client = mesh->Client("echo").value();
  EXPECT_TRUE(client->CallBlocking("Echo/Say", "x", Idempotent()).status.ok());
}

// Hedged and retried idempotent calls while the configuration changes every
// 100ms (balancer, hedging, retries, endpoints): no call fails for it.
TEST_F(MeshLifetimeTest, HedgedAndRetriedCallsAcrossFrequentReloads) {
  auto mesh = NewMesh();
  std::shared_ptr<Client> client = mesh->Client("echo").value();
  std::atomic<bool> stop{false};
  auto ledger = std::make_shared<Ledger>(1 << 20);
  std::atomic<int> issued{0};
  std::thread load([&] {
    while (!stop.load()) {
      for (int k = 0; k < 20; ++k) {
        int i = issued.fetch_add(1);
        client->Call("Echo/Say", "x", Idempotent(),
                     [ledger, i](CallResult r) { ledger->Done(i, r); });
      }
      absl::SleepFor(absl::Milliseconds(5));  // paces the load
    }
  });
  const std::string variants[] = {
      R"(, "load_balancer": [{"round_robin": {}}])",
      R"(, "load_balancer": [{"p2c_peak_ewma": {}}])",
      R"(, "load_balancer": [{"least_request": {}}], "outlier_detection": {"interval": "50ms"})",
      "",
  };
  for (int i = 0; i < 30; ++i) {
    absl::SleepFor(absl::Milliseconds(100));  // the reload period under test
    auto cfg = config::ParseMeshConfig(Json(variants[i % 4]));
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    ASSERT_TRUE(mesh->Apply(*std::move(cfg)).ok());
  }
  stop.store(true);
  load.join();
  int n = issued.load();
  EXPECT_TRUE(Eventually([&] { return ledger->completed.load() == n; }, absl::Seconds(10)));
  EXPECT_EQ(ledger->twice.load(), 0);
  // The flaky endpoint fails one call in three; retries and hedges cover it.
  EXPECT_LE(ledger->failed.load(), n / 1000)
      << ledger->failed.load() << " of " << n << ledger->FirstFailures();
  mesh.reset();
}

}  // namespace
}  // namespace meshlib::mesh
