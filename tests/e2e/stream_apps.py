#!/usr/bin/python3
"""Unmodified TCP applications for issue 3's stream tests (test_stream.py).

Plain socket programs, nothing in them knows about Hooker: the tests run them
inside a test-bed host's cgroup, where hookerd moves their connections.

    stream_apps.py ROLE [options]      (one process per role; see main())

Every program has a watchdog (--timeout): a hang ends it with exit 3 and a line
saying where it was, so a test never waits forever. Results go to stdout as one
JSON line starting with "result ", progress and readiness as plain lines.

The byte streams are patterns both ends can compute: the stream of seed S is
block(S) repeated, where block(S) is a pseudo-random block of an odd length, so
a byte repeated, lost or moved anywhere changes what the reader compares.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import random
import select
import selectors
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

BLOCK = 1_048_573          # odd, so chunk boundaries drift across the block
IOV_MAX = 1024


# ---------------------------------------------------------------- patterns

class Pattern:
    """The stream of a seed: byte i is block[i % BLOCK]."""

    def __init__(self, seed: int):
        self.block = random.Random(seed).randbytes(BLOCK)
        self.double = self.block + self.block
        self.view = memoryview(self.double)

    def chunk(self, pos: int, n: int) -> memoryview:
        """Bytes [pos, pos + n) of the stream, n <= BLOCK, without a copy."""
        assert n <= BLOCK
        p = pos % BLOCK
        return self.view[p:p + n]

    def bytes(self, pos: int, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            k = min(n, BLOCK)
            out += self.chunk(pos, k)
            pos += k
            n -= k
        return bytes(out)


class Checker:
    """Compares what a reader got against the pattern, chunk by chunk."""

    def __init__(self, pattern: Pattern):
        self.pattern = pattern
        self.pos = 0
        self.mismatch: int | None = None   # stream offset of the first wrong byte

    def feed(self, data) -> bool:
        if self.mismatch is not None:
            self.pos += len(data)
            return False
        mv = memoryview(data)
        off = 0
        while off < len(mv):
            k = min(len(mv) - off, BLOCK)
            got = bytes(mv[off:off + k])
            want = self.pattern.chunk(self.pos, k).tobytes()
            if got != want:
                i = next(j for j in range(k) if got[j] != want[j])
                self.mismatch = self.pos + i
                self.pos += len(mv) - off
                return False
            self.pos += k
            off += k
        return True


def err_name(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


def result(**kw):
    print("result " + json.dumps(kw), flush=True)


def watchdog(seconds: float, where):
    """Exit 3 after `seconds`, printing where() (a dict) as the result."""
    def fire(signum, frame):
        try:
            result(**{**where(), "error": "watchdog", "watchdog_s": seconds})
        finally:
            os._exit(3)
    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def family_of(host: str):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen(port: int, backlog=512) -> socket.socket:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(backlog)
    return s


def connect(host: str, port: int) -> socket.socket:
    """A blocking connected socket: the send patterns must reach the kernel as
    the calls they are, not as a timeout socket's partial non-blocking sends."""
    c = socket.socket(family_of(host), socket.SOCK_STREAM)
    c.connect((host, port))
    return c


def recv_sizes(seed: int):
    """Read sizes of varied shapes: tiny, odd, page, large."""
    rnd = random.Random(seed)
    while True:
        yield rnd.choice((1, 3, 7, 100, 1400, 4096, 65536, 65536, 262144))


# ---------------------------------------------------------------- echo server

