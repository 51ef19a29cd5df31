// What a server and a client do with a misbehaving peer: each case must close
// (or skip) only what is bad, log why, and keep serving everyone else.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <nghttp2/nghttp2.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "meshlib/core/sync.h"
#include "gtest/gtest.h"
#include "meshlib/client/channel.h"
#include "meshlib/core/log.h"
#include "meshlib/grpc/grpc_channel.h"
#include "meshlib/server/server.h"
#include "meshlib/testing/subprocess.h"
#include "meshlib/testing/test_certs.h"
#include "meshlib/tls/credentials.h"
#include "meshlib/transport/frame.h"
#include "meshlib/transport/socket.h"

namespace meshlib {
namespace {

using transport::FrameType;

// Collects log lines so a test can check that a reason was logged.
class LogCapture {
 public:
  LogCapture() {
    meshlib::core::SetLogSink([this](meshlib::core::LogLevel, absl::string_view msg) {
      meshlib::core::MutexLock lock(&mu_);
      lines_.emplace_back(msg);
    });
  }
  ~LogCapture() { meshlib::core::SetLogSink(nullptr); }

  // Waits up to `timeout` for a line containing `needle`.
  bool WaitFor(absl::string_view needle, absl::Duration timeout = absl::Seconds(5)) {
    absl::Time give_up = absl::Now() + timeout;
    for (;;) {
      {
        meshlib::core::MutexLock lock(&mu_);
        for (const auto& l : lines_) {
          if (absl::StrContains(l, needle)) return true;
        }
      }
      if (absl::Now() >= give_up) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

  std::string All() {
    meshlib::core::MutexLock lock(&mu_);
    std::string s;
    for (const auto& l : lines_) absl::StrAppend(&s, l, "\n");
    return s;
  }

 private:
  meshlib::core::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

int RawConnect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

void SendAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

// Reads until EOF or `timeout`; true if the peer closed the connection.
bool WaitClosed(int fd, absl::Duration timeout, std::string* got = nullptr) {
  absl::Time give_up = absl::Now() + timeout;
  char buf[4096];
  while (absl::Now() < give_up) {
    pollfd p{fd, POLLIN, 0};
    int ms = static_cast<int>(absl::ToInt64Milliseconds(give_up - absl::Now())) + 1;
    if (poll(&p, 1, ms) <= 0) continue;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
    if (got) got->append(buf, static_cast<size_t>(n));
  }
  return false;
}

// Reads exactly one frame (header + body) within `timeout`. Bytes past that
// frame stay in the per-fd buffer for the next call.
meshlib::core::Mutex& LeftoverMu() {
  static auto* mu = new meshlib::core::Mutex();
  return *mu;
}
std::map<int, std::string>& Leftovers() {
  static auto* m = new std::map<int, std::string>();
  return *m;
}

bool ReadFrame(int fd, absl::Duration timeout, std::string* frame_bytes) {
  std::string buf;
  {
    meshlib::core::MutexLock lock(&LeftoverMu());
    buf = std::move(Leftovers()[fd]);
    Leftovers().erase(fd);
  }
  absl::Time give_up = absl::Now() + timeout;
  char tmp[4096];
  for (;;) {
    transport::FrameView f;
    size_t used = 0;
    if (!transport::DecodeFrame(buf, transport::FrameLimits{}, &f, &used).ok()) return false;
    if (used > 0) {
      *frame_bytes = buf.substr(0, used);
      meshlib::core::MutexLock lock(&LeftoverMu());
      if (used < buf.size()) Leftovers()[fd] = buf.substr(used);
      return true;
    }
    if (absl::Now() >= give_up) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
  }
}

// Closes a raw test socket and forgets what ReadFrame buffered for it.
void CloseFd(int fd) {
  {
    meshlib::core::MutexLock lock(&LeftoverMu());
    Leftovers().erase(fd);
  }
  close(fd);
}

transport::Response ParseResponse(const std::string& frame_bytes, uint32_t* stream_id) {
  transport::FrameView f;
  size_t used;
  EXPECT_TRUE(transport::DecodeFrame(frame_bytes, transport::FrameLimits{}, &f, &used).ok());
  EXPECT_EQ(f.header.type, static_cast<uint8_t>(FrameType::kResponse));
  *stream_id = f.header.stream_id;
  auto r = transport::ParseResponseBody(f.body, transport::FrameLimits{});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : transport::Response{};
}

std::string Request(uint32_t id, absl::string_view method, absl::string_view payload) {
  std::string out;
  transport::AppendRequest(&out, id, method, absl::Seconds(5), {}, payload);
  return out;
}

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerOptions opts;
    opts.io_threads = 2;
    opts.idle_timeout = absl::Milliseconds(300);
    opts.limits.max_frame_size = 1 << 20;
    server_ = std::make_unique<server::Server>(opts);
    ASSERT_TRUE(server_
                    ->RegisterAsync("Echo/Say",
                                    [](std::shared_ptr<server::ServerCall> c) {
                                      c->Finish(absl::OkStatus(), c->request());
                                    })
                    .ok());
    ASSERT_TRUE(server_
                    ->RegisterAsync("Slow/Wait",
                                    [this](std::shared_ptr<server::ServerCall> c) {
                                      c->OnCancel([this] { slow_cancelled_.Notify(); });
                                      slow_started_.Notify();
                                      // Answers only when cancelled.
                                      c->OnCancel([this, c] {
                                        slow_cancelled_.Notify();
                                        c->Finish(absl::CancelledError("gone"));
                                      });
                                    })
                    .ok());
    // A big answer (512 KiB) to anything: for clients that stop reading.
    ASSERT_TRUE(server_
                    ->RegisterAsync("Big/Get",
                                    [](std::shared_ptr<server::ServerCall> c) {
                                      c->Finish(absl::OkStatus(), std::string(512 << 10, 'b'));
                                    })
                    .ok());
    auto port = server_->Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = *port;
    client::ChannelOptions copts;
    auto ch = client::Channel::Create(server_->address(), copts);
    ASSERT_TRUE(ch.ok());
    good_ = *std::move(ch);
  }

  // The well-behaved client still gets answers.
  void ExpectGoodClientServed() {
    client::CallOptions o;
    o.timeout = absl::Seconds(5);
    client::CallResult r = good_->CallBlocking("Echo/Say", "still here", o);
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.payload, "still here");
  }

