//! What `cnnc` prints and writes as JSON, as typed structs: the `opt --report` file
//! ([`OptReport`]), `opt`'s one-line summary ([`OptSummary`]), `inspect --json`'s object
//! ([`InspectJson`] with its [`ArtifactBlock`]) and `run`'s line per output ([`RunOutput`]).
//! Fields are declared in alphabetical order, so keys print sorted; bench scripts and tests
//! read these keys.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use cnnc_ir::{Op, Tensor, VerifiedGraph, artifact};
use serde::Serialize;

use crate::cost::{ModelTiming, Roofline};
use crate::driver::{ArtifactInfo, OptLevel, OptOutcome};
use crate::inspect::Summary;

/// The `--report` JSON of an `-O1` run: what the rules did, the cost model and its cache, and
/// the optimized graph's predicted latency per layer and in total against the measured one.
#[derive(Clone, Debug, Serialize)]
pub struct OptReport {
    pub cnnc_version: &'static str,
    pub cost_cache: CostCacheUse,
    pub cost_model: CostModel,
    pub egraph: EGraphSize,
    pub graph_nodes: BeforeAfter<usize>,
    pub latency: Latency,
    pub layers: Vec<LayerCost>,
    pub numerics: Numerics,
    pub predicted_cost: PredictedCost,
    pub rules: Vec<RuleApplications>,
    /// What `-O speed`'s search did (absent at `-O1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<crate::speed::SpeedReport>,
    pub time_ms: PhaseTimes,
}

#[derive(Clone, Debug, Serialize)]
pub struct CostCacheUse {
    /// Of `measured`: kernels timed while other processes were running, whose times the
    /// cache keeps as provisional (timed again by the next `cnnc opt` on an idle machine).
    pub busy: usize,
    pub failed: usize,
    /// The cache file; `None` when it lives in memory only.
    pub file: Option<String>,
    pub hits: usize,
    pub measure_ms: f64,
    pub measured: usize,
    /// Of `measured`: provisional entries timed again on an idle machine.
    pub retimed: usize,
    pub table_entries: usize,
    pub table_hash: String,
}

/// Which cost model priced the kernels.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CostModel {
    Measured { description: CostModelDescription, weights: Weights },
    Roofline { bandwidth_gbps: f64, description: CostModelDescription, launch_us: f64, peak_gflops: f64 },
}

#[derive(Clone, Copy, Debug, Serialize)]
pub enum CostModelDescription {
    #[serde(
        rename = "each distinct kernel (op, attributes, operand types and constness, threads) JIT-compiled alone with L2 evicted before each run; lower quartile of 3-15 runs' kernel time"
    )]
    Measured,
    #[serde(
        rename = "max(2·MACs / peak, bytes moved / bandwidth) + launch time; peak, bandwidth and launch measured once per machine"
    )]
    Roofline,
}

/// Where the measured kernels' weights were when timed.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// As the run before left them (only the L2 evicted): a model whose weights stay in the
    /// last-level cache.
    Warm,
    /// Evicted from every cache level before each run: a model whose weights exceed
    /// `cost::COLD_WEIGHT_BYTES` and come from memory on every run.
    Cold,
}

impl CostModel {
    /// The measured model (`cold_weights`: how its kernels were timed), or `roofline`
    /// (`--no-measure`).
    pub fn new(roofline: Option<&Roofline>, cold_weights: bool) -> CostModel {
        match roofline {
            None => CostModel::Measured {
                description: CostModelDescription::Measured,
                weights: if cold_weights { Weights::Cold } else { Weights::Warm },
            },
            Some(rl) => CostModel::Roofline {
                bandwidth_gbps: rl.bandwidth_mbps as f64 / 1e3,
                description: CostModelDescription::Roofline,
                launch_us: rl.launch_ns as f64 / 1e3,
                peak_gflops: rl.peak_mflops as f64 / 1e3,
            },
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct EGraphSize {
    pub classes: usize,
    pub iterations: usize,
    pub nodes: usize,
    pub stop_reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct BeforeAfter<T> {
    pub after: T,
    pub before: T,
}

/// The optimized model's latency: predicted, and measured unless `--no-measure`.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Latency {
    Measured(MeasuredLatency),
    NotMeasured {
        /// Always `null`.
        measured_ms: (),
        note: NotMeasuredNote,
        predicted_ms: f64,
    },
}

#[derive(Clone, Copy, Debug, Serialize)]
pub enum NotMeasuredNote {
    #[serde(rename = "not measured: --no-measure runs no kernel of the model")]
    NoMeasure,
}

#[derive(Clone, Debug, Serialize)]
pub struct MeasuredLatency {
    /// `predicted_ms / measured_ms - 1`.
    pub error: f64,
    /// What `measured_ms` is.
    pub measured: LatencyMeasure,
    pub measured_kernels_ms: f64,
    pub measured_ms: f64,
    pub on_cpu_ms: Option<f64>,
    pub predicted_ms: f64,
    pub runs: usize,
    pub threads: usize,
    pub wall_ms: f64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub enum LatencyMeasure {
    #[serde(
        rename = "median time a run spent on the CPU: its wall time minus the time it waited while other processes held the CPU (equal on an idle machine)"
    )]
    OnCpu,
    #[serde(rename = "median wall-clock time of a run")]
    Wall,
}

/// One kernel of the optimized graph.
#[derive(Clone, Debug, Serialize)]
pub struct LayerCost {
    /// The algorithm of a conv or fused conv (`direct`, `winograd-f2`, …); absent for other ops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algo: Option<&'static str>,
    /// `None` under `--no-measure`; 0 for views and in-place concats, which run no kernel.
    pub measured_us: Option<f64>,
    pub name: String,
    pub op: &'static str,
    pub predicted_us: Option<f64>,
}

/// How far the optimized model's outputs may be from the original's.
#[derive(Clone, Debug, Serialize)]
pub struct Numerics {
    pub bound: NumericBound,
    pub exact: bool,
    pub winograd_layers: usize,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub enum NumericBound {
    #[serde(
        rename = "rel-L2 <= 1e-4 per output end to end: Winograd F(2,3)/F(4,3) rounding on the layers whose `algo` names it (ARCHITECTURE.md, Winograd convolution); --no-winograd makes -O1 exact up to float reordering"
    )]
    Winograd,
    #[serde(
        rename = "exact up to float reordering (rel-L2 <= max(1e-5, 4 x onnxruntime's own optimizations-on-vs-off difference))"
    )]
    Exact,
}

