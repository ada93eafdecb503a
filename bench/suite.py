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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import testbed  # noqa: E402
import workloads as wl  # noqa: E402
import report  # noqa: E402
import tax  # noqa: E402
from rr_latency import (CLIENT as RR_CLIENT, SERVER as RR_SERVER,  # noqa: E402
                        UDP_SERVER as RR_UDP_SERVER)
import pki  # noqa: E402

SIZES = {"3KB": 3 * 1024, "510KB": 510 * 1024, "26MB": 26 * 1024 * 1024}
KNOWN = ("cubic", "bbr", "kcptun", "hooker")  # cubic, bbr: plain TCP with that CC
TCP_CCS = ("cubic", "bbr", "reno", "tcp")  # "tcp": the system default CC
# Hooker's variants: (mechanism in the --redirect rule, hookerd's extra flags,
# the label in results.json and the report). "hooker" is udp, its default.
HOOKER_VARIANTS = {
    "hooker": ("udp", [], "hooker"),
    "hooker:udp": ("udp", [], "hooker:udp"),
    "hooker:udplite": ("udplite", ["--udplite-impl", "kernel"], "hooker:udplite (kernel)"),
    "hooker:udplite-ebpf": ("udplite", ["--udplite-impl", "ebpf"], "hooker:udplite (ebpf)"),
    # Moves nothing: TCP with the congestion control written here in BPF, set
    # per connection by the rule (beside cubic and bbr, not by default).
    "hooker:tcp-cc": ("tcp-cc:hk_vegas", [], "hooker:tcp-cc (hk_vegas)"),
    # QUIC on ngtcp2: certificates made for the run (tests/pki.py).
    "hooker:quic": ("quic", [], "hooker:quic"),
    # The same with BBR as QUIC's congestion control (--quic-cc bbr).
    "hooker:quic-bbr": ("quic", ["--quic-cc", "bbr"], "hooker:quic (bbr)"),
}
# The parts of a run, in the order they run (--parts picks some).
PARTS = ("ready", "path", "downloads", "throughput", "setup", "rr", "scale", "deploy",
         "unmoved")

