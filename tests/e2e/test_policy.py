"""Issue 9's live policy: `hookerctl policy add|del|list` changes which ports
move while hookerd runs; new connections follow, established ones do not
notice, and bad input changes nothing."""
import json
import subprocess

import pytest

from apps import PY, fetch, http_server, listening, make_files, url
from hookerd import HOOKERCTL, Hookerd, wait_for

# Receives one connection to the end and prints the sha256 of what came.
RECEIVER = r"""
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1)
c, _ = s.accept(); c.settimeout(30)
h = hashlib.sha256()
while b := c.recv(1 << 20): h.update(b)
print(h.hexdigest(), flush=True)
"""

# Sends the first half of a seeded stream, says "half", waits for a line on
# stdin, sends the rest and closes; prints the sha256 of all it sent.
SENDER = r"""
import hashlib, random, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(9).randbytes(n)
c = socket.create_connection((host, port), timeout=30)
c.sendall(data[:n // 2])
print("half", flush=True)
sys.stdin.readline()
c.sendall(data[n // 2:])
c.close()
print(hashlib.sha256(data).hexdigest(), flush=True)
"""


def ctl(hd, *args):
    return subprocess.run([HOOKERCTL, "--control", hd.control, *args], capture_output=True,
                          text=True, timeout=10)


