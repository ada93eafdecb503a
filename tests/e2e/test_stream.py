"""Issue 3's "Done when": a moved connection behaves like TCP from the
application's side - every byte, in order, whatever the write pattern; close,
half-close and RST keep their meaning; a reader that stops reading blocks the
writer with bounded memory; reordered and duplicated datagrams are absorbed and
a lost one resets both ends loudly. Every test runs over IPv4 and IPv6.

The applications are plain socket programs (stream_apps.py) run in the hosts'
cgroups; the datagram impairments are a TC program of the tests
(tests/bpf/impair.bpf.c, built into build/bpf/impair.bpf.o).
"""
from __future__ import annotations

import json
import os
import select
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from apps import PY
from hookerd import BUILD, Hookerd, wait_for
from testbed import LinkSpec, TwoHosts, require_root

APP = Path(__file__).resolve().with_name("stream_apps.py")
IMPAIR_OBJ = BUILD / "bpf" / "impair.bpf.o"
ECHO, ECHO_AFTER_EOF, SINK = 8000, 8001, 8002
PORTS = [ECHO, ECHO_AFTER_EOF, SINK]
GiB = 1 << 30
MiB = 1 << 20

FAMILY = pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
# What a writer's send() says once its connection was reset: ECONNRESET, or
# EPIPE when the reset came while a send it was blocked in had copied part
# of its bytes. The kernel's sockmap send (tcp_bpf_sendmsg) then returns
# that part and consumes the error, so the next send finds only the closed
# socket; plain TCP's keeps the error for the next call (README, "Known
# limitations").
RESET_SEEN_BY_WRITER = ("ECONNRESET", "EPIPE")


# ---------------------------------------------------------------- helpers

def hookerds(bed):
    a = Hookerd(bed.a, PORTS).start()
    b = Hookerd(bed.b, PORTS).start()
    return a, b


def stop_both(a: Hookerd, b: Hookerd):
    ra, rb = a.stop(), b.stop()
    assert ra == 0, f"hookerd a exit {ra}: {a.stderr()[-2000:]}"
    assert rb == 0, f"hookerd b exit {rb}: {b.stderr()[-2000:]}"


@pytest.fixture
def hooked(bed):
    """hookerd on both hosts, moving connections to the three test ports."""
    a, b = hookerds(bed)
    yield bed, a, b
    stop_both(a, b)


def dst(bed, v6: bool) -> str:
    return bed.b.ip6 if v6 else bed.b.ip4


class Lines:
    """Line reader over a process's stdout with a deadline on every line."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.buf, self.eof = proc, b"", False
        self.seen: list[str] = []

    def next(self, timeout: float) -> str | None:
        """The next line; None at EOF; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            if self.eof:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return self._keep(line)
                return None
            left = deadline - time.monotonic()
            assert left > 0, f"no line from {self.proc.args[-6:]} in {timeout}s; saw {self.seen[-5:]}"
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if chunk:
                    self.buf += chunk
                else:
                    self.eof = True
        line, self.buf = self.buf.split(b"\n", 1)
        return self._keep(line)

    def _keep(self, line: bytes) -> str:
        s = line.decode(errors="replace")
        self.seen.append(s)
        return s

    def until(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.0, deadline - time.monotonic()))
            assert line is not None, f"EOF before {prefix!r}; saw {self.seen[-5:]}"
            if line.startswith(prefix):
                return line

    def result(self, timeout: float) -> dict:
        """The program's `result {...}` line."""
        return json.loads(self.until("result ", timeout)[len("result "):])


def app(host, role: str, *args, **kw) -> tuple[subprocess.Popen, Lines]:
    p = host.popen([PY, APP, role, *map(str, args)], stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, **kw)
    return p, Lines(p)


def server(host, role: str, *args, timeout=10.0) -> tuple[subprocess.Popen, Lines]:
    """Starts a server app and returns once it printed `listening`."""
    p, lines = app(host, role, *args)
    lines.until("listening", timeout)
    return p, lines


def finish(p: subprocess.Popen, lines: Lines, timeout: float) -> tuple[int, dict]:
    """The result line and exit code of an app; its stderr in the failure text."""
    try:
        res = lines.result(timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}; stderr: {p.stderr.read1(8192) if p.poll() is not None else ''!r}")
    rc = p.wait(timeout=10)
    return rc, res


def run_app(host, role: str, *args, timeout: float) -> tuple[int, dict, str]:
    r = host.run([PY, APP, role, *map(str, args)], timeout=timeout, check=False)
    res = [json.loads(l[len("result "):]) for l in r.stdout.splitlines()
           if l.startswith("result ")]
    assert res, f"{role}: no result (rc={r.returncode}): {r.stdout[-1000:]} {r.stderr[-2000:]}"
    return r.returncode, res[-1], r.stderr


