"""Issue 13: `hookerctl stats` (every counter) and `hookerctl conns` (each
live connection), as JSON and as tables; and who may use the control socket:
root, or the members of hookerd's --control-group, nobody else."""
import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from apps import PY, listening
from hookerd import HOOKERCTL, HOOKERD, Hookerd, wait_for
from test_policy import RECEIVER, SENDER, ctl, hooked, policy  # noqa: F401 (hooked: fixture)


def ctl_json(hd, *args):
    r = ctl(hd, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_conns_and_stats_show_a_live_transfer(hooked):
    bed, a, b = hooked
    size = 4_000_000
    rx = bed.b.popen([PY, "-c", RECEIVER, "5201"], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: listening(bed.b, 5201), 10, "receiver on 5201")
    tx = bed.a.popen([PY, "-c", SENDER, bed.b.ip4, "5201", str(size)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert tx.stdout.readline().strip() == "half"

    # Each live connection: both addresses, mechanism, bytes and datagrams
    # each way, drops, age.
    wait_for(lambda: ctl_json(a, "conns")["connections"] and
             ctl_json(a, "conns")["connections"][0]["bytes_out"] == size // 2, 10,
             "a's connection to have sent the first half")
    [c] = ctl_json(a, "conns")["connections"]
    assert (c["local"], c["remote"], c["remote_port"]) == (bed.a.ip4, bed.b.ip4, 5201)
    assert c["mechanism"] == "udp" and c["side"] == "client" and c["drops"] == 0
    assert c["datagrams_out"] >= size // 2 // 1400 and c["datagrams_in"] == 0
    assert c["bytes_in"] == 0 and c["age_s"] > 0
    wait_for(lambda: ctl_json(b, "conns")["connections"][0]["bytes_in"] == size // 2, 10,
             "b to have delivered the first half")
    [cb] = ctl_json(b, "conns")["connections"]
    assert cb["side"] == "server" and cb["datagrams_in"] >= size // 2 // 1400
    table = ctl(a, "conns").stdout.splitlines()
    assert table[0].split()[:4] == ["SIDE", "LOCAL", "REMOTE", "MECH"] and len(table) == 2
    assert table[1].split()[:6] == ["cli", f"{bed.a.ip4}:{c['local_port']}",
                                    f"{bed.b.ip4}:5201", "udp", str(size // 2), "0"]

    tx.stdin.write("\n")
    tx.stdin.flush()
    sent = tx.stdout.readline().strip()
    assert tx.wait(timeout=30) == 0 and rx.stdout.readline().strip() == sent
    wait_for(lambda: not ctl_json(a, "conns")["connections"], 10, "the connection to end")

    # Every counter; a connection's bytes stay counted after it ended.
    s = ctl_json(a, "stats")
    assert s["counters"]["kernel"]["moved_active"] == 1
    assert s["counters"]["daemon"]["conns_closed"] == 1
    assert s["counters"]["mechanisms"]["udp"]["bytes_sent"] == size
    assert s["gauges"]["mechanisms"]["udp"] == {"deployed": True, "connections": 0}
    rows = ctl(a, "stats").stdout.splitlines()
    n = sum(len(g) for g in (s["counters"]["kernel"], s["counters"]["daemon"],
                             *s["counters"]["mechanisms"].values()))
    assert rows[0].split() == ["GROUP", "COUNTER", "VALUE"]
    assert ["udp", "bytes_sent", str(size)] in [r.split() for r in rows]
    assert ["gauges", "udp_unreachable_peers", "0"] in [r.split() for r in rows]
    assert len(rows) == 1 + n + 1 + len(s["gauges"]["mechanisms"])


# ---- who may use the control socket ----------------------------------------

@pytest.fixture
def hookerctl_for_all():
    """A copy of hookerctl any user may run (the build tree may not be theirs)."""
    d = tempfile.mkdtemp(prefix="hookerctl-")
    os.chmod(d, 0o755)
    shutil.copy(HOOKERCTL, d)
    yield os.path.join(d, "hookerctl")
    shutil.rmtree(d, ignore_errors=True)


def as_user(hookerctl, user, group, control, *args):
    """hookerctl run as another user, with only that one group."""
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups",
                           hookerctl, "--control", control, *args],
                          capture_output=True, text=True, timeout=10)


def test_only_root_by_default(bed, hookerctl_for_all):
    a = Hookerd(bed.a, [5201]).start()
    st = os.stat(a.control)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    before = policy(a)
    for args in (["policy", "add", "8080"], ["status"], ["stats", "--json"]):
        r = as_user(hookerctl_for_all, "nobody", "nogroup", a.control, *args)
        if "--json" in args:  # the error as JSON, where the machine reads
            assert r.returncode == 1 and r.stderr == "", (args, r)
            assert json.loads(r.stdout)["error"].startswith("permission denied: "), r.stdout
            continue
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and r.stdout == "" and len(lines) == 1, (args, r)
        assert lines[0].startswith("hookerctl: permission denied: "), lines
    assert policy(a) == before
    assert a.stop() == 0


def test_control_group_members_may_use_it(bed, hookerctl_for_all):
    # Under umask 077 (the systemd unit's), in a directory hookerd makes:
    # the directory stays searchable, the socket's mode decides.
    umask = ["/bin/sh", "-c", 'umask 077 && exec "$@"', "sh"]
    a = Hookerd(bed.a, [5201], extra=["--control-group", "nogroup"], prefix=umask)
    d = tempfile.mkdtemp(prefix="hooker-ctl-")
    os.rmdir(d)  # hookerd makes it
    a.control = os.path.join(d, "sub", "hookerd.sock")
    try:
        a.start()
        check_group_access(a, hookerctl_for_all)
        assert stat.S_IMODE(os.stat(os.path.dirname(a.control)).st_mode) == 0o755
    finally:
        a.stop()
        shutil.rmtree(d, ignore_errors=True)


def check_group_access(a, hookerctl_for_all):
    st = os.stat(a.control)
    assert stat.S_IMODE(st.st_mode) == 0o660 and (st.st_uid, st.st_gid) == (0, 65534)
    r = as_user(hookerctl_for_all, "nobody", "nogroup", a.control, "policy", "add", "8080")
    assert r.returncode == 0 and r.stdout.strip() == "added 8080=udp", r
    assert [p["port"] for p in policy(a)] == [5201, 8080]
    # Not in the group: refused, nothing changes.
    r = as_user(hookerctl_for_all, "65533", "65533", a.control, "policy", "del", "8080")
    assert r.returncode == 1 and r.stderr.startswith("hookerctl: permission denied: "), r
    assert [p["port"] for p in policy(a)] == [5201, 8080]


def test_unknown_control_group_stops_hookerd_in_one_line():
    r = subprocess.run([HOOKERD, "--redirect", "8000", "--control-group", "no-such-group-13"],
                       capture_output=True, text=True, timeout=10)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r
    assert lines[0].startswith("hookerd: error: --control-group no-such-group-13: no such group"), lines
