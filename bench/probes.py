"""Small TCP applications the suite runs inside the host cgroups (unmodified TCP
programs as far as Hooker is concerned).

  probes.py serve ADDR PORT            accept forever; send one byte to each client
  probes.py setup ADDR PORT N          N times: connect, read the first byte, close;
                                       prints the N times in seconds as JSON
  probes.py hold ADDR PORT N           open N connections, read each one's byte,
                                       print "held N", keep them until stdin closes
Every socket operation has a timeout; nothing waits forever.
"""
import json
import resource
import selectors
import socket
import sys
import time

TIMEOUT = 10.0


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def raise_nofile(n):
    """Room for n sockets, within the hard limit (raising that needs
    CAP_SYS_RESOURCE, which a sandboxed root may lack)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        want = n if hard == resource.RLIM_INFINITY else min(n, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def serve(addr, port):
    """Non-blocking accept loop: thousands of held connections cost no threads."""
    raise_nofile(1 << 20)
    lsn = socket.socket(family(addr), socket.SOCK_STREAM)
    lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsn.bind((addr, port))
    lsn.listen(4096)
    lsn.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsn, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select(timeout=60):
            if key.fileobj is lsn:
                while True:
                    try:
                        c, _ = lsn.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    c.send(b"x")
                    sel.register(c, selectors.EVENT_READ)
            else:
                c = key.fileobj
                try:
                    data = c.recv(4096)
                except OSError:
                    data = b""
                if not data:  # the client closed: so do we
                    sel.unregister(c)
                    c.close()


def connect_first_byte(addr, port):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect((addr, port))
    if s.recv(1) != b"x":
        raise RuntimeError("no first byte")
    return s


def setup(addr, port, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        s = connect_first_byte(addr, port)
        times.append(time.perf_counter() - t0)
        s.close()
    print(json.dumps(times), flush=True)


def hold(addr, port, n):
    raise_nofile(n + 100)
    socks = [connect_first_byte(addr, port) for _ in range(n)]
    print(f"held {len(socks)}", flush=True)
    sys.stdin.read()  # until the suite closes our stdin
    for s in socks:
        s.close()


if __name__ == "__main__":
    cmd, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "serve":
        serve(addr, port)
    elif cmd == "setup":
        setup(addr, port, int(sys.argv[4]))
    elif cmd == "hold":
        hold(addr, port, int(sys.argv[4]))
    else:
        sys.exit(f"probes.py: unknown command {cmd!r}")