def server_state(proc: subprocess.Popen, lines: Lines) -> dict:
    """Stops an echo server (SIGTERM) and returns what it says it saw."""
    if proc.poll() is not None:
        return {"exited": proc.returncode, "stderr": proc.stderr.read()[-1500:].decode(errors="replace")}
    proc.terminate()
    try:
        return lines.result(10)
    except AssertionError as e:
        return {"no_state": str(e)}


def live_conns(d: Hookerd, port: int) -> list:
    return [c for c in d.status()["connections"] if port in (c["local_port"], c["remote_port"])]


def no_live_conns(a: Hookerd, b: Hookerd, port: int, timeout=10.0):
    """Every moved connection left both daemons' tables (no leak)."""
    wait_for(lambda: not live_conns(a, port) and not live_conns(b, port), timeout,
             f"connections on :{port} to leave both daemons: "
             f"a={len(live_conns(a, port))} b={len(live_conns(b, port))}")


def veth_drops(bed) -> int:
    return sum(d["rx_dropped"] + d["tx_dropped"] for d in link_drops(bed).values())


def link_drops(bed) -> dict:
    """RX/TX drops of both veth ends (a datagram lost on the veth is a loss too)."""
    out = {}
    for h in (bed.a, bed.b):
        j = json.loads(h.run(["ip", "-j", "-s", "link", "show", h.iface], timeout=10,
                             cgroup=False).stdout)[0]["stats64"]
        out[h.name] = {"rx_dropped": j["rx"]["dropped"], "tx_dropped": j["tx"]["dropped"]}
    return out


# ---------------------------------------------------------------- 1. send patterns

PATTERNS = ["1byte", "iov1x1024", "iov3x512", "iov256x1024", "big4m", "writev",
            "msg_more", "cork", "sendfile"]


@FAMILY
@pytest.mark.parametrize("pattern", PATTERNS)
def test_send_pattern_echoes_byte_exact(hooked, pattern, v6):
    """The kernel's sockmap send matrix (test_sockmap.c) against an echo server
    that reads with sizes of every shape; the client checks every echoed byte."""
    bed, a, b = hooked
    server(bed.b, "echo-server", "--port", ECHO)
    rc, res, err = run_app(bed.a, "patterns-client", "--host", dst(bed, v6), "--port", ECHO,
                           "--pattern", pattern, "--timeout", 30, timeout=45)
    assert rc == 0 and res["ok"], f"{pattern}: {res} {err[-1000:]}"
    assert a.counter("moved_active") == 1 and b.counter("moved_passive") == 1
    # The reader thread's recv() is blocking, and the kernel's sockmap recvmsg
    # returns EAGAIN when a blocked reader is woken without data (README,
    # "Known limitations"): the writer thread's own shutdown(SHUT_WR) does
    # that, and so can other wake-ups of a two-threaded socket. The client
    # retries; what this test holds to is that every byte came back, in order.
    # The single-threaded shutdown-then-recv case, which hookerd does fix, is
    # held to no EAGAIN at all in test_first_bytes_close_and_rst.
    assert res["blocking_recv_eagain"] <= 2, f"EAGAIN storm on a blocking recv(): {res}"
    no_live_conns(a, b, ECHO)


# ---------------------------------------------------------------- 2. many connections

@FAMILY
def test_thousand_connections_in_a_row(hooked, v6):
    """1,000 connections one after the other, each writing a random 0..1 MB,
    shutting down writing at once and reading the whole echo back."""
    bed, a, b = hooked
    reused = [a.counter("slots_reused"), b.counter("slots_reused")]
    srv, lines = server(bed.b, "echo-server", "--port", ECHO)
    rc, res, err = run_app(bed.a, "conns-client", "--host", dst(bed, v6), "--port", ECHO,
                           "--count", 1000, "--concurrency", 1, "--max-size", MiB,
                           "--seed", 1000 + v6, "--timeout", 150, timeout=165)
    if rc != 0 or res["ok"] != 1000:
        raise AssertionError(f"client {res} {err[-1000:]}\nserver {server_state(srv, lines)}"
                             f"\nhookerd a {a.status()['counters']}\nhookerd b {b.status()['counters']}")
    assert a.counter("moved_active") == 1000, a.status()["counters"]
    assert a.counter("no_slot") == 0 and b.counter("no_slot") == 0
    # Each connection's slot pair served the next ones when nothing was left
    # in it (src/core/socket_pair.h), and every echo above came back whole.
    reused = [a.counter("slots_reused") - reused[0], b.counter("slots_reused") - reused[1]]
    print("slot pairs reused", reused)
    assert min(reused) >= 900, reused
    no_live_conns(a, b, ECHO)


