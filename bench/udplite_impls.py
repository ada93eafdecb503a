"""udplite's two implementations side by side with udp and plain TCP: iperf3
over a bare veth, one stream, the variants taking turns in every round (the
machine is shared and noisy: ratios within a round matter more than absolute
values), the CPU each one burns per GB moved, and the run time per packet of
udplite's BPF programs.

    sudo python3 bench/udplite_impls.py --build BUILD [--rounds 3] [--secs 5] [-R]
        [--save bench/comparisons/NAME.json --title "what was measured"]

CPU per GB: the machine's busy CPU time from /proc/stat (user, nice, system,
irq, softirq, steal; both hosts and every process, hookerd included) over the
iperf3 client's run, divided by the bytes the receiver got. Whatever else runs
on the machine is counted too: each round starts by measuring that background
for a second, and keeps the load average.

Prints one JSON object: per round, every variant's figures; per variant, runs,
median, min and max of Gbit/s and CPU-s per GB and of their ratios to tcp in
the same round; per BPF program of the ebpf variant, runs and ns per run.
Saved with --save, bench/report.py renders it into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import testbed  # noqa: E402
import workloads as wl  # noqa: E402

# variant: (server TCP port, its rule, hookerd's extra flags); None: no hookerd
VARIANTS = {
    "tcp": None,
    "udp": (5301, "5301=udp", []),
    "udplite (kernel)": (5302, "5302=udplite", ["--udplite-impl", "kernel"]),
    "udplite (ebpf)": (5303, "5303=udplite", ["--udplite-impl", "ebpf"]),
}
LITE_PROGS = ("hk_lite_egress", "hk_lite_ingress")
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"udplite_impls: {msg}", file=sys.stderr)
    sys.exit(2)


def iperf(bed, port, secs, reverse, streams=1) -> dict:
    """One iperf3 run (`streams` parallel streams), a the client; the machine's
    busy CPU over the client's run."""
    srv = wl.IperfServer(bed, port)
    try:
        argv = ["iperf3", "-c", bed.b.ip4, "-p", str(port), "-t", str(secs),
                "-P", str(streams), "-J"]
        with wl.CpuMeter() as cpu:
            r = bed.a.run(argv + (["-R"] if reverse else []), timeout=secs + 30, check=False)
        try:
            j = json.loads(r.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"iperf3: exit {r.returncode}: {r.stderr.strip()[-200:]}")
        if "error" in j:
            raise RuntimeError(j["error"])
        got = j["end"]["sum_received"]
        return {"gbps": round(got["bits_per_second"] / 1e9, 4), "bytes": got["bytes"],
                "cpu_s": round(cpu.busy_s, 2), "wall_s": round(cpu.wall_s, 2),
                "cpu_s_per_gb": round(cpu.per_gb(got["bytes"]), 3) if got["bytes"] else None}
    finally:
        srv.close()


def one(binary, bed, spec, secs, reverse, progs, streams=1, extra=None) -> dict:
    """One iperf3 run of a variant: spec None is plain TCP, else (server port,
    hookerd's rule, its flags), hookerd on both hosts started first; `extra`
    replaces the flags ({host name: flags} where each host needs its own)."""
    if spec is None:
        return iperf(bed, wl.IPERF_PORT, secs, reverse, streams)
    port, rule, flags = spec
    with wl.HookerPair(binary, bed, rule, flags if extra is None else extra) as pair:
        got = iperf(bed, port, secs, reverse, streams)
        for d in pair.daemons:
            for p in wl.bpf_objects_of(d.proc.pid)["progs"]:
                if p["name"] in LITE_PROGS and p.get("run_cnt"):
                    acc = progs.setdefault(p["name"], {"run_cnt": 0, "run_time_ns": 0})
                    acc["run_cnt"] += p["run_cnt"]
                    acc["run_time_ns"] += p["run_time_ns"]
        return got


def spread(xs) -> dict:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"runs": [], "median": None, "min": None, "max": None}
    return {"runs": xs, "median": round(statistics.median(xs), 4),
            "min": min(xs), "max": max(xs)}


