//! `cnnc opt`: compiles a model into a `.cnnc` artifact through [`cnnc::driver`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use cnnc::driver::{self, OptLevel, OptOptions};

use super::{ShapeArgs, ThreadsArgs, say_json};

pub const AFTER_HELP: &str = "Examples:\n  cnnc opt model.onnx -O0 -o model.cnnc\n  \
    cnnc opt det.onnx -O0 --input-shape x=1x3x640x640 -o det.cnnc\n  \
    cnnc opt det.onnx -O1 --input-shape x=1x3x640x640 -o det.cnnc --report det.json\n\n\
    Shapes are static in an artifact: bind every dynamic dimension (the batch too) with --input-shape.\n\
    -O1 times every kernel it considers once (JIT-compiled alone, median of a few runs) and caches the\n\
    times per machine; the same model, flags and cost cache give a byte-identical artifact.\n\
    Ctrl-C stops the measuring, keeps the kernel times measured so far in the cost cache and writes nothing\n\
    (exit status 130).\n\
    `cnnc run` accepts inputs whose batch (dim 0) is a multiple of the compiled batch.\n\
    The output is written to a temporary file and renamed, so a failure never leaves a partial file.";

#[derive(Args)]
#[command(mut_arg("threads", |a| {
    a.help("Threads the kernels are costed at (default 1). The artifact runs at any thread count.")
}))]
pub struct OptArgs {
    /// The model (.onnx, or a .cnnc to rewrite in this version's format).
    model: PathBuf,
    /// Optimization level: 0 (import and verify, no rewrites), 1 (lossless rewrites: BatchNorm and
    /// per-channel constant folding, chosen by DAG-aware extraction). `speed` arrives later.
    #[arg(short = 'O', value_name = "LEVEL", default_value = "0", value_parser = str::parse::<OptLevel>)]
    level: OptLevel,
    /// The artifact to write.
    #[arg(short = 'o', long = "output", value_name = "FILE.cnnc")]
    output: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// Write what the optimizer did (rules applied, e-graph size, stop reason, predicted vs
    /// measured latency per layer and in total, cost-cache use, time) to this file; the
    /// extension picks the format (`.json`).
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Also write the (optimized) graph as an ONNX model (opset 18) that onnxruntime runs; fused
    /// ops become their standard ONNX ops again. The artifact does not depend on this flag.
    #[arg(long = "emit-onnx", value_name = "FILE.onnx")]
    emit_onnx: Option<PathBuf>,
    #[command(flatten)]
    cost: CostArgs,
}

/// How `-O1` prices kernels.
#[derive(Args)]
struct CostArgs {
    /// The kernel-time cache -O1 reads and extends (default: `$XDG_CACHE_HOME/cnnc/` or
    /// `~/.cache/cnnc/`, a file named after this CPU and cnnc version).
    #[arg(long = "cost-cache", value_name = "FILE.json")]
    cost_cache: Option<PathBuf>,
    /// Time no kernel of the model: estimate each from a roofline (peak FLOP/s and memory
    /// bandwidth, themselves measured once per machine and cached).
    #[arg(long = "no-measure")]
    no_measure: bool,
    #[command(flatten)]
    threads: ThreadsArgs,
    /// Never run a conv as Winograd F(2,3) or F(4,3): -O1 is then exact up to float reordering
    /// (with Winograd, its bound is rel-L2 ≤ 1e-4 on the layers that use it).
    #[arg(long = "no-winograd")]
    no_winograd: bool,
}

pub fn run(args: OptArgs) -> Result<()> {
    cnnc::interrupt::install()?;
    let options = OptOptions {
        model: args.model,
        level: args.level,
        output: args.output,
        input_shapes: args.shapes.input_shape,
        report: args.report,
        emit_onnx: args.emit_onnx,
        cost_cache: args.cost.cost_cache,
        no_measure: args.cost.no_measure,
        threads: args.cost.threads.get(),
        no_winograd: args.cost.no_winograd,
        args: result_args(std::env::args().skip(1)),
    };
    say_json(&driver::opt(&options)?)
}

/// The command-line arguments that decide an artifact's contents: all but where the artifact,
/// the report, the exported ONNX model and the cost cache are, so the same model, level, flags
/// and cost table give the same bytes wherever they are written (the cost table itself is
/// recorded by its hash).
fn result_args(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_next = false;
    for a in args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        match a.as_str() {
            "-o" | "--output" | "--report" | "--emit-onnx" | "--cost-cache" => skip_next = true,
            _ if ["--output=", "--report=", "--emit-onnx=", "--cost-cache="].iter().any(|p| a.starts_with(p))
                || (a.starts_with("-o") && a.len() > 2) => {}
            _ => out.push(a),
        }
    }
    out
}
