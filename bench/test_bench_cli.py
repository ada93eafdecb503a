"""The bench's front door: bad input gets a clear message and a non-zero exit before
anything is built, and the report renders what it is given (and nothing else)."""
import json
import os
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402


def run_sh(*args):
    return subprocess.run(["bash", str(HERE / "run.sh"), *args], capture_output=True,
                          text=True, timeout=60)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the bench only runs as root")


@needs_root
@pytest.mark.parametrize("args,says", [
    (["build", "quick", "--mechanisms", "tcp,warp"], "unknown mechanism 'warp'"),
    (["build", "quick", "--loss", "150"], "below 100%"),
    (["build", "quick", "--loss", "-1"], "at least 0%"),
    (["build", "quick", "--loss", "lots"], "loss rates are numbers"),
    (["build", "quick", "--runs", "0"], "at least 1"),
    (["build", "sometimes"], "unknown mode 'sometimes'"),
    (["build"], "usage:"),
])
def test_bad_input_is_refused_clearly(args, says):
    r = run_sh(*args)
    assert r.returncode == 2, r
    assert says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@needs_root
def test_not_root_is_refused():
    # A copy the unprivileged user can read wherever the checkout lives (a
    # clone under a 0700 directory would refuse it with "Permission denied").
    d = Path(tempfile.mkdtemp(prefix="hooker-bench-cli-"))
    try:
        d.chmod(0o755)
        script = d / "run.sh"
        shutil.copy(HERE / "run.sh", script)
        script.chmod(0o755)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "bash", str(script), "build", "quick"],
                           capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(d)
    assert r.returncode == 2, r.stderr
    assert "needs root" in r.stderr


def synthetic_results():
    """A results.json shaped like the suite's, with made-up values: it only checks
    the rendering, and never reaches a committed report."""
    cell = lambda v, s, t, f=(): {"loss_pct": 0.0, "variant": v, "size": s, "bytes": 1,
                                  "times_s": t, "median_s": (sorted(t)[len(t) // 2]
                                                             if t else None),
                                  "failures": list(f)}
    return {"mode": "quick", "date": "d", "duration_s": 1,
            "machine": {"kernel": "k", "cores": 2, "cpu": "c", "memory_gib": 1, "os": "o",
                        "curl": "curl", "iperf3": "iperf3", "kcptun": "kcp",
                        "python": "3", "cc_available": ["cubic"], "cc_default": "cubic"},
            "config": {"losses_pct": [0.0], "runs": 1},
            "hooker": {"available": False, "reason": "hookerd not built"},
            "downloads": [cell("tcp-cubic", "3KB", [0.1]),
                          cell("hooker", "3KB", [], ["curl: exit 28: timed out"])],
            "throughput": [], "table1": {}, "conn_setup": [], "scale": [],
            "not_measured": [{"what": "x", "why": "y"}]}


def test_report_marks_failures_and_the_papers_numbers(tmp_path):
    md = report.write(synthetic_results(), tmp_path).read_text()
    assert "**Hooker not available**: hookerd not built" in md
    assert "**failed**: curl: exit 28: timed out" in md
    assert "| **paper**: Hooker components (Linux 5.0) | 6 s | 20 ms | 400 ns |" in md
    assert "| **paper**: UDP-Lite (Linux 5.0) | 200 ms | 7 ms | N/A |" in md
    assert (tmp_path / "downloads_loss0.png").stat().st_size > 1000
    assert "- x: y" in md
