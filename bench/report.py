"""results.json -> gnuplot PNGs + BENCHMARKS.md. The paper's numbers below are the
only figures not measured by the suite; the report marks them as the paper's."""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

# Bonfoh et al., CORES 2020, Table 1 (Linux 5.0, two VMs, netem RTT 50 ms).
PAPER_TABLE1 = [
    ("Hooker components", "6 s", "20 ms", "400 ns"),
    ("UDP-Lite", "200 ms", "7 ms", "N/A"),
]
PAPER_FIG2 = ("The paper's Figure 2 (3 KB, 510 KB, 26 MB over HTTP, RTT 50 ms, 0% loss) "
              "shows Hooker adding a small overhead over plain TCP for all three files; "
              "its text prints no numbers for it.")
SIZES = ["3KB", "510KB", "26MB"]
COMPARISONS = Path(__file__).resolve().parent / "comparisons"
# What each Hooker label in results.json stands for (bench/suite.py HOOKER_VARIANTS).
HOOKER_LABELS = {
    "hooker": "Hooker's default mechanism, udp (`--redirect PORT`)",
    "hooker:udp": "Hooker's udp mechanism (`--redirect PORT=udp`)",
    "hooker:udplite (kernel)": "Hooker's udplite mechanism with the kernel's UDP-Lite "
                               "(`--redirect PORT=udplite --udplite-impl kernel`)",
    "hooker:udplite (ebpf)": "Hooker's udplite mechanism made by BPF programs on UDP "
                             "(`--redirect PORT=udplite --udplite-impl ebpf`)",
    "hooker:quic": "Hooker's quic mechanism: QUIC (ngtcp2, GnuTLS) between the hookerds, "
                   "certificates made for the run (`--redirect PORT=quic --quic-cert ...`)",
    "hooker:tcp-cc (hk_vegas)": "TCP with Hooker's BPF congestion control, TCP Vegas written "
                                "in BPF, set on the port's connections "
                                "(`--redirect PORT=tcp-cc:hk_vegas`)",
}


def no_url(why: str) -> str:
    """A curl failure without its URL (the table's column says which)."""
    return re.sub(r"^curl \S+: ", "", why)


def fmt_s(x):
    if x is None:
        return "—"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def cells(res, loss):
    return [d for d in res["downloads"] if d["loss_pct"] == loss]


def variants_of(res):
    seen = []
    for d in res["downloads"]:
        if d["variant"] not in seen:
            seen.append(d["variant"])
    return seen


def gnuplot(script: str, cwd: Path):
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True,
                       cwd=cwd, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"gnuplot: {r.stderr.strip()}")


def plot_downloads(res, out: Path, loss) -> str | None:
    """One panel per file size, a bar per variant: the paper's Figure 2 layout."""
    rows = cells(res, loss)
    sizes = [s for s in SIZES if any(d["size"] == s and d["median_s"] for d in rows)]
    if not sizes:
        return None
    name = f"downloads_loss{loss:g}.png"
    panels = []
    for s in sizes:
        dat = out / f"downloads_loss{loss:g}_{s}.dat"
        dat.write_text("".join(f"\"{d['variant']}\" {d['median_s']}\n"
                               for d in rows if d["size"] == s and d["median_s"]))
        panels.append(f"set title '{s}'\nplot '{dat.name}' using 0:2:xtic(1) with boxes "
                      f"lc rgb '#4477aa' notitle, '' using 0:2:(sprintf('%.3g',$2)) "
                      f"with labels offset 0,0.7 notitle\n")
    gnuplot(f"""set terminal pngcairo size {360 * len(sizes)},380 font ',10'
set output '{name}'
set multiplot layout 1,{len(sizes)} title 'Download time, RTT 50 ms, {loss:g}% loss (median, s)'
set style fill solid 0.8
set boxwidth 0.6
set yrange [0:*]
set xtics rotate by -30
set ylabel 'seconds'
{''.join(panels)}unset multiplot
""", out)
    return name


def plot_loss_sweep(res, out: Path, stem: str = "loss_sweep") -> str | None:
    losses = res["config"].get("losses_pct", [])
    if len(losses) < 2:
        return None
    name = f"{stem}.png"
    panels = []
    for s in ["510KB", "26MB"]:
        series = []
        for v in variants_of(res):
            pts = [(d["loss_pct"], d["median_s"]) for d in res["downloads"]
                   if d["variant"] == v and d["size"] == s and d["median_s"]]
            if len(pts) >= 2:
                dat = out / (f"{stem.replace('loss_sweep', 'sweep', 1)}_{s}_"
                             f"{re.sub(r'[^A-Za-z0-9.-]+', '_', v)}.dat")
                dat.write_text("".join(f"{x} {y}\n" for x, y in sorted(pts)))
                series.append(f"'{dat.name}' using 1:2 with linespoints lw 2 title '{v}'")
        if series:
            panels.append(f"set title '{s}'\nplot {', '.join(series)}\n")
    if not panels:
        return None
    gnuplot(f"""set terminal pngcairo size {480 * len(panels)},380 font ',10'
set output '{name}'
set multiplot layout 1,{len(panels)} title 'Download time against loss, RTT 50 ms (median)'
set logscale y
set xlabel 'loss (%)'
set ylabel 'seconds (log)'
set key top left
set grid
{''.join(panels)}unset multiplot
""", out)
    return name


def quic_bytes(pc) -> str:
    """The quic mechanism's share of a wire check: its socket is on port 7001."""
    n = pc.get("udp_payload_bytes_port_7001")
    return f", {n} UDP payload bytes on port 7001 (quic)" if n else ""


