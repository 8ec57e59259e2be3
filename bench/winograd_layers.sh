#!/usr/bin/env bash
# Per layer: each conv -O1 runs as Winograd, timed as Winograd and as the direct kernel (the same model at
# -O1 --no-winograd), in the same session, alternating, 1 thread pinned to one CPU.
#
# Usage:
#   bench/winograd_layers.sh MODEL.onnx NAME=DIMS [--rounds K] [--runs R] [--pin CPU] [--no-build]
#
# Prints a Markdown table: layer, shape, algorithm -O1 chose, direct ms, Winograd ms, direct/Winograd (medians over
# rounds of each round's per-layer median), then the whole-model medians. Progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
(($# >= 2)) || { usage >&2; exit 2; }
model=$1 shape=$2
shift 2
rounds=5 runs=20 pin=0 build=1
while (($#)); do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --pin) pin=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "winograd_layers.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ -f $model ]] || { echo "winograd_layers.sh: $model not found" >&2; exit 2; }
[[ $rounds =~ ^[1-9][0-9]*$ && $runs =~ ^[1-9][0-9]*$ && $pin =~ ^[0-9]+$ ]] ||
    { echo "winograd_layers.sh: --rounds/--runs take positive integers, --pin a CPU number" >&2; exit 2; }
if ((build)); then (cd "$repo" && cargo build --release -p cnnc --quiet) >&2; fi
cnnc=$repo/target/release/cnnc
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$cnnc" "$tmp/cnnc"
cnnc=$tmp/cnnc

echo "optimizing $model at -O1 with and without Winograd" >&2
taskset -c "$pin" "$cnnc" opt "$model" -O1 --input-shape "$shape" -o "$tmp/w.cnnc" --report "$tmp/w.report.json" >/dev/null
taskset -c "$pin" "$cnnc" opt "$model" -O1 --no-winograd --input-shape "$shape" -o "$tmp/d.cnnc" >/dev/null
for ((r = 1; r <= rounds; r++)); do
    echo "round $r of $rounds" >&2
    for v in w d; do
        taskset -c "$pin" "$cnnc" bench "$tmp/$v.cnnc" --runs "$runs" --threads 1 --json >"$tmp/$v.$r.json" 2>/dev/null
    done
done

python3 - "$tmp" "$rounds" "$model" <<'EOF'
import json, statistics, sys
tmp, rounds, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
report = json.load(open(f"{tmp}/w.report.json"))
chosen = {l["name"]: l["algo"] for l in report["layers"] if l.get("algo", "direct") != "direct"}
def per_layer(v):
    runs = [json.load(open(f"{tmp}/{v}.{r}.json")) for r in range(1, rounds + 1)]
    times = {}
    for run in runs:
        for l in run["layers"]:
            times.setdefault(l["name"], []).append(l["time_ms"])
    shapes = {l["name"]: l["output_shape"] for l in runs[0]["layers"]}
    return {k: statistics.median(v) for k, v in times.items()}, shapes, statistics.median(r["median_ms"] for r in runs)
w, shapes, w_total = per_layer("w")
d, _, d_total = per_layer("d")
print(f"{model}: {len(chosen)} of the convs run as Winograd at -O1; 1 thread, {rounds} rounds, medians")
print()
print("| layer | output | -O1 algo | direct ms | Winograd ms | direct/Winograd |")
print("|---|---|---|---:|---:|---:|")
tw = td = 0.0
for name, algo in chosen.items():
    if name not in w or name not in d:
        continue
    tw, td = tw + w[name], td + d[name]
    shape = "×".join(map(str, shapes[name][1:]))
    print(f"| {name} | {shape} | {algo} | {d[name]:.3f} | {w[name]:.3f} | {d[name] / w[name]:.2f}× |")
if tw:
    print(f"| all of them | | | {td:.3f} | {tw:.3f} | {td / tw:.2f}× |")
print(f"| whole model (-O1 --no-winograd vs -O1) | | | {d_total:.3f} | {w_total:.3f} | {d_total / w_total:.2f}× |")
EOF
