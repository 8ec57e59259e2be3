//! QDQ → quantized ops: the DequantizeLinear → conv/gemm/matmul → QuantizeLinear chains that
//! onnxruntime's quantizer writes become one `qlinear-…` op computed in integers, and a
//! DequantizeLinear of a constant becomes the f32 constant.
//!
//! What, three kinds of rule:
//! - `qdq-linear`: `quantize{y}(base(dequantize{x}(%x), dequantize{w}(%w)[, dequantize{b}(%b)]))`,
//!   optionally with `relu` or `clip` between the base and the quantize, ⇒
//!   `qlinear-base{x, w, out=y, clamp}(%x, %w[, %b])`. The activation becomes a clamp of the
//!   quantized output (exact: quantization is monotone, so `Q(relu(v)) = max(Q(v), zy)` and
//!   `Q(clip(v, a, b)) = clamp(Q(v), Q(a), Q(b))`).
//! - `qdq-fold-weight`: `dequantize{p}(%w)` of a constant ⇒ the f32 constant
//!   `(w − zero_point) · scale` (the same arithmetic as the op, done once at compile time).
//! - `qdq-identity`, `qdq-reshape`, `qdq-transpose`, `qdq-max-pool`:
//!   `quantize{p}(dequantize{p}(%x))` ⇒ `%x`, and a reshape, transpose or (1-D/2-D) max-pool
//!   between them ⇒ that op on `%x`'s bytes (the same per-tensor parameters on both sides, `%x`
//!   of the quantized type; exact, see [`Requantize`]).
//!
//! When: the base is a direct conv, a gemm with `alpha = beta = 1` or a matmul with a 2-D
//! weight; `%x` is u8/i8 quantized per tensor; `%w` is a u8/i8 constant quantized per tensor or
//! along its output-channel axis; `%b` (if any) is an i32 constant with zero points 0 and the
//! scales `sx·sw[c]` (within 1e-6 relative: the quantizer stores the f32 product), one per
//! output channel, added by the base (a conv's or gemm's bias; not a matmul's); the output is
//! quantized per tensor to u8/i8. It does not fire on a runtime weight, a bias whose scale is
//! not the accumulator's, Winograd conv forms, or another activation (e.g. LeakyReLU, which is
//! not a clamp).
//!
//! Numerical effect: the quantized op computes the sum exactly in i32 and requantizes once
//! (onnxruntime's integer kernels do the same); the chain it replaces sums
//! `DQ(x)·DQ(w) + DQ(b)` in f32 before quantizing, so the two can differ by one step where the
//! f32 sum rounds across a rounding boundary of the output. Exact up to float reordering, as
//! every `-O1` rule.
//!
//! ```text
//! before: %xf = dequantize{scales=[0.02], zero-points=[128]}(%x) : f32[1,8,16,16]
//!         %wf = dequantize{axis=0, scales=[…], zero-points=[0, …]}(%w) : f32[16,8,3,3]
//!         %bf = dequantize{axis=0, scales=[…], zero-points=[0, …]}(%b) : f32[16]
//!         %c = conv{…}(%xf, %wf, %bf) : f32[1,16,16,16]
//!         %r = relu(%c) : f32[1,16,16,16]
//!         %y = quantize{to=u8, scales=[0.05], zero-points=[0]}(%r) : u8[1,16,16,16]
//! after:  %y = qlinear-conv{…, x-scales=[0.02], …, out=u8, out-scales=[0.05],
//!                           out-zero-points=[0], clamp=[0, 255]}(%x, %w, %b) : u8[1,16,16,16]
//! ```

use cnnc_ir::{DType, Op, QLinear, QLinearOut, QuantParams, Tensor, TensorData, UnaryOp};
use egg::{Applier, EGraph, Id, Pattern, PatternAst, Rewrite, Subst, Symbol};

use super::var;
use crate::analysis::{CnnAnalysis, add_weight, attr_of, weight_of};
use crate::lang::Cnn;

