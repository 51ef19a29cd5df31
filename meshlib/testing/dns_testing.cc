#include "meshlib/testing/dns_testing.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "meshlib/discovery/dns/dns_message.h"

namespace meshlib::testing {
namespace {

void Put16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xFF));
}
void Put32(std::string* out, uint32_t v) {
  Put16(out, static_cast<uint16_t>(v >> 16));
  Put16(out, static_cast<uint16_t>(v & 0xFFFF));
}

}  // namespace

std::string EncodeDnsName(absl::string_view dotted) {
  std::string out;
  for (absl::string_view label : absl::StrSplit(dotted, '.', absl::SkipEmpty())) {
    out.push_back(static_cast<char>(label.size()));
    out.append(label.data(), label.size());
  }
  out.push_back('\0');
  return out;
}

DnsMessageBuilder::DnsMessageBuilder(uint16_t id, absl::string_view qname, uint16_t qtype,
                                     uint16_t flags)
    : id_(id), flags_(flags) {
  question_ = EncodeDnsName(qname);
  Put16(&question_, qtype);
  Put16(&question_, 1);
}

DnsMessageBuilder& DnsMessageBuilder::Rcode(int rcode) {
  flags_ = static_cast<uint16_t>((flags_ & ~0xF) | (rcode & 0xF));
  return *this;
}

DnsMessageBuilder& DnsMessageBuilder::RawRecord(const std::string& encoded_owner, uint16_t type,
                                                uint32_t ttl, const std::string& rdata) {
  answers_ += encoded_owner;
  Put16(&answers_, type);
  Put16(&answers_, 1);
  Put32(&answers_, ttl);
  Put16(&answers_, static_cast<uint16_t>(rdata.size()));
  answers_ += rdata;
  ++count_;
  return *this;
}

DnsMessageBuilder& DnsMessageBuilder::Srv(absl::string_view owner, uint32_t ttl,
                                          uint16_t priority, uint16_t weight, uint16_t port,
                                          absl::string_view target) {
  std::string rdata;
  Put16(&rdata, priority);
  Put16(&rdata, weight);
  Put16(&rdata, port);
  rdata += EncodeDnsName(target);
  return RawRecord(EncodeDnsName(owner), discovery_internal::kDnsTypeSrv, ttl, rdata);
}

DnsMessageBuilder& DnsMessageBuilder::A(absl::string_view owner, uint32_t ttl,
                                        absl::string_view ipv4) {
  in_addr a{};
  EXPECT_EQ(inet_pton(AF_INET, std::string(ipv4).c_str(), &a), 1) << ipv4;
  return RawRecord(EncodeDnsName(owner), discovery_internal::kDnsTypeA, ttl,
                   std::string(reinterpret_cast<const char*>(&a), 4));
}

DnsMessageBuilder& DnsMessageBuilder::Aaaa(absl::string_view owner, uint32_t ttl,
                                           absl::string_view ipv6) {
  in6_addr a{};
  EXPECT_EQ(inet_pton(AF_INET6, std::string(ipv6).c_str(), &a), 1) << ipv6;
  return RawRecord(EncodeDnsName(owner), discovery_internal::kDnsTypeAaaa, ttl,
                   std::string(reinterpret_cast<const char*>(&a), 16));
}

DnsMessageBuilder& DnsMessageBuilder::Cname(absl::string_view owner, uint32_t ttl,
                                            absl::string_view target) {
  return RawRecord(EncodeDnsName(owner), discovery_internal::kDnsTypeCname, ttl,
                   EncodeDnsName(target));
}

DnsMessageBuilder& DnsMessageBuilder::AnswerCount(uint16_t n) {
  count_override_ = n;
  return *this;
}

std::string DnsMessageBuilder::Build() const {
  std::string out;
  Put16(&out, id_);
  Put16(&out, flags_);
  Put16(&out, 1);
  Put16(&out, count_override_ ? *count_override_ : static_cast<uint16_t>(count_));
  Put16(&out, 0);
  Put16(&out, 0);
  return out + question_ + answers_;
}

FakeDnsServer::FakeDnsServer(Handler handler) : handler_(std::move(handler)) {
  // UDP on a free port, and TCP on the same number (for answers too big for
  // UDP): retry with another port when the TCP one is taken.
  for (int attempt = 0; attempt < 50 && listen_fd_ < 0; ++attempt) {
    if (fd_ >= 0) close(fd_);
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      continue;
    }
    port_ = ntohs(a.sin_port);
    int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (bind(t, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && listen(t, 16) == 0) {
      listen_fd_ = t;
    } else {
      close(t);
    }
  }
  EXPECT_GE(listen_fd_, 0) << "fake DNS server: no port free for both UDP and TCP";
  thread_ = std::thread([this] { Serve(); });
}

FakeDnsServer::~FakeDnsServer() {
  stop_.store(true);
  thread_.join();
  close(fd_);
  if (listen_fd_ >= 0) close(listen_fd_);
}

std::string FakeDnsServer::address() const { return absl::StrCat("127.0.0.1:", port_); }

void FakeDnsServer::SetHandler(Handler handler) {
  core::MutexLock lock(&mu_);
  handler_ = std::move(handler);
}

int FakeDnsServer::Queries(uint16_t type) const {
  core::MutexLock lock(&mu_);
  auto it = queries_.find(type);
  return it == queries_.end() ? 0 : static_cast<int>(it->second.size());
}

