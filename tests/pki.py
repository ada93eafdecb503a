"""Certificates for the quic mechanism, made at run time with certtool
(gnutls-bin): a CA, and for each host one naming its addresses. Shared by
tests/e2e/test_quic.py and the benchmark; no key is ever committed."""
import subprocess
from pathlib import Path


def certtool(*args, cwd):
    subprocess.run(["certtool", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path, hosts) -> dict:
    """A CA, and for each host a certificate naming its IPv4 and IPv6
    addresses; returns {host name: [--quic-* arguments]}."""
    (d / "ca.tmpl").write_text('cn = "hooker test CA"\nca\ncert_signing_key\nexpiration_days = 2\n')
    certtool("--generate-privkey", "--key-type", "ecdsa", "--outfile", "ca.key", cwd=d)
    certtool("--generate-self-signed", "--load-privkey", "ca.key", "--template", "ca.tmpl",
             "--outfile", "ca.pem", cwd=d)
    out = {}
    for h in hosts:
        (d / f"{h.name}.tmpl").write_text(
            f'cn = "{h.name}"\nip_address = "{h.ip4}"\nip_address = "{h.ip6}"\n'
            "tls_www_server\ntls_www_client\nsigning_key\nexpiration_days = 2\n")
        certtool("--generate-privkey", "--key-type", "ecdsa", "--outfile", f"{h.name}.key", cwd=d)
        certtool("--generate-certificate", "--load-privkey", f"{h.name}.key",
                 "--load-ca-certificate", "ca.pem", "--load-ca-privkey", "ca.key",
                 "--template", f"{h.name}.tmpl", "--outfile", f"{h.name}.pem", cwd=d)
        out[h.name] = ["--quic-cert", str(d / f"{h.name}.pem"), "--quic-key",
                       str(d / f"{h.name}.key"), "--quic-ca", str(d / "ca.pem")]
    return out
