// SPIFFE identities in X.509 certificates (the X509-SVID rules of the
// SPIFFE specification): an identity is one URI of the form
// spiffe://<trust domain>/<path>, carried as the certificate's only URI
// subject alternative name.
//
//   absl::StatusOr<std::string> id = tls::SpiffeIdOf(leaf);   // "spiffe://mesh.test/echo"
//
// A leaf that is a CA, that may sign certificates, or that lacks the
// digitalSignature key usage is refused, as are malformed IDs (upper-case
// or odd characters in the trust domain, empty, "." or ".." path segments,
// a query or fragment, a port or user info).
#ifndef MESHLIB_TLS_SPIFFE_H_
#define MESHLIB_TLS_SPIFFE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

typedef struct x509_st X509;

namespace meshlib::tls {

// OK when `id` is a valid SPIFFE ID; INVALID_ARGUMENT naming what is wrong.
absl::Status ValidateSpiffeId(absl::string_view id);

// "mesh.test" of "spiffe://mesh.test/echo" (the ID must be valid).
absl::string_view TrustDomainOf(absl::string_view id);

// The SPIFFE ID of a leaf certificate, checked by the X509-SVID rules.
// INVALID_ARGUMENT (or UNAUTHENTICATED for a certificate that carries no
// SPIFFE ID at all) naming the rule it breaks.
absl::StatusOr<std::string> SpiffeIdOf(X509* leaf);

}  // namespace meshlib::tls

#endif  // MESHLIB_TLS_SPIFFE_H_
