"""Running hookerd on a test-bed host: start until `hookerd: ready`, ask it for
status through hookerctl, stop it with SIGTERM. Used by the end-to-end tests and
the demo."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("HOOKER_BUILD", REPO / "build"))
HOOKERD = BUILD / "src" / "hookerd"
HOOKERCTL = BUILD / "src" / "hookerctl"
UDP_PORT = 7000
# make test-sanitize (scripts/test-sanitize.sh) sets this: hookerd is built
# with AddressSanitizer and UBSan, and a report on its stderr fails the test.
SANITIZE = os.environ.get("HOOKER_SANITIZE") == "1"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
# Flags added to every hookerd the tests start, for chasing a failure
# (HOOKER_TEST_HOOKERD_ARGS="--log-level debug": every connection's line).
EXTRA_ARGS = os.environ.get("HOOKER_TEST_HOOKERD_ARGS", "").split()
STARTED: list["Hookerd"] = []  # every hookerd started in this process, in order


class Hookerd:
    """One hookerd on one host, with its own control socket and pin dir."""

    def __init__(self, host, redirect, udp_port=UDP_PORT, extra=(), eager=True, env=None,
                 prefix=()):
        self.host = host
        # Tests move the first connection already, unless they test lazy
        # deployment (the first connection that needs a mechanism stays TCP).
        self.eager = eager
        self.redirect = list(redirect)
        self.udp_port = udp_port
        self.control = f"/run/hooker-test/{host.netns}.sock"
        self.pin_dir = f"/sys/fs/bpf/{host.netns}"
        self.extra = list(extra)
        self.env = env  # the whole environment, when a test sets one (NOTIFY_SOCKET)
        self.prefix = list(prefix)  # runs hookerd through it (setpriv: fewer capabilities)
        self.proc: subprocess.Popen | None = None
        self.stderr_path = Path(f"/tmp/{host.netns}-hookerd.err")

    def argv(self):
        a = self.prefix + [HOOKERD, "--cgroup", self.host.cgroup, "--iface", self.host.iface,
             "--port", str(self.udp_port), "--control", self.control,
             "--pin-dir", self.pin_dir]
        for p in self.redirect:
            a += ["--redirect", str(p)]
        if self.eager:
            a.append("--eager")
        return a + self.extra + EXTRA_ARGS

    def launch(self) -> "Hookerd":
        """Starts hookerd (outside the host's cgroup) and returns at once."""
        STARTED.append(self)
        err = open(self.stderr_path, "w")
        self.proc = self.host.popen(self.argv(), cgroup=False, stdout=subprocess.PIPE,
                                    stderr=err, text=True, env=self.env)
        err.close()
        return self

    def start(self, timeout=10.0) -> "Hookerd":
        """Starts hookerd and returns once it said `hookerd: ready`; raises
        with its stderr if it exits or stays silent."""
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                line = self.proc.stdout.readline()
                if line.strip() == "hookerd: ready":
                    return self
                if line == "":  # EOF: it exited
                    break
            elif self.proc.poll() is not None:
                break
        raise RuntimeError(f"hookerd on {self.host.name} did not become ready: "
                           f"rc={self.proc.poll()} stderr={self.stderr()!r}")

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def lines_about(self, ports, most=40) -> list[str]:
        """Its log's warnings and errors, quic's streams it reset for naming no
        connection, and its connection lines naming one of `ports` (as
        ":PORT "), at most `most`: why those connections ended. Every connection line is there only at --log-level debug."""
        keys = tuple(f":{p} " for p in ports)
        out = [l for l in self.stderr().splitlines()
               if "warning:" in l or "error:" in l or "quic: reset a stream" in l
               or any(k in l + " " for k in keys)]
        return out[:most]

    def embryonic_tokens(self) -> list[int]:
        """Tokens of handshakes this hookerd's kernel accepted that are not yet
        established (hk_token.state == HK_TOKEN_EMBRYONIC), from the pinned map."""
        r = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", f"{self.pin_dir}/tokens"],
                           capture_output=True, text=True, timeout=10, check=True)
        out = []
        for e in json.loads(r.stdout or "[]"):
            key = bytes(int(x, 16) for x in e["key"])
            value = bytes(int(x, 16) for x in e["value"])
            _slot, state, _created = struct.unpack("<IIQ", value)
            if state == 1:
                out.append(struct.unpack("<Q", key)[0])
        return out

    def status(self) -> dict:
        r = subprocess.run([HOOKERCTL, "--control", self.control, "status", "--json"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, f"hookerctl status: rc={r.returncode} {r.stderr}"
        return json.loads(r.stdout)

    def raw_request(self, line: bytes) -> dict:
        """One request on the control socket, as a client other than
        hookerctl could send it; the JSON answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.control)
            s.sendall(line)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return json.loads(out)

    def counter(self, name: str) -> int:
        c = self.status()["counters"]
        return c["kernel"].get(name, c["daemon"].get(name, 0))

    def sanitizer_report(self) -> str | None:
        """The sanitizer's report on this hookerd's stderr, from its first
        line, or None."""
        err = self.stderr()
        at = min((i for i in (err.find(m) for m in SANITIZER_MARKERS) if i >= 0), default=-1)
        return None if at < 0 else err[max(0, err.rfind("\n", 0, at) + 1):]

    def stop(self, timeout=10.0) -> int:
        """SIGTERM and wait; returns the exit code. Under HOOKER_SANITIZE=1 a
        sanitizer report fails here, whatever the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            rc = self.proc.returncode if self.proc else 0
        else:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.proc.wait(timeout=timeout)
        if SANITIZE:
            report = self.sanitizer_report()
            assert report is None, f"hookerd on {self.host.name}: {report[:6000]}"
        return rc


def wait_for(cond, timeout, what):
    """Polls cond() until true; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)  # polling a condition, bounded by the deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def quic_pair(bed, tmp_path: Path, rules, rules_b=None, extra=(), also=None):
    """hookerd on bed.a (rules) and bed.b (rules_b, else the same), each with
    a certificate from one fresh CA naming its addresses, and those `also`
    lists for it by host name (tests/pki.py, made in tmp_path/pki)."""
    from pki import make_pki
    pki = tmp_path / "pki"
    pki.mkdir()
    args = make_pki(pki, [bed.a, bed.b], also)
    a = Hookerd(bed.a, rules, extra=args[bed.a.name] + list(extra)).start()
    b = Hookerd(bed.b, rules if rules_b is None else rules_b,
                extra=args[bed.b.name] + list(extra)).start()
    return a, b
