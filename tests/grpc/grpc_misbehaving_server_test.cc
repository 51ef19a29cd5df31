// meshlib's gRPC client against an HTTP/2 server that answers the way gRPC
// servers and proxies sometimes do: refused and reset streams, HTTP errors
// without grpc-status, GOAWAY below a stream it never processed, a body
// that is not gRPC, no trailers at all, and garbage. Each call must end
// with the status gRPC's spec gives it, not_processed only where the server
// provably did not start the call, and the channel must keep working.
//
// The server is nghttp2's server session over a blocking socket, one
// thread per connection; the request's path says how to misbehave.
#include <nghttp2/nghttp2.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/core/sync.h"
#include "meshlib/grpc/grpc_channel.h"

namespace meshlib {
namespace {

// A header naming string literals (static storage, as nghttp2 reads the
// bytes while it submits).
nghttp2_nv Nv(const char* k, const char* v) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(k)),
          reinterpret_cast<uint8_t*>(const_cast<char*>(v)), std::strlen(k), std::strlen(v),
          NGHTTP2_NV_FLAG_NONE};
}

class MisbehavingServer {
 public:
  MisbehavingServer() {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), len), 0);
    EXPECT_EQ(listen(listen_fd_, 16), 0);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }
  ~MisbehavingServer() {
    stop_.store(true);
    shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    for (auto& t : conns_) t.join();
    close(listen_fd_);
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  int connections() const { return accepted_.load(); }

 private:
  struct Conn {
    MisbehavingServer* server;
    nghttp2_session* session = nullptr;
    std::map<int32_t, std::string> paths;
    std::string body_of_html = "<html>not grpc</html>";
    std::string message = std::string("\0\0\0\0\2ok", 7);
    bool garbage = false;
  };

  void Accept() {
    for (;;) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      accepted_.fetch_add(1);
      conns_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t nlen,
                      const uint8_t* value, size_t vlen, uint8_t, void* user) {
    auto* c = static_cast<Conn*>(user);
    if (std::string(reinterpret_cast<const char*>(name), nlen) == ":path") {
      c->paths[f->hd.stream_id].assign(reinterpret_cast<const char*>(value), vlen);
    }
    return 0;
  }

  static ssize_t ReadString(nghttp2_session*, int32_t, uint8_t* buf, size_t len,
                            uint32_t* flags, nghttp2_data_source* src, void*) {
    auto* s = static_cast<std::string*>(src->ptr);
    const size_t n = std::min(len, s->size());
    std::memcpy(buf, s->data(), n);
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }

  // The message, then grpc-status 0 as trailers: a proper unary reply.
  static ssize_t ReadThenTrailers(nghttp2_session* session, int32_t id, uint8_t* buf,
                                  size_t len, uint32_t* flags, nghttp2_data_source* src,
                                  void* user) {
    const ssize_t n = ReadString(session, id, buf, len, flags, src, user);
    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    const nghttp2_nv t[] = {Nv("grpc-status", "0")};
    nghttp2_submit_trailer(session, id, t, 1);
    return n;
  }

  static int OnFrameRecv(nghttp2_session* session, const nghttp2_frame* f, void* user) {
    auto* c = static_cast<Conn*>(user);
    if (!((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
          (f->hd.flags & NGHTTP2_FLAG_END_STREAM))) {
      return 0;
    }
    const int32_t id = f->hd.stream_id;
    const std::string path = c->paths[id];
    if (path == "/Mis/Refuse") {
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
    } else if (path == "/Mis/Calm") {
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_ENHANCE_YOUR_CALM);
    } else if (path == "/Mis/Http503") {
      const nghttp2_nv h[] = {Nv(":status", "503")};
      nghttp2_submit_response(session, id, h, 1, nullptr);
    } else if (path == "/Mis/Http401") {
      const nghttp2_nv h[] = {Nv(":status", "401")};
      nghttp2_submit_response(session, id, h, 1, nullptr);
    } else if (path == "/Mis/Html") {
      const nghttp2_nv h[] = {Nv(":status", "200"), Nv("content-type", "text/html")};
      nghttp2_data_provider d;
      d.source.ptr = &c->body_of_html;
      d.read_callback = &ReadString;
      nghttp2_submit_response(session, id, h, 2, &d);
    } else if (path == "/Mis/NoStatus") {
      const nghttp2_nv h[] = {Nv(":status", "200"), Nv("content-type", "application/grpc")};
      nghttp2_data_provider d;
      d.source.ptr = &c->message;
      d.read_callback = &ReadString;
      nghttp2_submit_response(session, id, h, 2, &d);
    } else if (path == "/Mis/GoAway") {
      // This stream was never processed: GOAWAY's last id is below it.
      nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, id - 2, NGHTTP2_NO_ERROR, nullptr, 0);
    } else if (path == "/Mis/Garbage") {
      c->garbage = true;
    } else {  // "/Mis/Ok" and anything else: a proper answer
      const nghttp2_nv h[] = {Nv(":status", "200"), Nv("content-type", "application/grpc")};
      nghttp2_data_provider d;
      d.source.ptr = &c->message;
      d.read_callback = &ReadThenTrailers;
      nghttp2_submit_response(session, id, h, 2, &d);
    }
    return 0;
  }

  void Serve(int fd) {
    Conn c{this};
    nghttp2_session_callbacks* cbs = nullptr;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, &OnHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &OnFrameRecv);
    nghttp2_session_server_new(&c.session, cbs, &c);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(c.session, NGHTTP2_FLAG_NONE, nullptr, 0);
    char buf[16384];
    while (!stop_.load()) {
      const uint8_t* out = nullptr;
      for (ssize_t n; (n = nghttp2_session_mem_send(c.session, &out)) > 0;) {
        if (write(fd, out, static_cast<size_t>(n)) != n) break;
      }
      if (c.garbage) {
        const std::string junk(64, '\xee');
        (void)!write(fd, junk.data(), junk.size());
        c.garbage = false;
      }
      if (!nghttp2_session_want_read(c.session) && !nghttp2_session_want_write(c.session)) break;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      if (nghttp2_session_mem_recv(c.session, reinterpret_cast<uint8_t*>(buf),
                                   static_cast<size_t>(n)) < 0) {
        break;
      }
    }
    nghttp2_session_del(c.session);
    close(fd);
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::vector<std::thread> conns_;  // joined at the end; touched by the acceptor only
};

class GrpcMisbehavingServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    client::ChannelOptions o;
    o.reconnect_backoff.initial = absl::Milliseconds(10);
    auto ch = grpc::GrpcChannel::Create(server_.address(), o);
    ASSERT_TRUE(ch.ok()) << ch.status();
    ch_ = *std::move(ch);
  }
  client::CallResult Call(const std::string& method) {
    client::CallOptions o;
    o.timeout = absl::Seconds(5);
    return ch_->CallBlocking(method, "x", o);
  }
  void ExpectOk() {
    client::CallResult r = Call("Mis/Ok");
    EXPECT_TRUE(r.status.ok()) << r.status;
  }
  MisbehavingServer server_;
  std::unique_ptr<grpc::GrpcChannel> ch_;
};

TEST_F(GrpcMisbehavingServerTest, RefusedStreamIsUnavailableAndNotProcessed) {
  client::CallResult r = Call("Mis/Refuse");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_TRUE(r.not_processed);
  ExpectOk();
}

TEST_F(GrpcMisbehavingServerTest, EnhanceYourCalmIsResourceExhausted) {
  client::CallResult r = Call("Mis/Calm");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kResourceExhausted) << r.status;
  EXPECT_FALSE(r.not_processed);
  ExpectOk();
}

TEST_F(GrpcMisbehavingServerTest, HttpStatusesWithoutGrpcStatusMapAsTheSpecSays) {
  client::CallResult r = Call("Mis/Http503");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_NE(r.status.message().find("HTTP status 503"), std::string::npos) << r.status;
  r = Call("Mis/Http401");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnauthenticated) << r.status;
  r = Call("Mis/Html");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnknown) << r.status;
  EXPECT_NE(r.status.message().find("text/html"), std::string::npos) << r.status;
  r = Call("Mis/NoStatus");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInternal) << r.status;
  EXPECT_NE(r.status.message().find("without grpc-status"), std::string::npos) << r.status;
  ExpectOk();
}

TEST_F(GrpcMisbehavingServerTest, StreamAboveGoAwaysLastIdIsNotProcessedAndANewConnectionServes) {
  ExpectOk();  // stream 1
  client::CallResult r = Call("Mis/GoAway");  // stream 3; GOAWAY says 1
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_TRUE(r.not_processed) << r.status;
  ExpectOk();  // on a new connection
  EXPECT_GE(server_.connections(), 2);
}

TEST_F(GrpcMisbehavingServerTest, GarbageFromTheServerFailsTheCallAndTheChannelRecovers) {
  client::CallResult r = Call("Mis/Garbage");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_NE(r.status.message().find("HTTP/2"), std::string::npos) << r.status;
  ExpectOk();
  EXPECT_GE(server_.connections(), 2);
}

}  // namespace
}  // namespace meshlib