  LogCapture logs_;
  std::unique_ptr<server::Server> server_;
  std::unique_ptr<client::Channel> good_;
  int port_ = 0;
  meshlib::core::Notification slow_started_;
  meshlib::core::Notification slow_cancelled_;
};

TEST_F(BadInputTest, GarbageBytesCloseOnlyThatConnection) {
  ExpectGoodClientServed();
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  SendAll(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("unsupported protocol version 71")) << logs_.All();
  ExpectGoodClientServed();
}

TEST_F(BadInputTest, OversizedLengthPrefixIsRejectedFromTheHeader) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  // A header announcing 1 GiB; no body follows. The server must not wait
  // for (or allocate) the body.
  std::string h = Request(1, "Echo/Say", "");
  h.resize(transport::kFrameHeaderSize);
  h[8] = 0x40;
  h[9] = h[10] = h[11] = 0;
  SendAll(fd, h);
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("over the max_frame_size limit of 1048576")) << logs_.All();
  ExpectGoodClientServed();
}

TEST_F(BadInputTest, TruncatedFrameThenCloseIsHandled) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  std::string req = Request(1, "Echo/Say", std::string(100, 'x'));
  SendAll(fd, req.substr(0, req.size() / 2));
  shutdown(fd, SHUT_WR);
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("in the middle of a frame")) << logs_.All();
  ExpectGoodClientServed();
}

TEST_F(BadInputTest, TruncatedFrameThenSilenceIsClosedByIdleTimeout) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  std::string req = Request(1, "Echo/Say", std::string(100, 'x'));
  SendAll(fd, req.substr(0, 20));
  ExpectGoodClientServed();  // while the half frame sits there
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("idle for")) << logs_.All();
}

TEST_F(BadInputTest, ClientThatNeverSendsIsClosedAfterIdleTimeout) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  absl::Time start = absl::Now();
  ExpectGoodClientServed();
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("no call in flight (idle_timeout 300ms)")) << logs_.All();
  ExpectGoodClientServed();
}

