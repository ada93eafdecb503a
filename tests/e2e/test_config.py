"""Issue 13's configuration file: hookerd --config FILE with [[rule]] tables
matching destination and source prefixes, server ports and ranges, and
cgroup sub-paths, first match wins; `hookerctl policy reload`; and the
messages for bad input. Moved or not is checked on the wire: a moved
connection sends no TCP payload."""
import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from apps import PY, listening
from hookerd import HOOKERCTL, HOOKERD, Hookerd, wait_for

# Serves every connection on PORT (IPv4 and IPv6): reads to EOF, answers
# with the byte count and the sha256 of what came.
SERVER = r"""
import hashlib, socket, sys, threading
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1]))); s.listen(64)
def serve(c):
    c.settimeout(30)
    h, n = hashlib.sha256(), 0
    while b := c.recv(1 << 20):
        h.update(b); n += len(b)
    c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# Connects (from SRC if given), sends N seeded bytes, half-closes, prints
# the answer.
CLIENT = r"""
import random, socket, sys
dst, port, n, src = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
c = socket.socket(fam); c.settimeout(30)
if src != "-": c.bind((src, 0))
c.connect((dst, port))
c.sendall(random.Random(port).randbytes(n)); c.shutdown(socket.SHUT_WR)
got = b""
while b := c.recv(4096): got += b
print(got.decode(), flush=True)
"""

# Sends half of a seeded stream, says "half", waits for a line on stdin,
# sends the rest; prints the server's answer and its own sha256.
SLOW_CLIENT = r"""
import hashlib, random, socket, sys
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(7).randbytes(n)
c = socket.create_connection((dst, port), timeout=30)
c.sendall(data[:n // 2]); print("half", flush=True)
sys.stdin.readline()
c.sendall(data[n // 2:]); c.shutdown(socket.SHUT_WR)
got = b""
while b := c.recv(4096): got += b
print(got.decode(), hashlib.sha256(data).hexdigest(), flush=True)
"""

SIZE = 300_000
A4X, B4X, B6X = "10.77.0.11", "10.77.0.12", "fd77::12"


def ctl(hd, *args):
    return subprocess.run([HOOKERCTL, "--control", hd.control, *args], capture_output=True,
                          text=True, timeout=10)


def in_cgroup(cg: Path, argv):
    """argv run inside cgroup `cg` (the host's own or a sub-cgroup of it)."""
    return ["sh", "-c", f'echo $$ > "{cg}/cgroup.procs" && exec "$@"', "sh", *argv]


class Servers:
    """SERVER processes on a host, each in a given cgroup; stopped at the end."""

    def __init__(self, host):
        self.host, self.procs = host, []

    def start(self, port, cg=None):
        p = self.host.popen(in_cgroup(cg or self.host.cgroup, [PY, "-c", SERVER, str(port)]),
                            cgroup=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(p)
        wait_for(lambda: listening(self.host, port), 10, f"server on :{port}")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


def transfer(host, dst, port, src="-", cg=None):
    r = host.run(in_cgroup(cg or host.cgroup, [PY, "-c", CLIENT, dst, str(port), str(SIZE), src]),
                 timeout=60, cgroup=False)
    n, _ = r.stdout.split()
    assert int(n) == SIZE, f"{dst}:{port} from {src}: {r.stdout} {r.stderr}"


def tcp_payload(cap, server, port, client=None):
    """TCP payload bytes between `server`:port and (if given) `client`."""
    return sum(p.tcp_len or 0 for p in cap.packets() if p.proto == "tcp" and (
        (p.dst == server and p.dport == port and client in (None, p.src)) or
        (p.src == server and p.sport == port and client in (None, p.dst))))


@pytest.fixture
def subcgroups(bed):
    """A sub-cgroup `moved` under each host's cgroup, removed at the end."""
    made = []
    for h in (bed.a, bed.b):
        d = h.cgroup / "moved"
        d.mkdir()
        made.append(d)
    yield {h.name: h.cgroup / "moved" for h in (bed.a, bed.b)}
    for d in made:
        for pid in (d / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        wait_for(lambda d=d: not (d / "cgroup.procs").read_text().split(), 10, f"{d} empty")
        d.rmdir()


@pytest.fixture
def servers(bed):
    s = Servers(bed.b)
    yield s
    s.stop()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def rules_file(bed, tmp_path) -> Path:
    b = bed.b
    return write(tmp_path / "hookerd.toml", f"""
# issue 13: what each rule names, first match wins
verbose = false

[[rule]]          # never: anything from a's second address
src = "{A4X}/32"
mech = "never"

[[rule]]          # an IPv4 destination prefix
port = 5301
dst = ["{b.ip4}/32"]
mech = "udp"

[[rule]]          # an IPv6 destination prefix
port = 5302
dst = "{b.ip6}/128"
mech = "udp"

[[rule]]          # a cgroup sub-path, on each host under its --cgroup
port = "5307-5308"
cgroup = "moved"
mech = "udp"

[[rule]]          # a port range: two ports, any address
port = "5304-5305"
mech = "udp,udplite"
""")


def test_rules_move_exactly_what_they_name(bed, tmp_path, subcgroups, servers):
    for h, addrs in ((bed.a, [f"{A4X}/24"]), (bed.b, [f"{B4X}/24", f"{B6X}/64"])):
        for a in addrs:
            # The IPv6 one deprecated (preferred_lft 0): never a source address
            # unless bound to. hookerd's UDP datagrams from a newer address of
            # the server's host are not recognised by the client's hookerd
            # (seen with --redirect too: noted in the report of issue 13).
            v6 = ["nodad", "preferred_lft", "0"] if ":" in a else []
            h.run(["ip", "addr", "add", a, "dev", h.iface] + v6, timeout=10, cgroup=False)
    conf = rules_file(bed, tmp_path)
    a = Hookerd(bed.a, [], extra=["--config", str(conf)]).start()
    b = Hookerd(bed.b, [], extra=["--config", str(conf)]).start()
    try:
        listed = json.loads(ctl(a, "policy", "list", "--json").stdout)
        assert [r["line"] for r in listed["file_rules"]] == [5, 9, 14, 19, 24]
        for port in (5301, 5302, 5304, 5305, 5306):
            servers.start(port)
        for port in (5307, 5308):
            servers.start(port, subcgroups["b"])
        capture = contextlib.ExitStack()
        cap = capture.enter_context(bed.a.capture("tcp or udp"))
        moved = [(bed.b.ip4, 5301, "-", None),
                 (bed.b.ip6, 5302, "-", None),
                 (bed.b.ip4, 5307, "-", subcgroups["a"]),
                 (bed.b.ip4, 5304, "-", None),
                 (bed.b.ip6, 5305, "-", None)]
        plain = [(B4X, 5301, "-", None),            # destination prefix does not match
                 (B6X, 5302, "-", None),            # the IPv6 one neither
                 (bed.b.ip4, 5308, "-", None),      # client outside the sub-cgroup
                 (bed.b.ip4, 5304, A4X, None),      # the never rule comes first
                 (bed.b.ip4, 5306, "-", None)]      # no rule at all
        for dst, port, src, cg in moved + plain:
            transfer(bed.a, dst, port, src, cg)
        capture.close()  # the capture ends: its packets are decoded
        for dst, port, src, _ in moved:
            client = bed.a.ip6 if ":" in dst else bed.a.ip4
            assert tcp_payload(cap, dst, port, client) == 0, f"{dst}:{port} should have moved"
        for dst, port, src, _ in plain:
            client = None if src == "-" else src
            assert tcp_payload(cap, dst, port, client) >= SIZE, f"{dst}:{port} from {src} stayed?"
        assert a.counter("moved_active") == len(moved)
        assert b.counter("moved_passive") == len(moved)
    finally:
        assert a.stop() == 0, a.stderr()
        assert b.stop() == 0, b.stderr()


def test_cgroup_rule_on_the_accepting_side(bed, tmp_path, subcgroups, servers):
    """The server's rule names a cgroup: a listener inside it accepts, one
    outside answers as plain TCP, whoever the client is. The listener's
    cgroup is recorded when it listens (or, for one opened before hookerd,
    by the listener-following iterator)."""
    client = write(tmp_path / "a.toml", '[[rule]]\nport = "5330-5332"\nmech = "udp"\n')
    server = write(tmp_path / "b.toml",
                   '[[rule]]\nport = "5330-5332"\ncgroup = "moved"\nmech = "udp"\n')
    servers.start(5332, subcgroups["b"])  # before hookerd
    a = Hookerd(bed.a, [], extra=["--config", str(client)]).start()
    b = Hookerd(bed.b, [], extra=["--config", str(server)]).start()
    try:
        servers.start(5330, subcgroups["b"])
        servers.start(5331)  # b's cgroup, outside its sub-cgroup "moved"
        moved = [(bed.b.ip4, 5330), (bed.b.ip6, 5330), (bed.b.ip4, 5332)]
        plain = [(bed.b.ip4, 5331), (bed.b.ip6, 5331)]
        with bed.a.capture("tcp or udp") as cap:
            for dst, port in moved + plain:
                transfer(bed.a, dst, port)
        for dst, port in moved:
            assert tcp_payload(cap, dst, port) == 0, f"{dst}:{port} should have moved"
        for dst, port in plain:
            assert tcp_payload(cap, dst, port) >= SIZE, f"{dst}:{port} should stay TCP"
        assert b.counter("moved_passive") == len(moved)
        assert a.counter("peer_no_hooker") == len(plain)
    finally:
        assert a.stop() == 0, a.stderr()
        assert b.stop() == 0, b.stderr()


def test_reload_changes_new_connections_only(bed, tmp_path, servers):
    v1 = 'redirect = ["5320"]\n[[rule]]\nport = 5310\nmech = "udp"\n'
    conf = write(tmp_path / "hookerd.toml", v1)
    a = Hookerd(bed.a, [], extra=["--config", str(conf)]).start()
    b = Hookerd(bed.b, [], extra=["--config", str(conf)]).start()
    tx = None
    try:
        for port in (5310, 5311, 5320):
            servers.start(port)
        capture = contextlib.ExitStack()
        cap = capture.enter_context(bed.a.capture("tcp or udp"))
        size = 4_000_000
        tx = bed.a.popen([PY, "-c", SLOW_CLIENT, bed.b.ip4, "5310", str(size)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert tx.stdout.readline().strip() == "half"
        assert a.counter("moved_active") == 1

        # 5310 now never moves, 5311 does; the port rule 5320 stays after them.
        write(conf, 'redirect = ["5320"]\n[[rule]]\nport = 5310\nmech = "never"\n'
                    '[[rule]]\nport = 5311\nmech = "udp"\n')
        for hd in (b, a):
            r = ctl(hd, "policy", "reload", "--json")
            assert r.returncode == 0, r.stderr
            assert [x["rule"] for x in json.loads(r.stdout)["rules"]] == [
                "port 5310 => never", "port 5311 => udp"]
        transfer(bed.a, bed.b.ip4, 5310)
        transfer(bed.a, bed.b.ip4, 5311)
        transfer(bed.a, bed.b.ip4, 5320)

        # A broken file changes nothing, and says where and why.
        write(conf, '[[rule]]\nport = 5311\nmech = "never"\n[[rule]]\nport = 5310\nmech = "warp"\n')
        r = ctl(a, "policy", "reload")
        assert r.returncode == 1
        assert f"{conf}:6: mech: unknown mechanism 'warp'" in r.stderr, r.stderr
        write(conf, 'redirect = ["5320"\n')
        r = ctl(a, "policy", "reload")
        assert r.returncode == 1 and f"{conf}:1: syntax error" in r.stderr, r.stderr
        transfer(bed.a, bed.b.ip4, 5311)  # still moves: the old policy stands

        # The transfer that started under the first file ends byte-exact.
        tx.stdin.write("go\n")
        tx.stdin.flush()
        out = tx.stdout.readline().split()
        assert tx.wait(timeout=30) == 0
        assert out[0] == str(size) and out[1] == out[2], out
        capture.close()
        # Its payload never went over TCP; the new 5310 one did.
        # Only the transfer after the reload shows on TCP, the first one not.
        assert SIZE <= tcp_payload(cap, bed.b.ip4, 5310) < SIZE + 100  # + the answer
        assert tcp_payload(cap, bed.b.ip4, 5311) == 0
        assert tcp_payload(cap, bed.b.ip4, 5320) == 0
        assert a.counter("moved_active") == 1 + 1 + 1 + 1
    finally:
        if tx is not None and tx.poll() is None:
            tx.kill()
        assert a.stop() == 0, a.stderr()
        assert b.stop() == 0, b.stderr()


BAD = [
    ("syntax", 'port = 7000\nredirect = ["5201"\n', ":2: syntax error"),
    ("unknown key", 'port = 7000\nbogus = 1\n', ":2: unknown key 'bogus'"),
    ("unknown rule key", '[[rule]]\nport = 80\nmech = "udp"\nsource = "10.0.0.0/8"\n',
     ":4: unknown key 'source' in [[rule]]"),
    ("bad prefix", '[[rule]]\nport = 80\ndst = ["10.1.2.0/8"]\nmech = "udp"\n',
     ":3: dst: bad prefix '10.1.2.0/8': bits set past its length (did you mean 10.0.0.0/8?)"),
    ("bad v6 prefix", '[[rule]]\nport = 80\nsrc = "fd00::/129"\nmech = "udp"\n',
     ":3: src: bad prefix 'fd00::/129': the length is 0..128"),
    ("unknown mechanism", '[[rule]]\nport = 80\nmech = "tcp"\n',
     ":3: mech: unknown mechanism 'tcp'"),
    ("port out of range", '[[rule]]\nport = 70000\nmech = "udp"\n',
     ":2: port out of range: '70000': use 1..65535"),
    ("daemon port out of range", 'port = 0\nredirect = ["80"]\n',
     ":1: port 0 is out of range: use 1..65535"),
    ("redirect", 'redirect = ["80=quic"]\n',
     ":1: redirect 80=quic: quic needs hookerd's certificate"),
    ("log level", 'redirect = ["80"]\nlog_level = "loud"\n',
     ":2: log level 'loud': use error, warn, info or debug"),
    ("no such cgroup", '[[rule]]\nport = 80\ncgroup = "no/such"\nmech = "udp"\n',
     ":1: cgroup no/such: no such cgroup"),
]


@pytest.mark.parametrize("name,text,why", BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_is_one_line_naming_file_and_line(tmp_path, name, text, why):
    conf = write(tmp_path / "bad.toml", text)
    r = subprocess.run([HOOKERD, "--config", str(conf), "--control", str(tmp_path / "s.sock")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"hookerd: error: {conf}:"), r.stderr
    assert f"{conf}{why}" in lines[0], r.stderr


def test_flags_override_the_file(bed, tmp_path):
    conf = write(tmp_path / "hookerd.toml",
                 'port = 7111\nredirect = ["5201"]\neager = true\nmax_conns = 64\n'
                 'log_level = "error"\n')
    a = Hookerd(bed.a, ["5202"], extra=["--config", str(conf), "--log-level", "debug"]).start()
    try:
        st = a.status()["hookerd"]
        assert st["udp_port"] == 7000  # --port on the command line wins
        assert [r["port"] for r in st["redirect"]] == [5202]  # so does --redirect
        assert st["config"] == str(conf)
        assert st["log_level"] == "debug"  # and --log-level
    finally:
        assert a.stop() == 0, a.stderr()
    # The file's log_level where no flag says otherwise.
    a = Hookerd(bed.a, ["5202"], extra=["--config", str(conf)]).start()
    try:
        assert a.status()["hookerd"]["log_level"] == "error"
    finally:
        assert a.stop() == 0, a.stderr()
