// Fuzzes the server side of gRPC over HTTP/2 (grpc::ServerSession: nghttp2
// with meshlib's callbacks, request parsing, replies) with what a client
// sends after the connection preface. Requests are answered at once, in
// turn OK (echo), with an error, or refused, so that the reply paths
// (trailers, trailers-only, RST_STREAM) run against whatever the input does
// next; every byte the session wants to send is drained.
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "meshlib/grpc/server_session.h"

namespace {
constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using meshlib::grpc::ServerSession;
  ServerSession::Options o;
  o.max_message = 64 << 10;
  o.max_metadata_entries = 16;
  o.max_concurrent_streams = 100;
  ServerSession* session = nullptr;
  int n = 0;
  ServerSession::Callbacks cb;
  cb.on_request = [&](ServerSession::Request r) {
    switch (n++ % 3) {
      case 0:
        session->Reply(r.stream_id, absl::OkStatus(), r.metadata, r.payload, false);
        break;
      case 1:
        session->Reply(r.stream_id, absl::InternalError(r.method), {}, {}, false);
        break;
      default:
        session->Reply(r.stream_id, absl::ResourceExhaustedError("busy"), {}, {}, true);
    }
  };
  cb.on_stream_closed = [](int32_t) {};
  auto created = ServerSession::Create(o, std::move(cb));
  if (!created.ok()) return 0;
  session = created->get();
  std::string input(kPreface);
  input.append(reinterpret_cast<const char*>(data), size);
  // Fed in two parts, as reads would split it.
  const size_t half = input.size() / 2;
  for (const std::string& part : {input.substr(0, half), input.substr(half)}) {
    const ssize_t rv = nghttp2_session_mem_recv(
        session->session(), reinterpret_cast<const uint8_t*>(part.data()), part.size());
    session->DeliverReady();
    for (int i = 0; i < 1000; ++i) {
      const uint8_t* out = nullptr;
      const ssize_t sent = nghttp2_session_mem_send(session->session(), &out);
      if (sent <= 0) break;
    }
    session->DeliverReady();
    if (rv < 0 || session->Done()) break;
  }
  return 0;
}
