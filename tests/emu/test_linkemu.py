"""hooker-linkemu, checked the way a user of the bench would: through real sockets
between the two hosts, against the numbers it was configured with."""
import hashlib
import os
import select
import socket
import statistics
import subprocess
import threading
import time

import pytest

import testbed
from testbed import LinkSpec

PY = "/usr/bin/python3"
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; the socket module does not name it
UDP_ECHO = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True); s.settimeout(30)
while True:
    d, peer = s.recvfrom(65536); s.sendto(d, peer)
"""


def start_echo(host, addr, port=6000):
    p = host.popen([PY, "-c", UDP_ECHO, addr, str(port)], stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stdout], [], [], 10)
    assert ready and p.stdout.readline().strip() == "ready", "UDP echo server did not start"
    return p


def echo_rtts_ms(bed, n, fam="ip4", port=6000):
    """n sequential UDP echoes a -> b -> a; returns each round trip in ms."""
    addr = getattr(bed.b, fam)
    start_echo(bed.b, addr, port)
    s = bed.a.socket(socket.AF_INET6 if fam == "ip6" else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    rtts = []
    for i in range(n):
        msg = i.to_bytes(4, "big") * 16
        t0 = time.perf_counter()
        s.sendto(msg, (addr, port))
        while (got := s.recv(2048)) != msg:  # a late echo of an earlier probe
            pass
        rtts.append((time.perf_counter() - t0) * 1000)
    s.close()
    return rtts


def blast(bed, src, dst, n, port, payload=32):
    """Sends n numbered UDP datagrams src -> dst; returns the sequence numbers received
    in arrival order (the receiver stops after 1 s of silence)."""
    rx = dst.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    rx.bind((dst.ip4, port))
    tx = src.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(n):
        tx.sendto(i.to_bytes(4, "big") * (payload // 4), (dst.ip4, port))
    seqs = []
    rx.settimeout(1.0)
    try:
        while True:
            d = rx.recv(2048)
            # a datagram altered on the way would not be its number repeated
            assert d == d[:4] * (payload // 4), f"altered datagram delivered: {d!r}"
            seqs.append(int.from_bytes(d[:4], "big"))
    except socket.timeout:
        pass
    rx.close()
    tx.close()
    return seqs


@pytest.mark.parametrize("fam", ["ip4", "ip6"])
def test_rtt_median_within_1ms(emu_bed, fam):
    bed = emu_bed(LinkSpec(delay_ms=25))
    rtts = echo_rtts_ms(bed, 60, fam)
    assert abs(statistics.median(rtts) - 50.0) <= 1.0, rtts


def test_asymmetric_delay_and_jitter(emu_bed):
    bed = emu_bed(LinkSpec(a2b={"delay_ms": 10}, b2a={"delay_ms": 30, "jitter_ms": 4},
                           seed=1))
    rtts = echo_rtts_ms(bed, 120)
    # the median of 120 uniform samples wanders about 0.2 ms (1 sigma) on its own
    assert abs(statistics.median(rtts) - 40.0) <= 1.5, rtts
    # uniform +-4 ms: the spread shows, but never below the 36 ms floor
    assert min(rtts) >= 36.0 - 0.1 and max(rtts) - min(rtts) >= 3.0, rtts


def test_loss_over_10000_packets(emu_bed):
    """Configured 5% (a->b) and 10% (b->a); tolerance 1 point (>4 sigma at n=10,000)."""
    bed = emu_bed(LinkSpec(a2b={"loss_pct": 5}, b2a={"loss_pct": 10}, seed=7))
    for src, dst, want in ((bed.a, bed.b, 0.05), (bed.b, bed.a, 0.10)):
        seqs = blast(bed, src, dst, 10_000, 6001)
        assert len(set(seqs)) == len(seqs), "loss alone must not duplicate"
        loss = 1 - len(seqs) / 10_000
        assert abs(loss - want) <= 0.01, f"{src.name}->{dst.name}: {loss:.4f} vs {want}"
    c = bed.stop_link()
    assert abs(c["a2b"]["lost"] / c["a2b"]["rx"] - 0.05) <= 0.01


def test_duplication(emu_bed):
    bed = emu_bed(LinkSpec(dup_pct=10, seed=3))
    seqs = blast(bed, bed.a, bed.b, 2000, 6002)
    assert set(seqs) == set(range(2000)), "duplication alone must not lose"
    dups = len(seqs) - 2000
    assert 120 <= dups <= 280, f"{dups} duplicates of 2000 at 10%"


def test_reordering(emu_bed):
    """10% of frames skip the 10 ms delay and arrive ahead of earlier ones."""
    bed = emu_bed(LinkSpec(delay_ms=10, reorder_pct=10, seed=5))
    seqs = blast(bed, bed.a, bed.b, 2000, 6003)
    assert sorted(seqs) == list(range(2000)), "reordering alone must not lose or duplicate"
    # a datagram arrived early if a lower-numbered one came after it
    early, lowest_after = 0, float("inf")
    for s in reversed(seqs):
        early += s > lowest_after
        lowest_after = min(lowest_after, s)
    assert 0.05 <= early / 2000 <= 0.15, f"{early} of 2000 arrived early"


def test_corruption_is_caught_by_checksums(emu_bed):
    bed = emu_bed(LinkSpec(a2b={"corrupt_pct": 5}, seed=11))
    seqs = blast(bed, bed.a, bed.b, 4000, 6004)
    c = bed.stop_link()
    corrupted = c["a2b"]["corrupted"]
    assert 100 <= corrupted <= 300, c
    # Every flipped bit lands in a checksummed header or payload: the host drops the
    # datagram (blast() also checks no altered one arrives). The counter also covers
    # the bed's own few frames (TCP probe, IPv6 ND), hence the small slack.
    lost = 4000 - len(seqs)
    assert corrupted - 5 <= lost <= corrupted, (lost, c)


def tcp_transfer(bed, nbytes, fam="ip4", port=6005, timeout=60):
    """nbytes over TCP a -> b; returns (seconds, received bytes match sent)."""
    addr = getattr(bed.b, fam)
    famc = socket.AF_INET6 if fam == "ip6" else socket.AF_INET
    lsn = bed.b.socket(famc)
    lsn.bind((addr, port))
    lsn.listen(1)
    data = os.urandom(nbytes)
    digest = {}

    def sink():
        lsn.settimeout(timeout)
        conn, _ = lsn.accept()
        conn.settimeout(timeout)
        h, n = hashlib.sha256(), 0
        while (d := conn.recv(1 << 16)):
            h.update(d)
            n += len(d)
        digest["got"] = (n, h.hexdigest())
        conn.close()

    t = threading.Thread(target=sink)
    t.start()
    c = bed.a.socket(famc)
    c.settimeout(timeout)
    t0 = time.perf_counter()
    c.connect((addr, port))
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    t.join(timeout)
    elapsed = time.perf_counter() - t0
    c.close()
    lsn.close()
    return elapsed, digest.get("got") == (nbytes, hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("fam", ["ip4", "ip6"])
def test_tcp_survives_every_impairment(emu_bed, fam):
    bed = emu_bed(LinkSpec(delay_ms=5, jitter_ms=1, loss_pct=1, dup_pct=1, reorder_pct=1,
                           corrupt_pct=0.5))
    _, ok = tcp_transfer(bed, 2 << 20, fam)
    assert ok, "the byte stream arrived altered or incomplete"


def test_rate_limit(emu_bed):
    """10 Mbit/s of Ethernet frames: TCP goodput lands a few percent below (headers)."""
    bed = emu_bed(LinkSpec(rate_mbit=10, limit=200))
    secs, ok = tcp_transfer(bed, 2_500_000)
    assert ok
    mbit = 2_500_000 * 8 / secs / 1e6
    assert 8.5 <= mbit <= 10.0, f"{mbit:.2f} Mbit/s through a 10 Mbit/s link"


def test_bare_passthrough_is_not_the_bottleneck(emu_bed):
    """No impairment: well above the rates the bench emulates (100 Mbit/s and below)."""
    bed = emu_bed(LinkSpec())
    secs, ok = tcp_transfer(bed, 50 << 20)
    assert ok
    assert (50 << 20) * 8 / secs / 1e6 > 300


@pytest.mark.parametrize("flag,value,says", [
    ("--loss", "150%", "between 0% and 100%"),
    ("--delay", "25", "needs a unit"),
    ("--rate", "fast", "not a number"),
    ("--frobnicate", "1", "unknown option"),
])
def test_bad_input_one_clear_line(flag, value, says):
    r = subprocess.run([str(testbed.find_linkemu()), "--a", "x", "--b", "y", flag, value],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_missing_interface_is_named():
    if testbed.require_root():
        pytest.skip(testbed.require_root())
    r = subprocess.run([str(testbed.find_linkemu()), "--a", "nosuch0", "--b", "lo"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "nosuch0" in r.stderr, r.stderr
