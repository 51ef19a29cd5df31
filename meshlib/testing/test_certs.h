// For tests: real certificates made by the openssl CLI (and Debian's
// faketime for ones outside their validity) in a temporary directory.
//
//   testing::TestCerts certs = testing::TestCerts::Make();   // ASSERT on certs.ok()
//   tls::TlsOptions o;
//   o.ca_file = certs.ca(); o.cert_file = certs.Cert("echo"); o.key_file = certs.Key("echo");
//
// Every leaf is an X509-SVID of trust domain mesh.test unless its kind says
// otherwise; all are ECDSA P-256, valid from 2019 for 20 years unless
// expired or not yet valid.
#ifndef MESHLIB_TESTING_TEST_CERTS_H_
#define MESHLIB_TESTING_TEST_CERTS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace meshlib::testing {

class TestCerts {
 public:
  // The CA "ca" and a second, unrelated "wrong_ca", in a new directory.
  static TestCerts Make();
  const absl::Status& status() const { return status_; }
  bool ok() const { return status_.ok(); }

  enum class Kind {
    kSvid,         // spiffe://mesh.test/<name>, DNS localhost, IP 127.0.0.1
    kExpired,      // kSvid, valid for one day in 2020
    kNotYetValid,  // kSvid, valid from 2090
    kNoSpiffe,     // DNS localhost and IP 127.0.0.1 only
    kTwoUris,      // two spiffe URIs
    kCaFlag,       // kSvid but with basicConstraints CA:TRUE
  };
  // Makes the leaf `name` (files <name>.crt and <name>.key) signed by
  // `issuer` ("ca" or "wrong_ca"). Its SPIFFE ID is spiffe://mesh.test/<id>
  // (`id` defaults to `name`).
  absl::Status Leaf(const std::string& name, Kind kind = Kind::kSvid,
                    const std::string& issuer = "ca", const std::string& id = "");

  const std::string& dir() const { return dir_; }
  std::string ca() const { return Path("ca.crt"); }
  std::string wrong_ca() const { return Path("wrong_ca.crt"); }
  std::string Cert(absl::string_view name) const { return Path(std::string(name) + ".crt"); }
  std::string Key(absl::string_view name) const { return Path(std::string(name) + ".key"); }
  std::string Path(absl::string_view file) const;

 private:
  absl::Status MakeCa(const std::string& name);
  // Runs a shell command in dir_; its output goes into the error.
  absl::Status Run(const std::string& command) const;

  std::string dir_;
  absl::Status status_;
};

}  // namespace meshlib::testing

#endif  // MESHLIB_TESTING_TEST_CERTS_H_
