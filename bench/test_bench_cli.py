"""The bench's front door: bad input gets a clear message and a non-zero exit before
anything is built, and the report renders what it is given (and nothing else)."""
import json
import os
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402


def run_sh(*args):
    return subprocess.run(["bash", str(HERE / "run.sh"), *args], capture_output=True,
                          text=True, timeout=60)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the bench only runs as root")


@needs_root
@pytest.mark.parametrize("args,says", [
    (["build", "quick", "--mechanisms", "tcp,warp"], "unknown mechanism 'warp'"),
    (["build", "quick", "--loss", "150"], "below 100%"),
    (["build", "quick", "--loss", "-1"], "at least 0%"),
    (["build", "quick", "--loss", "lots"], "loss rates are numbers"),
    (["build", "quick", "--runs", "0"], "at least 1"),
    (["build", "quick", "--mechanisms", "hooker:warp"], "unknown mechanism 'hooker:warp'"),
    (["build", "quick", "--mechanisms", "hooker:"], "unknown mechanism 'hooker:'"),
    (["build", "quick", "--mechanisms", ","], "--mechanisms is empty"),
    (["build", "quick", "--parts", "downloads,everything"], "unknown part 'everything'"),
    (["build", "quick", "--parts", "ready", "--save", "x.json"], "add downloads to --parts"),
    (["build", "quick", "--save", "/nonexistent-dir/x.json"], "is not a directory"),
    (["build", "sometimes"], "unknown mode 'sometimes'"),
    (["build"], "usage:"),
])
def test_bad_input_is_refused_clearly(args, says):
    r = run_sh(*args)
    assert r.returncode == 2, r
    assert says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@needs_root
def test_not_root_is_refused():
    # A copy the unprivileged user can read wherever the checkout lives (a
    # clone under a 0700 directory would refuse it with "Permission denied").
    d = Path(tempfile.mkdtemp(prefix="hooker-bench-cli-"))
    try:
        d.chmod(0o755)
        script = d / "run.sh"
        shutil.copy(HERE / "run.sh", script)
        script.chmod(0o755)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "bash", str(script), "build", "quick"],
                           capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(d)
    assert r.returncode == 2, r.stderr
    assert "needs root" in r.stderr