@FAMILY
@pytest.mark.parametrize("port", [ECHO, ECHO_AFTER_EOF], ids=["echo", "reply_after_eof"])
def test_hundred_connections_at_once(hooked, v6, port):
    """100 connections at the same time, each random 0..1 MB, half-closed; the
    server either echoes as it reads or answers only after the client's EOF."""
    bed, a, b = hooked
    srv, lines = server(bed.b, "echo-server", "--port", port,
                        *(["--after-eof"] if port == ECHO_AFTER_EOF else []))
    rc, res, err = run_app(bed.a, "conns-client", "--host", dst(bed, v6), "--port", port,
                           "--count", 100, "--concurrency", 100, "--max-size", MiB,
                           "--seed", 2000 + v6, "--timeout", 60, timeout=75)
    if rc != 0 or res["ok"] != 100:
        raise AssertionError(f"client {res} {err[-1000:]}\nserver {server_state(srv, lines)}"
                             f"\nhookerd a {a.status()['counters']}\nhookerd b {b.status()['counters']}")
    assert a.counter("moved_active") == 100, a.status()["counters"]
    no_live_conns(a, b, port)


# ---------------------------------------------------------------- 3. first bytes, close, RST

def check_scenario(scenario: str, size: int, cli: dict, sv: dict, both: str):
    """What the scenario's two ends must have seen (scenario-client and
    -server results); `both` is the failure text."""
    if scenario == "banner":
        assert cli["match"] and cli["reply"] == "250 ok\r\n", both
        assert sv["request"] == "HELO\r\n" and sv["eof"] and "error" not in sv, both
    elif scenario == "both-first":
        assert cli["match"] and cli["eof"] and sv["match"] and sv["eof"], both
    elif scenario == "close-at-once":
        assert sv.get("match") and sv.get("eof") and "error" not in sv, both
    elif scenario == "rst-client":
        assert sv["hello"] == "hello" and sv["read_end"] == "ECONNRESET", both
    elif scenario == "rst-inflight":
        # Whatever part of the 1 MB arrived is a correct prefix; the end is a reset.
        assert sv["read_end"] == "ECONNRESET" and sv["mismatch"] is None, both
        assert sv["received"] <= size, both
    elif scenario == "rst-server":
        assert cli["ok"] == "ok" and cli["read_end"] == "ECONNRESET", both


@FAMILY
@pytest.mark.parametrize("scenario", ["banner", "both-first", "close-at-once", "rst-client",
                                      "rst-inflight", "rst-server"])
def test_first_bytes_close_and_rst(hooked, v6, scenario):
    """banner: the server speaks first. both-first: data right after accept()
    and right after connect(), at once. close-at-once: write then close(); the
    server reads every byte, then EOF. rst-*: SO_LINGER 0 close is abortive; the
    peer's read fails with ECONNRESET, never a clean EOF, never a wrong byte."""
    bed, a, b = hooked
    size = 1_000_000 if scenario == "rst-inflight" else 200_000
    srv, lines = server(bed.b, "scenario-server", "--port", SINK, "--scenario", scenario,
                        "--size", size, "--timeout", 20)
    crc, cli, cerr = run_app(bed.a, "scenario-client", "--host", dst(bed, v6), "--port", SINK,
                             "--scenario", scenario, "--size", size, "--timeout", 20, timeout=30)
    src, sv = finish(srv, lines, 30)
    both = f"client {cli} server {sv} {cerr[-500:]}"
    assert crc == 0 and src == 0 and "error" not in cli, both
    check_scenario(scenario, size, cli, sv, both)
    if scenario.startswith("rst"):
        # Abortive means at once, as over TCP (the RST crosses in one trip).
        aborter, peer = (sv, cli) if scenario == "rst-server" else (cli, sv)
        late = peer["end_t"] - aborter["abort_t"]
        assert late < 1.0, f"the peer saw the reset {late:.2f} s after the abort: {both}"
    assert a.counter("moved_active") == 1 and b.counter("moved_passive") == 1
    no_live_conns(a, b, SINK)


class LostHandshakeAck:
    """Drops the client's last handshake ACK at b (the second packet of each
    connection from a to `port`), while in use; and counts b's SYN-ACK
    retransmissions (TcpExtTCPSynRetrans: TCP's own repair of a lost ACK,
    a second or more later)."""

    def __init__(self, bed, v6: bool, port: int):
        self.host, self.tool = bed.b, "ip6tables" if v6 else "iptables"
        self.rule = ["INPUT", "-p", "tcp", "--dport", str(port), "-m", "connbytes",
                     "--connbytes", "2:2", "--connbytes-dir", "original",
                     "--connbytes-mode", "packets", "-j", "DROP"]

    def syn_retrans(self) -> int:
        lines = self.host.run(["cat", "/proc/net/netstat"], timeout=10, cgroup=False).stdout
        rows = [l.split() for l in lines.splitlines() if l.startswith("TcpExt:")]
        return int(rows[1][rows[0].index("TCPSynRetrans")])

    def dropped(self) -> int:
        out = self.host.run([self.tool, "-w", "-L", "INPUT", "-v", "-x", "-n"], timeout=10,
                            cgroup=False).stdout
        return sum(int(l.split()[0]) for l in out.splitlines() if "connbytes" in l)

    def __enter__(self):
        self.host.run([self.tool, "-w", "-I", *self.rule], timeout=10, cgroup=False)
        self.retrans0 = self.syn_retrans()
        return self

    def __exit__(self, *exc):
        self.host.run([self.tool, "-w", "-D", *self.rule], timeout=10, cgroup=False, check=False)


