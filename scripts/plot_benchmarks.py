#!/usr/bin/env python3
"""Turns benchmark results (JSON) into the SVG plots of docs/benchmarks.md.

Reads the files the benches write with `--json FILE`:

* `benches/loadgen.rs` relay mode  (`"mode": "relay"`):  node and baseline msg/s, one-way p50/p99
* `benches/loadgen.rs` fan-out mode (`"mode": "fanout"`): all-received p50/p99
* `benches/federation.rs` (`"bench": "federation"`):   intra- and inter-domain msg/s, p50
* `benches/syncher.rs` (`"bench": "syncher"`):         Syncher fan-out and throughput against the raw node

and writes, into --out (default docs/plots):

* relay.svg    throughput of every relay measurement (node against its baseline)
* latency.svg  one-way latencies of the relay measurements (log scale)
* fanout.svg   time until every subscriber has an update (log scale)

Only the Python standard library is used. Every text that comes from a file is
escaped before it goes into the SVG.

    python3 scripts/plot_benchmarks.py --out docs/plots bench-results/*.json
"""

import argparse
import json
import math
import os
import sys
from xml.sax.saxutils import escape, quoteattr

WIDTH = 760
LABEL_W = 250
VALUE_W = 110
BAR_H = 18
BAR_GAP = 6
GROUP_GAP = 16
TOP = 58
COLOURS = {
    "node": "#1f66c2",
    "baseline": "#9a9aa6",
    "inter": "#c2461f",
    "syncher": "#2a8a3e",
}


# ---- reading -----------------------------------------------------------------


