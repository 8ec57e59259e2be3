//! Per-channel constant Add/Mul folded into the conv (or conv-transpose) that feeds it (exact up
//! to rounding).
//!
//! What: `conv(x, w[, b]) + k` ⇒ `conv(x, w, b + k)` and `conv(x, w[, b]) · k` ⇒
//! `conv(x, w·k, b·k)`, where `k` is a constant holding one value per output channel (shape
//! `[C]`, `[C,1,…,1]` or `[1,C,1,…,1]`) or a single value (`[]` or all ones), in either operand
//! order. Exporters write a conv's bias this way (PaddlePaddle's ConvTranspose + Add), and
//! scale layers this way.
//!
//! When: `w`, `b` and `k` are constants of the weight store and the result has the conv's
//! type (the constant does not broadcast the conv's output to a bigger shape). It does not fire
//! for a non-constant `k`, or a `k` that varies over pixels.
//!
//! Numerical effect: the folded weights are computed in f64 and rounded once to f32 (a few ulps).
//!
//! ```text
//! before: %c = conv-transpose{…}(%x, %w) : f32[1,24,320,320]
//!         %y = add(%c, %k) : f32[1,24,320,320]          ; %k : f32[1,24,1,1]
//! after:  %y = conv-transpose{…}(%x, %w, %k') : f32[1,24,320,320]   ; %k' : f32[24]
//! ```

use cnnc_ir::{BinaryOp, Op, Tensor};
use egg::{Applier, EGraph, Id, PatternAst, Rewrite, Subst, Symbol};

use super::var;
use crate::analysis::CnnAnalysis;
use crate::analysis::{add_weight, attr_of, weight_of};
use crate::lang::{Cnn, WeightRef};

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let mut rules = Vec::new();
    for (family, node) in [("conv", "conv"), ("conv-transpose", "conv-transpose")] {
        for bias in [true, false] {
            let conv = if bias { format!("({node} ?c ?x ?w ?b)") } else { format!("({node} ?c ?x ?w)") };
            let suffix = if bias { "-bias" } else { "" };
            let left: egg::Pattern<Cnn> = format!("(binary ?op {conv} ?k)").parse().expect("pattern");
            let right: egg::Pattern<Cnn> = format!("(binary ?op ?k {conv})").parse().expect("pattern");
            let apply = FoldAffine { bias, transpose: family == "conv-transpose" };
            rules.push(Rewrite::new(format!("affine-fold-{family}{suffix}"), left, apply.clone()).expect("rule"));
            rules.push(Rewrite::new(format!("affine-fold-{family}{suffix}-swapped"), right, apply).expect("rule"));
        }
    }
    rules
}

#[derive(Clone)]
struct FoldAffine {
    bias: bool,
    transpose: bool,
}

/// One value per output channel from a constant of shape `[]`, all ones, `[C,1,…]` or
/// `[1,C,1,…]` (`rank` is the conv output's rank, ≥ 3). A `[C]` constant broadcasts along the
/// last axis, not the channels, so it does not qualify.
pub(super) fn per_channel(t: &Tensor, channels: usize, rank: usize) -> Option<Vec<f32>> {
    let v = t.as_f32()?;
    let shape = t.shape();
    if v.len() == 1 && shape.len() <= rank {
        return Some(vec![v[0]; channels]);
    }
    if v.len() != channels {
        return None;
    }
    let ok = match shape.len() {
        n if n == rank => shape[0] == 1 && shape[1] == channels,
        n if n + 1 == rank => shape[0] == channels,
        _ => false,
    };
    ok.then(|| v.to_vec())
}

