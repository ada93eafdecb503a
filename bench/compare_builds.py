"""Hooker built before and after a change, each beside plain TCP in the same
run: iperf3 with 1 and 4 streams, connection set-up (connect, first byte,
close) with the machine's CPU time per set-up, and 1-byte request/response on
a kept connection. Rounds interleave plain TCP and the two builds so the
machine's noise hits all three; each figure is a ratio to plain TCP in its
round, given as the median and the spread over rounds. Prints JSON, then a
Markdown table.

    sudo /usr/bin/python3 bench/compare_builds.py --before BUILD --after BUILD [--rounds 3]
        [--save bench/comparisons/NAME.json --title "what changed"]

Saved comparisons are part of bench/BENCHMARKS.md (report.py renders them).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE)]

import testbed  # noqa: E402
import workloads as wl  # noqa: E402
from report import comparison_table  # noqa: E402
from rr_latency import CLIENT as RR_CLIENT, SERVER as RR_SERVER  # noqa: E402

PROBES = HERE / "probes.py"
# plain TCP / through Hooker
IPERF = (wl.IPERF_PORT, wl.HOOKED_IPERF_PORT)
SETUP = (9000, 9001)
RR = (9100, 9101)
FIGURES = ("iperf3_1", "iperf3_4", "setup_ms", "rr_us", "setup_cpu_us")


def measure(bed, port_of, cfg) -> dict:
    """Every figure once, against servers listening on port_of[kind]."""
    out = {}
    for streams in (1, 4):
        out[f"iperf3_{streams}"] = wl.iperf3(bed, streams, cfg.secs, port_of["iperf"])
    with wl.CpuMeter() as cpu:
        r = bed.a.run([wl.PY, str(PROBES), "setup", bed.b.ip4, str(port_of["setup"]),
                       str(cfg.setups)], timeout=120)
    out["setup_ms"] = statistics.median(json.loads(r.stdout)) * 1000
    # The whole machine's busy time per connection: both hosts, the client
    # and server, hookerd (in ticks of 10 ms: a run of some hundred ms).
    out["setup_cpu_us"] = cpu.busy_s / cfg.setups * 1e6
    r = bed.a.run([wl.PY, "-c", RR_CLIENT, bed.b.ip4, str(port_of["rr"]), str(cfg.trips)],
                  timeout=120)
    out["rr_us"] = statistics.median(json.loads(r.stdout))
    return out


def servers(bed, i) -> list:
    """The three servers on the plain (i=0) or hooked (i=1) ports."""
    procs = [wl.IperfServer(bed, IPERF[i])]
    p = bed.b.popen([wl.PY, str(PROBES), "serve", bed.b.ip4, str(SETUP[i])],
                    stdout=subprocess.PIPE, text=True)
    if wl.readline_within(p, 10).strip() != "ready":
        raise RuntimeError("probes.py serve did not start")
    procs.append(p)
    procs.append(bed.b.popen([wl.PY, "-c", RR_SERVER, str(RR[i])]))
    wl.wait_listening(bed.a, bed.b.ip4, RR[i], what="request/response server")
    return procs


def stop(bed, procs):
    for p in procs:
        p.close() if isinstance(p, wl.IperfServer) else bed._stop_proc(p)


def hooker_round(bed, binary, cfg) -> dict:
    extra = ["--redirect", str(SETUP[1]), "--redirect", str(RR[1])]
    with wl.HookerPair(binary, bed, IPERF[1], extra) as pair:
        procs = servers(bed, 1)  # after hookerd, as in the suite
        try:
            got = measure(bed, {"iperf": IPERF[1], "setup": SETUP[1], "rr": RR[1]}, cfg)
            moved = sum(d.control("status")["counters"]["kernel"]["moved_active"]
                        for d in pair.daemons)
        finally:
            stop(bed, procs)
    # iperf3's control and data connections, set-up's and request/response's
    want = 2 + 5 + cfg.setups + 1
    if moved < want:
        raise RuntimeError(f"only {moved} of {want} connections were moved")
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, type=Path, help="build dir of the old hookerd")
    ap.add_argument("--after", required=True, type=Path, help="build dir of the new hookerd")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=3, help="iperf3 seconds per run")
    ap.add_argument("--setups", type=int, default=200, help="connections per set-up run")
    ap.add_argument("--trips", type=int, default=2000, help="round trips per rr run")
    ap.add_argument("--save", type=Path, help="also write the JSON here (bench/comparisons/)")
    ap.add_argument("--title", default="", help="what changed between the builds")
    cfg = ap.parse_args(argv)
    reason = testbed.require_root()
    if reason:
        print(f"compare_builds: {reason}", file=sys.stderr)
        return 1
    for name in ("before", "after"):
        why = wl.hooker_missing(getattr(cfg, name))
        if why:
            print(f"compare_builds: --{name}: {why}", file=sys.stderr)
            return 1
    builds = {name: wl.snapshot_hookerd(getattr(cfg, name))[0] for name in ("before", "after")}
    try:
        runs = {k: [] for k in ("tcp", *builds)}
        with testbed.TwoHosts() as bed:
            plain = servers(bed, 0)
            try:
                for r in range(cfg.rounds):
                    print(f"round {r + 1}/{cfg.rounds}", file=sys.stderr)
                    runs["tcp"].append(measure(bed, {"iperf": IPERF[0], "setup": SETUP[0],
                                                     "rr": RR[0]}, cfg))
                    for name, binary in builds.items():
                        runs[name].append(hooker_round(bed, binary, cfg))
            finally:
                stop(bed, plain)
    finally:
        for binary in builds.values():  # the run's private copies
            shutil.rmtree(binary.parent, ignore_errors=True)
    res = {"title": cfg.title,
           "config": {k: str(v) for k, v in vars(cfg).items() if k not in ("save", "title")},
           "runs": runs, "ratios": {}}
    for name in builds:
        res["ratios"][name] = {}
        for f in FIGURES:
            rs = [h[f] / t[f] for h, t in zip(runs[name], runs["tcp"])]
            res["ratios"][name][f] = {"median": statistics.median(rs), "min": min(rs),
                                      "max": max(rs)}
    print(json.dumps(res, indent=2))
    if cfg.save:
        cfg.save.write_text(json.dumps(res, indent=2) + "\n")
    print("\n" + "\n".join(comparison_table(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
