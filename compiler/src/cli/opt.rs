//! `cnnc opt`: compiles a model into a `.cnnc` artifact through [`cnnc::driver`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use cnnc::calib::CalibArgs;
use cnnc::driver::{self, OptLevel, OptOptions};
use cnnc::speed::SpeedOptions;
use cnnc_passes::Metric;
use cnnc_passes::approx::Family;

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
    /// Optimization level: 0 (import and verify, no rewrites), 1 (lossless rewrites chosen by
    /// measured cost), speed (also approximate forms — low-rank SVD and Tucker-2 — within an
    /// accuracy budget measured on calibration data: needs --calib).
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
    #[command(flatten)]
    speed: SpeedArgs,
    #[command(flatten)]
    calib: CalibArgs,
}

/// The accuracy budget of `-O speed`.
#[derive(Args)]
#[command(next_help_heading = "Accuracy budget (-O speed)")]
struct SpeedArgs {
    /// How the drop is measured against the original model on the same samples: top1 (agreement
    /// lost, or accuracy lost with --labels), rel-l2, logit-l2, cosine, mask-iou:THR. Default:
    /// top1 for one [N, classes] output, rel-l2 otherwise.
    #[arg(long, value_name = "METRIC", value_parser = Metric::parse)]
    metric: Option<Metric>,
    /// The largest drop allowed, a fraction (`0.01`) or a percentage (`1%`). Default 0.01.
    #[arg(long = "max-drop", value_name = "X", value_parser = parse_drop)]
    max_drop: Option<f64>,
    /// The lossy families the search may use, comma-separated: svd, tucker2, int8. Default: all.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_family)]
    families: Vec<Family>,
    /// Also measure how well the error model predicts on this model and data: N single
    /// proposals and N random multi-layer mixes run on the validation and test splits
    /// (predicted vs measured in the report's `speed.audit`). Changes nothing the search chooses.
    #[arg(long = "audit-error-model", value_name = "N")]
    audit_error_model: Option<usize>,
    /// Keep each proposal's own least-squares fit: do not refit the chosen layers' last factors
    /// from the approximated network's activations (the asymmetric, teacher–student refit).
    #[arg(long = "no-refit")]
    no_refit: bool,
    /// Threads that run the calibration data through the model, gather its statistics and
    /// decompose layers (default: every core). Changes nothing the search chooses: the results
    /// are the same at any count (kernels are costed at --threads).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: Option<u32>,
}

fn parse_drop(s: &str) -> Result<f64, String> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (s, 1.0),
    };
    match num.trim().parse::<f64>() {
        // 1 (100 %) allows any drop: what `--families int8 --max-drop 1` uses to quantize all it can.
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale <= 1.0 => Ok(v * scale),
        _ => Err(format!("expected a fraction in [0, 1] such as 0.01, or a percentage such as 1%, got `{s}`")),
    }
}

fn parse_family(s: &str) -> Result<Family, String> {
    Family::from_name(s).ok_or_else(|| format!("unknown family `{s}`: expected svd, tucker2 or int8"))
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
        calib: args.calib.spec()?,
        speed: speed_options(args.speed, args.level)?,
    };
    say_json(&driver::opt(&options)?)
}

/// `-O speed`'s options; its flags at another level are an error naming the flag.
fn speed_options(a: SpeedArgs, level: OptLevel) -> Result<SpeedOptions> {
    if level != OptLevel::Speed {
        let given = [
            (a.metric.is_some(), "--metric"),
            (a.max_drop.is_some(), "--max-drop"),
            (!a.families.is_empty(), "--families"),
            (a.audit_error_model.is_some(), "--audit-error-model"),
            (a.no_refit, "--no-refit"),
            (a.jobs.is_some(), "--jobs"),
        ];
        if let Some(flag) = given.into_iter().find_map(|(g, f)| g.then_some(f)) {
            return Err(driver::DriverError::NeedsSpeed { flag }.into());
        }
    }
    let defaults = SpeedOptions::default();
    let mut families = a.families;
    families.sort();
    families.dedup();
    Ok(SpeedOptions {
        metric: a.metric,
        max_drop: a.max_drop.unwrap_or(defaults.max_drop),
        families: if families.is_empty() { defaults.families } else { families },
        audit: a.audit_error_model,
        refit: !a.no_refit,
        jobs: a.jobs.map(|j| j as usize),
    })
}

/// The command-line arguments that decide an artifact's contents: all but where the artifact,
/// the report, the exported ONNX model and the cost cache are (and the audit and --jobs, which
/// change nothing chosen), so the same model, level, flags
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
            "-o" | "--output" | "--report" | "--emit-onnx" | "--cost-cache" | "--audit-error-model" | "--jobs" => {
                skip_next = true
            }
            _ if ["--output=", "--report=", "--emit-onnx=", "--cost-cache=", "--audit-error-model=", "--jobs="]
                .iter()
                .any(|p| a.starts_with(p))
                || (a.starts_with("-o") && a.len() > 2) => {}
            _ => out.push(a),
        }
    }
    out
}
