#include "meshlib/discovery/dns/dns_message.h"

#include <ares.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "meshlib/testing/dns_testing.h"

namespace meshlib::discovery_internal {
namespace {

using testing::DnsMessageBuilder;
using testing::EncodeDnsName;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<uint8_t> Bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// dnsmasq 2.90's answer to "_echo._tcp.mesh.test SRV" with
//   --srv-host=_echo._tcp.mesh.test,a.mesh.test,7001,10,5
//   --srv-host=_echo._tcp.mesh.test,b.mesh.test,7002,20,0
//   --host-record=a.mesh.test,127.0.0.1,::1 --host-record=b.mesh.test,127.0.0.2,3
//   --local-ttl=7
// Owner names are compressed, targets are not; the additional section holds
// the targets' addresses.
constexpr char kDnsmasqSrvHex[] =
    "123485800001000200000003055f6563686f045f746370046d65736804746573740000210001c00c0021000100"
    "0000070013001400001b5a0162046d657368047465737400c00c00210001000000070013000a00051b59016104"
    "6d657368047465737400c057000100010000000700047f000001c057001c000100000007001000000000000000"
    "000000000000000001c038000100010000000300047f000002";
constexpr size_t kDnsmasqAnswerEnd = 38 + 31 + 31;  // header + question, two SRV records

std::vector<uint8_t> DnsmasqSrv() { return Bytes(absl::HexStringToBytes(kDnsmasqSrvHex)); }

TEST(DnsMessageTest, ReadsARealCompressedSrvAnswer) {
  std::vector<uint8_t> msg = DnsmasqSrv();
  auto m = ParseDnsMessage(msg);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->question, "_echo._tcp.mesh.test");
  EXPECT_EQ(m->qtype, kDnsTypeSrv);
  EXPECT_EQ(m->answers.size(), 2u);

  auto srv = ParseSrvAnswer(msg);
  ASSERT_TRUE(srv.ok()) << srv.status();
  ASSERT_EQ(srv->records.size(), 2u);
  EXPECT_EQ(srv->records[0].target, "b.mesh.test");
  EXPECT_EQ(srv->records[0].priority, 20);
  EXPECT_EQ(srv->records[0].weight, 0);
  EXPECT_EQ(srv->records[0].port, 7002);
  EXPECT_EQ(srv->records[1].target, "a.mesh.test");
  EXPECT_EQ(srv->records[1].priority, 10);
  EXPECT_EQ(srv->records[1].weight, 5);
  EXPECT_EQ(srv->records[1].port, 7001);
  EXPECT_EQ(srv->ttl, 7u);
}

TEST(DnsMessageTest, NamesAgreeWithCAres) {
  std::vector<uint8_t> msg = DnsmasqSrv();
  auto m = ParseDnsMessage(msg);
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<size_t> offsets = {12};
  for (const auto& rr : m->answers) offsets.push_back(rr.rdata_offset + 6);
  offsets.push_back(kDnsmasqAnswerEnd);  // first additional record: a pointer
  for (size_t off : offsets) {
    size_t end = 0;
    auto mine = ReadDnsName(msg, off, &end);
    ASSERT_TRUE(mine.ok()) << off << ": " << mine.status();
    char* theirs = nullptr;
    long len = 0;
    ASSERT_EQ(ares_expand_name(msg.data() + off, msg.data(), static_cast<int>(msg.size()), &theirs,
                               &len),
              ARES_SUCCESS);
    EXPECT_EQ(*mine, theirs) << "at byte " << off;
    EXPECT_EQ(end, off + static_cast<size_t>(len)) << "at byte " << off;
    ares_free_string(theirs);
  }
}

TEST(DnsMessageTest, SrvTtlIsTheMinimumOfRecordsAndCnames) {
  auto msg = Bytes(DnsMessageBuilder(7, "_x._tcp.svc.test", kDnsTypeSrv)
                       .Cname("_x._tcp.svc.test", 50, "_x._tcp.real.test")
                       .Srv("_x._tcp.real.test", 30, 1, 2, 80, "a.test")
                       .Srv("_x._tcp.real.test", 20, 3, 4, 81, "b.test")
                       .Srv("_x._tcp.other.test", 1, 3, 4, 82, "ignored.test")
                       .Build());
  auto srv = ParseSrvAnswer(msg);
  ASSERT_TRUE(srv.ok()) << srv.status();
  ASSERT_EQ(srv->records.size(), 2u);
  EXPECT_EQ(srv->records[0].target, "a.test");
  EXPECT_EQ(srv->records[1].target, "b.test");
  EXPECT_EQ(srv->ttl, 20u);

  msg = Bytes(DnsMessageBuilder(7, "_x._tcp.svc.test", kDnsTypeSrv)
                  .Cname("_x._tcp.svc.test", 5, "_x._tcp.real.test")
                  .Srv("_X._TCP.Real.Test", 30, 1, 2, 80, "a.test")
                  .Build());
  srv = ParseSrvAnswer(msg);
  ASSERT_TRUE(srv.ok()) << srv.status();
  ASSERT_EQ(srv->records.size(), 1u);  // owner names compare case-insensitively
  EXPECT_EQ(srv->ttl, 5u);
}

TEST(DnsMessageTest, AddressesFollowCnames) {
  auto msg = Bytes(DnsMessageBuilder(1, "www.test", kDnsTypeA)
                       .Cname("www.test", 300, "host.test")
                       .A("host.test", 60, "10.0.0.1")
                       .A("host.test", 30, "10.0.0.2")
                       .Build());
  auto a = ParseAddressAnswer(msg, kDnsTypeA);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->addresses, ElementsAre("10.0.0.1", "10.0.0.2"));
  EXPECT_EQ(a->ttl, 30u);

