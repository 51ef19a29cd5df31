#include "meshlib/etcd/http_client.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "meshlib/transport/socket.h"

namespace meshlib::etcd {

std::string SerializeHttpRequest(const HttpRequest& request, absl::string_view host) {
  std::string out = absl::StrCat(request.method, " ", request.target, " HTTP/1.1\r\nHost: ", host,
                                 "\r\n");
  if (!request.body.empty() && !request.content_type.empty()) {
    absl::StrAppend(&out, "Content-Type: ", request.content_type, "\r\n");
  }
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
    absl::StrAppend(&out, "Content-Length: ", request.body.size(), "\r\n");
  }
  for (const HttpHeader& h : request.headers) absl::StrAppend(&out, h.name, ": ", h.value, "\r\n");
  absl::StrAppend(&out, "Connection: close\r\n\r\n", request.body);
  return out;
}

class HttpCall::Impl final : public runtime::FdHandler, public std::enable_shared_from_this<Impl> {
 public:
  Impl(runtime::EventLoop* loop, std::string address, HttpRequest request,
       HttpCallOptions options, Handlers handlers)
      : loop_(loop),
        address_(std::move(address)),
        what_(absl::StrCat("HTTP ", request.method, " ", address_, request.target)),
        out_(SerializeHttpRequest(request, address_)),
        options_(options),
        parser_(options.limits),
        handlers_(std::move(handlers)) {}

  ~Impl() override { CleanUp(); }

