// Fuzzes what meshlib does with bytes a TLS peer sends: a server-side TLS
// 1.3 handshake fed the input as the client's first flight (with the
// failure then described by tls::DescribeFailure), the input read as a
// DER certificate checked by the X509-SVID rules (tls::SpiffeIdOf), and
// the input as a SPIFFE ID (tls::ValidateSpiffeId).
//
// The server's certificate comes from MESHLIB_FUZZ_CERT_DIR (cert.pem and
// key.pem, made by run_fuzzers.sh with the openssl CLI); without it only
// the certificate and ID parts run.
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "meshlib/tls/spiffe.h"
#include "meshlib/tls/tls_errors.h"

namespace {

SSL_CTX* ServerContext() {
  static SSL_CTX* ctx = [] {
    const char* dir = std::getenv("MESHLIB_FUZZ_CERT_DIR");
    if (dir == nullptr) return static_cast<SSL_CTX*>(nullptr);
    SSL_CTX* c = SSL_CTX_new(TLS_method());
    SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
    const std::string cert = std::string(dir) + "/cert.pem";
    const std::string key = std::string(dir) + "/key.pem";
    if (!SSL_CTX_use_certificate_chain_file(c, cert.c_str()) ||
        !SSL_CTX_use_PrivateKey_file(c, key.c_str(), SSL_FILETYPE_PEM)) {
      std::abort();  // the script's certificate must load
    }
    // Ask for a client certificate too, as an mTLS server does.
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    return c;
  }();
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)meshlib::tls::ValidateSpiffeId(text);

  const uint8_t* p = data;
  if (X509* x = d2i_X509(nullptr, &p, static_cast<long>(size))) {
    (void)meshlib::tls::SpiffeIdOf(x);
    X509_free(x);
  }
  ERR_clear_error();

  if (SSL_CTX* ctx = ServerContext()) {
    SSL* ssl = SSL_new(ctx);
    BIO* in = BIO_new_mem_buf(data, static_cast<int>(size));
    BIO* out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, out);
    SSL_set_accept_state(ssl);
    const int ret = SSL_do_handshake(ssl);
    if (ret != 1) {
      const int err = SSL_get_error(ssl, ret);
      if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
        (void)meshlib::tls::DescribeFailure(ssl, err, /*client=*/false);
      }
    }
    SSL_free(ssl);
    ERR_clear_error();
  }
  return 0;
}
