#include "meshlib/testing/test_certs.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "meshlib/testing/subprocess.h"

namespace meshlib::testing {

namespace {

constexpr char kFaketime[] = "/usr/bin/faketime";
constexpr char kOpenssl[] = "/usr/bin/openssl";

}  // namespace

TestCerts TestCerts::Make() {
  TestCerts c;
  c.dir_ = MakeTempDir("certs");
  if (c.dir_.empty()) {
    c.status_ = absl::InternalError("cannot make a temporary directory");
    return c;
  }
  c.status_ = c.MakeCa("ca");
  if (c.status_.ok()) c.status_ = c.MakeCa("wrong_ca");
  return c;
}

std::string TestCerts::Path(absl::string_view file) const { return absl::StrCat(dir_, "/", file); }

absl::Status TestCerts::Run(const std::string& command) const {
  Subprocess p({"/bin/sh", "-c", absl::StrCat("cd '", dir_, "' && ", command, " 2>&1")});
  const int rc = p.Wait(absl::Seconds(60));
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("`", command, "` exited ", rc, ": ", p.out(), p.err()));
  }
  return absl::OkStatus();
}

absl::Status TestCerts::MakeCa(const std::string& name) {
  // Valid from 2019 for 100 years: the faked dates below fall inside it.
  return Run(absl::StrCat(
      kFaketime, " '2019-01-01 00:00:00' ", kOpenssl,
      " req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ", name,
      ".key -out ", name, ".crt -days 36500 -subj '/CN=meshlib test ", name,
      "' -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,"
      "cRLSign'"));
}

absl::Status TestCerts::Leaf(const std::string& name, Kind kind, const std::string& issuer,
                             const std::string& id) {
  const std::string spiffe = absl::StrCat("URI:spiffe://mesh.test/", id.empty() ? name : id);
  std::string san = absl::StrCat(spiffe, ",DNS:localhost,IP:127.0.0.1");
  std::string basic = "critical,CA:FALSE";
  std::string usage = "critical,digitalSignature";
  std::string when = "'2019-06-01 00:00:00'";
  int days = 7300;
  switch (kind) {
    case Kind::kSvid:
      break;
    case Kind::kExpired:
      when = "'2020-01-01 00:00:00'";
      days = 1;
      break;
    case Kind::kNotYetValid:
      when = "'2090-01-01 00:00:00'";
      days = 365;
      break;
    case Kind::kNoSpiffe:
      san = "DNS:localhost,IP:127.0.0.1";
      break;
    case Kind::kTwoUris:
      san = absl::StrCat(spiffe, ",URI:spiffe://mesh.test/second");
      break;
    case Kind::kCaFlag:
      basic = "critical,CA:TRUE";
      usage = "critical,digitalSignature,keyCertSign";
      break;
  }
  {
    std::ofstream ext(Path(name + ".ext"));
    ext << "basicConstraints=" << basic << "\nkeyUsage=" << usage
        << "\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=" << san << "\n";
    if (!ext) return absl::InternalError(absl::StrCat("cannot write ", Path(name + ".ext")));
  }
  if (absl::Status s = Run(absl::StrCat(
          kOpenssl, " req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ", name,
          ".key -out ", name, ".csr -subj '/CN=", name, "'"));
      !s.ok()) {
    return s;
  }
  return Run(absl::StrCat(kFaketime, " ", when, " ", kOpenssl, " x509 -req -in ", name,
                          ".csr -CA ", issuer, ".crt -CAkey ", issuer, ".key -CAcreateserial -out ",
                          name, ".crt -days ", days, " -extfile ", name, ".ext"));
}

}  // namespace meshlib::testing