TEST_F(BadInputTest, UnknownFrameTypeIsSkippedAndTheConnectionKeepsWorking) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  std::string unknown = Request(7, "Echo/Say", "zzz");
  unknown[1] = 0x7e;  // a type this version does not know
  SendAll(fd, unknown + Request(9, "Echo/Say", "after"));
  std::string frame;
  ASSERT_TRUE(ReadFrame(fd, absl::Seconds(5), &frame));
  uint32_t id;
  transport::Response r = ParseResponse(frame, &id);
  EXPECT_EQ(id, 9u);
  EXPECT_EQ(r.payload, "after");
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("skipping frame of unknown type 126")) << logs_.All();
}

TEST_F(BadInputTest, UnknownVersionClosesTheConnection) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  std::string req = Request(1, "Echo/Say", "v2?");
  req[0] = 2;
  SendAll(fd, req);
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("unsupported protocol version 2")) << logs_.All();
  ExpectGoodClientServed();
}

TEST_F(BadInputTest, MalformedRequestBodyFailsOnlyThatCall) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  // A well-framed REQUEST whose method length runs past the body.
  std::string bad;
  transport::AppendCancel(&bad, 3);  // a header we then rewrite
  bad[1] = static_cast<char>(FrameType::kRequest);
  bad[11] = 2;
  bad.push_back(static_cast<char>(0x7f));  // method length 127
  bad.push_back('E');
  SendAll(fd, bad + Request(5, "Echo/Say", "ok"));
  std::string frame;
  uint32_t id;
  ASSERT_TRUE(ReadFrame(fd, absl::Seconds(5), &frame));
  transport::Response r = ParseResponse(frame, &id);
  EXPECT_EQ(id, 3u);
  EXPECT_EQ(r.code, absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.message, "method: length 127")) << r.message;
  ASSERT_TRUE(ReadFrame(fd, absl::Seconds(5), &frame)) << logs_.All();
  r = ParseResponse(frame, &id);
  EXPECT_EQ(id, 5u);
  EXPECT_EQ(r.payload, "ok");
  CloseFd(fd);
}

TEST_F(BadInputTest, DuplicateStreamIdClosesTheConnection) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  SendAll(fd, Request(11, "Slow/Wait", "") + Request(11, "Slow/Wait", ""));
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("reuses stream 11")) << logs_.All();
  // The first call was cancelled when its connection closed.
  EXPECT_TRUE(slow_cancelled_.WaitForNotificationWithTimeout(absl::Seconds(5)));
  ExpectGoodClientServed();
}

TEST_F(BadInputTest, PeerResetMidCallCancelsItsCalls) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  SendAll(fd, Request(1, "Slow/Wait", ""));
  ASSERT_TRUE(slow_started_.WaitForNotificationWithTimeout(absl::Seconds(5)));
  linger lg{1, 0};  // close with RST
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  CloseFd(fd);
  EXPECT_TRUE(slow_cancelled_.WaitForNotificationWithTimeout(absl::Seconds(5)));
  ExpectGoodClientServed();
  // The reset connection is gone from the server's books.
  absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (server_->connection_count() > 1 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(server_->connection_count(), 1u);
  EXPECT_EQ(server_->active_calls(), 0);
}

TEST_F(BadInputTest, ResponseSentToAServerClosesThatConnection) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  std::string resp;
  transport::AppendResponse(&resp, 1, 0, absl::StatusCode::kOk, "", {}, "x");
  SendAll(fd, resp);
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("RESPONSE frame sent to a server")) << logs_.All();
}

// --- A misbehaving server, seen from the client ---

// A one-connection fake server scripted by the test.
class FakePeer {
 public:
  FakePeer() {
    auto addr = transport::ParseHostPort("127.0.0.1:0");
    listen_fd_ = *transport::ListenTcp(*addr, 16);
    address_ = transport::LocalAddress(listen_fd_)->ToString();
  }
  ~FakePeer() {
    if (conn_fd_ >= 0) close(conn_fd_);
    close(listen_fd_);
  }
  const std::string& address() const { return address_; }

