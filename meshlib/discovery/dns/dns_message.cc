#include "meshlib/discovery/dns/dns_message.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace meshlib::discovery_internal {
namespace {

constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxNameWireLength = 255;  // RFC 1035 section 2.3.4

absl::Status Malformed(absl::string_view what) { return absl::InvalidArgumentError(what); }

// Big-endian readers; the caller has checked that the bytes are there.
uint16_t Get16(absl::Span<const uint8_t> msg, size_t at) {
  return static_cast<uint16_t>((msg[at] << 8) | msg[at + 1]);
}
uint32_t Get32(absl::Span<const uint8_t> msg, size_t at) {
  return (static_cast<uint32_t>(msg[at]) << 24) | (static_cast<uint32_t>(msg[at + 1]) << 16) |
         (static_cast<uint32_t>(msg[at + 2]) << 8) | static_cast<uint32_t>(msg[at + 3]);
}
// True when [at, at + n) lies inside the message, without overflowing.
bool Has(absl::Span<const uint8_t> msg, size_t at, size_t n) {
  return at <= msg.size() && n <= msg.size() - at;
}

const char* TypeName(uint16_t type) {
  switch (type) {
    case kDnsTypeA:
      return "A";
    case kDnsTypeAaaa:
      return "AAAA";
    case kDnsTypeSrv:
      return "SRV";
    case kDnsTypeCname:
      return "CNAME";
    default:
      return "?";
  }
}

// The records of `type` owned by the question's name, reached through any
// CNAMEs in the answer section. `chain_ttl` gets the CNAMEs' minimum TTL.
absl::StatusOr<std::vector<const DnsResourceRecord*>> FollowAnswers(
    absl::Span<const uint8_t> msg, const DnsMessage& m, uint16_t type, uint32_t* chain_ttl) {
  *chain_ttl = std::numeric_limits<uint32_t>::max();
  std::string owner = m.question;
  // Each hop consumes a distinct CNAME, so more hops than answers is a loop.
  for (size_t hop = 0; hop <= m.answers.size(); ++hop) {
    std::vector<const DnsResourceRecord*> found;
    const DnsResourceRecord* cname = nullptr;
    for (const DnsResourceRecord& rr : m.answers) {
      if (rr.rclass != kDnsClassIn || !absl::EqualsIgnoreCase(rr.name, owner)) continue;
      if (rr.type == type) found.push_back(&rr);
      if (rr.type == kDnsTypeCname && cname == nullptr) cname = &rr;
    }
    if (!found.empty() || cname == nullptr) return found;
    size_t end = 0;
    auto target = ReadDnsName(msg, cname->rdata_offset, &end);
    if (!target.ok()) {
      return Malformed(absl::StrCat("CNAME of ", owner, ": ", target.status().message()));
    }
    if (end != cname->rdata_offset + cname->rdata_length) {
      return Malformed(absl::StrCat("CNAME of ", owner, ": target name does not end where its ",
                                    cname->rdata_length, "-byte record does"));
    }
    *chain_ttl = std::min(*chain_ttl, cname->ttl);
    owner = *std::move(target);
  }
  return Malformed(absl::StrCat("CNAME chain from ", m.question, " loops"));
}

absl::Status CheckResponse(const DnsMessage& m, uint16_t type) {
  if (m.qtype != type) {
    return Malformed(absl::StrCat("the question is for type ", m.qtype, ", not ", TypeName(type)));
  }
  if (m.rcode() != 0) return Malformed(absl::StrCat("response code ", m.rcode()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadDnsName(absl::Span<const uint8_t> msg, size_t offset,
                                        size_t* end) {
  std::string out;
  size_t pos = offset;
  // Start of the run of labels being read. A pointer must lead strictly
  // before it, so runs start ever earlier and decoding always terminates,
  // whatever the bytes. Real compressors only point back to names written
  // earlier, which this allows.
  size_t run_start = offset;
  bool jumped = false;
  size_t wire_length = 1;  // the final zero byte
  for (;;) {
    if (pos >= msg.size()) {
      return Malformed(absl::StrCat("name at byte ", offset, " runs past the end of the ",
                                    msg.size(), "-byte message"));
    }
    uint8_t len = msg[pos];
    if ((len & 0xC0) == 0xC0) {
      if (!Has(msg, pos, 2)) {
        return Malformed(absl::StrCat("name at byte ", offset, ": truncated compression pointer"));
      }
      size_t target = Get16(msg, pos) & 0x3FFF;
      if (target >= run_start) {
        return Malformed(absl::StrCat("name at byte ", offset, ": compression pointer at byte ",
                                      pos, " to byte ", target, " does not point backwards"));
      }
      if (!jumped) *end = pos + 2;
      jumped = true;
      run_start = target;
      pos = target;
      continue;
    }
    if ((len & 0xC0) != 0) {
      return Malformed(absl::StrFormat("name at byte %d: unsupported label type 0x%02x", offset,
                                       len));
    }
    if (len == 0) {
      if (!jumped) *end = pos + 1;
      return out;
    }
    if (!Has(msg, pos + 1, len)) {
      return Malformed(absl::StrCat("name at byte ", offset, ": label at byte ", pos,
                                    " runs past the end of the ", msg.size(), "-byte message"));
    }
    wire_length += 1 + len;
    if (wire_length > kMaxNameWireLength) {
      return Malformed(absl::StrCat("name at byte ", offset, " is longer than ",
                                    kMaxNameWireLength, " bytes"));
    }
    if (!out.empty()) out.push_back('.');
    for (size_t i = pos + 1; i <= pos + len; ++i) {
      uint8_t c = msg[i];
      if (c <= ' ' || c >= 0x7F || c == '.' || c == '\\') {
        absl::StrAppendFormat(&out, "\\%03d", c);
      } else {
        out.push_back(static_cast<char>(c));
      }
    }
    pos += 1 + len;
  }
}

absl::StatusOr<DnsMessage> ParseDnsMessage(absl::Span<const uint8_t> msg) {
  if (msg.size() < kHeaderSize) {
    return Malformed(absl::StrCat("a ", msg.size(), "-byte message is shorter than a DNS header"));
  }
  DnsMessage m;
  m.id = Get16(msg, 0);
  m.flags = Get16(msg, 2);
  uint16_t qdcount = Get16(msg, 4);
  uint16_t ancount = Get16(msg, 6);
  if (qdcount != 1) return Malformed(absl::StrCat("expected 1 question, got ", qdcount));
  size_t pos = kHeaderSize;
  auto q = ReadDnsName(msg, pos, &pos);
  if (!q.ok()) return Malformed(absl::StrCat("question: ", q.status().message()));
  m.question = *std::move(q);
  if (!Has(msg, pos, 4)) return Malformed("question: truncated type and class");
  m.qtype = Get16(msg, pos);
  m.qclass = Get16(msg, pos + 2);
  pos += 4;
  // Each record takes at least 11 bytes: never reserve more than could fit.
  m.answers.reserve(std::min<size_t>(ancount, (msg.size() - pos) / 11));
  for (uint16_t i = 0; i < ancount; ++i) {
    auto where = [&] { return absl::StrCat("answer ", i + 1, " of ", ancount, ": "); };
    DnsResourceRecord rr;
    auto name = ReadDnsName(msg, pos, &pos);
    if (!name.ok()) return Malformed(absl::StrCat(where(), name.status().message()));
    rr.name = *std::move(name);
    if (!Has(msg, pos, 10)) {
      return Malformed(absl::StrCat(where(), "truncated record header at byte ", pos));
    }
    rr.type = Get16(msg, pos);
    rr.rclass = Get16(msg, pos + 2);
    rr.ttl = Get32(msg, pos + 4);
    if (rr.ttl > 0x7FFFFFFFu) rr.ttl = 0;
    rr.rdata_length = Get16(msg, pos + 8);
    rr.rdata_offset = pos + 10;
    if (!Has(msg, rr.rdata_offset, rr.rdata_length)) {
      return Malformed(absl::StrCat(where(), rr.rdata_length, " bytes of data at byte ",
                                    rr.rdata_offset, " run past the end of the ", msg.size(),
                                    "-byte message"));
    }
    pos = rr.rdata_offset + rr.rdata_length;
    m.answers.push_back(std::move(rr));
  }
  return m;
}

absl::StatusOr<SrvAnswer> ParseSrvAnswer(absl::Span<const uint8_t> msg) {
  auto m = ParseDnsMessage(msg);
  if (!m.ok()) return m.status();
  if (auto st = CheckResponse(*m, kDnsTypeSrv); !st.ok()) return st;
  uint32_t ttl;
  auto found = FollowAnswers(msg, *m, kDnsTypeSrv, &ttl);
  if (!found.ok()) return found.status();
  SrvAnswer out;
  out.question = m->question;
  for (const DnsResourceRecord* rr : *found) {
    // Priority, weight and port, then a name of at least one byte.
    if (rr->rdata_length < 7) {
      return Malformed(absl::StrCat("SRV record of ", rr->name, " has ", rr->rdata_length,
                                    " bytes of data; at least 7 are needed"));
    }
    SrvRecord r;
    r.priority = Get16(msg, rr->rdata_offset);
    r.weight = Get16(msg, rr->rdata_offset + 2);
    r.port = Get16(msg, rr->rdata_offset + 4);
    size_t end = 0;
    auto target = ReadDnsName(msg, rr->rdata_offset + 6, &end);
    if (!target.ok()) {
      return Malformed(absl::StrCat("SRV record of ", rr->name, ": target ",
                                    target.status().message()));
    }
    if (end != rr->rdata_offset + rr->rdata_length) {
      return Malformed(absl::StrCat("SRV record of ", rr->name,
                                    ": target name does not end where its ", rr->rdata_length,
                                    "-byte record does"));
    }
    r.target = *std::move(target);
    r.ttl = rr->ttl;
    ttl = std::min(ttl, rr->ttl);
    out.records.push_back(std::move(r));
  }
  out.ttl = out.records.empty() ? 0 : ttl;
  return out;
}

absl::StatusOr<AddressAnswer> ParseAddressAnswer(absl::Span<const uint8_t> msg, uint16_t type) {
  if (type != kDnsTypeA && type != kDnsTypeAaaa) {
    return absl::InvalidArgumentError(absl::StrCat("not an address type: ", type));
  }
  auto m = ParseDnsMessage(msg);
  if (!m.ok()) return m.status();
  if (auto st = CheckResponse(*m, type); !st.ok()) return st;
  uint32_t ttl;
  auto found = FollowAnswers(msg, *m, type, &ttl);
  if (!found.ok()) return found.status();
  const size_t size = type == kDnsTypeA ? 4 : 16;
  const int family = type == kDnsTypeA ? AF_INET : AF_INET6;
  AddressAnswer out;
  out.question = m->question;
  for (const DnsResourceRecord* rr : *found) {
    if (rr->rdata_length != size) {
      return Malformed(absl::StrCat(TypeName(type), " record of ", rr->name, " has ",
                                    rr->rdata_length, " bytes of data, not ", size));
    }
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(family, msg.data() + rr->rdata_offset, text, sizeof(text)) == nullptr) {
      return Malformed(absl::StrCat(TypeName(type), " record of ", rr->name, ": bad address"));
    }
    out.addresses.emplace_back(text);
    ttl = std::min(ttl, rr->ttl);
  }
  out.ttl = out.addresses.empty() ? 0 : ttl;
  return out;
}

}  // namespace meshlib::discovery_internal
