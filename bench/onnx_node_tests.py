#!/usr/bin/env python3
"""ONNX's own backend node tests for the CNN ops, run through cnnc (reference and JIT) and onnxruntime.

Usage: bench/onnx_node_tests.py [--cnnc BIN] [--ops A,B,...] [--work DIR] [--jobs N] [--failures]

The `onnx` package carries the node test cases as Python (`onnx.backend.test.case.node`: a one-op model
and input/expected-output arrays made by ONNX's reference implementation). This script takes every case
whose nodes all belong to CNN_OPS (below, or --ops), freezes every graph input but the first as an
initializer holding the case's value (cnnc compiles constant weights, shapes, scales and sizes; the first
input stays the run-time input), and runs the frozen model
  * in onnxruntime (CPU, default optimizations),
  * in cnnc's reference interpreter (`cnnc run --reference`),
  * in cnnc's JIT (`cnnc run`, native code, 1 thread),
comparing every output with the case's expected one as ONNX's backend test runner does: same shape, and
`|got - want| <= 1e-7 + 1e-3 |want|` (NaN equal to NaN; integer and bool outputs exactly). A case cnnc
refuses (unsupported op version or attribute, or an input it cannot take) counts as a failure of both
cnnc columns, with its error message. Prints a Markdown table per op and the totals; --failures lists
each failing case with the first line of its error. Exits 0 (it measures; it does not gate).

Cases without tensor inputs or outputs (sequences, optionals) and cases whose first input is missing are
left out and counted separately.
"""
import argparse
import collections
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The ops of the convolutional networks cnnc targets: convolution, pooling, normalization, the
# activations, element-wise arithmetic, and the shape and data-movement ops around them.
CNN_OPS = ("Conv ConvTranspose MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization Relu "
           "LeakyRelu PRelu Sigmoid HardSigmoid HardSwish Clip Tanh Softmax Add Sub Mul Div Pow Concat Reshape "
           "Flatten Transpose Pad Resize Gemm MatMul Split Slice Squeeze Unsqueeze ReduceMean").split()


def sanitize(name):
    """cnnc's output file name for an output name (see `cnnc run --help`)."""
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


def close(got, want):
    """ONNX's backend runner comparison: shapes equal, then allclose(rtol 1e-3, atol 1e-7) or exact."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    if want.dtype.kind in "fc":
        if not np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-3, atol=1e-7, equal_nan=True):
            err = np.nanmax(np.abs(got.astype(np.float64) - want.astype(np.float64)))
            return f"max |diff| {err:.3g}"
        return None
    if not np.array_equal(got.astype(want.dtype), want):
        return f"{int(np.sum(got.astype(want.dtype) != want))} of {want.size} values differ"
    return None


def freeze(case):
    """The case's model with every input but the first an initializer; (model, first name, first value)."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    g = model.graph
    names = [i.name for i in g.input]
    if not names or len(inputs) != len(names):
        return None
    for name, value in zip(names[1:], inputs[1:]):
        g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    keep = g.input[0]
    del g.input[:]
    g.input.append(keep)
    return model, names[0], np.asarray(inputs[0]), [np.asarray(o) for o in outputs], [o.name for o in g.output]


def run_ort(model, name, x):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {name: x})


def run_cnnc(binary, path, name, x, out_names, work, reference):
    xp = os.path.join(work, "x.npy")
    np.save(xp, x)
    out = os.path.join(work, "ref" if reference else "jit")
    cmd = [binary, "run", path, "--input", f"{name}={xp}", "--output-dir", out, "--threads", "1"]
    if reference:
        cmd.append("--reference")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError((p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}").splitlines()[0])
    return [np.load(os.path.join(out, sanitize(n) + ".npy")) for n in out_names]


def check(results):
    """The first mismatch of `results` against the expected outputs, or None."""
    got, want = results
    if len(got) != len(want):
        return f"{len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        bad = close(g, w)
        if bad:
            return f"output {i}: {bad}"
    return None


def one_case(binary, case, root):
    frozen = freeze(case)
    if frozen is None:
        return case, None
    model, name, x, want, out_names = frozen
    work = os.path.join(root, case.name)
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "model.onnx")
    onnx.save(model, path)
    verdict = {}
    for engine, fn in (
        ("ort", lambda: run_ort(model, name, x)),
        ("reference", lambda: run_cnnc(binary, path, name, x, out_names, work, True)),
        ("jit", lambda: run_cnnc(binary, path, name, x, out_names, work, False)),
    ):
        try:
            verdict[engine] = check((fn(), want))
        except Exception as e:  # a refusal or a crash of that engine: a failure with its message
            verdict[engine] = f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return case, verdict


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cnnc", default=os.path.join(REPO, "target", "release", "cnnc"))
    ap.add_argument("--ops", default=",".join(CNN_OPS))
    ap.add_argument("--work", default=None, help="keep the frozen models and outputs here (default: a temporary folder)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--failures", action="store_true", help="list every failing case with its error")
    args = ap.parse_args()
    ops = set(args.ops.split(","))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case import node as node_cases

        every = node_cases.collect_testcases(None)
    cases, skipped = [], 0
    for c in every:
        kinds = {n.op_type for n in c.model.graph.node}
        if not kinds or not kinds <= ops:
            continue
        tensors = c.data_sets and all(isinstance(v, np.ndarray) for v in list(c.data_sets[0][0]) + list(c.data_sets[0][1]))
        if not tensors or not c.data_sets[0][0]:
            skipped += 1
            continue
        cases.append(c)
    root = args.work or tempfile.mkdtemp(prefix="cnnc-node-tests-")
    results = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
        for case, verdict in ex.map(lambda c: one_case(args.cnnc, c, root), cases):
            if verdict is None:
                skipped += 1
            else:
                results.append((case, verdict))

    by_op = collections.defaultdict(list)
    for case, verdict in results:
        kinds = sorted({n.op_type for n in case.model.graph.node})
        by_op[kinds[0] if len(kinds) == 1 else "+".join(kinds)].append(verdict)
    engines = ("ort", "reference", "jit")
    print(f"onnx {onnx.__version__}, cnnc {args.cnnc}; {len(results)} cases ({skipped} left out: no tensor data)\n")
    print("| op | cases | onnxruntime | cnnc reference | cnnc JIT |")
    print("|---|---:|---:|---:|---:|")
    for op in sorted(by_op):
        vs = by_op[op]
        cells = [str(sum(v[e] is None for v in vs)) for e in engines]
        print(f"| {op} | {len(vs)} | " + " | ".join(cells) + " |")
    totals = [sum(v[e] is None for _, v in results) for e in engines]
    print(f"| **total** | **{len(results)}** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    if args.failures:
        print()
        for case, verdict in sorted(results, key=lambda r: r[0].name):
            bad = {e: verdict[e] for e in engines if verdict[e] is not None}
            if bad:
                print(f"- {case.name}: " + "; ".join(f"{e}: {m}" for e, m in bad.items()))
    if not args.work:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