#[derive(Clone, Debug, Serialize)]
pub struct PredictedCost {
    pub after: f64,
    pub before: f64,
    pub unit: TimeUnit,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub enum TimeUnit {
    #[serde(rename = "us")]
    Micros,
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleApplications {
    pub applications: usize,
    pub rule: String,
}

/// Wall-clock milliseconds per phase of `cnnc opt`.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseTimes {
    pub cost: f64,
    pub extract: f64,
    pub saturate: f64,
    pub total: f64,
}

impl OptReport {
    /// The report of `run` on the optimized `graph`; `latency` is `None` under `--no-measure`,
    /// which runs nothing; `elapsed` is the time since `cnnc opt` started.
    pub(crate) fn new(
        run: &OptOutcome,
        graph: &VerifiedGraph,
        latency: Option<&ModelTiming>,
        elapsed: Duration,
    ) -> OptReport {
        let r = &run.rep;
        let s = &r.saturation;
        let measured: HashMap<&str, f64> =
            latency.map(|l| l.layers.iter().map(|(name, us)| (name.as_str(), *us)).collect()).unwrap_or_default();
        let order = graph.topo_order().expect("a verified graph is acyclic");
        let layers = order
            .iter()
            .filter(|&&id| !graph.node(id).op.is_source())
            .map(|&id| {
                let node = graph.node(id);
                LayerCost {
                    algo: conv_algo(&node.op).map(|a| a.name()),
                    // Views (reshapes, slab splits) and in-place concats run no kernel.
                    measured_us: latency.map(|_| measured.get(node.name.as_str()).copied().unwrap_or(0.0)),
                    name: node.name.clone(),
                    op: node.op.name(),
                    predicted_us: run.table.node_cost(graph, id),
                }
            })
            .collect();
        let predicted_ms = run.table.graph_cost(graph) / 1e3;
        let latency = match latency {
            Some(l) => Latency::Measured(MeasuredLatency {
                error: predicted_ms / l.latency_ms() - 1.0,
                measured: if l.on_cpu_ms.is_some() { LatencyMeasure::OnCpu } else { LatencyMeasure::Wall },
                measured_kernels_ms: l.layers.iter().map(|(_, us)| us).sum::<f64>() / 1e3,
                measured_ms: l.latency_ms(),
                on_cpu_ms: l.on_cpu_ms,
                predicted_ms,
                runs: l.runs,
                threads: l.threads,
                wall_ms: l.wall_ms,
            }),
            None => Latency::NotMeasured { measured_ms: (), note: NotMeasuredNote::NoMeasure, predicted_ms },
        };
        let winograd_layers = cnnc_passes::winograd_layers(graph);
        OptReport {
            cnnc_version: env!("CARGO_PKG_VERSION"),
            cost_cache: CostCacheUse {
                busy: run.stats.busy,
                failed: run.stats.failed,
                file: run.cache_path.as_ref().map(|p| p.display().to_string()),
                hits: run.stats.hits,
                measure_ms: run.stats.measure_time.as_secs_f64() * 1e3,
                measured: run.stats.measured,
                retimed: run.stats.retimed,
                table_entries: run.table.len(),
                table_hash: run.table.hash(),
            },
            cost_model: CostModel::new(run.roofline.as_ref(), run.stats.cold_weights),
            egraph: EGraphSize {
                classes: s.classes,
                iterations: s.iterations,
                nodes: s.nodes,
                stop_reason: s.stop_reason.clone(),
            },
            graph_nodes: BeforeAfter { after: r.nodes_after, before: r.nodes_before },
            latency,
            layers,
            numerics: Numerics {
                bound: if winograd_layers > 0 { NumericBound::Winograd } else { NumericBound::Exact },
                exact: winograd_layers == 0,
                winograd_layers,
            },
            predicted_cost: PredictedCost { after: r.cost_after, before: r.cost_before, unit: TimeUnit::Micros },
            rules: s
                .applied
                .iter()
                .map(|(rule, n)| RuleApplications { applications: *n, rule: rule.clone() })
                .collect(),
            speed: run.speed.clone(),
            time_ms: PhaseTimes {
                cost: r.cost_ms,
                extract: r.extract_ms,
                saturate: r.saturate_ms,
                total: elapsed.as_secs_f64() * 1e3,
            },
        }
    }
}

/// The algorithm of a conv or fused conv; `None` for other ops.
fn conv_algo(op: &Op) -> Option<cnnc_ir::ConvAlgo> {
    match op {
        Op::Conv(a) => Some(a.algo),
        Op::Fused(f) => match &f.base {
            Op::Conv(a) => Some(a.algo),
            _ => None,
        },
        _ => None,
    }
}

/// The line `cnnc opt` prints on success.
#[derive(Clone, Debug, Serialize)]
pub struct OptSummary {
    /// The artifact's path.
    pub artifact: String,
    /// The artifact's size.
    pub bytes: usize,
    pub format_version: u32,
    pub nodes: usize,
    /// The `--emit-onnx` path, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnx: Option<String>,
    pub opt_level: OptLevel,
    /// `-O speed`: the metric on the test split, and the predicted speed-up over the lossless graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<SpeedSummary>,
    pub weight_bytes: usize,
}

/// The one-line outcome of `-O speed`.
#[derive(Clone, Debug, Serialize)]
pub struct SpeedSummary {
    pub metric: String,
    pub max_drop: f64,
    pub test_drop: f64,
    /// The original and the optimized model's accuracy on the test split (with labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_accuracy_before: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_accuracy_after: Option<f64>,
    /// Lossless predicted latency ÷ the chosen graph's.
    pub predicted_speedup: f64,
}

impl SpeedSummary {
    pub(crate) fn of(r: &crate::speed::SpeedReport) -> SpeedSummary {
        SpeedSummary {
            metric: r.metric.clone(),
            max_drop: r.max_drop,
            test_drop: r.test_drop,
            test_accuracy_before: r.test_accuracy.map(|a| a.0),
            test_accuracy_after: r.test_accuracy.map(|a| a.1),
            predicted_speedup: r.lossless_latency_us / r.predicted_latency_us,
        }
    }
}

impl OptSummary {
    pub(crate) fn new(
        artifact_path: &Path,
        artifact: &[u8],
        graph: &VerifiedGraph,
        level: OptLevel,
        onnx: Option<&Path>,
    ) -> OptSummary {
        OptSummary {
            artifact: artifact_path.display().to_string(),
            bytes: artifact.len(),
            format_version: artifact::FORMAT_VERSION,
            nodes: graph.node_count(),
            onnx: onnx.map(|p| p.display().to_string()),
            opt_level: level,
            speed: None,
            weight_bytes: graph.weights().iter().map(|(_, t)| t.size_bytes()).sum(),
        }
    }
}

/// What a cnnc artifact says about itself, in `inspect --json`. Every field but
/// `format_version` is `None` for an artifact without provenance.
#[derive(Clone, Debug, Serialize)]
pub struct ArtifactBlock {
    pub args: Option<Vec<String>>,
    pub cnnc_version: Option<String>,
    /// `None` also at `-O0`, which uses no cost table.
    pub cost_table_hash: Option<String>,
    /// `None` but for `-O speed`, which uses calibration data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_hash: Option<String>,
    pub format_version: u32,
    pub opt_level: Option<String>,
}

impl ArtifactBlock {
    pub fn new(info: &ArtifactInfo) -> ArtifactBlock {
        let p = info.meta.provenance.as_ref();
        ArtifactBlock {
            args: p.map(|p| p.args.clone()),
            cnnc_version: p.map(|p| p.cnnc_version.clone()),
            cost_table_hash: p.map(|p| p.cost_table_hash.clone()).filter(|h| !h.is_empty()),
            calibration_hash: p.map(|p| p.calibration_hash.clone()).filter(|h| !h.is_empty()),
            format_version: info.format_version,
            opt_level: p.map(|p| p.opt_level.clone()),
        }
    }
}

/// What `cnnc inspect --json` prints: the model summary, and what an artifact says about itself.
#[derive(Clone, Debug, Serialize)]
pub struct InspectJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactBlock>,
    #[serde(flatten)]
    pub summary: &'a Summary,
}

/// The line `cnnc run` prints per output it wrote.
#[derive(Clone, Debug, Serialize)]
pub struct RunOutput<'a> {
    pub dtype: &'static str,
    pub file: String,
    pub output: &'a str,
    pub shape: &'a [usize],
}

impl<'a> RunOutput<'a> {
    pub fn new(output: &'a str, file: &Path, tensor: &'a Tensor) -> RunOutput<'a> {
        RunOutput { dtype: tensor.dtype().name(), file: file.display().to_string(), output, shape: tensor.shape() }
    }
}
