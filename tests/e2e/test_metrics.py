"""Issue 13: hookerd's counters in the Prometheus text format on --metrics
ADDR:PORT, served from its own loop: the same numbers as `hookerctl stats`,
per mechanism, over IPv4 and IPv6; bad requests and slow clients cost it
nothing, bad --metrics values stop it in one line."""
import json
import socket
import subprocess

import pytest

from apps import fetch, http_server, make_files, url
from hookerd import HOOKERCTL, HOOKERD, Hookerd, wait_for
from metrics_http import get, http, parse, value

UDP = '{mechanism="udp"}'


@pytest.fixture
def hooked(bed):
    """hookerd on both hosts moving 8000; a's metrics on 127.0.0.1:9100
    (a port alone), b's on [::1]:9100."""
    a = Hookerd(bed.a, [8000], extra=["--metrics", "9100"]).start()
    b = Hookerd(bed.b, [8000], extra=["--metrics", "[::1]:9100"]).start()
    yield bed, a, b
    assert a.stop() == 0, a.stderr()
    assert b.stop() == 0, b.stderr()


def stats(hd):
    r = subprocess.run([HOOKERCTL, "--control", hd.control, "stats", "--json"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_metrics_count_a_transfer_per_mechanism(hooked, tmp_path):
    bed, a, b = hooked
    sums = make_files(tmp_path, {"f": 510_000})
    http_server(bed.b, tmp_path, 8000)
    assert fetch(bed.a, url(bed.b, 8000, "f"), tmp_path / "g") == sums["f"]

    code, headers, text = get(bed.a, "127.0.0.1", 9100)
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = parse(text)
    for name, f in fams.items():
        assert name.startswith("hooker_"), name
        assert f["type"] in ("counter", "gauge") and f["help"], name
        assert name.endswith("_total") == (f["type"] == "counter"), name
    # The client received the file, the server sent it, over udp.
    assert value(fams, "hooker_bytes_received_total", UDP) >= 510_000
    assert value(fams, "hooker_datagrams_received_total", UDP) >= 510_000 / 1400
    assert value(fams, "hooker_kernel_moved_active_total") == 1
    assert value(fams, "hooker_mechanism_deployed", UDP) == 1
    # The same numbers as `hookerctl stats` (nothing moves between the two).
    s = stats(a)
    for k, v in s["counters"]["kernel"].items():
        assert value(fams, f"hooker_kernel_{k}_total") == v, k
    for k, v in s["counters"]["mechanisms"]["udp"].items():
        assert value(fams, f"hooker_{k}_total", UDP) == v, k

    # b's endpoint answers on IPv6 loopback only.
    code, _, text = get(bed.b, "::1", 9100)
    assert code == 200
    assert value(parse(text), "hooker_bytes_sent_total", UDP) >= 510_000
    with pytest.raises(ConnectionRefusedError):
        get(bed.b, "127.0.0.1", 9100)
    # Nothing listens outside loopback on a.
    with pytest.raises(ConnectionRefusedError):
        get(bed.b, bed.a.ip4, 9100)


BAD_REQUESTS = [
    (b"hello\r\n\r\n", 400), (b"GET /metrics\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 400),
    (b"GET /other HTTP/1.1\r\n\r\n", 404), (b"GET / HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
]


@pytest.mark.parametrize("request_,code", BAD_REQUESTS,
                         ids=["garbage", "no-version", "head-too-big", "other-path", "root",
                              "post"])
def test_bad_requests_get_an_answer_and_change_nothing(hooked, request_, code):
    bed, a, _ = hooked
    answer = http(bed.a, "127.0.0.1", 9100, request_)
    assert answer.startswith(f"HTTP/1.1 {code} ".encode()), answer[:100]
    assert get(bed.a, "127.0.0.1", 9100)[0] == 200


def test_silent_clients_block_nothing(hooked, tmp_path):
    bed, a, _ = hooked
    idle = []
    try:
        # More silent clients than it serves at once, and one half a request.
        for _ in range(20):
            s = bed.a.socket()
            s.settimeout(10)
            s.connect(("127.0.0.1", 9100))
            idle.append(s)
        idle[0].sendall(b"GET /metr")
        # Transfers and the control socket go on meanwhile.
        sums = make_files(tmp_path, {"f": 510_000})
        http_server(bed.b, tmp_path, 8000)
        assert fetch(bed.a, url(bed.b, 8000, "f"), tmp_path / "g") == sums["f"]
        assert a.counter("moved_active") == 1
        # The silent ones are dropped after the client timeout (5 s); then
        # a scrape is answered again.
        for s in idle:
            assert s.recv(100) == b""  # closed by hookerd, within the 10 s timeout
        assert get(bed.a, "127.0.0.1", 9100)[0] == 200
    finally:
        for s in idle:
            s.close()


@pytest.mark.parametrize("arg,why", [
    ("abc", "'abc' is not a port number"), ("0", "out of range"), ("70000", "out of range"),
    ("::1:9100", "in brackets"), ("localhost:9100", "not an IPv4 address"),
    ("[::1]", "not [IPV6]:PORT"), ("1.2.3.4:", "not a port number"),
])
def test_bad_metrics_values_stop_hookerd_in_one_line(arg, why):
    r = subprocess.run([HOOKERD, "--redirect", "8000", "--metrics", arg], capture_output=True,
                       text=True, timeout=10)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r
    assert lines[0].startswith(f"hookerd: error: --metrics {arg}: ") and why in lines[0], lines


def test_metrics_port_taken_stops_hookerd_before_anything_attaches(bed):
    with bed.a.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 9100))
        s.listen(1)
        hd = Hookerd(bed.a, [8000], extra=["--metrics", "9100"])
        with pytest.raises(RuntimeError):
            hd.start()
        assert hd.proc.wait(timeout=10) == 1
        lines = hd.stderr().strip().splitlines()
        assert len(lines) == 1 and "--metrics 127.0.0.1:9100" in lines[0], lines
        assert "Address already in use" in lines[0]
    out = bed.a.run(["bpftool", "cgroup", "show", bed.a.cgroup], timeout=10, cgroup=False).stdout
    assert "sock_ops" not in out