def policy(hd):
    r = ctl(hd, "policy", "list", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["policy"]


def fin_rules(host):
    out = ""
    for tool in ("iptables", "ip6tables"):
        out += host.run([tool, "-w", "-S", "INPUT"], timeout=10, cgroup=False).stdout
    return sorted(line for line in out.splitlines() if "hooker fin hold" in line)


@pytest.fixture
def hooked(bed):
    """hookerd on both hosts, moving 5201 only."""
    a = Hookerd(bed.a, [5201]).start()
    b = Hookerd(bed.b, [5201]).start()
    yield bed, a, b
    assert a.stop() == 0, a.stderr()
    assert b.stop() == 0, b.stderr()


def test_policy_add_then_del_while_a_transfer_runs(hooked, tmp_path):
    bed, a, b = hooked
    size = 26_000_000
    sums = make_files(tmp_path, {"f": 510_000})
    rx = bed.b.popen([PY, "-c", RECEIVER, "5201"], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: listening(bed.b, 5201), 10, "receiver on 5201")
    tx = bed.a.popen([PY, "-c", SENDER, bed.b.ip4, "5201", str(size)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert tx.stdout.readline().strip() == "half"
    assert a.counter("moved_active") == 1

    # Added on both hosts: a new connection to 8000 moves, no TCP payload.
    for hd in (b, a):
        r = ctl(hd, "policy", "add", "8000")
        assert r.returncode == 0 and r.stdout.strip() == "added 8000=udp", r
    assert len(fin_rules(bed.b)) == 8  # 5201 and 8000, FIN and RST, IPv4 and IPv6
    http_server(bed.b, tmp_path, 8000)
    with bed.a.capture("tcp or udp") as cap:
        assert fetch(bed.a, url(bed.b, 8000, "f"), tmp_path / "g1") == sums["f"]
    assert cap.tcp_payload_bytes(8000) == 0
    assert cap.udp_payload_bytes(7000) >= 510_000
    assert a.counter("moved_active") == 2 and b.counter("moved_passive") == 2

    # Removed: the next connection stays TCP and works.
    for hd in (a, b):
        r = ctl(hd, "policy", "del", "8000")
        assert r.returncode == 0 and r.stdout.strip() == "removed 8000=udp", r
    with bed.a.capture("tcp or udp") as cap:
        assert fetch(bed.a, url(bed.b, 8000, "f"), tmp_path / "g2") == sums["f"]
    assert cap.tcp_payload_bytes(8000) >= 510_000
    assert a.counter("moved_active") == 2
    # The moved connection on 8000 is gone, so is its FIN rule (each policy
    # request drops the rules of removed ports that no connection uses).
    wait_for(lambda: policy(b) and len(fin_rules(bed.b)) == 4, 10, "the FIN rules of 8000 to go")

    # The transfer that ran across both changes arrives byte-exact.
    tx.stdin.write("\n")
    tx.stdin.flush()
    sent = tx.stdout.readline().strip()
    assert tx.wait(timeout=30) == 0
    assert rx.stdout.readline().strip() == sent
    assert rx.wait(timeout=10) == 0
    assert a.counter("datagrams_sent") * 1400 >= size


# Reads exactly n bytes of one connection, prints their sha256, answers one
# byte: no FIN is involved until both ends have checked.
EXACT_RECEIVER = r"""
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1)
c, _ = s.accept(); c.settimeout(30)
n, h = int(sys.argv[2]), hashlib.sha256()
while n:
    b = c.recv(min(n, 1 << 20))
    if not b: sys.exit("EOF before the last byte")
    h.update(b); n -= len(b)
c.sendall(b"k")
print(h.hexdigest(), flush=True)
"""
# Sends n seeded bytes, waits for the answer, prints the sha256 of what it sent.
EXACT_SENDER = r"""
import hashlib, random, socket, sys
data = random.Random(5).randbytes(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
c.sendall(data)
if c.recv(1) != b"k": sys.exit("no answer")
print(hashlib.sha256(data).hexdigest(), flush=True)
"""


def test_handshake_accepted_before_its_rule_went_is_moved(hooked):
    """The server's SYN-ACK accepted Hooker, then its port's rule went before
    the client's last ACK came: the connection is moved all the same (the
    client moved it at the SYN-ACK), its bytes whole. The kernel's port mask
    must not turn such a late ACK away for naming a port no rule holds now."""
    bed, a, b = hooked
    n = 300_000
    srv = bed.b.popen([PY, "-c", EXACT_RECEIVER, "5201", str(n)], stdout=subprocess.PIPE,
                      text=True)
    wait_for(lambda: listening(bed.b, 5201), 10, "receiver on 5201")
    hold = ["INPUT", "-p", "tcp", "--dport", "5201", "--tcp-flags", "SYN,ACK,FIN,RST",
            "ACK", "-j", "DROP"]
    bed.b.run(["iptables", "-w", "-I", *hold], timeout=10, cgroup=False)
    held = True
    try:
        cli = bed.a.popen([PY, "-c", EXACT_SENDER, bed.b.ip4, "5201", str(n)],
                          stdout=subprocess.PIPE, text=True)
        wait_for(lambda: b.embryonic_tokens(), 10, "b's SYN-ACK to accept Hooker")
        r = ctl(b, "policy", "del", "5201")
        assert r.returncode == 0, r
        bed.b.run(["iptables", "-w", "-D", *hold], timeout=10, cgroup=False)
        held = False
        sent, _ = cli.communicate(timeout=40)
        got, _ = srv.communicate(timeout=10)
    finally:
        if held:
            bed.b.run(["iptables", "-w", "-D", *hold], timeout=10, cgroup=False, check=False)
    assert cli.returncode == 0 and srv.returncode == 0, (sent, got, b.stderr()[-2000:])
    assert sent.strip() == got.strip() != ""
    assert a.counter("moved_active") == 1 and b.counter("moved_passive") == 1


def test_policy_list_shows_the_rules(hooked):
    bed, a, _ = hooked
    assert ctl(a, "policy", "add", "8080=udp").returncode == 0
    assert policy(a) == [
        {"port": 5201, "accept": ["udp"], "ask": "udp", "rule": "5201=udp"},
        {"port": 8080, "accept": ["udp"], "ask": "udp", "rule": "8080=udp"},
    ]
    text = ctl(a, "policy", "list")
    assert text.returncode == 0 and text.stdout.split("\n")[2].split() == ["8080", "udp", "udp"]
    assert a.status()["hookerd"]["redirect"] == policy(a)


BAD = [
    (["add", "0"], "policy add 0: port out of range: use 1..65535"),
    (["add", "70000"], "policy add 70000: port out of range"),
    (["add", "http"], "policy add http: not PORT[=MECH[,MECH...]]"),
    (["add", "8080=frob"], "policy add 8080=frob: unknown mechanism 'frob': use udp, udplite"),
    (["add", "8080=quic"], "policy add 8080=quic: quic needs hookerd's certificate: start it "
                           "with --quic-cert FILE --quic-key FILE --quic-ca FILE (PEM)"),
    (["add", "8080=udp,udp"], "policy add 8080=udp,udp: mechanism udp is named twice"),
    (["add", "5201=udp"], "port 5201 already has a rule (5201=udp): policy del 5201 first"),
    (["del", "8080"], "policy del 8080: port 8080 has no rule"),
    (["del", "0"], "policy del 0: port out of range"),
    (["del", "x"], "policy del x: not a port number"),
]


@pytest.mark.parametrize("args,want", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_policy_input_changes_nothing(hooked, args, want):
    bed, a, _ = hooked
    before, rules = policy(a), fin_rules(bed.a)
    r = ctl(a, "policy", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("hookerctl: "), r
    assert want in lines[0], lines
    assert r.stdout == ""
    assert policy(a) == before and fin_rules(bed.a) == rules


@pytest.mark.parametrize("line", [b"policy\n", b"policy add\n", b"policy frob 1\n",
                                  b"policy add 8080 8081\n", b"policy del\n", b"frob\n"])
def test_malformed_control_requests_are_refused(hooked, line):
    bed, a, _ = hooked
    before = policy(a)
    answer = a.raw_request(line)
    assert list(answer) == ["error"] and "\n" not in answer["error"], answer
    assert policy(a) == before


def test_hookerctl_usage_errors_exit_2(hooked):
    _, a, _ = hooked
    for args in (["policy"], ["policy", "add"], ["policy", "del"], ["policy", "frob"]):
        r = ctl(a, *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r)


def _moved_fetch(bed, a, b, tmp_path, name):
    sums = make_files(tmp_path, {name: 510_000})
    with bed.a.capture("tcp or udp") as cap:
        assert fetch(bed.a, url(bed.b, 8000, name), tmp_path / (name + ".got")) == sums[name]
    assert cap.tcp_payload_bytes(8000) == 0
    assert b.counter("moved_passive") == 1 and a.counter("moved_active") == 1


def test_listener_opened_before_policy_add_is_moved(hooked, tmp_path):
    bed, a, b = hooked
    http_server(bed.b, tmp_path, 8000)  # listening before the rule exists
    for hd in (b, a):
        r = ctl(hd, "policy", "add", "8000")
        assert r.returncode == 0 and r.stderr == "", r
    _moved_fetch(bed, a, b, tmp_path, "f")


def test_listener_opened_before_hookerd_is_moved(bed, tmp_path):
    http_server(bed.b, tmp_path, 8000)
    b = Hookerd(bed.b, [8000]).start()
    a = Hookerd(bed.a, [8000]).start()
    assert "negotiate" not in b.stderr()
    _moved_fetch(bed, a, b, tmp_path, "f")
    assert a.stop() == 0 and b.stop() == 0
