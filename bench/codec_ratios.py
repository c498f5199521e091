#!/usr/bin/env python3
"""Runs codec_bench binaries several times, alternating, and prints for each
benchmark the median over runs of its rate and of its ratio to a baseline of
the same run and working set (encode and diff_words: memcmp_identical;
decode: memcpy, and for RUN/SKIP decode also the reference decoder of the
same pattern). Used for the tables in docs/performance.md, "Codecs".

  bench/codec_ratios.py [--runs 5] [--filter REGEX] [--min-time 0.1] BINARY...
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run_once(binary, flt, min_time):
    out = subprocess.run(
        [binary, "--benchmark_format=json", f"--benchmark_min_time={min_time}",
         f"--benchmark_filter={flt}"],
        check=True, capture_output=True, text=True).stdout
    rates = {}
    for b in json.loads(out)["benchmarks"]:
        if "bytes_per_second" in b:
            rates[b["name"]] = (b["bytes_per_second"] / 2**30, b.get("bytes_per_page"))
    return rates


def baselines(name):
    """(label, baseline name) pairs for a benchmark name like encode/runskip/sparse/l2."""
    parts = name.split("/")
    kind, at = parts[0], parts[-1]
    out = []
    if kind in ("encode", "diff_words_identical"):
        out.append(("x memcmp", f"baseline/memcmp_identical/{at}"))
    if kind == "decode":
        out.append(("x memcpy", f"baseline/memcpy/{at}"))
        if parts[1] in ("runskip", "xbzrle"):
            out.append(("x ref", f"decode/runskip_reference/{parts[2]}/{at}"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--filter", default=".")
    ap.add_argument("--min-time", default="0.1")
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    flt = f"({a.filter})|baseline|runskip_reference"
    results = {b: [] for b in a.binaries}
    for r in range(a.runs):
        for b in a.binaries:
            results[b].append(run_once(b, flt, a.min_time))
            with open("/proc/loadavg") as f:
                print(f"run {r + 1} {b}: load {f.read().split()[0]}", file=sys.stderr)
    for b in a.binaries:
        print(f"## {b} ({a.runs} runs, medians; G/s = GiB/s)")
        runs = results[b]
        for name in runs[0]:
            rate = statistics.median(r[name][0] for r in runs)
            bpp = runs[0][name][1]
            cols = [f"{name:44s} {rate:8.2f} G/s"]
            for label, base in baselines(name):
                if all(base in r for r in runs):
                    ratios = sorted(r[name][0] / r[base][0] for r in runs)
                    cols.append(f"{statistics.median(ratios):6.2f} {label} "
                                f"({ratios[0]:.2f}-{ratios[-1]:.2f})")
            if bpp is not None:
                cols.append(f"{bpp:8.1f} B/page")
            print("  ".join(cols))


if __name__ == "__main__":
    main()
