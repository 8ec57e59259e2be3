//! The `cnnc opt` pipeline, which the CLI and the tests both call: [`load_model`] (an ONNX
//! model or a cnnc artifact) → [`optimize`] (`-O0`: nothing; `-O1`: lossless rewrites priced by
//! the measured or roofline cost model) → [`compile`] (the artifact's bytes, the report, the
//! exported ONNX model) → [`write`] (report, artifact, ONNX model, each atomically). [`opt`]
//! runs all four. Nothing is written unless every step before writing succeeded, and a Ctrl-C
//! ([`crate::interrupt`]) during the cost measurement ends the run with
//! [`DriverError::Interrupted`] after saving the kernel times measured so far. Warnings go to
//! stderr as `warning: …` lines.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use cnnc_ir::artifact::{self, ArtifactError, ArtifactMeta, Provenance};
use cnnc_ir::{VerifiedGraph, VerifyErrors};
use cnnc_passes::ExtractError;
use cnnc_runtime::{LoadError, Model};
use serde::Serialize;

use crate::cost::{self, CostCache, ModelTiming, OracleStats, Roofline};
use crate::interrupt;
use crate::onnx::{ExportError, ImportError, ImportOptions, import_bytes};
use crate::report::{OptReport, OptSummary};

/// `-O` levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum OptLevel {
    /// Import and verify, no rewrites.
    O0,
    /// Lossless rewrites chosen by DAG-aware extraction over measured kernel times.
    O1,
    /// The accuracy-budgeted search over exact and approximate forms.
    #[serde(rename = "O speed")]
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

impl FromStr for OptLevel {
    type Err = String;

    /// The spelling after `-O`: `0`, `1` or `speed`.
    fn from_str(arg: &str) -> Result<OptLevel, String> {
        match arg {
            "0" => Ok(OptLevel::O0),
            "1" => Ok(OptLevel::O1),
            "speed" => Ok(OptLevel::Speed),
            _ => Err(format!("unknown optimization level `{arg}`: expected 0, 1 or speed")),
        }
    }
}

