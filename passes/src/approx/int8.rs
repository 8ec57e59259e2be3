//! `int8`: a layer as an integer kernel — per-output-channel symmetric i8 weights, the input
//! and output quantized to u8 with ranges calibrated on the fit split ([`super::calib`]), the
//! bias corrected for the expected shift quantization causes, and i32 accumulation.
//!
//! The proposal is written in the form onnxruntime's quantizer writes (QDQ), so the exact `qdq`
//! and `lookup` rules that run after proposals ([`super::rules_after_proposals`]) turn it into
//! integer kernels, and chain them: between two int8 layers the output quantization of one and
//! the input quantization of the next use the same parameters (both come from the histogram of
//! the same tensor, traced through max-pools, reshapes and transposes, which keep a value's
//! range), so `Q(DQ(q))` cancels and only the first int8 layer of a chain quantizes f32 and only
//! the last dequantizes:
//!
//! ```text
//! before: %y = fused{conv, relu}(%x, %w : f32[64,32,3,3], %b : f32[64]) : f32[1,64,56,56]
//! after:  %xq = quantize{to=u8, scales=[sx], zero-points=[zx]}(%x)
//!         %c  = conv(dequantize{sx, zx}(%xq), dequantize{axis=0, sw}(%wq : i8[64,32,3,3]),
//!                    dequantize{axis=0, sx·sw}(%bq : i32[64]))
//!         %y  = dequantize{sy, zy}(quantize{to=u8, sy, zy}(relu(%c)))
//! then (qdq-linear): %yq = qlinear-conv{…, out=u8, clamp=[zy, 255]}(%xq, %wq, %bq)
//! ```
//!
//! Where the layer's node carries a residual add (and no activation, or a clamp), the form
//! holds the add too, as onnxruntime's quantizer writes a residual block: the conv's output and
//! the residual are each quantized (the residual with its own tensor's parameters, so the
//! pair cancels against the int8 layer that made it), dequantized, added, the activation
//! applied and the sum quantized — which the exact `lookup` rule turns into one table lookup
//! on the two byte tensors:
//!
//! ```text
//! %y = dequantize{sy}(quantize{sy}(relu(add(dequantize{sc}(quantize{sc}(conv(…))),
//!                                           dequantize{ss}(quantize{ss}(%shortcut))))))
//! then (qdq-linear, qdq-lookup): %yq = lookup(qlinear-conv{…, out=u8}(…), %shortcut_q)
//! ```
//!
//! Where the layer's node carries another activation (not a clamp), the proposal replaces the
//! plain op (its output quantized), and the activation stays as it is.
//!
//! Error: the layer's relative output error is estimated from three independent parts, in
//! energy per output position relative to `tr(W̃ Σ W̃ᵀ)`:
//! - the weights' quantization, exact from the input second moment: `‖W̃ − Ŵ‖²_Σ`, `Ŵ` the
//!   dequantized weights with the bias corrected by `(Ŵ − W) E[x]`;
//! - the input's quantization noise: `Σ_o Σ_j ŵ_oj² · Var(DQ(Q(x)) − x)` (the noise's mean is
//!   folded into the bias), from the tensor's histogram;
//! - the output's: `m · E[(DQ(Q(y)) − y)²]`.
//!
//! Where two int8 layers are chained the noise of the tensor between them is counted by both
//! (by the producer as output noise, by the consumer as input noise): the prediction is
//! conservative there, and the end-to-end validation decides.

use cnnc_ir::{BinaryOp, DType, Graph, Op, QuantParams, Tensor, TensorType, UnaryOp, ValueRef, VerifiedGraph};
use egg::{EGraph, Id};
use faer::Mat;

use super::calib::{self, ACT_DTYPE, ActQuant};
use super::linalg::SecondMoment;
use super::{Layer, LayerKind};
use crate::analysis::{CnnAnalysis, add_weight, weight_of};
use crate::lang::{Cnn, ProposalId, WeightRef};
use crate::speed::Lossless;
use crate::{EvalError, Evaluator, Split};

