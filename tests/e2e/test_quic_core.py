"""Issue 11's core matrix: the end-to-end transfers the `udp` mechanism is held
to (test_core.py, test_stream.py) run over `quic`, IPv4 and IPv6, on a bare
veth and on an emulated link with 5% loss, 5% reordering and 5% duplication
both ways. quic retransmits, so on the lossy link every byte still arrives:
the paper's files by sha256, iperf3 both ways, the send patterns, 1,000
connections in a row and 100 at once (echoed as read, and answered only
after the client's half-close), a server speaking first, close and RST.

One bed and one pair of hookerds per link serve the whole module (the QUIC
connection between them is reused across tests, as it would be in use);
each test stops the applications it started, and the pair's counters are
compared as differences."""
from __future__ import annotations

import json
import subprocess

import pytest

from apps import fetch, http_server, listening, make_files, url
from hookerd import UDP_PORT, Hookerd, wait_for
from pki import make_pki
from test_stream import (ECHO, ECHO_AFTER_EOF, MiB, PATTERNS, PORTS, SINK, check_scenario,
                         finish, lost_ack_echo, lost_ack_then_reset, no_live_conns, run_app,
                         server, server_state)
from testbed import LinkSpec, TwoHosts, require_root

IPERF = 5201
HTTP = 8003
QUIC_PORT = UDP_PORT + 1
FAMILY = pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
# 1 ms each way keeps the lossy runs short; the loss, reordering and
# duplication are what the mechanism must absorb.
LINKS = {"clean": None,
         "lossy": LinkSpec(delay_ms=1, loss_pct=5, reorder_pct=5, dup_pct=5, seed=1105)}


@pytest.fixture(scope="module", params=list(LINKS))
def pair(request, tmp_path_factory):
    """(link name, bed, a, b): hookerd on both hosts moving every test port
    over quic, with certificates from one CA made for this module."""
    reason = require_root()
    if reason:
        pytest.skip(reason)
    with TwoHosts(link=LINKS[request.param]) as bed:
        pki = tmp_path_factory.mktemp(f"pki-{request.param}")
        args = make_pki(pki, [bed.a, bed.b])
        rules = [f"{p}=quic" for p in PORTS + [IPERF, HTTP]]
        # Every connection's line, unthrottled: a failure names its cause.
        debug = ["--log-level", "debug"]
        a = Hookerd(bed.a, rules, extra=args[bed.a.name] + debug).start()
        b = Hookerd(bed.b, rules, extra=args[bed.b.name] + debug).start()
        yield request.param, bed, a, b
        ra, rb = a.stop(), b.stop()
        assert ra == 0, a.stderr()[-2000:]
        assert rb == 0, b.stderr()[-2000:]
        if bed.linkemu is not None:
            link = bed.stop_link()
            assert sum(d["lost"] for d in link.values()) > 0, f"the lossy link lost nothing: {link}"


class Moved:
    """Counter differences over one test: what the pair moved, and whether
    every moved connection went over quic with no handshake failing."""

    NAMES = ("moved_active", "moved_passive", "no_slot")

    def __init__(self, a: Hookerd, b: Hookerd):
        self.a, self.b = a, b
        self.start = self._read()
        self.all_start = self._all()

    def _all(self):
        """Every counter of both daemons (kernel, daemon, quic), flat."""
        out = {}
        for host, d in (("a", self.a), ("b", self.b)):
            st = d.status()
            for part in ("kernel", "daemon"):
                for k, v in st["counters"][part].items():
                    out[f"{host}.{k}"] = v
            for k, v in st["mechanisms"]["quic"]["counters"].items():
                out[f"{host}.quic.{k}"] = v
        return out

    def changes(self) -> dict:
        """The counters that moved since the start: what a failure's
        message needs to say where it happened."""
        now = self._all()
        return {k: v - self.all_start.get(k, 0) for k, v in now.items()
                if isinstance(v, int) and v != self.all_start.get(k, 0)}

    def _read(self):
        ca, cb = self.a.status(), self.b.status()
        return {"a": {n: _kernel_or_daemon(ca, n) for n in self.NAMES},
                "b": {n: _kernel_or_daemon(cb, n) for n in self.NAMES},
                "quic_a": ca["mechanisms"]["quic"]["counters"],
                "quic_b": cb["mechanisms"]["quic"]["counters"]}

    def check(self, conns: int):
        now = self._read()
        for host, name in (("a", "moved_active"), ("b", "moved_passive")):
            got = now[host][name] - self.start[host][name]
            assert got == conns, f"{host} {name}: {got}, want {conns}: {now}"
        assert now["a"]["no_slot"] == self.start["a"]["no_slot"], now
        for q in ("quic_a", "quic_b"):
            assert now[q]["handshakes_failed"] == self.start[q]["handshakes_failed"], now[q]
        streams = sum(now[q]["streams_opened"] - self.start[q]["streams_opened"]
                      for q in ("quic_a", "quic_b"))
        # An application's reset that beats the ACK of its stream's header
        # (a lossy link) also sends a refusal naming the connection, on a
        # stream of its own: a's, the connecting side's, counted as refused.
        refusals = now["quic_a"]["streams_refused"] - self.start["quic_a"]["streams_refused"]
        assert streams - refusals == conns, \
            f"{streams} quic streams ({refusals} refusals) for {conns} connections: {now}"


