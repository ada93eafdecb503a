"""A connection's lifetime in hookerd (issue 8): once retired, nothing touches
it again. Each test drives one path that used to reach a freed connection;
under `make test-sanitize` (AddressSanitizer) the old code failed them with a
heap-use-after-free, and the autouse check of tests/e2e/conftest.py fails any
test whose hookerd printed a sanitizer report.

Both tests use IPv4: the tc filter and the crafted datagram are simplest there,
and the paths under test do not depend on the family.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import select
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from apps import PY
from hookerd import UDP_PORT, Hookerd, wait_for

PORT = 8005
MiB = 1 << 20

# Accepts connections and reads each until it ends; one line per connection.
DRAIN_SERVER = r"""
import socket, sys, threading
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", port)); s.listen(64)
print("listening", flush=True)
def drain(c):
    c.settimeout(60)
    end = "EOF"
    try:
        while c.recv(1 << 16): pass
    except OSError as e:
        end = type(e).__name__
    print("end", end, flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
"""

# Connects, says its local port, then waits for the connection to end.
WAITING_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print("connected", c.getsockname()[1], flush=True)
c.settimeout(float(sys.argv[3]))
try:
    end = "EOF" if not c.recv(1) else "data"
except ConnectionResetError:
    end = "ECONNRESET"
except socket.timeout:
    end = "timeout"
print("end", end, flush=True)
"""

# N connections, each writing `size` bytes (they block once hookerd stops
# reading: that is the point); says when all are connected.
FILLERS = r"""
import socket, sys, threading
host, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
conns = [socket.create_connection((host, port), timeout=10) for _ in range(n)]
print("connected", flush=True)
def write(c):
    c.settimeout(60)
    try: c.sendall(b"f" * size)
    except OSError: pass
ts = [threading.Thread(target=write, args=(c,)) for c in conns]
for t in ts: t.start()
for t in ts: t.join()
"""

# Connects, then closes abortively (SO_LINGER 0) at once: hookerd gets the
# connection's BOUND and CLOSED events back to back.
ABORTER = r"""
import socket, struct, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print("port", c.getsockname()[1], flush=True)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
"""


# ---------------------------------------------------------------- helpers

def read_line(p: subprocess.Popen, timeout: float) -> str:
    """The next line of p's stdout (bytes mode), or AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no line from {p.args[-4:]} in {timeout}s (so far {buf!r})"
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 1)
            assert chunk, f"{p.args[-4:]} ended (rc={p.poll()}) before a line; so far {buf!r}"
            buf += chunk
    return buf.decode().strip()


def start_server(host, port: int) -> subprocess.Popen:
    p = host.popen([PY, "-c", DRAIN_SERVER, str(port)], stdout=subprocess.PIPE)
    assert read_line(p, 10) == "listening"
    return p


def conns(d: Hookerd, port: int) -> list[dict]:
    return [c for c in d.status()["connections"] if port in (c["local_port"], c["remote_port"])]


def reset_datagram(token: int) -> bytes:
    """A Hooker RESET for `token` (struct hk_wire_hdr, bpf/hooker_abi.h):
    magic, version, type RESET, mechanism udp, flags, length 0, token,
    offset, window, reserved; network byte order."""
    return struct.pack("!HBBBBHQQII", 0x484B, 1, 4, 1, 0, 0, token, 0, 0, 0)


_libc = ctypes.CDLL("libc.so.6", use_errno=True)
SYS_pidfd_getfd = 438     # the same on x86_64 and arm64
SO_SNDBUFFORCE = 32


def udp_socket_of(d: Hookerd) -> socket.socket:
    """hookerd's own UDP socket, duplicated into this process (pidfd_getfd):
    one kernel socket, so an option set here is set for hookerd."""
    pid = d.proc.pid
    port = f":{d.udp_port:04X}"
    inodes = {f[9] for f in (l.split() for l in
                             Path(f"/proc/{pid}/net/udp6").read_text().splitlines()[1:])
              if f[1].endswith(port)}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            pidfd = os.pidfd_open(pid)
            try:
                n = _libc.syscall(SYS_pidfd_getfd, pidfd, int(fd), 0)
            finally:
                os.close(pidfd)
            if n < 0:
                raise OSError(ctypes.get_errno(), "pidfd_getfd")
            return socket.socket(fileno=n)
    raise AssertionError(f"hookerd (pid {pid}) has no UDP socket on port {d.udp_port}")


def unsent_bytes(s: socket.socket) -> int:
    """SIOCOUTQ: what the kernel still holds of a UDP socket's sends."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


@pytest.fixture
def hooked(bed):
    a = Hookerd(bed.a, [PORT]).start()
    b = Hookerd(bed.b, [PORT]).start()
    yield bed, a, b
    ra, rb = a.stop(), b.stop()
    assert ra == 0, f"hookerd a exit {ra}: {a.stderr()[-3000:]}"
    assert rb == 0, f"hookerd b exit {rb}: {b.stderr()[-3000:]}"


# ---------------------------------------------------------------- tests

def test_reset_that_arrived_before_the_handshake_ended(hooked):
    """Path (1), Daemon::on_bound: datagrams that beat a connection's BOUND
    event are stashed and replayed once it is bound; a replayed RESET retires
    the connection, and on_bound then went on to pump() it (freed).

    b's kernel accepted the handshake (SYN-ACK sent, the token embryonic in
    the pinned `tokens` map) but the final ACK is held back by an iptables
    rule on b; meanwhile two RESETs for that token (a peer's reset sends two)
    arrive from a's address and are stashed. The rule goes, b's SYN-ACK
    retransmission draws the ACK, the connection is bound and the RESETs
    replayed: both applications get ECONNRESET, nothing is left in b, and
    the second RESET (for a connection already gone) is only counted."""
    bed, a, b = hooked
    srv = start_server(bed.b, PORT)
    hold = ["INPUT", "-p", "tcp", "--dport", str(PORT), "--tcp-flags", "SYN,ACK,FIN,RST",
            "ACK", "-j", "DROP"]
    bed.b.run(["iptables", "-w", "-I", *hold], timeout=10, cgroup=False)
    held = True
    try:
        # connect() returns on a's side at the SYN-ACK; b waits for the ACK.
        cli = bed.a.popen([PY, "-c", WAITING_CLIENT, bed.b.ip4, str(PORT), "30"],
                          stdout=subprocess.PIPE)
        assert read_line(cli, 10).startswith("connected")
        tokens = wait_for(lambda: b.embryonic_tokens(), 10, "b's embryonic token")
        assert len(tokens) == 1, tokens
        with bed.a.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(2):
                s.sendto(reset_datagram(tokens[0]), (bed.b.ip4, UDP_PORT))
        # a's hookerd opened the connection with a HELLO (and repeats it
        # until b answers): stashed too, before the RESETs or between them.
        wait_for(lambda: b.counter("rx_stashed") >= 3, 10, "b to stash both RESETs")
        assert b.counter("moved_passive") == 0
        bed.b.run(["iptables", "-w", "-D", *hold], timeout=10, cgroup=False)
        held = False
        assert read_line(cli, 30) == "end ECONNRESET"
    finally:
        if held:
            bed.b.run(["iptables", "-w", "-D", *hold], timeout=10, cgroup=False, check=False)
    assert read_line(srv, 10) == "end ConnectionResetError"
    # Bound once, reset once: the second RESET found the connection gone
    # (a nested read of the kernel's events used to bind it a second time).
    assert b.counter("moved_passive") == 1 and b.counter("conns_moved") == 1
    # (a's HELLOs stashed after the RESETs find it gone too.)
    assert b.counter("resets_received") == 1 and b.counter("rx_unknown_token") >= 1
    assert "the peer reset the connection" in b.stderr()
    wait_for(lambda: not conns(a, PORT) and not conns(b, PORT), 10,
             "the reset connection to leave both tables")
    assert b.proc.poll() is None, f"hookerd b died: {b.stderr()[-3000:]}"


def test_end_that_waited_for_room_then_the_close(hooked):
    """Path (2), Daemon::pump: a connection whose END frame finds hookerd's
    UDP queue full waits in tx_waiters_; it was added there again by each
    later pump() (no check for an entry already there), so run() pumped it
    twice in one pass, and the first pass retired (freed) it.

    a's hookerd is made to fill its queue: its UDP socket's send buffer is
    shrunk (through a duplicate of the socket) and its datagrams go to a tc
    class that lets one packet through a minute, so once one GSO packet waits
    there every send gets EAGAIN. Three connections then fill the 256
    datagrams of the queue. A fourth connects and closes abortively: its
    BOUND finds no room (tx_waiters_), its CLOSED ends its stream with no
    room for the END (tx_waiters_ again). The send buffer is restored, the
    queue drains, the END is queued and the connection retired, once."""
    bed, a, b = hooked
    start_server(bed.b, PORT)
    tc = ["tc"]
    dev = ["dev", bed.a.iface]
    for cmd in (["qdisc", "add", *dev, "root", "handle", "1:", "htb"],  # others: unshaped
                ["class", "add", *dev, "parent", "1:", "classid", "1:20", "htb", "rate",
                 "8kbit", "ceil", "8kbit", "burst", "1", "cburst", "1"],
                ["filter", "add", *dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                 "match", "ip", "protocol", "17", "0xff", "match", "ip", "sport",
                 str(a.udp_port), "0xffff", "flowid", "1:20"]):
        bed.a.run(tc + cmd, timeout=10, cgroup=False)
    with udp_socket_of(a) as udp:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the kernel's minimum
        fill = bed.a.popen([PY, "-c", FILLERS, bed.b.ip4, str(PORT), "3", str(MiB)],
                           stdout=subprocess.PIPE)
        assert read_line(fill, 10) == "connected"
        sndbuf = udp.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        # Full for good: no room in hookerd's queue, and the socket holds
        # more than its buffer (the packet in the tc class), so no send
        # succeeds until the buffer grows.
        wait_for(lambda: a.status()["hookerd"]["udp_queue"]["room"] == 0 and
                 unsent_bytes(udp) >= sndbuf, 15, "a's UDP queue to be full")
        ab = bed.a.run([PY, "-c", ABORTER, bed.b.ip4, str(PORT)], timeout=15)
        port = int(ab.stdout.split()[1])

        def mine():
            return [c for c in conns(a, PORT) if c["local_port"] == port]
        waiting = wait_for(lambda: [c for c in mine() if c["app_gone"]], 10,
                           "hookerd a to see the connection closed")
        assert not waiting[0]["end_sent"], f"the END found room: not the path under test {waiting}"
        udp.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 64 << 20)  # hookerd's own size
    wait_for(lambda: not mine(), 10, "the closed connection to be retired")
    assert a.proc.poll() is None, f"hookerd a died: {a.stderr()[-3000:]}"
    assert a.counter("conns_closed") >= 1
    # The datagrams still waiting in the tc class are dropped with it.
    bed.a.run(tc + ["qdisc", "del", *dev, "root"], timeout=10, cgroup=False)
