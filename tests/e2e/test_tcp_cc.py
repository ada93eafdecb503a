"""tcp-cc: connections on a tcp-cc rule stay TCP and run the rule's congestion
control, set by the sock_ops program on both sides; the algorithm is written in
BPF (built in: hk_vegas, bpf/vegas.bpf.c; a user's: tests/bpf/test_cc.bpf.c),
registered when tcp-cc is deployed and gone, with nothing left of it in the
kernel, when it is undeployed. Unmatched connections keep the default."""
import json
import shutil
import subprocess
import threading
import time

import pytest

from apps import fetch, http_server, make_files, url
from hookerd import BUILD, Hookerd, wait_for
from test_deploy import closed_cleanly, ctl, hold, mechs
from test_stream import transfer

TEST_CC = BUILD / "bpf" / "test_cc.bpf.o"
BROKEN_CC = BUILD / "bpf" / "broken_cc.bpf.o"
TCP_OPTIONS = {"ts", "sack", "ecn", "ecnseen", "fastopen"}


def ccs(host, port) -> list[str]:
    """The congestion control of each established TCP connection with `port`
    at either end, as `ss -ti` shows it in the host's namespace."""
    out = host.run(["ss", "-tinH", "state", "established",
                    f"( sport = :{port} or dport = :{port} )"], timeout=5, cgroup=False).stdout
    found = []
    for line in out.splitlines():
        if not line[:1].isspace():
            continue  # the socket's line; its info line follows, indented
        for tok in line.split():
            if ":" in tok:
                break
            if tok not in TCP_OPTIONS:
                found.append(tok)
                break
    return found


def default_cc(host) -> str:
    return host.run(["cat", "/proc/sys/net/ipv4/tcp_congestion_control"], timeout=5,
                    cgroup=False).stdout.strip()


def struct_ops() -> str:
    """bpftool struct_ops list: every registered BPF struct_ops, machine-wide."""
    return subprocess.run(["bpftool", "struct_ops", "list"], capture_output=True, text=True,
                          timeout=10).stdout


def available() -> list[str]:
    return open("/proc/sys/net/ipv4/tcp_available_congestion_control").read().split()


def one_line_error(r, want):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and want in lines[0], r


@pytest.fixture
def pair(bed):
    a = Hookerd(bed.a, ["8080=tcp-cc:hk_vegas", 5201]).start()
    b = Hookerd(bed.b, ["8080=tcp-cc:hk_vegas", 5201]).start()
    yield bed, a, b
    assert a.stop() == 0, a.stderr()
    assert b.stop() == 0, b.stderr()
    # Both gone: nothing of hk_vegas stays in the kernel.
    wait_for(lambda: "hk_vegas" not in struct_ops(), 10, "hk_vegas unregistered at exit")


def test_matched_connections_run_the_bpf_algorithm_on_both_sides(pair, tmp_path):
    bed, a, b = pair
    assert "hk_vegas" in available() and "hk_vegas" in struct_ops()
    m = mechs(a)["tcp-cc"]
    assert m["state"] == "deployed" and m["trigger"] == "at start (--eager)"
    assert m["loaded"] == ["hk_vegas (BPF struct_ops, built in)"]
    # b started second, on the same kernel: it uses a's registration.
    assert mechs(b)["tcp-cc"]["loaded"] == [
        "hk_vegas (BPF struct_ops, built in; registered already on this kernel: used as it is)"]
    rules = json.loads(ctl(a, "policy", "list", "--json").stdout)["policy"]
    assert rules[0] == {"port": 8080, "accept": ["tcp-cc:hk_vegas"], "ask": "tcp-cc:hk_vegas",
                        "rule": "8080=tcp-cc:hk_vegas"}
    assert ctl(a, "policy", "list").stdout.splitlines()[1].split() == \
        ["8080", "tcp-cc:hk_vegas", "tcp-cc:hk_vegas"]

    matched, plain = hold(bed, 8080), hold(bed, 8081)
    for host in (bed.a, bed.b):
        assert ccs(host, 8080) == ["hk_vegas"], host
        assert ccs(host, 8081) == [default_cc(host)], host
    # Stays TCP: no Hooker option, no slot, nothing moved.
    assert a.counter("cc_set") == 1 and b.counter("cc_set") == 1
    assert a.counter("moved_active") == 0 and a.counter("syn_opt_sent") == 0
    assert b.counter("moved_passive") == 0
    assert closed_cleanly(*matched) and closed_cleanly(*plain)

    # Bytes flow, in TCP segments, with the algorithm on both ends.
    sums = make_files(tmp_path, {"f": 510_000})
    http_server(bed.b, tmp_path, 8080)
    with bed.a.capture("tcp or udp") as cap:
        assert fetch(bed.a, url(bed.b, 8080, "f"), tmp_path / "got") == sums["f"]
    assert cap.tcp_payload_bytes(8080) >= 510_000
    assert a.counter("cc_set") == 2 and a.counter("cc_failed") == 0


