//! The `cnnc` command line.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use cnnc::bench::{self, BenchConfig};
use cnnc::cost;
use cnnc::inspect::{render_table, summarize};
use cnnc::npy::{output_file_stems, read_npy, write_npy};
use cnnc::onnx::{ImportError, ImportOptions, import_bytes, parse_input_shape};
use cnnc_ir::artifact::{self, ArtifactMeta, Provenance};
use cnnc_ir::{Tensor, TensorData, VerifiedGraph};
use cnnc_runtime::{CompileError, LoadError, Model, run_reference};

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
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print one row per layer (name, op, input/output shapes, params, MACs) and totals.
    #[command(after_help = "Examples:\n  cnnc inspect model.onnx\n  cnnc inspect model.cnnc\n  \
        cnnc inspect det.onnx --input-shape x=1x3x640x640 --json\n\n\
        The model is an ONNX file or a cnnc artifact (recognized by its content, not its extension).")]
    Inspect {
        /// The model (.onnx or .cnnc).
        model: PathBuf,
        /// Bind an input's dynamic dimensions, e.g. `x=1x3x640x640` (batch included). Repeatable.
        #[arg(long = "input-shape", value_name = "NAME=DIMS", value_parser = parse_input_shape)]
        input_shape: Vec<(String, Vec<usize>)>,
        /// Print one JSON object (`total_macs`, `total_params`, `layers`, …) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Compile a model into a .cnnc artifact that `cnnc run` and `Model::load` load directly.
    #[command(after_help = "Examples:\n  cnnc opt model.onnx -O0 -o model.cnnc\n  \
        cnnc opt det.onnx -O0 --input-shape x=1x3x640x640 -o det.cnnc\n  \
        cnnc opt det.onnx -O1 --input-shape x=1x3x640x640 -o det.cnnc --report det.json\n\n\
        Shapes are static in an artifact: bind every dynamic dimension (the batch too) with --input-shape.\n\
        -O1 times every kernel it considers once (JIT-compiled alone, median of a few runs) and caches the\n\
        times per machine; the same model, flags and cost cache give a byte-identical artifact.\n\
        `cnnc run` accepts inputs whose batch (dim 0) is a multiple of the compiled batch.\n\
        The output is written to a temporary file and renamed, so a failure never leaves a partial file.")]
    Opt {
        /// The model (.onnx, or a .cnnc to rewrite in this version's format).
        model: PathBuf,
        /// Optimization level: 0 (import and verify, no rewrites), 1 (lossless rewrites: BatchNorm and
        /// per-channel constant folding, chosen by DAG-aware extraction). `speed` arrives later.
        #[arg(short = 'O', value_name = "LEVEL", default_value = "0", value_parser = parse_opt_level)]
        level: OptLevel,
        /// The artifact to write.
        #[arg(short = 'o', long = "output", value_name = "FILE.cnnc")]
        output: PathBuf,
        /// Bind an input's dynamic dimensions, e.g. `x=1x3x640x640`. Repeatable.
        #[arg(long = "input-shape", value_name = "NAME=DIMS", value_parser = parse_input_shape)]
        input_shape: Vec<(String, Vec<usize>)>,
        /// Write what the optimizer did (rules applied, e-graph size, stop reason, predicted vs
        /// measured latency per layer and in total, cost-cache use, time) to this file; the
        /// extension picks the format (`.json`).
        #[arg(long, value_name = "FILE.json")]
        report: Option<PathBuf>,
        /// Also write the (optimized) graph as an ONNX model (opset 18) that onnxruntime runs; fused
        /// ops become their standard ONNX ops again. The artifact does not depend on this flag.
        #[arg(long = "emit-onnx", value_name = "FILE.onnx")]
        emit_onnx: Option<PathBuf>,
        /// The kernel-time cache -O1 reads and extends (default: `$XDG_CACHE_HOME/cnnc/` or
        /// `~/.cache/cnnc/`, a file named after this CPU and cnnc version).
        #[arg(long = "cost-cache", value_name = "FILE.json")]
        cost_cache: Option<PathBuf>,
        /// Time no kernel of the model: estimate each from a roofline (peak FLOP/s and memory
        /// bandwidth, themselves measured once per machine and cached).
        #[arg(long = "no-measure")]
        no_measure: bool,
        /// Threads the kernels are costed at (default 1). The artifact runs at any thread count.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: Option<u32>,
        /// Never run a conv as Winograd F(2,3) or F(4,3): -O1 is then exact up to float reordering
        /// (with Winograd, its bound is rel-L2 ≤ 1e-4 on the layers that use it).
        #[arg(long = "no-winograd")]
        no_winograd: bool,
    },
    /// Run a model on .npy inputs and write each output as DIR/<name>.npy.
    #[command(after_help = "Examples:\n  cnnc run model.cnnc --input x=x.npy --output-dir out/\n  \
        cnnc run model.onnx --input x=x.npy --output-dir out/\n  \
        cnnc run model.onnx --input input:0=img.npy --output-dir out/ --reference\n\n\
        Output file names are the output names with every character outside [A-Za-z0-9_.-] replaced by `_`.\n\
        Dynamic input dimensions of an .onnx model are taken from the .npy shapes unless --input-shape says otherwise.\n\
        An input whose dim 0 is k times the model's batch runs as k batches; outputs are concatenated along dim 0.")]
    Run {
        /// The model (.onnx or .cnnc).
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
        /// Execute with the reference interpreter (plain loops, f64 accumulation) instead of the
        /// JIT-compiled native code.
        #[arg(long)]
        reference: bool,
        /// Threads the native code uses (default: every hardware thread). Outputs do not depend on it.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: Option<u32>,
    },
    /// Time the JIT-compiled model on a fixed random input: median and min latency, a per-kernel
    /// profile, peak memory.
    #[command(after_help = "Examples:\n  cnnc bench mnist.cnnc\n  \
        cnnc bench det.onnx --input-shape x=1x3x640x640 --runs 10\n  \
        cnnc bench mnist.cnnc --runs 100 --warmup 10 --json\n\n\
        The input is uniform in [0, 1) from a fixed seed (i64 inputs are zeros), the same on every run.\n\
        Every timed run is profiled: each kernel call is timed on its own; a layer's time is its median over\n\
        the timed runs and its share is of the sum of those medians. Views and in-place concats run no kernel\n\
        and have no row. Progress goes to stderr; the table (or with --json one JSON object) to stdout.")]
    Bench {
        /// The model (.onnx or .cnnc).
        model: PathBuf,
        /// Bind an input's dynamic dimensions, e.g. `x=1x3x640x640`. Repeatable.
        #[arg(long = "input-shape", value_name = "NAME=DIMS", value_parser = parse_input_shape)]
        input_shape: Vec<(String, Vec<usize>)>,
        /// Threads each run uses (default: every hardware thread). Outputs do not depend on it.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: Option<u32>,
        /// Timed runs.
        #[arg(long, value_name = "R", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
        /// Untimed runs before the timed ones.
        #[arg(long, value_name = "W", default_value_t = 5)]
        warmup: u32,
        /// Print one JSON object (`median_ms`, `layers`, …) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `-O` levels. Only `O0` exists in this version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OptLevel {
    O0,
    O1,
    Speed,
}

impl fmt::Display for OptLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptLevel::O0 => "O0",
            OptLevel::O1 => "O1",
            OptLevel::Speed => "O speed",
        })
    }
}