  // Accepts the client's connection and reads its first request frame.
  bool AcceptAndReadRequest(uint32_t* stream_id) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) return false;
    conn_fd_ = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn_fd_ < 0) return false;
    std::string frame;
    if (!ReadFrame(conn_fd_, absl::Seconds(5), &frame)) return false;
    transport::FrameView f;
    size_t used;
    if (!transport::DecodeFrame(frame, transport::FrameLimits{}, &f, &used).ok()) return false;
    *stream_id = f.header.stream_id;
    return true;
  }
  void Send(absl::string_view bytes) { SendAll(conn_fd_, bytes); }
  void Reset() {
    linger lg{1, 0};
    setsockopt(conn_fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(conn_fd_);
    conn_fd_ = -1;
  }

 private:
  int listen_fd_ = -1;
  int conn_fd_ = -1;
  std::string address_;
};

struct AsyncResult {
  meshlib::core::Notification done;
  client::CallResult result;
};

// --- gRPC clients (HTTP/2) on the same port ---

// What an HTTP/2 client sends: the preface, its SETTINGS (a window as large
// as HTTP/2 allows, so the server may send all it wants), and `n` requests
// for `path` with a small body, made with nghttp2's client session.
// Everything `session` has queued to send, as bytes.
void DrainSend(nghttp2_session* session, std::string* out) {
  const uint8_t* d = nullptr;
  for (ssize_t k; (k = nghttp2_session_mem_send(session, &d)) > 0;) {
    out->append(reinterpret_cast<const char*>(d), static_cast<size_t>(k));
  }
}

std::string H2ClientBytes(int n, const std::string& path) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session* session = nullptr;
  nghttp2_session_client_new(&session, cbs, nullptr);
  nghttp2_session_callbacks_del(cbs);
  const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (1u << 31) - 1}};
  nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, 1);
  nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, (1 << 30));
  static const std::string body("\0\0\0\0\2hi", 7);
  auto nv = [](const char* k, const std::string& v) {
    return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(k)),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), strlen(k),
                      v.size(), NGHTTP2_NV_FLAG_NONE};
  };
  const std::string post = "POST", http = "http", auth = "x", ct = "application/grpc";
  for (int i = 0; i < n; ++i) {
    const nghttp2_nv hdrs[] = {nv(":method", post), nv(":scheme", http), nv(":path", path),
                               nv(":authority", auth), nv("content-type", ct)};
    nghttp2_data_provider data;
    data.source.ptr = nullptr;
    data.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t len,
                            uint32_t* flags, nghttp2_data_source*, void*) -> ssize_t {
      std::memcpy(buf, body.data(), std::min(len, body.size()));
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      return static_cast<ssize_t>(std::min(len, body.size()));
    };
    nghttp2_submit_request(session, nullptr, hdrs, 5, &data, nullptr);
  }
  std::string out;
  DrainSend(session, &out);
  nghttp2_session_del(session);
  return out;
}

constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

class BadGrpcInputTest : public BadInputTest {
 protected:
  void SetUp() override {
    BadInputTest::SetUp();
    auto ch = grpc::GrpcChannel::Create(server_->address(), client::ChannelOptions{});
    ASSERT_TRUE(ch.ok());
    grpc_ = *std::move(ch);
  }
  // Both kinds of well-behaved client still get answers.
  void ExpectBothServed() {
    ExpectGoodClientServed();
    client::CallOptions o;
    o.timeout = absl::Seconds(5);
    client::CallResult r = grpc_->CallBlocking("Echo/Say", "grpc still here", o);
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.payload, "grpc still here");
  }
  std::unique_ptr<grpc::GrpcChannel> grpc_;
};

TEST_F(BadGrpcInputTest, GarbageAfterThePrefaceClosesOnlyThatConnection) {
  ExpectBothServed();
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  SendAll(fd, std::string(kPreface) + std::string(64, '\xff'));
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("HTTP/2 protocol error (PROTOCOL_ERROR)")) << logs_.All();
  ExpectBothServed();
}

