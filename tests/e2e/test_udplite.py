"""The `udplite` mechanism end to end: with both hosts' rule PORT=udplite, an
unmodified download crosses as UDP-Lite datagrams (IP protocol 136) on
hookerd's port, their checksum covering the UDP-Lite and Hooker headers only,
and not one TCP payload byte; a client asking for udplite from a server that
accepts only udp stays plain TCP, each side counting why."""
import json
import subprocess

import pytest

from apps import CLIENT, PY, SINK, fetch, http_server, listening, make_files, url
from hookerd import HOOKERCTL, UDP_PORT, Hookerd, wait_for
from testbed import Capture

PORT = 8000
# The checksum coverage Hooker sets: the 8-byte UDP-Lite header and the
# 32-byte frame header (wire::kHeader).
COVERAGE = 8 + 32
# What a capture needs to see: TCP, UDP and UDP-Lite (tcpdump's "udp" is
# IP protocol 17 only).
FILTER = "tcp or udp or ip proto 136 or ip6 proto 136"


def mech_counters(hd, name):
    return hd.status()["mechanisms"][name]["counters"]


def mechs_state(hd):
    r = subprocess.run([HOOKERCTL, "--control", hd.control, "mechanisms", "--json"],
                       capture_output=True, text=True, timeout=10, check=True)
    return {m["name"]: m["state"] for m in json.loads(r.stdout)["mechanisms"]}


def coverages(path):
    """The UDP-Lite checksum coverage field of each datagram in a pcap."""
    r = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "udplite", "-T", "fields",
                        "-e", "udp.checksum_coverage"],
                       capture_output=True, text=True, timeout=60, check=True)
    return [int(x) for x in r.stdout.split()]


@pytest.fixture
def hooked(bed):
    """hookerd on both hosts, moving PORT over udplite."""
    a = Hookerd(bed.a, [f"{PORT}=udplite"]).start()
    b = Hookerd(bed.b, [f"{PORT}=udplite"]).start()
    yield bed, a, b
    assert a.stop() == 0, a.stderr()
    assert b.stop() == 0, b.stderr()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_download_crosses_as_udplite(hooked, tmp_path, v6):
    bed, a, b = hooked
    sums = make_files(tmp_path, {"f": 510_000})
    http_server(bed.b, tmp_path, PORT)
    # A Capture of its own (not host.capture): the pcap stays for tshark's
    # look at the coverage field.
    cap = Capture(bed.a, FILTER, tmp_path / "cap.pcap")
    cap.start()
    try:
        assert fetch(bed.a, url(bed.b, PORT, "f", v6), tmp_path / "got") == sums["f"]
    finally:
        cap.stop()
    # Moved: no TCP payload on the port, the file in UDP-Lite on hookerd's
    # port, nothing in plain UDP.
    assert cap.tcp_payload_bytes(PORT) == 0
    assert cap.udp_payload_bytes(UDP_PORT, "udplite") >= 510_000
    assert cap.udp_payload_bytes(UDP_PORT, "udp") == 0
    assert a.counter("moved_active") == 1 and b.counter("moved_passive") == 1
    # Every datagram's checksum covers exactly the headers (a header-only
    # one, an ACK, is covered whole: the same 40 bytes).
    cov = coverages(cap.path)
    assert len(cov) == len(cap.udp_datagrams(UDP_PORT, "udplite")) > 0
    assert set(cov) == {COVERAGE}, sorted(set(cov))
    # The udplite mechanism carried it, the udp one nothing.
    assert mech_counters(b, "udplite")["datagrams_sent"] * 1400 >= 510_000
    assert mech_counters(a, "udplite")["datagrams_received"] * 1400 >= 510_000
    assert mech_counters(a, "udplite")["datagrams_sent"] > 0  # its ACKs
    for hd in (a, b):
        # No rule names udp: it is not even deployed.
        assert "udp" not in hd.status()["mechanisms"]
        assert mechs_state(hd)["udp"] == "not deployed"
        assert mech_counters(hd, "udplite")["rx_wrong_mech"] == 0


def test_status_names_udplite_for_a_live_connection(hooked):
    bed, a, b = hooked
    n, m = 123_457, 654_321
    bed.b.popen([PY, "-c", SINK, str(n), str(m), str(PORT)])
    wait_for(lambda: listening(bed.b, PORT), 10, "sink server")
    cli = bed.a.popen([PY, "-c", CLIENT, str(n), str(m), bed.b.ip4, str(PORT)],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert cli.stdout.readline().strip() == "done"

    def live(d):
        conns = [c for c in d.status()["connections"] if PORT in (c["local_port"], c["remote_port"])]
        return conns[0] if conns else None

    ca = wait_for(lambda: (c := live(a)) and c["bytes_in"] == m and c, 10, "client-side counts")
    assert ca["mechanism"] == "udplite" and (ca["bytes_out"], ca["bytes_in"]) == (n, m)
    cb = wait_for(lambda: live(b), 10, "server-side connection")
    assert cb["mechanism"] == "udplite" and (cb["bytes_in"], cb["bytes_out"]) == (n, m)
    cli.stdin.write("\n")
    cli.stdin.flush()
    assert cli.wait(timeout=10) == 0


def test_server_accepting_only_udp_keeps_udplite_client_on_tcp(bed, tmp_path):
    a = Hookerd(bed.a, [f"{PORT}=udplite"]).start()
    b = Hookerd(bed.b, [f"{PORT}=udp"]).start()
    sums = make_files(tmp_path, {"f": 510_000})
    http_server(bed.b, tmp_path, PORT)
    with bed.a.capture(FILTER) as cap:
        assert fetch(bed.a, url(bed.b, PORT, "f"), tmp_path / "got") == sums["f"]
    # Refused: plain TCP carries it, no datagram of either kind.
    assert cap.tcp_payload_bytes(PORT) >= 510_000
    assert cap.udp_datagrams(UDP_PORT, "udplite") == []
    assert cap.udp_datagrams(UDP_PORT, "udp") == []
    assert b.counter("mech_not_accepted") >= 1
    assert a.counter("peer_refused_mech") >= 1
    assert a.counter("moved_active") == 0 and b.counter("moved_passive") == 0
    assert a.stop() == 0, a.stderr()
    assert b.stop() == 0, b.stderr()
