#!/usr/bin/env python3
"""Turn the raw engine outputs of bench/compare.sh into Markdown tables (standard library only).

    python bench/summarize.py RAW_DIR --models "a b" --threads "1 2" [--rounds K --runs R --warmup W]
                              [--machine TEXT --date TEXT --commit TEXT --command TEXT --rustc TEXT --tract-version TEXT]

RAW_DIR holds, per model, `<model>.inspect.json` (`cnnc inspect --json`, for total_macs) and, per engine, thread count
and round, `<model>.<engine>.t<T>.r<k>.{out,err,rc}`:
- cnnc, cnnc1: `cnnc bench --json` on the -O0 and the -O1 artifact prints one JSON object with median_ms (and
  min_ms, total_macs, gflops, ...); `<model>.O1.opt.seconds` holds the wall time of `cnnc opt -O1`;
- ort:   `ort_bench.py` prints one JSON line with median_ms;
- tract: `tract --machine-friendly ... bench` prints `real: <seconds>`, the mean of its timed runs;
- base1 (only with compare.sh --baseline): the baseline cnnc binary's `bench --json` on its own -O1 artifact;
- ort8, cnnc8 (only with compare.sh --int8 DIR): `ort_bench.py` and `cnnc bench --json` (of its `-O1` artifact) on
  DIR/<model>.qdq.onnx, the int8 QDQ model of `bench/ort_int8.py make`.
An engine's latency is the median over rounds of each round's per-run figure. A missing or failed engine is n/a,
with its error in the notes.
"""
import argparse
import json
import math
import os
import re
import statistics

ENGINES = ("cnnc", "cnnc1", "ort", "tract", "base1")
# Engines on the int8 QDQ models (compare.sh --int8): engine, column label. Each adds an "<label> ms" column and a
# "-O1/<label>" ratio; one that prints `bench --json` or ort_bench.py's JSON needs nothing else here.
INT8_ENGINES = (("ort8", "ORT int8"), ("cnnc8", "cnnc int8"))
JSON_ENGINES = ("cnnc", "cnnc1", "base1", "ort") + tuple(e for e, _ in INT8_ENGINES)
PEAK_GFLOPS_PER_CORE = 117.0  # 256-bit FMA peak of one Zen 4 core at 3.67 GHz (../shared/DESIGN.md)


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None


def json_object(text):
    """The JSON object a tool printed: the whole stdout, or else its last line that parses as an object."""
    text = (text or "").strip()
    try:
        v = json.loads(text)
        return v if isinstance(v, dict) else None
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                v = json.loads(line)
                return v if isinstance(v, dict) else None
            except ValueError:
                continue
    return None


def last_error_line(text):
    text = re.sub(r"\x1b\[[0-9;]*m", "", text or "").split("Stack backtrace:")[0]
    if "Caused by:" in text:
        # anyhow's chain (tract): the "Failed ... for node" cause, then the innermost one.
        causes = [re.sub(r"^\s*\d+:\s*", "", l).strip()
                  for l in text.split("Caused by:", 1)[1].splitlines() if re.match(r"^\s*\d+:", l)]
        where = [c for c in causes if c.startswith("Failed")]
        if causes:
            return ": ".join(dict.fromkeys(where[-1:] + causes[-1:]))[:240]
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    # Prefer tract/anyhow's root cause and cnnc's `error:` lines over backtraces and log noise.
    for pat in (r"^(Error|error)\b", r"^\[.*ERROR", r"Caused by|^\d+: "):
        hits = [l for l in lines if re.search(pat, l)]
        if hits:
            return hits[-1][:200]
    return lines[-1][:200] if lines else "no output"


def parse_round(raw, model, engine, t, r):
    """(ms, extra dict) for one round, or (None, reason), or None when the round was not run."""
    base = os.path.join(raw, f"{model}.{engine}.t{t}.r{r}")
    rc = read(base + ".rc")
    if rc is None:
        return None
    out, err = read(base + ".out"), read(base + ".err")
    if rc.strip() != "0":
        return None, last_error_line(err) or f"exit {rc.strip()}"
    if engine in JSON_ENGINES:
        obj = json_object(out)
        if obj is None or not isinstance(obj.get("median_ms"), (int, float)):
            return None, "no median_ms in its output"
        return float(obj["median_ms"]), obj
    m = re.search(r"^real:\s*([0-9.eE+-]+)\s*$", out or "", re.M)
    if not m:
        return None, "no `real:` line in tract's output"
    return float(m.group(1)) * 1e3, {}