std::vector<absl::Time> FakeDnsServer::QueryTimes(uint16_t type) const {
  core::MutexLock lock(&mu_);
  auto it = queries_.find(type);
  return it == queries_.end() ? std::vector<absl::Time>() : it->second;
}

bool FakeDnsServer::WaitForQueries(uint16_t type, int n, absl::Duration timeout) const {
  std::unique_lock<std::mutex> lock(mu_.native());
  return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                      [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
                        auto it = queries_.find(type);
                        return it != queries_.end() && static_cast<int>(it->second.size()) >= n;
                      });
}

std::optional<std::string> FakeDnsServer::Answer(const uint8_t* data, size_t size, bool tcp) {
  auto m = discovery_internal::ParseDnsMessage(absl::MakeConstSpan(data, size));
  if (!m.ok()) {
    ADD_FAILURE() << "fake DNS server: unreadable query: " << m.status();
    return std::nullopt;
  }
  DnsQuery q{m->id, m->question, m->qtype, tcp};
  Handler handler;
  {
    core::MutexLock lock(&mu_);
    queries_[q.type].push_back(absl::Now());
    handler = handler_;
  }
  cv_.notify_all();
  return handler ? handler(q) : std::nullopt;
}

void FakeDnsServer::Serve() {
  struct Conn {
    int fd;
    std::string in;
  };
  std::vector<Conn> conns;
  while (!stop_.load()) {
    std::vector<pollfd> p = {{fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    for (const Conn& c : conns) p.push_back({c.fd, POLLIN, 0});
    if (poll(p.data(), p.size(), 20) <= 0) continue;
    if (p[0].revents != 0) {
      uint8_t buf[4096];
      sockaddr_in from{};
      socklen_t len = sizeof(from);
      ssize_t n = recvfrom(fd_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n > 0) {
        std::optional<std::string> reply = Answer(buf, static_cast<size_t>(n), /*tcp=*/false);
        if (reply) {
          sendto(fd_, reply->data(), reply->size(), 0, reinterpret_cast<sockaddr*>(&from), len);
        }
      }
    }
    if (p[1].revents != 0) {
      int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) conns.push_back(Conn{c, ""});
    }
    // TCP: messages framed by a 2-byte length (RFC 1035 section 4.2.2).
    for (size_t i = 2; i < p.size(); ++i) {
      if (p[i].revents == 0) continue;
      Conn& c = conns[i - 2];
      char buf[4096];
      ssize_t n = read(c.fd, buf, sizeof(buf));
      if (n <= 0) {
        close(c.fd);
        c.fd = -1;
        continue;
      }
      c.in.append(buf, static_cast<size_t>(n));
      while (c.in.size() >= 2) {
        size_t len = (static_cast<uint8_t>(c.in[0]) << 8) | static_cast<uint8_t>(c.in[1]);
        if (c.in.size() < 2 + len) break;
        std::optional<std::string> reply =
            Answer(reinterpret_cast<const uint8_t*>(c.in.data()) + 2, len, /*tcp=*/true);
        c.in.erase(0, 2 + len);
        if (!reply) continue;
        std::string framed;
        framed.push_back(static_cast<char>(reply->size() >> 8));
        framed.push_back(static_cast<char>(reply->size() & 0xFF));
        framed += *reply;
        EXPECT_EQ(write(c.fd, framed.data(), framed.size()),
                  static_cast<ssize_t>(framed.size()));
      }
    }
    conns.erase(std::remove_if(conns.begin(), conns.end(), [](const Conn& c) { return c.fd < 0; }),
                conns.end());
  }
  for (const Conn& c : conns) close(c.fd);
}

void Dnsmasq::Start(const std::vector<std::string>& records, int ttl) {
  std::vector<std::string> argv = {
      kDnsmasq,
      "--keep-in-foreground",
      absl::StrCat("--port=", port_),
      "--listen-address=127.0.0.1",
      "--bind-interfaces",
      "--no-resolv",
      "--no-hosts",
      "--conf-file=/dev/null",
      "--pid-file=",
      "--user=root",
      "--log-facility=-",
      "--local=/mesh.test/",
      absl::StrCat("--local-ttl=", ttl),
  };
  argv.insert(argv.end(), records.begin(), records.end());
  proc_ = std::make_unique<testing::Subprocess>(argv);
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (!Answers()) {
    if (!proc_->Running() || absl::Now() > give_up) {
      proc_->Signal(SIGKILL);
      proc_->Wait(absl::Seconds(5));
      ADD_FAILURE() << "dnsmasq did not start answering on 127.0.0.1:" << port_ << " (is "
                    << kDnsmasq << " installed? tools/setup.sh installs it): " << proc_->err();
      return;
    }
  }
}

void Dnsmasq::Stop() {
  if (proc_ == nullptr) return;
  proc_->Signal(SIGTERM);
  EXPECT_EQ(proc_->Wait(absl::Seconds(10)), 0) << proc_->err();
  proc_.reset();
}

std::string Dnsmasq::address() const { return absl::StrCat("127.0.0.1:", port_); }

bool Dnsmasq::Answers() const {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port_));
  std::string q =
      DnsMessageBuilder(1, "probe.mesh.test", discovery_internal::kDnsTypeA, 0x0100).Build();
  sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  pollfd p{fd, POLLIN, 0};
  char buf[512];
  bool ok = poll(&p, 1, 100) == 1 && recv(fd, buf, sizeof(buf), 0) > 0;
  close(fd);
  return ok;
}

}  // namespace meshlib::testing