def test_first_connection_deploys_it_lazily(bed):
    a = Hookerd(bed.a, ["8080=tcp-cc:hk_vegas"], eager=False).start()
    b = Hookerd(bed.b, ["8080=tcp-cc:hk_vegas"], eager=False).start()
    assert mechs(a)["tcp-cc"]["state"] == "not deployed"
    assert "hk_vegas" not in available()  # the start-up check registered it and let it go
    first = hold(bed, 8080)
    # Neither side had it registered: both keep the default and deploy it.
    for host in (bed.a, bed.b):
        assert ccs(host, 8080) == [default_cc(host)]
    for hd in (a, b):
        wait_for(lambda: mechs(hd)["tcp-cc"]["deployed"], 10, "tcp-cc deployed")
        assert hd.counter("mech_not_deployed") == 1
        assert mechs(hd)["tcp-cc"]["trigger"].startswith("first needed by ")
    assert closed_cleanly(*first)
    second = hold(bed, 8080)
    for host in (bed.a, bed.b):
        assert ccs(host, 8080) == ["hk_vegas"]
    assert closed_cleanly(*second)
    assert a.stop() == 0 and b.stop() == 0


def test_undeploy_unregisters_and_live_connections_go_on_with_the_default(pair):
    bed, a, b = pair
    live = hold(bed, 8080)
    assert ccs(bed.a, 8080) == ["hk_vegas"] and ccs(bed.b, 8080) == ["hk_vegas"]
    # a registered hk_vegas (b uses it): a's undeploy unregisters it.
    r = ctl(a, "undeploy", "tcp-cc")
    assert r.returncode == 0 and r.stdout.strip() == "undeployed tcp-cc (0 connection(s) reset)", r
    m = mechs(a)["tcp-cc"]
    assert (m["state"], m["loaded"]) == ("undeployed", [])
    # The live connection is neither reset nor left on the unregistered
    # algorithm: both ends run their namespace's default now, and nothing of
    # hk_vegas is left in the kernel.
    for host in (bed.a, bed.b):
        wait_for(lambda: ccs(host, 8080) == [default_cc(host)], 5, f"default CC on {host}")
    wait_for(lambda: "hk_vegas" not in struct_ops(), 10, "hk_vegas gone from bpftool")
    assert "hk_vegas" not in available()
    assert "connection(s) went on with" in a.stderr()
    assert closed_cleanly(*live)
    # Undeployed stays undeployed: new connections keep the default.
    again = hold(bed, 8080)
    assert ccs(bed.a, 8080) == [default_cc(bed.a)]
    assert a.counter("mech_not_deployed") >= 1
    assert closed_cleanly(*again)