def synthetic_results():
    """A results.json shaped like the suite's, with made-up values: it only checks
    the rendering, and never reaches a committed report."""
    cell = lambda v, s, t, f=(): {"loss_pct": 0.0, "variant": v, "size": s, "bytes": 1,
                                  "times_s": t, "median_s": (sorted(t)[len(t) // 2]
                                                             if t else None),
                                  "failures": list(f)}
    return {"mode": "quick", "date": "d", "duration_s": 1,
            "machine": {"kernel": "k", "cores": 2, "cpu": "c", "memory_gib": 1, "os": "o",
                        "curl": "curl", "iperf3": "iperf3", "kcptun": "kcp",
                        "python": "3", "cc_available": ["cubic"], "cc_default": "cubic"},
            "config": {"losses_pct": [0.0], "runs": 1},
            "hooker": {"available": False, "reason": "hookerd not built"},
            "downloads": [cell("tcp-cubic", "3KB", [0.1]),
                          cell("hooker", "3KB", [], ["curl: exit 28: timed out"])],
            "throughput": [], "table1": {}, "conn_setup": [], "scale": [],
            "not_measured": [{"what": "x", "why": "y"}]}


def test_report_marks_failures_and_the_papers_numbers(tmp_path):
    md = report.write(synthetic_results(), tmp_path).read_text()
    assert "**Hooker not available**: hookerd not built" in md
    assert "**failed**: curl: exit 28: timed out" in md
    assert "| **paper**: Hooker components (Linux 5.0) | 6 s | 20 ms | 400 ns |" in md
    assert "| **paper**: UDP-Lite (Linux 5.0) | 200 ms | 7 ms | N/A |" in md
    assert (tmp_path / "downloads_loss0.png").stat().st_size > 1000
    assert "- x: y" in md


@pytest.mark.parametrize("variant,rule,extra,label", [
    ("hooker", "8001=udp", [], "hooker"),
    ("hooker:udp", "8001=udp", [], "hooker:udp"),
    ("hooker:udplite", "8001=udplite", ["--udplite-impl", "kernel"],
     "hooker:udplite (kernel)"),
    ("hooker:udplite-ebpf", "8001=udplite", ["--udplite-impl", "ebpf"],
     "hooker:udplite (ebpf)"),
    ("hooker:tcp-cc", "8001=tcp-cc:hk_vegas", [], "hooker:tcp-cc (hk_vegas)"),
])
def test_hooker_variants_become_hookerd_rules(variant, rule, extra, label):
    import suite
    a = suite.parse_args(["--build", "b", "--mode", "quick", "--mechanisms", variant])
    assert a.mechs == [variant]

    class Bare:  # what hooker_pair and label read of a Suite
        hookerd = Path("hookerd")
        sys_cc = "cubic"
    pair = suite.Suite.hooker_pair(Bare(), None, variant, 8001)
    assert (pair.port, list(pair.extra)) == (rule, extra)
    assert suite.Suite.label(Bare(), variant) == label
    assert label in report.HOOKER_LABELS


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_both_modes_measure_udplite_by_default(mode):
    import suite
    assert "hooker:udplite" in suite.parse_args(["--build", "b", "--mode", mode]).mechs


def udplite_impls_run(tmp_path):
    import udplite_impls
    rnd = lambda g, c: {"gbps": g, "bytes": int(g * 1e9 / 8 * 5), "cpu_s": c,  # noqa: E731
                        "wall_s": 5.1, "cpu_s_per_gb": round(c / (g * 5 / 8), 3)}
    rounds = [{"loadavg": [1.5, 1, 1], "background_cpu_per_s": 0.1,
               "tcp": rnd(10, 6), "udp": rnd(5, 6), "udplite (kernel)": rnd(1, 8),
               "udplite (ebpf)": {"error": "iperf3: the server is busy"}}]
    return {"kind": "udplite_impls", "title": "", "date": "d",
            "machine": {"kernel": "k", "cores": 2},
            "config": {"streams": 1, "secs": 5, "rounds": 1, "reverse": True,
                       "link": "bare veth"},
            "rounds": rounds, "summary": udplite_impls.summarize(rounds),
            "bpf_ns_per_run": {}}


def test_saved_udplite_impls_render_with_ratios_and_failures(tmp_path):
    c = udplite_impls_run(tmp_path)
    sm = c["summary"]
    assert sm["udp"]["gbps_ratio_to_tcp"]["median"] == 0.5
    assert sm["udplite (kernel)"]["cpu_ratio_to_tcp"]["median"] == pytest.approx(8 / 0.6, 0.01)
    md = "\n".join(report.udplite_impls_section(c, "x.json"))
    assert "| udp | 1 | 5.00 (5.00–5.00) | 0.50 (0.50–0.50) | 1.92 (1.92–1.92) | " \
           "2.00 (2.00–2.00) | 1.18–1.18 |" in md
    assert "| udplite (ebpf) | 0, **1 failed**: iperf3: the server is busy |" in md
    assert "b → a" in md and "load average (1 min) 1.50" in md
    assert "against udplite (kernel)" not in md  # the ebpf run failed: no pair


def test_saved_downloads_render_failures_as_failures():
    c = dict(synthetic_results(), kind="downloads", title="t",
             loadavg=[{"when": "start", "loadavg": [2.0, 1, 1]}])
    c["downloads"].append({"loss_pct": 0.0, "variant": "hooker:udplite (ebpf)", "size": "3KB",
                           "bytes": 1, "times_s": [0.2, 0.3, 0.25], "median_s": 0.25,
                           "failures": []})
    md = "\n".join(report.saved_downloads_section(c, "d.json"))
    assert "250 ms (200 ms–300 ms), 2.50×, n=3" in md
    assert "**failed** (n=0, **1 failed**): curl: exit 28: timed out" in md
    assert "- hooker:udplite (ebpf): Hooker's udplite mechanism made by BPF" in md
    assert "load average (1 min) 2.00" in md
    # the system default (here bbr) not measured: ratios to the plain TCP that was
    c["machine"] = dict(c["machine"], cc_default="bbr")
    md = "\n".join(report.saved_downloads_section(c, "d.json"))
    assert "ratio of medians to tcp-cubic" in md and "2.50×" in md


@pytest.mark.parametrize("args,says", [
    (["--build", "b", "--rounds", "0"], "--rounds 0: at least 1"),
    (["--build", "b", "--secs", "1"], "--secs 1: at least 2"),
    (["--build", "/nonexistent-build"], "hookerd not built yet"),
    (["--build", "b", "--save", "/nonexistent-dir/x.json"], "is not a directory"),
])
def test_udplite_impls_bad_input_is_refused_clearly(args, says):
    r = subprocess.run([sys.executable, str(HERE / "udplite_impls.py"), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_every_download_run_is_a_time_a_failure_or_not_tried(monkeypatch):
    """Once a variant fails a download, that size and the larger ones are not
    tried again; each run still leaves exactly one entry per size."""
    import suite
    import workloads as wl
    calls = []

    def download(bed, url, name, expect, timeout):
        calls.append(name)
        if name == "510KB" or (name == "3KB" and len(calls) > 4):
            raise RuntimeError("curl x: exit 56: reset")
        return 0.1
    monkeypatch.setattr(wl, "download", download)
    monkeypatch.setattr(wl, "set_cc", lambda bed, cc: None)

    class Bare:
        cfg = {"timeout": {"26MB": 60}}
        cc_of = lambda self, v: "cubic"  # noqa: E731
        log = lambda self, msg: None  # noqa: E731

    class Server:
        url = staticmethod(lambda name: name)
    sizes = {"3KB": 1, "510KB": 2, "26MB": 3}
    files = type("F", (), {"digest": {k: None for k in sizes}})()
    times = {("cubic", s): [] for s in sizes}
    errors = {("cubic", s): [] for s in sizes}
    given_up = set()
    for _ in range(5):
        suite.Suite.download_variant(Bare(), None, "cubic", files, Server(), None, sizes,
                                     times, errors, given_up)
    for s in sizes:
        assert len(times[("cubic", s)]) + len(errors[("cubic", s)]) == 5, s
    assert times[("cubic", "3KB")] == [0.1] * 3   # runs 1-3; run 4 fails; run 5 not tried
    assert errors[("cubic", "510KB")][0] == "curl x: exit 56: reset"
    assert errors[("cubic", "26MB")] == [suite.NOT_TRIED] * 5


def test_unmoved_traffic_renders_ratios_per_round_and_program_costs():
    u = {"policy": "5301=udp", "rounds": 2, "iperf_secs": 3, "trips": 2000,
         "runs": {"without": {"gbps": [10.0, 8.0], "rr_us": [20.0, 22.0]},
                  "with": {"gbps": [9.0, 8.0], "rr_us": [22.0, 22.0]}},
         "throughput_ratio": [0.9, 1.0], "rr_rate_ratio": [20 / 22, 1.0],
         "programs": {"hk_ingress_tc": {"runs": 1000, "ns_per_run": 150.4}}}
    md = "\n".join(report.unmoved_section(u))
    assert "| iperf3 Gbit/s, 1 stream, 3 s | 9.000 (8.000–10.000) | 8.500 (8.000–9.000) | " \
           "0.950 (0.900–1.000) |" in md
    assert "rate 0.955 (0.909–1.000)" in md
    assert "hk_ingress_tc 150 ns a run (1000 runs)" in md
    assert "**failed**: hookerd on a exited" in "\n".join(
        report.unmoved_section({"error": "hookerd on a exited"}))
    assert report.unmoved_section(None) == []


def test_request_response_renders_round_medians_and_ratios_to_tcp():
    rows = [{"variant": "tcp-bbr", "median_us": [20.0, 30.0, 25.0], "ratio_to_tcp": [],
             "failures": []},
            {"variant": "hooker", "median_us": [40.0, 45.0], "ratio_to_tcp": [2.0, 1.5],
             "failures": ["hookerd did not move the connection"]}]
    md = "\n".join(report.rr_section(rows, {"rounds": 3, "trips": 2000}))
    assert "| tcp-bbr | 25.0 (20.0–30.0) | — | 0 |" in md
    assert "| hooker | 42.5 (40.0–45.0) | 1.75× (1.50×–2.00×) | " \
           "1: hookerd did not move the connection |" in md
    assert report.rr_section(None, {}) == []


def test_throughput_renders_cpu_per_gb_beside_the_ratio(tmp_path):
    res = synthetic_results()
    res["throughput"] = [
        {"variant": "tcp-bbr", "streams": 1, "gbps": [10.0], "median_gbps": 10.0,
         "ratio_to_tcp": 1.0, "median_cpu_s_per_gb": 0.5, "cpu_ratio_to_tcp": 1.0,
         "failures": []},
        {"variant": "hooker", "streams": 1, "gbps": [5.0], "median_gbps": 5.0,
         "ratio_to_tcp": 0.5, "median_cpu_s_per_gb": 1.25, "cpu_ratio_to_tcp": 2.5,
         "failures": []}]
    md = report.write(res, tmp_path).read_text()
    assert "| hooker | 1 | 5.000 | 0.500 | 1.25 | 2.50 | 1 |" in md


def test_first_connection_is_its_own_figure_beside_the_later_ones():
    """Each block's first connection (after a fresh hookerd pair) is the 'first'
    figure, ratioed to plain TCP's first in the same block; the later ones give
    the median and p99."""
    import suite
    got = {"tcp": [(0, [0.002, 0.001, 0.001]), (1, [0.004, 0.001, 0.002])],
           "hooker:quic": [(0, [0.010, 0.002, 0.002]), (1, [0.008, 0.003, 0.003])]}
    errs = {"tcp": [], "hooker:quic": ["hookerd on b not ready in 10s"]}
    rows = suite.setup_rows(got, errs, 50.0, lambda v: v)
    q = next(r for r in rows if r["variant"] == "hooker:quic")
    assert q["first_ms"] == pytest.approx([10.0, 8.0])
    assert q["first"]["median"] == pytest.approx(9.0)
    assert q["first_ratio_to_tcp"]["median"] == pytest.approx((5 + 2) / 2)
    assert q["n"] == 4 and q["median_ms"] == pytest.approx(2.5)
    md = "\n".join(report.setup_table(rows))
    # firsts 10/2 and 8/4 ms; later medians 2/1 and 3/1.5 ms; p99 of 2, 2, 3, 3 ms
    assert "| 50 ms | hooker:quic | 9.000 (8.000–10.000) ms, 2 pairs | 3.50 (2.00–5.00) | 4 | " \
           "2.500 ms | 3.000 ms | 2.00 (2.00–2.00) | 1: hookerd on b not ready in 10s |" in md
    assert "| 50 ms | tcp | 3.000 (2.000–4.000) ms, 2 pairs | — | 4 |" in md
    # a run from before the first was kept apart: dashes, not zeros
    old = {"variant": "hooker", "n": 1000, "median_ms": 0.3, "p99_ms": 1.0, "failures": []}
    assert "| bare veth | hooker | — | — | 1000 | 0.300 ms | 1.000 ms | — | 0 |" in \
        "\n".join(report.setup_table([old]))
    c = dict(synthetic_results(), kind="setup", title="ttfb", conn_setup=rows,
             loadavg=[{"when": "start", "loadavg": [3.0, 1, 1]}])
    c["config"]["setup"] = {"blocks": 2, "connections": 200, "per_block_with_rtt": 20}
    md = "\n".join(report.saved_setup_section(c, "s.json"))
    assert "### ttfb" in md and "2 blocks per variant" in md and "load average (1 min) 3.00" in md
    assert "- hooker:quic: Hooker's quic mechanism" in md


def test_saved_downloads_render_the_loss_sweep(tmp_path):
    c = dict(synthetic_results(), kind="downloads", title="t", loadavg=[])
    c["config"] = {"losses_pct": [0.0, 5.0], "runs": 2}
    mk = lambda loss, v, t, f=(): {"loss_pct": loss, "variant": v, "size": "510KB",  # noqa
                                   "bytes": 1, "times_s": t, "failures": list(f),
                                   "median_s": sorted(t)[len(t) // 2] if t else None}
    c["downloads"] = [mk(0.0, "tcp-cubic", [0.5, 0.7]), mk(5.0, "tcp-cubic", [3.0, 4.0]),
                      mk(0.0, "hooker:quic", [0.6, 0.6]), mk(5.0, "hooker:quic", [1.0], ["x"]),
                      mk(0.0, "hooker", [0.4, 0.4]),
                      mk(5.0, "hooker", [], ["curl: reset", "not tried: ..."])]
    md = "\n".join(report.saved_downloads_section(c, "q.json", tmp_path))
    assert "| variant | 0% loss | 5% loss |" in md
    assert "| hooker:quic | 600 ms (2/2) | 1.00 s (1/2) |" in md
    assert "| hooker | 400 ms (2/2) | **failed** (1 failed, 1 not run) |" in md
    assert "![loss sweep of q.json](loss_sweep_q.png)" in md
    assert (tmp_path / "loss_sweep_q.png").stat().st_size > 1000


def test_saved_mech_cpu_renders_ratios_per_stream_count():
    import mech_cpu
    import udplite_impls
    rnd = lambda g, c: {"gbps": g, "bytes": int(g * 1e9 / 8 * 5), "cpu_s": c,  # noqa: E731
                        "wall_s": 5.0, "cpu_s_per_gb": round(c / (g * 5 / 8), 3)}
    rounds = [{"loadavg": [2.5, 1, 1], "background_cpu_per_s": 0.2,
               "tcp -P1": rnd(10, 8), "quic -P1": rnd(2, 8),
               "tcp -P4": rnd(8, 10), "quic -P4": {"error": "hookerd on a exited"}}]
    names = ["tcp -P1", "quic -P1", "tcp -P4", "quic -P4"]
    sm = udplite_impls.summarize(rounds, names, mech_cpu.base_of)
    assert sm["quic -P1"]["gbps_ratio_to_tcp"]["median"] == 0.2
    assert sm["quic -P1"]["cpu_ratio_to_tcp"]["median"] == pytest.approx(5.0, 0.01)
    c = {"kind": "mech_cpu", "title": "", "date": "d", "machine": {"kernel": "k", "cores": 2},
         "config": {"variants": ["tcp", "quic"], "streams": [1, 4], "secs": 5, "rounds": 1,
                    "reverse": False, "link": "bare veth"},
         "rounds": rounds, "summary": sm}
    md = "\n".join(report.mech_cpu_section(c, "m.json"))
    assert "| quic | 1 | 1 | 2.00 (2.00–2.00) | 0.20 (0.20–0.20) | 6.40 (6.40–6.40) | " \
           "5.00 (5.00–5.00) | 1.60–1.60 |" in md
    assert "| quic | 4 | 0, **1 failed**: hookerd on a exited |" in md
    assert "| tcp | 4 | 1 | 8.00 (8.00–8.00) | 1 |" in md
    assert "load average (1 min) 2.50" in md and "-P 1 and 4" in md


@pytest.mark.parametrize("args,says", [
    (["--build", "b", "--variants", "tcp,warp"], "--variants 'warp': choose from tcp, udp, quic"),
    (["--build", "b", "--streams", "0"], "--streams 0: from 1 to 128"),
    (["--build", "b", "--streams", "two"], "--streams 'two': not a valid value"),
    (["--build", "b", "--variants", ","], "--variants is empty"),
    (["--build", "b", "--rounds", "0"], "--rounds 0: at least 1"),
    (["--build", "b", "--secs", "1"], "--secs 1: at least 2"),
    (["--build", "/nonexistent-build"], "hookerd not built yet"),
    (["--build", "b", "--save", "/nonexistent-dir/x.json"], "is not a directory"),
])
def test_mech_cpu_bad_input_is_refused_clearly(args, says):
    r = subprocess.run([sys.executable, str(HERE / "mech_cpu.py"), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@needs_root
@pytest.mark.parametrize("args,says", [
    (["build", "quick", "--setup-blocks", "1"], "--setup-blocks 1: at least 2"),
    (["build", "quick", "--setup-rtt", "fast"], "RTTs are numbers in ms"),
    (["build", "quick", "--setup-rtt", "0,5000"], "an RTT from 0 to 1000 ms"),
])
def test_setup_flags_are_checked(args, says):
    r = run_sh(*args)
    assert r.returncode == 2, r
    assert says in r.stderr and "Traceback" not in r.stderr


def floor_binary(name="hooker-floor-relay"):
    build = os.environ.get("HOOKER_BUILD")
    p = Path(build or "build") / "bench" / name
    if not p.exists():
        pytest.skip(f"{p} not built (make build)")
    return p


@pytest.mark.parametrize("args,says", [
    ([], "no role given"),
    (["near", "9100", "10.0.0.2"], "wrong arguments for role 'near'"),
    (["far", "9101", "0"], "not a port (1-65535): '0'"),
    (["far", "9101", "http"], "not a port (1-65535): 'http'"),
    (["near", "9100", "b.example", "9101"], "not an IPv4 address: b.example"),
])
def test_floor_relay_bad_input_is_refused_clearly(args, says):
    r = subprocess.run([str(floor_binary()), *args], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2, r
    assert says in r.stderr and "usage:" in r.stderr, r.stderr


@needs_root
@pytest.mark.parametrize("floor", ["floor:udp", "floor:relay"])
def test_floors_carry_every_round_trip(floor):
    """The floor variants' round trips cross between the hosts, byte for byte (the
    client exits on a wrong echo), and leave no process behind."""
    import suite
    import testbed
    from types import SimpleNamespace
    me = SimpleNamespace(a=SimpleNamespace(build=floor_binary().parent.parent))
    with testbed.TwoHosts() as bed:
        us = suite.Suite.floor_trips(me, bed, floor, 50)
        assert len(us) == 50 and all(t > 0 for t in us), us
        left = [p for p in bed.processes() if p.poll() is None]
        assert not left, [p.args for p in left]


@pytest.mark.parametrize("args,says", [
    ([], "no role given"),
    (["send", "10.0.0.2", "9101"], "wrong arguments for role 'send'"),
    (["send", "10.0.0.2", "9101", "0"], "not a number of seconds (1-3600): '0'"),
    (["send", "b.example", "9101", "3"], "not an IPv4 address: b.example"),
    (["recv", "70000"], "not a port (1-65535): '70000'"),
    (["near", "9100", "10.0.0.2", "udp"], "not a port (1-65535): 'udp'"),
    (["far", "9101"], "wrong arguments for role 'far'"),
])
def test_floor_udp_bad_input_is_refused_clearly(args, says):
    r = subprocess.run([str(floor_binary("hooker-floor-udp")), *args], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2, r
    assert says in r.stderr and "usage:" in r.stderr, r.stderr


@needs_root
@pytest.mark.parametrize("kind", ["udp", "relay"])
def test_throughput_floors_deliver_what_was_sent(kind):
    """A throughput floor's bytes cross between the hosts, every one (floor_bulk
    refuses a run whose ends count differently), at a rate and CPU per GB that
    mean something, and leave no process behind."""
    import testbed
    import workloads as wl
    build = floor_binary("hooker-floor-udp").parent.parent
    with testbed.TwoHosts() as bed:
        cpu = {}
        gbps = wl.floor_bulk(bed, build, kind, 1, 9101, 9100, cpu)
        assert gbps > 0.1 and cpu["cpu_s_per_gb"] > 0, (gbps, cpu)
        left = [p for p in bed.processes() if p.poll() is None]
        assert not left, [p.args for p in left]


def test_floor_attach_names_a_missing_interface():
    r = subprocess.run([str(floor_binary("hooker-floor-attach")), "nosuch0"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, r
    assert "no interface 'nosuch0' here" in r.stderr and "usage:" in r.stderr, r.stderr


@needs_root
def test_start_up_floor_is_timed_and_leaves_no_program():
    """The suite's floor of start-up times an empty program's tcx link on the bed's
    interface, and each run's program is gone once the tool exits."""
    import suite
    import testbed
    from types import SimpleNamespace
    from hookerd import wait_for  # tests/, on the path since suite's import
    build = floor_binary("hooker-floor-attach").parent.parent
    me = SimpleNamespace(a=SimpleNamespace(build=build), cfg={"ready_runs": 2},
                         res={"table1": {}}, note=None)

    def floor_progs():
        r = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                           timeout=30, check=True)
        return [p for p in json.loads(r.stdout) if p.get("name") == "hk_floor"]
    with testbed.TwoHosts() as bed:
        suite.Suite.tcx_link_floor(me, bed)
    f = me.res["table1"]["floor_ms"]
    assert len(f["tcx_link_ms"]["runs"]) == 2 and min(f["tcx_link_ms"]["runs"]) > 0, f
    assert f["load_ms"]["median"] > 0, f
    wait_for(lambda: not floor_progs(), 10, "the floor's programs to be freed")


def test_comparison_renders_cpu_per_setup_when_measured():
    """compare_builds.py's table: the CPU per set-up row when the run measured
    it, and none for a comparison saved before it was."""
    fig = {"median": 1.0, "min": 0.9, "max": 1.1}
    old = {f: fig for f in ("iperf3_1", "iperf3_4", "setup_ms", "rr_us")}
    new = dict(old, setup_cpu_us={"median": 3.79, "min": 3.06, "max": 4.38})
    md = "\n".join(report.comparison_table({"ratios": {"before": new, "after": new}}))
    assert "| CPU per set-up, whole machine (lower is better) | 3.79 (3.06–4.38) |" in md
    md = "\n".join(report.comparison_table({"ratios": {"before": old, "after": old}}))
    assert "CPU per set-up" not in md and "connection set-up" in md