def echo_server(a):
    """Echoes every connection; after the client's EOF, flushes what is left,
    shuts down writing and closes (half-close honoured). --after-eof buffers the
    whole request and answers only after EOF. Reads with sizes of every shape."""
    lsn = listen(a.port)
    lsn.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsn, selectors.EVENT_READ, None)
    sizes = recv_sizes(a.seed)
    errors: dict[str, int] = {}
    conns: dict = {}
    served = [0, 0]   # accepted, closed

    def dump(signum, frame):
        # SIGTERM: what each open connection has seen, for the test's report.
        result(accepted=served[0], closed=served[1], errors=errors,
               open=[{"peer": str(c.peer), "read": c.read, "eof": c.eof, "pending": len(c.out),
                      "written": c.written} for c in list(conns.values())[:20]],
               open_count=len(conns))
        os._exit(0)
    signal.signal(signal.SIGTERM, dump)
    print("listening", flush=True)

    def error(what, e):
        key = f"{what}:{err_name(e)}"
        errors[key] = errors.get(key, 0) + 1
        print(f"echo: {key}", file=sys.stderr, flush=True)

    class Conn:
        def __init__(self, s):
            self.s, self.out, self.eof = s, bytearray(), False
            self.read = self.written = 0
            try:
                self.peer = s.getpeername()
            except OSError:
                self.peer = None

    def update(c):
        ev = 0
        if not c.eof and (a.after_eof or len(c.out) < (1 << 20)):
            ev |= selectors.EVENT_READ
        if c.out and (c.eof or not a.after_eof):
            ev |= selectors.EVENT_WRITE
        if ev == 0:
            sel.unregister(c.s)
            conns.pop(id(c), None)
            served[1] += 1
            try:
                c.s.shutdown(socket.SHUT_WR)
            finally:
                c.s.close()
        else:
            sel.modify(c.s, ev, c)

    while True:
        for key, ev in sel.select():
            if key.data is None:
                try:
                    s, _ = lsn.accept()
                except BlockingIOError:
                    continue
                except OSError as e:     # e.g. ECONNABORTED: reset before accept()
                    error("accept", e)
                    continue
                s.setblocking(False)
                c = Conn(s)
                conns[id(c)] = c
                served[0] += 1
                sel.register(s, selectors.EVENT_READ, c)
                continue
            c = key.data
            try:
                if ev & selectors.EVENT_READ:
                    b = c.s.recv(next(sizes))
                    if b:
                        c.out += b
                        c.read += len(b)
                    else:
                        c.eof = True
                if ev & selectors.EVENT_WRITE and c.out:
                    n = c.s.send(c.out[:1 << 20])
                    del c.out[:n]
                    c.written += n
                update(c)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                error("conn", e)
                conns.pop(id(c), None)
                served[1] += 1
                if c.s.fileno() >= 0:
                    sel.unregister(c.s)
                    c.s.close()


# ---------------------------------------------------------------- send patterns

def _sendmsg_all(s: socket.socket, bufs):
    """One sendmsg of these iovecs; a blocking socket sends them whole (if the
    kernel returns short, the rest follows in further sendmsg calls)."""
    total = sum(len(b) for b in bufs)
    n = s.sendmsg(bufs)
    if n < total:
        rest = b"".join(bytes(b) for b in bufs)[n:]
        s.sendall(rest)
    return total


def _writev_all(s: socket.socket, bufs):
    total = sum(len(b) for b in bufs)
    n = os.writev(s.fileno(), bufs)
    if n < total:
        s.sendall(b"".join(bytes(b) for b in bufs)[n:])
    return total


PATTERNS = {
    # name: (description, total bytes)
    "1byte": ("1024 sends of 1 byte", 1024),
    "iov1x1024": ("sendmsg of 1024 x 1-byte iovecs, 4 times", 4 * 1024),
    "iov3x512": ("sendmsg of 512 x 3-byte iovecs, 8 times", 8 * 512 * 3),
    "iov256x1024": ("sendmsg of 1024 x 256-byte iovecs, 16 times", 16 * 1024 * 256),
    "big4m": ("single 4 MB sends, 4 times", 4 * (4 << 20)),
    "writev": ("writev of mixed sizes", None),
    "msg_more": ("send(MSG_MORE) runs closed by a plain send", None),
    "cork": ("TCP_CORK, small sends, uncork", None),
    "sendfile": ("os.sendfile of a 3 MB file, then of a slice of it", None),
}

_WRITEV_SIZES = [1, 2, 1400, 7, 65536, 3, 1000, 4096, 1, 300_000]
_MORE_SIZES = [5, 1, 1400, 17, 9000, 2]


def _plan(name: str) -> int:
    if PATTERNS[name][1] is not None:
        return PATTERNS[name][1]
    if name == "writev":
        return 20 * sum(_WRITEV_SIZES)
    if name in ("msg_more", "cork"):
        return 200 * sum(_MORE_SIZES)
    if name == "sendfile":
        return 3_000_123 + 1_000_000
    raise KeyError(name)


