"""The benchmark suite (issue 4): `make bench` / `make bench-quick` run this.

Every figure is measured here, in the same run as its baseline; the only numbers
typed in are the paper's, in report.py, marked as the paper's.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import testbed  # noqa: E402
import workloads as wl  # noqa: E402
import report  # noqa: E402

SIZES = {"3KB": 3 * 1024, "510KB": 510 * 1024, "26MB": 26 * 1024 * 1024}
KNOWN = ("cubic", "bbr", "kcptun", "hooker")  # cubic, bbr: plain TCP with that CC
TCP_CCS = ("cubic", "bbr", "reno", "tcp")  # "tcp": the system default CC

# What each mode measures. quick must stay under 5 minutes on 2 cores.
MODES = {
    "quick": dict(runs=3, losses=[0.0, 1.0, 5.0], iperf_runs=2, iperf_secs=3,
                  ready_runs=5, big_losses=[0.0], timeout=60),
    "full": dict(runs=5, losses=[0.0, 1.0, 5.0], iperf_runs=3, iperf_secs=5,
                 ready_runs=20, big_losses=[0.0, 1.0, 5.0], timeout=300),
}


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"bench: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run.sh BUILD MODE --",
                                description="Hooker benchmark suite (bench/README.md).")
    p.add_argument("--build", required=True, help="CMake build dir holding hookerd")
    p.add_argument("--mode", required=True, help="quick or full")
    p.add_argument("--mechanisms", default=",".join(KNOWN),
                   help="comma list of cubic, bbr, reno, tcp (system default CC), kcptun, "
                        "hooker, hooker:MECH (MECH is passed to hookerd as --mechanism MECH)")
    p.add_argument("--loss", default=None,
                   help="comma list of loss rates in percent (default 0,1,5)")
    p.add_argument("--runs", type=int, default=None, help="runs per cell (median)")
    p.add_argument("--out", default=None, help="results directory")
    a = p.parse_args(argv)
    if a.mode not in MODES:
        fail(f"unknown mode {a.mode!r}: quick or full")
    cfg = dict(MODES[a.mode])
    mechs = [m.strip() for m in a.mechanisms.split(",") if m.strip()]
    for m in mechs:
        if m not in KNOWN + TCP_CCS and not m.startswith("hooker:"):
            fail(f"unknown mechanism {m!r}: choose from {', '.join(KNOWN)}, hooker:MECH")
    if a.loss is not None:
        try:
            losses = [float(x) for x in a.loss.split(",")]
        except ValueError:
            fail(f"--loss {a.loss!r}: loss rates are numbers in percent, e.g. 0,1,5")
        for x in losses:
            if not 0 <= x < 100:
                fail(f"--loss {x:g}%: a loss rate must be at least 0% and below 100%")
        cfg["losses"] = losses
        cfg["big_losses"] = [x for x in losses if x in cfg["big_losses"]] or losses[:1]
    if a.runs is not None:
        if a.runs < 1:
            fail(f"--runs {a.runs}: at least 1")
        cfg["runs"] = a.runs
    a.cfg, a.mechs = cfg, mechs
    a.build = Path(a.build).resolve()
    a.out = Path(a.out) if a.out else HERE / "results" / a.mode
    return a


def machine() -> dict:
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=10).stdout.splitlines()[0].strip()
        except Exception as e:  # a missing tool is noted, not fatal
            return f"unknown ({e})"
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.machine())
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    return {"kernel": platform.release(), "cores": os.cpu_count(), "cpu": cpu,
            "memory_gib": round(mem / 2**20, 1),
            "os": first(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
            "curl": first(["curl", "--version"]), "iperf3": first(["iperf3", "--version"]),
            "kcptun": first(["sh", "-c", "dpkg-query -W kcptun"]),
            "python": platform.python_version(),
            "cc_available": open("/proc/sys/net/ipv4/tcp_available_congestion_control")
            .read().split()}


def median(xs):
    return statistics.median(xs) if xs else None


class Suite:
    def __init__(self, args):
        self.a, self.cfg = args, args.cfg
        self.res = {"schema": 1, "mode": args.mode,
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds"),
                    "machine": machine(), "config": {}, "hooker": {}, "downloads": [],
                    "throughput": [], "table1": {}, "not_measured": []}
        self.hooker_reason = None
        sysdef = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
        self.res["machine"]["cc_default"] = sysdef
        self.sys_cc = sysdef

    def log(self, msg):
        print(f"bench: {msg}", flush=True)

    def note(self, what, why):
        entry = {"what": what, "why": why}
        if entry not in self.res["not_measured"]:
            self.res["not_measured"].append(entry)
            self.log(f"not measured: {what}: {why}")

    def cc_of(self, v):
        """The TCP congestion control a variant runs with (hooker and kcptun: default)."""
        if v == "tcp" or v not in TCP_CCS:
            return self.sys_cc
        return v

    # -------------------------------------------------------------- variants
    def variants(self):
        """The download variants; each unavailable one is noted with its reason."""
        out = []
        avail_cc = self.res["machine"]["cc_available"]
        for m in self.a.mechs:
            if m in TCP_CCS and self.cc_of(m) not in avail_cc:
                self.note(f"TCP {m}", f"{m} is not in tcp_available_congestion_control "
                                      f"({' '.join(avail_cc)}) and there are no modules")
                continue
            if m in TCP_CCS and self.label(m) in [self.label(x) for x in out]:
                continue  # "tcp" and the default CC's name are the same variant
            if m.startswith("hooker"):
                if self.hooker_reason:
                    self.note(m, f"not available: {self.hooker_reason}")
                    continue
            out.append(m)
        return out

    def hooker_extra(self, m):
        return ["--mechanism", m.split(":", 1)[1]] if ":" in m else []

    def probe_hooker(self):
        """Starts hookerd once on a bare bed: missing or failing -> not available."""
        if not any(m.startswith("hooker") for m in self.a.mechs):
            return
        self.hooker_reason = wl.hooker_missing(self.a.build)
        if self.hooker_reason is None:
            try:
                with testbed.TwoHosts() as bed, wl.HookerPair(self.a.build, bed, wl.HTTP_PORT):
                    pass
            except wl.Unavailable as e:
                self.hooker_reason = str(e)
        self.res["hooker"] = {"available": self.hooker_reason is None,
                              "reason": self.hooker_reason,
                              "binary": str(wl.hookerd_binary(self.a.build))}
        if self.hooker_reason:
            self.log(f"Hooker not available: {self.hooker_reason}")

    # -------------------------------------------------------------- downloads
    def downloads(self):
        variants = self.variants()
        self.res["config"].update({"rtt_ms": 50, "losses_pct": self.cfg["losses"],
                                   "runs": self.cfg["runs"], "variants": variants,
                                   "sizes_bytes": SIZES,
                                   "sizes_at_every_loss": ["3KB", "510KB"],
                                   "26MB_at_losses_pct": self.cfg["big_losses"],
                                   "link": "hooker-linkemu, 25 ms each way, loss both ways"})
        for loss in self.cfg["losses"]:
            sizes = {k: v for k, v in SIZES.items()
                     if k != "26MB" or loss in self.cfg["big_losses"]}
            if "26MB" not in sizes:
                self.note(f"26MB download at {loss:g}% loss",
                          f"skipped in {self.a.mode} mode to keep it short (run make bench)")
            with testbed.TwoHosts(link=testbed.LinkSpec(delay_ms=25, loss_pct=loss)) as bed:
                self.download_cell(bed, loss, variants, sizes)

    def download_cell(self, bed, loss, variants, sizes):
        server = wl.FileServer(bed, sizes)
        kcp = None
        times = {(v, s): [] for v in variants for s in sizes}
        errors = {(v, s): [] for v in variants for s in sizes}
        try:
            if "kcptun" in variants:
                try:
                    kcp = wl.Kcptun(bed, wl.HTTP_PORT)
                except (wl.Unavailable, RuntimeError) as e:
                    self.note(f"kcptun at {loss:g}% loss", str(e))
                    variants = [v for v in variants if v != "kcptun"]
            for run in range(self.cfg["runs"]):
                # Rotate the order each run so no variant always goes first.
                order = variants[run % len(variants):] + variants[:run % len(variants)]
                for v in order:
                    self.log(f"loss {loss:g}% run {run + 1}/{self.cfg['runs']}: {v}")
                    self.download_variant(bed, v, server, kcp, sizes, times, errors)
        finally:
            if kcp:
                kcp.close()
            server.close()
        for (v, s), ts in times.items():
            if v == "kcptun" and kcp is None:
                continue
            self.res["downloads"].append({
                "loss_pct": loss, "variant": self.label(v), "size": s,
                "bytes": SIZES[s], "times_s": ts, "median_s": median(ts),
                "failures": errors[(v, s)]})

    def label(self, v):
        return f"tcp-{self.cc_of(v)}" if v in TCP_CCS else v

    def download_variant(self, bed, v, server, kcp, sizes, times, errors):
        wl.set_cc(bed, self.cc_of(v))
        url = (kcp.url if v == "kcptun" else
               (lambda n: f"http://{bed.b.ip4}:{wl.HTTP_PORT}/{n}"))
        hooker = None
        try:
            if v.startswith("hooker"):
                hooker = wl.HookerPair(self.a.build, bed, wl.HTTP_PORT, self.hooker_extra(v))
                hooker.__enter__()
            for s in sizes:
                try:
                    times[(v, s)].append(wl.download(bed, url(s), s, server.digest[s],
                                                     self.cfg["timeout"]))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    errors[(v, s)].append(str(e))
                    self.log(f"  {v} {s}: FAILED: {e}")
        except wl.Unavailable as e:
            for s in sizes:
                errors[(v, s)].append(str(e))
        finally:
            if hooker:
                hooker.__exit__()

    # -------------------------------------------------------------- hooker path check
    def hooker_path_check(self):
        """One 510KB download with Hooker, captured on b's interface: the data must be
        on UDP port 7000, not in TCP segments of port 8000 (what the paper checked
        with Wireshark)."""
        for v in [m for m in self.variants() if m.startswith("hooker")]:
            with testbed.TwoHosts() as bed:
                server = wl.FileServer(bed, {"510KB": SIZES["510KB"]})
                try:
                    with wl.HookerPair(self.a.build, bed, wl.HTTP_PORT, self.hooker_extra(v)):
                        with bed.b.capture(f"port {wl.HTTP_PORT} or port {wl.HOOKER_PORT}") as cap:
                            wl.download(bed, f"http://{bed.b.ip4}:{wl.HTTP_PORT}/510KB",
                                        "510KB", server.digest["510KB"], 60)
                    self.res["hooker"].setdefault("path_check", {})[v] = {
                        "file_bytes": SIZES["510KB"],
                        "tcp_payload_bytes_port_8000": cap.tcp_payload_bytes(wl.HTTP_PORT),
                        "udp_payload_bytes_port_7000": cap.udp_payload_bytes(wl.HOOKER_PORT)
                        + cap.udp_payload_bytes(wl.HOOKER_PORT, "udplite")}
                except (wl.Unavailable, RuntimeError) as e:
                    self.res["hooker"].setdefault("path_check", {})[v] = {"error": str(e)}
                finally:
                    server.close()

    # -------------------------------------------------------------- iperf3, table 1
    def throughput(self):
        variants = ["tcp"] + [m for m in self.variants() if m.startswith("hooker")] \
            + (["kcptun"] if "kcptun" in self.a.mechs else [])
        with testbed.TwoHosts() as bed:
            srv = wl.IperfServer(bed)
            try:
                for streams in (1, 4):
                    got = {v: [] for v in variants}
                    errs = {v: [] for v in variants}
                    for run in range(self.cfg["iperf_runs"]):
                        for v in variants:
                            self.log(f"iperf3 {streams} stream(s) run {run + 1}: {v}")
                            try:
                                got[v].append(self.one_iperf(bed, v, streams))
                            except (wl.Unavailable, RuntimeError,
                                    subprocess.TimeoutExpired) as e:
                                errs[v].append(str(e))
                    base = median(got["tcp"])
                    for v in variants:
                        m = median(got[v])
                        self.res["throughput"].append({
                            "variant": self.label(v), "streams": streams,
                            "gbps": got[v], "median_gbps": m,
                            "ratio_to_tcp": (m / base) if m and base else None,
                            "failures": errs[v]})
            finally:
                srv.close()
        self.res["config"]["iperf3"] = {"seconds": self.cfg["iperf_secs"],
                                        "runs": self.cfg["iperf_runs"], "link": "bare veth"}

    def one_iperf(self, bed, v, streams):
        secs = self.cfg["iperf_secs"]
        wl.set_cc(bed, self.cc_of(v))
        if v == "kcptun":
            kcp = wl.Kcptun(bed, wl.IPERF_PORT)
            try:
                r = bed.a.run(["iperf3", "-c", "127.0.0.1", "-p", str(wl.KCP_LOCAL), "-t",
                               f"{secs:g}", "-P", str(streams), "-J"],
                              timeout=secs + 30, check=False)
                try:
                    j = json.loads(r.stdout)
                except json.JSONDecodeError:
                    raise RuntimeError(f"iperf3 over kcptun: {r.stderr.strip()[-200:]}")
                if "error" in j:
                    raise RuntimeError(f"iperf3 over kcptun: {j['error']}")
                return j["end"]["sum_received"]["bits_per_second"] / 1e9
            finally:
                kcp.close()
        if v.startswith("hooker"):
            ids = wl.bpf_prog_ids()
            with wl.HookerPair(self.a.build, bed, wl.IPERF_PORT, self.hooker_extra(v)):
                old = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
                Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
                try:
                    g = wl.iperf3(bed, streams, secs)
                    self.record_prog_stats(v, streams, wl.bpf_prog_stats(ids))
                finally:
                    Path("/proc/sys/kernel/bpf_stats_enabled").write_text(old)
                return g
        return wl.iperf3(bed, streams, secs)

    def record_prog_stats(self, v, streams, progs):
        t1 = self.res["table1"].setdefault("bpf_run_time", [])
        for p in progs:
            if p.get("run_cnt"):
                t1.append({"variant": v, "streams": streams, "prog": p.get("name"),
                           "type": p.get("type"), "run_cnt": p["run_cnt"],
                           "ns_per_run": p["run_time_ns"] / p["run_cnt"]})

    def ready_time(self):
        if self.hooker_reason or not any(m.startswith("hooker") for m in self.a.mechs):
            self.note("Table 1: hookerd start to ready",
                      f"Hooker not available: {self.hooker_reason}")
            return
        times = []
        with testbed.TwoHosts() as bed:
            for _ in range(self.cfg["ready_runs"]):
                d = wl.Hookerd(self.a.build, bed.a, wl.HTTP_PORT)
                times.append(d.ready_s * 1000)
                d.close()
        self.res["table1"]["hookerd_ready_ms"] = {"runs": times, "median": median(times)}

    # -------------------------------------------------------------- main
    def run(self):
        ccs = {self.cc_of(m) for m in self.a.mechs if m in TCP_CCS} | {self.sys_cc}
        with wl.AllowCongestionControls(sorted(ccs)):
            return self._run()

    def _run(self):
        t0 = time.monotonic()
        self.probe_hooker()
        self.ready_time()
        self.hooker_path_check()
        self.downloads()
        self.throughput()
        for what in ("Table 1: per-object load/attach and mechanism deploy times",
                     "connection set-up time (median of 1,000)",
                     "scale: 10,000 redirected connections, hookerd RSS and map memory"):
            self.note(what, "not implemented in the suite yet")
        self.res["duration_s"] = round(time.monotonic() - t0, 1)
        return self.res


def main(argv):
    a = parse_args(argv)
    reason = testbed.require_root()
    if reason:
        print(f"bench: {reason}; run as root (sudo make bench)", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    res = Suite(a).run()
    path = a.out / "results.json"
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"bench: results in {path}")
    md = report.write(res, a.out)
    print(f"bench: report in {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