def lost_ack_echo(bed, a: Hookerd, b: Hookerd, v6: bool, clean_link=True):
    """The client's last handshake ACK is lost, then it writes 4 KB, shuts
    down writing and reads the echo. Over TCP its first data segment would
    complete the handshake at the server; here the bytes go through hookerd,
    and then its FIN. hookerd b completes the handshake when the bytes come
    (the ACK TCP would have taken from them), and holds the FIN as a moved
    connection's until the bytes are delivered: the echo comes back whole,
    not cut by an early EOF, and (on a link that loses nothing else) without
    the server's SYN-ACK retry. On a lossy link the packet dropped may be a
    retransmitted SYN instead, and then no ACK is missing: only the bytes
    are checked there."""
    completed = b.counter("handshakes_completed")
    with LostHandshakeAck(bed, v6, ECHO) as lost:
        srv, lines = server(bed.b, "echo-server", "--port", ECHO)
        rc, res, err = run_app(bed.a, "patterns-client", "--host", dst(bed, v6), "--port", ECHO,
                               "--pattern", "iov1x1024", "--timeout", 30, timeout=45)
        if rc != 0 or not res["ok"]:
            raise AssertionError(f"client {res} {err[-1000:]}\nserver {server_state(srv, lines)}"
                                 f"\nhookerd b {b.status()['counters']}")
        assert lost.dropped() == 1
        if clean_link:
            assert lost.syn_retrans() == lost.retrans0, "the server's SYN-ACK retry brought it up"
    if clean_link:
        assert b.counter("handshakes_completed") == completed + 1, b.status()["counters"]["daemon"]


def lost_ack_then_reset(bed, a: Hookerd, b: Hookerd, v6: bool, clean_link=True):
    """The client's last handshake ACK is lost, and it aborts (SO_LINGER 0)
    right after writing 1 MB. Its RST may reach the server before the bytes
    that went through hookerd; an RST to a handshake still completing would
    only cancel it, and the server would never see the connection. hookerd b
    completes the handshake first: the server accepts, reads a correct
    prefix, then ECONNRESET, as over TCP."""
    size = 1_000_000
    completed = b.counter("handshakes_completed")
    with LostHandshakeAck(bed, v6, SINK) as lost:
        srv, lines = server(bed.b, "scenario-server", "--port", SINK, "--scenario", "rst-inflight",
                            "--size", size, "--timeout", 20)
        crc, cli, cerr = run_app(bed.a, "scenario-client", "--host", dst(bed, v6), "--port", SINK,
                                 "--scenario", "rst-inflight", "--size", size, "--timeout", 20,
                                 timeout=30)
        src, sv = finish(srv, lines, 30)
        assert lost.dropped() == 1
    both = f"client {cli} server {sv} {cerr[-500:]}"
    assert crc == 0 and src == 0 and "error" not in cli, both
    check_scenario("rst-inflight", size, cli, sv, both)
    if clean_link:
        assert b.counter("handshakes_completed") == completed + 1, b.status()["counters"]["daemon"]


@FAMILY
def test_lost_handshake_ack_is_given_by_hookerd(hooked, v6):
    bed, a, b = hooked
    lost_ack_echo(bed, a, b, v6)
    assert a.counter("moved_active") == 1 and b.counter("moved_passive") == 1
    no_live_conns(a, b, ECHO)


@FAMILY
def test_lost_handshake_ack_then_reset_reaches_the_server(hooked, v6):
    bed, a, b = hooked
    lost_ack_then_reset(bed, a, b, v6)
    no_live_conns(a, b, SINK)


# ---------------------------------------------------------------- 4. back-pressure

class RssSampler(threading.Thread):
    """VmRSS (kB) of each hookerd and the kernel's TCP memory (pages, all
    namespaces: /proc/net/sockstat), sampled every 20 ms until stopped."""

    def __init__(self, daemons: dict[str, Hookerd]):
        super().__init__(daemon=True)
        self.pids = {k: d.proc.pid for k, d in daemons.items()}
        self.max_kb = {k: 0 for k in daemons}
        self.tcp_pages = [0, 0]   # at start, max
        self.samples = 0
        self.halt = threading.Event()

    @staticmethod
    def tcp_mem_pages() -> int:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    w = line.split()
                    return int(w[w.index("mem") + 1])
        return 0

    def run(self):
        self.tcp_pages = [self.tcp_mem_pages()] * 2
        while not self.halt.wait(0.02):
            for k, pid in self.pids.items():
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                self.max_kb[k] = max(self.max_kb[k], int(line.split()[1]))
                except OSError:
                    pass
            self.tcp_pages[1] = max(self.tcp_pages[1], self.tcp_mem_pages())
            self.samples += 1

    def stop(self):
        self.halt.set()
        self.join(5)