/// Where a layer's int8 form quantizes, in the lossless graph.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    /// The value whose histogram gives the input's parameters: the layer's input, or the value
    /// a chain of max-pools, reshapes and transposes made it from.
    pub input: ValueRef,
    /// The value quantized at the output (of [`QuantPlan::graph`]).
    pub output: ValueRef,
    /// The proposal replaces the layer with its residual add and activation (`act`), in the
    /// class of the layer's node; otherwise the plain op, before the node's activation.
    pub whole: bool,
    pub act: Option<UnaryOp>,
    /// For a whole form with a residual add: the values whose histograms give the conv
    /// output's and the residual's parameters (of [`QuantPlan::graph`]).
    pub residual: Option<(ValueRef, ValueRef)>,
    /// `act` is a node of its own after the layer's (the lossless graph left it unfused): the
    /// form joins that node's class.
    pub act_after: bool,
}

/// The values calibration taps for the int8 family.
#[derive(Clone, Debug)]
pub struct QuantPlan {
    /// The lossless graph with every layer whose form is not whole split into its plain op,
    /// the residual add and the activation (the same values; the plain op's output becomes a
    /// value to tap).
    pub graph: VerifiedGraph,
    /// Per layer of the lossless graph, `None` where the family does not apply.
    pub layers: Vec<Option<LayerPlan>>,
}

/// Whether `act` becomes a clamp of a quantized output (what `qdq-linear` fuses).
fn clamp_act(act: &UnaryOp) -> bool {
    matches!(act, UnaryOp::Relu | UnaryOp::Clip { .. })
}

/// The int8 plan of every layer of `lossless`.
pub fn plan(lossless: &Lossless) -> QuantPlan {
    let mut g: Graph = (*lossless.graph).clone();
    let mut layers = Vec::with_capacity(lossless.layers.len());
    // The value that took the place of a split node's output (a later layer's tap may be it).
    let mut replaced = std::collections::HashMap::new();
    for i in 0..lossless.layers.len() {
        let node = lossless.nodes[i];
        let op = g.node(node).op.clone();
        let tap = replaced.get(&lossless.taps[i]).copied().unwrap_or(lossless.taps[i]);
        let input = source(&g, tap);
        let whole_act = match &op {
            Op::Fused(f) if !f.residual && f.act.as_ref().is_none_or(clamp_act) => Some(f.act),
            Op::Fused(_) => None,
            _ => Some(None),
        };
        let residual_act = match &op {
            Op::Fused(f) if f.residual && f.act.as_ref().is_none_or(clamp_act) => Some(f.act),
            _ => None,
        };
        // A plain layer whose only use is a ReLU/Clip: the form holds the activation (a clamp of
        // its quantized output), as it does for a fused one.
        let out = ValueRef::new(node, 0);
        let act_after = match (&whole_act, g.consumers(out).as_slice()) {
            (Some(None), [(next, _)]) if !g.outputs().iter().any(|o| o.value == out) => match &g.node(*next).op {
                Op::Unary(a) if clamp_act(a) => Some((*a, ValueRef::new(*next, 0))),
                _ => None,
            },
            _ => None,
        };
        let plan = match (whole_act, act_after) {
            (Some(_), Some((act, after))) => {
                LayerPlan { input, output: after, whole: true, act: Some(act), residual: None, act_after: true }
            }
            (Some(act), None) => LayerPlan { input, output: out, whole: true, act, residual: None, act_after: false },
            (None, _) => {
                let Op::Fused(f) = op else { unreachable!("only fused nodes are split") };
                let ins = g.node_inputs(node);
                let n_base = f.base_inputs(ins.len());
                let name = g.node(node).name.clone();
                let Ok(base) = g.add_node(format!("{name}.base"), f.base.clone(), &ins[..n_base]) else {
                    layers.push(None);
                    continue;
                };
                let mut cur = base[0];
                if f.residual {
                    match g.add_node(format!("{name}.residual"), Op::Binary(BinaryOp::Add), &[cur, ins[n_base]]) {
                        Ok(v) => cur = v[0],
                        Err(_) => {
                            layers.push(None);
                            continue;
                        }
                    }
                }
                if let Some(act) = &f.act {
                    match g.add_node(format!("{name}.act"), Op::Unary(*act), &[cur]) {
                        Ok(v) => cur = v[0],
                        Err(_) => {
                            layers.push(None);
                            continue;
                        }
                    }
                }
                g.replace_uses(ValueRef::new(node, 0), cur);
                replaced.insert(ValueRef::new(node, 0), cur);
                match residual_act {
                    Some(act) => {
                        let shortcut = ins[n_base];
                        let shortcut = source(&g, replaced.get(&shortcut).copied().unwrap_or(shortcut));
                        LayerPlan {
                            input,
                            output: cur,
                            whole: true,
                            act,
                            residual: Some((base[0], shortcut)),
                            act_after: false,
                        }
                    }
                    None => {
                        LayerPlan { input, output: base[0], whole: false, act: None, residual: None, act_after: false }
                    }
                }
            }
        };
        layers.push(Some(plan));
    }
    // The split nodes' old forms are dead; node ids of the others stay (a stable graph).
    g.remove_dead_nodes();
    // Splitting a fused node into its base op, add and activation keeps every type, so the copy
    // verifies; if it ever did not, the int8 family proposes nothing rather than failing the
    // search (the lossless graph stays available).
    let graph = match cnnc_ir::verify(g) {
        Ok(g) => g,
        Err(_) => return QuantPlan { graph: lossless.graph.clone(), layers: vec![None; lossless.layers.len()] },
    };
    QuantPlan { graph, layers }
}