TEST_F(BadGrpcInputTest, OversizedFrameClosesOnlyThatConnection) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  // SETTINGS, then a DATA frame header announcing 1 MiB on stream 1: over
  // the 16 KiB frame size HTTP/2 allows until the server raises it.
  std::string bytes = std::string(kPreface) + std::string("\0\0\0\4\0\0\0\0\0", 9);
  bytes += std::string("\x10\0\0\0\0\0\0\0\1", 9);
  SendAll(fd, bytes);
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("HTTP/2 protocol error (FRAME_SIZE_ERROR)")) << logs_.All();
  ExpectBothServed();
}

TEST_F(BadGrpcInputTest, OversizedMessageFailsOnlyThatCall) {
  client::CallOptions o;
  o.timeout = absl::Seconds(10);
  client::CallResult r = grpc_->CallBlocking("Echo/Say", std::string(2 << 20, 'x'), o);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kResourceExhausted) << r.status;
  EXPECT_NE(r.status.message().find("limit of 1048576"), std::string::npos) << r.status;
  ExpectBothServed();
}

TEST_F(BadGrpcInputTest, PrefaceThenSilenceIsClosedByIdleTimeout) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  SendAll(fd, std::string(kPreface).substr(0, 10));  // not even the whole preface
  ExpectBothServed();
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  int fd2 = RawConnect(port_);
  ASSERT_GE(fd2, 0);
  SendAll(fd2, std::string(kPreface) + std::string("\0\0\0\4\0\0\0\0\0", 9));
  EXPECT_TRUE(WaitClosed(fd2, absl::Seconds(5)));
  CloseFd(fd2);
  EXPECT_TRUE(logs_.WaitFor("gRPC connection from")) << logs_.All();
  EXPECT_TRUE(logs_.WaitFor("with no call in flight (idle_timeout 300ms)")) << logs_.All();
  ExpectBothServed();
}

// HEADERS then RST_STREAM, again and again (CVE-2023-44487's "rapid
// reset"): each stream costs the server work but the client nothing.
std::string RapidResetBytes(int n) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session* session = nullptr;
  nghttp2_session_client_new(&session, cbs, nullptr);
  nghttp2_session_callbacks_del(cbs);
  nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, nullptr, 0);
  static const char* const k[] = {":method", ":scheme", ":path", ":authority", "content-type"};
  static const char* const v[] = {"POST", "http", "/Echo/Say", "x", "application/grpc"};
  std::vector<nghttp2_nv> hdrs;
  for (int i = 0; i < 5; ++i) {
    hdrs.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(k[i])),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(v[i])), strlen(k[i]),
                    strlen(v[i]), NGHTTP2_NV_FLAG_NONE});
  }
  std::string out;
  for (int i = 0; i < n; ++i) {
    const int32_t id =
        nghttp2_submit_request(session, nullptr, hdrs.data(), hdrs.size(), nullptr, nullptr);
    DrainSend(session, &out);
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    DrainSend(session, &out);
  }
  nghttp2_session_del(session);
  return out;
}

TEST_F(BadGrpcInputTest, RapidResetFloodIsCutOff) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  SendAll(fd, RapidResetBytes(3000));
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(10)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("HTTP/2 protocol error (INTERNAL_ERROR) from")) << logs_.All();
  ExpectBothServed();
}

TEST_F(BadGrpcInputTest, ContinuationFloodIsCutOff) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  // SETTINGS, then HEADERS on stream 1 without END_HEADERS, then endless
  // CONTINUATION frames that never end the header block (CVE-2024-27316
  // and kin). Each carries one literal header (8 bytes).
  std::string bytes = std::string(kPreface) + std::string("\0\0\0\4\0\0\0\0\0", 9);
  const std::string literal("\x00\x01" "a" "\x04" "bbbb", 8);
  bytes += std::string("\0\0\x08\x01\x00\0\0\0\1", 9) + literal;
  for (int i = 0; i < 100; ++i) {
    bytes += std::string("\0\0\x08\x09\x00\0\0\0\1", 9) + literal;
  }
  SendAll(fd, bytes);
  EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
  CloseFd(fd);
  EXPECT_TRUE(logs_.WaitFor("Too many CONTINUATION frames")) << logs_.All();
  ExpectBothServed();
}

