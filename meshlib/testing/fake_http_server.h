// A scripted HTTP/1.1 server for tests: every connection gets its own
// thread, reads one request and hands it to the test's handler, which
// writes whatever bytes it likes (valid responses, garbage, a response cut
// short, a stream that trickles in) and may wait in between.
//
//   FakeHttpServer server([](const FakeHttpServer::Request& req, FakeHttpServer::Conn& c) {
//     c.Write("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops");
//   });
//   std::string addr = server.address();  // "127.0.0.1:PORT"
//
// The connection closes when the handler returns.
//
// Threading: the handler runs on the connection's thread; the accessors are
// thread-safe.
#ifndef MESHLIB_TESTING_FAKE_HTTP_SERVER_H_
#define MESHLIB_TESTING_FAKE_HTTP_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/core/sync.h"

namespace meshlib::testing {

class FakeHttpServer {
 public:
  struct Request {
    std::string method;
    std::string target;
    std::string head;  // request line and headers as received
    std::string body;
  };

  class Conn {
   public:
    // Blocking write of all of `bytes`; false if the peer is gone.
    bool Write(absl::string_view bytes);
    // Waits until the client closes its side, the server stops, or
    // `timeout` passes; true if the client closed.
    bool WaitForPeerClose(absl::Duration timeout);

   private:
    friend class FakeHttpServer;
    Conn(int fd, FakeHttpServer* server) : fd_(fd), server_(server) {}
    int fd_;
    FakeHttpServer* server_;
  };

  using Handler = std::function<void(const Request&, Conn&)>;

  explicit FakeHttpServer(Handler handler);
  // Stops accepting, unblocks handlers waiting in WaitForPeerClose, joins.
  ~FakeHttpServer();

  std::string address() const { return address_; }
  int requests() const { return requests_.load(); }
  std::vector<Request> received() const;

 private:
  void AcceptLoop();
  void Serve(int fd);

  const Handler handler_;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::string address_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> requests_{0};
  std::thread acceptor_;

  mutable core::Mutex mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);
  std::vector<Request> received_ ABSL_GUARDED_BY(mu_);
};

}  // namespace meshlib::testing

#endif  // MESHLIB_TESTING_FAKE_HTTP_SERVER_H_
