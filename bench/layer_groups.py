#!/usr/bin/env python3
"""Aggregate GFLOP/s of groups of conv layers from `cnnc bench --json` (standard library only).

    target/release/cnnc bench model.cnnc --runs 15 --threads 1 --json | python3 bench/layer_groups.py

A group's GFLOP/s is its total MACs × 2 over the sum of its layers' median times (the per-layer medians of
`cnnc bench`), so large layers weigh in by their time, as they do in a run. Groups:
- all convs:      every `conv` row;
- dense 3x3/1x1:  non-depthwise convs with a 3×3 or 1×1 window and at least 784 output pixels (28×28);
- depthwise:      rows whose kernel is `conv-depthwise`;
- conv-transpose: every `conv-transpose` row.
The kernel variants in each group are listed, so a fallback is visible.
"""
import json
import signal
import sys
from collections import Counter


def pixels(row):
    shape = row.get("output_shape") or []
    n = 1
    for d in shape[2:]:
        n *= d
    return n


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into `head`
    report = json.load(sys.stdin)
    rows = report["layers"]
    groups = {
        "all convs": [r for r in rows if r["op"] == "conv"],
        "dense 3x3/1x1 >= 784 px": [
            r for r in rows
            if r["op"] == "conv" and r["kernel"] != "conv-depthwise"
            and r.get("window") in ([3, 3], [1, 1]) and pixels(r) >= 784
        ],
        "depthwise": [r for r in rows if r["kernel"] == "conv-depthwise"],
        "conv-transpose": [r for r in rows if r["op"] == "conv-transpose"],
    }
    print(f"{report['model']}: {report['threads']} thread(s), median {report['median_ms']:.2f} ms over "
          f"{report['runs']} runs")
    for name, rs in groups.items():
        if not rs:
            continue
        ms = sum(r["time_ms"] for r in rs)
        macs = sum(r["macs"] for r in rs)
        gflops = 2 * macs / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")
        kinds = ", ".join(f"{k} ×{n}" for k, n in Counter(r["kernel"] for r in rs).most_common())
        print(f"  {name:26s} {len(rs):3d} layers {ms:9.2f} ms {macs / 1e6:10.1f} M MACs {gflops:7.1f} GFLOP/s  ({kinds})")


if __name__ == "__main__":
    main()
