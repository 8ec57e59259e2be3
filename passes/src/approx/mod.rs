//! Approximate forms (`-O speed`): proposals, not equalities.
//!
//! After exact saturation, a separate, non-recursive proposal step adds alternatives into the
//! e-class of each eligible layer — one family per file ([`svd`], [`tucker2`]; int8, CP,
//! separable, pruning and group+shuffle plug in the same way), each for a small grid of ranks.
//! They are never egg `Rewrite`s and never take part in proving an equality: every factor op is
//! interned with its proposal's id ([`crate::AttrTable::intern_proposal`]) and holds weights
//! made for it, so no proposal node hash-conses with a node that existed before; only the last
//! factor joins the layer's e-class. Exact rules may then rewrite around a proposal (fuse the
//! activation into its last factor, Winograd on a 3×3 core: [`rules_after_proposals`]) but
//! derive no weights from it.
//!
//! Error accounting: a proposal's relative output error on the fit split is computed exactly
//! from the layer's input second moment ([`linalg`]); it is charged once, on its last factor's
//! weight, which every variant exact rules build around the proposal shares
//! (`CnnAnalysis::charged`), so budgeted extraction pays it once whatever was fused around it.
//!
//! A layer is a 2-D conv with one group, or a Gemm / 2-D MatMul, whose weights (and bias) are
//! constants; its input second moment is gathered by [`stats`] from calibration activations.

pub mod apply;
pub mod calib;
pub mod error;
pub mod int8;
pub mod linalg;
pub mod refit;
pub mod stats;
pub mod svd;
pub mod tucker2;

use cnnc_ir::{ConvAlgo, ConvAttrs, Op, Tensor, TensorType};
use egg::{EGraph, Id, Rewrite};

use crate::analysis::{CnnAnalysis, add_weight, attr_of, weight_of};
use crate::extract::Extracted;
use crate::lang::{Cnn, ProposalId, WeightRef};
pub use apply::{ApplyError, apply};
use linalg::SecondMoment;

/// A lossy family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Response-based truncated SVD: the layer to `r` channels, then a 1×1 (or Gemm) back up.
    Svd,
    /// Tucker-2: 1×1 to `r1` channels, the k×k core to `r2`, 1×1 back up.
    Tucker2,
    /// The layer as an int8 kernel: i8 weights per output channel, u8 activations calibrated
    /// on the fit split ([`int8`]).
    Int8,
}

impl Family {
    /// The `--families` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Family::Svd => "svd",
            Family::Tucker2 => "tucker2",
            Family::Int8 => "int8",
        }
    }

    /// Every family, in `--families` order.
    pub const ALL: [Family; 3] = [Family::Svd, Family::Tucker2, Family::Int8];

    /// The family spelled `name`.
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// What kind of affine map a layer is.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// A 2-D conv (grouped and depthwise convs only for the int8 family: the low-rank families
    /// and the input statistics take one group).
    Conv(ConvAttrs),
    /// `y = x · B + c` with `x` `[M, K]` (a Gemm without `trans_a`, or a 2-D MatMul); the
    /// layer's augmented weight is `[αBᵀ, βc]`.
    Dense { alpha: f32, beta: f32, trans_b: bool, matmul: bool },
}

/// A layer the lossy families may replace.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The name of the IR node it came from.
    pub name: String,
    pub kind: LayerKind,
    /// The e-class of the plain (unfused, direct) op: where proposals join.
    pub class: Id,
    /// The e-class of its input, and the index of the extracted term's node that computes it
    /// (the value to tap on calibration data).
    pub input: Id,
    pub input_term: usize,
    /// The index of the extracted term's node that computes the layer (plain or fused).
    pub term: usize,
    pub weight: WeightRef,
    pub bias: Option<WeightRef>,
    pub in_type: TensorType,
    pub out_type: TensorType,
}

impl Layer {
    /// Output channels (conv) or features (dense).
    pub fn n_out(&self) -> usize {
        self.out_type.shape[1]
    }

