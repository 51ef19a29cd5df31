// Load generator for grpc_echo_server: the gRPC rows of the end-to-end
// benchmark (benchmarks/run_e2e.sh). Same flags and output line as
// raw_echo_client, with "system":"grpc".
//
//   grpc_echo_client --address=127.0.0.1:41235 --mode=pingpong --json
//   grpc_echo_client --address=127.0.0.1:41235 --mode=throughput
//       --connections=4 --inflight=32 --duration=5s --warmup=1s --json
//
// Unary calls to "/Echo/Say" through grpc::GenericStub with grpc::ByteBuffer
// payloads, so no protoc is needed. Both modes drive one completion queue
// from the main thread, the way gRPC's own async benchmark client does:
// pingpong starts a call and waits on the queue for it; throughput keeps
// `--inflight` calls going over `--connections` channels, starting a new call
// as each one completes.
//
// Every call carries a deadline, as real calls do (and as meshlib's frames
// do), so its cost is part of what is measured.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/time.h"
#include "benchmarks/common/bench_stats.h"

ABSL_FLAG(std::string, address, "127.0.0.1:7000", "Server as host:port.");
ABSL_FLAG(std::string, mode, "pingpong", "pingpong or throughput.");
ABSL_FLAG(int, payload, 64, "Payload bytes per request (and reply).");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "Measured time.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1),
          "Time run before measuring, to reach steady state.");
ABSL_FLAG(int, connections, 4,
          "Throughput mode: channels, each its own TCP connection.");
ABSL_FLAG(int, inflight, 32,
          "Throughput mode: calls outstanding in total, split evenly over "
          "the connections.");
ABSL_FLAG(bool, json, false, "Print one JSON line instead of prose.");
ABSL_FLAG(std::string, tls_ca, "",
          "Call over TLS, trusting this PEM CA (the server's certificate must name the "
          "address's host, e.g. IP:127.0.0.1).");
ABSL_FLAG(std::string, tls_cert, "", "With --tls_ca: this client's PEM certificate.");
ABSL_FLAG(std::string, tls_key, "", "With --tls_ca: the PEM key of --tls_cert.");

namespace meshlib::bench {
namespace {

constexpr char kMethod[] = "/Echo/Say";
// Generous: a call this late means a wedged server, and the run fails.
constexpr auto kCallTimeout = std::chrono::seconds(5);

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "grpc_echo_client: %s\n", message.c_str());
  std::exit(1);
}

grpc::ByteBuffer MakePayload(int size) {
  std::string bytes(static_cast<size_t>(size), '\0');
  for (int i = 0; i < size; ++i) bytes[i] = 'a' + i % 26;
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// A whole file, or "" for an empty path.
std::string ReadFileOrDie(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in) Die("cannot read " + path);
  return ss.str();
}

// Channels to one address share a TCP connection unless their arguments
// differ: gRPC pools subchannels by address and channel arguments. A local
// pool plus an argument naming the channel makes each one its own connection,
// which is what --connections promises.
std::shared_ptr<grpc::Channel> ConnectOrDie(const std::string& address,
                                            int channel_index) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("meshlib.bench.channel_index", channel_index);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!absl::GetFlag(FLAGS_tls_ca).empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFileOrDie(absl::GetFlag(FLAGS_tls_ca));
    ssl.pem_private_key = ReadFileOrDie(absl::GetFlag(FLAGS_tls_key));
    ssl.pem_cert_chain = ReadFileOrDie(absl::GetFlag(FLAGS_tls_cert));
    credentials = grpc::SslCredentials(ssl);
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(address, credentials, args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                 std::chrono::seconds(5))) {
    Die("cannot connect to " + address);
  }
  return channel;
}

// One unary call in flight. gRPC forbids reusing a ClientContext, so each
// call gets a fresh one.
struct PendingCall {
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
  int64_t start_ns = 0;
  int channel_index = 0;
};

std::unique_ptr<PendingCall> StartCall(grpc::GenericStub* stub,
                                       grpc::CompletionQueue* cq,
                                       const grpc::ByteBuffer& request,
                                       int channel_index) {
  auto call = std::make_unique<PendingCall>();
  call->channel_index = channel_index;
  call->start_ns = NowNs();
  call->context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  call->reader = stub->PrepareUnaryCall(&call->context, kMethod, request, cq);
  call->reader->StartCall();
  // The tag is the call itself; Finish is the only event it produces.
  call->reader->Finish(&call->response, &call->status, call.get());
  return call;
}

void CheckOrDie(const PendingCall& call, size_t payload_size) {
  if (!call.status.ok()) {
    Die("call failed: " + std::to_string(call.status.error_code()) + " " +
        call.status.error_message());
  }
  if (call.response.Length() != payload_size) {
    Die("reply of " + std::to_string(call.response.Length()) +
        " bytes, expected " + std::to_string(payload_size));
  }
}

void ShutdownAndDrain(grpc::CompletionQueue* cq) {
  cq->Shutdown();
  void* tag;
  bool ok;
  while (cq->Next(&tag, &ok)) {
  }
}