TEST_F(BadGrpcInputTest, APeerThatStopsReadingHurtsNoOneElse) {
  int fd = RawConnect(port_);
  ASSERT_GE(fd, 0);
  // 40 calls for 512 KiB each (20 MiB), with windows that allow all of it,
  // and then the client never reads.
  SendAll(fd, H2ClientBytes(40, "/Big/Get"));
  ASSERT_TRUE(testing::Eventually([&] { return server_->stats().calls >= 40; }));
  for (int i = 0; i < 20; ++i) ExpectBothServed();
  const size_t before = server_->connection_count();
  CloseFd(fd);
  // Its calls are done or dropped, and its connection goes.
  EXPECT_TRUE(testing::Eventually([&] { return server_->active_calls() == 0; }));
  EXPECT_TRUE(testing::Eventually([&] { return server_->connection_count() < before; }));
  ExpectBothServed();
}

TEST(MisbehavingServerTest, ReplyForUnknownStreamIsDroppedAndTheRealOneArrives) {
  FakePeer peer;
  auto ch = *client::Channel::Create(peer.address(), client::ChannelOptions{});
  AsyncResult res;
  client::CallOptions o;
  o.timeout = absl::Seconds(5);
  ch->Call("Echo/Say", "hi", o, [&](client::CallResult r) {
    res.result = std::move(r);
    res.done.Notify();
  });
  uint32_t id;
  ASSERT_TRUE(peer.AcceptAndReadRequest(&id));
  std::string bytes;
  transport::AppendResponse(&bytes, id + 1000, 0, absl::StatusCode::kOk, "", {}, "bogus");
  transport::AppendResponse(&bytes, id, 0, absl::StatusCode::kOk, "", {}, "real");
  peer.Send(bytes);
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  ASSERT_TRUE(res.result.status.ok()) << res.result.status;
  EXPECT_EQ(res.result.payload, "real");
}

TEST(MisbehavingServerTest, MalformedResponseBodyFailsThatCallWithInternal) {
  FakePeer peer;
  auto ch = *client::Channel::Create(peer.address(), client::ChannelOptions{});
  AsyncResult res;
  ch->Call("Echo/Say", "hi", {}, [&](client::CallResult r) {
    res.result = std::move(r);
    res.done.Notify();
  });
  uint32_t id;
  ASSERT_TRUE(peer.AcceptAndReadRequest(&id));
  std::string bytes;
  transport::AppendResponse(&bytes, id, 0, absl::StatusCode::kOk, "", {}, "");
  bytes[transport::kFrameHeaderSize] = 99;  // status code 99
  peer.Send(bytes);
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(res.result.status.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(res.result.status.message(), "status code: 99"))
      << res.result.status;
}

TEST(MisbehavingServerTest, GarbageFromServerFailsCallsInFlightWithUnavailable) {
  FakePeer peer;
  auto ch = *client::Channel::Create(peer.address(), client::ChannelOptions{});
  AsyncResult res;
  ch->Call("Echo/Say", "hi", {}, [&](client::CallResult r) {
    res.result = std::move(r);
    res.done.Notify();
  });
  uint32_t id;
  ASSERT_TRUE(peer.AcceptAndReadRequest(&id));
  peer.Send("\xff\xff garbage garbage");
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(res.result.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(res.result.status.message(), "unsupported protocol version 255"))
      << res.result.status;
  EXPECT_FALSE(res.result.not_processed);  // it may have been processed
}

TEST(MisbehavingServerTest, ServerResetMidCallFailsTheCallWithUnavailable) {
  FakePeer peer;
  auto ch = *client::Channel::Create(peer.address(), client::ChannelOptions{});
  AsyncResult res;
  ch->Call("Echo/Say", "hi", {}, [&](client::CallResult r) {
    res.result = std::move(r);
    res.done.Notify();
  });
  uint32_t id;
  ASSERT_TRUE(peer.AcceptAndReadRequest(&id));
  peer.Reset();
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(res.result.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(res.result.status.message(), peer.address()))
      << res.result.status;
}