def fmt_ms(x):
    if x is None:
        return "n/a"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def fmt_macs(n):
    if n is None:
        return "n/a"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g} {unit}" if n / div < 100 else f"{n / div:.0f} {unit}"
    return str(n)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(x):
    return "n/a" if x is None else f"{x:.2f}×"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raw")
    ap.add_argument("--models", required=True)
    ap.add_argument("--threads", default="1")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--runs", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=0)
    for k in ("machine", "load", "pin", "baseline", "int8", "kernels", "date", "commit", "command", "rustc",
              "tract-version"):
        ap.add_argument("--" + k, default="")
    a = ap.parse_args()
    models, threads = a.models.split(), [int(t) for t in a.threads.split()]

    macs = {}
    for m in models:
        obj = json_object(read(os.path.join(a.raw, f"{m}.inspect.json")))
        macs[m] = obj.get("total_macs") if obj else None

    ort_version = None
    out = []
    out.append(f"- machine: {a.machine}")
    if a.load:
        out.append(f"- machine load: {a.load}")
    out.append(f"- date: {a.date}")
    out.append(f"- commit: {a.commit}")
    out.append(f"- command: `{a.command}`")
    out.append(f"- rounds: {a.rounds}, each engine {a.runs} timed runs per round after {a.warmup} warm-up runs; "
               "latency = median over rounds of each round's per-run figure (cnnc, ORT: median of the runs; "
               "tract: `bench` reports the mean of the runs)")
    if a.pin:
        out.append(f"- 1-thread runs pinned to CPU: {a.pin} (every engine; `taskset`)")
    if a.kernels:
        out.append(f"- cnnc kernels: {a.kernels}")
    int8 = INT8_ENGINES if a.int8 else ()
    if int8:
        out.append(f"- int8: ORT int8 = onnxruntime, as the ORT column, and cnnc int8 = cnnc -O1, on "
                   f"`{a.int8}/<model>.qdq.onnx` (per-channel QDQ int8 models of `bench/ort_int8.py make`); n/a where "
                   "a model has none")
    out.append(f"- toolchain: {a.rustc}; tract: {a.tract_version}; onnxruntime: ORT_VERSION")
    out.append("- -O1 GFLOP/s: 2 × the direct convolutions' MACs ÷ latency; Winograd layers do fewer multiplies, so "
               "'% of peak' (one Zen 4 core's 256-bit FMA peak per thread) can pass 100 %")
    out.append("")

    latency = {}  # (model, engine, threads) -> median ms or None
    for t in threads:
        peak = PEAK_GFLOPS_PER_CORE * t
        out.append(f"### {t} thread{'s' if t > 1 else ''}")
        out.append("")
        out.append(f"| model | MACs | -O0 ms | -O1 ms | ORT ms | tract ms | -O0/-O1 | -O0/ORT | -O1/ORT | -O1/tract "
                   f"| -O1 GFLOP/s | % of {peak:.0f} GFLOP/s peak | opt -O1 s |"
                   + "".join(f" {label} ms | -O1/{label} |" for _, label in int8))
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(int8))
        notes = {}  # (engine, reason) -> [models]
        partial = []
        r_ort, r_tract, r_ort0, r_speed = [], [], [], []
        r_int8 = {e: [] for e, _ in int8}
        base_rows = []
        for m in models:
            lat = {"base1": None}
            for e in (ENGINES if a.baseline else ENGINES[:-1]) + tuple(e for e, _ in int8):
                ok, reasons = [], []
                for r in range(1, max(a.rounds, 1) + 1):
                    res = parse_round(a.raw, m, e, t, r)
                    if res is None:
                        continue
                    ms, extra = res
                    if ms is None:
                        reasons.append(extra)
                    else:
                        ok.append(ms)
                        if e == "ort" and isinstance(extra, dict) and extra.get("ort_version"):
                            ort_version = extra["ort_version"]
                        if e == "cnnc" and macs[m] is None and isinstance(extra, dict):
                            macs[m] = extra.get("total_macs")
                lat[e] = statistics.median(ok) if ok else None
                latency[(m, e, t)] = lat[e]
                if not ok:
                    notes.setdefault((e, reasons[0] if reasons else "not run"), []).append(m)
                elif reasons:
                    partial.append(f"{m} {e}: {len(reasons)} of {len(ok) + len(reasons)} rounds failed "
                                   f"({reasons[0]}); median of the others")
            c0, c = lat["cnnc"], lat["cnnc1"]
            gflops = None if c is None or not macs[m] else 2 * macs[m] / (c * 1e-3) / 1e9
            ro, rt, ro0, sp = ratio(c, lat["ort"]), ratio(c, lat["tract"]), ratio(c0, lat["ort"]), ratio(c0, c)
            if a.baseline:
                base_rows.append((m, lat["base1"], c))
            for xs, x in ((r_ort, ro), (r_tract, rt), (r_ort0, ro0), (r_speed, sp)):
                if x is not None:
                    xs.append(x)
            opt_s = (read(os.path.join(a.raw, f"{m}.O1.opt.seconds")) or "").strip()
            int8_cells = ""
            for e, _ in int8:
                r8 = ratio(c, lat[e])
                if r8 is not None:
                    r_int8[e].append(r8)
                int8_cells += f" {fmt_ms(lat[e])} | {fmt_ratio(r8)} |"
            out.append(f"| {m} | {fmt_macs(macs[m])} | {fmt_ms(c0)} | {fmt_ms(c)} | {fmt_ms(lat['ort'])} "
                       f"| {fmt_ms(lat['tract'])} | {fmt_ratio(sp)} | {fmt_ratio(ro0)} | {fmt_ratio(ro)} | {fmt_ratio(rt)} "
                       f"| {'n/a' if gflops is None else f'{gflops:.1f}'} "
                       f"| {'n/a' if gflops is None else f'{100 * gflops / peak:.1f} %'} | {opt_s or 'n/a'} |"
                       + int8_cells)
        gm = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None
        counts = "".join(f", -O1/{label} over {len(r_int8[e])}" for e, label in int8)
        out.append(f"| geometric mean of the ratios (-O1/ORT over {len(r_ort)}, "
                   f"-O1/tract over {len(r_tract)}{counts} models) "
                   f"| | | | | | {fmt_ratio(gm(r_speed))} | {fmt_ratio(gm(r_ort0))} | {fmt_ratio(gm(r_ort))} "
                   f"| {fmt_ratio(gm(r_tract))} | | | |"
                   + "".join(f" | {fmt_ratio(gm(r_int8[e]))} |" for e, _ in int8))
        out.append("")
        if base_rows:
            out.append(f"Baseline: -O1 of `{a.baseline}` (its own artifact, run by it) against this -O1, same rounds:")
            out.append("")
            out.append("| model | baseline -O1 ms | -O1 ms | baseline/-O1 |")
            out.append("|---|---:|---:|---:|")
            for m, b, c in base_rows:
                out.append(f"| {m} | {fmt_ms(b)} | {fmt_ms(c)} | {fmt_ratio(ratio(b, c))} |")
            out.append("")
        if notes or partial:
            out.append("n/a:")
            for (e, reason), ms in notes.items():
                who = "all models" if len(ms) == len(models) and len(models) > 1 else ", ".join(ms)
                out.append(f"- {e} on {who}: {reason}")
            for p in partial:
                out.append(f"- {p}")
            out.append("")
    if len(threads) > 1:
        t0, rest = threads[0], threads[1:]
        out.append(f"### Scaling: speedup over {t0} thread{'s' if t0 > 1 else ''} (same run)")
        out.append("")
        out.append("| model | " + " | ".join(f"cnnc -O1 {t}t/{t0}t | ORT {t}t/{t0}t" for t in rest) + " |")
        out.append("|---|" + "---:|---:|" * len(rest))
        for m in models:
            cells = []
            for t in rest:
                for e in ("cnnc1", "ort"):
                    sp = ratio(latency.get((m, e, t0)), latency.get((m, e, t)))
                    cells.append(fmt_ratio(sp))
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    print("\n".join(out).replace("ORT_VERSION", ort_version or "n/a"))


if __name__ == "__main__":
    main()
