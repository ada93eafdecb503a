"""`make demo` does what the README says: a file crosses two hosts intact and
the report names UDP as its carrier."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_reports_udp_carried_the_file():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True,
                       text=True, timeout=180, env=dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sha256 matches" in r.stdout
    assert "the file's bytes were carried by: UDP (moved by Hooker)" in r.stdout
    assert ", 0 payload bytes" in r.stdout
