#!/usr/bin/env python3
"""Per-page mask IoU of cnnc ppocr_v4_det artifacts against onnxruntime fp32, with each page's split.

Usage: bench/mask_iou_pages.py ARTIFACT... [--shared DIR] [--cnnc BIN] [--threshold T] [--split F,V,T]

Every page of ../shared/data/text_pages is preprocessed as `cnnc opt -O speed` does for
ppocr_v4_det (`--bgr --scale 255 --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5`, 640x640, no resize),
run through onnxruntime (the original fp32 model) and through each artifact (`cnnc run`), and
scored by the IoU of the two maps thresholded at T (default 0.3; an empty union counts 1). The
split of each page is recomputed as cnnc's calibration does (the first 8 bytes of SHA-256 of the
file name as a fraction, against the cumulative --split fractions), so the script prints, per
artifact and split, the page count, the minimum IoU and the six worst pages (IoU, page number,
reference mask pixels). Needs numpy, pillow and onnxruntime.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def split_of(name, fractions):
    u = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    if u < fractions[0]:
        return "fit"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--shared", default=os.environ.get("CNNC_SHARED", os.path.join(REPO, "..", "shared")))
    ap.add_argument("--cnnc", default=os.path.join(REPO, "target", "release", "cnnc"))
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--split", default="0.5,0.25,0.25")
    args = ap.parse_args()
    fractions = [float(f) for f in args.split.split(",")]
    folder = os.path.join(args.shared, "data", "text_pages")
    pages = sorted(p for p in os.listdir(folder) if p.endswith((".png", ".jpg")))

    def prep(p):
        a = np.asarray(Image.open(os.path.join(folder, p)).convert("RGB"), dtype=np.float32)[:, :, ::-1] / 255.0
        return ((a - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()

    x = np.concatenate([prep(p) for p in pages])
    sess = ort.InferenceSession(os.path.join(args.shared, "models", "ppocr_v4_det.onnx"),
                                providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(len(pages))])
    for art in args.artifacts:
        with tempfile.TemporaryDirectory() as d:
            np.save(os.path.join(d, "x.npy"), x)
            out_dir = os.path.join(d, "out")
            subprocess.run([args.cnnc, "run", art, "--input", "x=" + os.path.join(d, "x.npy"), "--output-dir",
                            out_dir], check=True, capture_output=True)
            out = np.load(os.path.join(out_dir, os.listdir(out_dir)[0]))
        rows = {}
        for i, p in enumerate(pages):
            r, c = ref[i] > args.threshold, out[i] > args.threshold
            union = (r | c).sum()
            iou = 1.0 if union == 0 else (r & c).sum() / union
            rows.setdefault(split_of(p, fractions), []).append((float(iou), p, int(r.sum())))
        for s in ("fit", "validation", "test"):
            v = sorted(rows.get(s, []))
            if v:
                worst = " ".join(f"{iou:.3f} ({p.split('.')[0]}, {n})" for iou, p, n in v[:6])
                print(f"{os.path.basename(art)} {s}: {len(v)} pages, min IoU {v[0][0]:.4f}; worst: {worst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
