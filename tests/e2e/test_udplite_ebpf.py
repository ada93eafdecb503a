"""udplite made by BPF (hookerd --udplite-impl ebpf): a plain UDP socket on an
internal port whose datagrams tcx programs (bpf/udplite.bpf.c) turn into
UDP-Lite on hookerd's port and back. The wire is the kernel implementation's:
both interoperate with each other and with a plain kernel UDP-Lite socket;
the checksum covers the 40 header bytes (a flipped payload bit reaches the
application, a flipped header bit drops the datagram and resets loudly);
and deploying or undeploying it leaves the rest running and nothing of it
in the kernel."""
import json
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from apps import PY, fetch, http_server, listening, make_files, url
from hookerd import BUILD, HOOKERCTL, UDP_PORT, Hookerd, wait_for
from testbed import Capture
from test_stream import RESET_SEEN_BY_WRITER, transfer

PORT = 8000
SINK = 8002  # test_stream.transfer's reader port
COVERAGE = 8 + 32
FILTER = "tcp or udp or ip proto 136 or ip6 proto 136"
FLIP_OBJ = BUILD / "bpf" / "flip.bpf.o"
UDPLITE, SEND_CSCOV, RECV_CSCOV = 136, 10, 11
PROGS = ("hk_lite_egress", "hk_lite_ingress")
MiB = 1 << 20
FAMILY = pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])


def daemon(host, impl, rules=(f"{PORT}=udplite",)):
    return Hookerd(host, list(rules), extra=["--udplite-impl", impl]).start()


def lite(hd) -> dict:
    return hd.status()["mechanisms"]["udplite"]


def ctl(hd, *args):
    return subprocess.run([HOOKERCTL, "--control", hd.control, *args], capture_output=True,
                          text=True, timeout=20)


def mech(hd, name="udplite") -> dict:
    r = ctl(hd, "mechanisms", "--json")
    assert r.returncode == 0, r.stderr
    return {m["name"]: m for m in json.loads(r.stdout)["mechanisms"]}[name]


def lite_fields(path) -> list[tuple[int, str]]:
    """(checksum coverage, checksum status) of each UDP-Lite datagram in a
    pcap, as tshark checks it over the coverage (status 1: good)."""
    r = subprocess.run(["tshark", "-n", "-r", str(path), "-o", "udplite.check_checksum:TRUE",
                        "-o", "udplite.ignore_checksum_coverage:FALSE", "-Y", "udplite",
                        "-T", "fields", "-E", "separator=,", "-e", "udp.checksum_coverage",
                        "-e", "udp.checksum.status"],
                       capture_output=True, text=True, timeout=120, check=True)
    return [(int(c), s) for c, s in (l.split(",") for l in r.stdout.split())]


def csum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pcap_lite(path) -> list[dict]:
    """Each UDP-Lite datagram of a pcap (Ethernet): its source address, its
    length, its coverage field, and the folded sum of its pseudo-header and
    covered bytes, computed here (0xffff: right). Coverage 0 means the whole
    datagram (RFC 3828). The capture keeps 200 bytes of a frame: enough for
    the 40 covered by default, and for rules covering up to 146."""
    raw = Path(path).read_bytes()
    out, at = [], 24
    while at + 16 <= len(raw):
        incl = struct.unpack("<I", raw[at + 8:at + 12])[0]
        f = raw[at + 16:at + 16 + incl]
        at += 16 + incl
        if f[12:14] == b"\x08\x00" and f[23] == UDPLITE:
            hl = (f[14] & 15) * 4
            l4, src = 14 + hl, socket.inet_ntop(socket.AF_INET, f[26:30])
            length = struct.unpack("!H", f[16:18])[0] - hl
            pseudo = f[26:34] + struct.pack("!xBH", UDPLITE, length)
        elif f[12:14] == b"\x86\xdd" and f[20] == UDPLITE:
            l4, src = 54, socket.inet_ntop(socket.AF_INET6, f[22:38])
            length = struct.unpack("!H", f[18:20])[0]
            pseudo = f[22:54] + struct.pack("!IxxxB", length, UDPLITE)
        else:
            continue
        cov = struct.unpack("!H", f[l4 + 4:l4 + 6])[0]
        covered = cov or length
        assert len(f) >= l4 + covered, "the capture cut the covered bytes"
        out.append({"src": src, "len": length, "cov": cov,
                    "sum": csum(pseudo + f[l4:l4 + covered])})
    return out