def size_rows(res, loss, vs, cell) -> list[str]:
    """Markdown rows, one per file size measured at `loss`: a cell per variant,
    cell(d, row) for a measured one (row: every variant's at that size), "—"
    for one not measured."""
    lines = []
    for s in SIZES:
        row = {d["variant"]: d for d in cells(res, loss) if d["size"] == s}
        if row:
            lines.append(f"| {s} | " + " | ".join(
                cell(row[v], row) if v in row else "—" for v in vs) + " |")
    return lines


def failures_of(d) -> tuple[int, int, str]:
    """A cell's failed runs, its runs not made (the daemon did not start, or a
    smaller file failed first: not failures), and the first failure's words."""
    n_bad = sum(not f.startswith("not ") for f in d["failures"])
    why = next((f for f in d["failures"] if not f.startswith("not ")),
               d["failures"][0] if d["failures"] else "no run")
    return n_bad, len(d["failures"]) - n_bad, no_url(why)


def download_table(res, loss):
    vs = variants_of(res)
    base = f"tcp-{res['machine'].get('cc_default')}"
    head = [v + (" (default)" if v == base else "") for v in vs]

    def cell(d, row):
        n_bad, n_off, why = failures_of(d)
        if not d["times_s"]:
            return f"**failed**: {why[:90]}"
        txt = fmt_s(d["median_s"])
        b = row.get(base)
        if d["median_s"] and b and b["median_s"] and d["variant"] != base:
            txt += f" ({d['median_s'] / b['median_s']:.2f}×)"
        return txt + f" n={len(d['times_s'])}" + (f", **{n_bad} failed**" if n_bad else "") + \
            (f", {n_off} not run" if n_off else "")

    lines = ["| file | " + " | ".join(head) + " |", "|---" * (len(vs) + 1) + "|"]
    return "\n".join(lines + size_rows(res, loss, vs, cell))


def comparison_table(res) -> list[str]:
    """Markdown: each figure's ratio to plain TCP, before and after."""
    names = {"iperf3_1": "iperf3, 1 stream (higher is better)",
             "iperf3_4": "iperf3, 4 streams (higher is better)",
             "setup_ms": "connection set-up, median (lower is better)",
             "rr_us": "1-byte request/response, median (lower is better)",
             "setup_cpu_us": "CPU per set-up, whole machine (lower is better)"}
    L = ["| ratio to plain TCP in the same round: median (min–max) | before | after |",
         "|---|---|---|"]
    for f in names:
        if f not in res["ratios"]["before"]:
            continue  # saved before the figure was measured
        cell = lambda n: "{median:.2f} ({min:.2f}–{max:.2f})".format(**res["ratios"][n][f])  # noqa
        L.append(f"| {names[f]} | {cell('before')} | {cell('after')} |")
    return L


def spread_txt(d: dict, fmt: str = "{:.2f}") -> str:
    """'median (min–max)' of a {'median','min','max'} summary, or a dash."""
    if not d or d.get("median") is None:
        return "—"
    return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}–{fmt.format(d['max'])})"


def spread_of(xs) -> dict:
    xs = sorted(xs)
    if not xs:
        return {}
    n = len(xs)
    med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    return {"median": med, "min": xs[0], "max": xs[-1]}


def loadavg_txt(values) -> str:
    """The 1-minute load averages seen during a run, as a range."""
    one = [v[0] for v in values if v]
    if not one:
        return "load average not recorded"
    lo, hi = min(one), max(one)
    return f"load average (1 min) {lo:.2f}" + (f"–{hi:.2f}" if hi != lo else "")


def udplite_impls_section(c: dict, name: str) -> list[str]:
    """A saved bench/udplite_impls.py run: Gbit/s and CPU per GB, ratios to tcp."""
    cfg = c["config"]
    way = "b → a (`-R`)" if cfg.get("reverse") else "a → b"
    bg = [r["background_cpu_per_s"] for r in c["rounds"] if "background_cpu_per_s" in r]
    L = [f"### {c.get('title') or name}", "",
         f"`{name}`, {c['date']}: {cfg['rounds']} rounds of iperf3 ({cfg['streams']} "
         f"stream, {cfg['secs']} s, {way}, {cfg['link']}), the four variants taking turns "
         f"in each round; Linux {c['machine']['kernel']}, {c['machine']['cores']} cores. "
         f"{loadavg_txt([r.get('loadavg') for r in c['rounds']])} at the rounds' starts"
         + (f"; the machine's background, measured for 1 s before each round, "
            f"{min(bg):.2f}–{max(bg):.2f} busy CPU-s per s" if bg else "") + ".", "",
         "| variant | runs | Gbit/s | ratio to tcp | CPU-s per GB | ratio to tcp | busy CPUs |",
         "|---|---|---|---|---|---|---|"]
    for v, sm in c["summary"].items():
        busy = [r[v]["cpu_s"] / r[v]["wall_s"] for r in c["rounds"]
                if "error" not in r[v] and r[v].get("wall_s")]
        busy_txt = f"{min(busy):.2f}–{max(busy):.2f}" if busy else "—"
        runs = f"{sm['runs']}" + (f", **{len(sm['failures'])} failed**: "
                                  f"{sm['failures'][0][:80]}" if sm["failures"] else "")
        same = v == "tcp"
        L.append(f"| {v} | {runs} | {spread_txt(sm['gbps'])} | "
                 f"{'1' if same else spread_txt(sm['gbps_ratio_to_tcp'])} | "
                 f"{spread_txt(sm['cpu_s_per_gb'])} | "
                 f"{'1' if same else spread_txt(sm['cpu_ratio_to_tcp'])} | {busy_txt} |")
    pair = [r for r in c["rounds"] if all(
        "error" not in r[v] for v in ("udplite (kernel)", "udplite (ebpf)"))]
    if pair:
        ratio = lambda f: spread_txt(spread_of(  # noqa: E731
            [r["udplite (ebpf)"][f] / r["udplite (kernel)"][f] for r in pair
             if r["udplite (kernel)"][f]]))
        L += ["", f"udplite (ebpf) against udplite (kernel) in the same round: Gbit/s "
              f"{ratio('gbps')}, CPU-s per GB {ratio('cpu_s_per_gb')}."]
    if c.get("bpf_ns_per_run"):
        L += ["", "udplite (ebpf)'s programs, both hosts and all rounds: " + "; ".join(
            f"`{k}` {p['runs']} runs, {p['ns']:.0f} ns per run"
            for k, p in c["bpf_ns_per_run"].items()) + " (`kernel.bpf_stats_enabled`)."]
    return L + [""]


