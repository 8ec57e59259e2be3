//! `cnnc run`: runs a model on `.npy` inputs and writes each output as a `.npy` file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use cnnc::driver::{input_list, load_model};
use cnnc::npy::{output_file_stems, read_npy, write_npy};
use cnnc::onnx::ImportOptions;
use cnnc::report::RunOutput;
use cnnc_ir::{Tensor, VerifiedGraph};
use cnnc_runtime::{CompileError, Model, RunError, run_reference};

use super::{ShapeArgs, ThreadsArgs, say_json};

pub const AFTER_HELP: &str = "Examples:\n  cnnc run model.cnnc --input x=x.npy --output-dir out/\n  \
    cnnc run model.onnx --input x=x.npy --output-dir out/\n  \
    cnnc run model.onnx --input input:0=img.npy --output-dir out/ --reference\n\n\
    Output file names are the output names with every character outside [A-Za-z0-9_.-] replaced by `_`.\n\
    Dynamic input dimensions of an .onnx model are taken from the .npy shapes unless --input-shape says otherwise.\n\
    An input whose dim 0 is k times the model's batch runs as k batches; outputs are concatenated along dim 0.";

#[derive(Args)]
pub struct RunArgs {
    /// The model (.onnx or .cnnc).
    model: PathBuf,
    /// An input as NAME=FILE.npy. Repeat for every model input.
    #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = parse_input_arg, required = true)]
    inputs: Vec<(String, PathBuf)>,
    /// Folder for the outputs (created if missing).
    #[arg(long = "output-dir", value_name = "DIR")]
    output_dir: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// Execute with the reference interpreter (plain loops, f64 accumulation) instead of the
    /// JIT-compiled native code.
    #[arg(long)]
    reference: bool,
    #[command(flatten)]
    threads: ThreadsArgs,
}

fn parse_input_arg(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => Ok((name.to_owned(), PathBuf::from(file))),
        _ => Err(format!("expected NAME=FILE.npy, got `{arg}`")),
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let model = &args.model;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, file) in &args.inputs {
        if tensors.contains_key(name) {
            bail!("--input `{name}` is given more than once");
        }
        tensors.insert(name.clone(), read_npy(file)?);
    }
    // Dynamic dimensions not bound by --input-shape come from the arrays themselves.
    let hints = args.inputs.iter().map(|(name, _)| (name.clone(), tensors[name].shape().to_vec())).collect();
    let options = ImportOptions { input_shapes: args.shapes.input_shape, input_shape_hints: hints };
    let graph = load_model(model, &options)?.graph;

    let expected: Vec<String> = graph.inputs().iter().map(|&id| graph.node(id).name.clone()).collect();
    let unknown: Vec<&String> = tensors.keys().filter(|n| !expected.contains(n)).collect();
    let missing: Vec<&String> = expected.iter().filter(|n| !tensors.contains_key(*n)).collect();
    if !unknown.is_empty() || !missing.is_empty() {
        bail!(
            "{}: unknown input(s) {unknown:?}, missing input(s) {missing:?}; the model's inputs are: {}",
            model.display(),
            input_list(&graph)
        );
    }
    let ordered: Vec<Tensor> = expected.iter().map(|n| tensors.remove(n).expect("checked above")).collect();
    let batches = batch_multiple(&graph, &ordered).with_context(|| model.display().to_string())?;
    let engine = engine(&graph, model, args.reference, args.threads.get())?;
    let outputs = run_batches(&engine, &ordered, batches).with_context(|| format!("running {}", model.display()))?;

    let output_dir = &args.output_dir;
    std::fs::create_dir_all(output_dir).with_context(|| format!("creating {}", output_dir.display()))?;
    let names: Vec<&str> = graph.outputs().iter().map(|o| o.name.as_str()).collect();
    for ((name, stem), t) in names.iter().zip(output_file_stems(&names)).zip(&outputs) {
        let path = output_dir.join(format!("{stem}.npy"));
        write_npy(&path, t)?;
        say_json(&RunOutput::new(name, &path, t))?;
    }
    Ok(())
}

