"""udplite's two implementations side by side with udp and plain TCP: iperf3
over a bare veth, one stream, the variants taking turns in every round (the
machine is shared and noisy: ratios within a round matter more than absolute
values), and the run time per packet of udplite's BPF programs.

    sudo python3 bench/udplite_impls.py --build BUILD [--rounds 3] [--secs 5] [-R]

Prints one JSON object (per variant: every run in Gbit/s and the median;
per BPF program of the ebpf variant: runs and ns per run).
"""
from __future__ import annotations

import argparse
import json
import statistics
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


def iperf(bed, port, secs, reverse) -> float:
    srv = wl.IperfServer(bed, port)
    try:
        argv = ["iperf3", "-c", bed.b.ip4, "-p", str(port), "-t", str(secs), "-J"]
        r = bed.a.run(argv + (["-R"] if reverse else []), timeout=secs + 30, check=False)
        j = json.loads(r.stdout)
        if "error" in j:
            raise RuntimeError(j["error"])
        return j["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.close()


def one(binary, bed, variant, secs, reverse, progs) -> float:
    spec = VARIANTS[variant]
    if spec is None:
        return iperf(bed, wl.IPERF_PORT, secs, reverse)
    port, rule, extra = spec
    with wl.HookerPair(binary, bed, rule, extra) as pair:
        gbps = iperf(bed, port, secs, reverse)
        for d in pair.daemons:
            for p in wl.bpf_objects_of(d.proc.pid)["progs"]:
                if p["name"] in LITE_PROGS and p.get("run_cnt"):
                    acc = progs.setdefault(p["name"], {"run_cnt": 0, "run_time_ns": 0})
                    acc["run_cnt"] += p["run_cnt"]
                    acc["run_time_ns"] += p["run_time_ns"]
        return gbps


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("-R", dest="reverse", action="store_true", help="iperf3 -R (b sends)")
    args = ap.parse_args(argv)
    binary = wl.hookerd_binary(args.build)
    runs = {v: [] for v in VARIANTS}
    progs: dict = {}
    old = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        with testbed.TwoHosts() as bed:
            for r in range(args.rounds):
                for v in VARIANTS:
                    g = one(binary, bed, v, args.secs, args.reverse, progs)
                    runs[v].append(round(g, 3))
                    print(f"round {r + 1}: {v} {g:.2f} Gbit/s", file=sys.stderr, flush=True)
    finally:
        STATS.write_text(old)
    out = {"iperf3": {"streams": 1, "secs": args.secs, "reverse": args.reverse,
                      "link": "bare veth"},
           "gbps": {v: {"runs": x, "median": statistics.median(x)} for v, x in runs.items()},
           "bpf_ns_per_run": {k: {"runs": p["run_cnt"],
                                  "ns": round(p["run_time_ns"] / p["run_cnt"], 1)}
                              for k, p in progs.items()}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
