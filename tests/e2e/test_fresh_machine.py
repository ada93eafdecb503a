"""hookerd on a machine where nothing mounted a BPF filesystem (issue 8): it
mounts one itself and works, undoes a mount it made on the user's own
--pin-dir, and when it may not mount, says in one line which command to run.

A fresh machine is made without touching the test's own mount namespace: each
such hookerd runs in a private mount namespace in which every BPF filesystem at
/sys/fs/bpf is unmounted, which leaves what a machine that never mounted one has
there (sysfs's empty directory). The namespace ends with the process, and with it
any mount made inside; /run (control sockets) and /tmp are shared with the test.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

from apps import fetch, http_server, make_files, url
from hookerd import Hookerd
from test_lifecycle import NOTHING, _bpftool, attached
from testbed import cgroup2_mount, require_root

BPF_FS_MAGIC = "cafe4a11"  # statfs f_type of a BPF filesystem (linux/magic.h)
MOUNT_HINT = "mount -t bpf bpf /sys/fs/bpf"
PINS = ["counters", "socks", "tokens"]

# Prefix of an argv: run it in a new mount namespace whose /sys/fs/bpf holds no
# BPF filesystem. Bounded: a stack of more than 16 mounts there is an error.
_HIDE = r'''
i=0
while [ "$(stat -f -c %t /sys/fs/bpf)" = "$0" ]; do
  i=$((i + 1))
  [ $i -le 16 ] && umount -l /sys/fs/bpf || { echo "hide-bpffs: /sys/fs/bpf stays a BPF filesystem" >&2; exit 125; }
done
exec "$@"
'''
HIDE_BPFFS = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _HIDE,
              BPF_FS_MAGIC]
NO_SYS_ADMIN = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]


class FreshHookerd(Hookerd):
    """A Hookerd (tests/hookerd.py) that sees no BPF filesystem at start."""

    def argv(self):
        return HIDE_BPFFS + super().argv()

    def mounts(self):
        return mounts(self.proc.pid)

    def seen_by_it(self, path) -> Path:
        """`path` as this hookerd's mount namespace resolves it."""
        return Path(f"/proc/{self.proc.pid}/root") / str(path).lstrip("/")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts(pid="self") -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount that process sees."""
    out = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        out.append((_unescape(left.split()[4]), right.split()[0]))
    return out


def mounts_at_or_under(path) -> list[tuple[str, str]]:
    p = str(path).rstrip("/")
    return [(m, t) for m, t in mounts() if m == p or m.startswith(p + "/")]


def _ingress_links() -> dict[int, str]:
    names = {p["id"]: p.get("name") for p in _bpftool("prog", "show")}
    return {l["id"]: names.get(l.get("prog_id")) for l in _bpftool("link", "show")
            if str(names.get(l.get("prog_id"), "")).startswith("hk_ingress")}


def _held_links() -> set[int]:
    """Ids of the BPF links a live process holds an fd of."""
    held = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf_link":
                    continue
                m = re.search(r"^link_id:\s*(\d+)", Path(f"/proc/{pid}/fdinfo/{fd}").read_text(),
                              re.M)
            except OSError:  # the process or fd went away meanwhile
                continue
            if m:
                held.add(int(m.group(1)))
    return held


def left_behind(bed, host, hd) -> dict:
    """test_lifecycle's attached(), but its machine-wide list of ingress links
    narrowed to those no live process holds: other test beds on the machine
    have hookerds of their own, while a link of an exited hookerd would only
    survive pinned, held by nobody. A link counts only if it was there both
    before and after the scan of the processes' fds."""
    before = _ingress_links()
    got = attached(bed, host, hd)
    held = _held_links()
    after = _ingress_links()
    got["ingress"] = sorted(name for lid, name in before.items()
                            if lid in after and lid not in held)
    return got


def test_hookerd_mounts_a_bpffs_where_none_is_and_moves_a_transfer(bed, tmp_path):
    outside = mounts_at_or_under("/sys/fs/bpf")
    a = FreshHookerd(bed.a, [8000]).start()
    b = FreshHookerd(bed.b, [8000]).start()
    for hd in (a, b):
        assert "hookerd: mounted a BPF filesystem at /sys/fs/bpf (there was none)" \
            in hd.stderr().splitlines(), hd.stderr()
        own = [t for m, t in hd.mounts() if m == "/sys/fs/bpf"]
        assert own[-1] == "bpf", own
        assert sorted(p.name for p in hd.seen_by_it(hd.pin_dir).iterdir()) == PINS
    want = make_files(tmp_path, {"f": 510_000})["f"]
    http_server(bed.b, tmp_path, 8000)  # after hookerd: its listener negotiates
    with bed.a.capture("tcp or udp") as cap:
        assert fetch(bed.a, url(bed.b, 8000, "f"), tmp_path / "got") == want
    assert cap.tcp_payload_bytes(8000) == 0
    assert cap.udp_payload_bytes(a.udp_port) >= 510_000
    assert a.counter("moved_active") == 1 and b.counter("moved_passive") == 1
    assert a.stop() == 0, a.stderr()
    assert b.stop() == 0, b.stderr()
    for host, hd in ((bed.a, a), (bed.b, b)):
        assert left_behind(bed, host, hd) == NOTHING
    # The mounts were made in hookerd's namespaces, never in the test's.
    assert mounts_at_or_under("/sys/fs/bpf") == outside