def _kernel_or_daemon(status: dict, name: str) -> int:
    c = status["counters"]
    return c["kernel"].get(name, c["daemon"].get(name, 0))


@pytest.fixture
def q(pair):
    """The module's pair for one test; the applications the test started are
    stopped after it, pass or fail, so the next test finds its ports free."""
    link, bed, a, b = pair
    mark = len(bed.processes())
    yield link, bed, a, b
    bed.stop_processes(since=mark)


def dst(bed, v6):
    return bed.b.ip6 if v6 else bed.b.ip4


def drained(q, port):
    """Every moved connection left both daemons' tables. A connection stays
    until its TCP socket closes, and through the lossy link a lost FIN or
    ACK of it waits out TCP's retransmission backoff, seconds apart."""
    link, _, a, b = q
    no_live_conns(a, b, port, timeout=10 if link == "clean" else 90)


@FAMILY
def test_paper_files_byte_exact(q, tmp_path, v6):
    link, bed, a, b = q
    sums = make_files(tmp_path, {"text-3k": 3_000, "image-510k": 510_000,
                                 "video-26m": 26_000_000})
    http_server(bed.b, tmp_path, HTTP)
    moved = Moved(a, b)
    with bed.a.capture("tcp or udp") as cap:
        for name, want in sums.items():
            assert fetch(bed.a, url(bed.b, HTTP, name, v6), tmp_path / "got",
                         timeout=120) == want, f"{name} over {link} link: sha256 differs"
    moved.check(3)
    assert cap.tcp_payload_bytes(HTTP) == 0
    assert cap.udp_payload_bytes(QUIC_PORT) >= sum((3_000, 510_000, 26_000_000))


@FAMILY
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_iperf3(q, v6, reverse):
    link, bed, a, b = q
    srv = bed.b.popen(["iperf3", "-s", "-1", "-p", str(IPERF)], stdout=subprocess.DEVNULL)
    wait_for(lambda: listening(bed.b, IPERF), 10, "iperf3 server")
    moved = Moved(a, b)
    r = bed.a.run(["iperf3", "-c", dst(bed, v6), "-p", str(IPERF), "-t", "3", "--json"]
                  + (["-R"] if reverse else []), timeout=60, check=False)
    assert r.returncode == 0, f"iperf3 over {link}: {r.stdout[-500:]} {r.stderr}"
    srv.wait(timeout=20)
    end = json.loads(r.stdout)["end"]
    # iperf3 checks nothing; what it counted arrived, over quic.
    assert end["sum_received"]["bytes"] > 1_000_000, end["sum_received"]
    moved.check(2)  # iperf3's control and data connections


@FAMILY
@pytest.mark.parametrize("pattern", PATTERNS)
def test_send_pattern_echoes_byte_exact(q, v6, pattern):
    link, bed, a, b = q
    srv, lines = server(bed.b, "echo-server", "--port", ECHO)
    moved = Moved(a, b)
    rc, res, err = run_app(bed.a, "patterns-client", "--host", dst(bed, v6), "--port", ECHO,
                           "--pattern", pattern, "--timeout", 60, timeout=75)
    if rc != 0 or not res["ok"]:
        raise AssertionError(f"{pattern} over {link}: client {res} {err[-1000:]}\n"
                             f"server {server_state(srv, lines)}")
    moved.check(1)
    drained(q, ECHO)


