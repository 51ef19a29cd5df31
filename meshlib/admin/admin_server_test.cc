#include "meshlib/admin/admin_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "meshlib/admin/http_request.h"
#include "meshlib/admin/test_http.h"

namespace meshlib::admin {
namespace {

HttpRequestParser::State ParseAll(HttpRequestParser& p, const std::string& s) {
  return p.Feed(s);
}

TEST(HttpRequestParserTest, AcceptsAPlainGet) {
  HttpRequestParser p;
  ASSERT_EQ(ParseAll(p, "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"),
            HttpRequestParser::kDone);
  EXPECT_EQ(p.request().method, "GET");
  EXPECT_EQ(p.request().path, "/metrics");
  EXPECT_EQ(p.request().query, "x=1");
  ASSERT_EQ(p.request().headers.size(), 2u);
  EXPECT_EQ(p.request().headers[0].first, "host");
}

TEST(HttpRequestParserTest, ByteByByteIsTheSame) {
  HttpRequestParser p;
  std::string req = "HEAD / HTTP/1.0\r\nUser-Agent: x\r\n\r\n";
  HttpRequestParser::State s = HttpRequestParser::kNeedMore;
  for (char c : req) s = p.Feed(std::string(1, c));
  ASSERT_EQ(s, HttpRequestParser::kDone);
  EXPECT_EQ(p.request().method, "HEAD");
}

TEST(HttpRequestParserTest, RefusesWhatItDoesNotServe) {
  struct Case {
    std::string input;
    int status;
  };
  const std::vector<Case> cases = {
      {"POST /x HTTP/1.1\r\n\r\n", 405},
      {"GET /x HTTP/2.0\r\n\r\n", 505},
      {"GET /x FTP/1.0\r\n\r\n", 400},
      {"GET x HTTP/1.1\r\n\r\n", 400},
      {"GET  /x HTTP/1.1\r\n\r\n", 400},
      {"GET /x HTTP/1.1\r\nbad header\r\n\r\n", 400},
      {"GET /x HTTP/1.1\r\n folded: x\r\n\r\n", 400},
      {"GET /x HTTP/1.1\nHost: a\r\n\r\n", 400},
      {"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 400},
      {"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {std::string("GET /\0 HTTP/1.1\r\n\r\n", 19), 400},
      {"GET /" + std::string(3000, 'a') + " HTTP/1.1\r\n\r\n", 414},
      {"GET / HTTP/1.1\r\nX: " + std::string(9000, 'a') + "\r\n\r\n", 431},
      {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 15), 400},  // TLS
  };
  for (const Case& c : cases) {
    HttpRequestParser p;
    EXPECT_EQ(ParseAll(p, c.input), HttpRequestParser::kError) << c.input.substr(0, 40);
    EXPECT_EQ(p.error_status(), c.status) << c.input.substr(0, 40) << ": " << p.error();
    EXPECT_FALSE(p.error().empty());
    EXPECT_EQ(p.Feed("more"), HttpRequestParser::kError);  // sticks
  }
  // Too many headers.
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 70; ++i) absl::StrAppend(&many, "H", i, ": v\r\n");
  HttpRequestParser p;
  EXPECT_EQ(ParseAll(p, many + "\r\n"), HttpRequestParser::kError);
  EXPECT_EQ(p.error_status(), 431);
  // A head that never ends is refused once past the limit.
  HttpRequestParser endless;
  HttpRequestParser::State s = HttpRequestParser::kNeedMore;
  for (int i = 0; i < 100 && s == HttpRequestParser::kNeedMore; ++i) {
    s = endless.Feed(std::string(100, 'a'));
  }
  EXPECT_EQ(s, HttpRequestParser::kError);
}

using testing::Connect;
using testing::Exchange;

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AdminServer::Handlers h;
    h["/hello"] = [](const HttpRequest& r) {
      return HttpResponse{200, "text/plain", absl::StrCat("hello ", r.query)};
    };
    h["/boom"] = [](const HttpRequest&) -> HttpResponse { throw std::runtime_error("x"); };
    AdminOptions o;
    o.idle_timeout = absl::Seconds(60);  // a silent client is never what unblocks the others
    o.max_connections = 4;
    auto s = AdminServer::Start(o, std::move(h));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
  }
  std::unique_ptr<AdminServer> server_;
};