def rules_cost_section(c: dict, name: str) -> list[str]:
    """A saved bench/rules_cost.py run: hk_sockops's time per unmoved connection."""
    f = lambda s: f"{s['median']:.0f} ns ({s['min']:.0f}–{s['max']:.0f})"  # noqa: E731
    n, ns = c["rules"], c["ns_per_conn"]
    L = [f"### {c.get('title') or name}", "",
         f"`{name}`, {c['date']}: {c['rounds']} rounds of {c['conns']} short connections "
         f"(connect, the server closes) on port {c['port']}, outside the policy, a → b, "
         f"hookerd on both hosts, the three variants taking turns in each round; "
         f"`hk_sockops`'s run time (`kernel.bpf_stats_enabled`) summed over both hosts, "
         f"per connection, median (min–max) over rounds; Linux {c['machine']['kernel']}, "
         f"{c['machine']['cores']} cores"
         + (f", load average (1 min) {c['loadavg_end'][0]:.2f} at the end" if c.get("loadavg_end")
            else "") + ".", "",
         "| configuration | sock_ops runs per connection | sock_ops ns per connection | "
         "added by the rules (paired per round) |", "|---|---|---|---|"]
    what = {"none": "no file (port rules only)",
            "other": f"{n} rules on other ports",
            "prefixes": f"{n} rules over the port, other destination prefixes"}
    for v in ("none", "other", "prefixes"):
        extra = "—" if v == "none" else f(c[f"extra_ns_per_conn_{v}"])
        L.append(f"| {what[v]} | {c['runs_per_conn'][v]['median']:g} | {f(ns[v])} | {extra} |")
    # The table is walked twice per connection: the client's connect, the
    # server's establishment (a SYN without the option stops before it).
    per_rule = lambda v: c[f"extra_ns_per_conn_{v}"]["median"] / 2 / n  # noqa: E731
    L += ["", f"Two walks of the table per connection (the client's connect, the server's "
          f"establishment): about {per_rule('other'):.0f} ns a rule a walk when the port "
          f"rejects it, {per_rule('prefixes'):.0f} ns when its prefixes are compared."]
    return L + [""]


def ms_txt(d: dict) -> str:
    """'median (min–max) ms' of a spread, or a dash."""
    return spread_txt(d, "{:.3f}") + " ms" if d and d.get("median") is not None else "—"


def setup_table(rows) -> list[str]:
    """The set-up part (bench/suite.py conn_setup): per RTT and variant, the first
    connection after a fresh hookerd pair (one per block: median and min–max over
    blocks, and its ratio to plain TCP's first in the same block) beside the later
    connections (median, p99, and the ratio of the block's median to plain TCP's).
    Runs from before the first was kept apart show dashes there."""
    L = ["| RTT | variant | first connection: median (min–max) | ÷ tcp's first, same block "
         "| later connections | median | p99 | ÷ tcp's median, same block | failures |",
         "|---|---|---|---|---|---|---|---|---|"]
    for c in rows:
        rtt = c.get("rtt_ms", 0.0)
        first = c.get("first") or {}
        first_txt = ms_txt(first) + (f", {len(c['first_ms'])} pairs" if first else "")
        med = f"{c['median_ms']:.3f} ms" if c["median_ms"] is not None else "—"
        p99 = f"{c['p99_ms']:.3f} ms" if c["p99_ms"] is not None else "—"
        fails = "; ".join(c["failures"])[:120]
        L.append(f"| {'bare veth' if not rtt else f'{rtt:g} ms'} | {c['variant']} | "
                 f"{first_txt} | {spread_txt(c.get('first_ratio_to_tcp'))} | {c['n']} | "
                 f"{med} | {p99} | {spread_txt(c.get('later_ratio_to_tcp'))} | "
                 f"{(str(len(c['failures'])) + ': ' + fails) if fails else 0} |")
    return L


SETUP_WORDS = ("Connect and receive the server's first byte (`bench/probes.py`), then close. "
               "Each block starts a fresh hookerd pair on both hosts (and the probe server "
               "after it), so its first connection is the first to that peer (quic: it opens "
               "the QUIC connection); the later ones reuse what the first set up. The "
               "variants take turns block by block, each block starting with another one.")


