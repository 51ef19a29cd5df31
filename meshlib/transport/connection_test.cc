#include "meshlib/transport/connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "meshlib/core/sync.h"

namespace meshlib::transport {
namespace {

// A TCP-like stream over one end of a socketpair that counts write calls.
class CountingStream final : public ByteStream {
 public:
  explicit CountingStream(int fd) : inner_(fd, "socketpair") {}
  int fd() const override { return inner_.fd(); }
  IoResult Read(char* buf, size_t len) override { return inner_.Read(buf, len); }
  IoResult Write(const iovec* iov, int n) override {
    writes_.fetch_add(1);
    return inner_.Write(iov, n);
  }
  void Close() override { inner_.Close(); }
  const std::string& peer() const override { return inner_.peer(); }
  int writes() const { return writes_.load(); }

 private:
  TcpStream inner_;
  std::atomic<int> writes_{0};
};

class PingCounter final : public FramedConnection {
 public:
  using FramedConnection::FramedConnection;
  std::atomic<int> pings{0};
  std::atomic<int> acks{0};
  std::atomic<uint64_t> last_ack{0};
  core::Notification closed;
  absl::Status reason;

 protected:
  void OnFrame(const FrameView& f) override {
    if (f.header.type != static_cast<uint8_t>(FrameType::kPing)) return;
    if (f.header.flags & kFlagPingAck) {
      uint64_t v = 0;
      for (char c : f.body) v = (v << 8) | static_cast<uint8_t>(c);
      last_ack.store(v);
      acks.fetch_add(1);
    } else {
      pings.fetch_add(1);
    }
  }
  void OnClosed(const absl::Status& r) override {
    reason = r;
    closed.Notify();
  }
};

struct Pair {
  int a, b;
  Pair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    a = fds[0];
    b = fds[1];
  }
};

TEST(FramedConnectionTest, FramesSentInOneIterationLeaveInOneWrite) {
  auto loop = *runtime::EventLoop::Create("test");
  Pair p;
  auto stream = std::make_unique<CountingStream>(p.a);
  CountingStream* counting = stream.get();
  auto sender = std::make_shared<PingCounter>(loop.get(), std::move(stream), ConnectionOptions{});
  auto receiver = std::make_shared<PingCounter>(
      loop.get(), std::make_unique<TcpStream>(p.b, "peer"), ConnectionOptions{});
  sender->Start();
  receiver->Start();
  core::Notification sent;
  loop->Post([&] {
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(sender->Send([&](std::string* out) { AppendPing(out, false, i); }).ok());
    }
    sent.Notify();
  });
  ASSERT_TRUE(sent.WaitForNotificationWithTimeout(absl::Seconds(5)));
  absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (receiver->pings.load() < 100 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(receiver->pings.load(), 100);
  // 100 small frames from one reactor iteration: one syscall, not 100.
  EXPECT_EQ(counting->writes(), 1);
  sender->Close(absl::CancelledError("test over"));
  receiver->Close(absl::CancelledError("test over"));
  ASSERT_TRUE(sender->closed.WaitForNotificationWithTimeout(absl::Seconds(5)));
  ASSERT_TRUE(receiver->closed.WaitForNotificationWithTimeout(absl::Seconds(5)));
}

TEST(FramedConnectionTest, PingIsAnsweredWithTheSameBytes) {
  auto loop = *runtime::EventLoop::Create("test");
  Pair p;
  auto a = std::make_shared<PingCounter>(loop.get(), std::make_unique<TcpStream>(p.a, "a"),
                                         ConnectionOptions{});
  auto b = std::make_shared<PingCounter>(loop.get(), std::make_unique<TcpStream>(p.b, "b"),
                                         ConnectionOptions{});
  a->Start();
  b->Start();
  ASSERT_TRUE(a->Send([](std::string* out) { AppendPing(out, false, 0x0123456789abcdefULL); })
                  .ok());
  absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (a->acks.load() == 0 && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(b->pings.load(), 1);
  EXPECT_EQ(a->acks.load(), 1);
  EXPECT_EQ(a->last_ack.load(), 0x0123456789abcdefULL);
  EXPECT_EQ(b->acks.load(), 0);  // an ack is not answered again
  a->Close(absl::CancelledError("test over"));
  b->Close(absl::CancelledError("test over"));
  ASSERT_TRUE(a->closed.WaitForNotificationWithTimeout(absl::Seconds(5)));
  ASSERT_TRUE(b->closed.WaitForNotificationWithTimeout(absl::Seconds(5)));
}

TEST(FramedConnectionTest, PeerThatStopsReadingHitsTheWriteQueueLimit) {
  auto loop = *runtime::EventLoop::Create("test");
  Pair p;
  ConnectionOptions opts;
  opts.max_pending_write_bytes = 256 * 1024;
  auto sender = std::make_shared<PingCounter>(
      loop.get(), std::make_unique<TcpStream>(p.a, "slow-reader"), opts);
  sender->Start();
  // Nobody reads p.b: the socket buffer fills, then the queue, then Send fails.
  std::string big(64 * 1024, 'x');
  absl::Status last;
  for (int i = 0; i < 1000 && last.ok(); ++i) {
    last = sender->Send([&](std::string* out) {
      AppendResponse(out, 1, 0, absl::StatusCode::kOk, "", {}, big);
    });
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(last.message().find("max_pending_write_bytes"), absl::string_view::npos) << last;
  sender->Close(absl::CancelledError("test over"));
  ASSERT_TRUE(sender->closed.WaitForNotificationWithTimeout(absl::Seconds(5)));
  close(p.b);
}

TEST(FramedConnectionTest, SendAfterCloseFailsWithUnavailable) {
  auto loop = *runtime::EventLoop::Create("test");
  Pair p;
  auto c = std::make_shared<PingCounter>(loop.get(), std::make_unique<TcpStream>(p.a, "x"),
                                         ConnectionOptions{});
  c->Start();
  c->Close(absl::CancelledError("bye"));
  ASSERT_TRUE(c->closed.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(c->reason.code(), absl::StatusCode::kCancelled);
  absl::Status s = c->Send([](std::string* out) { AppendPing(out, false, 1); });
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  close(p.b);
}

}  // namespace
}  // namespace meshlib::transport
