#!/usr/bin/env python3
"""Renders pause_bench --sweep's CSV as pause time against dirty pages.

  bench/plot_pause_vs_dirty.py SWEEP.csv OUT.png [--arena-mib M] [--pattern P]

One line per tracker: the pause p50 (solid, markers; p50..p99 shaded) and,
in the same colour, dashed, the unavoidable sum measured in the same rounds
(stop/cont + memcpy of the dirty pages): how far each pause is from what no
implementation can avoid. Log-log axes. Rows of one arena size and one dirty
pattern (default: the first in the file). Needs matplotlib (bench/plot_setup).
"""
import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("png")
    ap.add_argument("--arena-mib", type=int)
    ap.add_argument("--pattern")
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.csv)))
    if not rows:
        raise SystemExit(f"{a.csv}: no rows")
    arena = a.arena_mib or int(rows[0]["arena_mib"])
    pattern = a.pattern or rows[0]["pattern"]
    rows = [r for r in rows if int(r["arena_mib"]) == arena and r["pattern"] == pattern
            and int(r["dirty_pages"]) > 0]
    if not rows:
        raise SystemExit(f"{a.csv}: no rows for {arena} MiB, pattern {pattern}")
    trackers = sorted({r["tracker"] for r in rows})
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, t in enumerate(trackers):
        pts = sorted((int(r["dirty_pages"]), float(r["pause_p50_us"]) / 1000,
                      float(r["pause_p99_us"]) / 1000, float(r["unavoidable_us"]) / 1000)
                     for r in rows if r["tracker"] == t)
        n = [p[0] for p in pts]
        color = f"C{i}"
        ax.plot(n, [p[1] for p in pts], "o-", color=color, label=f"{t}: pause p50")
        ax.fill_between(n, [p[1] for p in pts], [p[2] for p in pts], color=color, alpha=0.12,
                        label=f"{t}: p50..p99")
        ax.plot(n, [p[3] for p in pts], "--", color=color, lw=1.5,
                label=f"{t}: unavoidable (stop/cont + memcpy)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dirty pages per checkpoint")
    ax.set_ylabel("guest paused (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    load = rows[0].get("loadavg", "")
    ax.set_title(f"Checkpoint pause against dirty pages ({arena} MiB arena, {pattern} pages)\n"
                 f"pause_bench --sweep; shared 2-CPU VM, loadavg {load}", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.png, dpi=110)


if __name__ == "__main__":
    main()
