"""1-byte request/response round trips: plain TCP and Hooker side by side in one
run, on one two-host bed (issue 3's "added latency"). Prints JSON.

    sudo /usr/bin/python3 bench/rr_latency.py [--rounds 5] [--trips 2000]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "e2e")]

from apps import PY, listening  # noqa: E402
from hookerd import Hookerd, wait_for  # noqa: E402
from testbed import TwoHosts, require_root  # noqa: E402

MOVED, PLAIN = 9000, 9001

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (b := c.recv(1)):
        c.sendall(b)
    c.close()
"""

# One connection, `trips` round trips of one byte each; prints the times in us.
# With a fourth argument "udp", the same trips as datagrams (the floor's UDP
# legs alone, bench/suite.py), against UDP_SERVER.
CLIENT = r"""
import socket, sys, time, json
host, port, trips = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if sys.argv[4:] == ["udp"]:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect((host, port))
    c.settimeout(10)
else:
    c = socket.create_connection((host, port), timeout=10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
out = []
for _ in range(trips):
    t = time.perf_counter_ns()
    c.sendall(b"x")
    if c.recv(1) != b"x":
        sys.exit("bad echo")
    out.append((time.perf_counter_ns() - t) / 1000)
c.close()
print(json.dumps(out))
"""

# The floor's UDP legs alone: the echo of CLIENT's datagrams.
UDP_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(60)
print("ready", flush=True)
while True:
    b, peer = s.recvfrom(1)
    s.sendto(b, peer)
"""

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per path")
    ap.add_argument("--trips", type=int, default=2000, help="round trips per round")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.trips < 10:
        ap.error("--rounds must be >= 1 and --trips >= 10")
    reason = require_root()
    if reason:
        print(f"rr_latency: {reason}", file=sys.stderr)
        return 1
    res = {"tcp": [], "hooker": []}
    with TwoHosts() as bed:
        ha, hb = Hookerd(bed.a, [MOVED]).start(), Hookerd(bed.b, [MOVED]).start()
        for port in (MOVED, PLAIN):
            bed.b.popen([PY, "-c", SERVER, str(port)])
            wait_for(lambda: listening(bed.b, port), 10, f"server :{port}")
        for _ in range(a.rounds):  # interleaved: the machine's noise hits both
            for name, port in (("tcp", PLAIN), ("hooker", MOVED)):
                r = bed.a.run([PY, "-c", CLIENT, bed.b.ip4, str(port), str(a.trips)], timeout=120)
                res[name] += json.loads(r.stdout)
        moved = ha.counter("moved_active")
        ha.stop(), hb.stop()
    if moved != a.rounds:
        print(f"rr_latency: expected {a.rounds} moved connections, hookerd moved {moved}",
              file=sys.stderr)
        return 1
    q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))]  # noqa: E731
    out = {name: {"median_us": statistics.median(xs), "p99_us": q(xs, 0.99), "trips": len(xs)}
           for name, xs in res.items()}
    out["added_median_us"] = out["hooker"]["median_us"] - out["tcp"]["median_us"]
    out["ratio_median"] = out["hooker"]["median_us"] / out["tcp"]["median_us"]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
