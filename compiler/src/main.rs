//! The `cnnc` command line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use cnnc::inspect::{render_table, summarize};
use cnnc::npy::{output_file_stems, read_npy, write_npy};
use cnnc::onnx::{ImportOptions, import_file, parse_input_shape};
use cnnc_ir::{Tensor, VerifiedGraph};

const EXAMPLES: &str = "\
Examples:
  cnnc inspect fixtures/models/blazeface_front_128.onnx
  cnnc inspect fixtures/models/mnist_cnn.onnx --input-shape input=1x1x28x28
  cnnc inspect ppocr_v4_det.onnx --input-shape x=1x3x640x640 --json
  cnnc run fixtures/models/mnist_cnn.onnx --input input=digit.npy --output-dir out/
  cnnc run model.onnx --input x=batch.npy --output-dir out/ --reference";

/// cnnc: a compiler that makes trained convolutional networks run faster on CPUs.
#[derive(Parser)]
#[command(name = "cnnc", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print one row per layer (name, op, input/output shapes, params, MACs) and totals.
    #[command(
        after_help = "Examples:\n  cnnc inspect model.onnx\n  cnnc inspect det.onnx --input-shape x=1x3x640x640 --json"
    )]
    Inspect {
        /// The model (.onnx).
        model: PathBuf,
        /// Bind an input's dynamic dimensions, e.g. `x=1x3x640x640` (batch included). Repeatable.
        #[arg(long = "input-shape", value_name = "NAME=DIMS", value_parser = parse_input_shape)]
        input_shape: Vec<(String, Vec<usize>)>,
        /// Print one JSON object (`total_macs`, `total_params`, `layers`, …) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a model on .npy inputs and write each output as DIR/<name>.npy.
    #[command(after_help = "Examples:\n  cnnc run model.onnx --input x=x.npy --output-dir out/\n  \
        cnnc run model.onnx --input input:0=img.npy --output-dir out/ --reference\n\n\
        Output file names are the output names with every character outside [A-Za-z0-9_.-] replaced by `_`.\n\
        Dynamic input dimensions are taken from the .npy shapes unless --input-shape says otherwise.")]
    Run {
        /// The model (.onnx).
        model: PathBuf,
        /// An input as NAME=FILE.npy. Repeat for every model input.
        #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = parse_input_arg, required = true)]
        inputs: Vec<(String, PathBuf)>,
        /// Folder for the outputs (created if missing).
        #[arg(long = "output-dir", value_name = "DIR")]
        output_dir: PathBuf,
        /// Bind an input's dynamic dimensions, e.g. `x=1x3x640x640`. Repeatable.
        #[arg(long = "input-shape", value_name = "NAME=DIMS", value_parser = parse_input_shape)]
        input_shape: Vec<(String, Vec<usize>)>,
        /// Execute with the reference interpreter (plain loops, f64 accumulation). It is currently
        /// cnnc's only engine; the JIT arrives with compiled artifacts.
        #[arg(long)]
        reference: bool,
    },
}

fn parse_input_arg(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => Ok((name.to_owned(), PathBuf::from(file))),
        _ => Err(format!("expected NAME=FILE.npy, got `{arg}`")),
    }
}

fn load_model(path: &Path, opts: &ImportOptions) -> Result<VerifiedGraph> {
    import_file(path, opts).map_err(|e| {
        // Every message names the file: file-level errors do so already, node-level ones get it here.
        let file = path.display().to_string();
        let msg = e.to_string();
        if msg.contains(&file) { anyhow::Error::new(e) } else { anyhow::Error::new(e).context(file) }
    })
}

fn model_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn cmd_inspect(model: &Path, input_shape: Vec<(String, Vec<usize>)>, json: bool) -> Result<()> {
    let graph = load_model(model, &ImportOptions { input_shapes: input_shape, ..ImportOptions::default() })?;
    let summary = summarize(&graph, &model_name(model));
    if json {
        println!("{}", serde_json::to_string(&summary).context("serializing the summary")?);
    } else {
        print!("{}", render_table(&summary));
    }
    Ok(())
}

fn cmd_run(
    model: &Path,
    inputs: Vec<(String, PathBuf)>,
    output_dir: &Path,
    input_shape: Vec<(String, Vec<usize>)>,
) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, file) in &inputs {
        if tensors.contains_key(name) {
            bail!("--input `{name}` is given more than once");
        }
        tensors.insert(name.clone(), read_npy(file)?);
    }
    // Dynamic dimensions not bound by --input-shape come from the arrays themselves.
    let hints = inputs.iter().map(|(name, _)| (name.clone(), tensors[name].shape().to_vec())).collect();
    let graph = load_model(model, &ImportOptions { input_shapes: input_shape, input_shape_hints: hints })?;

    let expected: Vec<String> = graph.inputs().iter().map(|&id| graph.node(id).name.clone()).collect();
    let unknown: Vec<&String> = tensors.keys().filter(|n| !expected.contains(n)).collect();
    let missing: Vec<&String> = expected.iter().filter(|n| !tensors.contains_key(*n)).collect();
    if !unknown.is_empty() || !missing.is_empty() {
        let list: Vec<String> =
            graph.inputs().iter().map(|&id| format!("{} {}", graph.node(id).name, graph.node(id).outputs[0])).collect();
        bail!(
            "{}: unknown input(s) {unknown:?}, missing input(s) {missing:?}; the model's inputs are: {}",
            model.display(),
            list.join(", ")
        );
    }
    let ordered: Vec<Tensor> = expected.iter().map(|n| tensors.remove(n).expect("checked above")).collect();
    let outputs =
        cnnc_runtime::run_reference(&graph, &ordered).with_context(|| format!("running {}", model.display()))?;

    std::fs::create_dir_all(output_dir).with_context(|| format!("creating {}", output_dir.display()))?;
    let names: Vec<&str> = graph.outputs().iter().map(|o| o.name.as_str()).collect();
    for ((name, stem), t) in names.iter().zip(output_file_stems(&names)).zip(&outputs) {
        let path = output_dir.join(format!("{stem}.npy"));
        write_npy(&path, t)?;
        println!(
            "{}",
            serde_json::json!({"output": name, "file": path.display().to_string(), "shape": t.shape(), "dtype": t.dtype().name()})
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { model, input_shape, json } => cmd_inspect(&model, input_shape, json),
        Command::Run { model, inputs, output_dir, input_shape, reference: _ } => {
            cmd_run(&model, inputs, &output_dir, input_shape)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
