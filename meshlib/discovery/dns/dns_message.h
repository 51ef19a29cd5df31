// Reading DNS answers (RFC 1035) as they come off the network, for the "dns"
// discovery kind.
//
// c-ares 1.18's ares_parse_srv_reply drops the TTLs, and re-resolving on the
// records' TTLs is the point of DNS discovery, so the answer section is walked
// here. Every read is bounds-checked; compressed names may only point
// backwards (which also rules out pointer loops); anything malformed is an
// error naming what and where, never a crash or an overread.
//
//   absl::StatusOr<SrvAnswer> srv = ParseSrvAnswer(absl::MakeConstSpan(abuf, alen));
//   if (!srv.ok()) return Report(srv.status());
//   for (const SrvRecord& r : srv->records) Resolve(r.target, r.port);
//   ScheduleRefresh(absl::Seconds(srv->ttl));
//
// Internal to the "dns" kind (not part of meshlib's API).
// Threading: stateless functions, thread-safe.
#ifndef MESHLIB_DISCOVERY_DNS_DNS_MESSAGE_H_
#define MESHLIB_DISCOVERY_DNS_DNS_MESSAGE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace meshlib::discovery_internal {

inline constexpr uint16_t kDnsTypeA = 1;
inline constexpr uint16_t kDnsTypeCname = 5;
inline constexpr uint16_t kDnsTypeAaaa = 28;
inline constexpr uint16_t kDnsTypeSrv = 33;
inline constexpr uint16_t kDnsClassIn = 1;

// Decodes the domain name at `offset` of `msg`, following compression
// pointers. Returns it dotted, without the final dot ("" for the root);
// '.', '\\', spaces and non-printable bytes inside a label come out as \DDD.
// `*end` receives the offset just past the name's own bytes at `offset` (a
// pointer counts two bytes, wherever it leads).
absl::StatusOr<std::string> ReadDnsName(absl::Span<const uint8_t> msg, size_t offset,
                                        size_t* end);

struct DnsResourceRecord {
  std::string name;  // owner, as ReadDnsName returns it
  uint16_t type = 0;
  uint16_t rclass = 0;
  // Seconds. A value with the top bit set reads as 0 (RFC 2181 section 8).
  uint32_t ttl = 0;
  size_t rdata_offset = 0;  // into the message
  size_t rdata_length = 0;
};

struct DnsMessage {
  uint16_t id = 0;
  uint16_t flags = 0;  // QR, opcode, AA, TC, RD, RA, Z, RCODE
  std::string question;
  uint16_t qtype = 0;
  uint16_t qclass = 0;
  std::vector<DnsResourceRecord> answers;
  int rcode() const { return flags & 0xF; }
};

// Reads the header, the single question (a message with any other number of
// questions is an error: meshlib only sends one) and the answer section. The
// authority and additional sections are not read.
absl::StatusOr<DnsMessage> ParseDnsMessage(absl::Span<const uint8_t> msg);

struct SrvRecord {
  uint16_t priority = 0;
  uint16_t weight = 0;
  uint16_t port = 0;
  std::string target;  // "" when the target is "." (service not available)
  uint32_t ttl = 0;
};

struct SrvAnswer {
  std::string question;  // the name the answer is for
  // The SRV records of the question's name (following CNAMEs), in answer
  // order. Empty when the answer holds none.
  std::vector<SrvRecord> records;
  // Minimum TTL of those records and of the CNAMEs leading to them; 0 when
  // there are no records.
  uint32_t ttl = 0;
};

// Parses a response to an SRV query. A response code other than NOERROR, a
// question other than SRV, or a malformed SRV record is an error.
absl::StatusOr<SrvAnswer> ParseSrvAnswer(absl::Span<const uint8_t> msg);

struct AddressAnswer {
  std::string question;  // the name the answer is for
  // "127.0.0.1", "::1" (inet_ntop form), in answer order.
  std::vector<std::string> addresses;
  uint32_t ttl = 0;  // as SrvAnswer::ttl
};

// Parses a response to an A (`type` kDnsTypeA) or AAAA (kDnsTypeAaaa) query.
absl::StatusOr<AddressAnswer> ParseAddressAnswer(absl::Span<const uint8_t> msg, uint16_t type);

}  // namespace meshlib::discovery_internal

#endif  // MESHLIB_DISCOVERY_DNS_DNS_MESSAGE_H_