def saved_setup_section(c: dict, name: str, heading=True) -> list[str]:
    """A saved suite run's set-up part (--parts setup --save)."""
    m, st = c["machine"], c["config"].get("setup", {})
    L = ([f"### {c.get('title') or name}", ""] if heading else []) + [
        f"`{name}`, {c['date']}: bench/suite.py {c['mode']} mode "
        f"({c.get('duration_s', '?')} s), {st.get('blocks', '?')} blocks per variant, "
        f"{st.get('connections', '?')} connections per variant on the bare veth "
        f"(at most {st.get('per_block_with_rtt', '?')} a block through hooker-linkemu); "
        f"Linux {m['kernel']}, {m['cores']} cores; "
        f"{loadavg_txt([x['loadavg'] for x in c.get('loadavg', [])])} during the run.", ""]
    L += [f"- {v}: {HOOKER_LABELS[v]}" for v in
          dict.fromkeys(r["variant"] for r in c["conn_setup"]) if v in HOOKER_LABELS]
    return L + [""] + setup_table(c["conn_setup"]) + [""]


def sweep_cell(d) -> str:
    n_bad, n_off, _ = failures_of(d)
    if not d["times_s"]:
        return "**failed**" + (f" ({n_bad} failed" + (f", {n_off} not run)" if n_off else ")")
                               if n_bad else f" (not run: {n_off})")
    return f"{fmt_s(d['median_s'])} ({len(d['times_s'])}/{len(d['times_s']) + n_bad + n_off})"


def loss_sweep_table(c: dict) -> list[str]:
    """Download time against loss, per file size measured at two loss rates or more:
    a row per variant, a column per loss rate; each cell the median and how many
    runs succeeded of those made or planned."""
    losses = c["config"].get("losses_pct", [])
    L = []
    for s in SIZES:
        at = [x for x in losses if any(d["size"] == s and d["loss_pct"] == x
                                       for d in c["downloads"])]
        if len(at) < 2:
            continue
        L += [f"{s}, median (downloads that succeeded / runs):", "",
              "| variant | " + " | ".join(f"{x:g}% loss" for x in at) + " |",
              "|---" * (len(at) + 1) + "|"]
        for v in variants_of(c):
            row = {d["loss_pct"]: d for d in c["downloads"] if d["variant"] == v and
                   d["size"] == s}
            L.append(f"| {v} | " + " | ".join(sweep_cell(row[x]) if x in row else "—"
                                             for x in at) + " |")
        L.append("")
    return L


def mech_cpu_section(c: dict, name: str) -> list[str]:
    """A saved bench/mech_cpu.py run: per variant and stream count, Gbit/s and CPU
    per GB, each with its ratio to plain TCP with as many streams in the round."""
    cfg = c["config"]
    way = "b → a (`-R`)" if cfg.get("reverse") else "a → b"
    bg = [r["background_cpu_per_s"] for r in c["rounds"] if "background_cpu_per_s" in r]
    L = [f"### {c.get('title') or name}", "",
         f"`{name}`, {c['date']}: {cfg['rounds']} rounds of iperf3 ({cfg['secs']} s, {way}, "
         f"{cfg['link']}, -P {' and '.join(map(str, cfg['streams']))}), "
         f"{', '.join(cfg['variants'])} taking turns in each round, each round starting one "
         f"case later; Linux {c['machine']['kernel']}, {c['machine']['cores']} cores. "
         f"{loadavg_txt([r.get('loadavg') for r in c['rounds']])} at the rounds' starts"
         + (f"; the machine's background, measured for 1 s before each round, "
            f"{min(bg):.2f}–{max(bg):.2f} busy CPU-s per s" if bg else "") + ".", "",
         "| variant | streams | runs | Gbit/s | ratio to tcp | CPU-s per GB | ratio to tcp "
         "| busy CPUs |", "|---|---|---|---|---|---|---|---|"]
    for key, sm in c["summary"].items():
        v, n = key.rsplit(" -P", 1)
        busy = [r[key]["cpu_s"] / r[key]["wall_s"] for r in c["rounds"]
                if "error" not in r[key] and r[key].get("wall_s")]
        runs = f"{sm['runs']}" + (f", **{len(sm['failures'])} failed**: "
                                  f"{sm['failures'][0][:80]}" if sm["failures"] else "")
        same = v == "tcp"
        L.append(f"| {v} | {n} | {runs} | {spread_txt(sm['gbps'])} | "
                 f"{'1' if same else spread_txt(sm['gbps_ratio_to_tcp'])} | "
                 f"{spread_txt(sm['cpu_s_per_gb'])} | "
                 f"{'1' if same else spread_txt(sm['cpu_ratio_to_tcp'])} | "
                 f"{f'{min(busy):.2f}–{max(busy):.2f}' if busy else '—'} |")
    return L + [""]


def saved_base(c: dict) -> str | None:
    """The plain TCP variant ratios are taken to: the system default congestion
    control if it was measured, else the first plain TCP variant."""
    vs = variants_of(c)
    default = f"tcp-{c['machine'].get('cc_default')}"
    return default if default in vs else next((v for v in vs if v.startswith("tcp-")), None)


