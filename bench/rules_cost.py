"""What the configuration file's rules cost each new connection that hookerd
does not move (issue 13): the sock_ops program walks the rule table at every
handshake step (connect, accept), so a connection pays for each rule before
the policy says "plain TCP". Short connections on a port outside the policy,
with hookerd on both hosts and kernel.bpf_stats_enabled on, in interleaved
rounds of three variants on one bed:

  none      no configuration file (the port rule of tax.py's POLICY only)
  other     N rules naming other ports (rejected at the port, the usual case)
  prefixes  N rules over the connection's port with other destination
            prefixes (each rule is compared whole: the worst case per rule)

    sudo /usr/bin/python3 bench/rules_cost.py --build BUILD [--rules 32] [--rounds 5] [--conns 500]
        [--save bench/comparisons/NAME.json --title "what was measured"]

Per round and variant: hk_sockops's run time summed over both hosts, per
connection, and its runs per connection. Prints one JSON object; saved with
--save, bench/report.py renders it into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "e2e"), str(HERE)]

import testbed  # noqa: E402
import workloads as wl  # noqa: E402
from apps import PY, listening  # noqa: E402
from hookerd import wait_for  # noqa: E402
from tax import POLICY, STATS, prog_times  # noqa: E402

PORT = 9002  # not in POLICY: every connection stays TCP
VARIANTS = ("none", "other", "prefixes")

# Accepts and closes at once, for ever.
SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(512)
while True:
    c, _ = s.accept(); c.close()
"""

# N connections one after the other, each until the server's close.
CLIENT = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    c = socket.create_connection((host, port), timeout=10)
    c.settimeout(10)
    while c.recv(64): pass
    c.close()
"""


def config(variant: str, n: int, d: Path) -> list[str]:
    """hookerd's flags for the variant: a --config FILE of n rules, or none."""
    if variant == "none":
        return []
    rules = []
    for i in range(n):
        if variant == "other":
            rules.append(f'[[rule]]\nport = {20000 + i}\nmech = "udp"\n')
        else:  # the measured port, TEST-NET-3 destinations: never this bed's
            rules.append(f'[[rule]]\nport = "{PORT - 1}-{PORT + 1}"\n'
                         f'dst = "203.0.113.{i}/32"\nmech = "udp"\n')
    f = d / f"{variant}.toml"
    f.write_text("\n".join(rules))
    return ["--config", str(f)]


def one(binary, bed, variant, n_rules, conns, d) -> dict:
    with wl.HookerPair(binary, bed, POLICY, config(variant, n_rules, d)) as pair:
        before = prog_times(pair)
        bed.a.run([PY, "-c", CLIENT, bed.b.ip4, str(PORT), str(conns)], timeout=300)
        after = prog_times(pair)
    runs = after["hk_sockops"][0] - before.get("hk_sockops", [0, 0])[0]
    ns = after["hk_sockops"][1] - before.get("hk_sockops", [0, 0])[1]
    return {"ns_per_conn": round(ns / conns, 1), "runs_per_conn": round(runs / conns, 2),
            "ns_per_run": round(ns / runs, 1) if runs else None}


def measure(binary: Path, n_rules: int, rounds: int, conns: int, log=lambda m: None) -> dict:
    per = {v: [] for v in VARIANTS}
    d = Path(tempfile.mkdtemp(prefix="hooker-rules-cost-"))
    old = STATS.read_text().strip()
    try:
        with testbed.TwoHosts() as bed:
            srv = bed.b.popen([PY, "-c", SERVER, str(PORT)])
            try:
                wait_for(lambda: listening(bed.b, PORT), 10, f"server :{PORT}")
                STATS.write_text("1")
                for k in range(rounds):
                    # A different order each round: drift is not one variant's.
                    order = VARIANTS[k % 3:] + VARIANTS[:k % 3]
                    for v in order:
                        log(f"rules cost round {k + 1}/{rounds}: {v}")
                        per[v].append(one(binary, bed, v, n_rules, conns, d))
            finally:
                bed._stop_proc(srv)
    finally:
        STATS.write_text(old)
        shutil.rmtree(d, ignore_errors=True)

    def spread(xs):
        return {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1),
                "max": round(max(xs), 1)}

    out = {"kind": "rules_cost", "rules": n_rules, "rounds": rounds, "conns": conns, "port": PORT, "runs": per,
           "ns_per_conn": {v: spread([r["ns_per_conn"] for r in rs]) for v, rs in per.items()},
           "runs_per_conn": {v: spread([r["runs_per_conn"] for r in rs]) for v, rs in per.items()}}
    # What the rules add per connection, paired within each round.
    for v in ("other", "prefixes"):
        out[f"extra_ns_per_conn_{v}"] = spread(
            [r["ns_per_conn"] - base["ns_per_conn"] for r, base in zip(per[v], per["none"])])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="CMake build dir holding hookerd")
    ap.add_argument("--rules", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=500, help="connections per variant and round")
    ap.add_argument("--save", type=Path, help="also write the JSON here (bench/comparisons/)")
    ap.add_argument("--title", default="", help="a title for the saved run")
    a = ap.parse_args(argv)
    if not 1 <= a.rules <= 256 or a.rounds < 1 or a.conns < 10:
        ap.error("--rules must be 1..256, --rounds >= 1, --conns >= 10")
    if a.save and not a.save.parent.is_dir():
        ap.error(f"--save {a.save}: {a.save.parent} is not a directory")
    reason = testbed.require_root() or wl.hooker_missing(Path(a.build).resolve())
    if reason:
        print(f"rules_cost: {reason}", file=sys.stderr)
        return 1
    binary, _ = wl.snapshot_hookerd(Path(a.build).resolve())
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        out = measure(binary, a.rules, a.rounds, a.conns, log=lambda m: print(m, file=sys.stderr))
        out.update(title=a.title, date=started, loadavg_end=[round(x, 2) for x in os.getloadavg()],
                   machine={"kernel": platform.release(), "cores": os.cpu_count()})
        text = json.dumps(out, indent=2)
        print(text)
        if a.save:
            a.save.write_text(text + "\n")
    finally:
        shutil.rmtree(binary.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
