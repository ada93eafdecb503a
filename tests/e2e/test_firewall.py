"""A path that drops UDP (issue 14): the router between the hosts forwards
TCP and drops every UDP datagram. An application must never be worse off
than with TCP: at most the first connection to that peer fails (a reset,
never a hang), the peer is remembered as unreachable by UDP so the next
connections stay plain TCP, hookerd probes the path itself near the end of
each --udp-retry period (no connection has to fail to find out), and once
the path carries UDP again new connections are moved again."""
import json
import subprocess

import pytest

from apps import fetch, http_server, make_files, url
from hookerd import HOOKERCTL, UDP_PORT, Hookerd, quic_pair, wait_for
from routed import RoutedHosts

PORT = 8000
RETRY_S = 4  # --udp-retry: short, so the test sees UDP tried again


def try_fetch(host, u, out, timeout=20):
    """curl once; its exit code (0: the whole file arrived)."""
    r = host.run(["curl", "-sS", "--fail", "-m", str(timeout), "-o", str(out), u],
                 timeout=timeout + 5, check=False)
    return r.returncode


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_udp_dropped_then_tcp_then_moved_again(tmp_path, v6):
    with RoutedHosts() as bed:
        flags = ["--udp-retry", str(RETRY_S)]
        a = Hookerd(bed.a, [PORT], extra=flags).start()
        b = Hookerd(bed.b, [PORT], extra=flags).start()
        sums = make_files(tmp_path, {"f": 300 * 1024})
        http_server(bed.b, tmp_path, PORT)
        u = url(bed.b, PORT, "f", v6)
        server_ip = bed.b.ip6 if v6 else bed.b.ip4
        bed.drop_udp(True)

        # The first connection is moved, its datagrams vanish: it fails
        # loudly within seconds (curl's own limit is far above).
        rc = try_fetch(bed.a, u, tmp_path / "first")
        assert rc != 0, "the first connection over a UDP-dropping path cannot have worked"
        assert a.counter("resets_peer_unreachable") == 1
        st = a.status()
        assert [p["peer"] for p in st["udp_unreachable"]] == [server_ip]
        human = subprocess.run([HOOKERCTL, "--control", a.control, "status"],
                               capture_output=True, text=True, timeout=10).stdout
        assert f"udp unreachable: {server_ip}" in human
        stats = json.loads(subprocess.run([HOOKERCTL, "--control", a.control, "stats", "--json"],
                                          capture_output=True, text=True, timeout=10).stdout)
        assert stats["gauges"]["udp_unreachable_peers"] == 1
        assert stats["counters"]["mechanisms"]["udp"]["resets_peer_unreachable"] == 1

        # The next ones stay TCP, and work: the payload is on the wire as TCP.
        with bed.a.capture(f"tcp port {PORT} or udp port {UDP_PORT}") as cap:
            for k in range(2):
                assert fetch(bed.a, u, tmp_path / f"tcp{k}") == sums["f"]
        assert cap.tcp_payload_bytes(PORT) >= 2 * 300 * 1024
        assert cap.udp_datagrams(UDP_PORT) == []
        assert a.counter("peer_udp_blocked") >= 2
        assert a.counter("moved_active") == 1

        # hookerd probes the path near the end of --udp-retry; unanswered,
        # it keeps the peer TCP for another period: no connection fails.
        wait_for(lambda: a.counter("path_probes_sent") >= 1 and
                 all(p["since_s"] > RETRY_S + 0.5 for p in a.status()["udp_unreachable"]) and
                 a.status()["udp_unreachable"], 2 * RETRY_S + 5,
                 "a's entry to outlive its first period, probed and unanswered")
        assert fetch(bed.a, u, tmp_path / "tcp-later") == sums["f"]
        assert a.counter("resets_peer_unreachable") == 1
        assert a.counter("moved_active") == 1

        # The path carries UDP again: the next probe is answered, on both
        # hosts, and new connections are moved again.
        bed.drop_udp(False)
        for hd in (a, b):
            wait_for(lambda hd=hd: hd.status()["udp_unreachable"] == [], 2 * RETRY_S + 5,
                     f"{hd.host.name} to try UDP again")
        with bed.a.capture(f"tcp port {PORT} or udp port {UDP_PORT}") as cap:
            assert fetch(bed.a, u, tmp_path / "moved") == sums["f"]
        assert cap.tcp_payload_bytes(PORT) == 0
        assert sum(p.udp_len for p in cap.udp_datagrams(UDP_PORT)) >= 300 * 1024
        assert a.counter("moved_active") == 2
        assert a.counter("resets_peer_unreachable") == 1
        assert a.counter("path_probes_answered") == 1
        assert a.stop() == 0 and b.stop() == 0


def test_retry_flag_checked(tmp_path):
    """--udp-retry and --keepalive: seconds, 1..86400, else one line and exit 2."""
    from hookerd import HOOKERD
    for flag, bad in (("--udp-retry", "0"), ("--keepalive", "-3"), ("--keepalive", "x")):
        r = subprocess.run([HOOKERD, "--redirect", "80", flag, bad],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode != 0, (flag, bad)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and flag.lstrip("-") in lines[0].replace("_", "-"), r.stderr


def test_quic_udp_dropped_then_tcp(tmp_path):
    """quic too: its QUIC connection never hears the peer (the handshake
    times out), the application's connection is reset once, and the next
    one stays plain TCP (the client does not offer it, or the server
    refuses it)."""
    with RoutedHosts() as bed:
        a, b = quic_pair(bed, tmp_path, [f"{PORT}=quic"])
        srv = tmp_path / "srv"
        srv.mkdir()
        sums = make_files(srv, {"f": 100 * 1024})
        http_server(bed.b, srv, PORT)
        bed.drop_udp(True)
        u = url(bed.b, PORT, "f")
        assert try_fetch(bed.a, u, tmp_path / "first", timeout=40) != 0
        # The side whose handshake timed out (the connecting side opens the
        # QUIC connection) remembers the other.
        wait_for(lambda: [p["peer"] for p in a.status()["udp_unreachable"]] == [bed.b.ip4] or
                 [p["peer"] for p in b.status()["udp_unreachable"]] == [bed.a.ip4], 20,
                 "one side to remember the other as unreachable by UDP")
        with bed.a.capture(f"tcp port {PORT}") as cap:
            assert fetch(bed.a, u, tmp_path / "second") == sums["f"]
        assert cap.tcp_payload_bytes(PORT) >= 100 * 1024
        assert a.stop() == 0 and b.stop() == 0