@FAMILY
def test_stopped_reader_blocks_writer_with_bounded_memory(hooked, v6):
    """The reader stops reading for 10 s while the writer pushes as fast as it
    can: the writer stalls, hookerd stays under 64 MB RSS, then 1 GiB drains
    and every byte is checked against the pattern (nothing stored)."""
    bed, a, b = hooked
    for d in (a, b):   # the sampled pid is hookerd itself (nsenter execs it)
        assert Path(f"/proc/{d.proc.pid}/comm").read_text().strip() == "hookerd"
    rss = RssSampler({"a": a, "b": b})
    rss.start()
    try:
        rd, rlines = server(bed.b, "pattern-reader", "--port", SINK, "--sleep", 10,
                            "--timeout", 170, "--idle-timeout", 30, "--seed", 7)
        wr, wlines = app(bed.a, "pattern-writer", "--host", dst(bed, v6), "--port", SINK,
                         "--total", GiB, "--progress", "--timeout", 170, "--seed", 7)
        accepted = float(rlines.until("accepted", 15).split()[1])
        draining = float(rlines.until("draining", 20).split()[1])
        # The writer's progress: (time, bytes) every 50 ms, read up to now.
        progress = []
        while True:
            line = wlines.next(15)
            assert line is not None, f"writer ended early: {wlines.seen[-3:]}"
            if line.startswith("progress"):
                _, t, n = line.split()
                progress.append((float(t), int(n)))
                if float(t) >= draining:
                    break
        res_w = wlines.result(170)
        assert wr.wait(10) == 0
        _, res_r = finish(rd, rlines, 30)
    finally:
        rss.stop()
    asleep = [(t, n) for t, n in progress if accepted + 5 <= t <= draining]
    assert len(asleep) >= 50, f"too few progress samples while the reader slept: {len(asleep)}"
    stalled_at = asleep[-1][1]
    moved = stalled_at - asleep[0][1]
    tcp_mib = (rss.tcp_pages[1] - rss.tcp_pages[0]) * 4096 / MiB
    info = (f"writer had written {stalled_at} B when the reader woke, {moved} B of them in the "
            f"last {asleep[-1][0] - asleep[0][0]:.1f} s of its sleep; max hookerd RSS "
            f"a={rss.max_kb['a']} kB b={rss.max_kb['b']} kB; kernel TCP memory grew by "
            f"{tcp_mib:.0f} MiB; writer {res_w}; reader {res_r}; veth drops {link_drops(bed)}")
    print(f"\nback-pressure {'v6' if v6 else 'v4'}: {info}")
    # The writer stalled while the reader slept: nothing moved in the last 5 s,
    # and what it had written but nobody had read (queued somewhere) is bounded.
    assert moved <= MiB, f"the writer kept writing while nobody read: {info}"
    assert stalled_at < 64 * MiB, f"too much queued for a reader that does not read: {info}"
    # hookerd's memory stayed bounded throughout.
    assert rss.samples > 100
    for k, kb in rss.max_kb.items():
        assert kb < 64 * 1024, f"hookerd {k} reached {kb} kB RSS: {info}"
    # Every byte arrived, checked; both ends saw a clean end.
    assert res_r["received"] == GiB and res_r["mismatch"] is None and \
        res_r["read_end"] == "EOF", info
    assert res_w.get("reply") == f"ok {GiB}\n" and "error" not in res_w, info
    # The writer was held back by the slow lane, and the fast one took over
    # again once hookerd had caught up (hk_lanes).
    assert a.counter("lane_to_slow") >= 1 and a.counter("lane_to_fast") >= 1, \
        a.status()["counters"]


@FAMILY
def test_nonblocking_writer_through_both_lanes(hooked, v6):
    """A non-blocking writer (its sends take what fits, as iperf3's do) and a
    reader that stops for 0.2 s after every 24 MiB: the sends switch between
    the fast and the slow lane many times, some cut short by the slow lane's
    full buffers, and every byte still arrives once, in order."""
    bed, a, b = hooked
    total = 192 * MiB
    rd, rlines = server(bed.b, "pattern-reader", "--port", SINK, "--pause-every", 24 * MiB,
                        "--varied-reads", "--timeout", 60, "--seed", 5)
    code, res_w, err = run_app(bed.a, "pattern-writer", "--host", dst(bed, v6), "--port", SINK,
                               "--total", total, "--chunk", 131072, "--nonblocking",
                               "--timeout", 60, "--seed", 5, timeout=70)
    _, res_r = finish(rd, rlines, 30)
    counters = a.status()["counters"]
    info = f"writer {res_w} {err[-300:]}; reader {res_r}; hookerd a {counters}"
    assert code == 0 and res_w.get("reply") == f"ok {total}\n", info
    assert res_r["received"] == total and res_r["mismatch"] is None, info
    assert res_w.get("eagain", 0) > 0, f"the writer was never held back: {info}"
    # Held back more than once, and back on the fast lane after it (how
    # often depends on the timing of the pauses).
    assert a.counter("lane_to_slow") >= 2 and a.counter("lane_to_fast") >= 1, info


