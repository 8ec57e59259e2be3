//! The subcommands of `cnnc`, one module each, and the flag groups they share.

pub mod bench;
pub mod inspect;
pub mod opt;
pub mod run;

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cnnc::onnx::parse_input_shape;

const EXAMPLES: &str = "\
Examples:
  cnnc inspect fixtures/models/blazeface_front_128.onnx
  cnnc inspect fixtures/models/mnist_cnn.onnx --input-shape input=1x1x28x28
  cnnc inspect ppocr_v4_det.onnx --input-shape x=1x3x640x640 --json
  cnnc opt fixtures/models/mnist_cnn.onnx -O0 --input-shape input=1x1x28x28 -o mnist.cnnc
  cnnc opt fixtures/models/mnist_cnn.onnx -O1 --input-shape input=1x1x28x28 -o mnist.cnnc --emit-onnx mnist.opt.onnx
  cnnc inspect mnist.cnnc
  cnnc run mnist.cnnc --input input=digits.npy --output-dir out/
  cnnc run model.onnx --input x=batch.npy --output-dir out/ --reference
  cnnc bench mnist.cnnc --runs 100 --json";

/// cnnc: a compiler that makes trained convolutional networks run faster on CPUs.
#[derive(Parser)]
#[command(name = "cnnc", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Print one row per layer (name, op, input/output shapes, params, MACs) and totals.
    #[command(after_help = inspect::AFTER_HELP)]
    Inspect(inspect::InspectArgs),
    /// Compile a model into a .cnnc artifact that `cnnc run` and `Model::load` load directly.
    #[command(after_help = opt::AFTER_HELP)]
    Opt(Box<opt::OptArgs>),
    /// Run a model on .npy inputs and write each output as DIR/<name>.npy.
    #[command(after_help = run::AFTER_HELP)]
    Run(run::RunArgs),
    /// Time the JIT-compiled model on a fixed random input: median and min latency, a per-kernel
    /// profile, peak memory.
    #[command(after_help = bench::AFTER_HELP)]
    Bench(bench::BenchArgs),
}

/// `--input-shape`, repeatable.
#[derive(Args, Clone, Debug)]
pub struct ShapeArgs {
    /// Bind an input's dynamic dimensions, e.g. `x=1x3x640x640` (batch included). Repeatable.
    #[arg(long = "input-shape", value_name = "NAME=DIMS", value_parser = parse_input_shape)]
    pub input_shape: Vec<(String, Vec<usize>)>,
}

/// `--threads N`.
#[derive(Args, Clone, Copy, Debug)]
pub struct ThreadsArgs {
    /// Threads the native code uses (default: every hardware thread). Outputs do not depend on it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
}

impl ThreadsArgs {
    pub fn get(self) -> Option<usize> {
        self.threads.map(|t| t as usize)
    }
}

/// Prints a line to stdout; a closed pipe (`cnnc inspect … | head`) ends the output quietly.
pub fn say(line: impl fmt::Display) -> Result<()> {
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// Prints `value` as one line of JSON.
pub fn say_json(value: &impl serde::Serialize) -> Result<()> {
    say(serde_json::to_string(value).context("serializing to JSON")?)
}

/// The model's file name, for reports.
pub fn model_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}