    /// Input channels (conv) or features (dense).
    pub fn n_in(&self) -> usize {
        self.in_type.shape[1]
    }

    /// The conv kernel's height and width, `(1, 1)` for a dense layer.
    pub fn kernel(&self) -> (usize, usize) {
        match &self.kind {
            LayerKind::Conv(a) => (a.kernel[0], a.kernel[1]),
            LayerKind::Dense { .. } => (1, 1),
        }
    }

    /// Width of one input patch (`C/group·kh·kw`, or K); the augmented weight has one more
    /// column.
    pub fn patch_len(&self) -> usize {
        let (kh, kw) = self.kernel();
        self.n_in() / self.group() * kh * kw
    }

    /// The conv's groups (1 for a dense layer).
    pub fn group(&self) -> usize {
        match &self.kind {
            LayerKind::Conv(a) => a.group.max(1),
            LayerKind::Dense { .. } => 1,
        }
    }

    /// Output positions per sample (`H'·W'`, or `M`).
    pub fn out_pixels(&self) -> usize {
        match &self.kind {
            LayerKind::Conv(_) => self.out_type.shape[2] * self.out_type.shape[3],
            LayerKind::Dense { .. } => self.out_type.shape[0],
        }
    }

    /// Multiply-accumulates of the layer, per batch.
    pub fn macs(&self) -> u64 {
        let batch = match &self.kind {
            LayerKind::Conv(_) => self.out_type.shape[0],
            LayerKind::Dense { .. } => 1,
        };
        (batch * self.out_pixels() * self.n_out() * self.patch_len()) as u64
    }
}

/// The layers of the extracted lossless term `ext` that the lossy families may replace, in
/// term order: each 2-D conv (any groups), Gemm (no `trans_a`, a bias per column or none) or
/// 2-D MatMul with constant weights, fused or not, whose plain form is in the e-graph.
pub fn find_layers(egraph: &EGraph<Cnn, CnnAnalysis>, ext: &Extracted) -> Vec<Layer> {
    let mut layers = Vec::new();
    for (i, node) in ext.enodes.iter().enumerate() {
        let Some(children) = node.op_children() else { continue };
        let Some(entry) = attr_of(egraph, children[0]) else { continue };
        if entry.proposal.is_some() {
            continue;
        }
        let (base, n_base) = match &entry.op {
            Op::Fused(f) => (f.base.clone(), f.base_inputs(children.len() - 1)),
            op => (op.clone(), children.len() - 1),
        };
        let operands = &children[1..1 + n_base];
        let Some(out_type) = entry.outputs.first().cloned() else { continue };
        let Some(kind) = layer_kind(egraph, &base, operands, &out_type) else { continue };
        let plain = match &kind {
            LayerKind::Conv(a) => Op::Conv(a.clone()),
            LayerKind::Dense { .. } => base.clone(),
        };
        let Some(attr) = egraph.analysis.attrs.lookup(&plain, std::slice::from_ref(&out_type)) else { continue };
        let Some(attr_class) = egraph.lookup(Cnn::Attr(attr)) else { continue };
        let mut kids = vec![attr_class];
        kids.extend_from_slice(operands);
        let Some(plain_node) = Cnn::op_node(&plain, kids.into_boxed_slice()) else { continue };
        let Some(class) = egraph.lookup(plain_node) else { continue };
        // The term node computing the input: the child of term node `i` at operand 0.
        let term = &ext.expr.as_ref()[i];
        let Some(&input_term) = term.op_children().and_then(|c| c.get(1)) else { continue };
        let (Some(weight), Some(in_type)) = (weight_of(egraph, operands[1]), egraph[operands[0]].data.types.first())
        else {
            continue;
        };
        let bias = match operands.get(2) {
            Some(&b) => match weight_of(egraph, b) {
                Some(w) => Some(w),
                None => continue,
            },
            None => None,
        };
        layers.push(Layer {
            name: entry.name.clone(),
            kind,
            class: egraph.find(class),
            input: egraph.find(operands[0]),
            input_term: usize::from(input_term),
            term: i,
            weight,
            bias,
            in_type: in_type.clone(),
            out_type,
        });
    }
    // A layer reached twice (its plain form under two fused variants) is one layer.
    let mut seen = std::collections::HashSet::new();
    layers.retain(|l| seen.insert(l.class));
    layers
}