/// Why a driver step failed. Each message names the file or the flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{}", name_file(file, &chain(error)))]
    Import { file: String, error: ImportError },
    #[error("{file}: {}", chain(error))]
    Load { file: String, error: LoadError },
    #[error("{file}: --input-shape names `{name}`, but the artifact's inputs are: {inputs}")]
    UnknownInput { file: String, name: String, inputs: String },
    #[error(
        "{file}: input `{name}` was compiled as {compiled}; an artifact's shapes are fixed, so --input-shape \
         {name}={dims} needs a new artifact (`cnnc opt … --input-shape {name}=…`)"
    )]
    FixedShape { file: String, name: String, compiled: String, dims: String },
    #[error(
        "-O speed needs calibration data: --calib DIR (images or .npy files) or --calib FILE.npz; the search \
         fits its approximations on part of it and checks the accuracy budget on another part"
    )]
    NeedsCalib,
    #[error("{flag}: only -O speed uses it (it approximates within an accuracy budget; -O0 and -O1 are lossless)")]
    NeedsSpeed { flag: &'static str },
    #[error("--calib: {0}")]
    Calib(#[from] crate::calib::CalibError),
    #[error("{}: -O speed calibrates single-input models; this one has {n} inputs: {inputs}", model.display())]
    CalibInputs { model: PathBuf, n: usize, inputs: String },
    #[error("{}: -O speed: {}", model.display(), chain(error))]
    Speed { model: PathBuf, error: crate::speed::SpeedError },
    /// Two paths name the same file.
    #[error("{flag} {} is {others}; {advice}", path.display())]
    SameFile { flag: &'static str, path: PathBuf, others: &'static str, advice: &'static str },
    #[error("--report {}: -O0 runs no rewrites, so there is nothing to report (use -O1)", path.display())]
    ReportAtO0 { path: PathBuf },
    #[error("--report {}: the extension picks the format, and this cnnc writes `.json`", path.display())]
    ReportFormat { path: PathBuf },
    #[error("{flag}: -O0 runs no rewrites, so it uses no cost model and no Winograd (use -O1)")]
    NeedsO1 { flag: &'static str },
    #[error("--no-measure: measuring this machine's roofline: {reason}")]
    Roofline { reason: String },
    #[error("{}: optimizing: {}", model.display(), chain(error))]
    Optimize { model: PathBuf, error: ExtractError },
    #[error("{}: the optimized graph does not verify (a bug in a rewrite rule): {error}", model.display())]
    OptimizedGraphInvalid { model: PathBuf, error: VerifyErrors },
    #[error("{}: the model exceeds the artifact format's limits: {}", model.display(), chain(error))]
    Encode { model: PathBuf, error: ArtifactError },
    #[error("--emit-onnx {}: exporting {}: {}", path.display(), model.display(), chain(error))]
    Export { path: PathBuf, model: PathBuf, error: ExportError },
    #[error("{}: measuring the optimized model for the report: {reason}", model.display())]
    MeasureFinal { model: PathBuf, reason: String },
    #[error("{flag} {}: not a file name", path.display())]
    NotAFile { flag: &'static str, path: PathBuf },
    #[error("writing {}: {}", path.display(), chain(error))]
    Write { path: PathBuf, error: std::io::Error },
    /// Ctrl-C: nothing was written; the cost cache (when it has a file) was saved.
    #[error("{}", interrupted(*measured, cache.as_deref()))]
    Interrupted { measured: usize, cache: Option<PathBuf> },
}

/// `e`'s message followed by its sources', as `anyhow` prints an error chain with `{:#}`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// `message`, prefixed with `file` unless it names the file already (file-level import errors do).
fn name_file(file: &str, message: &str) -> String {
    if message.contains(file) { message.to_owned() } else { format!("{file}: {message}") }
}

fn interrupted(measured: usize, cache: Option<&Path>) -> String {
    match cache {
        _ if measured == 0 => "interrupted: nothing written".to_owned(),
        Some(_) => {
            format!("interrupted: nothing written; the cost cache keeps the {measured} kernel times measured so far")
        }
        None => format!(
            "interrupted: nothing written; the {measured} kernel times measured so far are lost (the cost cache \
             has no file)"
        ),
    }
}

/// A verified model and, when it came from an artifact, what the artifact says about itself.
pub struct Loaded {
    pub graph: VerifiedGraph,
    pub artifact: Option<ArtifactInfo>,
}

/// The header of a loaded artifact.
pub struct ArtifactInfo {
    pub format_version: u32,
    pub meta: ArtifactMeta,
}

/// Reads an ONNX model or a cnnc artifact, told apart by the artifact magic. Every error names
/// the file. Artifact shapes are static: `opts.input_shapes` must repeat them.
pub fn load_model(path: &Path, opts: &ImportOptions) -> Result<Loaded, DriverError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| DriverError::Import {
        file: file.clone(),
        error: ImportError::Io { path: path.to_path_buf(), source },
    })?;
    if !artifact::is_artifact(&bytes) {
        let graph =
            import_bytes(&bytes, &file, opts).map_err(|error| DriverError::Import { file: file.clone(), error })?;
        return Ok(Loaded { graph, artifact: None });
    }
    let load_error = |error: LoadError| DriverError::Load { file: file.clone(), error };
    let (graph, meta) = artifact::decode(&bytes).map_err(|e| load_error(e.into()))?;
    let graph = cnnc_ir::verify(graph).map_err(|e| load_error(e.into()))?;
    let format_version = artifact::wire::unframe(&bytes).map(|(v, _)| v).expect("decoded above");
    for (name, dims) in &opts.input_shapes {
        let Some(&id) = graph.inputs().iter().find(|&&id| graph.node(id).name == *name) else {
            return Err(DriverError::UnknownInput { file, name: name.clone(), inputs: input_list(&graph) });
        };
        let ty = &graph.node(id).outputs[0];
        if ty.shape != *dims {
            return Err(DriverError::FixedShape {
                file,
                name: name.clone(),
                compiled: ty.to_string(),
                dims: dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
            });
        }
    }
    Ok(Loaded { graph, artifact: Some(ArtifactInfo { format_version, meta }) })
}

/// The graph's inputs as `name type, …`, for messages.
pub fn input_list(graph: &VerifiedGraph) -> String {
    let list: Vec<String> =
        graph.inputs().iter().map(|&id| format!("{} {}", graph.node(id).name, graph.node(id).outputs[0])).collect();
    list.join(", ")
}

/// What `cnnc opt` was asked to do; the fields mirror its flags.
#[derive(Clone, Debug)]
pub struct OptOptions {
    pub model: PathBuf,
    pub level: OptLevel,
    /// `-o`: the artifact to write.
    pub output: PathBuf,
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// `--report FILE.json`.
    pub report: Option<PathBuf>,
    /// `--emit-onnx FILE.onnx`.
    pub emit_onnx: Option<PathBuf>,
    /// `--cost-cache FILE.json`; `None` for the default location.
    pub cost_cache: Option<PathBuf>,
    /// `--no-measure`: price kernels from the roofline.
    pub no_measure: bool,
    /// `--threads`: the thread count kernels are costed at; `None` for 1.
    pub threads: Option<usize>,
    /// `--no-winograd`.
    pub no_winograd: bool,
    /// The command-line words that decide the artifact's contents (no output paths), recorded
    /// in its provenance.
    pub args: Vec<String>,
    /// `-O speed`'s calibration data (`--calib` and its flags); `None` without `--calib`.
    pub calib: Option<crate::calib::CalibSpec>,
    /// `-O speed`'s metric, budget and families.
    pub speed: crate::speed::SpeedOptions,
}

impl OptOptions {
    /// Refuses what cannot work before any work is done: an unavailable level, an output that
    /// is an input or another output, a report in another format or at `-O0`, and `-O1`-only
    /// flags at `-O0`.
    pub fn check(&self) -> Result<(), DriverError> {
        let (model, output) = (self.model.as_path(), self.output.as_path());
        let (report, emit_onnx) = (self.report.as_deref(), self.emit_onnx.as_deref());
        if self.level == OptLevel::Speed && self.calib.is_none() {
            return Err(DriverError::NeedsCalib);
        }
        if self.level != OptLevel::Speed && self.calib.is_some() {
            return Err(DriverError::NeedsSpeed { flag: "--calib" });
        }
        let same = |flag, path: &Path, others, advice| {
            Err(DriverError::SameFile { flag, path: path.to_owned(), others, advice })
        };
        if same_file(model, output) {
            return same("-o", output, "the input model", "write the artifact to another file");
        }
        if let Some(r) = report {
            if self.level == OptLevel::O0 {
                return Err(DriverError::ReportAtO0 { path: r.to_owned() });
            }
            if r.extension().and_then(|e| e.to_str()) != Some("json") {
                return Err(DriverError::ReportFormat { path: r.to_owned() });
            }
            if same_file(model, r) || same_file(output, r) {
                return same("--report", r, "the model or the artifact", "write the report to another file");
            }
        }
        if let Some(p) = emit_onnx
            && (same_file(model, p) || same_file(output, p) || report.is_some_and(|r| same_file(r, p)))
        {
            let others = "the model, the artifact or the report";
            return same("--emit-onnx", p, others, "write the ONNX model to another file");
        }
        if let Some(c) = self.cost_cache.as_deref()
            && (same_file(model, c)
                || same_file(output, c)
                || report.is_some_and(|r| same_file(r, c))
                || emit_onnx.is_some_and(|e| same_file(e, c)))
        {
            let others = "the model, the artifact, the report or the ONNX output";
            return same("--cost-cache", c, others, "keep the cost cache in its own file");
        }
        if self.level == OptLevel::O0 {
            let given = [
                (self.cost_cache.is_some(), "--cost-cache"),
                (self.no_measure, "--no-measure"),
                (self.threads.is_some(), "--threads"),
                (self.no_winograd, "--no-winograd"),
            ];
            if let Some(flag) = given.into_iter().find_map(|(given, flag)| given.then_some(flag)) {
                return Err(DriverError::NeedsO1 { flag });
            }
        }
        Ok(())
    }
}

/// What an `-O1` run did, for the report.
pub(crate) struct OptOutcome {
    pub(crate) rep: cnnc_passes::OptReport,
    pub(crate) table: cnnc_passes::TableCost,
    /// The roofline that priced the kernels under `--no-measure`; `None` when they were measured.
    pub(crate) roofline: Option<Roofline>,
    pub(crate) stats: OracleStats,
    pub(crate) cache_path: Option<PathBuf>,
    /// What `-O speed`'s search did.
    pub(crate) speed: Option<crate::speed::SpeedReport>,
}

/// The graph to write, and for `-O1` what the optimizer did.
pub struct Optimized {
    pub graph: VerifiedGraph,
    outcome: Option<OptOutcome>,
}

impl Optimized {
    /// Kernels timed during this run: 0 at `-O0`; under `--no-measure` only the roofline's
    /// three, when the cache lacked them.
    pub fn kernels_measured(&self) -> usize {
        self.outcome.as_ref().map_or(0, |o| o.stats.measured)
    }

    fn cache_path(&self) -> Option<PathBuf> {
        self.outcome.as_ref().and_then(|o| o.cache_path.clone())
    }
}

/// Optimizes `graph` at `o.level`: `-O0` returns it as it is; `-O1` saturates with the lossless
/// rules, prices the e-graph with the cost model (reading and extending the cost cache, which
/// is saved whatever happens next) and extracts the cheapest graph.
pub fn optimize(graph: VerifiedGraph, o: &OptOptions) -> Result<Optimized, DriverError> {
    if o.level == OptLevel::Speed {
        return optimize_speed(graph, o);
    }
    if o.level != OptLevel::O1 {
        return Ok(Optimized { graph, outcome: None });
    }
    let threads = o.threads.unwrap_or(1);
    let mut cache = open_cost_cache(o.cost_cache.as_deref());
    let mut table = cnnc_passes::TableCost::new(threads);
    let config = cnnc_passes::OptConfig::lossless().with_winograd(!o.no_winograd);
    let optimizing = |error| DriverError::Optimize { model: o.model.clone(), error };
    let (optimized, rep, roofline, stats) = if o.no_measure {
        let mut oracle =
            cost::RooflineOracle::new(&mut cache, threads).map_err(|reason| DriverError::Roofline { reason })?;
        let (g, rep) = cnnc_passes::optimize_exact(&graph, &config, &mut table, &mut oracle).map_err(optimizing)?;
        (g, rep, Some(oracle.roofline), oracle.stats)
    } else {
        let mut oracle = cost::MeasuredOracle::new(&mut cache, o.cost_cache.is_none())
            .cold_weights(cost::weights_outgrow_caches(&graph));
        let result = cnnc_passes::optimize_exact(&graph, &config, &mut table, &mut oracle);
        let stats = oracle.stats;
        if interrupt::requested() {
            save_cost_cache(&mut cache);
            return Err(DriverError::Interrupted { measured: stats.measured, cache: cache.path().map(Path::to_owned) });
        }
        let (g, rep) = result.map_err(optimizing)?;
        (g, rep, None, stats)
    };
    save_cost_cache(&mut cache);
    warn_busy(&stats);
    for f in table.failures() {
        eprintln!("warning: {f}; priced as unmeasurable ({} s)", cnnc_passes::UNMEASURABLE_US / 1e6);
    }
    let graph = cnnc_ir::verify(optimized)
        .map_err(|error| DriverError::OptimizedGraphInvalid { model: o.model.clone(), error })?;
    let cache_path = cache.path().map(Path::to_owned);
    Ok(Optimized { graph, outcome: Some(OptOutcome { rep, table, roofline, stats, cache_path, speed: None }) })
}

/// `-O speed`: the calibration set, then the budgeted search ([`crate::speed`]).
fn optimize_speed(graph: VerifiedGraph, o: &OptOptions) -> Result<Optimized, DriverError> {
    let spec = o.calib.as_ref().ok_or(DriverError::NeedsCalib)?;
    if graph.inputs().len() != 1 {
        return Err(DriverError::CalibInputs {
            model: o.model.clone(),
            n: graph.inputs().len(),
            inputs: input_list(&graph),
        });
    }
    let input = graph.node(graph.inputs()[0]).outputs[0].clone();
    let set = crate::calib::CalibSet::open(spec, &input)?;
    let threads = o.threads.unwrap_or(1);
    let mut cache = open_cost_cache(o.cost_cache.as_deref());
    let mut table = cnnc_passes::TableCost::new(threads);
    let winograd = !o.no_winograd;
    let nodes_before = graph.node_count();
    let (result, roofline, stats) = if o.no_measure {
        let mut oracle =
            cost::RooflineOracle::new(&mut cache, threads).map_err(|reason| DriverError::Roofline { reason })?;
        let r = crate::speed::optimize_speed(&graph, &set, &o.speed, winograd, &mut table, &mut oracle, threads);
        (r, Some(oracle.roofline), oracle.stats)
    } else {
        let mut oracle = cost::MeasuredOracle::new(&mut cache, o.cost_cache.is_none())
            .cold_weights(cost::weights_outgrow_caches(&graph));
        let r = crate::speed::optimize_speed(&graph, &set, &o.speed, winograd, &mut table, &mut oracle, threads);
        (r, None, oracle.stats)
    };
    save_cost_cache(&mut cache);
    warn_busy(&stats);
    if interrupt::requested() {
        return Err(DriverError::Interrupted { measured: stats.measured, cache: cache.path().map(Path::to_owned) });
    }
    let outcome = result.map_err(|error| DriverError::Speed { model: o.model.clone(), error })?;
    for f in table.failures() {
        eprintln!("warning: {f}; priced as unmeasurable ({} s)", cnnc_passes::UNMEASURABLE_US / 1e6);
    }
    let t = &outcome.report.time_ms;
    let rep = cnnc_passes::OptReport {
        saturation: outcome.saturation.clone(),
        nodes_before,
        nodes_after: outcome.graph.node_count(),
        cost_before: table.graph_cost(&graph),
        cost_after: outcome.report.predicted_latency_us,
        saturate_ms: t.saturate,
        cost_ms: t.cost,
        extract_ms: t.search,
    };
    let cache_path = cache.path().map(Path::to_owned);
    Ok(Optimized {
        graph: outcome.graph,
        outcome: Some(OptOutcome { rep, table, roofline, stats, cache_path, speed: Some(outcome.report) }),
    })
}

/// Says when kernels were timed while other processes were running (their times may be high;
/// the cache keeps them provisional, see `cost`): when more than 5 % of them were, since on an
/// idle machine a system task's moment of work marks about 1 % of keys (1–3 of ppocr_v4_det's
/// 221), which are kept provisional all the same.
fn warn_busy(stats: &OracleStats) {
    if stats.busy * 20 > stats.measured {
        eprintln!(
            "warning: other processes were running while {} of {} kernel(s) were timed; their times may be \
             high and are kept as provisional (the default cost cache times them again in the next `cnnc opt` \
             on an idle machine; a --cost-cache file is used as it is: delete it to time them again)",
            stats.busy, stats.measured
        );
    }
}

fn save_cost_cache(cache: &mut CostCache) {
    if let Err(e) = cache.save() {
        eprintln!("warning: {e}; the kernel times were used but not kept");
    }
}

/// The cost cache at `path`, or at the default location; in memory only (with a warning) when
/// there is no default location. A corrupt or foreign file is reported and ignored.
fn open_cost_cache(path: Option<&Path>) -> CostCache {
    let machine = cost::Machine::this();
    let mut warn = |w: String| eprintln!("warning: {w}");
    match path.map(Path::to_owned).or_else(|| CostCache::default_path(&machine)) {
        Some(p) => CostCache::open(&p, machine, &mut warn),
        None => {
            warn(
                "no cache folder (neither XDG_CACHE_HOME nor HOME is set): kernel times are measured but not kept; \
                 pass --cost-cache FILE.json to keep them"
                    .to_owned(),
            );
            CostCache::in_memory(machine)
        }
    }
}

/// The files `cnnc opt` writes, ready in memory.
pub struct Outputs {
    pub artifact: Vec<u8>,
    /// The `--report` JSON (`-O1` only).
    pub report: Option<OptReport>,
    /// The `--emit-onnx` model.
    pub onnx: Option<Vec<u8>>,
}

/// Encodes the artifact (its provenance: cnnc's version, the level, `o.args` and the cost
/// table's hash), exports the ONNX model when asked, and builds the report when asked, timing
/// the optimized model for it unless `--no-measure`. `started` is when the run began.
pub fn compile(optimized: &Optimized, o: &OptOptions, started: Instant) -> Result<Outputs, DriverError> {
    let graph = &optimized.graph;
    let meta = ArtifactMeta {
        provenance: Some(Provenance {
            cnnc_version: env!("CARGO_PKG_VERSION").to_owned(),
            opt_level: o.level.to_string(),
            args: o.args.clone(),
            cost_table_hash: optimized.outcome.as_ref().map(|r| r.table.hash()).unwrap_or_default(),
            calibration_hash: optimized
                .outcome
                .as_ref()
                .and_then(|r| r.speed.as_ref())
                .map(|s| s.calibration_hash.clone())
                .unwrap_or_default(),
        }),
    };
    let artifact =
        artifact::encode(graph, &meta).map_err(|error| DriverError::Encode { model: o.model.clone(), error })?;
    let onnx = o
        .emit_onnx
        .as_ref()
        .map(|path| {
            crate::onnx::export_bytes(graph).map_err(|error| DriverError::Export {
                path: path.clone(),
                model: o.model.clone(),
                error,
            })
        })
        .transpose()?;
    let report = match (&o.report, &optimized.outcome) {
        (Some(_), Some(outcome)) => {
            let latency = match outcome.roofline {
                Some(_) => None,
                None => Some(
                    measure_final(graph, outcome.table.threads())
                        .map_err(|reason| DriverError::MeasureFinal { model: o.model.clone(), reason })?,
                ),
            };
            Some(OptReport::new(outcome, graph, latency.as_ref(), started.elapsed()))
        }
        _ => None,
    };
    Ok(Outputs { artifact, report, onnx })
}

/// Latency of the optimized model and each kernel's, at `threads` threads.
fn measure_final(graph: &VerifiedGraph, threads: usize) -> Result<ModelTiming, String> {
    let mut model = Model::compile(graph).map_err(|e| format!("compiling for this CPU: {}", chain(&e)))?;
    model.set_threads(threads);
    cost::time_model(&model, Duration::from_secs(1)).map_err(|e| chain(&e))
}

/// Writes the report, the artifact and the ONNX model, in that order, each atomically
/// ([`write_atomically`]).
pub fn write(outputs: &Outputs, o: &OptOptions) -> Result<(), DriverError> {
    if let (Some(path), Some(report)) = (&o.report, &outputs.report) {
        let json = serde_json::to_string_pretty(report).expect("the report serializes");
        write_atomically("--report", path, format!("{json}\n").as_bytes())?;
    }
    write_atomically("-o", &o.output, &outputs.artifact)?;
    if let (Some(path), Some(onnx)) = (&o.emit_onnx, &outputs.onnx) {
        write_atomically("--emit-onnx", path, onnx)?;
    }
    Ok(())
}

/// The whole of `cnnc opt`: check, load, optimize, compile, write. Writes nothing when any step
/// fails or Ctrl-C was pressed before writing began.
pub fn opt(o: &OptOptions) -> Result<OptSummary, DriverError> {
    o.check()?;
    let started = Instant::now();
    let options = ImportOptions { input_shapes: o.input_shapes.clone(), ..ImportOptions::default() };
    let loaded = load_model(&o.model, &options)?;
    let optimized = optimize(loaded.graph, o)?;
    let outputs = compile(&optimized, o, started)?;
    if interrupt::requested() {
        return Err(DriverError::Interrupted { measured: optimized.kernels_measured(), cache: optimized.cache_path() });
    }
    write(&outputs, o)?;
    let mut summary = OptSummary::new(&o.output, &outputs.artifact, &optimized.graph, o.level, o.emit_onnx.as_deref());
    summary.speed = optimized.outcome.as_ref().and_then(|r| r.speed.as_ref()).map(crate::report::SpeedSummary::of);
    Ok(summary)
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

/// Writes `bytes` to a temporary file beside `path` (given by `flag`), then renames it over
/// `path`: readers see the old file or the whole new one, and a failure leaves the old file
/// untouched.
fn write_atomically(flag: &'static str, path: &Path, bytes: &[u8]) -> Result<(), DriverError> {
    let Some(name) = path.file_name() else { return Err(DriverError::NotAFile { flag, path: path.to_owned() }) };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(error) = written {
        // The temporary file may not exist (the open failed); nothing else to clean up.
        let _ = std::fs::remove_file(&tmp);
        return Err(DriverError::Write { path: path.to_owned(), error });
    }
    Ok(())
}
