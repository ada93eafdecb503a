#include "test_pki.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace hooker::testing {

namespace {

void check(int rv, const char* what) {
  if (rv < 0) throw std::runtime_error(std::string(what) + ": " + gnutls_strerror(rv));
}

struct Key {
  gnutls_x509_privkey_t k = nullptr;
  Key() {
    check(gnutls_x509_privkey_init(&k), "gnutls_x509_privkey_init");
    check(gnutls_x509_privkey_generate(k, GNUTLS_PK_ECDSA,
                                       GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
          "gnutls_x509_privkey_generate");
  }
  ~Key() { gnutls_x509_privkey_deinit(k); }
};

struct Crt {
  gnutls_x509_crt_t c = nullptr;
  Crt() { check(gnutls_x509_crt_init(&c), "gnutls_x509_crt_init"); }
  ~Crt() { gnutls_x509_crt_deinit(c); }
};

void write_pem(const std::string& path, const gnutls_datum_t& d) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(d.data), d.size);
  if (!f) throw std::runtime_error("write " + path);
}

void fill(Crt& crt, Key& key, const std::string& cn, unsigned serial) {
  time_t now = time(nullptr);
  check(gnutls_x509_crt_set_version(crt.c, 3), "set_version");
  unsigned char sn[4] = {0, 0, static_cast<unsigned char>(serial >> 8),
                         static_cast<unsigned char>(serial)};
  check(gnutls_x509_crt_set_serial(crt.c, sn, sizeof(sn)), "set_serial");
  check(gnutls_x509_crt_set_activation_time(crt.c, now - 3600), "set_activation_time");
  check(gnutls_x509_crt_set_expiration_time(crt.c, now + 86400), "set_expiration_time");
  check(gnutls_x509_crt_set_dn_by_oid(crt.c, GNUTLS_OID_X520_COMMON_NAME, 0, cn.data(),
                                      static_cast<unsigned>(cn.size())),
        "set_dn");
  check(gnutls_x509_crt_set_key(crt.c, key.k), "set_key");
}

}  // namespace

struct TestPki::Impl {
  Key key;
  Crt crt;
  unsigned serial = 1;
};

TestPki::TestPki() : impl_(std::make_unique<Impl>()) {
  char tmpl[] = "/tmp/hooker-pki-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
  dir_ = tmpl;
  fill(impl_->crt, impl_->key, "hooker test CA", impl_->serial++);
  check(gnutls_x509_crt_set_basic_constraints(impl_->crt.c, 1, -1), "set_basic_constraints");
  check(gnutls_x509_crt_set_key_usage(impl_->crt.c, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN),
        "set_key_usage");
  check(gnutls_x509_crt_sign2(impl_->crt.c, impl_->crt.c, impl_->key.k, GNUTLS_DIG_SHA256, 0),
        "self-sign the CA");
  gnutls_datum_t d;
  check(gnutls_x509_crt_export2(impl_->crt.c, GNUTLS_X509_FMT_PEM, &d), "export the CA");
  ca_file_ = dir_ + "/ca.pem";
  write_pem(ca_file_, d);
  gnutls_free(d.data);
}

TestPki::~TestPki() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

TestPki::Files TestPki::issue(const std::string& name, const in6_addr& addr) {
  Key key;
  Crt crt;
  fill(crt, key, name, impl_->serial++);
  check(gnutls_x509_crt_set_basic_constraints(crt.c, 0, -1), "set_basic_constraints");
  check(gnutls_x509_crt_set_key_usage(crt.c, GNUTLS_KEY_DIGITAL_SIGNATURE), "set_key_usage");
  // Each hookerd is a TLS server and a client (whichever opens).
  check(gnutls_x509_crt_set_key_purpose_oid(crt.c, GNUTLS_KP_TLS_WWW_SERVER, 0), "purpose");
  check(gnutls_x509_crt_set_key_purpose_oid(crt.c, GNUTLS_KP_TLS_WWW_CLIENT, 0), "purpose");
  bool v4 = IN6_IS_ADDR_V4MAPPED(&addr);
  check(gnutls_x509_crt_set_subject_alt_name(crt.c, GNUTLS_SAN_IPADDRESS,
                                             addr.s6_addr + (v4 ? 12 : 0), v4 ? 4 : 16,
                                             GNUTLS_FSAN_SET),
        "set_subject_alt_name");
  check(gnutls_x509_crt_sign2(crt.c, impl_->crt.c, impl_->key.k, GNUTLS_DIG_SHA256, 0), "sign");
  Files f{dir_ + "/" + name + ".pem", dir_ + "/" + name + ".key"};
  gnutls_datum_t d;
  check(gnutls_x509_crt_export2(crt.c, GNUTLS_X509_FMT_PEM, &d), "export the certificate");
  write_pem(f.cert, d);
  gnutls_free(d.data);
  check(gnutls_x509_privkey_export2(key.k, GNUTLS_X509_FMT_PEM, &d), "export the key");
  write_pem(f.key, d);
  gnutls_free(d.data);
  return f;
}

}  // namespace hooker::testing