@pytest.mark.parametrize("exists", [False, True], ids=["new_dir", "existing_dir"])
def test_pin_dir_off_bpffs_is_mounted_and_unmounted_at_exit(bed, tmp_path, exists):
    pin_dir = tmp_path / "pins"
    if exists:
        pin_dir.mkdir()
    assert not mounts_at_or_under(tmp_path)
    hd = Hookerd(bed.a, [8000])
    hd.pin_dir = str(pin_dir)
    try:
        hd.start()
        assert f"hookerd: mounted a BPF filesystem at {pin_dir} (there was none)" \
            in hd.stderr().splitlines(), hd.stderr()
        assert mounts_at_or_under(tmp_path) == [(str(pin_dir), "bpf")]
        # A new BPF filesystem holds the kernel's maps.debug and progs.debug
        # (CONFIG_BPF_PRELOAD) beside hookerd's pins.
        pins = attached(bed, bed.a, hd)["pins"]
        assert [p for p in pins if not p.endswith(".debug")] == PINS, pins
        assert hd.stop() == 0, hd.stderr()
        assert mounts_at_or_under(tmp_path) == []
        assert not pin_dir.exists()
        assert left_behind(bed, bed.a, hd) == NOTHING
    finally:
        hd.stop()
        # A failed run must not leave its mount to the next one: bounded, the
        # mount table only shrinks here.
        for point, _ in reversed(mounts_at_or_under(tmp_path)):
            subprocess.run(["umount", "-l", point], timeout=10)


@pytest.mark.parametrize("where", ["default", "own_dir"])
def test_without_cap_sys_admin_one_line_names_the_mount_command(bed, tmp_path, where):
    hd = Hookerd(bed.a, [8000])
    hint = MOUNT_HINT
    if where == "own_dir":
        hd.pin_dir = str(tmp_path / "pins")
        hint = f"mount -t bpf bpf {hd.pin_dir}"
    argv = HIDE_BPFFS + NO_SYS_ADMIN + [str(x) for x in hd.argv()]
    r = bed.a.run(argv, timeout=20, check=False, cgroup=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("hookerd: error: ") and hint in lines[0], r.stderr
    assert "ready" not in r.stdout
    assert left_behind(bed, bed.a, hd) == NOTHING
    if where == "own_dir":  # it created the directory to mount on: gone again
        assert not Path(hd.pin_dir).exists()
        assert not mounts_at_or_under(tmp_path)


# ---------------------------------------------------------------- scripts/check-machine.sh

CHECK = Path(__file__).resolve().parents[2] / "scripts" / "check-machine.sh"


@pytest.fixture
def root():
    reason = require_root()
    if reason:
        pytest.skip(reason)


def _check(argv=(), pre=(), env=None, input=None, **kw):
    r = subprocess.run([*pre, "bash", *([str(CHECK)] if input is None else ["-s"]), *argv],
                       capture_output=True, text=True, timeout=60, env=env, input=input, **kw)
    lines = r.stderr.splitlines()
    assert all(l.startswith("check-machine: ") for l in lines), r.stderr
    return r, lines


def test_checker_passes_here_and_runs_the_command_with_room_for_files(root):
    # A login shell's usual 1024 open files is raised for the command.
    r, lines = _check(["sh", "-c", "ulimit -Sn"], pre=["prlimit", "--nofile=1024:"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "unlimited" or int(r.stdout) >= 4096, r.stdout
    assert not [l for l in lines if "missing" in l or "lacks" in l], r.stderr


def test_checker_mounts_cgroup2_where_none_is(root):
    """In a mount namespace of its own without cgroup v2 (nor a BPF filesystem):
    the checker mounts cgroup v2 where systemd would, says so, and goes on."""
    outside = [m for m in mounts() if m[1] == "cgroup2"]
    unmount = (f'umount -l {cgroup2_mount()} && '
               f'! grep -q " cgroup2 " /proc/self/mounts && exec "$@"')
    r, lines = _check(["cat", "/proc/self/mounts"],
                      pre=HIDE_BPFFS + ["sh", "-c", unmount, "sh"])
    assert r.returncode == 0, r.stderr
    said = [l for l in lines if "mounted cgroup v2" in l]
    assert len(said) == 1 and said[0].endswith("(there was none)"), r.stderr
    at = said[0].split(" at ", 1)[1].split()[0]
    assert at in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"), said
    assert [l.split()[1] for l in r.stdout.splitlines() if l.split()[2] == "cgroup2"] == [at]
    assert [m for m in mounts() if m[1] == "cgroup2"] == outside  # only in that namespace


def test_checker_names_the_package_of_a_missing_tool(root, tmp_path):
    """PATH made of every program of /usr/bin but tshark."""
    bins = tmp_path / "bin"
    bins.mkdir()
    for d in ("/usr/bin", "/bin"):
        for name in os.listdir(d):
            if name != "tshark" and not (bins / name).exists():
                (bins / name).symlink_to(Path(d) / name)
    r, lines = _check(env={"PATH": str(bins)})
    assert r.returncode == 1
    assert lines == ["check-machine: tshark is missing: make deps (package tshark)"], r.stderr


def test_checker_refuses_without_root_in_one_line(root):
    r, lines = _check(pre=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
                      input=CHECK.read_text(), cwd="/")
    assert r.returncode == 1
    assert len(lines) == 1 and "needs root" in lines[0] and "sudo" in lines[0], r.stderr
