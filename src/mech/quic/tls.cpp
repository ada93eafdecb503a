#include "mech/quic/tls.h"

#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <arpa/inet.h>
#include <gnutls/x509.h>

#include <cstddef>
#include <cstring>

namespace hooker::quic {

namespace {

// TLS 1.3 only (QUIC's), without the middlebox compatibility mode QUIC forbids.
constexpr char kPriority[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE";

Error tls_error(std::string what, int rv) { return Error{what + ": " + gnutls_strerror(rv), 0}; }

}  // namespace

Result<Credentials> load_credentials(const std::string& cert, const std::string& key,
                                     const std::string& ca) {
  gnutls_certificate_credentials_t raw = nullptr;
  if (int rv = gnutls_certificate_allocate_credentials(&raw); rv < 0)
    return tls_error("allocate QUIC credentials", rv);
  Credentials c(raw);
  // Returns how many certificates it read: none is an error too.
  int n = gnutls_certificate_set_x509_trust_file(c.get(), ca.c_str(), GNUTLS_X509_FMT_PEM);
  if (n < 0) return tls_error("read the QUIC CA file " + ca + " (PEM)", n);
  if (n == 0) return Error{"the QUIC CA file " + ca + " holds no certificate (PEM)", 0};
  if (int rv = gnutls_certificate_set_x509_key_file(c.get(), cert.c_str(), key.c_str(),
                                                    GNUTLS_X509_FMT_PEM);
      rv < 0)
    return tls_error("read the QUIC certificate " + cert + " and key " + key + " (PEM, matching)",
                     rv);
  return c;
}

namespace {

std::string status_text(unsigned status) {
  gnutls_datum_t out{};
  if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) < 0)
    return "it did not verify";
  std::string msg(reinterpret_cast<char*>(out.data), out.size);
  gnutls_free(out.data);
  return msg;
}

// During the handshake, on both sides: the peer's chain against the CA,
// then its certificate against the peer's address. Failing it fails the
// handshake (the peer gets a TLS alert).
int verify_peer(gnutls_session_t s) {
  auto* ref = static_cast<SessionRef*>(gnutls_session_get_ptr(s));
  unsigned status = 0;
  int rv = gnutls_certificate_verify_peers2(s, &status);
  if (rv == GNUTLS_E_NO_CERTIFICATE_FOUND) {
    ref->refused = "the peer sent no certificate";
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  if (rv < 0 || status != 0) {
    ref->refused = "the peer's certificate did not verify against the CA: " +
                   (rv < 0 ? std::string(gnutls_strerror(rv)) : status_text(status));
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  unsigned n = 0;
  const gnutls_datum_t* chain = gnutls_certificate_get_peers(s, &n);
  gnutls_x509_crt_t crt = nullptr;
  if (n == 0 || gnutls_x509_crt_init(&crt) < 0) {
    ref->refused = "the peer sent no certificate";
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  // An IPv4 peer reaches the dual-stack socket as ::ffff:a.b.c.d: its
  // certificate names the 4-byte address.
  const in6_addr& a = ref->peer.sin6_addr;
  bool v4 = IN6_IS_ADDR_V4MAPPED(&a);
  bool named = gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER) >= 0 &&
               gnutls_x509_crt_check_ip(crt, a.s6_addr + (v4 ? 12 : 0), v4 ? 4 : 16, 0);
  gnutls_x509_crt_deinit(crt);
  if (!named) {
    char b[INET6_ADDRSTRLEN] = "?";
    inet_ntop(v4 ? AF_INET : AF_INET6, a.s6_addr + (v4 ? 12 : 0), b, sizeof(b));
    ref->refused = std::string("the peer's certificate does not name its address ") + b +
                   " (subjectAltName IP)";
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  return 0;
}

}  // namespace

Result<Session> new_session(bool server, gnutls_certificate_credentials_t cred, SessionRef* ref) {
  gnutls_session_t raw = nullptr;
  unsigned flags = server ? GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET : GNUTLS_CLIENT;
  if (int rv = gnutls_init(&raw, flags); rv < 0) return tls_error("start a TLS session", rv);
  Session s(raw);
  int rv = server ? ngtcp2_crypto_gnutls_configure_server_session(s.get())
                  : ngtcp2_crypto_gnutls_configure_client_session(s.get());
  if (rv != 0) return Error{"set a TLS session up for QUIC", 0};
  if (rv = gnutls_priority_set_direct(s.get(), kPriority, nullptr); rv < 0)
    return tls_error("set the TLS priorities", rv);
  if (rv = gnutls_credentials_set(s.get(), GNUTLS_CRD_CERTIFICATE, cred); rv < 0)
    return tls_error("give the TLS session its certificate", rv);
  static_assert(offsetof(SessionRef, conn_ref) == 0);
  gnutls_session_set_ptr(s.get(), ref);
  gnutls_datum_t alpn{reinterpret_cast<unsigned char*>(const_cast<char*>(kAlpn)),
                      sizeof(kAlpn) - 1};
  gnutls_alpn_set_protocols(s.get(), &alpn, 1, GNUTLS_ALPN_MANDATORY);
  // Both ways: the server asks for the client's certificate and refuses a
  // handshake without one.
  if (server) gnutls_certificate_server_set_request(s.get(), GNUTLS_CERT_REQUIRE);
  gnutls_session_set_verify_function(s.get(), verify_peer);
  return s;
}

}  // namespace hooker::quic
