"""Unmodified applications for the end-to-end tests: real programs (curl,
python3 -m http.server, iperf3) and two tiny socket scripts, all run inside a
test-bed host's cgroup like any user's program."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from hookerd import wait_for

PY = "/usr/bin/python3"

# Serves one connection: reads exactly N bytes, answers M bytes, then holds the
# connection open until the client closes it.
SINK = r"""
import socket, sys
n, m, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", port)); s.listen(1)
c, _ = s.accept(); c.settimeout(30)
got = 0
while got < n:
    b = c.recv(65536)
    if not b: sys.exit("eof after %d of %d" % (got, n))
    got += len(b)
c.sendall(b"y" * m)
while c.recv(65536): pass
"""

# Connects, writes N bytes, reads M bytes, then waits for a line on stdin
# before closing, so the test can look at the live connection.
CLIENT = r"""
import socket, sys
n, m, host, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
c = socket.create_connection((host, port), timeout=30)
c.sendall(b"x" * n)
got = 0
while got < m:
    b = c.recv(65536)
    if not b: sys.exit("eof after %d of %d" % (got, m))
    got += len(b)
print("done", flush=True)
sys.stdin.readline()
c.close()
"""


def listening(host, port, proto="tcp") -> bool:
    out = host.run(["ss", "-Hln", "-t" if proto == "tcp" else "-u", f"sport = :{port}"],
                   timeout=10, cgroup=False).stdout
    return bool(out.strip())


def http_server(host, root: Path, port: int):
    p = host.popen([PY, "-m", "http.server", str(port), "--bind", "::"], cwd=root,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: listening(host, port), 10, f"http.server on :{port}")
    return p


def make_files(d: Path, sizes: dict[str, int]) -> dict[str, str]:
    """Random files; returns name -> sha256."""
    import os
    sums = {}
    for name, size in sizes.items():
        data = os.urandom(size)
        (d / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
    return sums


def fetch(host, url: str, out: Path, timeout=60) -> str:
    """curl url into out inside host; returns the sha256 of what arrived."""
    r = host.run(["curl", "-sS", "--fail", "-m", str(timeout), "-o", str(out), url],
                 timeout=timeout + 5, check=False)
    assert r.returncode == 0, f"curl {url}: rc={r.returncode} {r.stderr}"
    return hashlib.sha256(out.read_bytes()).hexdigest()


def url(host, port: int, name: str, v6=False) -> str:
    return f"http://[{host.ip6}]:{port}/{name}" if v6 else f"http://{host.ip4}:{port}/{name}"
