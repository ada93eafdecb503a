"""`make bench-quick` in CI-sized time: it must produce the JSON, the plots and the
report, with Hooker measured beside its baselines (issue 4)."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import testbed

REPO = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("HOOKER_BUILD", REPO / "build"))


def test_bench_quick_produces_json_plots_and_report(tmp_path):
    reason = testbed.require_root()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(REPO / "bench" / "run.sh"), str(BUILD), "quick",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert took < 300, f"bench-quick took {took:.0f} s, more than its 5 minutes"
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["machine"]["cores"] == os.cpu_count()
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "Hooker not available" not in report, report[:2000]
    assert "**paper**" in report
    # Table 1's per-mechanism deploy: every mechanism deployed 20 times, timed.
    deploys = {d["mechanism"]: d for d in res["table1"]["deploy_ms"]}
    assert "udp" in deploys and len(deploys["udp"]["runs"]) == 20, deploys
    assert all(0 < ms < 1000 for ms in deploys["udp"]["runs"])
    assert "| this run: deploy `udp` on a running hookerd |" in report
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs, "no plot"
    for p in tmp_path.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{p.name} is not a PNG"