def assert_wire_is_udplite(cap: Capture, min_bytes: int):
    """Only UDP-Lite datagrams on hookerd's port, all covering the 40 header
    bytes with a right checksum, at least `min_bytes` of payload; no UDP.
    tshark checks the checksum of the datagrams it has whole (the capture
    keeps 200 bytes of each: the others are "unverified"); this file checks
    every one's over its covered bytes."""
    assert cap.udp_payload_bytes(UDP_PORT, "udplite") >= min_bytes
    assert [p for p in cap.packets() if p.proto == "udp"] == []
    fields = lite_fields(cap.path)
    n = len(cap.udp_datagrams(UDP_PORT, "udplite"))
    assert len(fields) == n > 0
    assert {c for c, _ in fields} == {COVERAGE}
    status = [st for _, st in fields]
    assert "0" not in status, "tshark found a bad UDP-Lite checksum"
    assert status.count("1") > 0, "tshark verified no UDP-Lite checksum"
    sums = [g["sum"] for g in pcap_lite(cap.path)]
    assert len(sums) == n and set(sums) == {0xFFFF}


def kernel_udplite_socket(host, v6, cov_opt, cov):
    s = host.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM, UDPLITE)
    s.setsockopt(UDPLITE, cov_opt, cov)
    return s


# ---------------------------------------------------------------- selection


def test_impl_is_named_in_loaded_and_status(bed):
    a = daemon(bed.a, "ebpf")
    b = daemon(bed.b, "kernel")
    m = mech(a)
    assert m["state"] == "deployed"
    assert m["loaded"][0] == "BPF object udplite.bpf.o: tcx egress+ingress on eth0"
    inner = int(m["loaded"][1].split()[5])
    assert m["loaded"][1] == f"UDP socket on internal port {inner} (no checksum, no GSO/GRO)"
    assert inner not in (0, UDP_PORT)
    # The internal socket is hookerd's, plain UDP, not on --port.
    ss = bed.a.run(["ss", "-Hulpn", f"sport = :{inner}"], timeout=10, cgroup=False).stdout
    assert "hookerd" in ss, ss
    assert lite(a)["impl"] == "ebpf" and lite(a)["counters"]["ebpf_out"] == 0
    assert mech(b)["loaded"][0].startswith("UDP-Lite socket on port 7000")
    assert "impl" not in lite(b)
    assert a.stop() == 0 and b.stop() == 0


