"""Issue 9's deployment on the fly: a mechanism is deployed when the first
connection needs it (or at start with --eager, or by `hookerctl deploy`),
`hookerctl mechanisms` says what was deployed, when and at what cost, and
undeploying one that live connections use is refused unless forced, which
resets exactly those connections."""
import json
import subprocess

import pytest

from apps import PY, fetch, http_server, make_files, url
from hookerd import HOOKERCTL, Hookerd, wait_for

# Holds one connection open after a first exchange. On "close" from stdin
# it closes it; on "wait" it waits for the connection's end and says how it
# ended: "reset", "eof" or "timeout". Server (argv: port) or client (argv:
# host port).
HOLDER = r"""
import socket, sys
if len(sys.argv) == 2:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(10)
    print("listening", flush=True)
    c, _ = s.accept()
    c.settimeout(10)
    assert c.recv(5) == b"hello"
    c.sendall(b"world")
else:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    c.sendall(b"hello")
    assert c.recv(5) == b"world"
print("up", flush=True)
if sys.stdin.readline().strip() == "close":
    c.close()
    sys.exit(0)
c.settimeout(10)
try:
    print("eof" if c.recv(100) == b"" else "data", flush=True)
except ConnectionResetError:
    print("reset", flush=True)
except socket.timeout:
    print("timeout", flush=True)
"""


def ctl(hd, *args):
    return subprocess.run([HOOKERCTL, "--control", hd.control, *args], capture_output=True,
                          text=True, timeout=10)


def mechs(hd) -> dict:
    r = ctl(hd, "mechanisms", "--json")
    assert r.returncode == 0, r.stderr
    return {m["name"]: m for m in json.loads(r.stdout)["mechanisms"]}


def moved_fetch(bed, tmp_path, name, sums) -> int:
    """Fetches `name` from b's port 8000; returns the TCP payload bytes the
    wire carried on 8000 (0: moved)."""
    with bed.a.capture("tcp or udp") as cap:
        assert fetch(bed.a, url(bed.b, 8000, name), tmp_path / (name + ".got")) == sums[name]
    return cap.tcp_payload_bytes(8000)


def test_first_need_deploys_on_each_host(bed, tmp_path):
    a = Hookerd(bed.a, [8000], eager=False).start()
    b = Hookerd(bed.b, [8000], eager=False).start()
    for hd in (a, b):
        m = mechs(hd)["udp"]
        assert (m["state"], m["deployed"], m["deploys"], m["loaded"]) == \
            ("not deployed", False, 0, [])
    sums = make_files(tmp_path, {"f": 510_000})
    http_server(bed.b, tmp_path, 8000)
    # The first connection finds udp deployed nowhere: it stays TCP, and
    # deploys it on the client's host; the second deploys it on the
    # server's; the third moves.
    assert moved_fetch(bed, tmp_path, "f", sums) >= 510_000
    wait_for(lambda: mechs(a)["udp"]["deployed"], 10, "udp deployed on the client's host")
    assert a.counter("mech_not_deployed") == 1
    assert moved_fetch(bed, tmp_path, "f", sums) >= 510_000
    wait_for(lambda: mechs(b)["udp"]["deployed"], 10, "udp deployed on the server's host")
    assert b.counter("mech_not_deployed") == 1 and a.counter("peer_refused_mech") == 1
    assert moved_fetch(bed, tmp_path, "f", sums) == 0
    assert a.counter("moved_active") == 1 and b.counter("moved_passive") == 1
    for hd in (a, b):
        m = mechs(hd)["udp"]
        assert m["state"] == "deployed" and m["deploys"] == 1
        assert m["trigger"].startswith("first needed by ")
        assert 0 < m["load_ms"] < 1000
        assert m["loaded"] == ["UDP socket on port 7000 (dual-stack, GSO and GRO)"]
        assert m["deployed_at"].endswith("Z")
        assert "deployed udp in " in hd.stderr()
    assert a.stop() == 0 and b.stop() == 0


@pytest.fixture
def eager(bed):
    a = Hookerd(bed.a, [5201, "5203=udplite"]).start()
    b = Hookerd(bed.b, [5201, "5203=udplite"]).start()
    yield bed, a, b
    assert a.stop() == 0, a.stderr()
    assert b.stop() == 0, b.stderr()


