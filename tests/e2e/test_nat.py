"""The connecting host behind NAT (issue 14): the router masquerades what a
sends towards b, addresses and ports rewritten, as a home router or a node's
masquerade does, and forgets idle UDP mappings after a short time. The
accepting hookerd learns where to send from the connection's datagrams
(their token vouches for them), the connecting one opens the mapping before
anything is sent its way, and keep-alives hold it open while the connection
idles. HTTP downloads, a server that speaks first and a connection idle for
longer than the mapping lives all arrive byte-exact and moved."""
import subprocess
import time

import pytest

from apps import PY, fetch, http_server, listening, make_files, url
from hookerd import UDP_PORT, Hookerd, quic_pair, wait_for
from routed import LINKS, RoutedHosts

PORT = 8000
BANNER_PORT = 2222
MAPPING_S = 2  # the router's UDP mapping timeout
IDLE_S = 3 * MAPPING_S  # longer than a mapping lives

# Speaks first (an SSH server's banner), then on a line from the test (after
# the connection idled) speaks again; then echoes the digest of what it got.
SERVER = r"""
import hashlib, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
def blob(tag): return hashlib.shake_256(tag).digest(n)
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", port)); s.listen(1)
c, _ = s.accept(); c.settimeout(30)
c.sendall(b"SSH-2.0-hooker-test\r\n" + blob(b"banner"))
sys.stdin.readline()
c.sendall(blob(b"after idle"))
got = b""
while len(got) < n:
    b = c.recv(65536)
    if not b: sys.exit("eof after %d of %d" % (len(got), n))
    got += b
c.sendall(hashlib.sha256(got).digest())
c.recv(1)
"""

# Reads the banner, says so, reads what the server says after the idle
# time, writes its own bytes, checks the digest. Its socket's timeout bounds
# every wait.
CLIENT = r"""
import hashlib, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def blob(tag): return hashlib.shake_256(tag).digest(n)
def exact(c, k):
    got = b""
    while len(got) < k:
        b = c.recv(k - len(got))
        if not b: sys.exit("eof after %d of %d" % (len(got), k))
        got += b
    return got
c = socket.create_connection((host, port), timeout=30)
want = b"SSH-2.0-hooker-test\r\n" + blob(b"banner")
assert exact(c, len(want)) == want, "banner differs"
print("banner", flush=True)
assert exact(c, n) == blob(b"after idle"), "bytes after the idle time differ"
mine = blob(b"client")
c.sendall(mine)
assert exact(c, 32) == hashlib.sha256(mine).digest(), "the server got other bytes"
print("done", flush=True)
c.close()
"""


@pytest.fixture
def natted():
    with RoutedHosts() as bed:
        bed.masquerade(True)
        bed.udp_mapping_timeout(MAPPING_S)
        yield bed


def router_b(v6):
    return LINKS["b"][3] if v6 else LINKS["b"][2]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_http_through_masquerade(natted, tmp_path, v6):
    bed = natted
    a = Hookerd(bed.a, [PORT], extra=["--keepalive", "1"]).start()
    b = Hookerd(bed.b, [PORT], extra=["--keepalive", "1"]).start()
    sizes = {"3KB": 3 * 1024, "510KB": 510 * 1024, "26MB": 26 * 1024 * 1024}
    sums = make_files(tmp_path, sizes)
    http_server(bed.b, tmp_path, PORT)
    with bed.b.capture(f"tcp port {PORT} or udp port {UDP_PORT}") as cap:
        for name in sizes:
            assert fetch(bed.a, url(bed.b, PORT, name, v6), tmp_path / f"got-{name}") == sums[name]
    assert cap.tcp_payload_bytes(PORT) == 0
    grams = cap.udp_datagrams(UDP_PORT)
    assert sum(p.udp_len for p in grams) >= sum(sizes.values())
    # What the server saw came from the router (the NAT), never from a.
    assert {p.src for p in grams if p.dst == (bed.b.ip6 if v6 else bed.b.ip4)} == {router_b(v6)}
    assert a.counter("moved_active") == len(sizes)
    for hd in (a, b):
        assert hd.counter("resets_sent") == 0
    assert a.stop() == 0 and b.stop() == 0


