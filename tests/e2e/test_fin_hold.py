"""The FIN hold when hookerd falls behind: FINs that find its queue full must
not be let in ahead of their connections' bytes.

A moved connection's FIN travels over TCP while its bytes go through hookerd,
so incoming FINs wait in an NFQUEUE until hookerd has delivered what came
before them. When hookerd cannot read the queue fast enough (100 connections
ending at once under the ASan build did it), the queue's socket fills. A FIN
let in then reaches the server first: it reads EOF, closes, and the bytes
still in hookerd are lost (a CI run saw 44 of 100 echoes come back empty, no
error anywhere). Dropped instead, the FIN is sent again by the client's TCP
and finds room once hookerd catches up.

The test makes the overload certain: hookerd b is stopped (SIGSTOP), the
queue's socket is filled with FINs of no connection, and the connections end
while it is full. IPv4 only: the queue is the same for both families.
"""
from __future__ import annotations

import json
import random
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

from apps import PY
from test_stream import APP, ECHO, dst, hooked, server, server_state  # noqa: F401

NETLINK_NETFILTER = 12
CONNS = 50
# How long filling the queue may take; then the client's connections, whose
# hookerd gives up on a peer never heard from after 3 s (mech/udp/loss.cpp),
# wait for hookerd b less than that.
FILL_BUDGET = 2.0
FINS_BUDGET = 1.5


def queue_drops(pid: int) -> int:
    """Messages the netfilter netlink sockets of pid's network namespace
    dropped for want of room (Drops in /proc/net/netlink): hookerd's NFQUEUE
    socket is the one."""
    out = Path(f"/proc/{pid}/net/netlink").read_text()
    drops = 0
    for line in out.splitlines()[1:]:
        f = line.split()
        if len(f) >= 9 and int(f[1]) == NETLINK_NETFILTER:
            drops += int(f[8])
    return drops


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def stray_fin(src: str, dst_ip: str, sport: int, dport: int) -> bytes:
    """A FIN of no connection: queued by the FIN hold like any other."""
    seq = random.getrandbits(32)
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x11, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst_ip) + struct.pack("!BBH", 0, 6, len(hdr))
    return hdr[:16] + struct.pack("!H", checksum(pseudo + hdr)) + hdr[18:]


def fill_queue(bed, b_pid: int, deadline: float) -> int:
    """Sends stray FINs from a to b until b's queue socket drops some; the
    number of drops then."""
    raw = bed.a.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    try:
        base = queue_drops(b_pid)
        sport = 20000
        while time.monotonic() < deadline:
            for _ in range(500):
                sport = 20000 + (sport - 19999) % 10000  # below the ephemeral ports
                raw.sendto(stray_fin(bed.a.ip4, bed.b.ip4, sport, ECHO), (bed.b.ip4, 0))
            drops = queue_drops(b_pid)
            if drops > base:
                return drops
        raise AssertionError("b's NFQUEUE socket never filled while hookerd b was stopped")
    finally:
        raw.close()


def test_fins_beyond_a_full_queue_wait_for_their_bytes(hooked):
    bed, a, b = hooked
    srv, lines = server(bed.b, "echo-server", "--port", ECHO)
    client = None
    pid = b.proc.pid
    b.proc.send_signal(signal.SIGSTOP)
    try:
        full = fill_queue(bed, pid, time.monotonic() + FILL_BUDGET)
        # Every connection sends a little and half-closes: its FIN comes at
        # once, to a queue with no room.
        client = bed.a.popen([PY, APP, "conns-client", "--host", dst(bed, False), "--port",
                              str(ECHO), "--count", str(CONNS), "--concurrency", str(CONNS),
                              "--max-size", "4096", "--seed", "77", "--timeout", "30"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        until = time.monotonic() + FINS_BUDGET
        while queue_drops(pid) < full + CONNS and time.monotonic() < until:
            time.sleep(0.02)
        dropped = queue_drops(pid) - full
    finally:
        b.proc.send_signal(signal.SIGCONT)
    assert dropped >= CONNS, (f"only {dropped} FINs met the full queue in {FINS_BUDGET}s: "
                              "the test proves nothing")
    out, err = client.communicate(timeout=45)
    res = [l for l in out.splitlines() if l.startswith("result ")]
    res = json.loads(res[-1][len("result "):]) if res else {"no_result": err[-1000:]}
    if res.get("ok") != CONNS:
        raise AssertionError(f"client {res}\nserver {server_state(srv, lines)}"
                             f"\nhookerd b {b.status()['counters']}")
    assert b.counter("fin_queue_overflows") >= 1, b.status()["counters"]
