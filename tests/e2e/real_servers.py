"""Real servers from Debian for the end-to-end tests (test_real_servers.py):
nginx, redis-server and the rsync daemon, each run in the foreground inside a
test-bed host (its netns and cgroup, tracked by the bed, so teardown ends it)
with a configuration written into a directory of the test's, and waited for
with a bounded connect probe, never a fixed sleep."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

READY_TIMEOUT = 10.0


def wait_accepting(host, port: int, proc: subprocess.Popen, what: str,
                   timeout=READY_TIMEOUT):
    """Connects to 127.0.0.1:port inside `host` until it succeeds.

    The probe comes from this process, outside the host's cgroup, over the
    host's loopback: it never crosses the link, carries no byte, and is no
    moved connection. Fails early, with the server's stderr, if it exits."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"{what} exited with {proc.returncode} before accepting "
                                 f"on :{port}: {err[-2000:]}")
        with host.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            try:
                s.connect(("127.0.0.1", port))
                return
            except OSError as e:
                last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not accept on :{port} within {timeout}s: {last}")
        time.sleep(0.02)  # between probes, bounded by the deadline


def _start(host, argv, what: str, port: int, workdir: Path) -> subprocess.Popen:
    """Starts a server in `host`, stdout and stderr into files of workdir (a
    pipe nobody reads could fill and block it), and waits until it accepts."""
    out = open(workdir / f"{Path(argv[0]).name}.out", "wb")
    try:
        p = host.popen(argv, stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()
    try:
        wait_accepting(host, port, p, what)
    except AssertionError as e:
        log = (workdir / f"{Path(argv[0]).name}.out").read_text(errors="replace")
        raise AssertionError(f"{e}\n{what} output: {log[-2000:]}") from None
    return p


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def random_file(path: Path, size: int) -> str:
    """Writes `size` random bytes to path; returns their sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(left, 1 << 20))
            h.update(b)
            f.write(b)
            left -= len(b)
    return h.hexdigest()


def tree_sums(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file under root."""
    return {str(p.relative_to(root)): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- nginx

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ }}
    default_type application/octet-stream;
    sendfile {sendfile};
    tcp_nopush {nopush};
    keepalive_timeout 60;
    keepalive_requests 1000;
    server {{
        listen {port};
        listen [::]:{port};
        root {root};
    }}
}}
"""


def nginx(host, port: int, root: Path, workdir: Path, sendfile: bool,
          nopush: bool) -> subprocess.Popen:
    """nginx as Debian ships it (epoll, edge-triggered; a master and one
    worker, in the foreground), serving `root` on `port` over IPv4 and IPv6."""
    d = workdir / "nginx"
    (d / "tmp").mkdir(parents=True)
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=d, root=root, port=port,
                                      sendfile="on" if sendfile else "off",
                                      nopush="on" if nopush else "off"))
    return _start(host, ["nginx", "-p", d, "-c", conf, "-e", d / "error.log"],
                  "nginx", port, workdir)


# ---------------------------------------------------------------- redis

REDIS_CONF = """\
port {port}
bind 0.0.0.0 ::
protected-mode no
daemonize no
supervised no
pidfile {d}/redis.pid
logfile {d}/redis.log
dir {d}
save ""
appendonly no
databases 1
"""


def redis(host, port: int, workdir: Path) -> subprocess.Popen:
    """redis-server: one thread, its own event loop (level-triggered epoll)."""
    d = workdir / "redis"
    d.mkdir()
    conf = d / "redis.conf"
    conf.write_text(REDIS_CONF.format(port=port, d=d))
    return _start(host, ["redis-server", conf], "redis-server", port, workdir)


# ---------------------------------------------------------------- rsync

RSYNCD_CONF = """\
pid file = {d}/rsyncd.pid
log file = {d}/rsyncd.log
use chroot = no
uid = root
gid = root
max connections = 0
[src]
    path = {src}
    read only = yes
[up]
    path = {up}
    read only = no
"""


def rsyncd(host, port: int, src: Path, up: Path, workdir: Path) -> subprocess.Popen:
    """The rsync daemon in the foreground: it forks a process per connection.
    Module `src` serves `src` read-only, module `up` takes uploads into `up`."""
    d = workdir / "rsyncd"
    d.mkdir()
    conf = d / "rsyncd.conf"
    conf.write_text(RSYNCD_CONF.format(d=d, src=src, up=up))
    return _start(host, ["rsync", "--daemon", "--no-detach", f"--config={conf}",
                         f"--port={port}"], "rsync --daemon", port, workdir)