  msg = Bytes(DnsMessageBuilder(1, "h.test", kDnsTypeAaaa).Aaaa("h.test", 9, "0::1").Build());
  a = ParseAddressAnswer(msg, kDnsTypeAaaa);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->addresses, ElementsAre("::1"));
  EXPECT_EQ(a->ttl, 9u);
}

TEST(DnsMessageTest, TtlWithTopBitSetReadsAsZero) {
  auto msg = Bytes(DnsMessageBuilder(1, "h.test", kDnsTypeA).A("h.test", 0x80000000u, "1.2.3.4").Build());
  auto a = ParseAddressAnswer(msg, kDnsTypeA);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->ttl, 0u);
}

TEST(DnsMessageTest, NoMatchingRecordsIsAnEmptyAnswer) {
  auto msg = Bytes(DnsMessageBuilder(1, "www.test", kDnsTypeA).Cname("www.test", 300, "host.test").Build());
  auto a = ParseAddressAnswer(msg, kDnsTypeA);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->addresses.empty());
  EXPECT_EQ(a->ttl, 0u);
}

TEST(DnsMessageTest, RejectsMalformedRecordData) {
  // An SRV record too short to hold priority, weight, port and a name.
  auto msg = Bytes(DnsMessageBuilder(1, "_s._tcp.test", kDnsTypeSrv)
                       .RawRecord(EncodeDnsName("_s._tcp.test"), kDnsTypeSrv, 5,
                                  std::string("\x00\x01\x00\x02", 4))
                       .Build());
  auto srv = ParseSrvAnswer(msg);
  ASSERT_FALSE(srv.ok());
  EXPECT_THAT(srv.status().message(), HasSubstr("4 bytes of data; at least 7 are needed"));

  // A target that runs on past the record (into the next one).
  std::string rdata = std::string("\x00\x01\x00\x02\x00\x50", 6) + "\x03" "abc";  // no end
  msg = Bytes(DnsMessageBuilder(1, "_s._tcp.test", kDnsTypeSrv)
                  .RawRecord(EncodeDnsName("_s._tcp.test"), kDnsTypeSrv, 5, rdata)
                  .A("x.test", 5, "1.2.3.4")
                  .Build());
  srv = ParseSrvAnswer(msg);
  ASSERT_FALSE(srv.ok());
  EXPECT_THAT(srv.status().message(), HasSubstr("does not end where"));

  // Trailing bytes after the target.
  rdata = std::string("\x00\x01\x00\x02\x00\x50", 6) + EncodeDnsName("a.test") + "zz";
  msg = Bytes(DnsMessageBuilder(1, "_s._tcp.test", kDnsTypeSrv)
                  .RawRecord(EncodeDnsName("_s._tcp.test"), kDnsTypeSrv, 5, rdata)
                  .Build());
  EXPECT_FALSE(ParseSrvAnswer(msg).ok());

  // A 5-byte A record.
  msg = Bytes(DnsMessageBuilder(1, "h.test", kDnsTypeA)
                  .RawRecord(EncodeDnsName("h.test"), kDnsTypeA, 5, "\x01\x02\x03\x04\x05")
                  .Build());
  auto a = ParseAddressAnswer(msg, kDnsTypeA);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("5 bytes of data, not 4"));

  // Record data that runs past the end of the message.
  std::string built = DnsMessageBuilder(1, "h.test", kDnsTypeA).A("h.test", 5, "1.2.3.4").Build();
  built[built.size() - 5] = 9;  // rdlength 4 -> 9
  a = ParseAddressAnswer(Bytes(built), kDnsTypeA);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("run past the end"));
}