/// The kind of a base op with `operands` (x, w[, b]), if it is a layer the families handle.
fn layer_kind(egraph: &EGraph<Cnn, CnnAnalysis>, base: &Op, operands: &[Id], out: &TensorType) -> Option<LayerKind> {
    let ty = |i: usize| operands.get(i).and_then(|&c| egraph[c].data.types.first());
    let x = ty(0)?;
    let w = ty(1)?;
    if x.dtype != cnnc_ir::DType::F32 || weight_of(egraph, operands[1]).is_none() {
        return None;
    }
    match base {
        Op::Conv(a) if a.group >= 1 && a.kernel.len() == 2 && x.rank() == 4 => {
            Some(LayerKind::Conv(ConvAttrs { algo: ConvAlgo::Direct, ..a.clone() }))
        }
        Op::Gemm { alpha, beta, trans_a: false, trans_b } if x.rank() == 2 && w.rank() == 2 => {
            let n = out.shape[1];
            let bias_ok = ty(2).is_none_or(|b| b.numel() == 1 || b.shape == [n] || b.shape == [1, n]);
            bias_ok.then_some(LayerKind::Dense { alpha: *alpha, beta: *beta, trans_b: *trans_b, matmul: false })
        }
        Op::MatMul if x.rank() == 2 && w.rank() == 2 && operands.len() == 2 => {
            Some(LayerKind::Dense { alpha: 1.0, beta: 0.0, trans_b: false, matmul: true })
        }
        _ => None,
    }
}

/// The augmented weight `W̃ = [W, b]` (`m × (patch_len + 1)`) of a layer, in f64; patch
/// columns in the order of [`stats`]' patches (`c·kh·kw + i·kw + j` for a conv, `k` for dense).
pub fn augmented_weight(egraph: &EGraph<Cnn, CnnAnalysis>, layer: &Layer) -> Option<faer::Mat<f64>> {
    let w = egraph.analysis.weights.get(layer.weight.0 as usize)?.as_f32()?;
    let b = match layer.bias {
        Some(r) => Some(egraph.analysis.weights.get(r.0 as usize)?.as_f32()?),
        None => None,
    };
    let (m, d) = (layer.n_out(), layer.patch_len());
    let bias_at = |o: usize| -> f64 { b.map_or(0.0, |b| if b.len() == 1 { f64::from(b[0]) } else { f64::from(b[o]) }) };
    Some(match &layer.kind {
        LayerKind::Conv(_) => {
            if w.len() != m * d {
                return None;
            }
            faer::Mat::from_fn(m, d + 1, |o, j| if j < d { f64::from(w[o * d + j]) } else { bias_at(o) })
        }
        LayerKind::Dense { alpha, beta, trans_b, .. } => {
            if w.len() != m * d {
                return None;
            }
            let (alpha, beta) = (f64::from(*alpha), f64::from(*beta));
            faer::Mat::from_fn(m, d + 1, |o, k| {
                if k == d {
                    beta * bias_at(o)
                } else if *trans_b {
                    alpha * f64::from(w[o * d + k])
                } else {
                    alpha * f64::from(w[k * m + o])
                }
            })
        }
    })
}

