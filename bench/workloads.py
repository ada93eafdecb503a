"""What the benchmark runs on the two-host bed: an HTTP server and curl, kcptun,
iperf3, and hookerd. Each piece starts, proves it is ready (never a sleep), and is
stopped by the bed's teardown if the suite fails half way."""
from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import testbed

PY = "/usr/bin/python3"
HTTP_PORT = 8000
HOOKED_HTTP_PORT = 8001   # a server started after hookerd, so its listener is seen
KCP_PORT = 29900
KCP_LOCAL = 12948
IPERF_PORT = 5201
HOOKED_IPERF_PORT = 5202
HOOKER_PORT = 7000


class Unavailable(Exception):
    """A variant cannot be measured here; str() is the reason shown in the report."""


def wait_listening(host: testbed.Host, addr: str, port: int, timeout=10.0, what="server"):
    """Polls a TCP connect from inside `host` until something accepts, or raises."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with host.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect((addr, port))
                return
            except OSError as e:
                last = e
        time.sleep(0.02)  # refused at once: poll again, bounded by the deadline
    raise RuntimeError(f"{what} on {host.name} {addr}:{port} not listening in {timeout}s: {last}")


ALLOWED_CC = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


class AllowCongestionControls:
    """A namespace other than the first may only pick a CC from the machine-wide
    tcp_allowed_congestion_control list (else EPERM). This adds the ones the bench
    needs for its duration and puts the list back as it was, even on failure."""

    def __init__(self, ccs):
        self.ccs, self.old = list(ccs), None

    def __enter__(self):
        self.old = ALLOWED_CC.read_text().split()
        want = self.old + [c for c in self.ccs if c not in self.old]
        if want != self.old:
            ALLOWED_CC.write_text(" ".join(want))
        return self

    def __exit__(self, *exc):
        if self.old is not None and ALLOWED_CC.read_text().split() != self.old:
            ALLOWED_CC.write_text(" ".join(self.old))


def set_cc(bed: testbed.TwoHosts, cc: str):
    """The default congestion control of both hosts (a per-netns sysctl)."""
    for h in (bed.a, bed.b):
        h.run(["sysctl", "-q", "-w", f"net.ipv4.tcp_congestion_control={cc}"],
              timeout=5, cgroup=False)


def default_cc(bed: testbed.TwoHosts) -> str:
    return bed.a.run(["cat", "/proc/sys/net/ipv4/tcp_congestion_control"],
                     timeout=5, cgroup=False).stdout.strip()


# ------------------------------------------------------------------ HTTP downloads

class Files:
    """Random files of the given sizes, and their sha256 to check downloads against."""

    def __init__(self, sizes: dict[str, int]):
        self.dir = Path(tempfile.mkdtemp(prefix="hooker-bench-www-"))
        self.digest = {}
        for name, n in sizes.items():
            data = os.urandom(n)  # incompressible: kcptun's compression gains nothing
            (self.dir / name).write_bytes(data)
            self.digest[name] = (n, hashlib.sha256(data).hexdigest())

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class HttpServer:
    """python3 -m http.server on host b (in its cgroup) serving `files`."""

    def __init__(self, bed: testbed.TwoHosts, files: Files, port: int = HTTP_PORT):
        self.bed, self.files, self.port = bed, files, port
        self.proc = bed.b.popen([PY, "-m", "http.server", str(port), "--bind",
                                 bed.b.ip4, "--directory", str(files.dir)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(bed.a, bed.b.ip4, port, what="http.server")

    def url(self, name):
        return f"http://{self.bed.b.ip4}:{self.port}/{name}"

    def close(self):
        self.bed._stop_proc(self.proc)


def download(bed: testbed.TwoHosts, url: str, name: str, expect: tuple[int, str],
             timeout: float) -> float:
    """curl on host a; returns curl's time_total in seconds. Raises if the file is
    late, incomplete or altered: a fast wrong answer is not a result."""
    out = Path(tempfile.mkdtemp(prefix="hooker-bench-dl-")) / name
    try:
        r = bed.a.run(["curl", "-sS", "-o", str(out), "--max-time", f"{timeout:g}",
                       "-w", "%{http_code} %{size_download} %{time_total}", url],
                      timeout=timeout + 10, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"curl {url}: exit {r.returncode}: {r.stderr.strip()}")
        code, size, secs = r.stdout.split()
        if code != "200":
            raise RuntimeError(f"curl {url}: HTTP {code}")
        data = out.read_bytes()
        if (len(data), hashlib.sha256(data).hexdigest()) != expect:
            raise RuntimeError(f"curl {url}: {len(data)} bytes, content differs from the "
                               f"{expect[0]}-byte original")
        return float(secs)
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


# ------------------------------------------------------------------ kcptun

class Kcptun:
    """kcptun as the explicit port-forward it is: client on a (127.0.0.1:KCP_LOCAL)
    -> KCP over UDP -> server on b -> the HTTP server. Debian's defaults otherwise
    (mode fast, aes, FEC 10+3); compression off since the files are random."""

    def __init__(self, bed: testbed.TwoHosts, target_port: int):
        for tool in ("kcptun-server", "kcptun-client"):
            if shutil.which(tool) is None:
                raise Unavailable(f"{tool} not installed (apt-get install kcptun)")
        self.bed = bed
        key = os.urandom(12).hex()
        common = ["--key", key, "--nocomp", "--quiet"]
        self.server = bed.b.popen(["kcptun-server", "-t", f"{bed.b.ip4}:{target_port}",
                                   "-l", f"{bed.b.ip4}:{KCP_PORT}", *common],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = bed.a.popen(["kcptun-client", "-r", f"{bed.b.ip4}:{KCP_PORT}",
                                   "-l", f"127.0.0.1:{KCP_LOCAL}", *common],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(bed.a, "127.0.0.1", KCP_LOCAL, what="kcptun-client")

    def url(self, name):
        return f"http://127.0.0.1:{KCP_LOCAL}/{name}"

    def close(self):
        self.bed._stop_proc(self.client)
        self.bed._stop_proc(self.server)


# ------------------------------------------------------------------ hookerd

def hookerd_binary(build: Path) -> Path:
    """BUILD/hookerd as agreed, else where the top-level CMake puts it (BUILD/src)."""
    for p in (build / "hookerd", build / "src" / "hookerd"):
        if p.exists():
            return p
    return build / "hookerd"


def floor_tool(build: Path, name: str) -> Path:
    """A floor's binary (bench/floor/) in the build, or Unavailable saying how to get it."""
    p = build / "bench" / name
    if not os.access(p, os.X_OK):
        raise Unavailable(f"{p} is missing: build the project (make build)")
    return p