EVENT_STALL = 20    # seconds without a byte written: the writer is stuck


@FAMILY
@pytest.mark.parametrize("call", ["sendmsg", "writev", "sendfile"])
@pytest.mark.parametrize("loop", ["epoll-et", "poll"])
def test_event_loop_writer_through_both_lanes(hooked, loop, call, v6):
    """A non-blocking writer as event-driven servers write (issue 8: nginx,
    edge-triggered epoll), 64 MiB to a reader that stops for 0.3 s after every
    16 MiB, so the writer gets far ahead and its sends take the slow lane.
    epoll-et writes until a call returns EAGAIN or less than it asked, then
    writes again only after the next EPOLLOUT edge: the socket must be woken
    when there is room again. poll waits with level-triggered poll(). Every
    wait is bounded: 20 s without progress ends the writer. Every byte
    arrives once, in order."""
    bed, a, b = hooked
    total = 64 * MiB
    rd, rlines = server(bed.b, "pattern-reader", "--port", SINK, "--pause-every", 16 * MiB,
                        "--pause", 0.3, "--varied-reads", "--timeout", 60,
                        "--idle-timeout", EVENT_STALL + 10, "--seed", 8)
    code, res_w, err = run_app(bed.a, "event-writer", "--host", dst(bed, v6), "--port", SINK,
                               "--total", total, "--loop", loop, "--call", call,
                               "--stall", EVENT_STALL, "--timeout", 60, "--seed", 8,
                               timeout=70)
    if res_w.get("error") == "stalled":
        res_r = server_state(rd, rlines)
        raise AssertionError(
            f"{loop} {call} writer stalled: nothing written for {res_w['stalled_s']} s after "
            f"it was held back at {res_w.get('blocked_at')} B ({res_w['eagain']} EAGAIN, "
            f"{res_w['short']} short writes, {res_w['wakeups']} wake-ups in {res_w['waits']} "
            f"waits); {res_w['sent']} of {total} B written, the reader got "
            f"{res_r.get('received')} B\nwriter {res_w}\nreader {res_r}\n"
            f"hookerd a {a.status()['counters']}")
    _, res_r = finish(rd, rlines, 30)
    counters = a.status()["counters"]
    info = f"writer {res_w} {err[-300:]}; reader {res_r}; hookerd a {counters}"
    print(f"\n{loop} {call} {'v6' if v6 else 'v4'}: writer {res_w}; lanes to slow "
          f"{counters['kernel'].get('lane_to_slow')}, to fast {counters['kernel'].get('lane_to_fast')}")
    assert code == 0 and res_w.get("reply") == f"ok {total}\n", info
    assert res_r["received"] == total and res_r["mismatch"] is None, info
    assert res_r["read_end"] == "EOF", info
    # The writer was held back, was woken, and wrote again: the wake-up path.
    assert res_w["eagain"] + res_w["short"] > 0, f"the writer was never held back: {info}"
    assert res_w["resumed"] > 0, f"the writer never wrote again after being held back: {info}"
    assert a.counter("lane_to_slow") >= 1 and a.counter("lane_to_fast") >= 1, info
    assert a.counter("moved_active") == 1 and b.counter("moved_passive") == 1, info
    # hookerd woke it (its injected ACK reached the socket's sock_ops program).
    assert a.counter("writers_woken") >= 1 and a.counter("wake_failed") == 0, info
    assert a.counter("wake_acks_failed") == 0, info


@FAMILY
def test_threads_sending_on_one_socket_keep_their_order(hooked, v6):
    """Four threads send on one socket at the same time, 256 bytes a call,
    while the reader stops for a second after every 8 MiB, so the sends
    switch lanes under them: each thread's bytes arrive in its order, none
    lost or repeated (where the threads' bytes interleave is free, as over
    TCP)."""
    bed, a, b = hooked
    per_thread = 10 * MiB
    rd, rlines = server(bed.b, "threads-reader", "--port", SINK, "--bytes", per_thread,
                        "--pause-every", 8 * MiB, "--pause", 1.0, "--timeout", 90)
    code, res_w, err = run_app(bed.a, "threads-writer", "--host", dst(bed, v6), "--port", SINK,
                               "--threads", 4, "--bytes", per_thread, "--timeout", 90,
                               timeout=100)
    _, res_r = finish(rd, rlines, 30)
    info = f"writer {res_w} {err[-300:]}; reader {res_r}; hookerd a {a.status()['counters']}"
    assert code == 0 and res_w.get("reply") == f"ok {4 * per_thread}\n", info
    assert res_r["bad"] is None and res_r["per_thread"] == [per_thread] * 4, info
    assert a.counter("lane_to_slow") >= 2 and a.counter("lane_to_fast") >= 1, info


# ---------------------------------------------------------------- 5. impairments

