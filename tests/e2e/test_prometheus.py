"""Issue 13: a real Prometheus server (Debian's `prometheus`) scrapes
hookerd's --metrics inside the test bed, and a query through its HTTP API
returns the bytes of a transfer the test made over Hooker."""
import json
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import pytest

from apps import fetch, http_server, make_files, url
from hookerd import Hookerd, wait_for
from metrics_http import http

PROM = shutil.which("prometheus")
PROM_PORT = 9090
CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: hookerd
    static_configs:
      - targets: ['127.0.0.1:9100']
"""


@pytest.fixture
def prometheus(bed):
    """Prometheus in a's network namespace, on its loopback, with a storage
    directory of its own; stopped by its PID and removed even on failure."""
    if PROM is None:
        pytest.fail("prometheus is not installed: apt-get install prometheus "
                    "(scripts/install-deps.sh)")
    d = Path(tempfile.mkdtemp(prefix="hooker-prom-"))
    (d / "prometheus.yml").write_text(CONFIG)
    log = open(d / "prometheus.log", "w")
    p = bed.a.popen([PROM, f"--config.file={d / 'prometheus.yml'}",
                     f"--storage.tsdb.path={d / 'data'}",
                     f"--web.listen-address=127.0.0.1:{PROM_PORT}", "--log.level=warn"],
                    cgroup=False, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for(lambda: p.poll() is not None or ready(bed.a), 60, "prometheus to be ready")
        assert p.poll() is None, (d / "prometheus.log").read_text()[-2000:]
        yield p
    finally:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


def api(host, path) -> tuple[int, bytes]:
    raw = http(host, "127.0.0.1", PROM_PORT, f"GET {path} HTTP/1.1\r\nHost: prometheus\r\n"
               "Connection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"Transfer-Encoding: chunked" in head:
        body = dechunk(body)
    return int(head.split()[1]), body


def dechunk(b: bytes) -> bytes:
    out = b""
    while b:
        size, _, rest = b.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += rest[:n]
        b = rest[n + 2:]
    return out


def ready(host) -> bool:
    try:
        return api(host, "/-/ready")[0] == 200
    except OSError:  # not listening yet
        return False


def query(host, promql: str) -> float | None:
    """The first sample's value of an instant query, or None if none."""
    code, body = api(host, "/api/v1/query?query=" + urllib.parse.quote(promql))
    assert code == 200, body[:500]
    j = json.loads(body)
    assert j["status"] == "success", j
    r = j["data"]["result"]
    return float(r[0]["value"][1]) if r else None


@pytest.fixture
def hooked(bed):
    """hookerd on both hosts moving 8000; a's metrics on 127.0.0.1:9100."""
    a = Hookerd(bed.a, [8000], extra=["--metrics", "127.0.0.1:9100"]).start()
    b = Hookerd(bed.b, [8000]).start()
    yield bed, a, b
    assert a.stop() == 0, a.stderr()
    assert b.stop() == 0, b.stderr()


def test_prometheus_scrapes_the_bytes_of_a_transfer(hooked, prometheus, tmp_path):
    bed, a, _ = hooked
    wait_for(lambda: query(bed.a, 'up{job="hookerd"}') == 1, 30, "prometheus to scrape hookerd")
    size = 2_000_000
    sums = make_files(tmp_path, {"f": size})
    http_server(bed.b, tmp_path, 8000)
    assert fetch(bed.a, url(bed.b, 8000, "f"), tmp_path / "g") == sums["f"]
    assert a.counter("moved_active") == 1
    # The client's hookerd received the file over udp; Prometheus has it
    # within a few scrapes.
    got = wait_for(lambda: (query(bed.a, 'hooker_bytes_received_total{mechanism="udp"}') or 0)
                   >= size, 30, "Prometheus to show the transfer's bytes")
    assert got
    assert query(bed.a, "hooker_kernel_moved_active_total") == 1
    assert query(bed.a, 'hooker_bytes_received_total{mechanism="udp"}') < size + 1_000