def load(path):
    """The JSON document in `path` (the last non-empty line, so a captured stdout
    with a text report before the JSON line also works)."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return json.loads("\n".join(lines))


def kind(doc):
    if doc.get("mode") in ("relay", "fanout"):
        return doc["mode"]
    if doc.get("bench") in ("federation", "syncher"):
        return doc["bench"]
    raise ValueError("not a loadgen, federation or syncher result")


def num(v):
    return float(v) if isinstance(v, (int, float)) else None


def node_label(doc):
    return "2nd baseline (self-test)" if doc.get("self_test") else "node"


def relay_title(p):
    return (f"relay, {p.get('pairs', '?')} pair(s), window {p.get('window', '?')}"
            f", {p.get('messages', '?')} msgs/pair")


# ---- what each chart shows: groups of (label, value, colour) ----------------------


def relay_groups(docs):
    groups = []
    for d in docs:
        k = kind(d)
        if k == "relay":
            n, b = d.get("node_median", {}), d.get("baseline_median", {})
            bars = []
            if d.get("node"):
                bars.append((node_label(d), num(n.get("msgs_per_sec")), "node"))
            bars.append(("baseline relay", num(b.get("msgs_per_sec")), "baseline"))
            groups.append((relay_title(d.get("params", {})), bars))
        elif k == "federation":
            m = d.get("medians", {})
            groups.append((f"federation, {d['params'].get('pairs', '?')} pairs, window "
                           f"{d['params'].get('window', '?')}", [
                               ("intra-domain (A → A)", num(m.get("intra", {}).get("msgs_per_sec")), "node"),
                               ("inter-domain (A → B)", num(m.get("inter", {}).get("msgs_per_sec")), "inter"),
                           ]))
        elif k == "syncher":
            t = d.get("throughput", {})
            groups.append(("Syncher updates to one observer", [
                ("Syncher updates/s", num(t.get("syncher_updates_per_sec")), "syncher"),
                ("node relay, same frame size", num(t.get("relay", {}).get("msgs_per_sec")), "node"),
            ]))
    return groups


def percentile_bars(d, prefix):
    """p50 and p99 bars (fields `<prefix>p50_us`, `<prefix>p99_us`) of the node,
    when the run measured it, and of the baseline."""
    bars = []
    for who, median, cls in ((node_label(d), "node_median", "node"),
                             ("baseline", "baseline_median", "baseline")):
        if cls == "node" and not d.get("node"):
            continue
        m = d.get(median, {})
        bars += [(f"{who} p{q}", num(m.get(f"{prefix}p{q}_us")), cls) for q in (50, 99)]
    return bars


def latency_groups(docs):
    groups = []
    for d in docs:
        k = kind(d)
        if k == "relay":
            groups.append((relay_title(d.get("params", {})), percentile_bars(d, "")))
        elif k == "federation":
            m = d.get("medians", {})
            groups.append(("federation, one-way p50 under load", [
                ("intra-domain p50", num(m.get("intra", {}).get("p50_us")), "node"),
                ("inter-domain p50", num(m.get("inter", {}).get("p50_us")), "inter"),
            ]))
    return groups


def fanout_groups(docs):
    groups = []
    for d in docs:
        k = kind(d)
        if k == "fanout":
            bars = percentile_bars(d, "all_received_")
            p = d.get("params", {})
            groups.append((f"fan-out to {p.get('subscribers', '?')} sessions, "
                           f"{p.get('updates', '?')} updates", bars))
        elif k == "syncher":
            f = d.get("fanout", {})
            s = f.get("syncher", {})
            p = d.get("params", {})
            # a list of {sessions, report}, or (older results) one report to as
            # many sessions as runtimes
            raws = f.get("raw", [])
            if isinstance(raws, dict):
                raws = [{"sessions": p.get("runtimes", "?"), "report": raws}]
            bars = [("Syncher p50", num(s.get("p50_us")), "syncher"),
                    ("Syncher p99", num(s.get("p99_us")), "syncher")]
            for r in raws:
                a = r.get("report", {}).get("all_received", {})
                n = r.get("sessions", "?")
                bars += [(f"raw /sm fan-out to {n} sessions p50", num(a.get("p50_us")), "node"),
                         (f"raw /sm fan-out to {n} sessions p99", num(a.get("p99_us")), "node")]
            groups.append((f"Syncher: {p.get('observers', '?')} observers in "
                           f"{p.get('runtimes', '?')} runtimes", bars))
    return groups


# ---- drawing -----------------------------------------------------------------------


def fmt_rate(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M/s"
    if v >= 1e3:
        return f"{v / 1e3:.1f} K/s"
    return f"{v:.0f}/s"


def fmt_us(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} s"
    if v >= 1e3:
        return f"{v / 1e3:.2f} ms"
    return f"{v:.1f} µs"


def text(x, y, s, **attrs):
    a = "".join(f" {k.replace('_', '-')}={quoteattr(str(v))}" for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{a}>{escape(str(s))}</text>'


def chart(title, subtitle, groups, fmt, log=False):
    """A horizontal grouped bar chart as an SVG document (a string)."""
    values = [v for _, bars in groups for _, v, _ in bars if v is not None and v > 0]
    hi = max(values) if values else 1.0
    lo = min(values) if values else 1.0
    plot_w = WIDTH - LABEL_W - VALUE_W
    if log:
        lo_exp = math.floor(math.log10(lo))
        hi_exp = math.ceil(math.log10(hi))
        if hi_exp == lo_exp:
            hi_exp += 1

        def scale(v):
            return (math.log10(v) - lo_exp) / (hi_exp - lo_exp) * plot_w if v and v > 0 else 0

        ticks = [10 ** e for e in range(lo_exp, hi_exp + 1)]
    else:
        power = 10 ** math.floor(math.log10(hi))
        top, divisions = 10 * power, 5
        for m, d in ((1, 4), (2, 4), (4, 4), (5, 5), (6, 6), (8, 4), (10, 5)):
            if hi <= m * power:
                top, divisions = m * power, d
                break

        def scale(v):
            return v / top * plot_w if v and v > 0 else 0

        ticks = [top * i / divisions for i in range(divisions + 1)]

    height = TOP + sum(24 + len(bars) * (BAR_H + BAR_GAP) + GROUP_GAP for _, bars in groups) + 20
    desc = "; ".join(f"{g}: " + ", ".join(f"{label} {fmt(v)}" for label, v, _ in bars)
                     for g, bars in groups) or "no results"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-labelledby="title desc" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12">',
        f"<title id=\"title\">{escape(title)}</title>",
        f"<desc id=\"desc\">{escape(desc)}</desc>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        text(10, 22, title, font_size=16, font_weight="bold", fill="#1d1d22"),
        text(10, 40, subtitle, fill="#5c5c66"),
    ]
    axis_bottom = height - 20
    for t in ticks:
        x = LABEL_W + scale(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP - 6}" y2="{axis_bottom}" '
                   f'stroke="#d9d9e0" stroke-width="1"/>')
        out.append(text(x, axis_bottom + 14, fmt(t) if t else "0", text_anchor="middle", fill="#5c5c66",
                        font_size=10))
    y = TOP
    for group, bars in groups:
        out.append(text(10, y + 14, group, font_weight="bold", fill="#1d1d22"))
        y += 24
        for label, v, colour in bars:
            w = scale(v)
            out.append(text(LABEL_W - 8, y + BAR_H - 5, label, text_anchor="end", fill="#1d1d22"))
            out.append(f'<rect x="{LABEL_W}" y="{y}" width="{max(w, 0):.1f}" height="{BAR_H}" rx="3" '
                       f'fill="{COLOURS.get(colour, "#1f66c2")}"/>')
            out.append(text(LABEL_W + w + 6, y + BAR_H - 5, fmt(v), fill="#1d1d22"))
            y += BAR_H + BAR_GAP
        y += GROUP_GAP
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="JSON results written by the benches' --json FILE")
    ap.add_argument("--out", default=os.path.join("docs", "plots"), help="directory for the SVGs")
    args = ap.parse_args(argv)
    docs = []
    for path in args.files:
        try:
            doc = load(path)
            kind(doc)
        except (OSError, ValueError, KeyError) as e:
            print(f"plot_benchmarks: {path}: {e}", file=sys.stderr)
            return 1
        docs.append(doc)
    os.makedirs(args.out, exist_ok=True)
    plots = [
        ("relay.svg", "Relay throughput", "medians; higher is better; node and baseline measured in one run",
         relay_groups(docs), fmt_rate, False),
        ("latency.svg", "One-way latency", "medians of p50 and p99; lower is better; log scale",
         latency_groups(docs), fmt_us, True),
        ("fanout.svg", "Fan-out: until every subscriber has the update",
         "medians of p50 and p99; lower is better; log scale", fanout_groups(docs), fmt_us, True),
    ]
    for name, title, subtitle, groups, fmt, log in plots:
        if not groups:
            continue
        path = os.path.join(args.out, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(chart(title, subtitle, groups, fmt, log))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
