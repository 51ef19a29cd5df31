// Turning BoringSSL's error queue and verification results into messages
// that say what was wrong (meshlib::tls internals).
#ifndef MESHLIB_TLS_TLS_ERRORS_H_
#define MESHLIB_TLS_TLS_ERRORS_H_

#include <string>

typedef struct ssl_st SSL;

namespace meshlib::tls {

// The thread's pending BoringSSL errors as one line (the queue is emptied).
std::string TakeErrors();

// Why a handshake (or a read right after it) failed, in words: untrusted
// or expired certificates, a missing client certificate, a peer that does
// not speak TLS, a peer that hung up. `ssl_error` is SSL_get_error's
// verdict; `client`: this side is the client. Empties the error queue.
std::string DescribeFailure(const SSL* ssl, int ssl_error, bool client);

}  // namespace meshlib::tls

#endif  // MESHLIB_TLS_TLS_ERRORS_H_