/// The value `v` is made from by a chain of single-input ops that keep its range (a max-pool
/// takes some of its values, reshapes and transposes all of them).
fn source(g: &Graph, mut v: ValueRef) -> ValueRef {
    loop {
        let node = g.node(v.node);
        let keeps = matches!(node.op, Op::MaxPool(_) | Op::Reshape { .. } | Op::Transpose { .. });
        let ins = g.node_inputs(v.node);
        match (keeps, ins.as_slice()) {
            (true, [x]) if g.value_type(x).dtype == DType::F32 => v = *x,
            _ => return v,
        }
    }
}

/// A layer's activation quantization, from calibration.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerQuant {
    pub x: ActQuant,
    pub y: ActQuant,
    pub whole: bool,
    pub act: Option<UnaryOp>,
    /// A whole form's residual add: the conv output's and the residual's quantization, and the
    /// residual operand's e-class.
    pub residual: Option<(ActQuant, ActQuant, Id)>,
    /// The e-class the form joins: the layer node's (whole) or the plain op's.
    pub target: Id,
}

/// Each layer's activation quantization for the int8 family: histograms on the fit split of
/// the values its int8 form quantizes ([`plan`]), one range chosen per value
/// ([`calib::choose`]), so two layers quantizing the same tensor use the same parameters.
pub fn layer_quant(
    ev: &mut dyn Evaluator,
    egraph: &EGraph<Cnn, CnnAnalysis>,
    lossless: &Lossless,
) -> Result<Vec<Option<LayerQuant>>, EvalError> {
    let plan = plan(lossless);
    // Per layer: input, output, and for a residual form the conv output and the residual.
    let values: Vec<ValueRef> = plan
        .layers
        .iter()
        .flatten()
        .flat_map(|l| {
            let (c, r) = l.residual.unwrap_or((l.output, l.output));
            [l.input, l.output, c, r]
        })
        .collect();
    let hists = calib::collect_histograms(ev, &plan.graph, &values, Split::Fit)?;
    let chosen: Vec<Option<calib::ActQuant>> = hists.iter().map(calib::choose).collect();
    let mut k = 0;
    let mut out = Vec::with_capacity(plan.layers.len());
    for (i, l) in plan.layers.iter().enumerate() {
        let Some(l) = l else {
            out.push(None);
            continue;
        };
        let [x, y, c, r] = [0, 1, 2, 3].map(|j| chosen[k + j].clone());
        k += 4;
        let layer = &lossless.layers[i];
        let mut target = if l.whole { lossless.extracted.classes[layer.term] } else { layer.class };
        if let (true, Some(act)) = (l.act_after, l.act) {
            // The class of `act(layer)`: where the activation's node is.
            let op = Op::Unary(act);
            let node = egraph.analysis.attrs.lookup(&op, std::slice::from_ref(&layer.out_type)).and_then(|a| {
                let leaf = egraph.lookup(Cnn::Attr(a))?;
                egraph.lookup(Cnn::op_node(&op, vec![leaf, target].into_boxed_slice())?)
            });
            match node {
                Some(c) => target = c,
                None => {
                    out.push(None);
                    continue;
                }
            }
        }
        // The residual operand: the layer node's last operand in the lossless term.
        let shortcut = lossless.extracted.enodes[layer.term].op_children().and_then(|c| c.last()).copied();
        let residual = match (l.residual, c, r, shortcut) {
            (None, ..) => None,
            (Some(_), Some(c), Some(r), Some(s)) => Some((c, r, egraph.find(s))),
            _ => {
                out.push(None);
                continue;
            }
        };
        out.push(match (x, y) {
            (Some(x), Some(y)) => {
                Some(LayerQuant { x, y, whole: l.whole, act: l.act, residual, target: egraph.find(target) })
            }
            _ => None,
        });
    }
    Ok(out)
}