/// One proposal: an approximate form of one layer, in the e-graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub id: ProposalId,
    /// Index into the layers [`propose`] was given.
    pub layer: usize,
    pub family: Family,
    /// The family's ranks (SVD: `[r]`; Tucker-2: `[r_in, r_out]`).
    pub ranks: Vec<usize>,
    /// Relative output error of the layer on the fit split: `sqrt(E‖y − ŷ‖² / E‖y‖²)`.
    pub rel_error: f64,
    /// The same on held-out data (the layer's held-out second moment given to [`propose`]);
    /// `rel_error` when there is none. The error model charges this one: fits look better on
    /// the data they were fitted on, the more so the fewer distinct inputs the fit split has.
    pub held_out_error: f64,
    /// Multiply-accumulates of the factors, per batch.
    pub macs: u64,
    /// The weight whose use charges this proposal's error.
    pub charged: WeightRef,
    /// The factors, in order, as the e-graph holds them ([`apply`] builds graphs from them);
    /// empty for an int8 form.
    pub factors: Vec<FactorRef>,
    /// The int8 form (family `Int8`).
    pub quant: Option<int8::QuantForm>,
}

/// One factor of a proposal: its op (unfused) and its weights in the e-graph's store.
#[derive(Clone, Debug, PartialEq)]
pub struct FactorRef {
    /// The node name the factor gets (unique per proposal).
    pub name: String,
    pub op: Op,
    pub weight: WeightRef,
    pub bias: Option<WeightRef>,
}

/// The proposal step's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposalConfig {
    pub families: Vec<Family>,
    /// Fractions of the layer's output energy (data-aware spectrum) a rank must keep: one
    /// candidate rank per threshold.
    pub energies: Vec<f64>,
    /// Ranks are rounded up to a multiple of this (kernels run whole register tiles).
    pub rank_quantum: usize,
    /// A proposal must do at most this fraction of the layer's MACs.
    pub max_mac_fraction: f64,
    /// Layers decomposed at once (each on one thread; the results do not depend on it).
    pub threads: usize,
}

impl Default for ProposalConfig {
    fn default() -> ProposalConfig {
        ProposalConfig {
            families: vec![Family::Svd, Family::Tucker2],
            energies: vec![0.9, 0.95, 0.98, 0.99, 0.995, 0.998],
            rank_quantum: RANK_QUANTUM,
            max_mac_fraction: 0.9,
            threads: 1,
        }
    }
}

/// Ranks are multiples of 8: the AVX2 microkernel's 16-wide column tile runs half-empty below
/// 8 channels, and 1×1 convs with fewer than 12 input channels fall off the packed path.
pub const RANK_QUANTUM: usize = 8;

/// One family's form of a layer, before it joins the e-graph.
enum Made {
    Factors(Family, Form, f64),
    Int8(Box<int8::Int8Weights>),
}