def send_pattern(s: socket.socket, name: str, pat: Pattern, state: dict):
    pos = 0

    def take(n):
        nonlocal pos
        b = pat.bytes(pos, n)
        pos += n
        state["sent"] = pos
        return b

    if name == "1byte":
        for _ in range(1024):
            assert s.send(take(1)) == 1
    elif name.startswith("iov"):
        size, count = {"iov1x1024": (1, 1024), "iov3x512": (3, 512),
                       "iov256x1024": (256, 1024)}[name]
        for _ in range(_plan(name) // (size * count)):
            _sendmsg_all(s, [take(size) for _ in range(count)])
    elif name == "big4m":
        for _ in range(4):
            s.sendall(take(4 << 20))
    elif name == "writev":
        for _ in range(20):
            _writev_all(s, [take(n) for n in _WRITEV_SIZES])
    elif name == "msg_more":
        for _ in range(200):
            for n in _MORE_SIZES[:-1]:
                s.sendall(take(n), socket.MSG_MORE)
            s.sendall(take(_MORE_SIZES[-1]))
    elif name == "cork":
        for _ in range(200):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            for n in _MORE_SIZES:
                s.sendall(take(n))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    elif name == "sendfile":
        # A file holding junk then the stream: one sendfile of its first
        # 3,000,123 stream bytes, then one of the rest, each from an offset.
        first, rest = 3_000_123, 1_000_000
        skip = 4321
        with tempfile.TemporaryFile() as f:
            f.write(b"\0" * skip + pat.bytes(0, first + rest))
            f.flush()
            for off, end in ((skip, skip + first), (skip + first, skip + first + rest)):
                while off < end:
                    n = os.sendfile(s.fileno(), f.fileno(), off, end - off)
                    assert n > 0
                    off += n
                    state["sent"] = off - skip
        pos = first + rest
    else:
        raise SystemExit(f"unknown pattern {name}")
    return pos


def patterns_client(a):
    """Sends one pattern to the echo server while a thread reads the echo back
    with reads of every size; exit 0 only if every byte came back, in order."""
    pat = Pattern(a.seed)
    total = _plan(a.pattern)
    state = {"sent": 0, "received": 0}
    watchdog(a.timeout, lambda: {"pattern": a.pattern, "total": total, **state})
    s = connect(a.host, a.port)
    chk = Checker(pat)
    rerr: list[str] = []

    def reader():
        # A blocking recv() must never fail with EAGAIN; if it does it is
        # counted and the read goes on, so the bytes are still checked.
        sizes = recv_sizes(a.seed + 1)
        try:
            while True:
                try:
                    b = s.recv(next(sizes))
                except BlockingIOError:
                    state["blocking_recv_eagain"] = state.get("blocking_recv_eagain", 0) + 1
                    state.setdefault("eagain_at", []).append(chk.pos) if \
                        len(state.get("eagain_at", [])) < 5 else None
                    select.select([s], [], [], 1.0)
                    continue
                if not b:
                    state["read_end"] = "EOF"
                    return
                chk.feed(b)
                state["received"] = chk.pos
        except OSError as e:
            rerr.append(err_name(e))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t0 = time.monotonic()
    werr = None
    try:
        sent = send_pattern(s, a.pattern, pat, state)
        assert sent == total, (sent, total)
        state["write_done"] = chk.pos   # what the reader had when writing ended
        s.shutdown(socket.SHUT_WR)
    except OSError as e:
        werr = err_name(e)
    t.join()
    s.close()
    ok = werr is None and not rerr and chk.mismatch is None and chk.pos == total
    result(blocking_recv_eagain=state.get("blocking_recv_eagain", 0),
           eagain_at=state.get("eagain_at", []), write_done=state.get("write_done"),
           read_end=rerr[0] if rerr else state.get("read_end"), pattern=a.pattern, total=total, sent=state["sent"], received=chk.pos,
           mismatch=chk.mismatch, write_error=werr, read_error=rerr[0] if rerr else None,
           secs=round(time.monotonic() - t0, 3), ok=ok)
    sys.exit(0 if ok else 1)


# ---------------------------------------------------------------- many connections

def conns_client(a):
    """`count` connections, at most `concurrency` at once. Each writes a random
    0..max_size bytes, shuts down writing as soon as they are written, then
    reads the echo to EOF (half-close) and compares it byte for byte."""
    rnd = random.Random(a.seed)
    sel = selectors.DefaultSelector()
    started = done = 0
    failures = []
    live: dict = {}
    t0 = time.monotonic()
    total_bytes = 0
    watchdog(a.timeout, lambda: {"started": started, "done": done, "ok": done - len(failures),
                                 "failures": failures[:10],
                                 "live": [{k: v for k, v in c.items() if k not in ("data", "sock", "got")}
                                          for c in live.values()][:10]})

    def start():
        nonlocal started
        i = started
        started += 1
        size = rnd.randint(0, a.max_size)
        data = rnd.randbytes(size)
        s = socket.socket(family_of(a.host), socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((a.host, a.port))
        # The local port names the connection in the daemons' logs.
        c = {"i": i, "port": s.getsockname()[1], "size": size, "data": data, "sock": s,
             "sent": 0, "got": bytearray(),
             "shut": False, "t": time.monotonic()}
        live[s.fileno()] = c
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def finish(c, error=None):
        nonlocal done, total_bytes
        sel.unregister(c["sock"])
        del live[c["sock"].fileno()]
        c["sock"].close()
        done += 1
        got = bytes(c["got"])
        if error is None and got != c["data"]:
            first = next((j for j in range(min(len(got), c["size"])) if got[j] != c["data"][j]),
                         min(len(got), c["size"]))
            error = f"echo differs: got {len(got)} of {c['size']} bytes, first difference at {first}"
        if error:
            failures.append({"conn": c["i"], "port": c["port"], "size": c["size"], "sent": c["sent"],
                             "received": len(got), "error": error})
        else:
            total_bytes += c["size"]

    while done < a.count:
        while started < a.count and len(live) < a.concurrency:
            start()
        for key, ev in sel.select(timeout=1.0):
            c = key.data
            s = c["sock"]
            try:
                if ev & selectors.EVENT_WRITE:
                    if c["sent"] < c["size"]:
                        c["sent"] += s.send(c["data"][c["sent"]:c["sent"] + (1 << 20)])
                    if c["sent"] == c["size"] and not c["shut"]:
                        s.shutdown(socket.SHUT_WR)   # closing at once: write done
                        c["shut"] = True
                        sel.modify(s, selectors.EVENT_READ, c)
                if ev & selectors.EVENT_READ:
                    b = s.recv(262144)
                    if b:
                        c["got"] += b
                        if len(c["got"]) > c["size"]:
                            finish(c, f"echo longer than the {c['size']} bytes written")
                    elif not c["shut"]:
                        finish(c, f"EOF before the client finished writing ({len(c['got'])} read)")
                    else:
                        finish(c)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                finish(c, f"{err_name(e)} after sending {c['sent']}, reading {len(c['got'])}")
    secs = time.monotonic() - t0
    result(count=a.count, concurrency=a.concurrency, ok=done - len(failures),
           failures=failures[:20], failed=len(failures), bytes=total_bytes, secs=round(secs, 2))
    sys.exit(0 if not failures else 1)


# ---------------------------------------------------------------- first bytes, RST

def scenario_server(a):
    """One connection per scenario (see scenario_client for the other half)."""
    lsn = listen(a.port, 8)
    print("listening", flush=True)
    state = {"scenario": a.scenario, "side": "server"}
    watchdog(a.timeout, lambda: state)
    c, _ = lsn.accept()
    pat = Pattern(a.seed)
    try:
        if a.scenario == "banner":
            # Speaks first: the banner goes out right after accept().
            c.sendall(b"220 hooker-test ready\r\n" + pat.bytes(0, a.size))
            req = _read_exact(c, 6, state)
            state["request"] = req.decode(errors="replace")
            c.sendall(b"250 ok\r\n")
            state["eof"] = c.recv(1) == b""
        elif a.scenario == "both-first":
            # Data right after accept() while the client sends right after connect().
            c.sendall(pat.bytes(0, a.size))
            got = _read_exact(c, a.size, state)
            state["match"] = got == Pattern(a.seed + 1).bytes(0, a.size)
            state["eof"] = c.recv(1) == b""
        elif a.scenario == "close-at-once":
            # The client wrote and closed at once: every byte, then EOF.
            got = _read_exact(c, a.size, state)
            state["match"] = got == pat.bytes(0, a.size)
            state["eof"] = c.recv(1) == b""
        elif a.scenario in ("rst-client", "rst-inflight"):
            # The client aborts: the next reads must fail with ECONNRESET.
            chk = Checker(pat)
            if a.scenario == "rst-client":
                state["hello"] = _read_exact(c, 5, state).decode()
                c.sendall(b"ok")
            c.settimeout(a.timeout / 2)
            try:
                while True:
                    b = c.recv(65536)
                    if not b:
                        state["read_end"] = "EOF"
                        break
                    if a.scenario == "rst-inflight":
                        chk.feed(b)
            except OSError as e:
                state["read_end"] = err_name(e)
            state["end_t"] = time.monotonic()
            state["received"], state["mismatch"] = chk.pos, chk.mismatch
        elif a.scenario == "rst-server":
            state["hello"] = _read_exact(c, 5, state).decode()
            c.sendall(b"ok")
            # Wait for the client's "abort me" so it is blocked in recv().
            state["go"] = _read_exact(c, 2, state).decode()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            state["abort_t"] = time.monotonic()
            c.close()
            state["closed"] = "abortive"
    except OSError as e:
        state["error"] = err_name(e)
    result(**state)


def _read_exact(s: socket.socket, n: int, state: dict) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(min(n - len(buf), 262144))
        if not b:
            state["early_eof_at"] = len(buf)
            raise ConnectionAbortedError(errno.ECONNABORTED, f"EOF after {len(buf)} of {n}")
        buf += b
        state["read"] = len(buf)
    return bytes(buf)


def scenario_client(a):
    state = {"scenario": a.scenario, "side": "client"}
    watchdog(a.timeout, lambda: state)
    pat = Pattern(a.seed)
    try:
        c = connect(a.host, a.port)
        if a.scenario == "banner":
            hello = b"220 hooker-test ready\r\n"
            got = _read_exact(c, len(hello) + a.size, state)
            state["match"] = got == hello + pat.bytes(0, a.size)
            c.sendall(b"HELO\r\n")
            state["reply"] = _read_exact(c, 8, state).decode()
            c.close()
        elif a.scenario == "both-first":
            c.sendall(Pattern(a.seed + 1).bytes(0, a.size))   # right after connect()
            got = _read_exact(c, a.size, state)
            state["match"] = got == pat.bytes(0, a.size)
            c.shutdown(socket.SHUT_WR)
            state["eof"] = c.recv(1) == b""
            c.close()
        elif a.scenario == "close-at-once":
            c.sendall(pat.bytes(0, a.size))
            c.close()
            state["closed"] = True
        elif a.scenario == "rst-client":
            c.sendall(b"hello")
            state["ok"] = _read_exact(c, 2, state).decode()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            state["abort_t"] = time.monotonic()
            c.close()
            state["closed"] = "abortive"
        elif a.scenario == "rst-inflight":
            c.sendall(pat.bytes(0, a.size))
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            state["abort_t"] = time.monotonic()
            c.close()
            state["closed"] = "abortive"
        elif a.scenario == "rst-server":
            c.sendall(b"hello")
            state["ok"] = _read_exact(c, 2, state).decode()
            c.settimeout(a.timeout / 2)
            c.sendall(b"go")
            try:
                b = c.recv(65536)
                state["read_end"] = "EOF" if not b else f"{len(b)} bytes"
            except OSError as e:
                state["read_end"] = err_name(e)
            state["end_t"] = time.monotonic()
    except OSError as e:
        state["error"] = err_name(e)
    result(**state)


# ---------------------------------------------------------------- pattern writer / reader

def pattern_writer(a):
    """Connects and writes `total` bytes of the pattern as fast as it can, in
    --chunk writes (--nonblocking: on a non-blocking socket, taking whatever
    part each send accepts, as event-driven servers and iperf3 do); with
    --progress prints "progress T BYTES" every 50 ms. Then shuts down writing
    and waits for the reader's one-line verdict."""
    pat = Pattern(a.seed)
    state = {"side": "writer", "sent": 0}
    watchdog(a.timeout, lambda: state)
    c = connect(a.host, a.port)
    print("connected", flush=True)
    stop = threading.Event()
    if a.progress:
        def progress():
            while not stop.wait(0.05):
                print(f"progress {time.monotonic():.3f} {state['sent']}", flush=True)
        threading.Thread(target=progress, daemon=True).start()
    t0 = time.monotonic()
    try:
        c.setblocking(not a.nonblocking)
        while state["sent"] < a.total:
            n = min(a.chunk, a.total - state["sent"], BLOCK)
            try:
                state["sent"] += c.send(pat.chunk(state["sent"], n))
            except BlockingIOError:
                state["eagain"] = state.get("eagain", 0) + 1
                select.select([], [c], [], a.timeout)
        state["write_secs"] = round(time.monotonic() - t0, 3)
        _await_verdict(c, state, a.timeout / 2)
    except OSError as e:
        state["error"] = err_name(e)
    stop.set()
    result(**state)


def pattern_reader(a):
    """Accepts one connection; with --sleep stops reading for that long first;
    then reads to EOF with reads of every size, checking each byte against the
    pattern (nothing is stored), stopping for --pause seconds after every
    --pause-every bytes. Answers "ok N" or "bad N" and closes."""
    lsn = listen(a.port, 8)
    print("listening", flush=True)
    pat = Pattern(a.seed)
    chk = Checker(pat)
    state = {"side": "reader"}
    watchdog(a.timeout, lambda: {**state, "received": chk.pos, "mismatch": chk.mismatch})

    def stopped(signum, frame):
        # SIGTERM from a test that gave up on the writer: how far it got.
        result(received=chk.pos, mismatch=chk.mismatch, **state, stopped="SIGTERM")
        os._exit(0)
    signal.signal(signal.SIGTERM, stopped)
    c, _ = lsn.accept()
    print(f"accepted {time.monotonic():.3f}", flush=True)
    if a.sleep:
        time.sleep(a.sleep)   # the application stops reading: the point of the test
    print(f"draining {time.monotonic():.3f}", flush=True)
    t0 = time.monotonic()
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    sizes = recv_sizes(a.seed + 2) if a.varied_reads else None
    c.settimeout(a.idle_timeout)
    try:
        while True:
            n = c.recv_into(mv, next(sizes) if sizes else len(buf))
            if n == 0:
                state["read_end"] = "EOF"
                break
            chk.feed(mv[:n])
            if a.pause_every and chk.pos // a.pause_every != (chk.pos - n) // a.pause_every:
                time.sleep(a.pause)
    except OSError as e:
        state["read_end"] = err_name(e)
    state["read_secs"] = round(time.monotonic() - t0, 3)
    verdict = "ok" if chk.mismatch is None else "bad"
    try:
        c.sendall(f"{verdict} {chk.pos}\n".encode())
        c.close()
    except OSError as e:
        state["reply_error"] = err_name(e)
    result(received=chk.pos, mismatch=chk.mismatch, **state)


# ---------------------------------------------------------------- event-loop writers

class _Sendfile:
    """A file holding the pattern's block twice: any stream range of up to
    BLOCK bytes is one os.sendfile from offset pos % BLOCK."""

    def __init__(self, pat: Pattern):
        self.f = tempfile.TemporaryFile()
        self.f.write(pat.double)
        self.f.flush()

    def send(self, fd: int, pos: int, n: int) -> int:
        return os.sendfile(fd, self.f.fileno(), pos % BLOCK, n)


def _send_call(name: str, c: socket.socket, pat: Pattern):
    """send(pos, n) -> bytes the kernel took, with the named system call on a
    non-blocking socket; BlockingIOError when it took none (EAGAIN)."""
    fd = c.fileno()
    if name == "sendmsg":
        return lambda pos, n: c.sendmsg([pat.chunk(pos, n)])
    if name == "writev":
        # Three iovecs of uneven sizes, as a server writing headers and body.
        def writev(pos, n):
            k1 = min(n, 1 + n // 7)
            k2 = min(n - k1, 3 + n // 3)
            return os.writev(fd, [pat.chunk(pos, k1), pat.chunk(pos + k1, k2),
                                  pat.chunk(pos + k1 + k2, n - k1 - k2)])
        return writev
    if name == "sendfile":
        sf = _Sendfile(pat)
        return lambda pos, n: sf.send(fd, pos, n)
    raise SystemExit(f"unknown call {name}")


class _EdgeWaiter:
    """epoll, EPOLLOUT | EPOLLET: wait() returns True once an EPOLLOUT edge (a
    wake-up of the socket after it was registered or last reported) came."""

    def __init__(self, fd: int):
        self.ep = select.epoll()
        self.ep.register(fd, select.EPOLLOUT | select.EPOLLET)

    def wait(self, timeout: float) -> bool:
        return any(ev & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP)
                   for _, ev in self.ep.poll(timeout))


class _LevelWaiter:
    """poll(POLLOUT), level-triggered: True whenever the socket is writable now."""

    def __init__(self, fd: int):
        self.p = select.poll()
        self.p.register(fd, select.POLLOUT)

    def wait(self, timeout: float) -> bool:
        return any(ev & (select.POLLOUT | select.POLLERR | select.POLLHUP)
                   for _, ev in self.p.poll(max(1, int(timeout * 1000))))


def event_writer(a):
    """A non-blocking writer driven by an event loop, as event-driven servers
    (nginx, ...) write: --loop epoll-et waits for EPOLLOUT edges only: it
    writes until a call takes nothing (EAGAIN) or less than asked, then
    writes again only after the next EPOLLOUT edge. --loop poll waits with
    level-triggered poll() after EAGAIN. --call is the system call of every
    write. A write that makes no progress for --stall seconds ends it with
    error "stalled" and how far it got. Then it shuts down writing and waits
    for the reader's one-line verdict."""
    pat = Pattern(a.seed)
    state = {"side": "writer", "loop": a.loop, "call": a.call, "sent": 0, "eagain": 0,
             "short": 0, "waits": 0, "wakeups": 0, "spurious": 0, "resumed": 0}
    watchdog(a.timeout, lambda: state)
    c = connect(a.host, a.port)
    c.setblocking(False)
    send = _send_call(a.call, c, pat)
    edge = a.loop == "epoll-et"
    waiter = (_EdgeWaiter if edge else _LevelWaiter)(c.fileno())
    print("connected", flush=True)
    t0 = last = time.monotonic()
    ready = not edge      # ET: the registration's own edge says writable first
    woken = held = False  # held: the last call took nothing or less than asked
    try:
        while state["sent"] < a.total:
            if not ready:
                left = a.stall - (time.monotonic() - last)
                if left <= 0:
                    state.update(error="stalled", stalled_s=round(time.monotonic() - last, 1))
                    break
                state["waits"] += 1
                if waiter.wait(left):
                    state["wakeups"] += 1
                    ready = woken = True
                continue
            n = min(a.chunk, a.total - state["sent"])
            try:
                k = send(state["sent"], n)
            except BlockingIOError:
                state["eagain"] += 1
                state["blocked_at"] = state["sent"]
                if woken:   # told writable, and the very next call took nothing
                    state["spurious"] += 1
                ready = woken = False
                held = True
                continue
            woken = False
            if held and k:
                state["resumed"] += 1   # held back, woken, and writing again
                held = False
            state["sent"] += k
            now = time.monotonic()
            if k:
                last = now
            elif now - last > a.stall:
                state.update(error="stalled", stalled_s=round(now - last, 1))
                break
            if k < n:
                state["short"] += 1
                state["blocked_at"] = state["sent"]
                held = True
                if edge:
                    ready = False   # the rest goes after the next edge, as nginx does
        if "error" not in state:
            state["write_secs"] = round(time.monotonic() - t0, 3)
            _await_verdict(c, state, a.stall)
    except OSError as e:
        state["error"] = err_name(e)
    result(**state)
    sys.exit(1 if "error" in state else 0)


def _await_verdict(c: socket.socket, state: dict, timeout: float):
    """Shuts down writing and reads the reader's verdict line to EOF."""
    c.setblocking(True)
    c.shutdown(socket.SHUT_WR)
    c.settimeout(timeout)
    reply = bytearray()
    while True:
        b = c.recv(4096)
        if not b:
            break
        reply += b
    state["reply"] = reply.decode(errors="replace")
    state["read_end"] = "EOF"


# ---------------------------------------------------------------- threads on one socket

def thread_stream(t: int, n: int) -> bytes:
    """Thread t's bytes: its number in the top two bits, then six bits that
    depend on the byte's place in its stream, so a byte out of place shows."""
    return bytes((t << 6) | (((k * 2654435761) >> 13) & 63) for k in range(n))


def threads_writer(a):
    """--threads threads (at most 4) write --bytes bytes each on one socket at
    the same time, --size bytes per send. Then shuts down writing and waits
    for the reader's verdict. Over TCP, concurrent sends may interleave
    anywhere, but each thread's bytes keep their order."""
    state = {"side": "threads-writer"}
    watchdog(a.timeout, lambda: state)
    c = connect(a.host, a.port)
    errors = []

    def run(t):
        data = memoryview(thread_stream(t, a.bytes))
        try:
            for off in range(0, a.bytes, a.size):
                c.sendall(data[off:off + a.size])
        except OSError as e:
            errors.append(err_name(e))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        state["error"] = errors[0]
    else:
        c.shutdown(socket.SHUT_WR)
        c.settimeout(a.timeout / 2)
        try:
            state["reply"] = c.recv(4096).decode(errors="replace")
        except OSError as e:
            state["error"] = err_name(e)
    result(**state)


def threads_reader(a):
    """Reads to EOF, stopping for --pause seconds after every --pause-every
    bytes, and checks that each thread's bytes (told apart by their top bits)
    come in its order. Answers "ok N" or "bad: ..." and closes."""
    import re
    lsn = listen(a.port, 8)
    print("listening", flush=True)
    state = {"side": "threads-reader", "received": 0}
    watchdog(a.timeout, lambda: state)
    expect = [thread_stream(t, a.bytes) for t in range(4)]
    pos = [0, 0, 0, 0]
    owner = bytes.maketrans(bytes(range(256)), bytes(b >> 6 for b in range(256)))
    c, _ = lsn.accept()
    c.settimeout(a.idle_timeout)
    bad = None
    try:
        while bad is None:
            b = c.recv(1 << 16)
            if not b:
                state["read_end"] = "EOF"
                break
            before = state["received"]
            state["received"] += len(b)
            for run in re.finditer(rb"\x00+|\x01+|\x02+|\x03+", b.translate(owner)):
                t, n = b[run.start()] >> 6, run.end() - run.start()
                if b[run.start():run.end()] != expect[t][pos[t]:pos[t] + n]:
                    bad = f"thread {t} bytes {pos[t]}..{pos[t] + n} at {before + run.start()}"
                    break
                pos[t] += n
            if a.pause_every and state["received"] // a.pause_every != before // a.pause_every:
                time.sleep(a.pause)
    except OSError as e:
        state["read_end"] = err_name(e)
    state["per_thread"] = pos
    verdict = f"bad: {bad}" if bad else f"ok {state['received']}"
    try:
        c.sendall(f"{verdict}\n".encode())
        c.close()
    except OSError as e:
        state["reply_error"] = err_name(e)
    result(bad=bad, **state)


# ---------------------------------------------------------------- main

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role", required=True)

    def add(name, fn, server):
        sp = sub.add_parser(name)
        sp.set_defaults(fn=fn)
        if not server:
            sp.add_argument("--host", required=True)
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--seed", type=int, default=1)
        sp.add_argument("--timeout", type=float, default=60)
        return sp

    sp = add("echo-server", echo_server, True)
    sp.add_argument("--after-eof", action="store_true")
    sp = add("patterns-client", patterns_client, False)
    sp.add_argument("--pattern", required=True, choices=sorted(PATTERNS))
    sp = add("conns-client", conns_client, False)
    sp.add_argument("--count", type=int, required=True)
    sp.add_argument("--concurrency", type=int, default=1)
    sp.add_argument("--max-size", type=int, default=1 << 20)
    for name, fn, server in (("scenario-server", scenario_server, True),
                             ("scenario-client", scenario_client, False)):
        sp = add(name, fn, server)
        sp.add_argument("--scenario", required=True,
                        choices=["banner", "both-first", "close-at-once", "rst-client",
                                 "rst-inflight", "rst-server"])
        sp.add_argument("--size", type=int, default=200_000)
    sp = add("pattern-writer", pattern_writer, False)
    sp.add_argument("--total", type=int, required=True)
    sp.add_argument("--chunk", type=int, default=65536)
    sp.add_argument("--progress", action="store_true")
    sp.add_argument("--nonblocking", action="store_true")
    sp = add("event-writer", event_writer, False)
    sp.add_argument("--total", type=int, required=True)
    sp.add_argument("--loop", required=True, choices=["epoll-et", "poll"])
    sp.add_argument("--call", required=True, choices=["sendmsg", "writev", "sendfile"])
    sp.add_argument("--chunk", type=int, default=262144)
    sp.add_argument("--stall", type=float, default=20)
    sp = add("threads-writer", threads_writer, False)
    sp.add_argument("--threads", type=int, default=4, choices=range(1, 5))
    sp.add_argument("--bytes", type=int, required=True)
    sp.add_argument("--size", type=int, default=256)
    sp = add("threads-reader", threads_reader, True)
    sp.add_argument("--bytes", type=int, required=True)
    sp.add_argument("--pause-every", type=int, default=0)
    sp.add_argument("--pause", type=float, default=0.2)
    sp.add_argument("--idle-timeout", type=float, default=20)
    sp = add("pattern-reader", pattern_reader, True)
    sp.add_argument("--sleep", type=float, default=0)
    sp.add_argument("--pause-every", type=int, default=0)
    sp.add_argument("--pause", type=float, default=0.2)
    sp.add_argument("--idle-timeout", type=float, default=20)
    sp.add_argument("--varied-reads", action="store_true")
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