  void Begin() {
    absl::StatusOr<transport::SocketAddress> addr = transport::ParseHostPort(address_);
    absl::StatusOr<int> fd =
        addr.ok() ? transport::StartConnect(*addr) : absl::StatusOr<int>(addr.status());
    if (!fd.ok()) {
      // Reported from the loop, never from inside Start.
      absl::Status st = absl::UnavailableError(absl::StrCat(what_, ": ", fd.status().message()));
      loop_->Post([weak = weak_from_this(), st] {
        if (auto self = weak.lock()) self->Finish(st);
      });
      return;
    }
    fd_ = *fd;
    // A stream can sit idle for minutes (a quiet watch): let TCP find out
    // when the peer vanished without a FIN (host down, network cut).
    int on = 1, idle = 30, interval = 10, count = 3;
    setsockopt(fd_, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    setsockopt(fd_, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd_, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
    setsockopt(fd_, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
    if (absl::Status st = loop_->Watch(fd_, EPOLLOUT, this); !st.ok()) {
      close(fd_);
      fd_ = -1;
      loop_->Post([weak = weak_from_this(), st] {
        if (auto self = weak.lock()) self->Finish(st);
      });
      return;
    }
    watched_ = true;
    connect_timer_ = After(options_.connect_timeout, [](Impl* self) {
      self->Finish(absl::DeadlineExceededError(
          absl::StrCat(self->what_, ": connect timed out after ",
                       absl::FormatDuration(self->options_.connect_timeout))));
    });
    head_timer_ = After(options_.head_timeout, [](Impl* self) {
      self->Finish(absl::DeadlineExceededError(
          absl::StrCat(self->what_, ": no response within ",
                       absl::FormatDuration(self->options_.head_timeout))));
    });
    total_timer_ = After(options_.total_timeout, [](Impl* self) {
      self->Finish(absl::DeadlineExceededError(
          absl::StrCat(self->what_, ": response not complete within ",
                       absl::FormatDuration(self->options_.total_timeout), " (",
                       self->parser_.body_bytes(), " body bytes so far)")));
    });
  }

  // Stops quietly: no handler runs after this.
  void Cancel() {
    done_ = true;
    CleanUp();
  }

  void OnFdEvents(uint32_t events) override {
    auto self = shared_from_this();  // a handler may drop the last outside reference
    if (done_) return;
    if (phase_ == Phase::kConnecting) {
      if (absl::Status st = transport::FinishConnect(fd_, address_); !st.ok()) {
        Finish(absl::UnavailableError(absl::StrCat(what_, ": ", st.message())));
        return;
      }
      loop_->Cancel(connect_timer_);
      phase_ = Phase::kSending;
    }
    if (phase_ == Phase::kSending) {
      Send();
      return;
    }
    Receive();
  }

 private:
  enum class Phase { kConnecting, kSending, kReceiving };

  runtime::TimerId After(absl::Duration d, void (*fn)(Impl*)) {
    if (d == absl::InfiniteDuration()) return {};
    return loop_->RunAfter(d, [weak = weak_from_this(), fn] {
      if (auto self = weak.lock(); self && !self->done_) fn(self.get());
    });
  }

  void Send() {
    while (sent_ < out_.size()) {
      ssize_t n = send(fd_, out_.data() + sent_, out_.size() - sent_, MSG_NOSIGNAL);
      if (n > 0) {
        sent_ += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // EPOLLOUT again
      Finish(absl::UnavailableError(absl::StrCat(what_, ": send: ", strerror(errno))));
      return;
    }
    std::string().swap(out_);
    phase_ = Phase::kReceiving;
    if (absl::Status st = loop_->Rewatch(fd_, EPOLLIN | EPOLLRDHUP); !st.ok()) Finish(st);
  }

  void Receive() {
    char buf[32 * 1024];
    // Bounded per event so that one fast stream cannot starve the loop;
    // level-triggered epoll brings us back for the rest.
    for (int round = 0; round < 8; ++round) {
      ssize_t n = read(fd_, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        Finish(absl::UnavailableError(absl::StrCat(what_, ": read: ", strerror(errno))));
        return;
      }
      absl::Status st;
      std::string body;
      if (n == 0) {
        st = parser_.OnEof();
      } else {
        st = parser_.Feed(absl::string_view(buf, static_cast<size_t>(n)), &body);
      }
      // What was decoded before an error is still delivered: a stream's
      // good messages count even when the bytes after them are broken.
      if (!head_reported_ && parser_.head_complete()) {
        head_reported_ = true;
        loop_->Cancel(head_timer_);
        if (handlers_.on_head) {
          handlers_.on_head(parser_);
          if (done_) return;
        }
      }
      if (!body.empty() && handlers_.on_body) {
        handlers_.on_body(body);
        if (done_) return;
      }
      if (!st.ok()) {
        Finish(Annotate(st));
        return;
      }
      if (parser_.complete()) {
        Finish(absl::OkStatus());
        return;
      }
      if (n == 0) return;  // unreachable: OnEof either completes or fails
    }
  }

  absl::Status Annotate(const absl::Status& st) const {
    // A response that breaks the protocol is the server's fault: another
    // server, or this one later, may do better.
    absl::StatusCode code = st.code() == absl::StatusCode::kInvalidArgument
                                ? absl::StatusCode::kUnavailable
                                : st.code();
    return absl::Status(code, absl::StrCat(what_, ": ", st.message()));
  }

  void CleanUp() {
    loop_->Cancel(connect_timer_);
    loop_->Cancel(head_timer_);
    loop_->Cancel(total_timer_);
    if (fd_ >= 0) {
      if (watched_) loop_->Unwatch(fd_);
      watched_ = false;
      close(fd_);
      fd_ = -1;
    }
  }

  // The last thing a caller does: `on_done` may destroy the HttpCall.
  void Finish(absl::Status st) {
    if (done_) return;
    done_ = true;
    CleanUp();
    auto cb = std::move(handlers_.on_done);
    if (cb) cb(std::move(st));
  }

  runtime::EventLoop* const loop_;
  const std::string address_;
  const std::string what_;  // "HTTP POST 127.0.0.1:2379/v3/kv/range", for messages
  std::string out_;
  size_t sent_ = 0;
  const HttpCallOptions options_;
  HttpResponseParser parser_;
  Handlers handlers_;
  int fd_ = -1;
  bool watched_ = false;
  Phase phase_ = Phase::kConnecting;
  bool done_ = false;
  bool head_reported_ = false;
  runtime::TimerId connect_timer_, head_timer_, total_timer_;
};

std::unique_ptr<HttpCall> HttpCall::Start(runtime::EventLoop* loop, std::string address,
                                          HttpRequest request, HttpCallOptions options,
                                          Handlers handlers) {
  auto impl = std::make_shared<Impl>(loop, std::move(address), std::move(request), options,
                                     std::move(handlers));
  impl->Begin();
  return std::unique_ptr<HttpCall>(new HttpCall(std::move(impl)));
}

HttpCall::~HttpCall() {
  if (impl_) impl_->Cancel();
}

std::unique_ptr<HttpCall> HttpFetch(runtime::EventLoop* loop, std::string address,
                                    HttpRequest request, HttpCallOptions options,
                                    absl::AnyInvocable<void(absl::StatusOr<HttpResponse>)> done) {
  auto response = std::make_shared<HttpResponse>();
  HttpCall::Handlers h;
  h.on_head = [response](const HttpResponseParser& p) {
    response->status = p.status_code();
    response->headers = p.headers();
  };
  h.on_body = [response](absl::string_view bytes) {
    response->body.append(bytes.data(), bytes.size());
  };
  h.on_done = [response, done = std::move(done)](absl::Status st) mutable {
    if (!st.ok()) {
      done(std::move(st));
    } else {
      done(std::move(*response));
    }
  };
  return HttpCall::Start(loop, std::move(address), std::move(request), options, std::move(h));
}

}  // namespace meshlib::etcd
