"""Talking to hookerd's metrics endpoint from inside a test-bed host: raw
HTTP over a socket made in the host's netns, every receive with a timeout."""
from __future__ import annotations

import re
import socket

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def http(host, addr: str, port: int, request: bytes, timeout=5.0) -> bytes:
    """Sends `request` to addr:port in host's netns; the whole answer."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with host.socket(fam) as s:
        s.settimeout(timeout)
        s.connect((addr, port))
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def get(host, addr: str, port: int, path="/metrics") -> tuple[int, dict, str]:
    """GET path: (status code, headers, body)."""
    raw = http(host, addr, port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body), lines
    return int(lines[0].split()[1]), headers, body.decode()


def parse(text: str) -> dict[str, dict]:
    """Exposition text -> {family: {"help", "type", "samples": {labels: value}}};
    fails on a sample whose family had no HELP and TYPE line before it."""
    fams: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            fams.setdefault(name, {"samples": {}})["help"] = help_
        elif line.startswith("# TYPE "):
            name, _, type_ = line[7:].partition(" ")
            fams.setdefault(name, {"samples": {}})["type"] = type_
        elif line:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name = m.group(1)
            assert "help" in fams.get(name, {}) and "type" in fams[name], f"{name}: no HELP/TYPE"
            fams[name]["samples"][m.group(2) or ""] = float(m.group(3))
    return fams


def value(fams: dict, name: str, labels: str = "") -> float:
    return fams[name]["samples"][labels]