// A TLS server fed garbage, a truncated ClientHello then a close, a
// truncated one then silence, and plaintext frames: each fails only that
// handshake (counted, logged with its reason), and a good TLS client is
// served throughout.
TEST(BadTlsInputTest, BadHandshakesCloseOnlyTheirConnection) {
  LogCapture logs;
  testing::TestCerts certs = testing::TestCerts::Make();
  ASSERT_TRUE(certs.ok()) << certs.status();
  ASSERT_TRUE(certs.Leaf("echo").ok());
  tls::TlsOptions st;
  st.cert_file = certs.Cert("echo");
  st.key_file = certs.Key("echo");
  st.handshake_timeout = absl::Milliseconds(300);
  st.reload_interval = absl::ZeroDuration();
  server::ServerOptions so;
  so.io_threads = 1;
  so.metrics = nullptr;
  so.tls = tls::CredentialsWatcher::Start(st, tls::Role::kServer).value();
  server::Server server(so);
  ASSERT_TRUE(server
                  .RegisterSync("Echo/Say",
                                [](server::ServerCall& call, std::string* out) {
                                  *out = call.request();
                                  return absl::OkStatus();
                                })
                  .ok());
  auto port = server.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  tls::TlsOptions ct;
  ct.ca_file = certs.ca();
  ct.reload_interval = absl::ZeroDuration();
  client::ChannelOptions co;
  co.tls = tls::CredentialsWatcher::Start(ct, tls::Role::kClient).value();
  auto good = client::Channel::Create(server.address(), co).value();
  auto call = [&] { return good->CallBlocking("Echo/Say", "still here").status; };
  ASSERT_TRUE(call().ok());

  std::string garbage(3000, '\0');
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>((i * 131 + 7) & 0xff);
  const std::string truncated_hello("\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03\x11\x22", 13);
  std::string plaintext_frame;
  transport::AppendPing(&plaintext_frame, false, 42);
  struct Case {
    const char* what;
    std::string bytes;
    bool close_after;
  };
  const Case cases[] = {{"garbage", garbage, true},
                        {"truncated ClientHello, then close", truncated_hello, true},
                        {"truncated ClientHello, then silence", truncated_hello, false},
                        {"a plaintext meshlib frame", plaintext_frame, false}};
  int64_t failures = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    int fd = RawConnect(*port);
    ASSERT_GE(fd, 0);
    SendAll(fd, c.bytes);
    if (c.close_after) shutdown(fd, SHUT_WR);
    // Closed by the server: at once, or at the handshake timeout.
    EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
    close(fd);
    ++failures;
    EXPECT_TRUE(testing::Eventually(
        [&] { return server.stats().tls_handshake_failures >= failures; }, absl::Seconds(5)));
    EXPECT_TRUE(call().ok());
  }
  EXPECT_TRUE(logs.WaitFor("does not speak TLS")) << logs.All();
  EXPECT_TRUE(logs.WaitFor("did not finish within 300ms")) << logs.All();
}

// A server shut down (and destroyed) while TLS handshakes are pending ends
// them at once: nothing waits for their timeout, nothing runs afterwards.
TEST(BadTlsInputTest, ShutdownWithHandshakesPendingEndsThem) {
  testing::TestCerts certs = testing::TestCerts::Make();
  ASSERT_TRUE(certs.ok()) << certs.status();
  ASSERT_TRUE(certs.Leaf("echo").ok());
  tls::TlsOptions st;
  st.cert_file = certs.Cert("echo");
  st.key_file = certs.Key("echo");
  st.handshake_timeout = absl::Seconds(30);
  st.reload_interval = absl::ZeroDuration();
  server::ServerOptions so;
  so.io_threads = 2;
  so.metrics = nullptr;
  so.tls = tls::CredentialsWatcher::Start(st, tls::Role::kServer).value();
  auto server = std::make_unique<server::Server>(so);
  auto port = server->Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) {
    int fd = RawConnect(*port);
    ASSERT_GE(fd, 0);
    if (i % 2 == 0) SendAll(fd, std::string("\x16\x03\x01\x00\xc8\x01", 6));  // half a hello
    fds.push_back(fd);
  }
  absl::SleepFor(absl::Milliseconds(100));  // accepted, handshakes waiting
  const absl::Time start = absl::Now();
  server->Shutdown(absl::Seconds(1));
  server.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  for (int fd : fds) {
    EXPECT_TRUE(WaitClosed(fd, absl::Seconds(5)));
    close(fd);
  }
}

}  // namespace
}  // namespace meshlib