def saved_download_table(c: dict, loss: float) -> list[str]:
    """Rows: file sizes; columns: variants; median (min–max) and the ratio of
    medians to plain TCP with the default congestion control."""
    vs = variants_of(c)
    base = saved_base(c)

    def cell(d, row):
        n_bad, n_off, why = failures_of(d)
        tail = (f", **{n_bad} failed**" if n_bad else "") + (f", {n_off} not run" if n_off else "")
        ts = d["times_s"]
        if not ts:
            return f"**failed** (n=0{tail}): {why[:80]}"
        txt = f"{fmt_s(d['median_s'])} ({fmt_s(min(ts))}–{fmt_s(max(ts))})"
        b = row.get(base)
        if d["variant"] != base and b and b["median_s"]:
            txt += f", {d['median_s'] / b['median_s']:.2f}×"
        return txt + f", n={len(ts)}{tail}"

    return ["| file | " + " | ".join(vs) + " |", "|---" * (len(vs) + 1) + "|"] + \
        size_rows(c, loss, vs, cell)


def saved_downloads_section(c: dict, name: str, out: Path | None = None,
                            rel: str = "") -> list[str]:
    """A saved suite run's downloads (bench/suite.py --save)."""
    cfg = c["config"]
    m = c["machine"]
    L = [f"### {c.get('title') or name}", "",
         f"`{name}`, {c['date']}: bench/suite.py {c['mode']} mode, "
         f"`--parts {','.join(cfg.get('parts', ['downloads']))}` "
         f"({c.get('duration_s', '?')} s), {cfg['runs']} interleaved runs per cell, "
         f"RTT 50 ms through hooker-linkemu, loss in both directions; Linux {m['kernel']}, "
         f"{m['cores']} cores; {loadavg_txt([x['loadavg'] for x in c.get('loadavg', [])])} "
         "during the run. Each cell: median (min–max) over runs, the ratio of medians "
         f"to {saved_base(c) or 'plain TCP (not measured)'}, and how many downloads "
         "succeeded (n) or "
         "failed (a reset, a timeout or a wrong byte: never a time).", ""]
    L += [f"- {v}: {HOOKER_LABELS[v]}" for v in variants_of(c) if v in HOOKER_LABELS]
    for v, pc in c.get("hooker", {}).get("path_check", {}).items():
        if "error" in pc:
            L.append(f"- wire check for {v}: **failed**: {pc['error']}")
        else:
            L.append(f"- wire check for {v} (510 KB): {pc['tcp_payload_bytes_http_port']} "
                     f"TCP payload bytes on port {pc['http_port']}, "
                     f"{pc['udp_payload_bytes_port_7000']} UDP and UDP-Lite payload bytes "
                     "on port 7000"
                     + (f", of them UDP-Lite {pc['udplite_payload_bytes_port_7000']}"
                        if "udplite_payload_bytes_port_7000" in pc else "") + quic_bytes(pc))
    L.append("")
    for loss in cfg.get("losses_pct", []):
        L += [f"{loss:g}% loss:", ""] + saved_download_table(c, loss) + [""]
    sweep = loss_sweep_table(c)
    if sweep:
        L += ["Loss sweep (the same run, time against loss):", ""] + sweep
        if out is not None and len(cfg.get("losses_pct", [])) >= 2:
            try:
                png = plot_loss_sweep(c, out, f"loss_sweep_{Path(name).stem}")
            except (RuntimeError, OSError) as e:  # no gnuplot: the table stands
                png, why = None, str(e)
            L += [f"![loss sweep of {name}]({rel}{png})", ""] if png else \
                [f"(plot not drawn: {why[:100]})", ""]
    if c.get("conn_setup"):
        L += ["Time to first byte in the same run:", ""] + \
            saved_setup_section(c, name, heading=False)
    return L


def saved_sections(out: Path | None = None, rel: str = "") -> list[str]:
    """Everything saved in bench/comparisons/, by kind, each from its own run;
    plots of saved runs go to `out` (none drawn without it), linked as rel + name."""
    saved = [(f, json.loads(f.read_text())) for f in sorted(COMPARISONS.glob("*.json"))]
    by_kind = lambda k: [(f, c) for f, c in saved if c.get("kind", "compare_builds") == k]  # noqa
    L = []
    if by_kind("udplite_impls"):
        L += ["## udplite: the kernel's UDP-Lite and BPF's, beside udp and plain TCP "
              "(bench/udplite_impls.py)", "",
              "Saved runs (`bench/comparisons/`), each from its own run: iperf3 throughput "
              "and the CPU each variant burns per GB moved.", "",
              "CPU-s per GB: the whole machine's busy CPU time (`/proc/stat`: user, nice, "
              "system, irq, softirq, steal; both hosts, every process, the background "
              "included) over the iperf3 client's run, per 10^9 bytes received. Each ratio "
              "is taken to tcp in the same round; the tables give median (min–max) over "
              "rounds. Busy CPUs: the machine's busy CPU-s per second of the run. Where "
              "every variant keeps all the cores busy, CPU-s per GB is the cores over the "
              "throughput (its ratio to tcp the inverse of the throughput's), and whatever "
              "else ran took its share of them.", ""]
        for f, c in by_kind("udplite_impls"):
            L += udplite_impls_section(c, f.name)
    if by_kind("downloads"):
        L += ["## Figure 2 downloads of other mechanisms (saved suite runs)", "",
              "Saved runs (`bench/suite.py --parts path,downloads --save`, in "
              "`bench/comparisons/`): udplite, tcp-cc and quic beside udp and plain TCP. "
              "udp and udplite do not retransmit: under loss a connection over them ends "
              "in a reset, counted as a failure.", ""]
        for f, c in by_kind("downloads"):
            L += saved_downloads_section(c, f.name, out, rel)
    if by_kind("setup"):
        L += ["## Time to first byte: the first and the later connections to a peer "
              "(saved suite runs)", "", SETUP_WORDS, ""]
        for f, c in by_kind("setup"):
            L += saved_setup_section(c, f.name)
    if by_kind("mech_cpu"):
        L += ["## Throughput and CPU per byte of the mechanisms (bench/mech_cpu.py)", "",
              "Saved runs, each from its own run: iperf3 on the bare veth with 1 and 4 "
              "streams, plain TCP and Hooker's mechanisms taking turns in every round. "
              "CPU-s per GB is measured as in the udplite section (the whole machine's busy "
              "CPU over the client's run, per 10^9 bytes received); each ratio is to plain "
              "TCP with as many streams in the same round; median (min–max) over rounds.",
              ""]
        for f, c in by_kind("mech_cpu"):
            L += mech_cpu_section(c, f.name)
    if by_kind("rules_cost"):
        L += ["## What the configuration file's rules cost an unmoved connection "
              "(bench/rules_cost.py)", "",
              "The sock_ops program walks the file's rule table at the connecting side's "
              "connect and the accepting side's establishment of every connection in the "
              "served cgroup, moved or not; since issue 12 only of connections to a port "
              "some rule names (the port mask: the others leave at one lookup, so rules "
              "over other ports cost them nothing). Saved runs (`bench/comparisons/`).", ""]
        for f, c in by_kind("rules_cost"):
            L += rules_cost_section(c, f.name)
    if by_kind("compare_builds"):
        L += ["## Before and after a change (bench/compare_builds.py)", "",
              "Saved comparisons, each from its own run: plain TCP and the two builds "
              "interleaved in rounds, each figure a ratio to plain TCP in its round.", ""]
        for f, c in by_kind("compare_builds"):
            L += [f"### {c['title'] or f.stem}", "",
                  f"`{f.name}`: {c['config']['rounds']} rounds, iperf3 {c['config']['secs']} s, "
                  f"{c['config']['setups']} set-ups and {c['config']['trips']} round trips "
                  "per round.", ""] + comparison_table(c) + [""]
    return L


