#!/usr/bin/env python3
"""Renders bench/e2e --csv as throughput and p99 latency against the interval.

  bench/plot_e2e_interval.py E2E.csv OUT.png

Rows of configurations with a real backup (`backup-I`, output commit on, one
request in flight per client):
left, throughput (ops/s, log), right, the clients' p99 latency; one line per
client count, and the unprotected run of the same client count (same bench
run) dotted in the same colour. Needs
matplotlib (bench/plot_setup).
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def normalise(r):
    """bench/e2e's CSV rows (config ids such as backup-50), or the older format
    (config "backup 50 ms", interval_ms, no in_flight column): config, clients,
    in_flight, interval_ms (None: not a backup-I row) and the measured columns."""
    r = dict(r)
    r.setdefault("in_flight", "1")
    if "interval_ms" in r:  # the older format
        backup = r.get("backup") == "1" and r["config"] == f"backup {r['interval_ms']} ms"
        r["interval_ms"] = r["interval_ms"] if backup else None
    else:
        c = r["config"]
        r["interval_ms"] = c[len("backup-"):] if c.startswith("backup-") else None
    return r


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_e2e_interval.py E2E.csv OUT.png")
    rows = [normalise(r) for r in csv.DictReader(open(sys.argv[1]))]
    rows = [r for r in rows if r["in_flight"] == "1"]
    swept = [r for r in rows if r["interval_ms"] is not None]
    if not swept:
        sys.exit(f"{sys.argv[1]}: no 'backup-I' rows with 1 request in flight")
    base = {r["clients"]: r for r in rows if r["config"] == "unprotected"}
    series = defaultdict(list)
    for r in swept:
        series[int(r["clients"])].append((int(r["interval_ms"]), r))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, (clients, pts) in enumerate(sorted(series.items())):
        pts.sort()
        x = [p[0] for p in pts]
        color = f"C{i}"
        left.plot(x, [float(p[1]["ops_per_sec"]) for p in pts], "o-", color=color,
                  label=f"{clients} clients")
        right.plot(x, [float(p[1]["p99_ms"]) for p in pts], "o-", color=color,
                   label=f"{clients} clients")
        if str(clients) in base:
            left.axhline(float(base[str(clients)]["ops_per_sec"]), color=color, ls=":", lw=1,
                         label=f"{clients} clients, unprotected")
            right.axhline(float(base[str(clients)]["p99_ms"]), color=color, ls=":", lw=1,
                          label=f"{clients} clients, unprotected")
    left.set_ylabel("throughput (ops/s)")
    left.set_yscale("log")
    right.set_ylabel("client latency p99 (ms)")
    right.set_yscale("log")
    for ax in (left, right):
        ax.set_xlabel("checkpoint interval (ms)")
        ax.set_xscale("log")
        ticks = sorted({p[0] for pts in series.values() for p in pts})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    load = f"{rows[0].get('loadavg_min', '?')}-{rows[0].get('loadavg_max', '?')}"
    fig.suptitle("romulus-kvstore under romulus-kvload, protected by a real backup on loopback "
                 f"(bench/e2e; shared 2-CPU VM, 1-min load {load})", fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
