#!/usr/bin/env python3
"""Renders checkpoint_rate_bench --csv as checkpoint rate against dirty rate.

  bench/plot_checkpoint_rate.py RATE.csv OUT.png

x: the page writes per second the dirtier achieved (log); left: checkpoints per
second achieved, one line per tracker and interval, with the interval's target
(1 / interval) dotted; right: pause p50 on the same x. Needs matplotlib
(bench/plot_setup).
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_checkpoint_rate.py RATE.csv OUT.png")
    rows = list(csv.DictReader(open(sys.argv[1])))
    if not rows:
        sys.exit(f"{sys.argv[1]}: no rows")
    series = defaultdict(list)
    for r in rows:
        series[(r["tracker"], int(r["interval_ms"]))].append(
            (float(r["achieved_pages_per_sec"]), float(r["checkpoints_per_sec"]),
             float(r["pause_p50_ms"]), float(r["target_per_sec"])))
    trackers = sorted({k[0] for k in series})
    intervals = sorted({k[1] for k in series})
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = ["o-", "s--", "^-.", "d:"]
    for (t, ms), pts in sorted(series.items()):
        pts.sort()
        color = f"C{trackers.index(t)}"
        style = styles[intervals.index(ms) % len(styles)]
        x = [p[0] for p in pts]
        left.plot(x, [p[1] for p in pts], style, color=color, label=f"{t}, {ms} ms")
        right.plot(x, [p[2] for p in pts], style, color=color, label=f"{t}, {ms} ms")
    for ms in intervals:
        left.axhline(1000.0 / ms, color="grey", lw=0.8, ls=":")
        left.annotate(f"target at {ms} ms", (0.01, 1000.0 / ms), xycoords=("axes fraction", "data"),
                      fontsize=7, color="grey", va="bottom")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("dirty rate: page writes per second (achieved)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("checkpoints per second")
    left.set_ylim(bottom=0)
    right.set_ylabel("pause p50 (ms)")
    right.set_yscale("log")
    span = rows[0].get("span", "?")
    loads = sorted(r.get("loadavg", "").split(" ")[0] for r in rows)
    fig.suptitle(f"Checkpoint rate against dirty rate (checkpoint_rate_bench, dirtier span {span} "
                 f"pages, NullTransport; shared 2-CPU VM, 1-min load {loads[0]}-{loads[-1]})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
