// gRPC C++ echo server for the end-to-end benchmark (benchmarks/run_e2e.sh):
// the "what an established RPC stack costs" rows next to meshlib.
//
//   grpc_echo_server --port=0 --threads=1
//   listening on 127.0.0.1:41235
//
// Serves the unary method "/Echo/Say", replying with the request bytes. It
// uses the generic API (grpc::AsyncGenericService, grpc::ByteBuffer) so that
// no protoc or generated code is needed; on the wire it is ordinary gRPC.
//
// It uses the async completion-queue API, as gRPC's own benchmark server
// does (test/cpp/qps/server_async.cc): each of `--threads` threads drives one
// completion queue and runs the handlers inline, with no hop to a thread
// pool. SIGTERM or SIGINT shuts the server down and the process exits 0.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"

ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on.");
ABSL_FLAG(int, port, 0, "TCP port; 0 picks a free one (printed on stdout).");
ABSL_FLAG(int, threads, 1, "Completion queues, each with its own thread.");
ABSL_FLAG(std::string, tls_cert, "", "Serve TLS with this PEM certificate (and --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "The PEM key of --tls_cert.");
ABSL_FLAG(std::string, tls_ca, "", "With --tls_cert: require client certificates from this CA.");

namespace {
// A whole file, or "" for an empty path; exits when it cannot be read.
std::string ReadFileOrDie(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in) {
    std::fprintf(stderr, "grpc_echo_server: cannot read %s\n", path.c_str());
    std::exit(2);
  }
  return ss.str();
}
}  // namespace

namespace meshlib::bench {
namespace {

constexpr char kMethod[] = "/Echo/Say";
// Calls each queue is ready to accept at once. One would do, but then a burst
// of new calls waits for the handler loop to re-arm between each of them.
constexpr int kPendingCallsPerQueue = 16;

class EchoCall;

// One completion queue and the thread that drives it.
class ServingQueue {
 public:
  ServingQueue(grpc::AsyncGenericService* service,
               std::unique_ptr<grpc::ServerCompletionQueue> cq)
      : service_(service), cq_(std::move(cq)) {}

  void Start() { thread_ = std::thread([this] { Run(); }); }

  // Call after grpc::Server::Shutdown has returned.
  void ShutdownAndJoin() {
    {
      absl::MutexLock lock(&mu_);
      shutdown_ = true;
      cq_->Shutdown();
    }
    thread_.join();
  }

  // Arms the server to accept one more call on this queue.
  void Accept();

 private:
  void Run();

  grpc::AsyncGenericService* const service_;
  const std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
  // Posting to a queue that is shut down crashes gRPC, so re-arming and
  // shutting down must not interleave.
  absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

// One call, from accept to finish. Every completion-queue event for the call
// carries `this` as its tag and advances the state by one step; the object
// deletes itself at the end.
class EchoCall {
 public:
  explicit EchoCall(ServingQueue* queue) : queue_(queue), stream_(&context_) {}

  grpc::GenericServerContext* context() { return &context_; }
  grpc::GenericServerAsyncReaderWriter* stream() { return &stream_; }

  void Proceed(bool ok) {
    switch (state_) {
      case State::kAccepting:
        // Not ok: the server is shutting down and the call never existed.
        if (!ok) return delete this;
        // Keep the number of armed accepts constant.
        queue_->Accept();
        if (context_.method() != kMethod) {
          state_ = State::kFinishing;
          stream_.Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                      "only " + std::string(kMethod)),
                         this);
          return;
        }
        state_ = State::kReading;
        stream_.Read(&buffer_, this);
        return;
      case State::kReading:
        state_ = State::kFinishing;
        if (!ok) {
          // The client half-closed without a request message.
          stream_.Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                      "no request message"),
                         this);
          return;
        }
        // A generic handler sees a bidi stream; writing the one reply and
        // the status together makes it a unary call on the wire.
        stream_.WriteAndFinish(buffer_, grpc::WriteOptions(),
                               grpc::Status::OK, this);
        return;
      case State::kFinishing:
        return delete this;
    }
  }

 private:
  enum class State { kAccepting, kReading, kFinishing };

  ServingQueue* const queue_;
  grpc::GenericServerContext context_;
  grpc::GenericServerAsyncReaderWriter stream_;
  grpc::ByteBuffer buffer_;
  State state_ = State::kAccepting;
};

void ServingQueue::Accept() {
  absl::MutexLock lock(&mu_);
  if (shutdown_) return;
  auto* call = new EchoCall(this);
  service_->RequestCall(call->context(), call->stream(), cq_.get(), cq_.get(),
                        call);
}

void ServingQueue::Run() {
  for (int i = 0; i < kPendingCallsPerQueue; ++i) Accept();
  void* tag;
  bool ok;
  // Next returns false only once the queue is shut down and drained.
  while (cq_->Next(&tag, &ok)) static_cast<EchoCall*>(tag)->Proceed(ok);
}

int Main() {
  const int threads = absl::GetFlag(FLAGS_threads);
  if (threads < 1) {
    std::fprintf(stderr, "grpc_echo_server: --threads must be >= 1\n");
    return 1;
  }

  // Block the stop signals before gRPC starts its own threads, so that they
  // inherit the mask and sigwait below is the only taker.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  grpc::AsyncGenericService service;
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string host = absl::GetFlag(FLAGS_host);
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!absl::GetFlag(FLAGS_tls_cert).empty()) {
    // TLS (gRPC's own, on OpenSSL) with a client certificate required, as
    // mutual TLS in a mesh.
    grpc::SslServerCredentialsOptions ssl(
        absl::GetFlag(FLAGS_tls_ca).empty()
            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = ReadFileOrDie(absl::GetFlag(FLAGS_tls_ca));
    ssl.pem_key_cert_pairs.push_back({ReadFileOrDie(absl::GetFlag(FLAGS_tls_key)),
                                      ReadFileOrDie(absl::GetFlag(FLAGS_tls_cert))});
    credentials = grpc::SslServerCredentials(ssl);
  }
  builder.AddListeningPort(host + ":" + std::to_string(absl::GetFlag(FLAGS_port)), credentials,
                           &port);
  builder.RegisterAsyncGenericService(&service);
  std::vector<std::unique_ptr<ServingQueue>> queues;
  for (int i = 0; i < threads; ++i) {
    queues.push_back(
        std::make_unique<ServingQueue>(&service, builder.AddCompletionQueue()));
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "grpc_echo_server: cannot listen on %s:%d\n",
                 host.c_str(), absl::GetFlag(FLAGS_port));
    return 1;
  }

  for (auto& queue : queues) queue->Start();
  std::printf("listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);

  // Calls still running after the deadline are cancelled; their tags come
  // back not-ok and the handlers delete themselves while the queues drain.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  for (auto& queue : queues) queue->ShutdownAndJoin();
  return 0;
}

}  // namespace
}  // namespace meshlib::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return meshlib::bench::Main();
}
