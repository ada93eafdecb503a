"""hookerd's start and stop: clean detach on SIGTERM, and every bad input gets
one clear line, a non-zero exit, and leaves nothing attached."""
import json
import socket
import subprocess

import pytest

from hookerd import HOOKERD, Hookerd


def _bpftool(*args) -> list:
    r = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=10)
    return json.loads(r.stdout.strip() or "[]")


def ingress_links() -> list:
    """Hooker's ingress programs held by a BPF link (XDP or tcx), anywhere:
    links are kernel objects, not per network namespace (bpftool 7.1 shows a
    tcx link only as type 11)."""
    names = {p["id"]: p.get("name") for p in _bpftool("prog", "show")}
    return [names.get(l.get("prog_id")) for l in _bpftool("link", "show")
            if str(names.get(l.get("prog_id"), "")).startswith("hk_ingress")]


def attached(bed, host, hd: Hookerd) -> dict:
    """What of Hooker the kernel and the filesystem show for this host."""
    cg = json.loads(subprocess.run(["bpftool", "-j", "cgroup", "show", str(host.cgroup)],
                                   capture_output=True, text=True, timeout=10).stdout.strip() or "[]")
    rules = host.run(["iptables", "-w", "-S", "INPUT"], timeout=10, cgroup=False).stdout
    rules6 = host.run(["ip6tables", "-w", "-S", "INPUT"], timeout=10, cgroup=False).stdout
    from pathlib import Path
    return {
        "cgroup_progs": cg,
        "ingress": ingress_links(),
        "nfqueue_rules": [r for r in (rules + rules6).splitlines() if "hooker" in r],
        "pins": sorted(p.name for p in Path(hd.pin_dir).glob("*")) if Path(hd.pin_dir).exists() else [],
        "pin_dir": Path(hd.pin_dir).exists(),
        "control": Path(hd.control).exists(),
    }


NOTHING = {"cgroup_progs": [], "ingress": [], "nfqueue_rules": [], "pins": [], "pin_dir": False,
           "control": False}


def test_sigterm_detaches_everything(bed):
    hd = Hookerd(bed.a, [8000]).start()
    live = attached(bed, bed.a, hd)
    assert [p["attach_type"] for p in live["cgroup_progs"]] == ["cgroup_sock_ops"]
    # On a veth, `--xdp-mode auto` runs the ingress checks as a tcx program.
    assert live["ingress"] == ["hk_ingress_tc"], live
    assert live["nfqueue_rules"] and live["pins"] and live["control"]
    assert hd.stop() == 0, hd.stderr()
    assert attached(bed, bed.a, hd) == NOTHING


def _run(bed, argv, timeout=20, pre=()):
    return bed.a.run(list(pre) + [str(HOOKERD)] + argv, timeout=timeout, check=False,
                     cgroup=False)


def _base(bed, hd):
    return ["--cgroup", str(bed.a.cgroup), "--iface", bed.a.iface, "--control", hd.control,
            "--pin-dir", hd.pin_dir]


@pytest.mark.parametrize("case", [
    "unknown_flag", "port_out_of_range", "redirect_out_of_range", "no_redirect",
    "cgroup_missing", "iface_missing", "not_root", "no_cgroup2", "udp_port_in_use",
    "max_conns_over_open_files", "redirect_unknown_mech", "redirect_quic_without_certificates",
    "redirect_duplicate",
])
def test_bad_input_is_refused_clearly(bed, case):
    hd = Hookerd(bed.a, [8000])
    base = _base(bed, hd)
    pre, extra, want, rc = (), [], "", 2
    if case == "unknown_flag":
        argv, want = base + ["--redirect", "8000", "--frobnicate"], "--frobnicate"
    elif case == "port_out_of_range":
        argv, want = base + ["--redirect", "8000", "--port", "70000"], "--port 70000 is out of range"
    elif case == "redirect_out_of_range":
        argv, want = base + ["--redirect", "0"], "--redirect 0: port out of range"
    elif case == "redirect_unknown_mech":
        argv, want = base + ["--redirect", "8000=tcp"], "--redirect 8000=tcp: unknown mechanism 'tcp'"
    elif case == "redirect_quic_without_certificates":
        argv = base + ["--redirect", "8000=udp,quic"]
        want = ("--redirect 8000=udp,quic: quic needs hookerd's certificate: start it with "
                "--quic-cert FILE --quic-key FILE --quic-ca FILE (PEM)")
    elif case == "redirect_duplicate":
        argv = base + ["--redirect", "8000", "--redirect", "8000=udp"]
        want = "--redirect 8000=udp: port 8000 already has a rule (8000=udp)"
    elif case == "no_redirect":
        argv, want = base, "--redirect"
    elif case == "cgroup_missing":
        argv = ["--cgroup", str(bed.a.cgroup) + "-nope"] + base[2:] + ["--redirect", "8000"]
        want = "does not exist"
    elif case == "iface_missing":
        argv = base[:2] + ["--iface", "nope0"] + base[4:] + ["--redirect", "8000"]
        want, rc = "no interface 'nope0'", 1
    elif case == "not_root":
        pre = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        argv, want = base + ["--redirect", "8000"], "must run as root"
    elif case == "no_cgroup2":
        # A private mount namespace in which the cgroup v2 mount is gone.
        from testbed import cgroup2_mount
        pre = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'umount -l {cgroup2_mount()} && exec "$@"', "sh"]
        argv, want = base + ["--redirect", "8000"], "no cgroup v2 is mounted"
    elif case == "max_conns_over_open_files":
        # Two slot sockets a connection: 4096 of them need more than 1024 files.
        pre = ["prlimit", "--nofile=1024:1024", "--"]
        argv = base + ["--redirect", "8000", "--max-conns", "4096"]
        want = "--max-conns 4096 needs 8448 open files, the limit is 1024"
    elif case == "udp_port_in_use":
        s = bed.a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::", 7000))
        argv, want, rc = base + ["--redirect", "8000", "--port", "7000"], "UDP port 7000 is in use", 1
    r = _run(bed, argv, pre=pre)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == rc, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("hookerd: error: ") and want in lines[0], r.stderr
    assert "ready" not in r.stdout
    assert attached(bed, bed.a, hd) == NOTHING


def test_failure_after_attaching_leaves_nothing_behind(bed):
    """A second hookerd on the same interface loads and attaches its programs,
    then fails at XDP (the interface has one): it must undo all of it. (XDP
    takes one program per interface; tcx, auto's choice on veth, takes many.)"""
    generic = ["--xdp-mode", "generic"]
    first = Hookerd(bed.a, [8000], extra=generic).start()
    before = attached(bed, bed.a, first)
    assert before["ingress"] == ["hk_ingress"], before
    second = Hookerd(bed.a, [8000], udp_port=7001, extra=generic)
    second.control = first.control + "-2"
    second.pin_dir = first.pin_dir + "-2"
    r = _run(bed, second.argv()[1:])
    assert r.returncode == 1 and "attach XDP" in r.stderr, r.stderr
    assert attached(bed, bed.a, first) == before
    left = attached(bed, bed.a, second)
    assert left["pins"] == [] and not left["pin_dir"] and not left["control"], left
    assert first.stop() == 0
    assert attached(bed, bed.a, first) == NOTHING