# What each mode measures. quick must stay under 5 minutes on 2 cores (127 s with
# hooker:udplite added, load average 3.7-4.4).
MODES = {
    "quick": dict(runs=3, losses=[0.0, 1.0, 5.0], iperf_runs=2, iperf_secs=3,
                  ready_runs=5, big_losses=[0.0], timeout={"26MB": 60}, setups=200,
                  setup_blocks=4, setup_rtts=[0.0],
                  held=1000, deploy_runs=20, unmoved_rounds=2, rr_rounds=3, rr_trips=1000,
                  mechanisms=KNOWN + ("hooker:udplite",)),
    "full": dict(runs=5, losses=[0.0, 1.0, 5.0], iperf_runs=3, iperf_secs=5,
                 ready_runs=20, big_losses=[0.0, 1.0, 5.0], timeout={"26MB": 400}, setups=1000,
                 setup_blocks=10, setup_rtts=[0.0, 50.0],
                 held=10000, deploy_runs=20, unmoved_rounds=5, rr_rounds=5, rr_trips=2000,
                 mechanisms=KNOWN + ("hooker:udplite",)),
}
# curl's --max-time per file: past it the download counts as failed, not as a time
# (cubic needs about 230 s for 26 MB at 5% loss here).
TIMEOUTS = {"3KB": 15, "510KB": 60}
PROBES = HERE / "probes.py"
# A download not run because one of the same variant failed before it (in this run
# or an earlier one): each run of a cell is a time, a failure, or this.
NOT_TRIED = "not tried: a download of this variant failed before it"
PROBE_PORT, HOOKED_PROBE_PORT = 9000, 9001
# The floor of request/response (issue 12): the UDP legs alone, and a bare relay on
# each host carrying the TCP bytes over UDP (bench/floor/relay.cpp), a daemon hop on
# each side as in Hooker's path, with nothing else.
FLOORS = {"floor:udp": "floor: UDP alone", "floor:relay": "floor: bare relay each side"}
FLOOR_TCP_PORT, FLOOR_UDP_PORT = 9100, 9101
# The floor of throughput, the same shapes with bench/floor/udp_stream.cpp: hookerd's
# UDP legs alone (GSO groups, GRO, a credit window, one thread a host), and a bare
# relay each side carrying one bulk TCP transfer over them (the six copies of every
# byte that Hooker's path makes). One transfer whatever the streams: hookerd's data
# path is one thread a host.
BULK_FLOORS = {"floor:udp": "floor: UDP legs alone", "floor:relay": "floor: bare relay each side"}
# Connections per set-up block through the emulated RTT (each costs ~1.5 RTT).
SETUPS_PER_BLOCK_WITH_RTT = 20


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"bench: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run.sh BUILD MODE --",
                                description="Hooker benchmark suite (bench/README.md).")
    p.add_argument("--build", required=True, help="CMake build dir holding hookerd")
    p.add_argument("--mode", required=True, help="quick or full")
    p.add_argument("--mechanisms", default=None,
                   help="comma list of cubic, bbr, reno, tcp (system default CC), kcptun, "
                        "hooker (its udp mechanism), hooker:udp, hooker:udplite (the "
                        "kernel's UDP-Lite), hooker:udplite-ebpf (udplite made by BPF), "
                        "hooker:tcp-cc (TCP with hk_vegas, the BPF congestion control), "
                        "hooker:quic, hooker:quic-bbr (QUIC with BBR); "
                        "default: " + "; ".join(f"{k} mode {','.join(v['mechanisms'])}"
                                                for k, v in MODES.items()))
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma list of what to run, of {', '.join(PARTS)} (default all)")
    p.add_argument("--save", default=None, metavar="FILE",
                   help="also save the downloads in FILE; those in "
                        "bench/comparisons/NAME.json report.py renders into BENCHMARKS.md")
    p.add_argument("--title", default="", help="a title for the saved downloads")
    p.add_argument("--loss", default=None,
                   help="comma list of loss rates in percent (default 0,1,5)")
    p.add_argument("--runs", type=int, default=None, help="runs per cell (median)")
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--setup-blocks", type=int, default=None,
                   help="set-up blocks per variant, each after a fresh hookerd pair (its "
                        "first connection is the 'first' figure); default: "
                        + "; ".join(f"{k} mode {v['setup_blocks']}" for k, v in MODES.items()))
    p.add_argument("--setup-rtt", default=None,
                   help="comma list of RTTs in ms for the set-up part, 0 the bare veth, "
                        "else through hooker-linkemu; default: " + "; ".join(
                            f"{k} mode {','.join(f'{x:g}' for x in v['setup_rtts'])}"
                            for k, v in MODES.items()))
    a = p.parse_args(argv)
    if a.mode not in MODES:
        fail(f"unknown mode {a.mode!r}: quick or full")
    cfg = dict(MODES[a.mode])
    mechs = [m.strip() for m in (a.mechanisms or ",".join(cfg["mechanisms"])).split(",")
             if m.strip()]
    if not mechs:
        fail("--mechanisms is empty: name at least one variant")
    for m in mechs:
        if m not in KNOWN + TCP_CCS and m not in HOOKER_VARIANTS:
            fail(f"unknown mechanism {m!r}: choose from "
                 f"{', '.join(dict.fromkeys(KNOWN + TCP_CCS + tuple(HOOKER_VARIANTS)))}")
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    for x in parts:
        if x not in PARTS:
            fail(f"unknown part {x!r}: choose from {', '.join(PARTS)}")
    if not parts:
        fail("--parts is empty: name at least one of " + ", ".join(PARTS))
    a.parts = parts
    if a.save is not None:
        if "downloads" not in parts and "setup" not in parts:
            fail("--save keeps the downloads and the set-up times: add downloads to --parts "
                 "(or setup)")
        if not Path(a.save).resolve().parent.is_dir():
            fail(f"--save {a.save}: {Path(a.save).parent} is not a directory")
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
    if a.setup_blocks is not None:
        if a.setup_blocks < 2:
            fail(f"--setup-blocks {a.setup_blocks}: at least 2")
        cfg["setup_blocks"] = a.setup_blocks
    if a.setup_rtt is not None:
        try:
            rtts = [float(x) for x in a.setup_rtt.split(",")]
        except ValueError:
            fail(f"--setup-rtt {a.setup_rtt!r}: RTTs are numbers in ms, e.g. 0,50")
        for x in rtts:
            if not 0 <= x <= 1000:
                fail(f"--setup-rtt {x:g}: an RTT from 0 to 1000 ms")
        cfg["setup_rtts"] = rtts
    if a.runs is not None:
        if a.runs < 1:
            fail(f"--runs {a.runs}: at least 1")
        cfg["runs"] = a.runs
    a.cfg, a.mechs = cfg, mechs
    a.build = Path(a.build).resolve()
    a.default_out = a.out is None
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


def spread_ms(xs) -> dict:
    return {"median": median(xs), "min": min(xs), "max": max(xs)} if xs else {}


def setup_rows(got, errs, rtt, label) -> list[dict]:
    """The set-up part's rows at one RTT. got: {variant: [(block, [seconds per
    connection, in order])]}, "tcp" among them. Each row: the first connection of
    each block (after a fresh hookerd pair) as "first", and its ratio to tcp's
    first in the same block; the later connections' median and p99, and the
    ratio of their median to tcp's in the same block."""
    tcp = dict(got.get("tcp", []))
    rows = []
    for v, blocks in got.items():
        first = [ts[0] * 1000 for _, ts in blocks if ts]
        later = sorted(t * 1000 for _, ts in blocks for t in ts[1:])
        ratio_first = [ts[0] / tcp[b][0] for b, ts in blocks
                       if ts and tcp.get(b) and tcp[b][0]]
        ratio_later = [median(ts[1:]) / median(tcp[b][1:]) for b, ts in blocks
                       if ts[1:] and tcp.get(b) and tcp[b][1:]]
        rows.append({
            "variant": label(v), "rtt_ms": rtt, "blocks": len(blocks),
            "n": len(later), "median_ms": median(later),
            "p99_ms": later[max(0, int(len(later) * 0.99) - 1)] if later else None,
            "first_ms": first, "first": spread_ms(first),
            "first_ratio_to_tcp": spread_ms(ratio_first) if v != "tcp" else {},
            "later_ratio_to_tcp": spread_ms(ratio_later) if v != "tcp" else {},
            "failures": errs[v]})
    return rows