def write(res: dict, out: Path, md_path: Path | None = None) -> Path:
    """Plots (and their data) into `out`; the report to md_path (default
    out/BENCHMARKS.md) with links relative to it."""
    out.mkdir(parents=True, exist_ok=True)
    md = md_path or out / "BENCHMARKS.md"
    rel = "" if md.parent.resolve() == out.resolve() else \
        str(out.resolve().relative_to(md.parent.resolve())) + "/"
    m = res["machine"]
    L = ["# Hooker benchmarks", "",
         f"Generated by `bench/run.sh` ({res['mode']} mode) on {res['date']} in "
         f"{res.get('duration_s', '?')} s. Every number in this file was measured by that "
         "run, each beside its baseline from the same run, except the saved runs of "
         "`bench/comparisons/` (each from its own run, dated in its section) and those "
         "marked **paper** (Bonfoh et al., CORES 2020). Raw data: "
         f"`{rel}results.json`. How it is measured: `bench/README.md`.", "",
         "## Machine", "",
         f"- Linux {m['kernel']}, {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
         f"{m['os']}",
         f"- {m['curl']}; {m['iperf3']}; kcptun {m['kcptun']}; Python {m['python']}",
         f"- Congestion controls available: {' '.join(m['cc_available'])}; system default "
         f"{m.get('cc_default')}",
         "- Two network namespaces; downloads cross `hooker-linkemu` (25 ms each way, "
         "loss applied in both directions), throughput uses the bare veth.", ""]

    h = res.get("hooker", {})
    L += ["## Hooker in this run", ""]
    if h.get("available"):
        L.append(f"hookerd: `{h['binary']}` (sha256 `{h.get('sha256', '?')[:16]}…`, copied at "
                 "the start so one build is measured throughout), started on both hosts "
                 "for every Hooker measurement and stopped after it.")
        for v, pc in h.get("path_check", {}).items():
            if "error" in pc:
                L.append(f"- wire check for {v}: **failed**: {pc['error']}")
            else:
                L.append(f"- wire check for {v} (510 KB download, captured on host b): "
                         f"{pc['tcp_payload_bytes_http_port']} TCP payload bytes on port "
                         f"{pc['http_port']}, "
                         + (f"{pc['udp_payload_bytes_port_7000']} UDP and UDP-Lite payload "
                            f"bytes on port 7000 (of them UDP-Lite "
                            f"{pc['udplite_payload_bytes_port_7000']})"
                            if "udplite_payload_bytes_port_7000" in pc else  # older runs
                            f"{pc['udp_payload_bytes_port_7000']} UDP payload bytes on port 7000")
                         + quic_bytes(pc) + f" (tcpdump dropped {pc.get('frames_tcpdump_dropped')}).")
                if pc["tcp_payload_bytes_http_port"] >= pc["file_bytes"]:
                    L.append("  **The file crossed the wire as TCP payload: Hooker did not "
                             "redirect it, so its numbers below measure plain TCP.**")
    else:
        L.append(f"**Hooker not available**: {h.get('reason', 'not requested')}. "
                 "Its columns are missing below; nothing stands in for them.")
    L.append("")

    L += ["## Figure 2: download time over HTTP, RTT 50 ms", "",
          f"`python3 -m http.server` on host b, `curl` on host a; every download is checked "
          f"byte for byte. Median of {res['config'].get('runs')} interleaved runs; (×) is the "
          "ratio to plain TCP with the system default congestion control (marked default).", "",
          "kcptun keeps one KCP session open between its client and server, so a "
          "download through it skips the TCP handshake across the emulated link.", "",
          f"> **paper**: {PAPER_FIG2}", ""]
    labels = [f"- {v}: {HOOKER_LABELS[v]}" for v in variants_of(res) if v in HOOKER_LABELS]
    L += labels + ([""] if labels else [])
    for loss in res["config"].get("losses_pct", []):
        L += [f"### {loss:g}% loss", "", download_table(res, loss), ""]
        png = plot_downloads(res, out, loss)
        if png:
            L += [f"![downloads at {loss:g}% loss]({rel}{png})", ""]
    png = plot_loss_sweep(res, out)
    if png:
        L += ["### Loss sweep", "", f"![loss sweep]({rel}{png})", ""]

    L += ["## Throughput on the bare veth (iperf3, a → b)", "",
          "CPU: the whole machine's busy time from /proc/stat over each run (both hosts, "
          "every process, and whatever else shares the machine), per GB received.", "",
          "| variant | streams | median Gbit/s | ratio to TCP | CPU-s per GB | ratio to TCP "
          "| runs |", "|---|---|---|---|---|---|---|"]

    def num(x, f="{:.3f}"):
        return f.format(x) if x else "—"
    for t in res["throughput"]:
        fails = f", **{len(t['failures'])} failed**: {t['failures'][0]}" if t["failures"] else ""
        L.append(f"| {t['variant']} | {t['streams']} | {num(t['median_gbps'])} | "
                 f"{num(t['ratio_to_tcp'])} | {num(t.get('median_cpu_s_per_gb'), '{:.2f}')} | "
                 f"{num(t.get('cpu_ratio_to_tcp'), '{:.2f}')} | {len(t['gbps'])}{fails} |")
    L.append("")
    if any(t["variant"].startswith("floor") for t in res["throughput"]):
        L += ["The floor rows are what this machine allows a daemon hop on each host, "
              "measured in the same runs with `bench/floor/udp_stream.cpp` in hookerd's "
              "shapes (GSO groups of 1432-byte datagrams, GRO, a 4 MB credit window, one "
              "thread a host): its UDP legs alone, and a bulk TCP transfer through a bare "
              "relay on each host, which copies every byte six times as Hooker's path does "
              "(loopback TCP where Hooker has sockmap redirects). They carry one transfer "
              "whatever the streams, as hookerd's one thread a host does.", ""]

    if res.get("conn_setup"):
        st = res["config"].get("setup", {})
        L += ["## Connection set-up: time to first byte", "", SETUP_WORDS + " "
              f"{st.get('blocks', 4)} blocks, {res['conn_setup'][0]['n'] + st.get('blocks', 0)}"
              " connections per variant on the bare veth"
              + (f" (at most {st['per_block_with_rtt']} a block through hooker-linkemu)"
                 if any(c.get("rtt_ms") for c in res["conn_setup"]) else "") + ".", ""]
        L += setup_table(res["conn_setup"]) + [""]
    L += rr_section(res.get("rr"), res["config"].get("rr", {}))
    for sc in res.get("scale", []):
        L += [f"## Scale: {sc['connections']} connections held through {sc['variant']}", ""]
        if "error" in sc:
            L += [f"**failed**: {sc['error']}", ""]
            continue
        maps = sc.get("bpf_maps", [])
        total = sum(m["bytes"] or 0 for m in maps)
        L += [f"Opened in {sc['open_s']:.1f} s. hookerd RSS idle → held: " + ", ".join(
            f"host {h} {sc['rss_kib_idle'][h]} → {sc['rss_kib_held'][h]} KiB"
            for h in sc["rss_kib_held"]) + f". BPF maps of both daemons: {len(maps)} maps, "
            f"{total / 2**20:.1f} MiB charged (`bytes_memlock`, sized by max entries, "
            "so independent of the count held).", ""]
    L += unmoved_section(res.get("unmoved"))
    t1 = res.get("table1", {})
    L += ["## Table 1: deployment and redirection costs", "",
          "| | compile | load | redirection per op |", "|---|---|---|---|"]
    for row in PAPER_TABLE1:
        L.append(f"| **paper**: {row[0]} (Linux 5.0) | {row[1]} | {row[2]} | {row[3]} |")
    ready = t1.get("hookerd_ready_ms")
    runs = [r for r in t1.get("bpf_run_time", []) if r["type"] == "sk_msg"]
    op = (f"{min(r['ns_per_run'] for r in runs):.0f}–{max(r['ns_per_run'] for r in runs):.0f}"
          f" ns per sk_msg run (`bpf_stats_enabled`, during iperf3)" if runs else "not measured")
    L.append(f"| this run: hookerd | 0 (built ahead, CO-RE) | "
             f"{'%.1f ms start to ready (median of %d)' % (ready['median'], len(ready['runs'])) if ready else 'not measured'}"
             f" | {op} |")
    for dep in t1.get("deploy_ms", []):
        cost = (f"{dep['median']:.2f} ms (median of {len(dep['runs'])}, "
                f"{min(dep['runs']):.2f}–{max(dep['runs']):.2f}; the control request "
                f"{dep['request_median']:.2f} ms)" if dep.get("runs") else
                f"failed: {dep.get('error', 'no run')}")
        L.append(f"| this run: deploy `{dep['mechanism']}` on a running hookerd | "
                 f"0 (compiled in) | {cost} | N/A |")
    L.append("")
    if t1.get("hookerd_phases_ms"):
        L += ["hookerd's own start-up breakdown (printed with -v, whose libbpf log slows "
              "it), median ms: "
              + ", ".join(f"{k} {v['median']:.2f}" for k, v in t1["hookerd_phases_ms"].items())
              + ".", ""]
    if t1.get("floor_ms"):
        f = t1["floor_ms"]
        link = f["tcx_link_ms"]
        L += ["The floor of start-up (`bench/floor/attach.cpp`, the same interface, median "
              f"(min–max) of {len(link['runs'])}): an empty tc program loads in "
              f"{f['load_ms']['median']:.2f} ms and its tcx link takes {link['median']:.1f} ms "
              f"({min(link['runs']):.1f}–{max(link['runs']):.1f}), the kernel waiting for an "
              "RCU grace period as it swaps the interface's program list: any start that "
              "links a program there pays it.", ""]
    if t1.get("bpf_run_time"):
        L += ["BPF programs loaded by hookerd during iperf3, both hosts and all runs added up:", "",
              "| variant | streams | program | type | runs | ns/run |", "|---|---|---|---|---|---|"]
        for r in t1["bpf_run_time"]:
            L.append(f"| {r['variant']} | {r['streams']} | {r['prog']} | {r['type']} | "
                     f"{r['run_cnt']} | {r['ns_per_run']:.0f} |")
        L.append("")

    L += saved_sections(out, rel)
    if res["not_measured"]:
        L += ["## Not measured in this run", ""]
        L += [f"- {n['what']}: {n['why']}" for n in res["not_measured"]]
        L.append("")
    md.write_text("\n".join(L))
    return md