def summarize(rounds, names=tuple(VARIANTS), base_of=lambda v: "tcp") -> dict:
    """Per case (a key of every round): each figure and its ratio to its plain TCP
    case (base_of) in the same round, over rounds."""
    out = {}
    for v in names:
        b = base_of(v)
        ok = [r for r in rounds if "error" not in r[v]]
        both = [r for r in ok if "error" not in r[b]]
        out[v] = {
            "runs": len(ok), "failures": [r[v]["error"] for r in rounds if "error" in r[v]],
            "gbps": spread([r[v]["gbps"] for r in ok]),
            "gbps_ratio_to_tcp": spread([round(r[v]["gbps"] / r[b]["gbps"], 4)
                                         for r in both if r[b]["gbps"]]),
            "cpu_s_per_gb": spread([r[v]["cpu_s_per_gb"] for r in ok]),
            "cpu_ratio_to_tcp": spread([round(r[v]["cpu_s_per_gb"] / r[b]["cpu_s_per_gb"], 3)
                                        for r in both
                                        if r[v]["cpu_s_per_gb"] and r[b]["cpu_s_per_gb"]]),
        }
    return out


def run_rounds(n_rounds, names, measure, rotate=False) -> list[dict]:
    """n_rounds rounds, each measuring every case in `names` (measure(name) ->
    its figures) after noting the load average and the machine's background
    CPU; a case that fails keeps its error. rotate: each round starts one case
    later, so no case always runs first."""
    rounds = []
    for n in range(n_rounds):
        rnd = {"loadavg": [round(x, 2) for x in os.getloadavg()],
               "background_cpu_per_s": round(wl.background_cpu(1.0), 3)}
        k = n % len(names) if rotate else 0
        for v in names[k:] + names[:k]:
            try:
                rnd[v] = measure(v)
                msg = f"{rnd[v]['gbps']:.2f} Gbit/s, {rnd[v]['cpu_s_per_gb']} CPU-s/GB"
            except (wl.Unavailable, RuntimeError, subprocess.TimeoutExpired) as e:
                rnd[v] = {"error": str(e)}
                msg = f"FAILED: {e}"
            print(f"round {n + 1}: {v} {msg}", file=sys.stderr, flush=True)
        rounds.append(rnd)
    return rounds


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("-R", dest="reverse", action="store_true", help="iperf3 -R (b sends)")
    ap.add_argument("--save", type=Path, help="also write the JSON here (bench/comparisons/)")
    ap.add_argument("--title", default="", help="a title for the saved run")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        fail(f"--rounds {args.rounds}: at least 1")
    if args.secs < 2:
        fail(f"--secs {args.secs}: at least 2 (CPU time is counted in 10 ms ticks)")
    if args.save and not args.save.parent.is_dir():
        fail(f"--save {args.save}: {args.save.parent} is not a directory")
    why = wl.hooker_missing(args.build)
    if why:
        fail(f"--build {args.build}: {why}")
    why = testbed.require_root()
    if why:
        fail(f"{why}; run as root")
    binary, digest = wl.snapshot_hookerd(args.build)
    rounds = []
    progs: dict = {}
    old = STATS.read_text().strip()
    STATS.write_text("1")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        with testbed.TwoHosts() as bed:
            rounds = run_rounds(args.rounds, list(VARIANTS), lambda v: one(
                binary, bed, VARIANTS[v], args.secs, args.reverse, progs))
    finally:
        STATS.write_text(old)
        shutil.rmtree(binary.parent, ignore_errors=True)
    out = {"kind": "udplite_impls", "title": args.title, "date": started,
           "machine": {"kernel": platform.release(), "cores": os.cpu_count()},
           "hookerd_sha256": digest,
           "config": {"streams": 1, "secs": args.secs, "rounds": args.rounds,
                      "reverse": args.reverse, "link": "bare veth",
                      "cpu": "machine-wide busy CPU from /proc/stat over the iperf3 client's "
                             "run, per 1e9 bytes received"},
           "rounds": rounds, "summary": summarize(rounds),
           "bpf_ns_per_run": {k: {"runs": p["run_cnt"],
                                  "ns": round(p["run_time_ns"] / p["run_cnt"], 1)}
                              for k, p in progs.items()}}
    text = json.dumps(out, indent=2)
    print(text)
    if args.save:
        args.save.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