/// `max-pool`, `reshape` and `transpose` of a per-tensor `dequantize` as the dequantize of
/// the op on the quantized bytes (`qdq-commute-…`): exact, as [`Requantize`] explains (a
/// max-pool only without windows made of padding alone: dilation 1, each pad smaller than the
/// kernel, no ceil mode). `-O speed` runs these after its int8 proposals, so that a chain of
/// int8 layers stays in bytes through the pools and reshapes between them (`quantize(reshape(
/// max-pool(dequantize(q))))` becomes `reshape(max-pool(q))` with `qdq-identity`).
pub fn commute_rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    [
        ("qdq-commute-max-pool", "(max-pool ?m (dequantize ?d ?x))"),
        ("qdq-commute-reshape", "(reshape ?m (dequantize ?d ?x))"),
        ("qdq-commute-transpose", "(transpose ?m (dequantize ?d ?x))"),
    ]
    .into_iter()
    .map(|(name, pattern)| {
        let p: Pattern<Cnn> = pattern.parse().expect("a valid pattern");
        Rewrite::new(name, p, Commute).expect("a valid rule")
    })
    .collect()
}

struct Commute;

impl Applier<Cnn, CnnAnalysis> for Commute {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let (m, d, x) = (subst[var("?m")], subst[var("?d")], subst[var("?x")]);
        let (Some(op), Some(dq)) = (attr_of(egraph, m).cloned(), attr_of(egraph, d).cloned()) else {
            return Vec::new();
        };
        let Op::Dequantize(p) = &dq.op else { return Vec::new() };
        let (Some(to), Some(out)) = (dtype(egraph, x), egraph[eclass].data.types.first().cloned()) else {
            return Vec::new();
        };
        let exact = match &op.op {
            Op::MaxPool(a) => {
                let n = a.kernel.len();
                n <= 2
                    && !a.ceil_mode
                    && a.dilations.iter().all(|&d| d == 1)
                    && (0..2 * n).all(|i| a.pads[i] < a.kernel[i % n])
            }
            Op::Reshape { .. } | Op::Transpose { .. } => true,
            _ => false,
        };
        if !exact || p.axis.is_some() || !to.is_quantized() {
            return Vec::new();
        }
        let inner_ty = cnnc_ir::TensorType { dtype: to, ..out.clone() };
        let inner_attr = egraph.analysis.attrs.intern(&op.op, &[inner_ty], &op.name);
        let leaf = egraph.add(Cnn::Attr(inner_attr));
        let Some(node) = Cnn::op_node(&op.op, vec![leaf, x].into_boxed_slice()) else { return Vec::new() };
        let inner = egraph.add(node);
        let dq_attr = egraph.analysis.attrs.intern(&dq.op, &[out], &dq.name);
        let dq_leaf = egraph.add(Cnn::Attr(dq_attr));
        let outer = egraph.add(Cnn::Dequantize(vec![dq_leaf, inner].into_boxed_slice()));
        if egraph.union(eclass, outer) { vec![eclass] } else { Vec::new() }
    }
}

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let mut rules = Vec::new();
    let x = "(dequantize ?dx ?x)";
    let w = "(dequantize ?dw ?w)";
    let b = "(dequantize ?db ?b)";
    for (base, operands) in [
        ("conv", format!("{x} {w}")),
        ("conv", format!("{x} {w} {b}")),
        ("gemm", format!("{x} {w}")),
        ("gemm", format!("{x} {w} {b}")),
        ("matmul", format!("{x} {w}")),
    ] {
        let core = format!("({base} ?base {operands})");
        let bias = if operands.contains("?db") { "-bias" } else { "" };
        for (act, inner) in [("", core.clone()), ("-act", format!("(unary ?act {core})"))] {
            let pattern: Pattern<Cnn> = format!("(quantize ?q {inner})").parse().expect("a valid pattern");
            let name = format!("qdq-linear-{base}{bias}{act}");
            rules.push(Rewrite::new(name, pattern, QdqLinear).expect("a valid rule"));
        }
    }
    let dq: Pattern<Cnn> = "(dequantize ?d ?w)".parse().expect("a valid pattern");
    rules.push(Rewrite::new("qdq-fold-weight", dq, FoldWeight).expect("a valid rule"));
    for (name, pattern) in [
        ("qdq-identity", "(quantize ?q (dequantize ?d ?x))"),
        ("qdq-reshape", "(quantize ?q (reshape ?m (dequantize ?d ?x)))"),
        ("qdq-transpose", "(quantize ?q (transpose ?m (dequantize ?d ?x)))"),
        ("qdq-max-pool", "(quantize ?q (max-pool ?m (dequantize ?d ?x)))"),
    ] {
        let p: Pattern<Cnn> = pattern.parse().expect("a valid pattern");
        rules.push(Rewrite::new(name, p, Requantize).expect("a valid rule"));
    }
    rules
}

