#include "meshlib/tls/spiffe.h"

#include <openssl/base.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

#ifndef OPENSSL_IS_BORINGSSL
#error "meshlib's TLS is built on BoringSSL (android-libboringssl-dev)"
#endif

namespace meshlib::tls {

namespace {

constexpr absl::string_view kScheme = "spiffe://";
// The specification bounds an ID to 2048 bytes and a trust domain to 255.
constexpr size_t kMaxIdLength = 2048;
constexpr size_t kMaxTrustDomainLength = 255;

bool TrustDomainChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

bool PathChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '-' || c == '_';
}

}  // namespace

absl::Status ValidateSpiffeId(absl::string_view id) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("\"", id, "\" is not a SPIFFE ID: ", why));
  };
  if (id.size() > kMaxIdLength) return bad("longer than 2048 bytes");
  if (!absl::StartsWith(id, kScheme)) return bad("it must start with spiffe://");
  absl::string_view rest = id.substr(kScheme.size());
  const size_t slash = rest.find('/');
  absl::string_view domain = rest.substr(0, slash);
  absl::string_view path = slash == absl::string_view::npos ? "" : rest.substr(slash);
  if (domain.empty()) return bad("the trust domain is empty");
  if (domain.size() > kMaxTrustDomainLength) return bad("the trust domain is over 255 bytes");
  for (char c : domain) {
    if (c == ':') return bad("a port is not allowed");
    if (c == '@') return bad("user info is not allowed");
    if (!TrustDomainChar(c)) {
      return bad("the trust domain may only hold lower-case letters, digits, '.', '-' and '_'");
    }
  }
  if (path.empty()) return absl::OkStatus();
  if (path == "/") return bad("a trailing '/' is not allowed");
  for (absl::string_view segment : absl::StrSplit(path.substr(1), '/')) {
    if (segment.empty()) return bad("empty path segments are not allowed");
    if (segment == "." || segment == "..") return bad("'.' and '..' path segments are not allowed");
    for (char c : segment) {
      if (c == '?' || c == '#') return bad("a query or fragment is not allowed");
      if (!PathChar(c)) {
        return bad("path segments may only hold letters, digits, '.', '-' and '_'");
      }
    }
  }
  return absl::OkStatus();
}

absl::string_view TrustDomainOf(absl::string_view id) {
  absl::string_view rest = id.substr(std::min(id.size(), kScheme.size()));
  return rest.substr(0, rest.find('/'));
}

absl::StatusOr<std::string> SpiffeIdOf(X509* leaf) {
  if (leaf == nullptr) return absl::UnauthenticatedError("no certificate");
  std::vector<std::string> uris;
  GENERAL_NAMES* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr));
  if (names != nullptr) {
    for (size_t i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
      if (name->type != GEN_URI) continue;
      const ASN1_STRING* s = name->d.uniformResourceIdentifier;
      uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                        static_cast<size_t>(ASN1_STRING_length(s)));
    }
    GENERAL_NAMES_free(names);
  }
  if (uris.empty()) {
    return absl::UnauthenticatedError(
        "the certificate carries no SPIFFE ID (no URI subject alternative name)");
  }
  if (uris.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the certificate carries ", uris.size(), " URI subject alternative names; an X509-SVID "
        "has exactly one"));
  }
  if (absl::Status s = ValidateSpiffeId(uris[0]); !s.ok()) return s;
  // X509_get_extension_flags computes (and caches) what the extensions say.
  const uint32_t flags = X509_get_extension_flags(leaf);
  if (flags & EXFLAG_CA) {
    return absl::InvalidArgumentError(
        absl::StrCat(uris[0], ": a leaf X509-SVID must not be a CA (basicConstraints cA=true)"));
  }
  if (flags & EXFLAG_KUSAGE) {
    const uint32_t usage = X509_get_key_usage(leaf);
    if ((usage & KU_DIGITAL_SIGNATURE) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(uris[0], ": a leaf X509-SVID needs the digitalSignature key usage"));
    }
    if (usage & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) {
      return absl::InvalidArgumentError(absl::StrCat(
          uris[0], ": a leaf X509-SVID must not have the keyCertSign or cRLSign key usage"));
    }
  }
  return uris[0];
}

}  // namespace meshlib::tls