/// What executes the model.
enum Engine<'g> {
    Jit(Box<Model>),
    Reference(&'g VerifiedGraph),
}

impl Engine<'_> {
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        match self {
            Engine::Jit(m) => m.run(inputs),
            Engine::Reference(g) => run_reference(g, inputs),
        }
    }
}

/// The JIT, or the reference interpreter when asked for or when some op has no native kernel yet.
fn engine<'g>(graph: &'g VerifiedGraph, model: &Path, reference: bool, threads: Option<usize>) -> Result<Engine<'g>> {
    if reference {
        return Ok(Engine::Reference(graph));
    }
    match Model::compile(graph) {
        Ok(mut m) => {
            if let Some(t) = threads {
                m.set_threads(t);
            }
            Ok(Engine::Jit(Box::new(m)))
        }
        Err(e @ CompileError::Unsupported { .. }) => {
            eprintln!("warning: {}: {e}; running the reference interpreter instead", model.display());
            Ok(Engine::Reference(graph))
        }
        Err(e) => Err(e).with_context(|| format!("{}: compiling for this CPU", model.display())),
    }
}

/// How many batches of the model's compiled size `inputs` hold: each input's dim 0 must be the
/// same multiple k of the model's, its other dimensions equal. Inputs of the exact shape give 1;
/// type mismatches other than the batch are left to the engine, which names them.
fn batch_multiple(graph: &VerifiedGraph, inputs: &[Tensor]) -> Result<usize> {
    let mut multiple: Option<(usize, &str)> = None;
    for (&id, t) in graph.inputs().iter().zip(inputs) {
        let (name, ty) = (&graph.node(id).name, &graph.node(id).outputs[0]);
        let (got, want) = (t.shape(), &ty.shape[..]);
        let k = match (got.split_first(), want.split_first()) {
            _ if got == want => 1,
            (Some((&n, rest)), Some((&m, want_rest))) if rest == want_rest && m > 0 && n > 0 && n % m == 0 => n / m,
            _ => bail!(
                "input `{name}`: the array has shape {got:?}, the model takes {ty}: dim 0 must be a multiple of \
                 the model's batch and the other dimensions equal"
            ),
        };
        match multiple {
            Some((k0, first)) if k0 != k => {
                bail!("input `{name}` holds {k} batch(es) of the model's size but input `{first}` holds {k0}")
            }
            _ => multiple = Some((k, name)),
        }
    }
    let k = multiple.map_or(1, |(k, _)| k);
    if k > 1
        && let Some(o) = graph.outputs().iter().find(|o| graph.value_type(&o.value).rank() == 0)
    {
        bail!("output `{}` is a scalar, so {k} batches cannot be concatenated along dim 0", o.name);
    }
    Ok(k)
}

/// Runs `k` batches (slices along dim 0) one after another and concatenates each output along dim 0.
fn run_batches(engine: &Engine, inputs: &[Tensor], k: usize) -> Result<Vec<Tensor>> {
    if k == 1 {
        return Ok(engine.run(inputs)?);
    }
    let mut parts: Vec<Vec<Tensor>> = Vec::new();
    for b in 0..k {
        let chunk = inputs.iter().map(|t| t.batch_slice(b, k)).collect::<Result<Vec<_>, _>>()?;
        let outs = engine.run(&chunk).with_context(|| format!("batch {b} of {k}"))?;
        if parts.is_empty() {
            parts = outs.iter().map(|_| Vec::with_capacity(k)).collect();
        }
        for (p, o) in parts.iter_mut().zip(outs) {
            p.push(o);
        }
    }
    Ok(parts.iter().map(|p| Tensor::concat_batches(p)).collect::<Result<_, _>>()?)
}
