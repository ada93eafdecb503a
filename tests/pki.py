"""Certificates for the quic mechanism, made at run time with certtool
(gnutls-bin): a CA, and for each host one naming its addresses. Shared by
tests/e2e/test_quic.py and the benchmark; no key is ever committed."""
import subprocess
from pathlib import Path


def certtool(*args, cwd):
    subprocess.run(["certtool", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path, hosts, also: dict | None = None) -> dict:
    """A CA, and for each host a certificate naming its IPv4 and IPv6
    addresses, and those `also` lists for it by name (a NAT's); returns
    {host name: [--quic-* arguments]}."""
    (d / "ca.tmpl").write_text('cn = "hooker test CA"\nca\ncert_signing_key\nexpiration_days = 2\n')
    certtool("--generate-privkey", "--key-type", "ecdsa", "--outfile", "ca.key", cwd=d)
    certtool("--generate-self-signed", "--load-privkey", "ca.key", "--template", "ca.tmpl",
             "--outfile", "ca.pem", cwd=d)
    return {h.name: issue(d, h, d, (also or {}).get(h.name, ())) for h in hosts}


def issue(d: Path, h, ca: Path, also=()) -> list:
    """A certificate for `h` (name, ip4, ip6: the addresses it names, with
    those in `also`) signed by the CA in directory `ca`, written to `d`; its
    --quic-* arguments."""
    ips = "".join(f'ip_address = "{ip}"\n' for ip in (h.ip4, h.ip6, *also))
    (d / f"{h.name}.tmpl").write_text(
        f'cn = "{h.name}"\n{ips}'
        "tls_www_server\ntls_www_client\nsigning_key\nexpiration_days = 2\n")
    certtool("--generate-privkey", "--key-type", "ecdsa", "--outfile", f"{h.name}.key", cwd=d)
    certtool("--generate-certificate", "--load-privkey", f"{h.name}.key",
             "--load-ca-certificate", str(ca / "ca.pem"), "--load-ca-privkey", str(ca / "ca.key"),
             "--template", f"{h.name}.tmpl", "--outfile", f"{h.name}.pem", cwd=d)
    return ["--quic-cert", str(d / f"{h.name}.pem"), "--quic-key", str(d / f"{h.name}.key"),
            "--quic-ca", str(ca / "ca.pem")]
