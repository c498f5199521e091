#!/usr/bin/env python3
"""Renders bench/e2e's CSV as throughput and p99 latency against connections.

  bench/plot_e2e.py E2E.csv OUT.png

Two rows of panels, one per requests-in-flight depth (1, 16, ...); left
throughput (ops/s), right p99 latency (ms), both log-scaled, one line per
configuration: unprotected, backup 50 ms (interval), eager (when measured),
Redis + WAIT 1 0 (and its batched form), so protection's cost and the user's
alternative sit side by side. Each point is the median of the CSV's runs.
Needs matplotlib (bench/e2e --plot unpacks it via bench/install_matplotlib).
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Configurations drawn, in legend order, with their style.
SERIES = [
    ("unprotected", "unprotected", "k", "-", "o"),
    ("backup-50", "Romulus, interval 50 ms", "tab:blue", "-", "o"),
    ("eager", "Romulus, eager", "tab:green", "-", "o"),
    ("nobuf", "Romulus, no output commit", "tab:gray", ":", "x"),
    ("redis-wait", "Redis + WAIT 1 0 per write", "tab:red", "-", "o"),
    ("redis-wait-batch", "Redis + one WAIT per batch", "tab:red", "--", "s"),
]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_e2e.py E2E.csv OUT.png")
    rows = list(csv.DictReader(open(sys.argv[1])))
    if not rows:
        sys.exit(f"{sys.argv[1]}: no rows")
    depths = sorted({int(r["in_flight"]) for r in rows})
    data = defaultdict(list)  # (config, depth) -> [(clients, ops, p99)]
    for r in rows:
        data[(r["config"], int(r["in_flight"]))].append(
            (int(r["clients"]), float(r["ops_per_sec"]), float(r["p99_ms"])))
    fig, axes = plt.subplots(len(depths), 2, figsize=(11, 4 * len(depths)), squeeze=False)
    for row, depth in enumerate(depths):
        tput, lat = axes[row]
        for config, label, color, style, marker in SERIES:
            points = sorted(data.get((config, depth), []))
            if not points:
                continue
            xs = [p[0] for p in points]
            tput.plot(xs, [p[1] for p in points], style, color=color, marker=marker, label=label)
            lat.plot(xs, [p[2] for p in points], style, color=color, marker=marker, label=label)
        for ax, what in ((tput, "throughput (ops/s)"), (lat, "p99 latency (ms)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("connections (closed loop)")
            ax.set_ylabel(what)
            ax.set_title(f"{what.split(' (')[0]}, {depth} request(s) in flight per connection")
            ax.grid(True, which="both", alpha=0.3)
        tput.legend(fontsize=8)
    loads = {r["loadavg_min"] for r in rows} | {r["loadavg_max"] for r in rows}
    fig.suptitle("bench/e2e: SET 32 B, loopback, medians "
                 f"(1-min load average {min(map(float, loads)):.1f}-{max(map(float, loads)):.1f}, "
                 "shared 2-CPU machine)", fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
