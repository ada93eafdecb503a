"""Issue 2's "Done when": unmodified TCP applications' data moves onto UDP
between two hosts, and only when both run Hooker."""
import json
import subprocess

import pytest

from apps import CLIENT, PY, SINK, fetch, http_server, listening, make_files, url
from hookerd import Hookerd, wait_for

PAPER_FILES = {"text-3k": 3_000, "image-510k": 510_000, "video-26m": 26_000_000}


@pytest.fixture
def hooked(bed):
    """hookerd on both hosts, moving connections to ports 8000 and 5201."""
    a = Hookerd(bed.a, [8000, 5201]).start()
    b = Hookerd(bed.b, [8000, 5201]).start()
    yield bed, a, b
    assert a.stop() == 0, a.stderr()
    assert b.stop() == 0, b.stderr()


def test_paper_files_arrive_intact_over_ipv4_and_ipv6(hooked, tmp_path):
    bed, a, b = hooked
    sums = make_files(tmp_path, PAPER_FILES)
    http_server(bed.b, tmp_path, 8000)
    for v6 in (False, True):
        for name, want in sums.items():
            got = fetch(bed.a, url(bed.b, 8000, name, v6), tmp_path / "got")
            assert got == want, f"{name} over {'IPv6' if v6 else 'IPv4'}: sha256 differs"
    # Each download was moved, on both ends, and none was refused a slot.
    assert a.counter("moved_active") == 6
    assert b.counter("moved_passive") == 6
    assert a.counter("no_slot") == 0


def _iperf(bed, reverse):
    srv = bed.b.popen(["iperf3", "-s", "-1", "-p", "5201"], stdout=subprocess.DEVNULL)
    wait_for(lambda: listening(bed.b, 5201), 10, "iperf3 server")
    args = ["iperf3", "-c", bed.b.ip4, "-p", "5201", "-t", "5", "--json"] + (["-R"] if reverse else [])
    r = bed.a.run(args, timeout=40, check=False)
    assert r.returncode == 0, f"iperf3 {'-R' if reverse else ''}: {r.stdout[-500:]} {r.stderr}"
    srv.wait(timeout=10)
    return json.loads(r.stdout)["end"]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_iperf3_runs_through_hooker(hooked, reverse):
    bed, a, _ = hooked
    end = _iperf(bed, reverse)
    assert end["sum_received"]["bytes"] > 0
    # iperf3 opens a control and a data connection; both were moved.
    assert a.counter("moved_active") == 2
    # The bytes iperf3 counted crossed as Hooker datagrams.
    moved = a.counter("datagrams_sent" if not reverse else "datagrams_received")
    assert moved * 1400 >= end["sum_received"]["bytes"]


def test_wire_carries_udp_not_tcp_payload(hooked, tmp_path):
    bed, a, b = hooked
    sums = make_files(tmp_path, {"f": 510_000})
    http_server(bed.b, tmp_path, 8000)
    http_server(bed.b, tmp_path, 8001)  # not in the policy
    with bed.a.capture("tcp or udp") as cap:
        assert fetch(bed.a, url(bed.b, 8000, "f"), tmp_path / "g1") == sums["f"]
        assert fetch(bed.a, url(bed.b, 8001, "f"), tmp_path / "g2") == sums["f"]
    # Moved: not one TCP payload byte on 8000, the file in UDP to/from 7000.
    assert cap.tcp_payload_bytes(8000) == 0
    assert cap.udp_payload_bytes(7000) >= 510_000
    # Another port: plain TCP carries it.
    assert cap.tcp_payload_bytes(8001) >= 510_000
    assert a.counter("moved_active") == 1


def test_peer_without_hooker_stays_plain_tcp(bed, tmp_path):
    a = Hookerd(bed.a, [8000]).start()  # b runs no hookerd
    sums = make_files(tmp_path, {"f": 510_000})
    http_server(bed.b, tmp_path, 8000)
    with bed.a.capture("tcp or udp") as cap:
        assert fetch(bed.a, url(bed.b, 8000, "f"), tmp_path / "g") == sums["f"]
    assert cap.tcp_payload_bytes(8000) >= 510_000
    assert cap.udp_payload_bytes(7000) == 0
    assert a.counter("peer_no_hooker") == 1
    assert a.counter("moved_active") == 0
    assert a.stop() == 0


def test_status_lists_live_connection_with_byte_counts(hooked):
    bed, a, b = hooked
    n, m = 123_457, 654_321
    bed.b.popen([PY, "-c", SINK, str(n), str(m), "8000"])
    wait_for(lambda: listening(bed.b, 8000), 10, "sink server")
    cli = bed.a.popen([PY, "-c", CLIENT, str(n), str(m), bed.b.ip4, "8000"],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert cli.stdout.readline().strip() == "done"

    def live(d):
        conns = [c for c in d.status()["connections"] if 8000 in (c["local_port"], c["remote_port"])]
        return conns[0] if conns else None

    ca = wait_for(lambda: (c := live(a)) and c["bytes_in"] == m and c, 10, "client-side counts")
    assert (ca["bytes_out"], ca["bytes_in"]) == (n, m)
    assert ca["mechanism"] == "udp" and ca["state"] == "established"
    assert ca["remote"].endswith(bed.b.ip4) and ca["remote_port"] == 8000
    cb = wait_for(lambda: live(b), 10, "server-side connection")
    assert (cb["bytes_in"], cb["bytes_out"]) == (n, m)
    cli.stdin.write("\n")
    cli.stdin.flush()
    assert cli.wait(timeout=10) == 0
    wait_for(lambda: live(a) is None, 10, "the closed connection to leave the table")