/// The int8 form of a layer as the e-graph holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantForm {
    /// The plain base op: the layer's conv, or `Gemm{1, 1, trans_b}` for a dense layer (its
    /// weight `[m, d]` with `α` folded in, its bias with `β`).
    pub base: Op,
    pub x: QuantParams,
    pub x_method: &'static str,
    pub y: QuantParams,
    pub y_method: &'static str,
    pub whole: bool,
    pub act: Option<UnaryOp>,
    /// The residual add's conv-output and residual quantization (a whole form with one).
    pub residual: Option<(QuantParams, QuantParams)>,
    /// i8 weight (the charged one) with per-output-channel symmetric scales.
    pub weight: WeightRef,
    pub w: QuantParams,
    /// i32 bias with the accumulator's scales `sx · sw[c]`.
    pub bias: WeightRef,
    pub b: QuantParams,
}

impl QuantForm {
    /// The f32 weight and bias the quantized ones stand for (`(q − 0) · scale`, as
    /// DequantizeLinear computes them).
    pub fn dequantized(&self, egraph: &EGraph<Cnn, CnnAnalysis>) -> Option<(Tensor, Tensor)> {
        let w = egraph.analysis.weights.get(self.weight.0 as usize)?;
        let b = egraph.analysis.weights.get(self.bias.0 as usize)?;
        let (wq, bq) = (w.as_i8()?, b.as_i32()?);
        let m = b.shape()[0];
        let d = wq.len() / m.max(1);
        let wf: Vec<f32> = wq.iter().enumerate().map(|(i, &q)| self.w.dequantize_one(i / d, i64::from(q))).collect();
        let bf: Vec<f32> = bq.iter().enumerate().map(|(c, &q)| self.b.dequantize_one(c, i64::from(q))).collect();
        Some((Tensor::from_f32(w.shape().to_vec(), wf).ok()?, Tensor::from_f32([m], bf).ok()?))
    }
}

/// The quantized weights of a layer and the form's errors.
#[derive(Clone, Debug)]
pub struct Int8Weights {
    pub base: Op,
    pub weight: Tensor,
    pub w: QuantParams,
    pub bias: Tensor,
    pub b: QuantParams,
    /// Relative output error on the fit split and on held-out data (see the module docs).
    pub rel_error: f64,
    pub held_out_error: f64,
}

