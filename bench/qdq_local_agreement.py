#!/usr/bin/env python3
"""Where a QDQ model's integers come apart between onnxruntime's fused kernels and the graph as written, op by op.

Usage:
    bench/qdq_local_agreement.py MODEL.qdq.onnx [--shared DIR] [--pages 2] [--first 24] [--cnnc BIN]

For ppocr_v4_det's QDQ model (bench/ort_int8.py make): onnxruntime (ORT_ENABLE_ALL) runs text pages FIRST.. with every
QuantizeLinear output exposed; then each QuantizeLinear's subgraph back to the previous quantized tensors (the
DequantizeLinears, the op, the QuantizeLinear) runs alone in onnxruntime without graph optimization, fed those fused
intermediate integers, and its output is compared with the fused one; with --cnnc, each subgraph runs in cnnc -O1
instead (`cnnc opt` then `cnnc run`), which finds where cnnc's own kernels first part from onnxruntime's on a model
cnnc emitted (e.g. the `--emit-onnx` of an `-O speed` model, whose f32 islands the QDQ rules leave alone). Prints,
per op type inside the subgraphs, the
integers compared, how many differ and the largest difference, then the 15 subgraphs with the largest share differing.
A difference here is local: the same inputs, the fused kernel against the QDQ form as written. Needs the Python of
bench/ort_int8.py (numpy, onnx, onnxruntime, pillow).
"""
import argparse
import collections
import importlib.util
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--shared", default=os.environ.get("CNNC_SHARED", os.path.join(HERE, "..", "..", "shared")))
    ap.add_argument("--pages", type=int, default=2)
    ap.add_argument("--first", type=int, default=24, help="first text page (24..: not used for calibration)")
    ap.add_argument("--cnnc", help="run each subgraph in this cnnc binary at -O1 instead of onnxruntime unoptimized")
    a = ap.parse_args()
    if a.cnnc and not os.access(a.cnnc, os.X_OK):
        sys.exit(f"qdq_local_agreement.py: --cnnc {a.cnnc} is not an executable")
    tmp = tempfile.TemporaryDirectory()
    spec = importlib.util.spec_from_file_location("ort_int8", os.path.join(HERE, "ort_int8.py"))
    o8 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(o8)
    o8.need("numpy", "onnx", "onnxruntime", "PIL")
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    sh = o8.Shared(a.shared)
    m = onnx.load(a.model)
    g = m.graph
    inits = {t.name for t in g.initializer}
    zp_type = {t.name: t.data_type for t in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    qs = [n for n in g.node if n.op_type == "QuantizeLinear"]
    q_type = {n.output[0]: zp_type.get(n.input[2], TensorProto.UINT8) if len(n.input) > 2 else TensorProto.UINT8
              for n in qs}
    exposed = onnx.load(a.model)
    have = {o.name for o in exposed.graph.output}
    for n in qs:
        if n.output[0] not in have:
            exposed.graph.output.append(helper.make_tensor_value_info(n.output[0], q_type[n.output[0]], None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(exposed.SerializeToString(), so, providers=["CPUExecutionProvider"])
    in_name = s.get_inputs()[0].name
    names = [o.name for o in s.get_outputs()]
    runs = [dict(zip(names, s.run(None, {in_name: o8.page_input(sh, p)})))
            for p in o8.text_pages(sh)[a.first:a.first + a.pages]]
    stats = collections.defaultdict(lambda: [0, 0, 0])
    rows = []
    for qn in qs:
        nodes, todo, feeds, seen = [], [qn], set(), set()
        while todo:
            n = todo.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            nodes.append(n)
            for i in n.input:
                if not i or i in inits:
                    continue
                if (i in q_type and n is not qn) or i == in_name or i not in prod:
                    feeds.add(i)
                else:
                    todo.append(prod[i])
        if not all(f in runs[0] for f in feeds):
            continue
        order = [n for n in g.node if any(n is k for k in nodes)]
        used = {i for n in order for i in n.input}
        shape = (lambda f: list(runs[0][f].shape)) if a.cnnc else (lambda f: None)
        sub = helper.make_graph(
            order, "sub",
            [helper.make_tensor_value_info(f, q_type.get(f, TensorProto.FLOAT), shape(f)) for f in sorted(feeds)],
            [helper.make_tensor_value_info(qn.output[0], q_type[qn.output[0]], None)],
            [t for t in g.initializer if t.name in used])
        sm = helper.make_model(sub, opset_imports=m.opset_import)
        sm.ir_version = m.ir_version
        if a.cnnc:
            run_sub = cnnc_runner(a.cnnc, sm, feeds, tmp.name)
        else:
            so2 = ort.SessionOptions()
            so2.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            so2.intra_op_num_threads = 1
            ss = ort.InferenceSession(sm.SerializeToString(), so2, providers=["CPUExecutionProvider"])
            run_sub = lambda r: ss.run(None, {f: r[f] for f in feeds})[0]  # noqa: E731
        total = differ = biggest = 0
        for r in runs:
            got = run_sub(r).astype(np.int32)
            d = np.abs(got - r[qn.output[0]].astype(np.int32))
            total, differ, biggest = total + d.size, differ + int((d > 0).sum()), max(biggest, int(d.max()))
        ops = "+".join(sorted({n.op_type for n in order} - {"QuantizeLinear", "DequantizeLinear"})) or "(none)"
        st = stats[ops]
        st[0], st[1], st[2] = st[0] + total, st[1] + differ, max(st[2], biggest)
        rows.append((differ / max(total, 1), qn.name, ops, differ, biggest))
    print("| ops in the subgraph | integers | differ | share | max |")
    print("|---|---:|---:|---:|---:|")
    for ops, (t, d, mx) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
        print(f"| {ops} | {t:,} | {d:,} | {100 * d / max(t, 1):.4f} % | {mx} |")
    print()
    for share, name, ops, d, mx in sorted(rows, reverse=True)[:15]:
        if d:
            print(f"{name}: {ops}, {d:,} differ ({100 * share:.3f} %), max {mx}")


def cnnc_runner(cnnc, sub_model, feeds, tmp):
    """A function of one run's tensors that runs `sub_model` in cnnc -O1 on its `feeds` and returns its output."""
    import onnx
    path, art, out = (os.path.join(tmp, n) for n in ("sub.onnx", "sub.cnnc", "out"))
    onnx.save(sub_model, path)
    r = subprocess.run([cnnc, "opt", path, "-O1", "-o", art], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"qdq_local_agreement.py: cnnc opt on a subgraph: {r.stderr.strip()}")

    def run(tensors):
        args = []
        for i, f in enumerate(sorted(feeds)):
            fp = os.path.join(tmp, f"in{i}.npy")
            np.save(fp, tensors[f])
            args += ["--input", f"{f}={fp}"]
        subprocess.run(["rm", "-rf", out], check=True)
        r = subprocess.run([cnnc, "run", art, *args, "--output-dir", out], capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"qdq_local_agreement.py: cnnc run on a subgraph: {r.stderr.strip()}")
        return np.load(os.path.join(out, os.listdir(out)[0]))

    return run


if __name__ == "__main__":
    main()
