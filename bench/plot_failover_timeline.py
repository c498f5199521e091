#!/usr/bin/env python3
"""Renders failover timelines (bench/failover_events.py rows) as horizontal bars.

  bench/plot_failover_timeline.py TIMELINE.csv OUT.png [--title TEXT]

One row per kill, time in ms after the kill -9 of the primary: kill -> the
backup sees the stream end -> it decides to take over (--failover-timeout
after its last contact) -> the guest runs again on it -> the first reply a
client gets. Needs matplotlib (bench/plot_setup). Used by bench/plots
(the kills of bench/failover_timeline) and by scripts/demo --plot (its one kill).
"""
import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PHASES = [  # (from, to, label, colour)
    ("kill", "detected_ms", "kill → stream end seen", "C3"),
    ("detected_ms", "takeover_ms", "waiting out --failover-timeout", "C1"),
    ("takeover_ms", "running_ms", "taking over: guest resumed", "C2"),
    ("running_ms", "reply_ms", "guest running → first client reply", "C0"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("png")
    ap.add_argument("--title", default="Failover timeline after kill -9 of the primary")
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.csv)))
    if not rows:
        raise SystemExit(f"{a.csv}: no rows")
    fig, ax = plt.subplots(figsize=(10, 2.0 + 0.55 * len(rows)))
    labelled = set()
    right = 0.0
    for y, r in enumerate(reversed(rows)):
        t = {"kill": 0.0}
        for k in ("detected_ms", "takeover_ms", "running_ms", "reply_ms"):
            if r.get(k):
                t[k] = float(r[k])
        for start, end, label, color in PHASES:
            if start in t and end in t and t[end] > t[start]:
                ax.barh(y, t[end] - t[start], left=t[start], height=0.55, color=color,
                        label=None if label in labelled else label)
                labelled.add(label)
        right = max([right] + list(t.values()))
        if "reply_ms" in t:
            ax.annotate(f"{t['reply_ms']:.0f} ms", (t["reply_ms"], y), xytext=(4, -3),
                        textcoords="offset points", fontsize=8)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.get("label") or f"kill {i + 1}" for i, r in enumerate(reversed(rows))])
    ax.set_xlabel("ms after kill -9 of the primary")
    ax.set_xlim(-0.02 * right, 1.1 * right)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.5 / (1 + 0.3 * len(rows))),
              ncol=4, frameon=False)
    load = rows[0].get("loadavg")
    extra = f" (interval {rows[0]['interval']}, --failover-timeout {rows[0]['failover_timeout']}" \
            f"; shared 2-CPU VM, 1-min load {load})" if load else ""
    ax.set_title(a.title + extra, fontsize=10)
    fig.tight_layout()
    fig.savefig(a.png, dpi=110)


if __name__ == "__main__":
    main()
