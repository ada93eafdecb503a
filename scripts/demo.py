"""make demo: two hosts made of network namespaces, hookerd on each, a file
fetched with curl from a web server, and a report of what crossed the wire."""
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "e2e")]

from apps import http_server, make_files, url  # noqa: E402
from hookerd import Hookerd  # noqa: E402
from testbed import TwoHosts, require_root  # noqa: E402

SIZE = 26_000_000  # the paper's video file
PORT = 8000


def main() -> int:
    reason = require_root()
    if reason:
        print(f"demo: {reason}", file=sys.stderr)
        return 1
    with TwoHosts() as bed, tempfile.TemporaryDirectory() as d:
        d = Path(d)
        print(f"demo: host a {bed.a.ip4} and host b {bed.b.ip4}, joined by a veth")
        ha = Hookerd(bed.a, [PORT]).start()
        hb = Hookerd(bed.b, [PORT]).start()
        print(f"demo: hookerd ready on both hosts (UDP port {ha.udp_port}, moving TCP port {PORT})")
        want = make_files(d, {"video.bin": SIZE})["video.bin"]
        http_server(bed.b, d, PORT)
        print(f"demo: python3 -m http.server on b; curl on a fetches {SIZE:,} bytes")
        with bed.a.capture("tcp or udp") as cap:
            t0 = time.monotonic()
            r = bed.a.run(["curl", "-sS", "--fail", "-m", "60", "-o", str(d / "got"),
                           url(bed.b, PORT, "video.bin")], timeout=70, check=False)
            took = time.monotonic() - t0
        if r.returncode != 0:
            print(f"demo: curl failed: {r.stderr}", file=sys.stderr)
            return 1
        got = hashlib.sha256((d / "got").read_bytes()).hexdigest()
        tcp_payload = cap.tcp_payload_bytes(PORT)
        udp = cap.udp_datagrams(ha.udp_port)
        udp_bytes = sum(p.udp_len or 0 for p in udp)
        tcp_pkts = [p for p in cap.packets() if p.proto == "tcp" and PORT in (p.sport, p.dport)]
        st = ha.status()["counters"]
        print()
        print("Report")
        print(f"  file            {SIZE:,} bytes in {took:.2f} s, sha256 {'matches' if got == want else 'DIFFERS'}")
        print(f"  TCP port {PORT}   {len(tcp_pkts)} packets, {tcp_payload} payload bytes (handshake and close only)")
        print(f"  UDP port {ha.udp_port}   {len(udp)} datagrams, {udp_bytes:,} bytes (Hooker header + payload)")
        print(f"  connections moved: client {st['kernel']['moved_active']}, server {hb.counter('moved_passive')}")
        carried = "UDP (moved by Hooker)" if tcp_payload == 0 and udp_bytes >= SIZE else "TCP"
        print(f"  the file's bytes were carried by: {carried}")
        ok = got == want and carried.startswith("UDP")
        ha.stop()
        hb.stop()
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