class FloorProcs:
    """The processes a floor runs, outside the host cgroups: each told to say "ready"
    (start) or taken as it is (add); all stopped, last first, when the block ends."""

    def __init__(self, bed: testbed.TwoHosts):
        self.bed, self.procs = bed, []

    def start(self, host, argv, what: str) -> subprocess.Popen:
        p = host.popen(argv, cgroup=False, stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        if readline_within(p, 10).strip() != "ready":
            raise RuntimeError(f"{what} did not start")
        return p

    def add(self, p: subprocess.Popen) -> None:
        self.procs.append(p)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            self.bed._stop_proc(p)


# The ends of a bulk TCP transfer through hooker-floor-udp's relay: the source
# sends for argv[3] seconds, the sink counts until the end and prints
# {"bytes": N, "seconds": S} (its first byte to the end).
BULK_SOURCE = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
buf, until = b"x" * (1 << 20), time.monotonic() + float(sys.argv[3])
while time.monotonic() < until:
    s.sendall(buf)
s.close()
"""
BULK_SINK = r"""
import json, socket, sys, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(1); l.settimeout(30)
print("ready", flush=True)
c, _ = l.accept(); c.settimeout(30)
buf, got = bytearray(1 << 20), 0
n = c.recv_into(buf); t0 = time.monotonic()
while n:
    got += n
    n = c.recv_into(buf)
print(json.dumps({"bytes": got, "seconds": time.monotonic() - t0}), flush=True)
"""


def floor_bulk(bed: testbed.TwoHosts, build: Path, kind: str, seconds: float,
               udp_port: int, tcp_port: int, cpu: dict | None = None) -> float:
    """Gbit/s from a to b of a throughput floor (bench/floor/udp_stream.cpp), measured
    as iperf3 is: kind "udp" is its UDP legs alone, "relay" a bulk TCP transfer
    through its relay on each host. Both ends must count the same bytes. `cpu` gets
    the CPU per GB, as iperf3's does."""
    tool = floor_tool(build, "hooker-floor-udp")
    with FloorProcs(bed) as procs:
        with CpuMeter() as meter:
            if kind == "udp":
                rx = procs.start(bed.b, [str(tool), "recv", str(udp_port)], "floor receiver on b")
                sent = bed.a.run([str(tool), "send", bed.b.ip4, str(udp_port), f"{seconds:g}"],
                                 timeout=seconds + 30).stdout
            else:
                rx = procs.start(bed.b, [PY, "-c", BULK_SINK, str(tcp_port)], "bulk sink on b")
                procs.start(bed.b, [str(tool), "far", str(udp_port), str(tcp_port)],
                            "relay on b")
                near = procs.start(bed.a, [str(tool), "near", str(tcp_port), bed.b.ip4,
                                           str(udp_port)], "relay on a")
                bed.a.run([PY, "-c", BULK_SOURCE, "127.0.0.1", str(tcp_port), f"{seconds:g}"],
                          timeout=seconds + 30)
                sent = readline_within(near, 30)
            got = readline_within(rx, 30)
        try:
            sent, got = json.loads(sent)["bytes"], json.loads(got)
        except (json.JSONDecodeError, KeyError, TypeError):
            raise RuntimeError(f"floor {kind}: no count from both ends: {sent!r}, {got!r}")
        if got["bytes"] != sent or not sent:
            raise RuntimeError(f"floor {kind}: {sent} bytes sent, {got['bytes']} received")
        if cpu is not None:
            cpu.update(cpu_s_per_gb=meter.per_gb(got["bytes"]), loadavg=meter.loadavg)
        return got["bytes"] * 8 / got["seconds"] / 1e9


def snapshot_hookerd(build: Path) -> tuple[Path, str]:
    """A private copy of hookerd for the whole run, and its sha256: a rebuild while
    the suite runs must not mix two builds in one report (the BPF objects are
    embedded skeletons, so the binary is self-contained)."""
    src = hookerd_binary(build)
    d = Path(tempfile.mkdtemp(prefix="hooker-bench-bin-"))
    dst = d / "hookerd"
    shutil.copy2(src, dst)
    return dst, hashlib.sha256(dst.read_bytes()).hexdigest()


def hooker_missing(build: Path) -> str | None:
    """Why Hooker cannot be benchmarked at all, or None."""
    b = hookerd_binary(build)
    if not b.exists():
        return f"{b} does not exist (hookerd not built yet)"
    if not os.access(b, os.X_OK):
        return f"{b} is not executable"
    return None


_EAGER: dict[str, list[str]] = {}


def eager_flag(binary: Path) -> list[str]:
    """--eager where hookerd has it (deploy at start: the first connection
    measured moves too); builds from before deployment on the fly do not."""
    key = str(binary)
    if key not in _EAGER:
        r = subprocess.run([key, "--help"], capture_output=True, text=True, timeout=10)
        _EAGER[key] = ["--eager"] if "--eager" in r.stdout else []
    return _EAGER[key]


class Hookerd:
    """hookerd on one host (outside the app cgroup), as the bench contract says:
    it prints 'hookerd: ready' once attached and stops cleanly on SIGTERM."""

    def __init__(self, binary: Path, host: testbed.Host, redirect: int | str,
                 extra: list[str] = (), timeout=10.0):
        """redirect: hookerd's --redirect rule, a port or PORT=MECH[,MECH...]."""
        self.host = host
        tag = f"{host.netns}-{os.urandom(3).hex()}"
        # hookerd makes it, and mounts a BPF filesystem at /sys/fs/bpf if none is
        # (where nothing mounted one, /sys/fs/bpf is sysfs's and takes no mkdir).
        self.pin_dir = Path("/sys/fs/bpf") / f"hooker-bench-{tag}"
        self.ctl_dir = Path(tempfile.mkdtemp(prefix="hooker-bench-ctl-"))
        argv = [str(binary), "--cgroup", str(host.cgroup),
                "--iface", host.iface, "--port", str(HOOKER_PORT),
                "--redirect", str(redirect), "--control", str(self.ctl_dir / "ctl.sock"),
                "--pin-dir", str(self.pin_dir), *eager_flag(binary), *extra]
        # stderr to a file: a verbose hookerd must never block on a full pipe
        self.err_path = self.ctl_dir / "stderr"
        t0 = time.perf_counter()
        with open(self.err_path, "w") as err:
            self.proc = host.popen(argv, cgroup=False, stdout=subprocess.PIPE,
                                   stderr=err, text=True)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            line = self.proc.stdout.readline() if ready else ""
            if "hookerd: ready" in line:
                self.ready_s = time.perf_counter() - t0
                return
            if not ready or line == "":
                reason = self._failure(left <= 0 or not ready, timeout)
                self.close()
                raise Unavailable(reason)

    def _failure(self, timed_out: bool, timeout: float) -> str:
        if timed_out and self.proc.poll() is None:
            return f"hookerd on {self.host.name} not ready in {timeout:g}s"
        self.proc.wait(5)
        err = self.stderr().strip().splitlines()
        return (f"hookerd on {self.host.name} exited with {self.proc.returncode}: "
                + (err[-1] if err else "(no message)"))

    def control(self, request: str) -> dict:
        """One request on hookerd's control socket (what hookerctl sends)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.ctl_dir / "ctl.sock"))
            s.sendall(request.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return json.loads(out)

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def phases_ms(self) -> dict[str, float]:
        """hookerd's own start-up breakdown, if it printed one:
        'hookerd: start to ready 48.6 ms: udp_and_control 0.26 bpf_open_load 31.8 ...'"""
        for line in self.stderr().splitlines():
            # A debug line since hookerd has log levels: "hookerd: debug: start ..."
            line = line.replace("hookerd: debug: ", "hookerd: ", 1)
            if line.startswith("hookerd: start to ready") and ":" in line[8:]:
                words = line.split(":", 2)[2].split()
                try:
                    return {k: float(v) for k, v in zip(words[::2], words[1::2])}
                except ValueError:
                    return {}
        return {}

    def close(self):
        self.host.bed._stop_proc(self.proc)
        self.phases = self.phases_ms()
        shutil.rmtree(self.ctl_dir, ignore_errors=True)
        # pins hookerd left behind in its own directory would keep programs loaded
        shutil.rmtree(self.pin_dir, ignore_errors=True)


class HookerPair:
    """hookerd on both hosts; a context manager. redirect: as for Hookerd.
    `extra`: flags for both, or {host name: flags} where each needs its own
    (quic's certificates)."""

    def __init__(self, binary, bed, redirect, extra=()):
        self.binary, self.bed, self.port, self.extra = binary, bed, redirect, extra
        self.daemons: list[Hookerd] = []

    def __enter__(self):
        try:
            for h in (self.bed.b, self.bed.a):
                extra = self.extra[h.name] if isinstance(self.extra, dict) else self.extra
                self.daemons.append(Hookerd(self.binary, h, self.port, extra))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for d in self.daemons:
            d.close()
        self.daemons.clear()


def readline_within(p: subprocess.Popen, timeout: float) -> str:
    """One line of p's stdout, or "" if none came within `timeout` seconds."""
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline() if ready else ""


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def bpf_objects_of(pid: int) -> dict:
    """The BPF maps and programs a process holds (directly or through a bpf_link),
    read from its fdinfo: exactly hookerd's, whatever else runs on the machine.
    Programs carry run_cnt/run_time_ns (non-zero while kernel.bpf_stats_enabled)."""
    maps, prog_ids = {}, set()
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return {"maps": [], "progs": []}
    for fd in fds:
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        kv = {k.strip(): v.strip() for k, v in
              (l.split(":", 1) for l in text.splitlines() if ":" in l)}
        if "map_id" in kv:
            maps[int(kv["map_id"])] = {"id": int(kv["map_id"]), "type": int(kv["map_type"]),
                                       "max_entries": int(kv.get("max_entries", 0)),
                                       "bytes": int(kv.get("memlock", 0))}
        elif "prog_id" in kv:  # a program fd, or a link fd naming its program
            prog_ids.add(int(kv["prog_id"]))
    progs = []
    for pid_ in sorted(prog_ids):
        info = _bpftool_json("prog", "show", "id", str(pid_))
        if isinstance(info, dict):
            progs.append({"id": pid_, "name": info.get("name"), "type": info.get("type"),
                          "run_cnt": info.get("run_cnt", 0),
                          "run_time_ns": info.get("run_time_ns", 0)})
    return {"maps": list(maps.values()), "progs": progs}


def _bpftool_json(*args) -> list:
    r = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout or "[]") if r.returncode == 0 else []


# ------------------------------------------------------------------ CPU time

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Columns of /proc/stat's "cpu" line counted as busy: user nice system (idle
# iowait skipped) irq softirq steal. guest and guest_nice are already inside
# user and nice, so they are not added again.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


def cpu_busy_s() -> float:
    """The machine's busy CPU time since boot, all CPUs added up, in seconds."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                ticks = [int(x) for x in line.split()[1:]]
                return sum(ticks[i] for i in _BUSY_COLUMNS if i < len(ticks)) / CLK_TCK
    raise RuntimeError("/proc/stat has no 'cpu' line")


class CpuMeter:
    """Busy CPU seconds of the whole machine while the block runs: both hosts of
    the bed and every process on them (the kernel's softirq work, hookerd,
    iperf3), and also whatever else the machine runs meanwhile, which is why the
    load average at the start is kept beside it.

        with wl.CpuMeter() as m:
            ...move n bytes...
        m.busy_s, m.wall_s, m.loadavg, m.per_gb(n)

    /proc/stat counts in ticks of 1/CLK_TCK s (10 ms here) per CPU: a window of
    a few seconds is what makes the figure meaningful."""

    def __init__(self):
        self.busy_s = self.wall_s = None
        self.loadavg = None

    def __enter__(self):
        self.loadavg = [round(x, 2) for x in os.getloadavg()]
        self._t0 = time.monotonic()
        self._b0 = cpu_busy_s()
        return self

    def __exit__(self, *exc):
        self.busy_s = cpu_busy_s() - self._b0
        self.wall_s = time.monotonic() - self._t0

    def per_gb(self, nbytes: int) -> float | None:
        """CPU seconds per GB (10^9 bytes) moved in the window."""
        return self.busy_s / (nbytes / 1e9) if nbytes else None


def background_cpu(seconds: float = 1.0) -> float:
    """Busy CPU seconds per second of the machine while the bench does nothing:
    the other work sharing it, to read beside a CpuMeter figure."""
    with CpuMeter() as m:
        time.sleep(seconds)
    return m.busy_s / m.wall_s


# ------------------------------------------------------------------ iperf3

def iperf3(bed: testbed.TwoHosts, streams: int, seconds: float, port=IPERF_PORT,
           host: str | None = None, what="iperf3", cpu: dict | None = None) -> float:
    """One iperf3 run from a against a server already listening (on b unless
    `host` says where, e.g. a local port-forward); Gbit/s received. `cpu`, if
    given, gets the machine's busy CPU seconds per GB received over the run
    ("cpu_s_per_gb", CpuMeter) and the load average at its start."""
    with CpuMeter() as meter:
        r = bed.a.run(["iperf3", "-c", host or bed.b.ip4, "-p", str(port), "-t", f"{seconds:g}",
                       "-P", str(streams), "-J"], timeout=seconds + 30, check=False)
    try:
        j = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"{what}: exit {r.returncode}: {r.stderr.strip()[-200:]}")
    if "error" in j:
        raise RuntimeError(f"{what}: {j['error']}")
    got = j["end"]["sum_received"]
    if cpu is not None:
        cpu.update(cpu_s_per_gb=meter.per_gb(got["bytes"]), loadavg=meter.loadavg)
    return got["bits_per_second"] / 1e9


class IperfServer:
    def __init__(self, bed: testbed.TwoHosts, port: int = IPERF_PORT):
        self.bed, self.port = bed, port
        self.proc = bed.b.popen(["iperf3", "-s", "-B", bed.b.ip4, "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(bed.a, bed.b.ip4, port, what="iperf3 -s")

    def close(self):
        self.bed._stop_proc(self.proc)
