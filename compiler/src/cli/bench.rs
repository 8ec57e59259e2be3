//! `cnnc bench`: latency and a per-kernel profile of the JIT-compiled model.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use cnnc::bench::{self, BenchConfig};
use cnnc::driver::load_model;
use cnnc::onnx::ImportOptions;
use cnnc_runtime::Model;

use super::{ShapeArgs, ThreadsArgs, model_name, say, say_json};

pub const AFTER_HELP: &str = "Examples:\n  cnnc bench mnist.cnnc\n  \
    cnnc bench det.onnx --input-shape x=1x3x640x640 --runs 10\n  \
    cnnc bench mnist.cnnc --runs 100 --warmup 10 --json\n\n\
    The input is uniform in [0, 1) from a fixed seed (i64 inputs are zeros), the same on every run.\n\
    Every timed run is profiled: each kernel call is timed on its own; a layer's time is its median over\n\
    the timed runs and its share is of the sum of those medians. Views and in-place concats run no kernel\n\
    and have no row. Progress goes to stderr; the table (or with --json one JSON object) to stdout.";

#[derive(Args)]
pub struct BenchArgs {
    /// The model (.onnx or .cnnc).
    model: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    threads: ThreadsArgs,
    /// Timed runs.
    #[arg(long, value_name = "R", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Untimed runs before the timed ones.
    #[arg(long, value_name = "W", default_value_t = 5)]
    warmup: u32,
    /// Print one JSON object (`median_ms`, `layers`, …) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let model = &args.model;
    let runs = NonZeroUsize::new(args.runs as usize).expect("clap rejects --runs 0");
    let cfg = BenchConfig { warmup: args.warmup as usize, runs };
    let options = ImportOptions { input_shapes: args.shapes.input_shape, ..ImportOptions::default() };
    let graph = load_model(model, &options)?.graph;
    let mut compiled =
        Model::compile(&graph).with_context(|| format!("{}: compiling for this CPU", model.display()))?;
    if let Some(t) = args.threads.get() {
        compiled.set_threads(t);
    }
    let report = bench::bench(&compiled, &model_name(model), cfg, |line| eprintln!("{line}"))
        .with_context(|| format!("running {}", model.display()))?;
    if args.json { say_json(&report) } else { say(bench::render_table(&report).trim_end()) }
}
