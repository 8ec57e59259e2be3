//! A per-channel constant Mul/Add on a conv's *input* folded into the conv (exact up to
//! rounding). [`super::channel_affine`] folds the ones on its output.
//!
//! What, two rules:
//! - `affine-input-mul`: `conv(x · s, w[, b])` ⇒ `conv(x, w', b)` with
//!   `w'[m, c, k…] = w[m, c, k…] · s[input channel of (m, c)]`. Zero padding commutes with a
//!   scale (`0 · s = 0`), so any padding, stride, dilation and group count qualifies.
//! - `affine-input-add`: `conv(x + t, w[, b])` ⇒ `conv(x, w, b')` with
//!   `b'[m] = b[m] + Σ_{c,k} w[m, c, k] · t[input channel of (m, c)]`, only for a conv without
//!   padding (a padded border would see `0` where the original saw `t`).
//!
//! Either operand order; `s`/`t` is a constant with one value per input channel (`[C,1,…,1]`
//! or `[1,C,1,…,1]`) or a single value. Exporters write PP-LCNetV3's "learnable affine
//! block" (`act(…) · s + t` before the next conv) and input normalization this way: in
//! ppocr_v4_det the pair folds into every 1×1 conv after such a block, and the scale alone
//! into the padded depthwise ones.
//!
//! When not: the conv weights or the constant are not in the weight store; the constant
//! varies over pixels or broadcasts `x` to a bigger shape; an add before a padded conv; a
//! conv-transpose (its input-side fold is not implemented).
//!
//! Numerical effect: the new weights (or bias) are computed in f64 and rounded once to f32;
//! the conv no longer rounds `x · s` or `x + t` first. A few ulps.
//!
//! ```text
//! before: %m = mul(%y, %s) : f32[1,32,160,160]          ; %s : f32[1] = [0.9]
//!         %a = add(%m, %t) : f32[1,32,160,160]          ; %t : f32[1] = [0.05]
//!         %c = conv{kernel=[1, 1], …, pads=[0, 0, 0, 0]}(%a, %w, %b)
//! after:  %c = conv{kernel=[1, 1], …, pads=[0, 0, 0, 0]}(%y, %w', %b')
//! ```

use cnnc_ir::{BinaryOp, ConvAttrs, Op, Tensor};
use egg::{Applier, EGraph, Id, PatternAst, Rewrite, Subst, Symbol};

use super::channel_affine::per_channel;
use super::var;
use crate::analysis::CnnAnalysis;
use crate::analysis::{add_weight, attr_of, weight_of};
use crate::lang::{Cnn, WeightRef};

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let mut rules = Vec::new();
    for (kind, mul) in [("mul", true), ("add", false)] {
        for bias in [true, false] {
            let tail = if bias { " ?b)" } else { ")" };
            let suffix = if bias { "-bias" } else { "" };
            for (order, operands) in [("", "?x ?k"), ("-swapped", "?k ?x")] {
                let pattern: egg::Pattern<Cnn> =
                    format!("(conv ?c (binary ?op {operands}) ?w{tail}").parse().expect("a valid pattern");
                let name = format!("affine-input-{kind}{suffix}{order}");
                rules.push(Rewrite::new(name, pattern, FoldInput { mul, bias }).expect("a valid rule"));
            }
        }
    }
    rules
}

#[derive(Clone, Copy)]
struct FoldInput {
    mul: bool,
    bias: bool,
}