/// Adds every family's proposals for every layer into the e-graph (each layer's last factor
/// joins `layer.class`; an int8 form joins `quant[i].target`) and returns them, numbered from 0.
/// `moments[i]` is layer `i`'s input second moment on the fit split (a layer without one gets
/// no proposal); `held_out[i]`, if given, the same on held-out data, where each proposal's
/// `held_out_error` is measured; `quant[i]`, the layer's activation quantization (the int8
/// family proposes nothing for a layer without one).
pub fn propose(
    egraph: &mut EGraph<Cnn, CnnAnalysis>,
    layers: &[Layer],
    moments: &[Option<SecondMoment>],
    held_out: &[Option<SecondMoment>],
    quant: &[Option<int8::LayerQuant>],
    config: &ProposalConfig,
) -> Vec<Proposal> {
    // The decompositions (eigendecompositions of Gram matrices up to a few thousand wide) are
    // the expensive part and independent per layer: computed on `config.threads` threads,
    // then added to the e-graph in layer order, so the proposals do not depend on the count.
    // A layer needs its input second moment, or (int8 only) its activation quantization.
    let int8 = config.families.contains(&Family::Int8);
    let jobs: Vec<(usize, faer::Mat<f64>)> = layers
        .iter()
        .enumerate()
        .filter(|&(li, _)| matches!(moments.get(li), Some(Some(_))) || (int8 && matches!(quant.get(li), Some(Some(_)))))
        .filter_map(|(li, layer)| Some((li, augmented_weight(egraph, layer)?)))
        .collect();
    let decompose = |li: usize, w: &faer::Mat<f64>| -> Vec<Made> {
        let layer = &layers[li];
        let sigma = moments.get(li).and_then(Option::as_ref);
        let mut forms = Vec::new();
        for &family in &config.families {
            let fs = match (family, sigma) {
                (Family::Svd, Some(sigma)) => svd::forms(layer, w, sigma, config),
                (Family::Tucker2, Some(sigma)) => tucker2::forms(layer, w, sigma, config),
                (Family::Svd | Family::Tucker2, None) => continue,
                (Family::Int8, _) => {
                    let h = held_out.get(li).and_then(Option::as_ref);
                    let q = quant.get(li).and_then(Option::as_ref);
                    if let Some(iw) = q.and_then(|q| int8::weights(layer, w, sigma, h, q)) {
                        forms.push(Made::Int8(Box::new(iw)));
                    }
                    continue;
                }
            };
            for form in fs {
                let held_out_error = match held_out.get(li) {
                    Some(Some(h)) if h.dim() == w.ncols() => linalg::rel_error(h, w.as_ref(), form.approx.as_ref()),
                    _ => form.rel_error,
                };
                forms.push(Made::Factors(family, form, held_out_error));
            }
        }
        forms
    };
    let results: Vec<std::sync::Mutex<Vec<Made>>> = jobs.iter().map(|_| std::sync::Mutex::new(Vec::new())).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        loop {
            let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((li, w)) = jobs.get(j) else { break };
            let forms = decompose(*li, w);
            *results[j].lock().expect("a decomposition worker panicked") = forms;
        }
    };
    std::thread::scope(|s| {
        for _ in 1..config.threads.clamp(1, jobs.len().max(1)) {
            s.spawn(work);
        }
        work();
    });
    let mut out = Vec::new();
    for ((li, _), forms) in jobs.iter().zip(results) {
        let layer = &layers[*li];
        for made in forms.into_inner().expect("a decomposition worker panicked") {
            let id = ProposalId(u32::try_from(out.len()).expect("fewer than 2^32 proposals"));
            match made {
                Made::Factors(family, form, held_out_error) => {
                    let Some((charged, factors)) = add_form(egraph, layer, &form, id) else { continue };
                    out.push(Proposal {
                        id,
                        layer: *li,
                        family,
                        ranks: form.ranks.clone(),
                        rel_error: form.rel_error,
                        held_out_error,
                        macs: form.macs,
                        charged,
                        factors,
                        quant: None,
                    });
                }
                Made::Int8(iw) => {
                    let Some(q) = quant.get(*li).and_then(Option::as_ref) else { continue };
                    let Some(form) = int8::add(egraph, layer, q, &iw, id) else { continue };
                    out.push(Proposal {
                        id,
                        layer: *li,
                        family: Family::Int8,
                        ranks: Vec::new(),
                        rel_error: iw.rel_error,
                        held_out_error: iw.held_out_error,
                        macs: layer.macs(),
                        charged: form.weight,
                        factors: Vec::new(),
                        quant: Some(form),
                    });
                }
            }
        }
    }
    egraph.rebuild();
    out
}

/// A chain of factor layers replacing one layer: each factor's op, weight, optional bias and
/// output type, applied in order to the layer's input.
#[derive(Clone, Debug)]
pub struct Form {
    pub ranks: Vec<usize>,
    pub factors: Vec<Factor>,
    pub rel_error: f64,
    pub macs: u64,
    /// The factors composed into one augmented weight (`m × (patch_len + 1)`), what the form
    /// computes as the layer; the layer error on other data is measured with it.
    pub approx: faer::Mat<f64>,
}

#[derive(Clone, Debug)]
pub struct Factor {
    pub op: Op,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub out: TensorType,
}