fn parse_opt_level(arg: &str) -> Result<OptLevel, String> {
    match arg {
        "0" => Ok(OptLevel::O0),
        "1" => Ok(OptLevel::O1),
        "speed" => Ok(OptLevel::Speed),
        _ => Err(format!("unknown optimization level `{arg}`: expected 0, 1 or speed")),
    }
}

fn parse_input_arg(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => Ok((name.to_owned(), PathBuf::from(file))),
        _ => Err(format!("expected NAME=FILE.npy, got `{arg}`")),
    }
}

/// A verified model and, when it came from an artifact, what the artifact says about itself.
struct Loaded {
    graph: VerifiedGraph,
    artifact: Option<ArtifactInfo>,
}

struct ArtifactInfo {
    format_version: u32,
    meta: ArtifactMeta,
}

/// Reads an ONNX model or a cnnc artifact, told apart by the artifact magic. Every error names
/// the file. Artifact shapes are static: `--input-shape` must repeat them.
fn load_model(path: &Path, opts: &ImportOptions) -> Result<Loaded> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
    if !artifact::is_artifact(&bytes) {
        let graph = import_bytes(&bytes, &file, opts).map_err(|e| {
            // File-level errors name the file already; node-level ones get it here.
            let msg = e.to_string();
            if msg.contains(&file) { anyhow::Error::new(e) } else { anyhow::Error::new(e).context(file.clone()) }
        })?;
        return Ok(Loaded { graph, artifact: None });
    }
    let (graph, meta) =
        artifact::decode(&bytes).map_err(|e| anyhow::Error::new(LoadError::from(e)).context(file.clone()))?;
    let graph = cnnc_ir::verify(graph).map_err(|e| anyhow::Error::new(LoadError::from(e)).context(file.clone()))?;
    let format_version = artifact::wire::unframe(&bytes).map(|(v, _)| v).expect("decoded above");
    for (name, dims) in &opts.input_shapes {
        let Some(&id) = graph.inputs().iter().find(|&&id| graph.node(id).name == *name) else {
            bail!("{file}: --input-shape names `{name}`, but the artifact's inputs are: {}", input_list(&graph));
        };
        let ty = &graph.node(id).outputs[0];
        if ty.shape != *dims {
            bail!(
                "{file}: input `{name}` was compiled as {ty}; an artifact's shapes are fixed, so --input-shape \
                 {name}={} needs a new artifact (`cnnc opt … --input-shape {name}=…`)",
                dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
            );
        }
    }
    Ok(Loaded { graph, artifact: Some(ArtifactInfo { format_version, meta }) })
}