def test_user_object_deploys_and_undeploys(pair):
    bed, a, b = pair
    r = ctl(a, "deploy", "tcp-cc", "--object", str(TEST_CC))
    assert r.returncode == 0, r
    assert r.stdout.strip() == f"tcp-cc: registered hk_test_cc (BPF struct_ops, from {TEST_CC})"
    assert "hk_test_cc" in available() and "hk_test_cc" in struct_ops()
    assert mechs(a)["tcp-cc"]["loaded"] == [
        "hk_vegas (BPF struct_ops, built in)", f"hk_test_cc (BPF struct_ops, from {TEST_CC})"]
    # Its name is usable in rules, on both hosts (one kernel's list).
    for hd in (a, b):
        r = ctl(hd, "policy", "add", "8090=tcp-cc:hk_test_cc")
        assert r.returncode == 0, r
    live = hold(bed, 8090)
    assert ccs(bed.a, 8090) == ["hk_test_cc"] and ccs(bed.b, 8090) == ["hk_test_cc"]

    # The same object again: its name is taken, one line, nothing changed.
    before = mechs(a)
    one_line_error(ctl(a, "deploy", "tcp-cc", "--object", str(TEST_CC)),
                   "a congestion control of that name is registered already")
    assert mechs(a) == before

    r = ctl(a, "undeploy", "tcp-cc")
    assert r.returncode == 0, r
    for host in (bed.a, bed.b):
        wait_for(lambda: ccs(host, 8090) == [default_cc(host)], 5, f"default CC on {host}")
    wait_for(lambda: "hk_test_cc" not in struct_ops() and "hk_vegas" not in struct_ops(), 10,
             "the algorithms gone from bpftool struct_ops list")
    assert "hk_test_cc" not in available()
    assert closed_cleanly(*live)


def test_broken_object_is_refused_with_the_verifiers_reason(pair):
    bed, a, _ = pair
    before, ops = mechs(a), struct_ops()
    r = ctl(a, "deploy", "tcp-cc", "--object", str(BROKEN_CC))
    one_line_error(r, f"deploy tcp-cc --object {BROKEN_CC}: the kernel refused to load "
                      f"{BROKEN_CC}: the verifier says: ")
    assert "snd_una" in r.stderr or "write" in r.stderr, r.stderr
    # hookerd's log has the verifier's whole log, at error, a line each.
    log = a.stderr().split(f"hookerd: error: the verifier's log of {BROKEN_CC}:\n", 1)
    assert len(log) == 2, a.stderr()[-3000:]
    assert log[1].startswith("hookerd: error: "), log[1][:500]
    assert mechs(a) == before and struct_ops() == ops
    assert "hk_broken_cc" not in available()


def test_a_refused_object_on_an_undeployed_tcp_cc_leaves_it_undeployed(bed):
    a = Hookerd(bed.a, [5201], eager=False).start()
    before = mechs(a)
    one_line_error(ctl(a, "deploy", "tcp-cc", "--object", str(BROKEN_CC)), "the verifier says")
    assert mechs(a) == before and "hk_vegas" not in available()
    assert a.stop() == 0


BAD = [
    (["policy", "add", "8091=tcp-cc:nosuch"],
     "policy add 8091=tcp-cc:nosuch: unknown congestion control 'nosuch': use hk_vegas "
     "(built in), "),
    (["policy", "add", "8091=tcp-cc:hk_vegas,udp"], "tcp-cc stands alone in a rule"),
    (["policy", "add", "8091=tcp-cc"], "mechanism tcp-cc needs its options: tcp-cc:NAME"),
    (["policy", "add", "8091=tcp-cc:much_too_long_name"], "a congestion control's name is 1 to 15"),
    (["policy", "add", "8091=udp:cov=4"], "udp takes no options"),
    (["deploy", "tcp-cc"], "deploy tcp-cc: already deployed (hookerctl mechanisms shows it)"),
    (["deploy", "tcp-cc", "--object", "/nonexistent/cc.bpf.o"],
     "deploy tcp-cc --object /nonexistent/cc.bpf.o: cannot read /nonexistent/cc.bpf.o: "
     "No such file or directory"),
    (["deploy", "tcp-cc", "--object", "/etc/hostname"],
     "/etc/hostname is not a BPF object libbpf can open"),
    (["deploy", "udp", "--object", str(TEST_CC)], "udp takes no BPF object (tcp-cc does)"),
]


