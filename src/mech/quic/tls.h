// Mutual TLS for `quic`: each hookerd has a certificate and key, and a CA
// that both trust (PEM files). Both sides present their certificate
// (GNUTLS_CERT_REQUIRE on the server), and each verifies the other's chain
// against the CA and that it names the peer's IP address (subjectAltName
// IP): GnuTLS does both during the handshake, which fails otherwise.
#pragma once

#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <memory>
#include <string>

#include "core/result.h"

namespace hooker::quic {

// The ALPN both sides insist on: another QUIC speaker is refused.
inline constexpr char kAlpn[] = "hooker/1";

struct CredentialsFree {
  void operator()(gnutls_certificate_credentials_t c) const { gnutls_certificate_free_credentials(c); }
};
using Credentials =
    std::unique_ptr<std::remove_pointer_t<gnutls_certificate_credentials_t>, CredentialsFree>;

struct SessionFree {
  void operator()(gnutls_session_t s) const { gnutls_deinit(s); }
};
using Session = std::unique_ptr<std::remove_pointer_t<gnutls_session_t>, SessionFree>;

// This hookerd's certificate, key and trusted CA, loaded once.
Result<Credentials> load_credentials(const std::string& cert, const std::string& key,
                                     const std::string& ca);

// What a session points to: ngtcp2's crypto callbacks find their
// connection through `conn_ref` (the first member, so the same address),
// the verification the peer's address and leaves why it refused it.
struct SessionRef {
  ngtcp2_crypto_conn_ref conn_ref{};
  sockaddr_in6 peer{};
  std::string refused;  // why the peer's certificate was refused, if it was
};

// A session for one QUIC connection to or from `ref->peer`, set up for
// ngtcp2; `ref` outlives it.
Result<Session> new_session(bool server, gnutls_certificate_credentials_t cred, SessionRef* ref);

}  // namespace hooker::quic