def test_ebpf_without_interface_is_refused_in_one_line(bed):
    hd = Hookerd(bed.a, [f"{PORT}=udplite"], extra=["--udplite-impl", "ebpf"])
    argv = [x for x in hd.argv() if x not in ("--iface", bed.a.iface)]
    r = bed.a.run(argv, timeout=20, check=False, cgroup=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert "udplite (ebpf) needs an interface" in lines[0] and "--iface" in lines[0]


# ---------------------------------------------------------------- interop


HOLD = r"""
import socket, sys
if sys.argv[1] == "serve":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(1); s.settimeout(10)
    print("listening", flush=True)
    c, _ = s.accept()
    c.settimeout(10)
    c.sendall(b"world" if c.recv(5) == b"hello" else b"wrong")
    print("up", flush=True)
    c.settimeout(30)
    try:
        while c.recv(65536): pass
    except OSError: pass
else:
    c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10)
    c.sendall(b"hello")
    assert c.recv(5) == b"world"
    print("up", flush=True)
    sys.stdin.readline()
    c.sendall(b"z" * int(sys.argv[4]))
    print("sent", flush=True)
    # Once those arrived (the test says so), a small datagram of its own
    # that a 200-byte capture keeps whole (tshark checks the checksum only
    # of those).
    sys.stdin.readline()
    c.sendall(b"z" * 50)
    print("sent", flush=True)
    sys.stdin.readline()
"""


def test_ebpf_datagrams_are_taken_by_a_kernel_udplite_socket(bed, tmp_path):
    """a (ebpf) moves a connection to b (kernel); then b's hookerd dies and a
    plain kernel UDP-Lite socket, minimum coverage 40, takes its port: the
    DATA a's programs make from the bytes written next reach it, passing the
    kernel's own coverage and checksum checks."""
    a = daemon(bed.a, "ebpf")
    b = daemon(bed.b, "kernel")
    srv = bed.b.popen([PY, "-c", HOLD, "serve", str(PORT)], stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "listening"
    n = 20_000
    cli = bed.a.popen([PY, "-c", HOLD, "connect", bed.b.ip4, str(PORT), str(n)],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert cli.stdout.readline().strip() == "up"
    assert a.counter("moved_active") == 1
    b.proc.kill()  # no reset to a: its connection lives on, sending to b:7000
    b.proc.wait(10)
    rx = kernel_udplite_socket(bed.b, False, RECV_CSCOV, COVERAGE)
    cap = Capture(bed.a, FILTER, tmp_path / "cap.pcap")
    try:
        rx.bind(("0.0.0.0", UDP_PORT))
        rx.settimeout(10)
        cap.start()
        got = 0
        for want in (n, n + 50):
            cli.stdin.write("go\n")
            cli.stdin.flush()
            assert cli.stdout.readline().strip() == "sent"
            while got < want:
                d, frm = rx.recvfrom(2048)
                magic, version, typ, mech_id, _, length = struct.unpack("!HBBBBH", d[:8])
                assert (magic, version, mech_id, frm[0]) == (0x484B, 1, 2, bed.a.ip4)
                if typ == 1:  # DATA
                    assert d[32:] == b"z" * length
                    got += length
            assert got == want
    finally:
        rx.close()
        cap.stop()
        cli.stdin.close()
        # b's hookerd died with pins: they would keep its maps (and the
        # sockets in its SOCKHASH) alive.
        shutil.rmtree(b.pin_dir, ignore_errors=True)
    assert lite(a)["counters"]["ebpf_out"] >= n // 1400
    assert_wire_is_udplite(cap, n)
    assert a.stop() == 0


def raw_udplite(src_ip, dst_ip, v6, payload, cov, sport=5555, good=True):
    """A UDP-Lite datagram built here, its checksum computed here (not by
    the programs under test)."""
    length = 8 + len(payload)
    hdr = struct.pack("!HHHH", sport, UDP_PORT, cov, 0)
    if v6:
        pseudo = (socket.inet_pton(socket.AF_INET6, src_ip) +
                  socket.inet_pton(socket.AF_INET6, dst_ip) + struct.pack("!IxxxB", length, 136))
    else:
        pseudo = (socket.inet_aton(src_ip) + socket.inet_aton(dst_ip) +
                  struct.pack("!xBH", 136, length))
    covered = (hdr + payload)[:cov or length]
    data = pseudo + covered + (b"\0" if len(covered) % 2 else b"")
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    check = (~s & 0xFFFF) or 0xFFFF
    if not good:
        check ^= 0x0100
    return struct.pack("!HHHH", sport, UDP_PORT, cov, check) + payload


@FAMILY
def test_kernel_udplite_datagrams_cross_the_ebpf_ingress(bed, v6):
    """Datagrams from a plain kernel UDP-Lite socket on a reach b's ebpf
    hookerd as frames (junk: rx_malformed; a frame header naming no
    connection: rx_unknown_token); its ingress drops and counts what covers
    too little, a wrong checksum and an impossible coverage. No kernel
    UDP-Lite socket on b is involved."""
    b = daemon(bed.b, "ebpf")
    dst = bed.b.ip6 if v6 else bed.b.ip4
    src = bed.a.ip6 if v6 else bed.a.ip4
    c = lambda: lite(b)["counters"]
    frame = struct.pack("!HBBBBHQQII", 0x484B, 1, 1, 2, 0, 100, 0x1234567890, 0, 0, 0) + b"x" * 100
    tx = kernel_udplite_socket(bed.a, v6, SEND_CSCOV, COVERAGE)
    try:
        tx.sendto(b"junk" * 25, (dst, UDP_PORT))
        wait_for(lambda: c()["rx_malformed"] == 1, 10, "junk seen as a malformed frame")
        tx.sendto(frame, (dst, UDP_PORT))
        wait_for(lambda: c()["rx_unknown_token"] == 1, 10, "a frame naming no connection")
        tx.setsockopt(UDPLITE, SEND_CSCOV, 0)  # the whole datagram: more than 40
        tx.sendto(frame, (dst, UDP_PORT))
        wait_for(lambda: c()["rx_unknown_token"] == 2, 10, "a datagram covered whole")
        tx.setsockopt(UDPLITE, SEND_CSCOV, 8)  # the UDP-Lite header only
        tx.sendto(frame, (dst, UDP_PORT))
        wait_for(lambda: c()["ebpf_drop_in_low_coverage"] == 1, 10, "coverage 8 dropped")
    finally:
        tx.close()
    raw = bed.a.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, UDPLITE)
    try:
        for payload, cov, good, counter in [
                (frame, 40, True, "rx_unknown_token"),       # checksummed here: taken
                (frame, 40, False, "ebpf_drop_in_bad_checksum"),
                (frame, 4, True, "ebpf_drop_in_bad_coverage"),
                (frame, 8 + len(frame) + 2, True, "ebpf_drop_in_bad_coverage")]:
            before = c()[counter]
            raw.sendto(raw_udplite(src, dst, v6, payload, cov, good=good), (dst, 0))
            wait_for(lambda: c()[counter] == before + 1, 10, f"{counter} (cov {cov})")
    finally:
        raw.close()
    got = c()
    assert got["ebpf_in"] == 4 and got["rx_unknown_token"] == 3, got
    assert got["ebpf_drop_in_bad_checksum"] == 1 and got["ebpf_drop_in_bad_coverage"] == 2, got
    # Nothing reached the kernel's UDP-Lite: no socket of it on b.
    udplite_socks = bed.b.run(["cat", "/proc/net/udplite", "/proc/net/udplite6"], timeout=10,
                              cgroup=False).stdout.splitlines()
    assert [l for l in udplite_socks if ":1B58 " in l] == []  # 7000
    assert b.stop() == 0


# ---------------------------------------------------------------- transfers

IPERF = 5201
SIZES = (3 * 1024, 510 * 1024, 26 * MiB)
PAIRS = [(c, s, v6) for c, s in (("kernel", "kernel"), ("ebpf", "ebpf"), ("kernel", "ebpf"),
                                 ("ebpf", "kernel")) for v6 in (False, True)]


def iperf3(bed, v6, n, reverse) -> dict:
    """iperf3 from a to b's server, -n n bytes in blocks that divide n (3.12
    rounds -n up to whole blocks), -R when reverse; its JSON `end`."""
    k = -(-n // (128 * 1024))
    while n % k:
        k += 1
    r = bed.a.run(["iperf3", "-c", bed.b.ip6 if v6 else bed.b.ip4, "-p", str(IPERF),
                   "-n", str(n), "-l", str(n // k), "--json"] + (["-R"] if reverse else []),
                  timeout=60, check=False)
    out = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    info = (f"iperf3 -n {n}{' -R' if reverse else ''}: rc={r.returncode} "
            f"{r.stdout[-500:]} {r.stderr}")
    assert r.returncode == 0 and "error" not in out, info
    return out["end"] | {"block": n // k, "info": info}


@pytest.mark.parametrize("client,server,v6", PAIRS,
                         ids=[f"{c}-{s}-{'ipv6' if v6 else 'ipv4'}" for c, s, v6 in PAIRS])
def test_transfers_byte_exact_between_implementations(bed, tmp_path, client, server, v6):
    """a runs `client`'s implementation, b `server`'s; both stay up while a
    fetches 3 KB, 510 KB and 26 MB over HTTP from b (byte exact), runs
    iperf3 -n with each size to b and back (-R), and writes each size to a
    reader on b that checks every byte. Every connection moves; the wire
    carries them as UDP-Lite only, no TCP payload on their ports."""
    rules = [f"{port}=udplite" for port in (PORT, IPERF, SINK)]
    a = daemon(bed.a, client, rules)
    b = daemon(bed.b, server, rules)
    sums = make_files(tmp_path, {str(n): n for n in SIZES})
    http_server(bed.b, tmp_path, PORT)
    bed.b.popen(["iperf3", "-s", "-p", str(IPERF)], stdout=subprocess.DEVNULL)
    wait_for(lambda: listening(bed.b, IPERF), 10, "iperf3 server")
    cap = Capture(bed.a, FILTER, tmp_path / "cap.pcap")
    cap.start()
    moved = lambda: (a.counter("moved_active"), b.counter("moved_passive"))
    carried = 0  # bytes the applications handed over, both ways
    try:
        for n in SIZES:
            got = fetch(bed.a, url(bed.b, PORT, str(n), v6), tmp_path / f"got{n}")
            assert got == sums[str(n)], f"HTTP {n} bytes"
            carried += n
        assert moved() == (3, 3)  # one connection a fetch
        for n in SIZES:
            # iperf3 3.12, plain TCP too: the sender may write up to a block
            # more than -n, and its peer stops counting once the end is
            # decided. b to a (-R): the client reads until it has n bytes.
            end = iperf3(bed, v6, n, reverse=True)
            got, sent = end["sum_received"]["bytes"], end["sum_sent"]["bytes"]
            assert n <= got <= sent <= n + end["block"], end["info"]
            carried += got
            # a to b: the server stops reading when told the client has
            # written everything (TEST_END), whatever is still on its way.
            end = iperf3(bed, v6, n, reverse=False)
            got, sent = end["sum_received"]["bytes"], end["sum_sent"]["bytes"]
            assert got <= sent and n <= sent <= n + end["block"], end["info"]
            carried += got
        assert moved() == (15, 15)  # iperf3's control and data connection, each run
        for n in SIZES:
            # a to b, byte exact, a's side the active one writing
            w, r = transfer(bed, v6, n, timeout=40)
            info = f"writer {w} reader {r}"
            assert r["received"] == n and r["mismatch"] is None, info
            assert r["read_end"] == "EOF" and "error" not in w, info
            carried += n
        assert moved() == (18, 18)
    finally:
        cap.stop()
    for port in (PORT, IPERF, SINK):
        assert cap.tcp_payload_bytes(port) == 0, f"TCP payload on port {port}"
    assert_wire_is_udplite(cap, carried)
    for hd, impl in ((a, client), (b, server)):
        cnt = lite(hd)["counters"]
        assert cnt["rx_malformed"] == cnt["rx_wrong_mech"] == 0, cnt
        if impl == "ebpf":
            assert cnt["ebpf_out"] == cnt["datagrams_sent"] > 0, cnt
            assert cnt["ebpf_in"] == cnt["datagrams_received"] > 0, cnt
            drops = {k: v for k, v in cnt.items() if k.startswith("ebpf_drop") and v}
            assert drops == {}, drops
    assert a.stop() == 0 and b.stop() == 0


# ---------------------------------------------------------------- bit errors


class Flip:
    """flip.bpf.o (tests/bpf/flip.bpf.c), on a host's classic tc egress."""

    def __init__(self, bed):
        assert FLIP_OBJ.exists(), f"{FLIP_OBJ} is missing: cmake --build"
        self.dir = Path(f"/sys/fs/bpf/{bed.prefix}-flip")
        self.maps = self.dir / "maps"
        subprocess.run(["bpftool", "prog", "loadall", str(FLIP_OBJ), str(self.dir),
                        "type", "classifier", "pinmaps", str(self.maps)],
                       check=True, capture_output=True, timeout=30)

    def configure(self, nth, at, mask=0x01, port=UDP_PORT):
        v = struct.pack("<IIQII", port, at, nth, mask, 0)
        subprocess.run(["bpftool", "map", "update", "pinned", str(self.maps / "cfg"),
                        "key", "hex", "00", "00", "00", "00",
                        "value", "hex", *[f"{x:02x}" for x in v]],
                       check=True, capture_output=True, timeout=10)

    def attach(self, host):
        host.run(["tc", "qdisc", "add", "dev", host.iface, "clsact"], timeout=10, cgroup=False)
        host.run(["tc", "filter", "add", "dev", host.iface, "egress", "pref", "10", "bpf", "da",
                  "object-pinned", str(self.dir / "flip")], timeout=10, cgroup=False)

    def stats(self) -> dict:
        r = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", str(self.maps / "stats"),
                            "key", "hex", "00", "00", "00", "00"],
                           check=True, capture_output=True, text=True, timeout=10)
        raw = bytes(int(x, 16) for x in json.loads(r.stdout)["value"])
        return dict(zip(("seen", "flipped", "offset"), struct.unpack("<3Q", raw)))

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def flip(bed):
    f = Flip(bed)
    yield f
    f.close()


@FAMILY
@pytest.mark.parametrize("receiver", ["ebpf", "kernel"])
def test_payload_bit_error_reaches_the_application(bed, flip, v6, receiver):
    """A bit flipped on the wire in the payload of the 100th DATA datagram
    a->b (outside the 40 covered bytes) passes the checksum and reaches the
    reader, at its place in the stream; every other byte is right."""
    total = 8 * MiB
    flip.configure(nth=100, at=COVERAGE + 100)
    flip.attach(bed.a)
    a = daemon(bed.a, "ebpf", [f"{SINK}=udplite"])
    b = daemon(bed.b, receiver, [f"{SINK}=udplite"])
    w, r = transfer(bed, v6, total, timeout=40)
    st = flip.stats()
    info = f"writer {w} reader {r} flip {st}"
    assert st["flipped"] == 1, info
    assert r["received"] == total and r["read_end"] == "EOF" and "error" not in w, info
    assert r["mismatch"] == st["offset"] + 100, info
    assert lite(b)["counters"]["resets_received"] == 0
    if receiver == "ebpf":
        assert lite(b)["counters"]["ebpf_drop_in_bad_checksum"] == 0
    assert a.stop() == 0 and b.stop() == 0


@FAMILY
@pytest.mark.parametrize("receiver", ["ebpf", "kernel"])
def test_header_bit_error_is_dropped_and_resets_loudly(bed, flip, v6, receiver):
    """A bit flipped in the frame header (the byte offset's lowest byte) of
    the 100th DATA datagram a->b fails the checksum: the receiver drops it
    (ebpf: counted), the hole stays, and both applications get ECONNRESET
    with no wrong byte delivered."""
    total = 8 * MiB
    flip.configure(nth=100, at=8 + 23)
    flip.attach(bed.a)
    a = daemon(bed.a, "ebpf", [f"{SINK}=udplite"])
    b = daemon(bed.b, receiver, [f"{SINK}=udplite"])
    w, r = transfer(bed, v6, total, timeout=40)
    st = flip.stats()
    info = f"writer {w} reader {r} flip {st}"
    assert st["flipped"] == 1, info
    assert r["mismatch"] is None and r["received"] <= st["offset"], info
    assert r["read_end"] == "ECONNRESET" and w.get("error") in RESET_SEEN_BY_WRITER, info
    if receiver == "ebpf":
        assert lite(b)["counters"]["ebpf_drop_in_bad_checksum"] == 1, info
    assert a.counter("resets_sent") + b.counter("resets_sent") >= 1
    assert a.stop() == 0 and b.stop() == 0


# ---------------------------------------------------------------- deploy


def hookerd_prog_ids(hd) -> dict[int, str]:
    """The BPF programs hookerd holds (program and link fds), by id."""
    ids = set()
    for fdinfo in Path(f"/proc/{hd.proc.pid}/fdinfo").iterdir():
        try:
            for line in fdinfo.read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            continue
    out = {}
    for i in ids:
        r = subprocess.run(["bpftool", "-j", "prog", "show", "id", str(i)], capture_output=True,
                           text=True, timeout=10)
        if r.returncode == 0:
            out[i] = json.loads(r.stdout)["name"]
    return out


def prog_exists(i: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(i)], capture_output=True,
                          timeout=10).returncode == 0


def links_to(ids) -> list[dict]:
    """BPF links (any kind, any namespace) to these programs. bpftool 7.1
    shows a tcx link as type 11 without its interface, and `bpftool net`
    does not list tcx at all: the program ids are what can be checked."""
    r = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True,
                       timeout=10, check=True)
    return [l for l in json.loads(r.stdout) if l.get("prog_id") in set(ids)]


def test_deploy_undeploy_ebpf_while_udp_runs(bed):
    """While a 1 GiB transfer runs on `udp`, udplite (ebpf) is undeployed and
    deployed again on both hosts, over and over: the transfer stays byte
    exact, and after the last undeploy its programs are gone from the kernel
    (not linked, not loaded)."""
    rules = [f"{SINK}=udp", f"{PORT}=udplite"]
    a = daemon(bed.a, "ebpf", rules)
    b = daemon(bed.b, "ebpf", rules)
    lite_ids = {i for hd in (a, b) for i, n in hookerd_prog_ids(hd).items() if n in PROGS}
    assert len(lite_ids) == 4
    result = {}

    def run():
        result["w"], result["r"] = transfer(bed, False, 1024 * MiB, timeout=90)

    t = threading.Thread(target=run)
    t.start()
    cycles, deadline = 0, time.monotonic() + 60
    while t.is_alive() and time.monotonic() < deadline:
        for hd in (a, b):
            r = ctl(hd, "undeploy", "udplite")
            assert r.returncode == 0, r.stderr
            r = ctl(hd, "deploy", "udplite")
            assert r.returncode == 0, r.stderr
            # Each deployment loads the object anew: every copy must go.
            lite_ids |= {i for i, n in hookerd_prog_ids(hd).items() if n in PROGS}
        cycles += 1
    t.join(100)
    w, r = result["w"], result["r"]
    info = f"writer {w} reader {r} cycles {cycles}"
    assert cycles >= 2, f"the transfer ended before two deploy cycles: {info}"
    assert r["mismatch"] is None and r["received"] == 1024 * MiB, info
    assert r["read_end"] == "EOF" and "error" not in w, info
    assert a.counter("moved_active") == 1
    live = {i for hd in (a, b) for i, n in hookerd_prog_ids(hd).items() if n in PROGS}
    assert len(links_to(live)) == 4  # egress and ingress on both hosts
    print(f"\nudplite (ebpf) undeployed and deployed {cycles} times on both hosts "
          f"during a 1 GiB udp transfer")
    for hd in (a, b):
        assert ctl(hd, "undeploy", "udplite").returncode == 0
        assert mech(hd)["state"] == "undeployed" and mech(hd)["loaded"] == []
        assert not [n for n in hookerd_prog_ids(hd).values() if n in PROGS]
    ids = sorted(lite_ids)
    wait_for(lambda: not any(prog_exists(i) for i in ids), 10, f"programs {ids} freed")
    assert links_to(ids) == []
    for h in (bed.a, bed.b):
        net = h.run(["bpftool", "net", "show", "dev", h.iface], timeout=10, cgroup=False).stdout
        assert not any(p in net for p in PROGS), net
    assert a.stop() == 0 and b.stop() == 0


def test_lazy_deployment_loads_it_at_first_need(bed, tmp_path):
    """Without --eager, hookerd only checks at start that udplite (ebpf)
    would open (its object loads and links, and is closed again: nothing of
    it stays); the first connection needing it deploys it on each host in
    turn, as for any mechanism, and the third moves over it."""
    hds = [Hookerd(h, [f"{PORT}=udplite"], extra=["--udplite-impl", "ebpf"], eager=False).start()
           for h in (bed.a, bed.b)]
    for hd in hds:
        assert mech(hd)["state"] == "not deployed"
        assert not [n for n in hookerd_prog_ids(hd).values() if n in PROGS]
    a, b = hds
    sums = make_files(tmp_path, {"f": 510_000})
    http_server(bed.b, tmp_path, PORT)
    tcp = []
    for i in range(3):
        cap = Capture(bed.a, FILTER, tmp_path / f"cap{i}.pcap")
        cap.start()
        try:
            assert fetch(bed.a, url(bed.b, PORT, "f"), tmp_path / f"got{i}") == sums["f"]
        finally:
            cap.stop()
        tcp.append(cap.tcp_payload_bytes(PORT))
        wait_for(lambda: mech(a if i == 0 else b)["state"] == "deployed", 10, f"deployed ({i})")
    assert tcp[0] >= 510_000 and tcp[1] >= 510_000 and tcp[2] == 0, tcp
    assert_wire_is_udplite(cap, 510_000)
    for hd in hds:
        m = mech(hd)
        assert m["trigger"].startswith("first needed by ") and m["loaded"][0].startswith("BPF")
        assert len([n for n in hookerd_prog_ids(hd).values() if n in PROGS]) == 2
    assert a.stop() == 0 and b.stop() == 0