@FAMILY
def test_thousand_connections_in_a_row(q, v6):
    """1,000 connections one after the other, each writing a random size,
    shutting down writing and reading the whole echo back: up to 1 MB each
    on the veth. Through the lossy link each costs TCP's own handshake and
    FIN retries (a lost SYN, SYN-ACK or handshake ACK waits out TCP's 1 s
    initial timeout: 0.2 s a connection on average), so up to 64 KB each."""
    link, bed, a, b = q
    srv, lines = server(bed.b, "echo-server", "--port", ECHO)
    moved = Moved(a, b)
    size = MiB if link == "clean" else 64 * 1024
    rc, res, err = run_app(bed.a, "conns-client", "--host", dst(bed, v6), "--port", ECHO,
                           "--count", 1000, "--concurrency", 1, "--max-size", size,
                           "--seed", 3000 + v6, "--timeout", 420, timeout=440)
    if rc != 0 or res["ok"] != 1000:
        raise AssertionError(f"over {link}: client {res} {err[-1000:]}\n"
                             f"server {server_state(srv, lines)}")
    moved.check(1000)
    drained(q, ECHO)


@FAMILY
@pytest.mark.parametrize("port", [ECHO, ECHO_AFTER_EOF], ids=["echo", "reply_after_eof"])
def test_hundred_connections_at_once(q, v6, port):
    link, bed, a, b = q
    srv, lines = server(bed.b, "echo-server", "--port", port,
                        *(["--after-eof"] if port == ECHO_AFTER_EOF else []))
    moved = Moved(a, b)
    rc, res, err = run_app(bed.a, "conns-client", "--host", dst(bed, v6), "--port", port,
                           "--count", 100, "--concurrency", 100, "--max-size", MiB,
                           "--seed", 4000 + v6, "--timeout", 120, timeout=135)
    if rc != 0 or res["ok"] != 100:
        ports = [f["port"] for f in res.get("failures", [])]
        raise AssertionError(f"over {link}: client {res} {err[-1000:]}\n"
                             f"server {server_state(srv, lines)}\n"
                             f"hookerd a: {a.lines_about(ports)}\nhookerd b: {b.lines_about(ports)}\n"
                             f"counters: {moved.changes()}")
    moved.check(100)
    drained(q, port)


@FAMILY
@pytest.mark.parametrize("then", ["echo", "reset"])
def test_lost_handshake_ack(q, v6, then):
    """test_stream.py's lost last handshake ACK, the bytes crossing as a quic
    stream: hookerd completes the handshake when the stream comes (or the
    RST does); the echo is whole, the reset reaches the server."""
    link, bed, a, b = q
    moved = Moved(a, b)
    if then == "echo":
        lost_ack_echo(bed, a, b, v6, clean_link=link == "clean")
        moved.check(1)
        drained(q, ECHO)
    else:
        lost_ack_then_reset(bed, a, b, v6, clean_link=link == "clean")
        moved.check(1)
        drained(q, SINK)


@FAMILY
@pytest.mark.parametrize("scenario", ["banner", "both-first", "close-at-once", "rst-client",
                                      "rst-inflight", "rst-server"])
def test_first_bytes_close_and_rst(q, v6, scenario):
    """As test_stream.py's: a server speaking first, data from both ends at
    once, close right after writing (every byte, then EOF), and abortive
    closes that reach the peer as ECONNRESET (RESET_STREAM), never a clean
    EOF and never a wrong byte."""
    link, bed, a, b = q
    size = 1_000_000 if scenario == "rst-inflight" else 200_000
    srv, lines = server(bed.b, "scenario-server", "--port", SINK, "--scenario", scenario,
                        "--size", size, "--timeout", 30)
    moved = Moved(a, b)
    crc, cli, cerr = run_app(bed.a, "scenario-client", "--host", dst(bed, v6), "--port", SINK,
                             "--scenario", scenario, "--size", size, "--timeout", 30, timeout=40)
    src, sv = finish(srv, lines, 40)
    both = f"over {link}: client {cli} server {sv} {cerr[-500:]}"
    assert crc == 0 and src == 0 and "error" not in cli, both
    check_scenario(scenario, size, cli, sv, both)
    moved.check(1)
    drained(q, SINK)