/// `quantize{p}(dequantize{p}(x))` ⇒ `x`, and the same around a reshape, a transpose or a
/// max-pool ⇒ that op on `x` itself, when both use the same per-tensor parameters and `x` has
/// the quantized type: `Q(DQ(q)) = q` exactly for every `q` of the type (DQ is exact in f32 and
/// `round((q − z)·s / s) = q − z`, as `(q − z)·s` is the f32 product and dividing it by `s`
/// gives back the integer `q − z` for |q − z| ≤ 255). A max-pool commutes with DQ because DQ
/// is non-decreasing (`s > 0`), and a window without input taps gives −∞, which quantizes to
/// the type's minimum, what the byte max-pool gives it.
struct Requantize;

impl Applier<Cnn, CnnAnalysis> for Requantize {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let attr = |v: &str| attr_of(egraph, subst[var(v)]).map(|e| &e.op);
        let (Some(Op::Quantize { params: qp, to }), Some(Op::Dequantize(dp))) = (attr("?q"), attr("?d")) else {
            return Vec::new();
        };
        let x = subst[var("?x")];
        if qp != dp || qp.axis.is_some() || dtype(egraph, x) != Some(*to) {
            return Vec::new();
        }
        let Some(&m) = subst.get(var("?m")) else {
            return if egraph.union(eclass, x) { vec![eclass] } else { Vec::new() };
        };
        let (Some(entry), Some(out)) = (attr_of(egraph, m).cloned(), egraph[eclass].data.types.first().cloned()) else {
            return Vec::new();
        };
        let attr = egraph.analysis.attrs.intern(&entry.op, &[out], &entry.name);
        let leaf = egraph.add(Cnn::Attr(attr));
        let node = match entry.op {
            Op::Reshape { .. } => Cnn::Reshape(vec![leaf, x].into_boxed_slice()),
            Op::Transpose { .. } => Cnn::Transpose(vec![leaf, x].into_boxed_slice()),
            // 1-D and 2-D windows: what the byte max-pool kernel (`codegen/qpool.rs`) runs.
            Op::MaxPool(p) if p.kernel.len() <= 2 => Cnn::MaxPool(vec![leaf, x].into_boxed_slice()),
            _ => return Vec::new(),
        };
        let node = egraph.add(node);
        if egraph.union(eclass, node) { vec![eclass] } else { Vec::new() }
    }
}

/// The dtype of a class's (first) value.
fn dtype(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id) -> Option<DType> {
    egraph[class].data.types.first().map(|t| t.dtype)
}

/// `Q(v)` of the output quantization `p` to `to`, for a clip bound `v` (±∞ saturate to the
/// type's bounds, as QuantizeLinear does).
fn quantized_bound(v: f32, p: &QuantParams, to: DType) -> Option<i32> {
    i32::try_from(p.quantize_one(0, v, to)?).ok()
}

struct QdqLinear;