def speak_first_then_idle(bed, v6: bool, n: int, idle):
    """The banner server and its client: the server speaks first, then the
    connection idles (idle() returns once it idled long enough), then bytes
    go both ways; both scripts must end well."""
    srv = bed.b.popen([PY, "-c", SERVER, str(BANNER_PORT), str(n)], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: listening(bed.b, BANNER_PORT), 10, "the banner server")
    cli = bed.a.popen([PY, "-c", CLIENT, bed.b.ip6 if v6 else bed.b.ip4, str(BANNER_PORT),
                       str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = cli.stdout.readline()  # the script's own socket timeout bounds it
    assert line.strip() == "banner", cli.stderr.read() if cli.poll() is not None else line
    idle()
    srv.stdin.write("go\n")
    srv.stdin.flush()
    line = cli.stdout.readline()
    assert line.strip() == "done", cli.stderr.read() if cli.poll() is not None else line
    assert cli.wait(timeout=30) == 0, cli.stderr.read()
    assert srv.wait(timeout=30) == 0, srv.stderr.read()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_server_speaks_first_and_idle_connection(natted, v6):
    bed = natted
    a = Hookerd(bed.a, [BANNER_PORT], extra=["--keepalive", "1"]).start()
    b = Hookerd(bed.b, [BANNER_PORT], extra=["--keepalive", "1"]).start()
    n = 200 * 1024

    def idle():
        # This wait is what is tested, not a guess at when something
        # happens. The router forgets a mapping after MAPPING_S; keep-alives
        # every second must keep this one.
        keepalives = a.counter("keepalives_sent")
        wait_for(lambda: a.counter("keepalives_sent") >= keepalives + IDLE_S - 1, IDLE_S + 10,
                 "the connection to idle for longer than the NAT keeps a mapping")

    with bed.b.capture(f"tcp port {BANNER_PORT} or udp port {UDP_PORT}") as cap:
        speak_first_then_idle(bed, v6, n, idle)
    assert cap.tcp_payload_bytes(BANNER_PORT) == 0
    assert cap.udp_payload_bytes(UDP_PORT) >= 3 * n
    assert a.counter("moved_active") == 1
    for hd in (a, b):
        assert hd.counter("resets_sent") == 0
    assert a.stop() == 0 and b.stop() == 0


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_quic_through_masquerade_when_the_certificate_names_the_nat(natted, tmp_path, v6):
    """quic crosses the NAT when the client's certificate also names the
    address its packets come from, the NAT's (README, quic behind NAT): a
    download, then a server that speaks first and a connection idle for
    longer than the NAT keeps a mapping (quic's keep-alives follow
    --keepalive), all byte-exact and moved."""
    bed = natted
    a, b = quic_pair(bed, tmp_path, [f"{PORT}=quic", f"{BANNER_PORT}=quic"],
                     extra=["--keepalive", "1"], also={"a": [router_b(False), router_b(True)]})
    srv = tmp_path / "srv"
    srv.mkdir()
    sums = make_files(srv, {"510KB": 510 * 1024})
    http_server(bed.b, srv, PORT)
    quic_port = UDP_PORT + 1
    with bed.b.capture(f"tcp or udp port {quic_port}") as cap:
        assert fetch(bed.a, url(bed.b, PORT, "510KB", v6), tmp_path / "got") == sums["510KB"]
        # The passing of time is what is tested here: quic has no count of
        # its keep-alives (ngtcp2 sends them) to wait on.
        speak_first_then_idle(bed, v6, 200 * 1024, lambda: time.sleep(IDLE_S))
    assert cap.tcp_payload_bytes(PORT) == cap.tcp_payload_bytes(BANNER_PORT) == 0
    grams = cap.udp_datagrams(quic_port)
    assert sum(p.udp_len for p in grams) >= 510 * 1024 + 3 * 200 * 1024
    assert {p.src for p in grams if p.dst == (bed.b.ip6 if v6 else bed.b.ip4)} == {router_b(v6)}
    assert a.counter("moved_active") == 2 and b.counter("moved_passive") == 2
    assert a.status()["mechanisms"]["quic"]["counters"]["handshakes_failed"] == 0
    assert a.stop() == 0 and b.stop() == 0


def test_quic_through_masquerade_falls_back_to_tcp(natted, tmp_path):
    """quic cannot cross this NAT when the client's certificate names only
    its own addresses: the client opens the QUIC connection, and the server
    checks that the client's certificate names the address its packets come
    from, which is the NAT's. The first connection is reset; the peer is
    then remembered and the next connections stay plain TCP."""
    bed = natted
    a, b = quic_pair(bed, tmp_path, [f"{PORT}=quic"])
    srv = tmp_path / "srv"
    srv.mkdir()
    sums = make_files(srv, {"f": 100 * 1024})
    http_server(bed.b, srv, PORT)
    u = url(bed.b, PORT, "f")
    first = bed.a.run(["curl", "-sS", "--fail", "-m", "30", "-o", str(tmp_path / "first"), u],
                      timeout=35, check=False)
    assert first.returncode != 0
    # The handshake fails on the certificate (or, were the server's side to
    # open one, towards the NAT's address where no mapping waits). Whichever
    # side saw it remembers the other.
    why = a.stderr() + b.stderr()
    assert "certificate does not name its address" in why or "no packet for" in why, why
    wait_for(lambda: a.status()["udp_unreachable"] or b.status()["udp_unreachable"], 20,
             "one side to remember the other as unreachable")
    with bed.a.capture(f"tcp port {PORT}") as cap:
        for k in range(2):
            assert fetch(bed.a, u, tmp_path / f"got{k}") == sums["f"]
    assert cap.tcp_payload_bytes(PORT) >= 2 * 100 * 1024
    assert a.stop() == 0 and b.stop() == 0