impl Applier<Cnn, CnnAnalysis> for FoldInput {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let want = if self.mul { BinaryOp::Mul } else { BinaryOp::Add };
        if attr_of(egraph, subst[var("?op")]).map(|e| &e.op) != Some(&Op::Binary(want)) {
            return Vec::new();
        }
        let Some(Op::Conv(attrs)) = attr_of(egraph, subst[var("?c")]).map(|e| e.op.clone()) else {
            return Vec::new();
        };
        if !self.mul && attrs.pads.iter().any(|&p| p != 0) {
            return Vec::new();
        }
        // `per_channel` (in `fold`) admits only constants that broadcast to x's own shape, so
        // the affine op's result, the conv's input, has x's type.
        let Some(x_ty) = egraph[subst[var("?x")]].data.types.first().cloned().filter(|t| t.shape.len() >= 3) else {
            return Vec::new();
        };
        let (Some(w), Some(k)) = (weight_of(egraph, subst[var("?w")]), weight_of(egraph, subst[var("?k")])) else {
            return Vec::new();
        };
        let b = if self.bias {
            let Some(b) = weight_of(egraph, subst[var("?b")]) else { return Vec::new() };
            Some(b)
        } else {
            None
        };
        let key = format!("{rule_name}|{}|{}|{:?}", w.0, k.0, b.map(|b| b.0));
        let folded = match egraph.analysis.derived.get(&key) {
            Some(&pair) => Some(pair),
            None => fold(egraph, &attrs, w, k, b, x_ty.shape[1], x_ty.shape.len(), self.mul).inspect(|&pair| {
                egraph.analysis.derived.insert(key, pair);
            }),
        };
        let Some((w2, b2)) = folded else { return Vec::new() };
        let mut children = vec![subst[var("?c")], subst[var("?x")], w2];
        match (self.mul, self.bias) {
            (true, true) => children.push(subst[var("?b")]),
            (true, false) => {}
            (false, _) => children.push(b2),
        }
        let conv = egraph.add(Cnn::Conv(children.into_boxed_slice()));
        if egraph.union(eclass, conv) { vec![eclass] } else { Vec::new() }
    }
}

/// The derived weight class: for a scale `(scaled weights, scaled weights)`, for a shift
/// `(the weights, the new bias)` (a pair, as the rule memo stores it).
#[allow(clippy::too_many_arguments)]
fn fold(
    egraph: &mut EGraph<Cnn, CnnAnalysis>,
    attrs: &ConvAttrs,
    w: WeightRef,
    k: WeightRef,
    b: Option<WeightRef>,
    in_channels: usize,
    rank: usize,
    mul: bool,
) -> Option<(Id, Id)> {
    let a = &egraph.analysis;
    let kv = per_channel(a.weights.get(k.0 as usize)?, in_channels, rank)?;
    let wt = a.weights.get(w.0 as usize)?;
    let wv = wt.as_f32()?;
    let shape = wt.shape().to_vec();
    // w is [M, C/group, taps…]: slot (m, c) reads input channel (m / (M/group))·(C/group) + c.
    let (m_out, cg) = (*shape.first()?, *shape.get(1)?);
    let taps: usize = shape[2..].iter().product();
    let mg = m_out.checked_div(attrs.group)?;
    if cg * attrs.group != in_channels || mg == 0 {
        return None;
    }
    let channel = |i: usize| {
        let (m, c) = (i / (cg * taps), (i / taps) % cg);
        (m / mg) * cg + c
    };
    let base = a.weight_names.get(w.0 as usize).cloned().unwrap_or_default();
    let bv: Option<Vec<f32>> = match b {
        Some(b) => Some(a.weights.get(b.0 as usize)?.as_f32().filter(|x| x.len() == m_out)?.to_vec()),
        None => None,
    };
    if mul {
        let scaled: Vec<f32> =
            wv.iter().enumerate().map(|(i, &x)| (f64::from(x) * f64::from(kv[channel(i)])) as f32).collect();
        let w2 = add_weight(egraph, Tensor::from_f32(shape, scaled).ok()?, format!("{base}.input_scaled"));
        Some((w2, w2))
    } else {
        let mut sums = vec![0f64; m_out];
        for (i, &x) in wv.iter().enumerate() {
            sums[i / (cg * taps)] += f64::from(x) * f64::from(kv[channel(i)]);
        }
        let b_new: Vec<f32> =
            sums.iter().enumerate().map(|(m, s)| (bv.as_ref().map_or(0.0, |b| f64::from(b[m])) + s) as f32).collect();
        let w_class = egraph.lookup(Cnn::WeightLeaf(w)).and_then(|leaf| egraph.lookup(Cnn::Weight(leaf)))?;
        let b2 = add_weight(egraph, Tensor::from_f32([m_out], b_new).ok()?, format!("{base}.input_shift_bias"));
        Some((w_class, b2))
    }
}