@pytest.mark.parametrize("args,want", BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_input_is_one_line_and_changes_nothing(pair, args, want):
    _, a, _ = pair
    before = (mechs(a), ctl(a, "policy", "list", "--json").stdout, available())
    one_line_error(ctl(a, *args), want)
    assert (mechs(a), ctl(a, "policy", "list", "--json").stdout, available()) == before


def test_unknown_algorithm_at_start_is_refused(bed):
    hd = Hookerd(bed.a, ["8080=tcp-cc:nosuch"])
    p = bed.a.run(hd.argv(), timeout=20, check=False, cgroup=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1, p
    assert "--redirect 8080=tcp-cc:nosuch: unknown congestion control 'nosuch'" in lines[0]
    assert "hk_vegas" not in available()


def test_a_killed_hookerd_leaves_no_algorithm_registered(bed):
    """The registrations are BPF links: they end with hookerd's fds, even
    when it cannot clean up (a plain struct_ops map would stay registered)."""
    a = Hookerd(bed.a, ["8080=tcp-cc:hk_vegas"]).start()
    assert "hk_vegas" in available()
    links = subprocess.run(["bpftool", "link", "show"], capture_output=True, text=True,
                           timeout=10).stdout
    assert "struct_ops" in links, links
    a.proc.kill()
    a.proc.wait(timeout=10)
    # A killed hookerd cannot unpin its maps: the test does, whatever follows.
    try:
        wait_for(lambda: "hk_vegas" not in available() and "hk_vegas" not in struct_ops(), 10,
                 "hk_vegas unregistered after SIGKILL")
    finally:
        shutil.rmtree(a.pin_dir, ignore_errors=True)


def test_deploy_undeploy_tcp_cc_and_udplite_while_udp_runs(bed):
    """While a 512 MiB transfer runs on `udp`, tcp-cc (on a) and udplite with
    the kernel's UDP-Lite (on both hosts) are undeployed and deployed again,
    over and over: the transfer stays byte exact, and after the last
    undeploy nothing of them is left: no hk_vegas among the kernel's
    struct_ops or congestion controls, no UDP-Lite socket on hookerd's port.
    (udplite made by BPF: test_udplite_ebpf.py.)"""
    total = 512 << 20
    sink = 8002  # test_stream.transfer's reader port
    a = Hookerd(bed.a, [f"{sink}=udp", "8000=udplite", "8090=tcp-cc:hk_vegas"],
                extra=["--udplite-impl", "kernel"]).start()
    b = Hookerd(bed.b, [f"{sink}=udp", "8000=udplite"], extra=["--udplite-impl", "kernel"]).start()
    result = {}

    def run():
        result["w"], result["r"] = transfer(bed, False, total, timeout=90)

    t = threading.Thread(target=run)
    t.start()
    cycles, deadline = 0, time.monotonic() + 60
    try:
        while t.is_alive() and time.monotonic() < deadline:
            for hd, names in ((a, ("tcp-cc", "udplite")), (b, ("udplite",))):
                for name in names:
                    for verb in ("undeploy", "deploy"):
                        r = ctl(hd, verb, name)
                        assert r.returncode == 0, f"{verb} {name}: {r.stderr}"
            cycles += 1
    finally:
        t.join(100)
    w, r = result["w"], result["r"]
    info = f"writer {w} reader {r} cycles {cycles}"
    assert cycles >= 2, f"the transfer ended before two deploy cycles: {info}"
    assert r["mismatch"] is None and r["received"] == total, info
    assert r["read_end"] == "EOF" and "error" not in w, info
    assert a.counter("moved_active") == 1
    for hd, names in ((a, ("tcp-cc", "udplite")), (b, ("udplite",))):
        for name in names:
            assert ctl(hd, "undeploy", name).returncode == 0
            assert mechs(hd)[name]["state"] == "undeployed"
    wait_for(lambda: "hk_vegas" not in struct_ops(), 10, "hk_vegas unregistered")
    assert "hk_vegas" not in available()
    for h in (bed.a, bed.b):
        socks = h.run(["cat", "/proc/net/udplite", "/proc/net/udplite6"], timeout=10,
                      cgroup=False).stdout.splitlines()
        assert [l for l in socks if ":1B58 " in l] == [], socks  # 7000
    assert a.stop() == 0 and b.stop() == 0
