// libFuzzer target for the DNS answer parser of the "dns" discovery kind
// (meshlib/discovery/dns/dns_message.h): bytes from the network, parsed as an
// SRV answer, an A answer and an AAAA answer. Besides crashes and sanitizer
// findings it checks what the parser promises about what it accepts.
//
// Built outside Bazel by tests/fuzz/run_fuzzers.sh:
//   clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -I. \
//     meshlib/discovery/dns/dns_message.cc tests/fuzz/dns_message_fuzzer.cc \
//     $(pkg-config --cflags --libs absl_status absl_statusor absl_strings absl_time)
#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/types/span.h"
#include "meshlib/discovery/dns/dns_message.h"

namespace {

using namespace meshlib::discovery_internal;  // NOLINT: a fuzzer's only use

// A name is at most 255 bytes on the wire; decoded, a byte may be written
// as a 4-character \DDD escape.
constexpr size_t kMaxDecodedName = 255 * 4;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "contract broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::Span<const uint8_t> msg(data, size);
  if (auto srv = ParseSrvAnswer(msg); srv.ok()) {
    Check(srv->question.size() <= kMaxDecodedName, "question name too long");
    for (const SrvRecord& r : srv->records) {
      Check(r.target.size() <= kMaxDecodedName, "SRV target name too long");
      Check(r.ttl >= srv->ttl, "answer TTL above a record's TTL");
    }
    Check(!srv->records.empty() || srv->ttl == 0, "TTL without records");
  }
  for (uint16_t type : {kDnsTypeA, kDnsTypeAaaa}) {
    auto a = ParseAddressAnswer(msg, type);
    if (!a.ok()) continue;
    for (const std::string& addr : a->addresses) {
      unsigned char buf[16];
      Check(inet_pton(type == kDnsTypeA ? AF_INET : AF_INET6, addr.c_str(), buf) == 1,
            "address that does not parse back");
    }
  }
  return 0;
}