class Suite:
    def __init__(self, args):
        self.a, self.cfg = args, args.cfg
        self.res = {"schema": 1, "mode": args.mode,
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds"),
                    "machine": machine(), "config": {}, "hooker": {}, "downloads": [],
                    "throughput": [], "table1": {}, "conn_setup": [], "scale": [],
                    "not_measured": [], "loadavg": []}
        self.hooker_reason = None
        self.hookerd = None  # the run's private copy of hookerd (snapshot_hookerd)
        self.pki = None      # quic's certificates, made at first use
        self.pki_args = {}
        sysdef = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
        self.res["machine"]["cc_default"] = sysdef
        self.sys_cc = sysdef

    def log(self, msg):
        print(f"bench: {msg}", flush=True)

    def load(self, when):
        """Notes the machine's load average (it is shared: read figures beside it)."""
        self.res["loadavg"].append({"when": when,
                                    "loadavg": [round(x, 2) for x in os.getloadavg()]})

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
            if m in HOOKER_VARIANTS:
                if self.hooker_reason:
                    self.note(m, f"not available: {self.hooker_reason}")
                    continue
            out.append(m)
        return out

    def hooker_pair(self, bed, v, port) -> wl.HookerPair:
        """hookerd on both hosts moving `port`'s connections as variant v says."""
        mech, extra, _ = HOOKER_VARIANTS[v]
        if mech == "quic":
            extra = {h: list(extra) + self.quic_args(bed)[h] for h in ("a", "b")}
        return wl.HookerPair(self.hookerd, bed, f"{port}={mech}", extra)

    def quic_args(self, bed) -> dict:
        """hookerd's --quic-cert/--quic-key/--quic-ca per host ("a", "b"). Every
        bed has the same addresses: one CA and pair of certificates serve the
        whole run."""
        if self.pki is None:
            self.pki = Path(tempfile.mkdtemp(prefix="hooker-bench-pki-"))
            self.pki_args = pki.make_pki(self.pki, [bed.a, bed.b])
        return self.pki_args

    def probe_hooker(self):
        """Starts hookerd once on a bare bed: missing or failing -> not available."""
        if not any(m in HOOKER_VARIANTS for m in self.a.mechs):
            return
        self.hooker_reason = wl.hooker_missing(self.a.build)
        if self.hooker_reason is None:
            self.hookerd, digest = wl.snapshot_hookerd(self.a.build)
            self.res["hooker"]["sha256"] = digest
            try:
                with testbed.TwoHosts() as bed, wl.HookerPair(self.hookerd, bed, wl.HTTP_PORT):
                    pass
            except wl.Unavailable as e:
                self.hooker_reason = str(e)
        self.res["hooker"].update({"available": self.hooker_reason is None,
                                   "reason": self.hooker_reason,
                                   "binary": str(wl.hookerd_binary(self.a.build))})
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
            self.load(f"downloads at {loss:g}% loss, start")
            with testbed.TwoHosts(link=testbed.LinkSpec(delay_ms=25, loss_pct=loss)) as bed:
                self.download_cell(bed, loss, variants, sizes)
            self.load(f"downloads at {loss:g}% loss, end")

    def download_cell(self, bed, loss, variants, sizes):
        files = wl.Files(sizes)
        server = wl.HttpServer(bed, files)
        kcp = None
        times = {(v, s): [] for v in variants for s in sizes}
        errors = {(v, s): [] for v in variants for s in sizes}
        given_up = set()  # (variant, size) cells not run again after a failure
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
                    self.download_variant(bed, v, files, server, kcp, sizes, times, errors,
                                          given_up)
        finally:
            if kcp:
                kcp.close()
            server.close()
            files.close()
        for (v, s), ts in times.items():
            if v == "kcptun" and kcp is None:
                continue
            self.res["downloads"].append({
                "loss_pct": loss, "variant": self.label(v), "size": s,
                "bytes": SIZES[s], "times_s": ts, "median_s": median(ts),
                "failures": errors[(v, s)]})

    def label(self, v):
        if v in HOOKER_VARIANTS:
            return HOOKER_VARIANTS[v][2]
        return f"tcp-{self.cc_of(v)}" if v in TCP_CCS else v

    def download_variant(self, bed, v, files, server, kcp, sizes, times, errors, given_up):
        """One run of variant v: every size once. A failed download is not retried in
        later runs, nor are larger files: one timeout per variant, not one per run."""
        if all((v, s) in given_up for s in sizes):
            for s in sizes:  # every run accounted for: a time, a failure or not tried
                errors[(v, s)].append(NOT_TRIED)
            return
        wl.set_cc(bed, self.cc_of(v))
        url = kcp.url if v == "kcptun" else server.url
        hooker = hooked_server = None
        try:
            if v in HOOKER_VARIANTS:
                # hookerd sees only listeners created after it attached, so its server
                # starts after it (and stops before it), on a port of its own.
                hooker = self.hooker_pair(bed, v, wl.HOOKED_HTTP_PORT)
                hooker.__enter__()
                hooked_server = wl.HttpServer(bed, files, wl.HOOKED_HTTP_PORT)
                url = hooked_server.url
            for i, s in enumerate(sizes):
                if (v, s) in given_up:
                    errors[(v, s)].append(NOT_TRIED)
                    continue
                limit = TIMEOUTS.get(s) or self.cfg["timeout"][s]
                try:
                    times[(v, s)].append(wl.download(bed, url(s), s, files.digest[s], limit))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    errors[(v, s)].append(str(e))
                    self.log(f"  {v} {s}: FAILED: {e}")
                    for later in list(sizes)[i:]:
                        given_up.add((v, later))  # the larger ones: NOT_TRIED below
        except wl.Unavailable as e:
            for s in sizes:
                errors[(v, s)].append(f"not measured: {e}")
        finally:
            if hooked_server:
                hooked_server.close()
            if hooker:
                hooker.__exit__()

    # -------------------------------------------------------------- hooker path check
    def hooker_path_check(self):
        """One 510KB download with Hooker, captured on b's interface: the data must be
        on UDP port 7000, not in TCP segments of port 8000 (what the paper checked
        with Wireshark)."""
        for v in [m for m in self.variants() if m in HOOKER_VARIANTS]:
            if HOOKER_VARIANTS[v][0].startswith("tcp-cc"):
                self.note(f"path check of {v}", "tcp-cc keeps connections on TCP (its "
                          "algorithm on the connection: tests/e2e/test_tcp_cc.py)")
                continue
            with testbed.TwoHosts() as bed:
                files = wl.Files({"510KB": SIZES["510KB"]})
                port = wl.HOOKED_HTTP_PORT
                try:
                    with self.hooker_pair(bed, v, port):
                        server = wl.HttpServer(bed, files, port)
                        # "port" matches TCP and UDP only: UDP-Lite by its protocol
                        with bed.b.capture(f"port {port} or port {wl.HOOKER_PORT} or "
                                           f"port {wl.HOOKER_PORT + 1} or "
                                           "ip proto 136 or ip6 proto 136") as cap:
                            wl.download(bed, server.url("510KB"), "510KB",
                                        files.digest["510KB"], 60)
                        server.close()
                    self.res["hooker"].setdefault("path_check", {})[self.label(v)] = {
                        "file_bytes": SIZES["510KB"], "http_port": port,
                        "tcp_payload_bytes_http_port": cap.tcp_payload_bytes(port),
                        "udp_payload_bytes_port_7000": cap.udp_payload_bytes(wl.HOOKER_PORT)
                        + cap.udp_payload_bytes(wl.HOOKER_PORT, "udplite"),
                        "udplite_payload_bytes_port_7000":
                            cap.udp_payload_bytes(wl.HOOKER_PORT, "udplite"),
                        # quic's socket is on hookerd's port + 1
                        "udp_payload_bytes_port_7001": cap.udp_payload_bytes(wl.HOOKER_PORT + 1),
                        "frames_tcpdump_dropped": cap.dropped}
                except (wl.Unavailable, RuntimeError) as e:
                    self.res["hooker"].setdefault("path_check", {})[self.label(v)] = {
                        "error": str(e)}
                finally:
                    files.close()

    # -------------------------------------------------------------- iperf3, table 1
    def throughput(self):
        variants = ["tcp"] + [m for m in self.variants() if m in HOOKER_VARIANTS] \
            + (["kcptun"] if "kcptun" in self.a.mechs else []) + list(BULK_FLOORS)
        with testbed.TwoHosts() as bed:
            srv = wl.IperfServer(bed)
            try:
                for streams in (1, 4):
                    got = {v: [] for v in variants}
                    cpu = {v: [] for v in variants}  # CPU-s per GB, each run
                    errs = {v: [] for v in variants}
                    for run in range(self.cfg["iperf_runs"]):
                        for v in variants:
                            self.log(f"iperf3 {streams} stream(s) run {run + 1}: {v}")
                            c = {}
                            try:
                                got[v].append(self.one_iperf(bed, v, streams, c))
                                cpu[v].append(c.get("cpu_s_per_gb"))
                            except (wl.Unavailable, RuntimeError,
                                    subprocess.TimeoutExpired) as e:
                                errs[v].append(str(e))
                    base = median(got["tcp"])
                    base_cpu = median([x for x in cpu["tcp"] if x])
                    for v in variants:
                        m = median(got[v])
                        mc = median([x for x in cpu[v] if x])
                        self.res["throughput"].append({
                            "variant": BULK_FLOORS.get(v) or self.label(v), "streams": streams,
                            "gbps": got[v], "median_gbps": m,
                            "ratio_to_tcp": (m / base) if m and base else None,
                            "cpu_s_per_gb": cpu[v], "median_cpu_s_per_gb": mc,
                            "cpu_ratio_to_tcp": (mc / base_cpu) if mc and base_cpu else None,
                            "failures": errs[v]})
            finally:
                srv.close()
        self.res["config"]["iperf3"] = {"seconds": self.cfg["iperf_secs"],
                                        "runs": self.cfg["iperf_runs"], "link": "bare veth"}

    def one_iperf(self, bed, v, streams, cpu: dict):
        """Gbit/s of one run of variant v; `cpu` gets its CPU per GB."""
        secs = self.cfg["iperf_secs"]
        if v in BULK_FLOORS:
            return wl.floor_bulk(bed, self.a.build, v.split(":")[1], secs, FLOOR_UDP_PORT,
                                 FLOOR_TCP_PORT, cpu)
        wl.set_cc(bed, self.cc_of(v))
        if v == "kcptun":
            kcp = wl.Kcptun(bed, wl.IPERF_PORT)
            try:
                return wl.iperf3(bed, streams, secs, port=wl.KCP_LOCAL, host="127.0.0.1",
                                 what="iperf3 over kcptun", cpu=cpu)
            finally:
                kcp.close()
        if v in HOOKER_VARIANTS:
            port = wl.HOOKED_IPERF_PORT
            with self.hooker_pair(bed, v, port) as pair:
                srv = wl.IperfServer(bed, port)  # after hookerd: see download_variant
                old = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
                Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
                try:
                    g = wl.iperf3(bed, streams, secs, port, cpu=cpu)
                    for d in pair.daemons:
                        self.record_prog_stats(self.label(v), streams,
                                               wl.bpf_objects_of(d.proc.pid)["progs"])
                finally:
                    Path("/proc/sys/kernel/bpf_stats_enabled").write_text(old)
                    srv.close()
                return g
        return wl.iperf3(bed, streams, secs, cpu=cpu)

    def record_prog_stats(self, v, streams, progs):
        """Adds up run_cnt/run_time_ns per program over both hosts and all runs."""
        t1 = self.res["table1"].setdefault("bpf_run_time", [])
        for p in progs:
            if not p.get("run_cnt"):
                continue
            row = next((r for r in t1 if (r["variant"], r["streams"], r["prog"]) ==
                        (v, streams, p.get("name"))), None)
            if row is None:
                row = {"variant": v, "streams": streams, "prog": p.get("name"),
                       "type": p.get("type"), "run_cnt": 0, "run_time_ns": 0}
                t1.append(row)
            row["run_cnt"] += p["run_cnt"]
            row["run_time_ns"] += p["run_time_ns"]
            row["ns_per_run"] = row["run_time_ns"] / row["run_cnt"]

    def ready_time(self):
        if self.hooker_reason or not any(m in HOOKER_VARIANTS for m in self.a.mechs):
            self.note("Table 1: hookerd start to ready",
                      f"Hooker not available: {self.hooker_reason}")
            return
        times, phases = [], {}
        with testbed.TwoHosts() as bed:
            for _ in range(self.cfg["ready_runs"]):
                d = wl.Hookerd(self.hookerd, bed.a, wl.HTTP_PORT)
                times.append(d.ready_s * 1000)
                d.close()
            # -v makes hookerd print its start-up phases (and libbpf's log, which
            # slows it): measured apart from the wall-clock runs above.
            for _ in range(self.cfg["ready_runs"]):
                d = wl.Hookerd(self.hookerd, bed.a, wl.HTTP_PORT, ["-v"])
                d.close()
                for k, ms in d.phases.items():
                    phases.setdefault(k, []).append(ms)
            self.tcx_link_floor(bed)
        self.res["table1"]["hookerd_ready_ms"] = {"runs": times, "median": median(times)}
        # hookerd's own breakdown (BPF open+load, attach, ...), as it reports it
        self.res["table1"]["hookerd_phases_ms"] = {k: {"runs": v, "median": median(v)}
                                                   for k, v in phases.items()}

    def tcx_link_floor(self, bed):
        """The kernel's share of start-up, which no smaller program shortens: an
        empty tc program linked at the same interface's ingress (bench/floor/attach.cpp)."""
        try:
            tool = wl.floor_tool(self.a.build, "hooker-floor-attach")
        except wl.Unavailable as e:
            self.note("Table 1: the floor of start-up", str(e))
            return
        got = [json.loads(bed.a.run([str(tool), "eth0"], timeout=30).stdout)
               for _ in range(self.cfg["ready_runs"])]
        self.res["table1"]["floor_ms"] = {
            k: {"runs": [g[k] for g in got], "median": median([g[k] for g in got])}
            for k in ("load_ms", "tcx_link_ms")}

    def deploy_times(self):
        """Table 1's per-mechanism deploy: on a running hookerd, undeploy and deploy
        each compiled-in mechanism N times. hookerd times each deployment itself,
        from opening the mechanism (sockets, BPF objects) to the kernel naming it
        in handshakes; the control request's round trip is timed from here."""
        if self.hooker_reason:
            self.note("Table 1: per-mechanism deploy times",
                      f"Hooker not available: {self.hooker_reason}")
            return
        rows = []
        with testbed.TwoHosts() as bed:
            # With quic's certificates: every compiled-in mechanism is deployed.
            d = wl.Hookerd(self.hookerd, bed.a, wl.HTTP_PORT, self.quic_args(bed)["a"])
            try:
                for m in d.control("mechanisms")["mechanisms"]:
                    rows.append(self.deploy_row(d, m["name"], m["name"]))
            finally:
                d.close()
            # udplite's other implementation (BPF programs instead of the
            # kernel's UDP-Lite, --udplite-impl ebpf), where hookerd has it.
            if "--udplite-impl" in subprocess.run([str(self.hookerd), "--help"],
                                                  capture_output=True, text=True,
                                                  timeout=10).stdout:
                d = wl.Hookerd(self.hookerd, bed.a, wl.HTTP_PORT, ["--udplite-impl", "ebpf"])
                try:
                    rows.append(self.deploy_row(d, "udplite", "udplite (ebpf)"))
                finally:
                    d.close()
        self.res["table1"]["deploy_ms"] = rows

    def deploy_row(self, d, name, label):
        """Undeploys and deploys `name` on hookerd `d` deploy_runs times."""
        row = {"mechanism": label, "runs": [], "request_ms": []}
        self.log(f"deploy cost: {label} x{self.cfg['deploy_runs']}")
        for _ in range(self.cfg["deploy_runs"]):
            d.control(f"undeploy {name}")
            t0 = time.perf_counter()
            ans = d.control(f"deploy {name}")
            row["request_ms"].append((time.perf_counter() - t0) * 1000)
            if "error" in ans:
                row["error"] = ans["error"]
                break
            got = next(x for x in ans["mechanisms"] if x["name"] == name)
            row["runs"].append(got["load_ms"])
            row["loaded"] = got["loaded"]
        if row["runs"]:
            row["median"] = median(row["runs"])
            row["request_median"] = median(row["request_ms"])
        return row

    # -------------------------------------------------------------- set-up, scale
    def probe_server(self, bed, port):
        p = bed.b.popen([wl.PY, str(PROBES), "serve", bed.b.ip4, str(port)],
                        stdout=subprocess.PIPE, text=True)
        line = wl.readline_within(p, 10)
        if line.strip() != "ready":
            raise RuntimeError(f"probes.py serve did not start: {line!r}")
        return p

    def request_response(self):
        """1-byte request/response on a kept connection (bench/rr_latency.py's
        client and server): plain TCP and each Hooker variant take turns round
        by round; per variant the median round trip of each round and its ratio
        to plain TCP's in the same round."""
        variants = ["tcp"] + [m for m in self.variants() if m in HOOKER_VARIANTS
                              and m != "hooker:tcp-cc"] + list(FLOORS)
        rounds, trips = self.cfg["rr_rounds"], self.cfg["rr_trips"]
        got = {v: [] for v in variants}
        ratios = {v: [] for v in variants}
        errs = {v: [] for v in variants}
        with testbed.TwoHosts() as bed:
            for r in range(rounds):
                base = None
                for v in variants:
                    self.log(f"request/response round {r + 1}: {v}")
                    try:
                        us = self.one_rr(bed, v, trips)
                    except (wl.Unavailable, RuntimeError, subprocess.SubprocessError) as e:
                        errs[v].append(str(e))
                        continue
                    got[v].append(us)
                    if v == "tcp":
                        base = us
                    elif base:
                        ratios[v].append(us / base)
        self.res["rr"] = [{"variant": FLOORS.get(v) or self.label(v), "median_us": got[v],
                           "ratio_to_tcp": ratios[v], "failures": errs[v]} for v in variants]
        self.res["config"]["rr"] = {"rounds": rounds, "trips": trips, "link": "bare veth"}

    def one_rr(self, bed, v, trips) -> float:
        """The median of `trips` 1-byte round trips on one connection, in us."""
        if v in FLOORS:
            return statistics.median(self.floor_trips(bed, v, trips))
        wl.set_cc(bed, self.cc_of(v))
        port = PROBE_PORT if v == "tcp" else HOOKED_PROBE_PORT

        def trip_times():
            srv = bed.b.popen([wl.PY, "-c", RR_SERVER, str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wl.wait_listening(bed.a, bed.b.ip4, port, what="request/response server")
                r = bed.a.run([wl.PY, "-c", RR_CLIENT, bed.b.ip4, str(port), str(trips)],
                              timeout=120)
                return json.loads(r.stdout)
            finally:
                bed._stop_proc(srv)
        if v == "tcp":
            return statistics.median(trip_times())
        with self.hooker_pair(bed, v, port) as pair:  # the server after hookerd
            times = trip_times()
            if not pair.daemons[1].control("status")["counters"]["kernel"]["moved_active"]:
                raise RuntimeError("hookerd did not move the connection")
        return statistics.median(times)

    def floor_trips(self, bed, v, trips) -> list[float]:
        """The round trips of a floor variant (FLOORS), in us: the same client as the
        others, over datagrams alone or through the bare relay on both hosts."""
        with wl.FloorProcs(bed) as procs:
            if v == "floor:udp":
                procs.start(bed.b, [wl.PY, "-c", RR_UDP_SERVER, str(FLOOR_UDP_PORT)], "UDP echo")
                argv = [wl.PY, "-c", RR_CLIENT, bed.b.ip4, str(FLOOR_UDP_PORT), str(trips),
                        "udp"]
            else:
                relay = wl.floor_tool(self.a.build, "hooker-floor-relay")
                procs.add(bed.b.popen([wl.PY, "-c", RR_SERVER, str(PROBE_PORT)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                wl.wait_listening(bed.b, bed.b.ip4, PROBE_PORT, what="request/response server")
                procs.start(bed.b, [relay, "far", str(FLOOR_UDP_PORT), str(PROBE_PORT)],
                            "relay on b")
                procs.start(bed.a, [relay, "near", str(FLOOR_TCP_PORT), bed.b.ip4,
                                    str(FLOOR_UDP_PORT)], "relay on a")
                argv = [wl.PY, "-c", RR_CLIENT, "127.0.0.1", str(FLOOR_TCP_PORT), str(trips)]
            r = bed.a.run(argv, timeout=120)
            return json.loads(r.stdout)

    def conn_setup(self):
        """Connect + first byte per variant, in interleaved blocks (the order rotating)
        so drift hits all alike; each block starts a fresh hookerd pair (and probe
        server), so its first connection is the first to that peer: reported apart
        ("first", one per block) from the later ones (median, p99). On the bare veth
        and at each emulated RTT of setup_rtts."""
        blocks = self.cfg["setup_blocks"]
        variants = ["tcp"] + [m for m in self.variants() if m in HOOKER_VARIANTS]
        self.res["config"]["setup"] = {"blocks": blocks, "rtts_ms": self.cfg["setup_rtts"],
                                       "connections": self.cfg["setups"],
                                       "per_block_with_rtt": SETUPS_PER_BLOCK_WITH_RTT}
        for rtt in self.cfg["setup_rtts"]:
            n = max(2, self.cfg["setups"] // blocks)
            link = None
            if rtt:
                n = min(n, SETUPS_PER_BLOCK_WITH_RTT)
                link = testbed.LinkSpec(delay_ms=rtt / 2)
            got = {v: [] for v in variants}  # per variant: one list of times per block
            errs = {v: [] for v in variants}
            self.load(f"set-up at RTT {rtt:g} ms, start")
            with testbed.TwoHosts(link=link) as bed:
                # one plain connection, not counted: neighbour discovery and the
                # like are not part of any variant's first connection
                self.setup_block(bed, "tcp", 2)
                for block in range(blocks):
                    k = block % len(variants)
                    for v in variants[k:] + variants[:k]:
                        self.log(f"connection set-up, RTT {rtt:g} ms, block "
                                 f"{block + 1}/{blocks}: {v}")
                        try:
                            got[v].append((block, self.setup_block(bed, v, n)))
                        except (wl.Unavailable, RuntimeError, ValueError,
                                subprocess.SubprocessError) as e:
                            errs[v].append(str(e))
            self.load(f"set-up at RTT {rtt:g} ms, end")
            self.res["conn_setup"] += setup_rows(got, errs, rtt, self.label)

    def setup_block(self, bed, v, n):
        wl.set_cc(bed, self.cc_of(v))
        hooker = self.hooker_pair(bed, v, HOOKED_PROBE_PORT) \
            if v in HOOKER_VARIANTS else None
        if hooker:
            hooker.__enter__()
        try:
            port = HOOKED_PROBE_PORT if hooker else PROBE_PORT
            srv = self.probe_server(bed, port)
            try:
                r = bed.a.run([wl.PY, str(PROBES), "setup", bed.b.ip4, str(port), str(n)],
                              timeout=120, check=False)
                if r.returncode != 0:
                    raise RuntimeError(f"probes.py setup: {r.stderr.strip()[-300:]}")
                return json.loads(r.stdout)
            finally:
                bed._stop_proc(srv)
        finally:
            if hooker:
                hooker.__exit__()

    def scale(self):
        """N connections held open through Hooker: hookerd's RSS and BPF map memory."""
        n = self.cfg["held"]
        for v in [m for m in self.variants() if m in HOOKER_VARIANTS]:
            self.log(f"scale: {n} connections held with {v}")
            row = {"variant": self.label(v), "connections": n}
            try:
                with testbed.TwoHosts() as bed:
                    with self.hooker_pair(bed, v, HOOKED_PROBE_PORT) as pair:
                        srv = self.probe_server(bed, HOOKED_PROBE_PORT)
                        row["rss_kib_idle"] = {d.host.name: wl.rss_kib(d.proc.pid)
                                               for d in pair.daemons}
                        t0 = time.perf_counter()
                        cli = bed.a.popen([wl.PY, str(PROBES), "hold", bed.b.ip4,
                                           str(HOOKED_PROBE_PORT), str(n)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True)
                        line = wl.readline_within(cli, 300)
                        if line.strip() != f"held {n}":
                            cli.kill()
                            raise RuntimeError(f"holding {n} connections failed: {line!r} "
                                               f"{cli.stderr.read()[-300:]}")
                        row["open_s"] = time.perf_counter() - t0
                        row["rss_kib_held"] = {d.host.name: wl.rss_kib(d.proc.pid)
                                               for d in pair.daemons}
                        row["bpf_maps"] = [m for d in pair.daemons
                                           for m in wl.bpf_objects_of(d.proc.pid)["maps"]]
                        cli.stdin.close()
                        cli.wait(60)
                        bed._stop_proc(srv)
            except (wl.Unavailable, RuntimeError, subprocess.SubprocessError) as e:
                row["error"] = str(e)
            self.res["scale"].append(row)

    # -------------------------------------------------------------- unmoved traffic
    def unmoved(self):
        """Plain TCP on ports outside the policy, with and without hookerd on both
        hosts (bench/tax.py): what traffic Hooker does not move pays for it."""
        if self.hookerd is None:
            self.note("traffic hookerd does not move", self.hooker_reason or
                      "needs hookerd: run with a hooker variant in --mechanisms")
            return
        try:
            self.res["unmoved"] = tax.measure(self.hookerd, self.cfg["unmoved_rounds"],
                                              self.cfg["iperf_secs"], 2000, self.log)
        except (wl.Unavailable, RuntimeError, subprocess.SubprocessError) as e:
            self.res["unmoved"] = {"error": str(e)}

    # -------------------------------------------------------------- main
    def run(self):
        ccs = {self.cc_of(m) for m in self.a.mechs if m in TCP_CCS} | {self.sys_cc}
        try:
            with wl.AllowCongestionControls(sorted(ccs)):
                return self._run()
        finally:
            if self.hookerd:
                shutil.rmtree(self.hookerd.parent, ignore_errors=True)
            if self.pki:
                shutil.rmtree(self.pki, ignore_errors=True)

    def _run(self):
        t0 = time.monotonic()
        self.load("start")
        self.res["config"]["parts"] = self.a.parts
        skipped = [p for p in PARTS if p not in self.a.parts]
        if skipped:
            self.note(", ".join(skipped), "left out of this run (--parts)")
        self.probe_hooker()
        for part, run in (("ready", self.ready_time), ("path", self.hooker_path_check),
                          ("downloads", self.downloads), ("throughput", self.throughput),
                          ("setup", self.conn_setup), ("rr", self.request_response),
                          ("scale", self.scale),
                          ("deploy", self.deploy_times), ("unmoved", self.unmoved)):
            if part in self.a.parts:
                run()
        self.load("end")
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
    if a.save:
        # "downloads" (with the set-up times if measured too), or "setup" alone
        saved = {"kind": "downloads" if "downloads" in a.parts else "setup",
                 "title": a.title,
                 **{k: res[k] for k in ("date", "mode", "duration_s", "machine", "config",
                                        "downloads", "loadavg", "not_measured")},
                 **({"conn_setup": res["conn_setup"]} if "setup" in a.parts else {}),
                 "hooker": {k: v for k, v in res["hooker"].items() if k != "binary"}}
        Path(a.save).write_text(json.dumps(saved, indent=1) + "\n")
        print(f"bench: {saved['kind']} saved in {a.save} (report.py renders them)")
    # Only a whole full run (every part, the mode's variants and losses) replaces
    # the project's reference: a partial one would drop what it did not measure.
    whole = a.parts == list(PARTS) and a.mechanisms is None and a.loss is None
    if a.mode == "full" and a.default_out and not whole:
        print("bench: a partial full run (--parts, --mechanisms or --loss): the reference "
              "report in bench/ stays as it was")
    elif a.mode == "full" and a.default_out:
        # The full run is the project's reference: report beside the code, plots and
        # raw data in bench/plots/.
        plots = HERE / "plots"
        shutil.rmtree(plots, ignore_errors=True)  # no stale plot from an older run
        plots.mkdir()
        (plots / "results.json").write_text(path.read_text())
        md = report.write(res, plots, HERE / "BENCHMARKS.md")
        print(f"bench: reference report in {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