impl Applier<Cnn, CnnAnalysis> for FoldAffine {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let mul = match attr_of(egraph, subst[var("?op")]).map(|e| &e.op) {
            Some(Op::Binary(BinaryOp::Add)) => false,
            Some(Op::Binary(BinaryOp::Mul)) => true,
            _ => return Vec::new(),
        };
        let out_ty = egraph[eclass].data.types.first().cloned();
        let (Some(w), Some(k)) = (weight_of(egraph, subst[var("?w")]), weight_of(egraph, subst[var("?k")])) else {
            return Vec::new();
        };
        let b = if self.bias {
            match weight_of(egraph, subst[var("?b")]) {
                Some(b) => Some(b),
                None => return Vec::new(),
            }
        } else {
            None
        };
        let Some(out_ty) = out_ty.filter(|t| t.shape.len() >= 3) else { return Vec::new() };
        // The result must have the conv's type: the constant only shifts or scales channels.
        if attr_of(egraph, subst[var("?c")]).and_then(|e| e.outputs.first()) != Some(&out_ty) {
            return Vec::new();
        }
        let channels = out_ty.shape[1];
        let key = format!("{rule_name}|{}|{}|{:?}", w.0, k.0, b.map(|b| b.0));
        let folded = match egraph.analysis.derived.get(&key) {
            Some(&pair) => Some(pair),
            None => fold(egraph, w, k, b, channels, out_ty.shape.len(), mul, self.transpose).inspect(|&pair| {
                egraph.analysis.derived.insert(key, pair);
            }),
        };
        let Some((w2, b2)) = folded else { return Vec::new() };
        let children = vec![subst[var("?c")], subst[var("?x")], w2, b2].into_boxed_slice();
        let conv = egraph.add(if self.transpose { Cnn::ConvTranspose(children) } else { Cnn::Conv(children) });
        if egraph.union(eclass, conv) { vec![eclass] } else { Vec::new() }
    }
}

#[allow(clippy::too_many_arguments)]
fn fold(
    egraph: &mut EGraph<Cnn, CnnAnalysis>,
    w: WeightRef,
    k: WeightRef,
    b: Option<WeightRef>,
    channels: usize,
    rank: usize,
    mul: bool,
    transpose: bool,
) -> Option<(Id, Id)> {
    let a = &egraph.analysis;
    let kv = per_channel(a.weights.get(k.0 as usize)?, channels, rank)?;
    let wt = a.weights.get(w.0 as usize)?;
    let bv: Vec<f32> = match b {
        Some(b) => a.weights.get(b.0 as usize)?.as_f32().filter(|x| x.len() == channels)?.to_vec(),
        None => vec![0.0; channels],
    };
    let base = a.weight_names.get(w.0 as usize).cloned().unwrap_or_default();
    let w2 = if mul {
        let wv = wt.as_f32()?;
        let shape = wt.shape().to_vec();
        let channel_of: Box<dyn Fn(usize) -> usize> = if transpose {
            // `[C_in, C_out / group, taps…]`; the group count follows from the shapes.
            let (c_in, c_out_g) = (*shape.first()?, *shape.get(1)?);
            let taps: usize = shape[2..].iter().product();
            let group = channels.checked_div(c_out_g)?;
            let in_per_group = c_in.checked_div(group)?;
            Box::new(move |i| (i / (c_out_g * taps) / in_per_group) * c_out_g + (i / taps) % c_out_g)
        } else {
            let per = wv.len().checked_div(channels)?;
            Box::new(move |i| i / per)
        };
        let scaled: Vec<f32> =
            wv.iter().enumerate().map(|(i, &x)| (f64::from(x) * f64::from(kv[channel_of(i)])) as f32).collect();
        add_weight(egraph, Tensor::from_f32(shape, scaled).ok()?, format!("{base}.scaled"))
    } else {
        egraph.lookup(Cnn::WeightLeaf(w)).and_then(|leaf| egraph.lookup(Cnn::Weight(leaf)))?
    };
    let b_new: Vec<f32> = (0..channels)
        .map(|c| {
            let (b, k) = (f64::from(bv[c]), f64::from(kv[c]));
            (if mul { b * k } else { b + k }) as f32
        })
        .collect();
    let b2 = add_weight(egraph, Tensor::from_f32([channels], b_new).ok()?, format!("{base}.folded_bias"));
    Some((w2, b2))
}
