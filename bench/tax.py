"""What traffic hookerd does not move pays for it (issue 12): plain TCP on a
port outside the policy, with and without hookerd on both hosts, in
interleaved rounds of one run on one bed (the machine is shared and noisy:
the ratio within a round matters more than absolute values).

    sudo /usr/bin/python3 bench/tax.py --build BUILD [--rounds 5] [--secs 3] [--trips 2000]

Per round and variant: iperf3 throughput (one stream, a to b) and 1-byte
request/response round trips on a kept connection (median). Then, with
kernel.bpf_stats_enabled on, the run time of each hookerd program that ran
for that traffic (ns per run). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "e2e"), str(HERE)]

import testbed  # noqa: E402
import workloads as wl  # noqa: E402
from apps import PY, listening  # noqa: E402
from hookerd import wait_for  # noqa: E402
from rr_latency import CLIENT, SERVER  # noqa: E402

POLICY = "5301=udp"  # what hookerd moves; the traffic measured is on other ports
RR_PORT = 9001
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def iperf(bed, secs) -> float:
    srv = wl.IperfServer(bed, wl.IPERF_PORT)
    try:
        r = bed.a.run(["iperf3", "-c", bed.b.ip4, "-p", str(wl.IPERF_PORT), "-t", str(secs), "-J"],
                      timeout=secs + 30, check=False)
        j = json.loads(r.stdout)
        if "error" in j:
            raise RuntimeError(f"iperf3: {j['error']}")
        return j["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.close()


def rr_median_us(bed, trips) -> float:
    r = bed.a.run([PY, "-c", CLIENT, bed.b.ip4, str(RR_PORT), str(trips)], timeout=120)
    return statistics.median(json.loads(r.stdout))


def prog_times(pair) -> dict:
    """hookerd's programs (both hosts), by name: runs and total ns."""
    out: dict[str, list[int]] = {}
    for d in pair.daemons:
        for p in wl.bpf_objects_of(d.proc.pid)["progs"]:
            acc = out.setdefault(p["name"], [0, 0])
            acc[0] += p.get("run_cnt", 0)
            acc[1] += p.get("run_time_ns", 0)
    return out


def measure(binary: Path, rounds: int, secs: int, trips: int, log=lambda m: None) -> dict:
    """Interleaved rounds of plain TCP without and with hookerd on both hosts
    (policy: POLICY only), then one pass with bpf_stats for the programs."""
    runs = {v: {"gbps": [], "rr_us": []} for v in ("without", "with")}
    progs: dict[str, dict] = {}
    with testbed.TwoHosts() as bed:
        rr = bed.b.popen([PY, "-c", SERVER, str(RR_PORT)])
        try:
            wait_for(lambda: listening(bed.b, RR_PORT), 10, f"rr server :{RR_PORT}")
            for k in range(rounds):
                order = ("without", "with") if k % 2 == 0 else ("with", "without")
                for v in order:
                    log(f"unmoved traffic round {k + 1}/{rounds}: {v} hookerd")
                    if v == "without":
                        runs[v]["gbps"].append(iperf(bed, secs))
                        runs[v]["rr_us"].append(rr_median_us(bed, trips))
                        continue
                    with wl.HookerPair(binary, bed, POLICY):
                        runs[v]["gbps"].append(iperf(bed, secs))
                        runs[v]["rr_us"].append(rr_median_us(bed, trips))
            old = STATS.read_text().strip()
            STATS.write_text("1")
            try:
                with wl.HookerPair(binary, bed, POLICY) as pair:
                    before = prog_times(pair)
                    iperf(bed, secs)
                    rr_median_us(bed, trips)
                    after = prog_times(pair)
            finally:
                STATS.write_text(old)
            for name, (cnt, ns) in after.items():
                c, t = cnt - before.get(name, [0, 0])[0], ns - before.get(name, [0, 0])[1]
                if c:
                    progs[name] = {"runs": c, "ns_per_run": round(t / c, 1)}
        finally:
            bed._stop_proc(rr)
    out = {
        "policy": POLICY, "rounds": rounds, "iperf_secs": secs, "trips": trips, "runs": runs,
        "median": {v: {k: statistics.median(xs) for k, xs in r.items()} for v, r in runs.items()},
        "throughput_ratio": [w / o for w, o in zip(runs["with"]["gbps"], runs["without"]["gbps"])],
        "rr_rate_ratio": [o / w for w, o in zip(runs["with"]["rr_us"], runs["without"]["rr_us"])],
        "programs": progs,
    }
    out["throughput_ratio_median"] = statistics.median(out["throughput_ratio"])
    out["rr_rate_ratio_median"] = statistics.median(out["rr_rate_ratio"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="CMake build dir holding hookerd")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--secs", type=int, default=3, help="iperf3 seconds per run")
    ap.add_argument("--trips", type=int, default=2000, help="round trips per run")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.secs < 1 or a.trips < 10:
        ap.error("--rounds and --secs must be >= 1, --trips >= 10")
    reason = testbed.require_root() or wl.hooker_missing(Path(a.build).resolve())
    if reason:
        print(f"tax: {reason}", file=sys.stderr)
        return 1
    binary, _ = wl.snapshot_hookerd(Path(a.build).resolve())
    try:
        print(json.dumps(measure(binary, a.rounds, a.secs, a.trips), indent=2))
    finally:
        shutil.rmtree(binary.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