impl QdqLinear {
    /// The quantized op, or `None` when a condition of the module docs fails.
    fn build(egraph: &EGraph<Cnn, CnnAnalysis>, subst: &Subst) -> Option<(QLinear, Vec<Id>)> {
        let attr = |v: &str| attr_of(egraph, subst[var(v)]).map(|e| &e.op);
        let Some(Op::Quantize { params: yp, to }) = attr("?q") else { return None };
        let Some(Op::Dequantize(xp)) = attr("?dx") else { return None };
        let Some(Op::Dequantize(wp)) = attr("?dw") else { return None };
        let base = attr("?base")?.clone();
        // A direct conv only: `qlinear-winograd-f2` offers the integer Winograd form of the result.
        let winograd = matches!(&base, Op::Conv(a) if a.algo != cnnc_ir::ConvAlgo::Direct);
        if yp.axis.is_some() || !to.is_quantized() || xp.axis.is_some() || !QLinear::linear_base(&base) || winograd {
            return None;
        }
        let (x, w) = (subst[var("?x")], subst[var("?w")]);
        let w_ty = egraph[w].data.types.first()?;
        if !dtype(egraph, x)?.is_quantized() || !w_ty.dtype.is_quantized() || weight_of(egraph, w).is_none() {
            return None;
        }
        if matches!(base, Op::MatMul) && w_ty.rank() != 2 {
            return None;
        }
        let mut q = QLinear {
            base,
            x: xp.clone(),
            w: wp.clone(),
            out: QLinearOut::Quantized { params: yp.clone(), to: *to },
            clamp: None,
        };
        let axis = q.weight_channel_axis(w_ty.rank());
        if wp.axis.is_some_and(|a| a != axis) {
            return None;
        }
        let c_out = *w_ty.shape.get(axis)?;
        let mut operands = vec![x, w];
        if let Some(&db) = subst.get(var("?db")) {
            let Some(Op::Dequantize(bp)) = attr_of(egraph, db).map(|e| &e.op) else { return None };
            let b = subst[var("?b")];
            let b_ty = egraph[b].data.types.first()?;
            if b_ty.dtype != DType::I32 || b_ty.shape != [c_out] || weight_of(egraph, b).is_none() {
                return None;
            }
            let scale_ok = (0..c_out).all(|c| {
                let k = if bp.axis.is_some() { c } else { 0 };
                let (got, want) = (bp.scales.get(k).copied(), q.acc_scale(c));
                bp.zero_points.get(k) == Some(&0) && got.is_some_and(|s| (s - want).abs() <= 1e-6 * want)
            });
            if !scale_ok {
                return None;
            }
            operands.push(b);
        }
        if let Some(&act) = subst.get(var("?act")) {
            let (lo, hi) = to.int_range()?;
            q.clamp = Some(match attr_of(egraph, act).map(|e| &e.op) {
                Some(Op::Unary(UnaryOp::Relu)) => (yp.zero_points[0].max(lo as i32), hi as i32),
                Some(Op::Unary(UnaryOp::Clip { min, max })) if min <= max => {
                    (quantized_bound(*min, yp, *to)?, quantized_bound(*max, yp, *to)?)
                }
                _ => return None,
            });
        }
        Some((q, operands))
    }
}

impl Applier<Cnn, CnnAnalysis> for QdqLinear {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let Some((q, operands)) = Self::build(egraph, subst) else { return Vec::new() };
        let Some(out) = egraph[eclass].data.types.first().cloned() else { return Vec::new() };
        let name = attr_of(egraph, subst[var("?base")]).map(|e| e.name.clone()).unwrap_or_default();
        let attr = egraph.analysis.attrs.intern(&Op::QLinear(Box::new(q)), &[out], &name);
        let mut children = vec![egraph.add(Cnn::Attr(attr))];
        children.extend(operands);
        let node = egraph.add(Cnn::QLinear(children.into_boxed_slice()));
        if egraph.union(eclass, node) { vec![eclass] } else { Vec::new() }
    }
}

struct FoldWeight;

impl Applier<Cnn, CnnAnalysis> for FoldWeight {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        // Once folded, the class holds a weight: nothing more to do.
        if weight_of(egraph, eclass).is_some() {
            return Vec::new();
        }
        let Some(entry) = attr_of(egraph, subst[var("?d")]) else { return Vec::new() };
        let Op::Dequantize(p) = &entry.op else { return Vec::new() };
        let (p, name) = (p.clone(), entry.name.clone());
        let Some(wr) = weight_of(egraph, subst[var("?w")]) else { return Vec::new() };
        let t = &egraph.analysis.weights[wr.0 as usize];
        let Some(v) = t.data().to_i64_vec().filter(|_| !matches!(t.data(), TensorData::I64(_))) else {
            return Vec::new();
        };
        let shape = t.shape().to_vec();
        // DequantizeLinear exactly, with the op's own scalar arithmetic.
        let f = v.iter().enumerate().map(|(i, &q)| p.dequantize_one(p.index(&shape, i), q)).collect();
        let Ok(tensor) = Tensor::from_f32(shape, f) else { return Vec::new() };
        let folded = add_weight(egraph, tensor, name);
        if egraph.union(eclass, folded) { vec![eclass] } else { Vec::new() }
    }
}
