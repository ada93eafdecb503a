"""The test bed itself: reachability, cgroup and netns membership, capture, cleanup."""
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import testbed

PY = "/usr/bin/python3"

# A one-connection echo server: prints "ready" once listening, echoes until EOF.
TCP_ECHO = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM); s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1); print("ready", flush=True); s.settimeout(10)
c, _ = s.accept(); c.settimeout(10)
while (d := c.recv(65536)): c.sendall(d)
"""
UDP_ECHO = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True); s.settimeout(10)
d, peer = s.recvfrom(65536); s.sendto(d, peer)
"""


def start_server(host, script, addr, port):
    p = host.popen([PY, "-c", script, addr, str(port)], stdout=subprocess.PIPE, text=True)
    line = readline_within(p, 10)
    assert line.strip() == "ready", f"echo server on {host.name} did not start: {line!r}"
    return p


def readline_within(p, timeout):
    import select
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline() if ready else ""


def leftovers(prefix):
    """Namespaces and cgroups with the bed's prefix still on the machine."""
    ns = [n for n in os.listdir("/run/netns") if n.startswith(prefix)] \
        if os.path.isdir("/run/netns") else []
    cg = [n for n in os.listdir(testbed.cgroup2_mount()) if n.startswith(prefix)]
    return ns + cg


@pytest.mark.parametrize("fam", ["ip4", "ip6"])
def test_tcp_echo(bed, fam):
    addr = getattr(bed.b, fam)
    srv = start_server(bed.b, TCP_ECHO, addr, 5001)
    client = bed.a.socket(socket.AF_INET6 if fam == "ip6" else socket.AF_INET)
    client.settimeout(5)
    client.connect((addr, 5001))
    msg = os.urandom(100_000)
    client.sendall(msg)
    client.shutdown(socket.SHUT_WR)
    got = b""
    while (d := client.recv(65536)):
        got += d
    assert got == msg
    client.close()
    assert srv.wait(5) == 0


@pytest.mark.parametrize("fam", ["ip4", "ip6"])
def test_udp_echo(bed, fam):
    addr = getattr(bed.b, fam)
    start_server(bed.b, UDP_ECHO, addr, 5002)
    r = bed.a.run([PY, "-c", "import socket,sys\n"
                   f"s=socket.socket(socket.{'AF_INET6' if fam == 'ip6' else 'AF_INET'},"
                   "socket.SOCK_DGRAM); s.settimeout(5)\n"
                   f"s.sendto(b'ping', ('{addr}', 5002)); print(s.recvfrom(100)[0].decode())"],
                  timeout=10)
    assert r.stdout.strip() == "ping"


def netns_inode(path):
    return os.stat(path).st_ino


def test_popen_joins_cgroup_and_netns(bed):
    p = bed.a.popen(["sleep", "30"])
    rel = "/" + str(bed.a.cgroup.relative_to(testbed.cgroup2_mount()))
    cg_line = [l for l in Path(f"/proc/{p.pid}/cgroup").read_text().splitlines()
               if l.startswith("0::")]
    assert cg_line == [f"0::{rel}"]
    assert p.pid in bed.a.pids_in_cgroup()
    assert os.readlink(f"/proc/{p.pid}/ns/net") == \
        f"net:[{netns_inode(bed.a.netns_path)}]"
    # The netns is entered without a new mount namespace: cgroup2 and bpffs stay visible.
    r = bed.a.run(["cat", "/proc/self/mounts"], timeout=5)
    assert " cgroup2 " in r.stdout


def test_popen_without_cgroup(bed):
    p = bed.b.popen(["sleep", "30"], cgroup=False)
    assert p.pid not in bed.b.pids_in_cgroup()
    assert os.readlink(f"/proc/{p.pid}/ns/net") == f"net:[{netns_inode(bed.b.netns_path)}]"


def test_run_has_a_timeout(bed):
    with pytest.raises(subprocess.TimeoutExpired):
        bed.a.run(["sleep", "30"], timeout=0.5)
    assert bed.a.pids_in_cgroup() == []


def test_capture_sees_tcp_payload(bed):
    sink = bed.b.socket(socket.AF_INET)
    sink.bind((bed.b.ip4, 5003))
    sink.listen(1)
    with bed.a.capture("tcp port 5003") as cap:
        c = bed.a.socket(socket.AF_INET)
        c.settimeout(5)
        c.connect((bed.b.ip4, 5003))
        conn, _ = sink.accept()
        c.sendall(b"z" * 12345)
        conn.settimeout(5)
        got = 0
        while got < 12345:
            got += len(conn.recv(65536))
        c.close()
        conn.close()
    assert cap.tcp_payload_bytes(5003) == 12345
    assert cap.dropped == 0
    assert cap.udp_payload_bytes(5003) == 0
    syn = [p for p in cap.packets() if p.proto == "tcp" and p.dport == 5003]
    assert syn and syn[0].src == bed.a.ip4 and syn[0].dst == bed.b.ip4


def test_capture_counts_udp(bed):
    rx = bed.b.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.bind((bed.b.ip6, 5004))
    with bed.a.capture("udp") as cap:
        tx = bed.a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        for n in (10, 20, 30):
            tx.sendto(b"u" * n, (bed.b.ip6, 5004))
    assert [p.udp_len for p in cap.udp_datagrams(5004)] == [10, 20, 30]
    assert cap.udp_payload_bytes(5004) == 60
    assert cap.tcp_payload_bytes(5004) == 0


def test_teardown_leaves_nothing():
    if testbed.require_root():
        pytest.skip(testbed.require_root())
    with testbed.TwoHosts() as b:
        prefix = b.prefix
        pids = [b.a.popen(["sleep", "60"]).pid,
                b.b.popen(["sleep", "60"], cgroup=False).pid,
                # ignores SIGTERM: teardown must escalate to SIGKILL
                b.a.popen(["sh", "-c", "trap '' TERM; sleep 60"]).pid]
        assert leftovers(prefix)
    assert leftovers(prefix) == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


def test_teardown_on_exception():
    if testbed.require_root():
        pytest.skip(testbed.require_root())
    with pytest.raises(ZeroDivisionError):
        with testbed.TwoHosts() as b:
            prefix, pid = b.prefix, b.b.popen(["sleep", "60"]).pid
            1 / 0
    assert leftovers(prefix) == []
    assert not Path(f"/proc/{pid}").exists()


def test_teardown_on_sigterm():
    """A test run killed with SIGTERM still removes its bed."""
    if testbed.require_root():
        pytest.skip(testbed.require_root())
    script = ("import sys, time; sys.path.insert(0, %r)\nimport testbed\n"
              "with testbed.TwoHosts() as b:\n"
              "    b.a.popen(['sleep', '60'])\n"
              "    print(b.prefix, flush=True)\n"
              "    time.sleep(60)\n") % str(Path(__file__).parent)
    p = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        prefix = readline_within(p, 20).strip()
        assert prefix and leftovers(prefix)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 143
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert leftovers(prefix) == []
