"""The two-host test bed: two network namespaces, each with its own cgroup v2.

    with TwoHosts() as bed:                       # a <-veth-> b
        srv = bed.b.popen(["iperf3", "-s", "-1"])
        bed.a.run(["iperf3", "-c", bed.b.ip4], timeout=30)

    with TwoHosts(link=LinkSpec(delay_ms=25, loss_pct=1)) as bed:
        ...                                       # a <-> wire (hooker-linkemu) <-> b

Both hosts sit on one L2 subnet: 10.77.0.1/24 + fd77::1/64 (a) and 10.77.0.2/24 +
fd77::2/64 (b), interface `eth0` in each namespace. Every process started through a
Host is tracked by PID and ended at teardown, which runs on every exit path
(exception, KeyboardInterrupt, SIGTERM, interpreter exit). Needs root.

Processes enter a namespace with `nsenter --net=...`, never `ip netns exec`: the
latter remounts /sys and hides the cgroup2 mount and bpffs from the process.
"""
from __future__ import annotations

import atexit
import ctypes
import dataclasses
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NETNS_DIR = Path("/run/netns")
TERM_TIMEOUT = 5.0          # seconds between SIGTERM and SIGKILL at teardown
PROBE_TIMEOUT = 10.0        # the bed must answer a TCP probe within this
_CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class TestbedError(RuntimeError):
    """The bed could not be built or torn down; the message says which step."""


def _sh(argv, timeout=20, check=True):
    """Runs a set-up command; a failure names the command and its stderr."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"{' '.join(argv)}: no answer in {timeout}s") from e
    if check and r.returncode != 0:
        raise TestbedError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def cgroup2_mount() -> Path:
    """The cgroup v2 mount point, read from /proc/self/mounts (never assumed)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                return Path(fields[1])
    raise TestbedError("cgroup v2 is not mounted: mount -t cgroup2 none /sys/fs/cgroup")