fn input_list(graph: &VerifiedGraph) -> String {
    let list: Vec<String> =
        graph.inputs().iter().map(|&id| format!("{} {}", graph.node(id).name, graph.node(id).outputs[0])).collect();
    list.join(", ")
}

/// Prints a line to stdout; a closed pipe (`cnnc inspect … | head`) ends the output quietly.
fn say(line: impl fmt::Display) -> Result<()> {
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn model_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn cmd_inspect(model: &Path, input_shape: Vec<(String, Vec<usize>)>, json: bool) -> Result<()> {
    let loaded = load_model(model, &ImportOptions { input_shapes: input_shape, ..ImportOptions::default() })?;
    let summary = summarize(&loaded.graph, &model_name(model));
    if json {
        let mut value = serde_json::to_value(&summary).context("serializing the summary")?;
        if let Some(info) = &loaded.artifact {
            value["artifact"] = artifact_json(info);
        }
        say(value)?;
    } else {
        if let Some(info) = &loaded.artifact {
            say(artifact_line(info))?;
        }
        say(render_table(&summary).trim_end())?;
    }
    Ok(())
}

fn artifact_json(info: &ArtifactInfo) -> serde_json::Value {
    let p = info.meta.provenance.as_ref();
    serde_json::json!({
        "format_version": info.format_version,
        "cnnc_version": p.map(|p| &p.cnnc_version),
        "opt_level": p.map(|p| &p.opt_level),
        "args": p.map(|p| &p.args),
        "cost_table_hash": p.map(|p| &p.cost_table_hash).filter(|h| !h.is_empty()),
    })
}

fn artifact_line(info: &ArtifactInfo) -> String {
    match &info.meta.provenance {
        Some(p) => format!(
            "artifact format {}, written by cnnc {} at -{}: cnnc {}",
            info.format_version,
            p.cnnc_version,
            p.opt_level,
            p.args.join(" ")
        ),
        None => format!("artifact format {} (no provenance recorded)", info.format_version),
    }
}

/// `cnnc opt`'s flags.
struct OptFlags {
    level: OptLevel,
    output: PathBuf,
    input_shape: Vec<(String, Vec<usize>)>,
    report: Option<PathBuf>,
    emit_onnx: Option<PathBuf>,
    cost_cache: Option<PathBuf>,
    no_measure: bool,
    threads: Option<u32>,
    no_winograd: bool,
}

fn cmd_opt(model: &Path, flags: OptFlags) -> Result<()> {
    let OptFlags { level, output, input_shape, report, emit_onnx, cost_cache, no_measure, threads, no_winograd } =
        flags;
    let (output, report, emit_onnx) = (output.as_path(), report.as_deref(), emit_onnx.as_deref());
    if level == OptLevel::Speed {
        bail!(
            "-{level} is not available yet in this version of cnnc ({}): it arrives with the accuracy-budgeted \
             search; -O0 and -O1 (lossless) are available",
            env!("CARGO_PKG_VERSION")
        );
    }
    if same_file(model, output) {
        bail!("-o {} is the input model; write the artifact to another file", output.display());
    }
    if let Some(r) = report {
        if level == OptLevel::O0 {
            bail!("--report {}: -O0 runs no rewrites, so there is nothing to report (use -O1)", r.display());
        }
        if r.extension().and_then(|e| e.to_str()) != Some("json") {
            bail!("--report {}: the extension picks the format, and this cnnc writes `.json`", r.display());
        }
        if same_file(model, r) || same_file(output, r) {
            bail!("--report {} is the model or the artifact; write the report to another file", r.display());
        }
    }
    if let Some(p) = emit_onnx
        && (same_file(model, p) || same_file(output, p) || report.is_some_and(|r| same_file(r, p)))
    {
        bail!(
            "--emit-onnx {} is the model, the artifact or the report; write the ONNX model to another file",
            p.display()
        );
    }
    if let Some(c) = &cost_cache
        && (same_file(model, c)
            || same_file(output, c)
            || report.is_some_and(|r| same_file(r, c))
            || emit_onnx.is_some_and(|e| same_file(e, c)))
    {
        bail!(
            "--cost-cache {} is the model, the artifact, the report or the ONNX output; keep the cost cache in its own file",
            c.display()
        );
    }
    if level == OptLevel::O0 {
        let flag = [
            (cost_cache.is_some(), "--cost-cache"),
            (no_measure, "--no-measure"),
            (threads.is_some(), "--threads"),
            (no_winograd, "--no-winograd"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag));
        if let Some(flag) = flag {
            bail!("{flag}: -O0 runs no rewrites, so it uses no cost model and no Winograd (use -O1)");
        }
    }
    let started = Instant::now();
    let mut loaded = load_model(model, &ImportOptions { input_shapes: input_shape, ..ImportOptions::default() })?;
    let mut opt_report = None;
    let mut cost_table_hash = String::new();
    if level == OptLevel::O1 {
        let threads = threads.unwrap_or(1) as usize;
        let mut cache = open_cost_cache(cost_cache.as_deref());
        let mut table = cnnc_passes::TableCost::new(threads);
        let limits = cnnc_passes::Limits::default();
        let rules = cnnc_passes::RuleOptions { winograd: !no_winograd };
        let optimizing = || format!("{}: optimizing", model.display());
        let (graph, rep, model_kind, stats) = if no_measure {
            let mut oracle = cost::RooflineOracle::new(&mut cache, threads)
                .map_err(|e| anyhow::anyhow!("--no-measure: measuring this machine's roofline: {e}"))?;
            let (graph, rep) = cnnc_passes::optimize_exact(&loaded.graph, limits, rules, &mut table, &mut oracle)
                .with_context(optimizing)?;
            (graph, rep, CostKind::Roofline(oracle.roofline), oracle.stats)
        } else {
            let mut oracle = cost::MeasuredOracle::new(&mut cache, |line| eprintln!("{line}"));
            let (graph, rep) = cnnc_passes::optimize_exact(&loaded.graph, limits, rules, &mut table, &mut oracle)
                .with_context(optimizing)?;
            (graph, rep, CostKind::Measured, oracle.stats)
        };
        if let Err(e) = cache.save() {
            eprintln!("warning: {e}; the kernel times were used but not kept");
        }
        for f in table.failures() {
            eprintln!("warning: {f}; priced as unmeasurable ({} s)", cnnc_passes::UNMEASURABLE_US / 1e6);
        }
        loaded.graph = cnnc_ir::verify(graph).map_err(|e| {
            anyhow::anyhow!("{}: the optimized graph does not verify (a bug in a rewrite rule): {e}", model.display())
        })?;
        cost_table_hash = table.hash();
        opt_report =
            Some(OptOutcome { rep, table, kind: model_kind, stats, cache_path: cache.path().map(Path::to_owned) });
    }
    let meta = ArtifactMeta {
        provenance: Some(Provenance {
            cnnc_version: env!("CARGO_PKG_VERSION").to_owned(),
            opt_level: level.to_string(),
            args: result_args(std::env::args().skip(1)),
            cost_table_hash,
        }),
    };
    let bytes = artifact::encode(&loaded.graph, &meta)
        .with_context(|| format!("{}: the model exceeds the artifact format's limits", model.display()))?;
    // Exported before anything is written, so an export error leaves no file behind.
    let onnx = emit_onnx
        .map(|p| {
            cnnc::onnx::export_bytes(&loaded.graph)
                .with_context(|| format!("--emit-onnx {}: exporting {}", p.display(), model.display()))
        })
        .transpose()?;
    if let (Some(path), Some(outcome)) = (report, &opt_report) {
        let latency = if matches!(outcome.kind, CostKind::Roofline(_)) {
            None
        } else {
            Some(
                measure_final(&loaded.graph, outcome.table.threads())
                    .with_context(|| format!("{}: measuring the optimized model for the report", model.display()))?,
            )
        };
        let json = report_json(outcome, &loaded.graph, latency.as_ref(), started.elapsed());
        write_atomically(path, format!("{json:#}\n").as_bytes())?;
    }
    write_atomically(output, &bytes)?;
    if let (Some(path), Some(onnx)) = (emit_onnx, &onnx) {
        write_atomically(path, onnx)?;
    }
    let weight_bytes: usize = loaded.graph.weights().iter().map(|(_, t)| t.size_bytes()).sum();
    let mut summary = serde_json::json!({
        "artifact": output.display().to_string(),
        "bytes": bytes.len(),
        "format_version": artifact::FORMAT_VERSION,
        "opt_level": level.to_string(),
        "nodes": loaded.graph.node_count(),
        "weight_bytes": weight_bytes,
    });
    if let Some(p) = emit_onnx {
        summary["onnx"] = p.display().to_string().into();
    }
    say(summary)?;
    Ok(())
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

/// Which cost model priced the kernels.
enum CostKind {
    Measured,
    Roofline(cost::Roofline),
}

/// What an `-O1` run did, for the report.
struct OptOutcome {
    rep: cnnc_passes::OptReport,
    table: cnnc_passes::TableCost,
    kind: CostKind,
    stats: cost::OracleStats,
    cache_path: Option<PathBuf>,
}

/// The cost cache at `path`, or at the default location; in memory only (with a warning) when
/// there is no default location. A corrupt or foreign file is reported and ignored.
fn open_cost_cache(path: Option<&Path>) -> cost::CostCache {
    let machine = cost::Machine::this();
    let mut warn = |w: String| eprintln!("warning: {w}");
    match path.map(Path::to_owned).or_else(|| cost::CostCache::default_path(&machine)) {
        Some(p) => cost::CostCache::open(&p, machine, &mut warn),
        None => {
            warn(
                "no cache folder (neither XDG_CACHE_HOME nor HOME is set): kernel times are measured but not kept; \
                 pass --cost-cache FILE.json to keep them"
                    .to_owned(),
            );
            cost::CostCache::in_memory(machine)
        }
    }
}

/// Latency of the optimized model and each kernel's, at `threads` threads.
fn measure_final(graph: &VerifiedGraph, threads: usize) -> Result<cost::ModelTiming> {
    let mut model = Model::compile(graph).context("compiling for this CPU")?;
    model.set_threads(threads);
    Ok(cost::time_model(&model, std::time::Duration::from_secs(1))?)
}

/// The `--report` JSON of an `-O1` run: what the rules did, the cost model and its cache, and
/// the optimized graph's predicted latency per layer and in total against the measured one
/// (`latency` is `None` under `--no-measure`, which runs nothing).
fn report_json(
    o: &OptOutcome,
    graph: &VerifiedGraph,
    latency: Option<&cost::ModelTiming>,
    elapsed: std::time::Duration,
) -> serde_json::Value {
    let r = &o.rep;
    let s = &r.saturation;
    let measured: HashMap<&str, f64> =
        latency.map(|l| l.layers.iter().map(|(name, us)| (name.as_str(), *us)).collect()).unwrap_or_default();
    let order = graph.topo_order().expect("a verified graph is acyclic");
    let layers: Vec<serde_json::Value> = order
        .iter()
        .filter(|&&id| !graph.node(id).op.is_source())
        .map(|&id| {
            let node = graph.node(id);
            // Views (reshapes, slab splits) and in-place concats run no kernel.
            let measured_us = latency.map(|_| measured.get(node.name.as_str()).copied().unwrap_or(0.0));
            let mut layer = serde_json::json!({
                "name": node.name,
                "op": node.op.name(),
                "predicted_us": o.table.node_cost(graph, id),
                "measured_us": measured_us,
            });
            if let Some(algo) = conv_algo(&node.op) {
                layer["algo"] = algo.name().into();
            }
            layer
        })
        .collect();
    let predicted_ms = o.table.graph_cost(graph) / 1e3;
    let total = match latency {
        Some(l) => serde_json::json!({
            "predicted_ms": predicted_ms,
            "measured_ms": l.latency_ms(),
            "measured": if l.on_cpu_ms.is_some() {
                "median time a run spent on the CPU: its wall time minus the time it waited while other processes held the CPU (equal on an idle machine)"
            } else {
                "median wall-clock time of a run"
            },
            "wall_ms": l.wall_ms,
            "on_cpu_ms": l.on_cpu_ms,
            "measured_kernels_ms": l.layers.iter().map(|(_, us)| us).sum::<f64>() / 1e3,
            "error": predicted_ms / l.latency_ms() - 1.0,
            "runs": l.runs,
            "threads": l.threads,
        }),
        None => serde_json::json!({
            "predicted_ms": predicted_ms,
            "measured_ms": null,
            "note": "not measured: --no-measure runs no kernel of the model",
        }),
    };
    let model = match &o.kind {
        CostKind::Measured => serde_json::json!({
            "kind": "measured",
            "description": "each distinct kernel (op, attributes, operand types and constness, threads) JIT-compiled alone with L2 evicted before each run; lower quartile of 3-15 runs' kernel time",
        }),
        CostKind::Roofline(rl) => serde_json::json!({
            "kind": "roofline",
            "description": "max(2·MACs / peak, bytes moved / bandwidth) + launch time; peak, bandwidth and launch measured once per machine",
            "peak_gflops": rl.peak_mflops as f64 / 1e3,
            "bandwidth_gbps": rl.bandwidth_mbps as f64 / 1e3,
            "launch_us": rl.launch_ns as f64 / 1e3,
        }),
    };
    let winograd = cnnc_passes::winograd_layers(graph);
    let numerics = if winograd > 0 {
        serde_json::json!({
            "exact": false,
            "winograd_layers": winograd,
            "bound": "rel-L2 <= 1e-4 per output end to end: Winograd F(2,3)/F(4,3) rounding on the layers whose `algo` names it (ARCHITECTURE.md, Winograd convolution); --no-winograd makes -O1 exact up to float reordering",
        })
    } else {
        serde_json::json!({
            "exact": true,
            "winograd_layers": 0,
            "bound": "exact up to float reordering (rel-L2 <= max(1e-5, 4 x onnxruntime's own optimizations-on-vs-off difference))",
        })
    };
    serde_json::json!({
        "cnnc_version": env!("CARGO_PKG_VERSION"),
        "numerics": numerics,
        "rules": s.applied.iter().map(|(name, n)| serde_json::json!({"rule": name, "applications": n})).collect::<Vec<_>>(),
        "egraph": {"iterations": s.iterations, "nodes": s.nodes, "classes": s.classes, "stop_reason": s.stop_reason},
        "cost_model": model,
        "cost_cache": {
            "file": o.cache_path.as_ref().map(|p| p.display().to_string()),
            "hits": o.stats.hits,
            "measured": o.stats.measured,
            "failed": o.stats.failed,
            "measure_ms": o.stats.measure_time.as_secs_f64() * 1e3,
            "table_entries": o.table.len(),
            "table_hash": o.table.hash(),
        },
        "predicted_cost": {"unit": "us", "before": r.cost_before, "after": r.cost_after},
        "graph_nodes": {"before": r.nodes_before, "after": r.nodes_after},
        "latency": total,
        "layers": layers,
        "time_ms": {
            "saturate": r.saturate_ms,
            "cost": r.cost_ms,
            "extract": r.extract_ms,
            "total": elapsed.as_secs_f64() * 1e3,
        },
    })
}

/// The algorithm of a conv or fused conv; `None` for other ops.
fn conv_algo(op: &cnnc_ir::Op) -> Option<cnnc_ir::ConvAlgo> {
    match op {
        cnnc_ir::Op::Conv(a) => Some(a.algo),
        cnnc_ir::Op::Fused(f) => match &f.base {
            cnnc_ir::Op::Conv(a) => Some(a.algo),
            _ => None,
        },
        _ => None,
    }
}

/// True if `a` and `b` name the same file (existing or not).
fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    a == b || matches!((canonical(a), canonical(b)), (Some(x), Some(y)) if x == y)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`: readers see
/// the old file or the whole new one, and a failure leaves the old file untouched.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let Some(name) = path.file_name() else { bail!("-o {}: not a file name", path.display()) };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        // The temporary file may not exist (the open failed); nothing else to clean up.
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// What executes the model.
enum Engine<'g> {
    Jit(Box<Model>),
    Reference(&'g VerifiedGraph),
}

impl Engine<'_> {
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, cnnc_runtime::RunError> {
        match self {
            Engine::Jit(m) => m.run(inputs),
            Engine::Reference(g) => run_reference(g, inputs),
        }
    }
}

/// The JIT, or the reference interpreter when asked for or when some op has no native kernel yet.
fn engine<'g>(graph: &'g VerifiedGraph, model: &Path, reference: bool, threads: Option<u32>) -> Result<Engine<'g>> {
    if reference {
        return Ok(Engine::Reference(graph));
    }
    match Model::compile(graph) {
        Ok(mut m) => {
            if let Some(t) = threads {
                m.set_threads(t as usize);
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

fn cmd_run(
    model: &Path,
    inputs: Vec<(String, PathBuf)>,
    output_dir: &Path,
    input_shape: Vec<(String, Vec<usize>)>,
    reference: bool,
    threads: Option<u32>,
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
    let graph = load_model(model, &ImportOptions { input_shapes: input_shape, input_shape_hints: hints })?.graph;

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
    let engine = engine(&graph, model, reference, threads)?;
    let outputs = run_batches(&engine, &ordered, batches).with_context(|| format!("running {}", model.display()))?;

    std::fs::create_dir_all(output_dir).with_context(|| format!("creating {}", output_dir.display()))?;
    let names: Vec<&str> = graph.outputs().iter().map(|o| o.name.as_str()).collect();
    for ((name, stem), t) in names.iter().zip(output_file_stems(&names)).zip(&outputs) {
        let path = output_dir.join(format!("{stem}.npy"));
        write_npy(&path, t)?;
        say(
            serde_json::json!({"output": name, "file": path.display().to_string(), "shape": t.shape(), "dtype": t.dtype().name()}),
        )?;
    }
    Ok(())
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
        let chunk: Vec<Tensor> = inputs.iter().map(|t| batch_slice(t, b, k)).collect();
        let outs = engine.run(&chunk).with_context(|| format!("batch {b} of {k}"))?;
        if parts.is_empty() {
            parts = outs.iter().map(|_| Vec::with_capacity(k)).collect();
        }
        for (p, o) in parts.iter_mut().zip(outs) {
            p.push(o);
        }
    }
    Ok(parts.into_iter().map(|p| concat_batches(&p)).collect())
}

/// Slice `b` of `k` equal slices of `t` along dim 0 (which `k` divides).
fn batch_slice(t: &Tensor, b: usize, k: usize) -> Tensor {
    let mut shape = t.shape().to_vec();
    shape[0] /= k;
    let n = t.numel() / k;
    let range = b * n..(b + 1) * n;
    Tensor::new(shape, t.data().slice(range)).expect("a slice along dim 0 keeps the element count")
}

/// Concatenates same-typed tensors of rank ≥ 1 along dim 0.
fn concat_batches(parts: &[Tensor]) -> Tensor {
    let mut shape = parts[0].shape().to_vec();
    shape[0] = parts.iter().map(|t| t.shape()[0]).sum();
    let bytes: Vec<u8> = parts.iter().flat_map(|t| t.data().to_le_bytes()).collect();
    let data = TensorData::from_le_bytes(parts[0].dtype(), &bytes).expect("whole elements of one dtype");
    Tensor::new(shape, data).expect("every batch has the same type")
}

fn cmd_bench(
    model: &Path,
    input_shape: Vec<(String, Vec<usize>)>,
    threads: Option<u32>,
    cfg: BenchConfig,
    json: bool,
) -> Result<()> {
    let graph = load_model(model, &ImportOptions { input_shapes: input_shape, ..ImportOptions::default() })?.graph;
    let mut compiled =
        Model::compile(&graph).with_context(|| format!("{}: compiling for this CPU", model.display()))?;
    if let Some(t) = threads {
        compiled.set_threads(t as usize);
    }
    let report = bench::bench(&compiled, &model_name(model), cfg, |line| eprintln!("{line}"))
        .with_context(|| format!("running {}", model.display()))?;
    if json {
        say(serde_json::to_value(&report).context("serializing the report")?)
    } else {
        say(bench::render_table(&report).trim_end())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { model, input_shape, json } => cmd_inspect(&model, input_shape, json),
        Command::Opt {
            model,
            level,
            output,
            input_shape,
            report,
            emit_onnx,
            cost_cache,
            no_measure,
            threads,
            no_winograd,
        } => cmd_opt(
            &model,
            OptFlags { level, output, input_shape, report, emit_onnx, cost_cache, no_measure, threads, no_winograd },
        ),
        Command::Run { model, inputs, output_dir, input_shape, reference, threads } => {
            cmd_run(&model, inputs, &output_dir, input_shape, reference, threads)
        }
        Command::Bench { model, input_shape, threads, runs, warmup, json } => {
            let runs = NonZeroUsize::new(runs as usize).expect("clap rejects --runs 0");
            let cfg = BenchConfig { warmup: warmup as usize, runs };
            cmd_bench(&model, input_shape, threads, cfg, json)
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