/// The int8 weights of `layer` (augmented weight `w̃`, input second moments `sigma` on the fit
/// split and `held_out`, if the layer has them), with its activation quantization `q`.
///
/// A layer without input statistics (a grouped or depthwise conv) is modelled from its
/// tensors' histograms alone, as if its inputs were uncorrelated with the input tensor's mean
/// square: the weights' error `‖ΔW‖²_F · E[x²]` (plus the bias's), against the output's energy
/// `m · E[y²]`. The estimate only orders the layer's forms; the layer's sensitivity probe
/// measures what the form does to the network.
pub fn weights(
    layer: &Layer,
    w: &Mat<f64>,
    sigma: Option<&SecondMoment>,
    held_out: Option<&SecondMoment>,
    q: &LayerQuant,
) -> Option<Int8Weights> {
    let (m, d1) = (w.nrows(), w.ncols());
    let d = d1.checked_sub(1)?;
    if sigma.is_some_and(|s| s.dim() != d1) || m == 0 {
        return None;
    }
    let sx = q.x.params.scales[0];
    // Per-output-channel symmetric scales over [−127, 127] (zero point 0).
    let sw: Vec<f32> = (0..m)
        .map(|o| {
            let peak = (0..d).map(|j| w[(o, j)].abs()).fold(0.0, f64::max);
            if peak > 0.0 { (peak / 127.0) as f32 } else { 1.0 }
        })
        .collect();
    let wq: Vec<i8> = (0..m * d)
        .map(|i| (w[(i / d, i % d)] / f64::from(sw[i / d])).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    let w_hat = Mat::from_fn(m, d, |o, j| f64::from(f32::from(wq[o * d + j]) * sw[o]));
    // E[x̃] = Σ e_last: the last column of the augmented second moment.
    let mu = match sigma {
        Some(s) => s.column(d),
        None => vec![q.x.mean; d],
    };
    let acc_scale: Vec<f32> = sw.iter().map(|&s| sx * s).collect();
    // Bias correction: the weights' quantization shifts the output by (Ŵ − W) E[x], the
    // input's by Ŵ · E[noise]; both come off the bias.
    let shift_w: Vec<f64> = (0..m).map(|o| (0..d).map(|j| (w_hat[(o, j)] - w[(o, j)]) * mu[j]).sum()).collect();
    let row_sum: Vec<f64> = (0..m).map(|o| (0..d).map(|j| w_hat[(o, j)]).sum()).collect();
    let bq: Vec<i32> = (0..m)
        .map(|o| {
            let b = w[(o, d)] - shift_w[o] - row_sum[o] * q.x.mean_shift;
            (b / f64::from(acc_scale[o])).round_ties_even().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        })
        .collect();
    // The weights' error, with the bias as the weight correction alone leaves it (the noise's
    // mean is not in Σ; its correction cancels it, so only its variance is counted below).
    let approx = Mat::from_fn(m, d1, |o, j| {
        if j < d { w_hat[(o, j)] } else { f64::from(bq[o] as f32 * acc_scale[o]) + row_sum[o] * q.x.mean_shift }
    });
    let noise_in = (q.x.mse - q.x.mean_shift * q.x.mean_shift).max(0.0);
    let w_energy: f64 = (0..m).flat_map(|o| (0..d).map(move |j| (o, j))).map(|(o, j)| w_hat[(o, j)].powi(2)).sum();
    let rel = |s: &SecondMoment| -> f64 {
        let total = s.energy(w.as_ref());
        if total <= 0.0 {
            return 0.0;
        }
        let diff = w - &approx;
        let residual = q.residual.as_ref().map_or(0.0, |(c, r, _)| c.mse + r.mse);
        let e = s.energy(diff.as_ref()) + w_energy * noise_in + m as f64 * (q.y.mse + residual);
        (e / total).sqrt()
    };
    let (rel_error, held_out_error) = match sigma {
        Some(sigma) => {
            let fit = rel(sigma);
            (fit, held_out.filter(|h| h.dim() == d1).map_or(fit, rel))
        }
        None => {
            let total = m as f64 * q.y.mean_square;
            let dw: f64 = (0..m)
                .flat_map(|o| (0..d).map(move |j| (o, j)))
                .map(|(o, j)| (w[(o, j)] - approx[(o, j)]).powi(2))
                .sum();
            let db: f64 = (0..m).map(|o| (w[(o, d)] - approx[(o, d)]).powi(2)).sum();
            let residual = q.residual.as_ref().map_or(0.0, |(c, r, _)| c.mse + r.mse);
            let e = dw * q.x.mean_square + db + w_energy * noise_in + m as f64 * (q.y.mse + residual);
            let rel = if total > 0.0 { (e / total).sqrt() } else { 0.0 };
            (rel, rel)
        }
    };
    let (base, w_shape) = match &layer.kind {
        LayerKind::Conv(a) => {
            let (kh, kw) = layer.kernel();
            (Op::Conv(a.clone()), vec![m, layer.n_in() / layer.group(), kh, kw])
        }
        LayerKind::Dense { .. } => (Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true }, vec![m, d]),
    };
    Some(Int8Weights {
        base,
        weight: Tensor::from_i8(w_shape, wq).ok()?,
        w: QuantParams { axis: Some(0), scales: sw, zero_points: vec![0; m] },
        bias: Tensor::from_i32([m], bq).ok()?,
        b: QuantParams { axis: Some(0), scales: acc_scale, zero_points: vec![0; m] },
        rel_error,
        held_out_error,
    })
}