def hold(bed, port):
    """A held connection from a to b on `port`: (server, client) processes."""
    srv = bed.b.popen([PY, "-c", HOLDER, str(port)], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "listening"
    cli = bed.a.popen([PY, "-c", HOLDER, bed.b.ip4, str(port)], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, text=True)
    assert cli.stdout.readline().strip() == "up" and srv.stdout.readline().strip() == "up"
    return srv, cli


def ending(p) -> str:
    p.stdin.write("wait\n")
    p.stdin.flush()
    how = p.stdout.readline().strip()
    p.wait(timeout=15)
    return how


def closed_cleanly(srv, cli) -> bool:
    """The client closes; the server must see the end of the stream."""
    cli.stdin.write("close\n")
    cli.stdin.flush()
    return cli.wait(timeout=15) == 0 and ending(srv) == "eof"


def test_eager_deploys_at_start(eager):
    _, a, _ = eager
    m = mechs(a)["udp"]
    listed = json.loads(ctl(a, "policy", "list", "--json").stdout)["mechanisms"]
    assert {x["name"]: x for x in listed}["udp"] == m
    assert m["state"] == "deployed" and m["trigger"] == "at start (--eager)"
    assert m["connections"] == 0 and m["load_ms"] > 0
    assert mechs(a)["udplite"]["state"] == "deployed"
    text = ctl(a, "mechanisms")
    assert text.returncode == 0
    assert text.stdout.splitlines()[1].split()[:3] == ["udp", "deployed", "0"]


def test_undeploy_refused_in_use_then_forced_resets_exactly_its_connections(eager, tmp_path):
    bed, a, b = eager
    udp = hold(bed, 5201)
    lite = hold(bed, 5203)
    plain = hold(bed, 5202)  # outside the policy: plain TCP
    assert a.counter("moved_active") == 2
    assert mechs(a)["udp"]["connections"] == 1 and mechs(a)["udplite"]["connections"] == 1

    r = ctl(a, "undeploy", "udplite")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r
    assert "undeploy udplite: 1 connection(s) use it (" in r.stderr
    assert f"{bed.b.ip4}:5203" in r.stderr and "--force resets them" in r.stderr
    assert mechs(a)["udplite"]["state"] == "deployed"

    r = ctl(a, "undeploy", "udplite", "--force")
    assert r.returncode == 0, r
    assert r.stdout.strip() == "undeployed udplite (1 connection(s) reset)", r
    # Both applications of the udplite connection see ECONNRESET; the udp
    # and the plain one are untouched and end as their applications end them.
    lite_srv, lite_cli = lite
    assert ending(lite_cli) == "reset" and ending(lite_srv) == "reset"
    assert closed_cleanly(*udp) and closed_cleanly(*plain)
    m = mechs(a)["udplite"]
    assert (m["state"], m["connections"], m["loaded"]) == ("undeployed", 0, [])
    assert mechs(a)["udp"]["state"] == "deployed"

    # Undeployed stays undeployed: new connections on its rule stay TCP and
    # work, and do not deploy it again.
    sums = make_files(tmp_path, {"f": 510_000})
    http_server(bed.b, tmp_path, 5301)
    r = ctl(a, "policy", "add", "5301=udplite")
    assert r.returncode == 0 and ctl(b, "policy", "add", "5301=udplite").returncode == 0
    assert "warning: udplite is undeployed: connections on this rule stay TCP until " \
        "hookerctl deploy udplite" in r.stderr
    with bed.a.capture("tcp or udp or ip proto 136") as cap:
        assert fetch(bed.a, url(bed.b, 5301, "f"), tmp_path / "g1") == sums["f"]
    assert cap.tcp_payload_bytes(5301) >= 510_000
    assert a.counter("mech_not_deployed") >= 1
    assert mechs(a)["udplite"]["state"] == "undeployed"

    # Deployed again by hand: the next connection moves.
    r = ctl(a, "deploy", "udplite")
    assert r.returncode == 0 and r.stdout.strip() == "udplite deployed", r
    with bed.a.capture("tcp or udp or ip proto 136") as cap:
        assert fetch(bed.a, url(bed.b, 5301, "f"), tmp_path / "g2") == sums["f"]
    assert cap.tcp_payload_bytes(5301) == 0
    m = mechs(a)["udplite"]
    assert m["deploys"] == 2 and m["trigger"] == "hookerctl deploy"


BAD = [
    (["deploy", "frob"], "deploy frob: unknown mechanism: use udp, udplite"),
    (["undeploy", "tcp"], "undeploy tcp: unknown mechanism: use udp, udplite"),
    (["deploy", "udp"], "deploy udp: already deployed (hookerctl mechanisms shows it)"),
]


@pytest.mark.parametrize("args,want", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_deploy_input_changes_nothing(eager, args, want):
    _, a, _ = eager
    before = mechs(a)
    r = ctl(a, *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and want in lines[0], r
    assert mechs(a) == before


@pytest.mark.parametrize("line", [b"deploy\n", b"undeploy\n", b"undeploy udp --frob\n",
                                  b"mechanisms all\n", b"deploy udp udp\n"])
def test_malformed_deploy_requests_are_refused(eager, line):
    _, a, _ = eager
    before = mechs(a)
    answer = a.raw_request(line)
    assert list(answer) == ["error"] and "\n" not in answer["error"], answer
    assert mechs(a) == before


def test_hookerctl_deploy_usage_errors_exit_2(eager):
    _, a, _ = eager
    for args in (["deploy"], ["undeploy"], ["undeploy", "udp", "--frob"], ["mechanisms", "x"]):
        r = ctl(a, *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r)
