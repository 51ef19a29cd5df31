// Test helpers for the "dns" discovery kind: a builder of DNS responses,
// and a scripted DNS server on a loopback UDP port that answers each query
// with whatever the test says (good answers, garbage, silence).
//
//   FakeDnsServer server;
//   server.SetHandler([](const DnsQuery& q) -> std::optional<std::string> {
//     return DnsMessageBuilder(q).Srv(q.name, 30, 10, 5, 7001, "10.0.0.1").Build();
//   });
//   ... {"servers": [server.address()]} ...
//   server.WaitForQueries(kDnsTypeSrv, 1, absl::Seconds(5));
//
// Threading: FakeDnsServer's methods are thread-safe; the handler runs on
// the server's own thread.
#ifndef MESHLIB_TESTING_DNS_TESTING_H_
#define MESHLIB_TESTING_DNS_TESTING_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "meshlib/core/sync.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib::testing {

// What a query asked.
struct DnsQuery {
  uint16_t id = 0;
  std::string name;
  uint16_t type = 0;
  bool tcp = false;  // came over TCP (after a truncated UDP answer)
};

// "a.b" -> "\1a\1b\0", without compression.
std::string EncodeDnsName(absl::string_view dotted);

// Builds a response that repeats the question. Records are written without
// name compression unless given as raw bytes.
class DnsMessageBuilder {
 public:
  // Flags default to QR + RD + RA, rcode NOERROR.
  DnsMessageBuilder(uint16_t id, absl::string_view qname, uint16_t qtype,
                    uint16_t flags = 0x8180);
  explicit DnsMessageBuilder(const DnsQuery& q) : DnsMessageBuilder(q.id, q.name, q.type) {}

  DnsMessageBuilder& Rcode(int rcode);
  DnsMessageBuilder& Srv(absl::string_view owner, uint32_t ttl, uint16_t priority,
                         uint16_t weight, uint16_t port, absl::string_view target);
  DnsMessageBuilder& A(absl::string_view owner, uint32_t ttl, absl::string_view ipv4);
  DnsMessageBuilder& Aaaa(absl::string_view owner, uint32_t ttl, absl::string_view ipv6);
  DnsMessageBuilder& Cname(absl::string_view owner, uint32_t ttl, absl::string_view target);
  // A record with the given owner (already encoded) and data bytes.
  DnsMessageBuilder& RawRecord(const std::string& encoded_owner, uint16_t type, uint32_t ttl,
                               const std::string& rdata);
  // Overrides the answer count written in the header.
  DnsMessageBuilder& AnswerCount(uint16_t n);

  std::string Build() const;
  // Offset of the question name in the built message (12).
  static constexpr size_t kQuestionOffset = 12;

 private:
  uint16_t id_;
  uint16_t flags_;
  std::string question_;  // encoded name + type + class
  std::string answers_;
  int count_ = 0;
  std::optional<uint16_t> count_override_;
};

class FakeDnsServer {
 public:
  // nullopt: stay silent.
  using Handler = std::function<std::optional<std::string>(const DnsQuery&)>;

  // Binds a free port on 127.0.0.1 for UDP and TCP and starts answering with `handler` (silence
  // until SetHandler when none).
  explicit FakeDnsServer(Handler handler = nullptr);
  ~FakeDnsServer();
  FakeDnsServer(const FakeDnsServer&) = delete;
  FakeDnsServer& operator=(const FakeDnsServer&) = delete;

  int port() const { return port_; }
  std::string address() const;  // "127.0.0.1:P"

  void SetHandler(Handler handler);
  // Queries received so far of `type`.
  int Queries(uint16_t type) const;
  // Times at which queries of `type` arrived.
  std::vector<absl::Time> QueryTimes(uint16_t type) const;
  bool WaitForQueries(uint16_t type, int n, absl::Duration timeout) const;

 private:
  void Serve();
  std::optional<std::string> Answer(const uint8_t* data, size_t size, bool tcp);

  int fd_ = -1;         // UDP
  int listen_fd_ = -1;  // TCP
  int port_ = 0;
  std::atomic<bool> stop_{false};
  mutable core::Mutex mu_;
  mutable std::condition_variable cv_;  // with mu_.native()
  Handler handler_ ABSL_GUARDED_BY(mu_);
  std::map<uint16_t, std::vector<absl::Time>> queries_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// A real dnsmasq (Debian's dnsmasq-base) serving only the records it is
// started with, on 127.0.0.1:port; everything under mesh.test is local, so
// unknown names there are NXDOMAIN. Start again (after Stop) to change the
// records, as an operator would.
inline constexpr char kDnsmasq[] = "/usr/sbin/dnsmasq";

class Dnsmasq {
 public:
  explicit Dnsmasq(int port) : port_(port) {}
  ~Dnsmasq() { Stop(); }

  // `records`: dnsmasq flags such as "--srv-host=..." and "--host-record=...";
  // `ttl` is that of SRV records and of host records without their own.
  // Returns once it answers; a failure to start fails the test.
  void Start(const std::vector<std::string>& records, int ttl = 1);
  // SIGTERM and reap; expects a clean exit.
  void Stop();
  std::string address() const;

 private:
  bool Answers() const;  // whether a query under mesh.test gets any answer

  const int port_;
  std::unique_ptr<testing::Subprocess> proc_;
};

}  // namespace meshlib::testing

#endif  // MESHLIB_TESTING_DNS_TESTING_H_