TEST(DnsMessageTest, RejectsWrongQuestionOrResponseCode) {
  auto msg = Bytes(DnsMessageBuilder(1, "h.test", kDnsTypeA).A("h.test", 5, "1.2.3.4").Build());
  EXPECT_THAT(ParseSrvAnswer(msg).status().message(), HasSubstr("not SRV"));
  msg = Bytes(DnsMessageBuilder(1, "h.test", kDnsTypeA).Rcode(2).Build());
  EXPECT_THAT(ParseAddressAnswer(msg, kDnsTypeA).status().message(), HasSubstr("response code 2"));
  std::string two = DnsMessageBuilder(1, "h.test", kDnsTypeA).Build();
  two[5] = 2;  // qdcount
  EXPECT_THAT(ParseDnsMessage(Bytes(two)).status().message(), HasSubstr("expected 1 question"));
}

TEST(DnsMessageTest, CnameLoopIsAnError) {
  auto msg = Bytes(DnsMessageBuilder(1, "a.test", kDnsTypeA)
                       .Cname("a.test", 5, "b.test")
                       .Cname("b.test", 5, "a.test")
                       .Build());
  auto a = ParseAddressAnswer(msg, kDnsTypeA);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("loops"));
}

TEST(DnsNameTest, DecodesAndEscapes) {
  std::vector<uint8_t> msg = {3, 'a', '.', 'b', 1, '\\', 2, 0x01, ' ', 0};
  size_t end = 0;
  auto n = ReadDnsName(msg, 0, &end);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, "a\\046b.\\092.\\001\\032");
  EXPECT_EQ(end, msg.size());
  msg = {0};
  n = ReadDnsName(msg, 0, &end);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, "");
  EXPECT_EQ(end, 1u);
}

TEST(DnsNameTest, RejectsPointerLoopsAndForwardPointers) {
  size_t end = 0;
  // A pointer to itself.
  std::vector<uint8_t> self = {0xC0, 0x00};
  EXPECT_THAT(ReadDnsName(self, 0, &end).status().message(), HasSubstr("does not point backwards"));
  // Two labels, then a pointer back to the first: a loop through labels.
  std::vector<uint8_t> loop = {1, 'a', 1, 'b', 0xC0, 0x00};
  EXPECT_FALSE(ReadDnsName(loop, 0, &end).ok());
  EXPECT_FALSE(ReadDnsName(loop, 2, &end).ok());
  // A pointer backwards to a pointer forwards to the first: a two-step loop.
  std::vector<uint8_t> pair = {0xC0, 0x02, 0xC0, 0x00};
  EXPECT_FALSE(ReadDnsName(pair, 2, &end).ok());
  EXPECT_FALSE(ReadDnsName(pair, 0, &end).ok());
  // A pointer out of the message.
  std::vector<uint8_t> out = {0, 0xC0, 0x50};
  EXPECT_FALSE(ReadDnsName(out, 1, &end).ok());
  // A truncated pointer, a truncated label, reserved label types.
  EXPECT_FALSE(ReadDnsName(std::vector<uint8_t>{0xC0}, 0, &end).ok());
  EXPECT_FALSE(ReadDnsName(std::vector<uint8_t>{5, 'a', 'b'}, 0, &end).ok());
  EXPECT_THAT(ReadDnsName(std::vector<uint8_t>{0x41, 0}, 0, &end).status().message(),
              HasSubstr("unsupported label type 0x41"));
  EXPECT_FALSE(ReadDnsName(std::vector<uint8_t>{0x80, 0}, 0, &end).ok());
  // Offsets at or past the end.
  EXPECT_FALSE(ReadDnsName(std::vector<uint8_t>{}, 0, &end).ok());
  EXPECT_FALSE(ReadDnsName(std::vector<uint8_t>{0}, 1, &end).ok());
  EXPECT_FALSE(ReadDnsName(std::vector<uint8_t>{0}, ~size_t{0}, &end).ok());
  // A good backward pointer.
  std::vector<uint8_t> ok = {1, 'a', 0, 1, 'b', 0xC0, 0x00};
  auto n = ReadDnsName(ok, 3, &end);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, "b.a");
  EXPECT_EQ(end, 7u);
}

TEST(DnsNameTest, RejectsNamesOver255Bytes) {
  std::vector<uint8_t> msg;
  for (int i = 0; i < 5; ++i) {  // 5 * 64 bytes
    msg.push_back(63);
    msg.insert(msg.end(), 63, 'x');
  }
  msg.push_back(0);
  size_t end = 0;
  EXPECT_THAT(ReadDnsName(msg, 0, &end).status().message(), HasSubstr("longer than 255"));
  // 3 * 64 + 62 + 1 = 255: allowed.
  msg.clear();
  for (int i = 0; i < 3; ++i) {
    msg.push_back(63);
    msg.insert(msg.end(), 63, 'x');
  }
  msg.push_back(61);
  msg.insert(msg.end(), 61, 'y');
  msg.push_back(0);
  ASSERT_EQ(msg.size(), 255u);
  EXPECT_TRUE(ReadDnsName(msg, 0, &end).ok());
}

