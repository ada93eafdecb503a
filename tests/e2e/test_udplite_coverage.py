"""udplite:cov=N: a rule sets how many bytes, from the UDP-Lite header on,
the checksum of its connections' datagrams covers. Each host applies its own
rule to what it sends; a receiver takes any coverage that includes the
headers. Both implementations (the kernel's UDP-Lite, and BPF's) put the
same coverage on the wire, and a bit flipped inside it drops the datagram
and ends the connection in a loud reset, where outside the default 40 bytes
it would have reached the application. Bad coverage is refused in one line."""
import pytest

from apps import fetch, http_server, make_files, url
from hookerd import Hookerd
from testbed import Capture
from test_stream import RESET_SEEN_BY_WRITER, transfer
from test_udplite_ebpf import Flip, ctl, daemon, lite, lite_fields, pcap_lite

HTTP, SINK = 8000, 8002  # SINK: test_stream.transfer's reader port
COVERAGE = 8 + 32
FULL = 8 + 1432  # a full datagram's UDP-Lite length
FILTER = "ip proto 136 or ip6 proto 136"
MiB = 1 << 20


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("impl", ["kernel", "ebpf"])
def test_each_host_covers_what_its_rule_says(bed, tmp_path, impl, v6):
    """a covers 120 bytes on SINK and the headers on HTTP; b the headers on
    SINK and 100 bytes on HTTP. A pattern a->b on SINK and a download b->a on
    HTTP, both byte-exact: a's full datagrams cover 120, b's 100, every
    shorter one all of itself or the headers, and every checksum is right
    (computed here over the coverage, and tshark's over the datagrams it has
    whole)."""
    a = daemon(bed.a, impl, [f"{SINK}=udplite:cov=120", f"{HTTP}=udplite"])
    b = daemon(bed.b, impl, [f"{SINK}=udplite", f"{HTTP}=udplite:cov=100"])
    sums = make_files(tmp_path, {"f": 510 * 1024})
    http_server(bed.b, tmp_path, HTTP)
    cap = Capture(bed.a, FILTER, tmp_path / "cap.pcap")
    cap.start()
    try:
        w, r = transfer(bed, v6, 4 * MiB, timeout=40)
        assert fetch(bed.a, url(bed.b, HTTP, "f", v6), tmp_path / "got") == sums["f"]
    finally:
        cap.stop()
    assert r["received"] == 4 * MiB and r["mismatch"] is None and r["read_end"] == "EOF", (w, r)
    assert cap.tcp_payload_bytes(SINK) == cap.tcp_payload_bytes(HTTP) == 0
    grams = pcap_lite(cap.path)
    a_addr = bed.a.ip6 if v6 else bed.a.ip4
    mine = [g for g in grams if g["src"] == a_addr]
    theirs = [g for g in grams if g["src"] != a_addr]
    assert {g["cov"] for g in mine if g["len"] == FULL} == {120}
    assert {g["cov"] for g in theirs if g["len"] == FULL} == {100}
    for g in grams:
        assert g["cov"] in (COVERAGE, 100, 120, g["len"]), g
        assert g["cov"] == g["len"] or g["cov"] < g["len"], g
    assert {g["sum"] for g in grams} == {0xFFFF}
    status = [st for _, st in lite_fields(cap.path)]
    assert "0" not in status and "1" in status, "tshark: a bad UDP-Lite checksum, or none checked"
    assert a.counter("moved_active") == 2 and b.counter("moved_passive") == 2
    assert a.stop() == 0 and b.stop() == 0


def kernel_csum_errors(host) -> int:
    """UdpLite InCsumErrors in the host's network namespace (/proc/net/snmp)."""
    lines = [l.split() for l in host.run(["cat", "/proc/net/snmp"], timeout=10,
                                          cgroup=False).stdout.splitlines()
             if l.startswith("UdpLite:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))["InCsumErrors"])


@pytest.mark.parametrize("impl", ["kernel", "ebpf"])
def test_bit_error_inside_a_rules_coverage_resets_loudly(bed, tmp_path, impl):
    """Byte 100 of a DATA datagram is past the default coverage (a flip
    there reaches the application: test_udplite_ebpf.py) but inside
    udplite:cov=120: the receiver drops the datagram (the kernel counts a
    checksum error, the eBPF ingress its own), and both applications get
    ECONNRESET with no wrong byte delivered."""
    flip = Flip(bed)
    try:
        flip.configure(nth=100, at=100)
        flip.attach(bed.a)
        a = daemon(bed.a, impl, [f"{SINK}=udplite:cov=120"])
        b = daemon(bed.b, impl, [f"{SINK}=udplite"])
        errors_before = kernel_csum_errors(bed.b)
        w, r = transfer(bed, False, 8 * MiB, timeout=40)
        st = flip.stats()
    finally:
        flip.close()
    info = f"writer {w} reader {r} flip {st}"
    assert st["flipped"] == 1, info
    assert r["mismatch"] is None and r["received"] <= st["offset"], info
    assert r["read_end"] == "ECONNRESET" and w.get("error") in RESET_SEEN_BY_WRITER, info
    if impl == "ebpf":
        assert lite(b)["counters"]["ebpf_drop_in_bad_checksum"] == 1, info
    else:
        assert kernel_csum_errors(bed.b) == errors_before + 1, info
    assert a.counter("resets_sent") + b.counter("resets_sent") >= 1
    assert a.stop() == 0 and b.stop() == 0


BAD = ["8081=udplite:cov=39", "8081=udplite:cov=1441", "8081=udplite:cov=abc",
       "8081=udplite:cov=", "8081=udplite:coverage=100", "8081=udplite:"]


@pytest.mark.parametrize("rule", BAD)
def test_bad_coverage_is_one_line_and_changes_nothing(bed, rule):
    hd = Hookerd(bed.a, [f"{HTTP}=udplite:cov=200"]).start()
    before = ctl(hd, "policy", "list", "--json").stdout
    r = ctl(hd, "policy", "add", rule)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert "the checksum coverage is cov=N" in lines[0] and "40" in lines[0], lines[0]
    assert ctl(hd, "policy", "list", "--json").stdout == before
    assert hd.stop() == 0
    # The same rule at start: one line, and hookerd does not start.
    bad = Hookerd(bed.a, [rule])
    run = bed.a.run(bad.argv(), timeout=20, check=False, cgroup=False)
    lines = run.stderr.strip().splitlines()
    assert run.returncode != 0 and len(lines) == 1, run.stderr
    assert "the checksum coverage is cov=N" in lines[0], lines[0]
    assert "hookerd: ready" not in run.stdout