RunResult RunPingPong(const std::string& address, int payload_size,
                      absl::Duration warmup, absl::Duration duration) {
  std::shared_ptr<grpc::Channel> channel = ConnectOrDie(address, 0);
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  const grpc::ByteBuffer request = MakePayload(payload_size);

  RunResult result;
  result.system = absl::GetFlag(FLAGS_tls_ca).empty() ? "grpc" : "grpc_tls";
  result.mode = "pingpong";
  // Reserved so that growing the vector never lands in the measured tail.
  result.latencies_ns.reserve(
      static_cast<size_t>(absl::ToDoubleSeconds(duration) * 100000));

  const int64_t measure_start_ns = NowNs() + absl::ToInt64Nanoseconds(warmup);
  const int64_t end_ns = measure_start_ns + absl::ToInt64Nanoseconds(duration);
  int64_t first_measured_ns = -1;
  int64_t last_done_ns = 0;
  while (NowNs() < end_ns) {
    std::unique_ptr<PendingCall> call = StartCall(&stub, &cq, request, 0);
    void* tag;
    bool ok;
    if (!cq.Next(&tag, &ok) || tag != call.get() || !ok) {
      Die("completion queue returned an unexpected event");
    }
    const int64_t done_ns = NowNs();
    CheckOrDie(*call, static_cast<size_t>(payload_size));
    if (call->start_ns < measure_start_ns) continue;
    if (first_measured_ns < 0) first_measured_ns = call->start_ns;
    last_done_ns = done_ns;
    result.latencies_ns.push_back(done_ns - call->start_ns);
  }
  ShutdownAndDrain(&cq);
  result.calls = static_cast<int64_t>(result.latencies_ns.size());
  if (first_measured_ns >= 0) {
    result.elapsed = absl::Nanoseconds(last_done_ns - first_measured_ns);
  }
  return result;
}

RunResult RunThroughput(const std::string& address, int payload_size,
                        absl::Duration warmup, absl::Duration duration,
                        int connections, int inflight) {
  if (connections < 1) Die("--connections must be >= 1");
  if (inflight < connections) Die("--inflight must be >= --connections");
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (int i = 0; i < connections; ++i) {
    stubs.push_back(
        std::make_unique<grpc::GenericStub>(ConnectOrDie(address, i)));
  }
  grpc::CompletionQueue cq;
  const grpc::ByteBuffer request = MakePayload(payload_size);

  RunResult result;
  result.system = absl::GetFlag(FLAGS_tls_ca).empty() ? "grpc" : "grpc_tls";
  result.mode = "throughput";
  result.elapsed = duration;
  result.latencies_ns.reserve(
      static_cast<size_t>(absl::ToDoubleSeconds(duration) * 200000));

  const int64_t measure_start_ns = NowNs() + absl::ToInt64Nanoseconds(warmup);
  const int64_t end_ns = measure_start_ns + absl::ToInt64Nanoseconds(duration);

  // Owned here while in flight; the queue hands back raw pointers as tags.
  int outstanding = 0;
  for (int i = 0; i < inflight; ++i) {
    // Round-robin gives each channel inflight/connections calls, give or
    // take one when it does not divide evenly.
    const int channel_index = i % connections;
    StartCall(stubs[channel_index].get(), &cq, request, channel_index)
        .release();
    ++outstanding;
  }

  bool measuring_over = false;
  while (outstanding > 0) {
    void* tag;
    bool ok;
    if (!cq.Next(&tag, &ok)) Die("completion queue shut down early");
    std::unique_ptr<PendingCall> call(static_cast<PendingCall*>(tag));
    --outstanding;
    const int64_t done_ns = NowNs();
    CheckOrDie(*call, static_cast<size_t>(payload_size));
    if (done_ns >= end_ns) measuring_over = true;
    if (measuring_over) continue;  // let the rest drain; start nothing new
    if (done_ns >= measure_start_ns) {
      result.latencies_ns.push_back(done_ns - call->start_ns);
    }
    StartCall(stubs[call->channel_index].get(), &cq, request,
              call->channel_index)
        .release();
    ++outstanding;
  }
  ShutdownAndDrain(&cq);
  result.calls = static_cast<int64_t>(result.latencies_ns.size());
  return result;
}

int Main() {
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int payload = absl::GetFlag(FLAGS_payload);
  if (payload < 0) Die("--payload must be >= 0");
  RunResult result;
  if (mode == "pingpong") {
    result = RunPingPong(absl::GetFlag(FLAGS_address), payload,
                         absl::GetFlag(FLAGS_warmup),
                         absl::GetFlag(FLAGS_duration));
  } else if (mode == "throughput") {
    result = RunThroughput(
        absl::GetFlag(FLAGS_address), payload, absl::GetFlag(FLAGS_warmup),
        absl::GetFlag(FLAGS_duration), absl::GetFlag(FLAGS_connections),
        absl::GetFlag(FLAGS_inflight));
  } else {
    Die("--mode must be pingpong or throughput, not " + mode);
  }
  std::cout << FormatResult(result, absl::GetFlag(FLAGS_json)) << std::endl;
  return 0;
}

}  // namespace
}  // namespace meshlib::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return meshlib::bench::Main();
}