/// Adds `form`'s factors after `layer`'s input and unions the last into `layer.class`; returns
/// the charged weight (the last factor's) and the factors.
fn add_form(
    egraph: &mut EGraph<Cnn, CnnAnalysis>,
    layer: &Layer,
    form: &Form,
    id: ProposalId,
) -> Option<(WeightRef, Vec<FactorRef>)> {
    let mut x = layer.input;
    let mut factors = Vec::with_capacity(form.factors.len());
    let tag = format!("{}.{}", layer.name, form_tag(form));
    for (k, f) in form.factors.iter().enumerate() {
        let name = format!("{tag}.{k}");
        let w = add_weight(egraph, f.weight.clone(), format!("{name}.w"));
        let mut kids = vec![];
        let attr = egraph.analysis.attrs.intern_proposal(&f.op, std::slice::from_ref(&f.out), &name, id);
        kids.push(egraph.add(Cnn::Attr(attr)));
        kids.push(x);
        kids.push(w);
        let mut bias = None;
        if let Some(b) = &f.bias {
            let b = add_weight(egraph, b.clone(), format!("{name}.b"));
            bias = Some(weight_of(egraph, b)?);
            kids.push(b);
        }
        factors.push(FactorRef { name, op: f.op.clone(), weight: weight_of(egraph, w)?, bias });
        let node = Cnn::op_node(&f.op, kids.into_boxed_slice())?;
        x = egraph.add(node);
    }
    let charged = factors.last()?.weight;
    egraph.analysis.charged.insert(charged, id);
    egraph.union(layer.class, x);
    Some((charged, factors))
}

fn form_tag(form: &Form) -> String {
    let ranks: Vec<String> = form.ranks.iter().map(ToString::to_string).collect();
    let family = if form.factors.len() == 3 { "tucker2" } else { "svd" };
    format!("{family}_r{}", ranks.join("x"))
}

/// The exact rule families that run after the proposal step: fusion of activations and
/// residuals into a proposal's last factor, and Winograd for 3×3 cores when `winograd`; with
/// `int8`, the QDQ rules that turn int8 forms into integer kernels and cancel the
/// quantize/dequantize pairs between them (`qdq` with its `qdq-commute-…` rules, `qwinograd`,
/// `lookup`), except `qdq-fold-weight`. None derives a weight from a proposal's (a lookup's table comes from
/// quantization parameters alone), so every form built around a proposal keeps its charged
/// weight.
pub fn rules_after_proposals(winograd: bool, int8: bool) -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let mut rules = crate::rules::fuse::rules();
    if winograd {
        rules.extend(crate::rules::winograd::rules());
    }
    if int8 {
        rules.extend(crate::rules::qdq::rules().into_iter().filter(|r| r.name.as_str() != "qdq-fold-weight"));
        rules.extend(crate::rules::qdq::commute_rules());
        rules.extend(crate::rules::qwinograd::rules());
        rules.extend(crate::rules::lookup::rules());
    }
    rules
}

/// The smallest rank keeping `energy` of a descending spectrum, rounded up to `quantum`.
pub(crate) fn rank_for(spectrum: &[f64], energy: f64, quantum: usize) -> usize {
    let total: f64 = spectrum.iter().sum();
    let mut acc = 0.0;
    let mut r = spectrum.len();
    for (i, &s) in spectrum.iter().enumerate() {
        acc += s;
        if acc >= energy * total {
            r = i + 1;
            break;
        }
    }
    r.div_ceil(quantum.max(1)) * quantum.max(1)
}

/// `m` as an f32 tensor of `shape` (row-major).
pub(crate) fn tensor_of(m: faer::MatRef<'_, f64>, shape: Vec<usize>) -> Tensor {
    let data: Vec<f32> = (0..m.nrows()).flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)] as f32)).collect();
    Tensor::from_f32(shape, data).expect("the shape holds the matrix")
}
