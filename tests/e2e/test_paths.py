"""Real paths (issue 14): a router between the hosts whose links have a small
MTU. Each moved connection's datagrams are sized from its TCP connection's
MSS, so they fit the path (tests/unit/mechanism_test.cpp has the
arithmetic): the paper's files arrive byte-exact over udp, no TCP payload on
the wire, and no packet larger than the MTU."""
import pytest

from apps import fetch, http_server, make_files, url
from hookerd import UDP_PORT, Hookerd
from routed import RoutedHosts

PORT = 8000
SIZES = {"3KB": 3 * 1024, "510KB": 510 * 1024, "26MB": 26 * 1024 * 1024}


@pytest.fixture
def routed(request):
    with RoutedHosts(mtu=request.param) as bed:
        yield bed


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("routed", [1280, 1420], indirect=True, ids=["mtu1280", "mtu1420"])
def test_files_fit_a_small_mtu_path(routed, tmp_path, v6):
    bed = routed
    a = Hookerd(bed.a, [PORT]).start()
    b = Hookerd(bed.b, [PORT]).start()
    sums = make_files(tmp_path, SIZES)
    http_server(bed.b, tmp_path, PORT)
    with bed.a.capture(f"tcp port {PORT} or udp port {UDP_PORT}") as cap:
        for name in SIZES:
            got = fetch(bed.a, url(bed.b, PORT, name, v6), tmp_path / f"got-{name}")
            assert got == sums[name], name
    ip = 40 if v6 else 20
    grams = cap.udp_datagrams(UDP_PORT)
    assert sum(p.udp_len for p in grams) >= sum(SIZES.values())
    assert cap.tcp_payload_bytes(PORT) == 0
    largest = max(p.udp_len + 8 + ip for p in grams)
    assert largest <= bed.mtu, f"a {largest}-byte packet on a {bed.mtu}-byte path"
    assert largest > bed.mtu - 100, f"datagrams of {largest} bytes: far below the path's"
    assert a.counter("moved_active") == len(SIZES)
    for hd in (a, b):
        assert hd.counter("resets_sent") == 0
    assert a.stop() == 0 and b.stop() == 0