def rr_section(rows, cfg) -> list[str]:
    """1-byte request/response on a kept connection: each round's median round
    trip per variant, and its ratio to plain TCP's in the same round."""
    if not rows:
        return []
    L = ["## Request/response: 1 byte each way on a kept connection", "",
         f"One connection per variant and round, {cfg.get('trips', '?')} round trips of one "
         f"byte (`bench/rr_latency.py`'s client and server), the variants taking turns in "
         f"{cfg.get('rounds', '?')} rounds on the bare veth. Median (min–max) over rounds of "
         "each round's median; the ratio is to plain TCP's in the same round.", ""]
    if any(r["variant"].startswith("floor") for r in rows):
        L += ["The floor rows are what this machine allows, measured in the same rounds: the "
              "same bytes as UDP datagrams alone, and the same TCP client and server with a "
              "bare relay on each host carrying the bytes over UDP (`bench/floor/relay.cpp`: "
              "the daemon hop on each side of Hooker's path, and nothing else).", ""]
    L += ["| variant | round trip, µs | ratio to TCP | failures |", "|---|---|---|---|"]

    def spread(xs, f):
        return (f"{f.format(statistics.median(xs))} ({f.format(min(xs))}–{f.format(max(xs))})"
                if xs else "—")
    for r in rows:
        fails = f"{len(r['failures'])}: {r['failures'][0]}" if r["failures"] else "0"
        ratio = "—" if r["variant"].startswith("tcp") else spread(r["ratio_to_tcp"], "{:.2f}×")
        L.append(f"| {r['variant']} | {spread(r['median_us'], '{:.1f}')} | {ratio} | {fails} |")
    return L + [""]


