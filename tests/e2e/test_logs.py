"""Issue 13's logs: hookerd logs by level (--log-level, log_level), one line
per connection moved, refused or reset at info, and a flood of connections
gives at most the rate limit's lines plus a count of the rest."""
import os
import re
import subprocess
import time

import pytest

from apps import PY, listening
from hookerd import HOOKERD, Hookerd, wait_for

PORT = 5401

# Serves every connection: reads to EOF, answers "ok".
SERVER = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(256)
def serve(c):
    c.settimeout(30)
    while c.recv(65536): pass
    c.sendall(b"ok"); c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# N connections one after the other: each sends a few bytes, half-closes,
# reads the answer. Prints how many were answered "ok".
CLIENTS = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
good = 0
for i in range(n):
    c = socket.create_connection((host, port), timeout=30)
    c.sendall(b"hello %d" % i); c.shutdown(socket.SHUT_WR)
    got = b""
    while b := c.recv(64): got += b
    good += got == b"ok"
    c.close()
print(good, flush=True)
"""


@pytest.fixture
def server(bed):
    p = bed.b.popen([PY, "-c", SERVER, str(PORT)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    wait_for(lambda: listening(bed.b, PORT), 10, f"server on :{PORT}")
    yield p
    p.kill()
    p.wait(timeout=10)


def connections(bed, n):
    r = bed.a.run([PY, "-c", CLIENTS, bed.b.ip4, str(PORT), str(n)], timeout=120)
    assert r.stdout.strip() == str(n), f"{n} connections: {r.stdout} {r.stderr}"


def moved_lines(hd):
    return [l for l in hd.stderr().splitlines() if l.startswith("hookerd: moved ")]


def suppressed(hd):
    """The counts of the 'suppressed K connection lines' lines."""
    return [int(m.group(1)) for m in re.finditer(r"^hookerd: suppressed (\d+) connection lines",
                                                 hd.stderr(), re.M)]


def test_a_moved_connection_is_one_info_line_and_none_at_warn(bed, server):
    a = Hookerd(bed.a, [PORT]).start()
    b = Hookerd(bed.b, [PORT]).start()
    try:
        connections(bed, 1)
        wait_for(lambda: moved_lines(a) and moved_lines(b), 10, "the moved lines")
        assert a.counter("moved_active") == 1
    finally:
        assert a.stop() == 0, a.stderr()
        assert b.stop() == 0, b.stderr()
    # One line each side, its own address first.
    [client], [srv] = moved_lines(a), moved_lines(b)
    assert re.fullmatch(rf"hookerd: moved {re.escape(bed.a.ip4)}:\d+ -> "
                        rf"{re.escape(bed.b.ip4)}:{PORT} onto udp \(client\)", client), client
    assert re.fullmatch(rf"hookerd: moved {re.escape(bed.b.ip4)}:{PORT} -> "
                        rf"{re.escape(bed.a.ip4)}:\d+ onto udp \(server\)", srv), srv

    # At warn: the connection moves all the same, and says nothing.
    a = Hookerd(bed.a, [PORT], extra=["--log-level", "warn"]).start()
    b = Hookerd(bed.b, [PORT], extra=["--log-level", "warn"]).start()
    try:
        connections(bed, 1)
        wait_for(lambda: b.counter("moved_passive") == 1, 10, "b's moved_passive")
        assert a.counter("moved_active") == 1
    finally:
        assert a.stop() == 0, a.stderr()
        assert b.stop() == 0, b.stderr()
    for hd in (a, b):
        assert not [l for l in hd.stderr().splitlines()
                    if not l.startswith(("hookerd: error: ", "hookerd: warning: "))], hd.stderr()


def refused(hd):
    return [l for l in hd.stderr().splitlines() if l.startswith("hookerd: refused ")]


def test_a_refused_connection_is_one_line(bed, server):
    # b moves nothing on PORT: a's SYN gets no answer, the connection stays TCP.
    a = Hookerd(bed.a, [PORT]).start()
    b = Hookerd(bed.b, [PORT + 1]).start()
    try:
        connections(bed, 1)
        wait_for(lambda: refused(a), 10, "a's refused line")
    finally:
        assert a.stop() == 0, a.stderr()
        assert b.stop() == 0, b.stderr()
    [line] = refused(a)
    assert f" -> {bed.b.ip4}:{PORT} (client): udp: the server's SYN-ACK has no Hooker option" \
        in line, line
    assert not moved_lines(a)

    # b accepts udplite only on PORT: it refuses a's udp, and both say so.
    a = Hookerd(bed.a, [PORT]).start()
    b = Hookerd(bed.b, [f"{PORT}=udplite"]).start()
    try:
        connections(bed, 1)
        wait_for(lambda: refused(a) and refused(b), 10, "both refused lines")
    finally:
        assert a.stop() == 0, a.stderr()
        assert b.stop() == 0, b.stderr()
    [client], [srv] = refused(a), refused(b)
    assert f" -> {bed.b.ip4}:{PORT} (client): udp: the server refused it; it stays TCP" \
        in client, client
    assert re.fullmatch(rf"hookerd: refused {re.escape(bed.b.ip4)}:{PORT} -> "
                        rf"{re.escape(bed.a.ip4)}:\d+ \(server\): udp: this server's rule does "
                        r"not accept it; it stays TCP", srv), srv


def test_a_burst_of_connections_is_rate_limited(bed, server):
    n = 200
    a = Hookerd(bed.a, [PORT]).start()
    b = Hookerd(bed.b, [PORT]).start()
    try:
        t0 = time.monotonic()
        connections(bed, n)
        moved = a.counter("moved_active")
        assert moved > n // 2, f"only {moved} of {n} moved"
        # Every moved connection is a line or counted in a suppressed line;
        # the count comes at most a second after the burst.
        wait_for(lambda: len(moved_lines(a)) + sum(suppressed(a)) == moved, 10,
                 f"{moved} connections in a's lines and counts: {len(moved_lines(a))} "
                 f"lines, {suppressed(a)} suppressed")
        # hookerd wrote them all within this time (it may lag the
        # connections themselves on a busy machine).
        took = time.monotonic() - t0
    finally:
        assert a.stop() == 0, a.stderr()
        assert b.stop() == 0, b.stderr()
    # The limit: a burst of 10 lines, then 10 a second; one count a second.
    assert len(moved_lines(a)) <= 10 + 10 * (took + 1), (len(moved_lines(a)), took)
    assert 1 <= len(suppressed(a)) <= took + 2, (suppressed(a), took)


def test_the_journal_gets_each_lines_priority(bed, server):
    """With stderr the journal (JOURNAL_STREAM names it, as systemd sets it),
    each line starts with its syslog priority for journald to file it by."""
    a = Hookerd(bed.a, [PORT])
    b = Hookerd(bed.b, [PORT]).start()
    a.stderr_path.write_text("")  # the file hookerd's stderr will be: its inode now
    st = os.stat(a.stderr_path)
    a.env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    a.start()
    try:
        connections(bed, 1)
        wait_for(lambda: "<6>hookerd: moved " in a.stderr(), 10, "a's moved line")
    finally:
        assert a.stop() == 0, a.stderr()
        assert b.stop() == 0, b.stderr()
    lines = a.stderr().splitlines()
    assert lines and all(re.match(r"<[3467]>hookerd: ", l) for l in lines), lines
    assert not any(l.startswith("<") for l in b.stderr().splitlines()), b.stderr()


def test_bad_log_level_is_one_line(tmp_path):
    r = subprocess.run([HOOKERD, "--log-level", "loud", "--redirect", "80",
                        "--control", str(tmp_path / "s.sock")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "hookerd: error: --log-level loud: use error, warn, info or debug"], r.stderr