TEST_F(AdminServerTest, ServesPagesAndRefusesBadRequests) {
  EXPECT_TRUE(absl::StartsWith(server_->address(), "127.0.0.1:"));
  std::string ok = Exchange(server_->port(), "GET /hello?you HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(ok, "HTTP/1.1 200 OK\r\n")) << ok;
  EXPECT_TRUE(absl::StrContains(ok, "Content-Length: 9\r\n"));
  EXPECT_TRUE(absl::EndsWith(ok, "\r\n\r\nhello you"));
  std::string head = Exchange(server_->port(), "HEAD /hello HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(absl::EndsWith(head, "\r\n\r\n")) << head;
  EXPECT_TRUE(absl::StartsWith(Exchange(server_->port(), "GET /nope HTTP/1.1\r\n\r\n"),
                               "HTTP/1.1 404 "));
  EXPECT_TRUE(absl::StartsWith(Exchange(server_->port(), "DELETE /hello HTTP/1.1\r\n\r\n"),
                               "HTTP/1.1 405 "));
  EXPECT_TRUE(absl::StartsWith(Exchange(server_->port(), "garbage\r\n\r\n"), "HTTP/1.1 400 "));
  EXPECT_TRUE(absl::StartsWith(Exchange(server_->port(), "GET /boom HTTP/1.1\r\n\r\n"),
                               "HTTP/1.1 500 "));
  EXPECT_GE(server_->bad_requests(), 2);
}

TEST_F(AdminServerTest, SilentAndSlowClientsDoNotBlockOthers) {
  int silent = Connect(server_->port());
  int slow = Connect(server_->port());
  send(slow, "GET /hel", 8, MSG_NOSIGNAL);  // and nothing more for now
  // Served while the other two hold their connections open.
  std::string ok = Exchange(server_->port(), "GET /hello HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(ok, "HTTP/1.1 200 OK\r\n")) << ok;
  send(slow, "lo HTTP/1.1\r\n\r\n", 15, MSG_NOSIGNAL);
  char buf[256];
  ssize_t n = recv(slow, buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  EXPECT_TRUE(absl::StartsWith(std::string(buf, n), "HTTP/1.1 200 OK"));
  close(silent);
  close(slow);
}

TEST_F(AdminServerTest, RefusesConnectionsPastTheLimit) {
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) held.push_back(Connect(server_->port()));
  // Let the server accept those four before the fifth arrives.
  std::string ok;
  for (int i = 0; i < 50; ++i) {
    ok = Exchange(server_->port(), "GET /hello HTTP/1.1\r\n\r\n");
    if (absl::StartsWith(ok, "HTTP/1.1 503 ")) break;
    usleep(20000);
  }
  EXPECT_TRUE(absl::StartsWith(ok, "HTTP/1.1 503 ")) << ok;
  for (int fd : held) close(fd);
  // Room again once they are gone.
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {
    served = absl::StartsWith(Exchange(server_->port(), "GET /hello HTTP/1.1\r\n\r\n"),
                              "HTTP/1.1 200 ");
    if (!served) usleep(20000);
  }
  EXPECT_TRUE(served);
}

TEST(AdminServerStartTest, BadAddresses) {
  for (const char* a : {"nonsense", "127.0.0.1:99999", "localhost:0", ":0"}) {
    AdminOptions o;
    o.address = a;
    auto s = AdminServer::Start(o, {});
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << a;
  }
}

}  // namespace
}  // namespace meshlib::admin
