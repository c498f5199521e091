#!/usr/bin/env python3
"""Renders pause_bench --sweep's CSV as a plot of pause against arena size.

  bench/plot_pause_vs_arena.py SWEEP.csv OUT.png

One panel per dirty-set size, one line per tracker and dirty-page pattern
(pause p50; "fresh" solid, "same" dashed), log-log axes, the 1 ms line dotted.
Needs python3-matplotlib (bench/arena_sweep installs it).
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_pause_vs_arena.py SWEEP.csv OUT.png")
    rows = list(csv.DictReader(open(sys.argv[1])))
    if not rows:
        sys.exit(f"{sys.argv[1]}: no rows")
    counts = sorted({int(r["dirty_pages"]) for r in rows})
    trackers = sorted({r["tracker"] for r in rows})
    patterns = sorted({r.get("pattern", "spread") for r in rows})
    series = defaultdict(list)  # (tracker, pattern, dirty) -> [(arena, p50)]
    for r in rows:
        key = (r["tracker"], r.get("pattern", "spread"), int(r["dirty_pages"]))
        series[key].append((int(r["arena_mib"]), float(r["pause_p50_us"]) / 1000))
    cols = 2 if len(counts) > 1 else 1
    nrows = (len(counts) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 4 * nrows), squeeze=False)
    colors = {t: f"C{i}" for i, t in enumerate(trackers)}
    for ax, n in zip(axes.flat, counts):
        for t in trackers:
            for i, pat in enumerate(patterns):
                pts = sorted(series.get((t, pat, n), []))
                if not pts:
                    continue
                style = "o-" if i == 0 else "x--"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colors[t],
                        label=f"{t}, {pat}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{n} dirty pages per checkpoint")
        ax.set_xlabel("arena (MiB)")
        ax.set_ylabel("pause p50 (ms)")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(counts):]:
        ax.set_visible(False)
    load = rows[0].get("loadavg", "")
    fig.suptitle(f"Checkpoint pause against arena size (pause_bench --sweep; loadavg {load})")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