class Impair:
    """impair.bpf.o (tests/bpf/impair.bpf.c): loaded and pinned with bpftool,
    configured through its `cfg` map, attached with tc (clsact, direct action).
    One loaded copy: its programs share the cfg and stats maps wherever attached."""

    STATS = ["data", "dropped", "duplicated", "delayed", "obs_data", "obs_late",
             "dropped_offset", "obs_gso"]

    def __init__(self, bed, name="impair"):
        assert IMPAIR_OBJ.exists(), f"{IMPAIR_OBJ} is missing: cmake --build build"
        self.dir = Path(f"/sys/fs/bpf/{bed.prefix}-{name}")
        self.maps = self.dir / "maps"
        subprocess.run(["bpftool", "prog", "loadall", str(IMPAIR_OBJ), str(self.dir),
                        "type", "classifier", "pinmaps", str(self.maps)],
                       check=True, capture_output=True, timeout=30)

    def configure(self, udp_port=7000, drop_nth=0, dup_every=0, delay_nth=0, delay_count=0,
                  delay_prio=0, ingress=False):
        value = struct.pack("<IIQQQQII", udp_port, delay_prio, drop_nth, dup_every, delay_nth,
                            delay_count, int(ingress), 0)
        subprocess.run(["bpftool", "map", "update", "pinned", str(self.maps / "cfg"),
                        "key", "hex", "00", "00", "00", "00",
                        "value", "hex", *[f"{x:02x}" for x in value]],
                       check=True, capture_output=True, timeout=10)

    def attach(self, host, direction: str, prog: str, pref: int):
        r = host.run(["tc", "qdisc", "add", "dev", host.iface, "clsact"], timeout=10,
                     cgroup=False, check=False)
        assert r.returncode == 0 or "File exists" in r.stderr or "Exclusivity" in r.stderr, r.stderr
        host.run(["tc", "filter", "add", "dev", host.iface, direction, "pref", str(pref),
                  "bpf", "da", "object-pinned", str(self.dir / prog)], timeout=10, cgroup=False)

    def reset_stats(self):
        """Counts from zero again (the impairments' datagram numbers too)."""
        subprocess.run(["bpftool", "map", "update", "pinned", str(self.maps / "stats"),
                        "key", "hex", "00", "00", "00", "00", "value", "hex", *["00"] * 64],
                       check=True, capture_output=True, timeout=10)

    def stats(self) -> dict:
        r = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", str(self.maps / "stats"),
                            "key", "hex", "00", "00", "00", "00"],
                           check=True, capture_output=True, text=True, timeout=10)
        raw = bytes(int(x, 16) for x in json.loads(r.stdout)["value"])
        return dict(zip(self.STATS, struct.unpack("<8Q", raw)))

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def impair(bed):
    """The impairment program, loaded. hookerd sends GSO groups of up to 44
    datagrams, which cross the veth whole; with UDP segmentation off on a's
    eth0 they are cut into datagrams after a's egress hook, and with GRO off on
    b's, each packet on b's ingress is one datagram."""
    imp = Impair(bed)
    bed.a.run(["ethtool", "-K", bed.a.iface, "tx-udp-segmentation", "off"], timeout=10,
              cgroup=False)
    bed.b.run(["ethtool", "-K", bed.b.iface, "gro", "off"], timeout=10, cgroup=False)
    yield imp
    imp.close()


def transfer(bed, v6, total, timeout=60, seed=11):
    """pattern-writer on a -> pattern-reader on b; both results."""
    rd, rlines = server(bed.b, "pattern-reader", "--port", SINK, "--seed", seed,
                        "--varied-reads", "--timeout", timeout, "--idle-timeout", timeout / 2)
    wrc, w, werr = run_app(bed.a, "pattern-writer", "--host", dst(bed, v6), "--port", SINK,
                           "--total", total, "--seed", seed, "--timeout", timeout,
                           timeout=timeout + 15)
    _, r = finish(rd, rlines, timeout + 15)
    return w, r


