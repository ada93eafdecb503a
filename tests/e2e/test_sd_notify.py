"""Issue 13: hookerd tells a service manager (systemd's Type=notify) READY=1
only once its programs are attached, and STOPPING=1 when asked to stop,
through $NOTIFY_SOCKET: a path or an abstract name ('@'), no libsystemd."""
import os
import signal
import socket
import uuid

import pytest

from hookerd import Hookerd


def attached(host) -> bool:
    """hookerd's sock_ops program is on the host's cgroup now."""
    out = host.run(["bpftool", "cgroup", "show", host.cgroup], timeout=10, cgroup=False).stdout
    return "sock_ops" in out


def run_with_notify(host, sock, address):
    """Starts hookerd with NOTIFY_SOCKET=address; checks what arrives on sock."""
    sock.settimeout(10)
    assert not attached(host)
    hd = Hookerd(host, [8000], env=dict(os.environ, NOTIFY_SOCKET=address)).launch()
    try:
        msg = sock.recv(4096)
        # The moment READY=1 arrives, everything it announces is there: the
        # programs attached and the control socket answering.
        assert attached(host), "READY=1 came before sock_ops was attached"
        assert msg == b"READY=1", msg
        assert hd.status()["hookerd"]["pid"] == hd.proc.pid
        hd.proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert hd.proc.wait(timeout=10) == 0, hd.stderr()
        assert not attached(host)
        assert "sd_notify" not in hd.stderr()
    finally:
        hd.stop()


def test_ready_and_stopping_on_a_path_socket(bed, tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        run_with_notify(bed.a, s, path)


def test_ready_and_stopping_on_an_abstract_socket(bed):
    # Abstract names belong to a network namespace: the socket is made in
    # hookerd's.
    name = f"hooker-test-notify-{uuid.uuid4().hex[:8]}"
    with bed.a.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        run_with_notify(bed.a, s, "@" + name)


def test_a_manager_that_cannot_be_told_is_said_not_fatal(bed, tmp_path):
    hd = Hookerd(bed.a, [8000],
                 env=dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "nobody-here"))).start()
    assert attached(bed.a)
    assert hd.stop() == 0
    assert "sd_notify READY=1 to" in hd.stderr()
