#include "meshlib/tls/tls_errors.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace meshlib::tls {

std::string TakeErrors() {
  std::string out;
  char buf[256];
  while (uint32_t e = ERR_get_error()) {
    ERR_error_string_n(e, buf, sizeof buf);
    absl::StrAppend(&out, out.empty() ? "" : "; ", buf);
  }
  return out.empty() ? "unknown error" : out;
}

namespace {

// The peer's certificate failed this side's verification.
std::string VerifyFailure(long result, bool client) {
  const char* whose = client ? "the server's certificate" : "the client's certificate";
  switch (result) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return absl::StrCat(whose, " has expired");
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return absl::StrCat(whose, " is not valid yet");
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
      return absl::StrCat(whose, " is untrusted: it does not chain to the CA in tls.ca_file (",
                          X509_verify_cert_error_string(result), ")");
    default:
      return absl::StrCat(whose, " failed verification: ", X509_verify_cert_error_string(result));
  }
}

// What an alert from the peer (or a local reason) says, for the reasons
// worth naming.
std::string ReasonText(int reason, bool client) {
  switch (reason) {
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      return "the peer does not trust this side's certificate (alert: unknown CA)";
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
      return "the peer says this side's certificate has expired";
    case SSL_R_TLSV1_ALERT_CERTIFICATE_REQUIRED:
      return client ? "the server requires a client certificate and none was configured "
                      "(tls.cert_file)"
                    : "a certificate was required";
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return "the client sent no certificate, and this server requires one";
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
      return "the peer refused this side's certificate";
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
      return "the peer denied access to this side's identity";
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_UNSUPPORTED_PROTOCOL:
      return "the peer does not speak TLS 1.3";
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_RECORD_TOO_LARGE:
    case SSL_R_EXCESSIVE_MESSAGE_SIZE:
    case SSL_R_DECODE_ERROR:
      return client ? "the server does not speak TLS (is it a plaintext port?)"
                    : "the client does not speak TLS (a plaintext client on a TLS port?)";
    default:
      return "";
  }
}

}  // namespace

std::string DescribeFailure(const SSL* ssl, int ssl_error, bool client) {
  if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
    const int err = errno;
    ERR_clear_error();
    if (ssl_error == SSL_ERROR_SYSCALL && err != 0 && err != EPIPE && err != ECONNRESET) {
      return absl::StrCat("TLS: ", std::strerror(err));
    }
    return client ? "the server closed the connection during the TLS handshake (a plaintext "
                    "port, or it refused this client)"
                  : "the client closed the connection during the TLS handshake";
  }
  const long verify = ssl != nullptr ? SSL_get_verify_result(ssl) : X509_V_OK;
  uint32_t first = ERR_peek_error();
  const int reason = ERR_GET_REASON(first);
  if (verify != X509_V_OK && (reason == SSL_R_CERTIFICATE_VERIFY_FAILED || first == 0)) {
    ERR_clear_error();
    return VerifyFailure(verify, client);
  }
  std::string text = ReasonText(reason, client);
  std::string detail = TakeErrors();
  if (text.empty()) return absl::StrCat("TLS error: ", detail);
  return absl::StrCat(text, " (", detail, ")");
}

}  // namespace meshlib::tls