def unmoved_section(u) -> list[str]:
    """Traffic hookerd does not move (bench/tax.py): plain TCP with and without
    hookerd on both hosts, ratios per round, and its programs' run times."""
    if not u:
        return []
    L = ["## Traffic hookerd does not move", "",
         f"Plain TCP on ports outside the policy ({u.get('policy', '?')}), hookerd on both "
         "hosts or on neither, in interleaved rounds of one run.", ""]
    if "error" in u:
        return L + [f"**failed**: {u['error']}", ""]

    def spread(xs):
        return f"{statistics.median(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"
    L += ["| per round | without hookerd | with hookerd | ratio, median (min–max) |",
          "|---|---|---|---|",
          f"| iperf3 Gbit/s, 1 stream, {u['iperf_secs']} s | "
          f"{spread(u['runs']['without']['gbps'])} | {spread(u['runs']['with']['gbps'])} | "
          f"{spread(u['throughput_ratio'])} |",
          f"| 1-byte request/response, median µs of {u['trips']} | "
          f"{spread(u['runs']['without']['rr_us'])} | {spread(u['runs']['with']['rr_us'])} | "
          f"rate {spread(u['rr_rate_ratio'])} |", ""]
    if u.get("programs"):
        L += ["hookerd's programs that ran for this traffic (`bpf_stats_enabled`, both hosts): " +
              ", ".join(f"{n} {p['ns_per_run']:.0f} ns a run ({p['runs']} runs)"
                        for n, p in sorted(u["programs"].items())) + ".", ""]
    return L


def main(argv) -> int:
    """report.py RESULTS_JSON [OUTDIR]: re-render a report from a saved results.json;
    report.py --reference: bench/BENCHMARKS.md again from bench/plots/results.json
    (the last full run) with what bench/comparisons/ holds now."""
    here = Path(__file__).resolve().parent
    if argv == ["--reference"]:
        src, out, md = here / "plots" / "results.json", here / "plots", here / "BENCHMARKS.md"
    elif len(argv) in (1, 2) and not argv[0].startswith("-"):
        src = Path(argv[0])
        out, md = (Path(argv[1]) if len(argv) == 2 else src.parent), None
    else:
        print("usage: report.py RESULTS_JSON [OUTDIR] | report.py --reference", file=sys.stderr)
        return 2
    try:
        res = json.loads(src.read_text())
    except (OSError, ValueError) as e:
        print(f"report: {src}: {e}", file=sys.stderr)
        return 2
    print(write(res, out, md))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