@FAMILY
@pytest.mark.parametrize("how", ["duplicate", "reorder"])
def test_duplicated_or_reordered_datagrams_are_absorbed(bed, impair, v6, how):
    """duplicate: every 3rd DATA datagram a->b is delivered twice (on b's
    ingress). reorder: on a's egress, two packets of datagrams are held in a
    slow HTB class while later ones overtake them. The reader gets exactly the
    bytes written, and b saw datagrams arrive late (the impairment happened)."""
    total = 16 * MiB
    if how == "duplicate":
        impair.configure(dup_every=3, ingress=True)
        impair.attach(bed.b, "ingress", "impair", pref=10)
    else:
        # Class 1:20 sends at 100 Mbit/s, unclassified traffic takes HTB's
        # direct queue, unshaped. The first packet steered there drains the
        # class's tokens; the next two wait behind it (a GSO group of 44
        # datagrams for about 5 ms, far below hookerd's gap timeout).
        bed.a.run(["tc", "qdisc", "add", "dev", bed.a.iface, "root", "handle", "1:", "htb"],
                  timeout=10, cgroup=False)
        bed.a.run(["tc", "class", "add", "dev", bed.a.iface, "parent", "1:", "classid", "1:20",
                   "htb", "rate", "100mbit", "ceil", "100mbit", "burst", "1", "cburst", "1"],
                  timeout=10, cgroup=False)
        impair.configure(delay_nth=50, delay_count=3, delay_prio=0x00010020)
        impair.attach(bed.a, "egress", "impair", pref=10)
    impair.attach(bed.b, "ingress", "observe", pref=20)
    a, b = hookerds(bed)
    for attempt in range(1, 4):
        before = veth_drops(bed)
        w, r = transfer(bed, v6, total)
        st = impair.stats()
        info = f"writer {w} reader {r} impair {st} drops {link_drops(bed)}"
        assert r["mismatch"] is None, f"the reader got a wrong byte: {info}"
        # The veth itself may drop datagrams (its receive backlog overflows
        # on a loaded machine): a real loss, which this mechanism answers
        # with a reset, as it must. What this test checks needs a transfer
        # that lost nothing on the way: another one.
        if veth_drops(bed) > before and r["read_end"] == "ECONNRESET" and attempt < 3:
            print(f"\nthe veth dropped datagrams, transfer {attempt} reset: {info}")
            impair.reset_stats()
            continue
        break
    assert r["received"] == total and r["read_end"] == "EOF", info
    assert w.get("reply") == f"ok {total}\n" and "error" not in w, info
    assert a.counter("moved_active") == attempt, info
    assert st["obs_gso"] == 0, f"b received coalesced packets: {info}"
    if how == "duplicate":
        assert st["duplicated"] >= 1000, info
        assert st["obs_late"] >= st["duplicated"], info   # every copy reached b, late
        assert b.counter("rx_duplicate") > 0, b.status()["counters"]
    else:
        assert st["delayed"] == 3, info
        assert st["obs_late"] >= 1, f"no datagram arrived out of order: {info}"
    print(f"\n{how} {'v6' if v6 else 'v4'}: {info}")
    stop_both(a, b)


@FAMILY
def test_link_reordering_and_duplication_are_absorbed(v6):
    """The same through the link emulator: random reordering and duplication of
    every frame (datagrams, ACKs, the TCP handshake) both ways."""
    reason = require_root()
    if reason:
        pytest.skip(reason)
    spec = LinkSpec(delay_ms=1, reorder_pct=5, dup_pct=5, seed=3)
    with TwoHosts(link=spec) as bed:
        a, b = hookerds(bed)
        w, r = transfer(bed, v6, 8 * MiB)
        info = (f"writer {w} reader {r}\nhookerd a {a.status()['counters']} {a.stderr()[-500:]}"
                f"\nhookerd b {b.status()['counters']} {b.stderr()[-500:]}")
        moved = a.counter("moved_active")
        stop_both(a, b)
        link = bed.stop_link()
        info += f"\nlink {link}"
        assert r["received"] == 8 * MiB and r["mismatch"] is None and r["read_end"] == "EOF", info
        assert w.get("reply") == f"ok {8 * MiB}\n" and "error" not in w, info
        assert moved == 1, info
        total = {k: sum(d[k] for d in link.values()) for k in next(iter(link.values()))}
        assert total["reordered"] > 0 and total["duplicated"] > 0, link
        assert total["lost"] == 0 and total["overflow"] == 0, f"the link lost frames: {link}"


@FAMILY
def test_lost_datagram_resets_both_ends(bed, impair, v6):
    """The 100th DATA datagram a->b is dropped for good (on b's ingress, by a
    classic tc program that runs after hookerd's tcx one, whose verdict is
    "next", and before the socket): this mechanism does not retransmit, so
    both applications get ECONNRESET, the reset is counted and logged, and the
    reader got only correct bytes, none past the gap."""
    total = 16 * MiB
    impair.configure(drop_nth=100, ingress=True)
    impair.attach(bed.b, "ingress", "impair", pref=10)
    a, b = hookerds(bed)
    w, r = transfer(bed, v6, total, timeout=40)
    st = impair.stats()
    info = f"writer {w} reader {r} impair {st}"
    assert st["dropped"] == 1, info
    gap = st["dropped_offset"]
    # The reader: a correct prefix, nothing past the gap, then ECONNRESET.
    assert r["mismatch"] is None, f"the reader got a wrong byte: {info}"
    assert r["received"] <= gap, f"bytes past the gap at {gap} were delivered: {info}"
    assert r["read_end"] == "ECONNRESET", f"reader: {info}"
    # The writer: its send() or its wait for the verdict fails.
    assert w.get("error") in RESET_SEEN_BY_WRITER, f"writer: {info}"
    resets = {f"{k}.{n}": d.counter(n) for k, d in (("a", a), ("b", b))
              for n in ("resets_sent", "resets_received")}
    assert a.counter("resets_sent") + b.counter("resets_sent") >= 1, resets
    assert "reset" in (a.stderr() + b.stderr()).lower(), f"the reset was not logged: {resets}"
    print(f"\nloss {'v6' if v6 else 'v4'}: {info} {resets}")
    stop_both(a, b)