// Every proper prefix of a message whose last bytes are answers is an error,
// and reading it stays inside the prefix (ASan checks: each prefix is a
// vector of exactly that size).
TEST(DnsMessageRobustnessTest, EveryTruncationIsAnError) {
  std::vector<std::vector<uint8_t>> messages = {
      Bytes(DnsMessageBuilder(9, "_s._tcp.test", kDnsTypeSrv)
                .Srv("_s._tcp.test", 5, 1, 2, 80, "a.test")
                .Srv("_s._tcp.test", 5, 1, 2, 81, "b.test")
                .Build()),
      Bytes(DnsMessageBuilder(9, "www.test", kDnsTypeA)
                .Cname("www.test", 5, "h.test")
                .A("h.test", 5, "1.2.3.4")
                .Build()),
      Bytes(DnsMessageBuilder(9, "h.test", kDnsTypeAaaa).Aaaa("h.test", 5, "::1").Build()),
  };
  std::vector<uint8_t> dnsmasq = DnsmasqSrv();
  messages.emplace_back(dnsmasq.begin(), dnsmasq.begin() + kDnsmasqAnswerEnd);
  for (const auto& full : messages) {
    auto m = ParseDnsMessage(full);
    ASSERT_TRUE(m.ok()) << m.status();
    for (size_t n = 0; n < full.size(); ++n) {
      std::vector<uint8_t> prefix(full.begin(), full.begin() + n);
      EXPECT_FALSE(ParseDnsMessage(prefix).ok()) << "prefix of " << n << " bytes";
      EXPECT_FALSE(ParseSrvAnswer(prefix).ok()) << "prefix of " << n << " bytes";
      EXPECT_FALSE(ParseAddressAnswer(prefix, m->qtype == kDnsTypeSrv ? kDnsTypeA : m->qtype).ok())
          << "prefix of " << n << " bytes";
    }
  }
}

void ParseEveryWay(const std::vector<uint8_t>& msg) {
  (void)ParseSrvAnswer(msg);
  (void)ParseAddressAnswer(msg, kDnsTypeA);
  (void)ParseAddressAnswer(msg, kDnsTypeAaaa);
  size_t end = 0;
  if (!msg.empty()) (void)ReadDnsName(msg, msg.size() / 2, &end);
}

TEST(DnsMessageRobustnessTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<size_t> length(0, 300);
  for (int i = 0; i < 30000; ++i) {
    std::vector<uint8_t> msg(length(rng));
    for (auto& b : msg) b = static_cast<uint8_t>(byte(rng));
    if (i % 2 == 0 && msg.size() >= 12) {
      // A plausible header gets the parser past the first checks.
      msg[4] = 0;
      msg[5] = 1;
      msg[6] = 0;
      msg[7] = static_cast<uint8_t>(byte(rng) % 8);
    }
    ParseEveryWay(msg);
  }
}

TEST(DnsMessageRobustnessTest, MutatedAnswersNeverCrash) {
  std::vector<std::vector<uint8_t>> seeds = {
      DnsmasqSrv(),
      Bytes(DnsMessageBuilder(9, "www.test", kDnsTypeA)
                .Cname("www.test", 5, "h.test")
                .A("h.test", 5, "1.2.3.4")
                .A("h.test", 5, "1.2.3.5")
                .Build()),
      Bytes(DnsMessageBuilder(9, "h.test", kDnsTypeAaaa).Aaaa("h.test", 5, "::1").Build()),
  };
  std::mt19937_64 rng(777);
  int parsed = 0;
  for (int i = 0; i < 60000; ++i) {
    std::vector<uint8_t> msg = seeds[i % seeds.size()];
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      size_t at = rng() % msg.size();
      switch (rng() % 3) {
        case 0:
          msg[at] = static_cast<uint8_t>(rng());
          break;
        case 1:
          msg[at] = 0xC0 | static_cast<uint8_t>(rng() % 0x40);  // a pointer byte
          break;
        default:
          msg.resize(at);  // truncate
          break;
      }
      if (msg.empty()) break;
    }
    ParseEveryWay(msg);
    parsed += ParseSrvAnswer(msg).ok() ? 1 : 0;
  }
  // Some mutations leave a valid message: the parser is not just rejecting all.
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace meshlib::discovery_internal
