#!/usr/bin/env python3
"""onnxruntime's own per-node times for a model (its profiler), to set beside `cnnc bench --json`'s per-layer times.

Usage:
    bench/ort_profile.py MODEL.onnx INPUT_NAME SHAPE [--runs 200] [--threads 1]

SHAPE is e.g. 1x3x224x224 (the input is uniform random in [0, 1), seed 0). Session: CPUExecutionProvider,
ORT_ENABLE_ALL, intra_op_num_threads=--threads, inter_op 1, profiling on. Prints the total of the per-node medians,
the total per op type, then every node in execution order: median ms, op type, name and output shape. Pin it to one CPU
(`taskset -c 0`) for 1-thread numbers. Needs numpy and onnxruntime.
"""
import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("shape")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    shape = [int(v) for v in a.shape.split("x")]
    o = ort.SessionOptions()
    o.intra_op_num_threads = a.threads
    o.inter_op_num_threads = 1
    o.enable_profiling = True
    o.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    s = ort.InferenceSession(a.model, o, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(a.runs):
        s.run(None, {a.input: x})
    events = [e for e in json.load(open(s.end_profiling()))
              if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    times, info = collections.defaultdict(list), {}
    for e in events:
        times[e["name"]].append(e["dur"])
        if e["name"] not in info:
            shapes = [list(d.values())[0] for d in e["args"].get("output_type_shape", [])][:1]
            info[e["name"]] = (e["args"].get("op_name"), shapes)
    rows = [(float(np.median(v)) / 1000, info[k][0], k[:-len("_kernel_time")], info[k][1]) for k, v in times.items()]
    print(f"total of per-node medians: {sum(r[0] for r in rows):.3f} ms ({a.runs} runs, {a.threads} thread(s))")
    per_op = collections.defaultdict(float)
    for ms, op, _, _ in rows:
        per_op[op] += ms
    for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1]):
        print(f"{op:24s} {ms:.3f} ms")
    print()
    for ms, op, name, shapes in rows:
        print(f"{ms:.3f} {op:16s} {name} {shapes}")


if __name__ == "__main__":
    main()
