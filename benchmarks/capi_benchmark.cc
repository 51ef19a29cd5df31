// What the C boundary costs per call: the same mesh call through the C++
// API and through the C ABI (meshlib/capi/meshlib.h), over a transport that
// costs next to nothing (testing::InMemoryChannel answers on the calling
// thread), so that the difference between a pair is the boundary itself:
// argument checks, the options' conversion, the reply object, the error
// object, the copy of the payload out.
//
//   Cpp/Blocking   Client::CallBlocking              CApi/Blocking   meshlib_client_call
//   Cpp/Callback   Client::Call with a callback      CApi/Async      meshlib_client_call_async
//                                                    CApi/Queued     meshlib_client_call_queued
//                                                                    + meshlib_queue_poll
//
// Bar: the C boundary adds <= 300 ns per call.
//
//   bazel run -c opt //benchmarks:capi_benchmark -- \
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "meshlib/capi/internal.h"
#include "meshlib/capi/meshlib.h"
#include "meshlib/config/config.h"
#include "meshlib/mesh/mesh.h"
#include "meshlib/testing/in_memory_channel.h"

namespace meshlib {
namespace {

client::CallResult Echo(const std::string&, absl::string_view, absl::string_view request,
                        const client::CallOptions&) {
  client::CallResult r;
  r.payload.assign(request.data(), request.size());
  return r;
}

// One service over 3 in-memory endpoints, with the defaults a service has.
std::unique_ptr<mesh::Mesh> MakeMesh() {
  auto cfg = config::ParseMeshConfig(
      R"({"services": {"echo": {"discovery": {"static": {"endpoints":
          ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]}}, "timeout": "1s"}}})");
  if (!cfg.ok()) {
    std::fprintf(stderr, "%s\n", cfg.status().ToString().c_str());
    std::abort();
  }
  mesh::MeshOptions o;
  o.channel_factory = testing::InMemoryChannel::Factory(Echo);
  return mesh::Mesh::Create(*std::move(cfg), o).value();
}

const std::string& Payload() {
  static const std::string* p = new std::string(64, 'x');
  return *p;
}

void BM_Cpp_Blocking(benchmark::State& state) {
  auto m = MakeMesh();
  auto client = m->Client("echo").value();
  client::CallOptions o;
  for (auto _ : state) {
    client::CallResult r = client->CallBlocking("Echo/Say", Payload(), o);
    if (!r.status.ok()) state.SkipWithError(r.status.ToString().c_str());
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_Cpp_Blocking);

void BM_CApi_Blocking(benchmark::State& state) {
  meshlib_mesh_t* mesh = capi::WrapMesh(MakeMesh());
  meshlib_client_t* client = nullptr;
  if (meshlib_mesh_client(mesh, "echo", &client) != nullptr) std::abort();
  for (auto _ : state) {
    meshlib_reply_t* reply = nullptr;
    meshlib_error_t* err =
        meshlib_client_call(client, "Echo/Say", Payload().data(), Payload().size(), nullptr, &reply);
    if (err != nullptr) {
      state.SkipWithError(meshlib_error_message(err));
      meshlib_error_free(err);
      break;
    }
    size_t len = 0;
    benchmark::DoNotOptimize(meshlib_reply_payload(reply, &len));
    meshlib_reply_free(reply);
  }
  meshlib_client_free(client);
  meshlib_mesh_free(mesh);
}
BENCHMARK(BM_CApi_Blocking);

void BM_Cpp_Callback(benchmark::State& state) {
  auto m = MakeMesh();
  auto client = m->Client("echo").value();
  client::CallOptions o;
  int64_t ok = 0;
  for (auto _ : state) {
    // The in-memory transport answers on this thread: the callback has run
    // when Call returns.
    client->Call("Echo/Say", Payload(), o, [&ok](client::CallResult r) {
      ok += r.status.ok();
      benchmark::DoNotOptimize(r.payload.data());
    });
  }
  if (ok != state.iterations()) state.SkipWithError("a call failed");
}
BENCHMARK(BM_Cpp_Callback);

void OnDone(void* user_data, meshlib_reply_t* reply, meshlib_error_t* error) {
  if (reply != nullptr) {
    size_t len = 0;
    benchmark::DoNotOptimize(meshlib_reply_payload(reply, &len));
    ++*static_cast<int64_t*>(user_data);
  }
  meshlib_reply_free(reply);
  meshlib_error_free(error);
}

void BM_CApi_Async(benchmark::State& state) {
  meshlib_mesh_t* mesh = capi::WrapMesh(MakeMesh());
  meshlib_client_t* client = nullptr;
  if (meshlib_mesh_client(mesh, "echo", &client) != nullptr) std::abort();
  int64_t ok = 0;
  for (auto _ : state) {
    meshlib_error_t* err = meshlib_client_call_async(client, "Echo/Say", Payload().data(),
                                                     Payload().size(), nullptr, OnDone, &ok,
                                                     nullptr);
    if (err != nullptr) std::abort();
  }
  if (ok != state.iterations()) state.SkipWithError("a call failed");
  meshlib_client_free(client);
  meshlib_mesh_free(mesh);
}
BENCHMARK(BM_CApi_Async);

void BM_CApi_Queued(benchmark::State& state) {
  meshlib_mesh_t* mesh = capi::WrapMesh(MakeMesh());
  meshlib_client_t* client = nullptr;
  meshlib_queue_t* queue = nullptr;
  if (meshlib_mesh_client(mesh, "echo", &client) != nullptr) std::abort();
  if (meshlib_queue_new(&queue) != nullptr) std::abort();
  int64_t ok = 0;
  uint64_t tag = 0;
  for (auto _ : state) {
    if (meshlib_client_call_queued(client, "Echo/Say", Payload().data(), Payload().size(),
                                   nullptr, queue, ++tag, nullptr) != nullptr) {
      std::abort();
    }
    meshlib_completion_t c;
    if (meshlib_queue_poll(queue, &c, 1, 0) == 1 && c.reply != nullptr) {
      size_t len = 0;
      benchmark::DoNotOptimize(meshlib_reply_payload(c.reply, &len));
      ++ok;
    }
    meshlib_reply_free(c.reply);
    meshlib_error_free(c.error);
  }
  if (ok != state.iterations()) state.SkipWithError("a call failed");
  meshlib_queue_free(queue);
  meshlib_client_free(client);
  meshlib_mesh_free(mesh);
}
BENCHMARK(BM_CApi_Queued);

}  // namespace
}  // namespace meshlib