/// Adds the int8 form of `layer` to the e-graph (see the module docs) and unions it into
/// `q.target`; returns it.
pub fn add(
    egraph: &mut EGraph<Cnn, CnnAnalysis>,
    layer: &Layer,
    q: &LayerQuant,
    iw: &Int8Weights,
    id: ProposalId,
) -> Option<QuantForm> {
    let name = format!("{}.int8", layer.name);
    let in_ty = layer.in_type.clone();
    let out_ty = layer.out_type.clone();
    let quantized = |t: &TensorType| TensorType { dtype: ACT_DTYPE, ..t.clone() };
    let node = |egraph: &mut EGraph<Cnn, CnnAnalysis>, op: Op, out: TensorType, kids: Vec<Id>, tag: bool| {
        let attr = if tag {
            egraph.analysis.attrs.intern_proposal(&op, std::slice::from_ref(&out), &name, id)
        } else {
            egraph.analysis.attrs.intern(&op, std::slice::from_ref(&out), &name)
        };
        let mut children = vec![egraph.add(Cnn::Attr(attr))];
        children.extend(kids);
        Cnn::op_node(&op, children.into_boxed_slice()).map(|n| egraph.add(n))
    };
    // The input's quantization is shared by every int8 form reading the same tensor with the
    // same parameters (one kernel, paid once).
    let xq = node(
        egraph,
        Op::Quantize { params: q.x.params.clone(), to: ACT_DTYPE },
        quantized(&in_ty),
        vec![layer.input],
        false,
    )?;
    let xd = node(egraph, Op::Dequantize(q.x.params.clone()), in_ty.clone(), vec![xq], false)?;
    let w = add_weight(egraph, iw.weight.clone(), format!("{name}.w"));
    let weight = weight_of(egraph, w)?;
    let wd =
        node(egraph, Op::Dequantize(iw.w.clone()), TensorType { dtype: DType::F32, ..iw.weight.ty() }, vec![w], false)?;
    let b = add_weight(egraph, iw.bias.clone(), format!("{name}.b"));
    let bias = weight_of(egraph, b)?;
    let bd =
        node(egraph, Op::Dequantize(iw.b.clone()), TensorType { dtype: DType::F32, ..iw.bias.ty() }, vec![b], false)?;
    let mut y = node(egraph, iw.base.clone(), out_ty.clone(), vec![xd, wd, bd], true)?;
    if let Some((c, r, shortcut)) = q.residual.as_ref().filter(|_| q.whole) {
        let (cp, rp) = (&c.params, &r.params);
        let cq = node(egraph, Op::Quantize { params: cp.clone(), to: ACT_DTYPE }, quantized(&out_ty), vec![y], true)?;
        let cd = node(egraph, Op::Dequantize(cp.clone()), out_ty.clone(), vec![cq], true)?;
        // The residual's quantization is shared like the input's: the same tensor, the same
        // parameters, one kernel (and it cancels against the int8 layer that made it).
        let rq = node(
            egraph,
            Op::Quantize { params: rp.clone(), to: ACT_DTYPE },
            quantized(&out_ty),
            vec![*shortcut],
            false,
        )?;
        let rd = node(egraph, Op::Dequantize(rp.clone()), out_ty.clone(), vec![rq], false)?;
        y = node(egraph, Op::Binary(BinaryOp::Add), out_ty.clone(), vec![cd, rd], true)?;
    }
    if let Some(act) = q.act.as_ref().filter(|_| q.whole) {
        y = node(egraph, Op::Unary(*act), out_ty.clone(), vec![y], true)?;
    }
    let yq =
        node(egraph, Op::Quantize { params: q.y.params.clone(), to: ACT_DTYPE }, quantized(&out_ty), vec![y], true)?;
    let yd = node(egraph, Op::Dequantize(q.y.params.clone()), out_ty, vec![yq], true)?;
    egraph.analysis.charged.insert(weight, id);
    egraph.union(q.target, yd);
    Some(QuantForm {
        base: iw.base.clone(),
        x: q.x.params.clone(),
        x_method: q.x.method,
        y: q.y.params.clone(),
        y_method: q.y.method,
        whole: q.whole,
        act: q.act.filter(|_| q.whole),
        residual: q.residual.as_ref().filter(|_| q.whole).map(|(c, r, _)| (c.params.clone(), r.params.clone())),
        weight,
        w: iw.w.clone(),
        bias,
        b: iw.b.clone(),
    })
}