def require_root() -> str | None:
    """None if the bed can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "the two-host test bed needs root (network namespaces, cgroups)"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 util-linux)"
    return None


# ---------------------------------------------------------------- link emulator

@dataclasses.dataclass
class LinkSpec:
    """Impairments of the emulated link; each applies to both directions.

    delay_ms is one way (RTT = 2 * delay_ms). Rates are percentages (loss_pct=1 is
    1%). a2b / b2a hold per-direction overrides with the same field names, e.g.
    LinkSpec(delay_ms=25, b2a={"loss_pct": 5}).
    """
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    dup_pct: float = 0.0
    reorder_pct: float = 0.0
    corrupt_pct: float = 0.0
    rate_mbit: float | None = None
    limit: int | None = None          # queue length in packets per direction
    seed: int | None = None
    a2b: dict = dataclasses.field(default_factory=dict)
    b2a: dict = dataclasses.field(default_factory=dict)

    _FLAGS = {"delay_ms": ("delay", "ms"), "jitter_ms": ("jitter", "ms"),
              "loss_pct": ("loss", "%"), "dup_pct": ("dup", "%"),
              "reorder_pct": ("reorder", "%"), "corrupt_pct": ("corrupt", "%"),
              "rate_mbit": ("rate", "mbit"), "limit": ("limit", "")}

    def args(self) -> list[str]:
        """The hooker-linkemu flags for this spec."""
        out = []

        def emit(prefix, name, value):
            flag, unit = self._FLAGS[name]
            out.extend([f"--{prefix}{flag}", f"{value:g}{unit}" if unit else str(value)])

        for name in self._FLAGS:
            value = getattr(self, name)
            if value:
                emit("", name, value)
        for prefix, overrides in (("a2b-", self.a2b), ("b2a-", self.b2a)):
            for name, value in overrides.items():
                if name not in self._FLAGS:
                    raise ValueError(f"LinkSpec.{prefix[:-1]}: unknown field {name!r}")
                emit(prefix, name, value)
        if self.seed is not None:
            out.extend(["--seed", str(self.seed)])
        return out


def find_linkemu() -> Path:
    """hooker-linkemu: $HOOKER_LINKEMU, else the CMake build dir, else built here.

    The standalone build goes to a directory keyed by the sources' hash, so tests run
    before the top-level build knows about bench/ and never run a stale binary.
    """
    env = os.environ.get("HOOKER_LINKEMU")
    if env:
        return Path(env)
    src_dir = REPO / "bench" / "linkemu"
    sources = sorted(p for p in src_dir.iterdir() if p.suffix in (".cpp", ".h"))
    digest = hashlib.sha256()
    for p in sources:
        digest.update(p.name.encode() + p.read_bytes())
    build = os.environ.get("HOOKER_BUILD", str(REPO / "build"))
    built = Path(build) / "bench" / "hooker-linkemu"
    if built.exists() and built.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return built
    out = Path(tempfile.gettempdir()) / f"hooker-linkemu-{digest.hexdigest()[:12]}"
    if not out.exists():
        tmp = out.with_suffix(".tmp%d" % os.getpid())
        _sh(["g++", "-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread",
             "-I", str(REPO / "src"), "-o", str(tmp), *[str(p) for p in sources if p.suffix == ".cpp"]],
            timeout=300)
        os.replace(tmp, out)
    return out


# ---------------------------------------------------------------- capture

@dataclasses.dataclass
class Packet:
    """One captured frame, as tshark decoded it. Ports/lengths are None if absent."""
    time: float
    src: str
    dst: str
    proto: str            # "tcp", "udp", "udplite" or "other"
    sport: int | None
    dport: int | None
    tcp_len: int | None   # TCP payload bytes
    udp_len: int | None   # UDP payload bytes (the UDP length minus its 8-byte header)
    tcp_flags: int | None


_TSHARK_FIELDS = ["frame.time_relative", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
                  "ip.proto", "ipv6.nxt", "tcp.srcport", "tcp.dstport", "tcp.len",
                  "tcp.flags", "udp.srcport", "udp.dstport", "udp.length"]
SENTINEL_PORT = 9  # discard: the capture's end marker goes here (see Capture.stop)


def _int(s: str) -> int | None:
    return int(s, 0) if s else None


def parse_pcap(path: Path, timeout=60) -> list[Packet]:
    """Decodes a pcap file with tshark into Packet records."""
    argv = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=f",
            "-E", "separator=\t"]
    for f in _TSHARK_FIELDS:
        argv += ["-e", f]
    r = _sh(argv, timeout=timeout)
    out = []
    for line in r.stdout.splitlines():
        v = (line.split("\t") + [""] * len(_TSHARK_FIELDS))[:len(_TSHARK_FIELDS)]
        (t, s4, d4, s6, d6, p4, p6, tsp, tdp, tlen, tfl, usp, udp_, ulen) = v
        ipproto = _int(p4) if p4 else _int(p6)
        if tsp:
            proto, sport, dport = "tcp", _int(tsp), _int(tdp)
        elif usp:
            proto = "udplite" if ipproto == 136 else "udp"
            sport, dport = _int(usp), _int(udp_)
        else:
            proto, sport, dport = "other", None, None
        out.append(Packet(time=float(t or 0), src=s4 or s6, dst=d4 or d6, proto=proto,
                          sport=sport, dport=dport,
                          tcp_len=_int(tlen) if tsp else None,
                          udp_len=(_int(ulen) - 8) if usp and ulen else None,
                          tcp_flags=_int(tfl) if tfl else None))
    return out


class Capture:
    """tcpdump on a host's interface; see Host.capture."""

    def __init__(self, host: "Host", bpf_filter: str, path: Path, snaplen: int = 200):
        # snaplen: bytes kept of each packet; 0 keeps them whole (a test that
        # looks for bytes in the payloads).
        self.host, self.filter, self.path, self.snaplen = host, bpf_filter, path, snaplen
        self.marker = f"hooker-testbed-end-{uuid.uuid4().hex}".encode()
        self._packets: list[Packet] | None = None
        self._proc: subprocess.Popen | None = None
        self.dropped: int | None = None  # tcpdump's own count of frames it missed

    def start(self, timeout=10.0):
        # The end marker is let through whatever the user's filter is.
        marker_filter = f"udp dst port {SENTINEL_PORT} and src host {self.host.ip4}"
        full = f"({self.filter}) or ({marker_filter})" if self.filter else ""
        # Headers are all the assertions read (lengths come from them), and a
        # large buffer: a burst of Hooker datagrams overflows the default one.
        argv = ["tcpdump", "-n", "-U", "--immediate-mode", "-s", str(self.snaplen), "-B", "65536",
                "-i", self.host.iface,
                "-w", str(self.path)] + ([full] if full else [])
        self._proc = self.host.popen(argv, cgroup=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        # tcpdump says "listening on IFACE" once its socket is bound: from then on
        # nothing sent on the interface is missed.
        deadline = time.monotonic() + timeout
        seen = b""
        while b"listening on" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or self._proc.poll() is not None:
                self.host.bed._stop_proc(self._proc)
                raise TestbedError(f"tcpdump on {self.host.name} did not start: {seen!r}")
            ready, _, _ = select.select([self._proc.stderr], [], [], left)
            if ready:
                chunk = os.read(self._proc.stderr.fileno(), 4096)
                if not chunk:
                    continue
                seen += chunk

    def stop(self, timeout=5.0):
        """Sends the end marker, waits until it is in the file, then stops tcpdump.

        Waiting for our own last packet to be written proves every packet sent before
        it is in the file too, where a fixed sleep would only make that likely.
        """
        try:
            with self.host.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                peer = self.host.bed.peer_of(self.host)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    s.sendto(self.marker, (peer.ip4, SENTINEL_PORT))
                    if self.path.exists() and self.marker in self.path.read_bytes():
                        break
                    time.sleep(0.05)  # poll the file for the marker, bounded above
        finally:
            self.host.bed._stop_proc(self._proc, sig=signal.SIGINT)
            err = self._proc.stderr.read().decode(errors="replace")
            m = re.search(r"(\d+) packets? dropped by kernel", err)
            self.dropped = int(m.group(1)) if m else None

    def packets(self) -> list[Packet]:
        """Every captured frame except the end markers."""
        if self._packets is None:
            self._packets = [p for p in parse_pcap(self.path)
                             if not (p.proto == "udp" and p.dport == SENTINEL_PORT)]
        return self._packets

    # Helpers for the usual assertions -------------------------------------------
    def tcp_payload_bytes(self, port: int) -> int:
        """TCP payload bytes on packets from or to `port`."""
        return sum(p.tcp_len or 0 for p in self.packets()
                   if p.proto == "tcp" and port in (p.sport, p.dport))

    def udp_datagrams(self, port: int, proto="udp") -> list[Packet]:
        """UDP (or "udplite") datagrams from or to `port`."""
        return [p for p in self.packets() if p.proto == proto and port in (p.sport, p.dport)]

    def udp_payload_bytes(self, port: int, proto="udp") -> int:
        return sum(p.udp_len or 0 for p in self.udp_datagrams(port, proto))


# ---------------------------------------------------------------- hosts

class Host:
    """One namespace-host: attributes name, netns, cgroup, iface, ip4, ip6."""

    def __init__(self, bed: "TwoHosts", name: str, netns: str, cgroup: Path,
                 ip4: str, ip6: str):
        self.bed, self.name, self.netns, self.cgroup = bed, name, netns, cgroup
        self.iface, self.ip4, self.ip6 = "eth0", ip4, ip6

    def __repr__(self):
        return f"Host({self.name}, netns={self.netns}, cgroup={self.cgroup})"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    def wrap(self, argv, cgroup=True) -> list[str]:
        """argv as run inside this host: join the cgroup, then enter the netns."""
        argv = [str(a) for a in argv]
        enter = ["nsenter", f"--net={self.netns_path}", "--"] + argv
        if not cgroup:
            return enter
        # The child writes its own pid before exec, so nothing it runs escapes the
        # cgroup, and exec keeps the pid: the tracked pid is the program's.
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"',
                str(self.cgroup / "cgroup.procs")] + enter

    def popen(self, argv, cgroup=True, **kw) -> subprocess.Popen:
        """Starts argv in this host (and its cgroup unless cgroup=False); tracked."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = self.bed._track(subprocess.Popen(self.wrap(argv, cgroup), **kw))
        self._wait_entered(p, cgroup)
        return p

    def _wait_entered(self, p: subprocess.Popen, cgroup: bool, timeout=5.0):
        """Returns once p is in this netns (and cgroup), so callers never race the
        wrapper's exec: what popen returns is already where it was asked to be."""
        want = f"net:[{os.stat(self.netns_path).st_ino}]"
        deadline = time.monotonic() + timeout
        while p.poll() is None:
            try:
                inside = os.readlink(f"/proc/{p.pid}/ns/net") == want
                if inside and cgroup:
                    inside = str(p.pid) in (self.cgroup / "cgroup.procs").read_text().split()
            except OSError:  # exited between poll() and the read
                return
            if inside:
                return
            if time.monotonic() > deadline:
                raise TestbedError(f"pid {p.pid} did not enter {self.netns} in {timeout}s")
            time.sleep(0.001)  # polling /proc, bounded by the deadline

    def run(self, argv, timeout, check=True, cgroup=True, input=None,
            **kw) -> subprocess.CompletedProcess:
        """Runs argv to completion in this host; killed after `timeout` seconds.

        Output is captured as text unless stdout/stderr are given."""
        if "stdout" not in kw and "stderr" not in kw:
            kw["stdout"] = kw["stderr"] = subprocess.PIPE
        kw.setdefault("text", True)
        if input is not None:
            kw["stdin"] = subprocess.PIPE
        p = self.popen(argv, cgroup=cgroup, **kw)
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.bed._stop_proc(p)
            raise
        r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        if check:
            r.check_returncode()
        return r

    def socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0) -> socket.socket:
        """A socket created inside this host's netns, usable from this process.

        A socket keeps the netns it was created in; a short-lived thread enters the
        netns (setns is per thread) so this process itself never moves.
        """
        result: dict = {}

        def make():
            try:
                fd = os.open(self.netns_path, os.O_RDONLY)
                try:
                    if _libc.setns(fd, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns({self.netns_path}): {os.strerror(err)}")
                finally:
                    os.close(fd)
                result["sock"] = socket.socket(family, type, proto)
            except BaseException as e:  # handed to the caller's thread
                result["err"] = e

        t = threading.Thread(target=make)
        t.start()
        t.join()
        if "err" in result:
            raise result["err"]
        return result["sock"]

    @contextmanager
    def capture(self, bpf_filter: str = "", timeout=10.0):
        """tcpdump on this host's iface; yields a Capture whose .packets() works
        after the block. Started and confirmed listening before the block runs."""
        d = Path(tempfile.mkdtemp(prefix=f"{self.netns}-cap-"))
        cap = Capture(self, bpf_filter, d / "cap.pcap")
        cap.start(timeout)
        try:
            yield cap
        finally:
            cap.stop()
            cap.packets()  # decode now: the file goes with the directory
            shutil.rmtree(d, ignore_errors=True)

    def pids_in_cgroup(self) -> list[int]:
        return [int(x) for x in (self.cgroup / "cgroup.procs").read_text().split()]


class TwoHosts:
    """Context manager building hosts a and b (see the module doc)."""

    _live: list["TwoHosts"] = []
    _counter = 0

    def __init__(self, link: LinkSpec | None = None, prefix: str | None = None):
        TwoHosts._counter += 1
        self.prefix = prefix or f"hk{os.getpid()}n{TwoHosts._counter}"
        self.link = link
        self._procs: list[subprocess.Popen] = []
        self._netns: list[str] = []
        self._cgroups: list[Path] = []
        self._old_sigterm = None
        self.a: Host | None = None
        self.b: Host | None = None
        self.wire: str | None = None       # the middle netns when link is set
        self.linkemu: subprocess.Popen | None = None

    # -- public ---------------------------------------------------------------
    def peer_of(self, host: Host) -> Host:
        return self.b if host is self.a else self.a

    def processes(self) -> list[subprocess.Popen]:
        return list(self._procs)

    def stop_processes(self, since: int = 0):
        """Stops the processes started after the first `since` (a count taken
        from processes()), newest first, so a bed kept across tests frees
        the ports each test's applications held."""
        for p in reversed(self._procs[since:]):
            self._stop_proc(p)
        del self._procs[since:]

    def stop_link(self) -> dict:
        """Stops the link emulator; returns its counters per direction,
        {"a2b": {"rx": .., "tx": .., "lost": .., ...}, "b2a": {...}}."""
        if self.linkemu is None:
            raise TestbedError("this bed has no emulated link")
        self._stop_proc(self.linkemu)
        lines = (self.linkemu.stdout.read() if self.linkemu.stdout else "").split("\n")
        last = [l for l in lines if l.startswith("{")]
        if not last:
            raise TestbedError(f"hooker-linkemu printed no counters "
                               f"(exit {self.linkemu.returncode})")
        return json.loads(last[-1])

    # -- context --------------------------------------------------------------
    def __enter__(self) -> "TwoHosts":
        reason = require_root()
        if reason:
            raise TestbedError(reason)
        TwoHosts._live.append(self)
        self._install_sigterm()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- building -------------------------------------------------------------
    def _add_netns(self, name: str):
        if (NETNS_DIR / name).exists():
            raise TestbedError(f"netns {name} already exists (a stale bed? ip netns del {name})")
        _sh(["ip", "netns", "add", name])
        self._netns.append(name)
        _sh(["ip", "-n", name, "link", "set", "lo", "up"])

    def _add_cgroup(self, name: str) -> Path:
        path = cgroup2_mount() / name
        path.mkdir()
        self._cgroups.append(path)
        return path

    def _build(self):
        ns_a, ns_b = f"{self.prefix}a", f"{self.prefix}b"
        self._add_netns(ns_a)
        self._add_netns(ns_b)
        self.a = Host(self, "a", ns_a, self._add_cgroup(ns_a), "10.77.0.1", "fd77::1")
        self.b = Host(self, "b", ns_b, self._add_cgroup(ns_b), "10.77.0.2", "fd77::2")
        if self.link is None:
            _sh(["ip", "link", "add", "eth0", "netns", ns_a, "type", "veth",
                 "peer", "name", "eth0", "netns", ns_b])
        else:
            self._build_wire()
        for h in (self.a, self.b):
            _sh(["ip", "-n", h.netns, "addr", "add", f"{h.ip4}/24", "dev", h.iface])
            _sh(["ip", "-n", h.netns, "addr", "add", f"{h.ip6}/64", "dev", h.iface, "nodad"])
            _sh(["ip", "-n", h.netns, "link", "set", h.iface, "up"])
        if self.link is not None:
            self._static_neighbours()
            self._start_linkemu()
        self._probe()

    def _build_wire(self):
        """a:eth0 <-> wire:a ... hooker-linkemu ... wire:b <-> b:eth0."""
        self.wire = f"{self.prefix}w"
        self._add_netns(self.wire)
        # The wire is not a host: no IPv6 on its ports, so it sends nothing itself.
        for key in ("all", "default"):
            _sh(["nsenter", f"--net={NETNS_DIR / self.wire}", "--", "sysctl", "-q", "-w",
                 f"net.ipv6.conf.{key}.disable_ipv6=1"])
        for h in (self.a, self.b):
            _sh(["ip", "link", "add", "eth0", "netns", h.netns, "type", "veth",
                 "peer", "name", h.name, "netns", self.wire])
            _sh(["ip", "-n", self.wire, "link", "set", "dev", h.name, "up", "promisc", "on"])
            # The emulator relays frames one by one: it must see wire-sized frames
            # with complete checksums, not 64 KB TSO/GSO blobs with partial sums.
            _sh(["nsenter", f"--net={h.netns_path}", "--", "ethtool", "-K", "eth0",
                 "tso", "off", "gso", "off", "gro", "off", "tx", "off"])

    def _static_neighbours(self):
        """Fixed ARP/ND entries, so lossy links never stall on neighbour discovery."""
        macs = {}
        for h in (self.a, self.b):
            out = _sh(["ip", "-n", h.netns, "-br", "link", "show", h.iface]).stdout.split()
            macs[h.name] = out[2]
        for h in (self.a, self.b):
            peer = self.peer_of(h)
            for ip in (peer.ip4, peer.ip6):
                _sh(["ip", "-n", h.netns, "neigh", "replace", ip, "lladdr",
                     macs[peer.name], "dev", h.iface, "nud", "permanent"])

    def _start_linkemu(self):
        binary = find_linkemu()
        argv = ["nsenter", f"--net={NETNS_DIR / self.wire}", "--", str(binary),
                "--a", "a", "--b", "b", *self.link.args()]
        self.linkemu = self._track(subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True))
        # It prints one "ready" line once both ports are bound.
        ready, _, _ = select.select([self.linkemu.stdout], [], [], PROBE_TIMEOUT)
        line = self.linkemu.stdout.readline() if ready else ""
        if "ready" not in line:
            self._stop_proc(self.linkemu)
            raise TestbedError(f"hooker-linkemu did not start (exit {self.linkemu.returncode}):"
                               f" {line.strip()!r}; args {argv[4:]}")

    def _wait_carrier(self):
        """Packets sent before linkwatch activates a veth's qdisc are dropped."""
        deadline = time.monotonic() + PROBE_TIMEOUT
        for h in (self.a, self.b):
            while " UP " not in _sh(["ip", "-n", h.netns, "-br", "link", "show",
                                     h.iface]).stdout:
                if time.monotonic() > deadline:
                    raise TestbedError(f"{h.netns}:{h.iface} not up in {PROBE_TIMEOUT}s")
                time.sleep(0.01)  # polling operstate, bounded by the deadline

    def _probe(self):
        """A TCP connect a -> b over v4 and v6 must succeed before the bed is used."""
        self._wait_carrier()
        for fam, dst in ((socket.AF_INET, self.b.ip4), (socket.AF_INET6, self.b.ip6)):
            deadline = time.monotonic() + PROBE_TIMEOUT
            with self.b.socket(fam, socket.SOCK_STREAM) as lsn:
                lsn.bind((dst, 0))
                lsn.listen(8)
                port = lsn.getsockname()[1]
                last = None
                while time.monotonic() < deadline:
                    with self.a.socket(fam, socket.SOCK_STREAM) as c:
                        c.settimeout(max(0.1, min(1.0, deadline - time.monotonic())))
                        try:
                            c.connect((dst, port))
                            break
                        except OSError as e:
                            last = e
                else:
                    raise TestbedError(f"{self.a.netns} cannot reach {dst} within "
                                       f"{PROBE_TIMEOUT}s: {last}")

    # -- processes ------------------------------------------------------------
    def _track(self, p: subprocess.Popen) -> subprocess.Popen:
        self._procs.append(p)
        return p

    def _stop_proc(self, p: subprocess.Popen, sig=signal.SIGTERM, timeout=TERM_TIMEOUT):
        """Ends one process we started: `sig`, then SIGKILL after `timeout`."""
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
            except ProcessLookupError:
                pass
        for f in (p.stdin,):
            if f:
                f.close()

    # -- teardown -------------------------------------------------------------
    def close(self):
        """Idempotent teardown; every step runs even if an earlier one failed."""
        errors = []
        for p in reversed(self._procs):
            try:
                self._stop_proc(p)
            except Exception as e:  # keep going: the rest must still be removed
                errors.append(f"stop pid {p.pid}: {e}")
        self._procs.clear()
        for cg in reversed(self._cgroups):
            try:
                self._remove_cgroup(cg)
            except Exception as e:
                errors.append(f"rmdir {cg}: {e}")
        self._cgroups.clear()
        for ns in reversed(self._netns):
            r = _sh(["ip", "netns", "del", ns], check=False)
            if r.returncode != 0 and (NETNS_DIR / ns).exists():
                errors.append(f"ip netns del {ns}: {r.stderr.strip()}")
        self._netns.clear()
        if self in TwoHosts._live:
            TwoHosts._live.remove(self)
            self._restore_sigterm()
        if errors:
            raise TestbedError("teardown: " + "; ".join(errors))

    @staticmethod
    def _remove_cgroup(cg: Path, timeout=TERM_TIMEOUT):
        """rmdir a host cgroup once empty. Processes left in it were forked by ones we
        started (all tracked pids are gone by now): cgroup.kill ends exactly those."""
        if not cg.exists():
            return
        deadline = time.monotonic() + timeout
        killed = False
        while (cg / "cgroup.procs").read_text().split():
            if not killed:
                (cg / "cgroup.kill").write_text("1")
                killed = True
            if time.monotonic() > deadline:
                raise TestbedError(f"{cg} still has processes after {timeout}s")
            time.sleep(0.02)  # polling emptiness, bounded by the deadline
        deadline = time.monotonic() + timeout
        while True:
            try:
                cg.rmdir()
                return
            except OSError:  # EBUSY while the last task's exit is still in flight
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _install_sigterm(self):
        _sigterm_hold()

    def _restore_sigterm(self):
        _sigterm_release()


# SIGTERM becomes SystemExit while a bed is live, so `with` blocks (and teardown)
# unwind instead of the process dying with namespaces and cgroups left behind.
_sigterm_users = 0
_sigterm_old = None


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _sigterm_hold():
    global _sigterm_users, _sigterm_old
    if threading.current_thread() is not threading.main_thread():
        return
    if _sigterm_users == 0 and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        _sigterm_old = signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_users += 1


def _sigterm_release():
    global _sigterm_users, _sigterm_old
    if threading.current_thread() is not threading.main_thread() or _sigterm_users == 0:
        return
    _sigterm_users -= 1
    if _sigterm_users == 0 and _sigterm_old is not None:
        signal.signal(signal.SIGTERM, _sigterm_old)
        _sigterm_old = None


@atexit.register
def _close_all():
    for bed in list(TwoHosts._live):
        try:
            bed.close()
        except Exception as e:
            print(f"testbed: {e}", flush=True)
