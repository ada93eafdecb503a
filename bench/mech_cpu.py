"""Throughput and CPU per byte of Hooker's mechanisms beside plain TCP: iperf3
over a bare veth with 1 and with 4 parallel streams, plain TCP, `udp` and `quic`
(certificates made for the run, tests/pki.py) taking turns in every round, the
order rotating from round to round (the machine is shared and noisy: ratios
within a round matter more than absolute values).

    sudo python3 bench/mech_cpu.py --build BUILD [--variants tcp,udp,quic]
        [--streams 1,4] [--rounds 3] [--secs 5] [-R]
        [--save bench/comparisons/NAME.json --title "what was measured"]

How one run is measured, and CPU per GB, are udplite_impls.py's (this shares
its code): the machine's busy CPU time from /proc/stat over the iperf3 client's
run, divided by the bytes the receiver got; each round starts by measuring the
machine's background for a second and keeps the load average.

Prints one JSON object (kind "mech_cpu"): per round, every case's figures
(a case is a variant with a stream count, "quic -P4"); per case, runs, median,
min and max of Gbit/s and CPU-s per GB and of their ratios to plain TCP with
the same number of streams in the same round. bench/report.py renders a saved
run into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import pki  # noqa: E402
import testbed  # noqa: E402
import udplite_impls as ui  # noqa: E402
import workloads as wl  # noqa: E402

# variant: (server TCP port, hookerd's rule, its flags); None: plain TCP, no hookerd
VARIANTS = {
    "tcp": None,
    "udp": (5311, "5311=udp", []),
    "quic": (5312, "5312=quic", []),
}


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"mech_cpu: {msg}", file=sys.stderr)
    sys.exit(2)


def case(v: str, streams: int) -> str:
    return f"{v} -P{streams}"


def base_of(name: str) -> str:
    """The plain TCP case a case is compared with: the same stream count."""
    return case("tcp", int(name.rsplit("-P", 1)[1]))


def comma_list(flag, text, parse, allowed=None) -> list:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        fail(f"{flag} is empty")
    out = []
    for x in items:
        try:
            y = parse(x)
        except ValueError:
            fail(f"{flag} {x!r}: not a valid value")
        if allowed is not None and y not in allowed:
            fail(f"{flag} {x!r}: choose from {', '.join(map(str, allowed))}")
        if y not in out:
            out.append(y)
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="mech_cpu.py", description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--variants", default="tcp,udp,quic",
                    help=f"comma list of {', '.join(VARIANTS)} (tcp is always measured)")
    ap.add_argument("--streams", default="1,4", help="comma list of iperf3 -P values")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("-R", dest="reverse", action="store_true", help="iperf3 -R (b sends)")
    ap.add_argument("--save", type=Path, help="also write the JSON here (bench/comparisons/)")
    ap.add_argument("--title", default="", help="a title for the saved run")
    a = ap.parse_args(argv)
    a.variants = comma_list("--variants", a.variants, str, tuple(VARIANTS))
    if "tcp" not in a.variants:
        a.variants.insert(0, "tcp")  # every ratio is to it
    a.streams = comma_list("--streams", a.streams, int)
    for n in a.streams:
        if not 1 <= n <= 128:
            fail(f"--streams {n}: from 1 to 128")
    if a.rounds < 1:
        fail(f"--rounds {a.rounds}: at least 1")
    if a.secs < 2:
        fail(f"--secs {a.secs}: at least 2 (CPU time is counted in 10 ms ticks)")
    if a.save and not a.save.resolve().parent.is_dir():
        fail(f"--save {a.save}: {a.save.parent} is not a directory")
    why = wl.hooker_missing(a.build)
    if why:
        fail(f"--build {a.build}: {why}")
    why = testbed.require_root()
    if why:
        fail(f"{why}; run as root")
    return a


def main(argv):
    args = parse_args(argv)
    binary, digest = wl.snapshot_hookerd(args.build)
    certs = Path(tempfile.mkdtemp(prefix="hooker-bench-pki-"))
    names = [case(v, n) for n in args.streams for v in args.variants]
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        with testbed.TwoHosts() as bed:
            quic_args = pki.make_pki(certs, [bed.a, bed.b]) if "quic" in args.variants else {}

            def measure(name):
                v, n = name.rsplit(" -P", 1)
                spec = VARIANTS[v]
                extra = None
                if spec is not None and spec[1].endswith("=quic"):
                    extra = {h: list(spec[2]) + quic_args[h] for h in ("a", "b")}
                return ui.one(binary, bed, spec, args.secs, args.reverse, {}, int(n), extra)

            rounds = ui.run_rounds(args.rounds, names, measure, rotate=True)
    finally:
        shutil.rmtree(binary.parent, ignore_errors=True)
        shutil.rmtree(certs, ignore_errors=True)
    out = {"kind": "mech_cpu", "title": args.title, "date": started,
           "machine": {"kernel": platform.release(), "cores": os.cpu_count()},
           "hookerd_sha256": digest,
           "config": {"variants": args.variants, "streams": args.streams, "secs": args.secs,
                      "rounds": args.rounds, "reverse": args.reverse, "link": "bare veth",
                      "order": "every case once per round, each round starting one case "
                               "later",
                      "cpu": "machine-wide busy CPU from /proc/stat over the iperf3 client's "
                             "run, per 1e9 bytes received"},
           "rounds": rounds, "summary": ui.summarize(rounds, names, base_of)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.save:
        args.save.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
