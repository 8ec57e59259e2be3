//! BatchNorm folding into the conv or Gemm that feeds it (exact up to rounding).
//!
//! What: `batchnorm(conv(x, w[, b]), s, t, m, v)` ⇒ `conv(x, w', b')` with, per output
//! channel `c`, `k = s[c] / √(v[c] + ε)`, `w'[c] = w[c] · k`, `b'[c] = (b[c] − m[c]) · k + t[c]`
//! (`b = 0` when the conv has none). The same for `conv-transpose`, whose weights are laid out
//! `[C_in, C_out / group, taps…]`: the weight of input channel `i` and column `j` feeds output
//! channel `(i / (C_in / group)) · (C_out / group) + j`. And for `gemm{α, β}(a, w[, c])`
//! followed by a BatchNorm over its `M` output columns (PyTorch's `Linear` → `BatchNorm1d`):
//! `w'` scales column `j` of `op(w)` by `k[j]`, and the result is `gemm{α, β=1}(a, w', c')` with
//! `c'[j] = (β·c[j] − m[j]) · k[j] + t[j]` (`c` one value per column, or a single value).
//!
//! When: the conv's weights (and bias) and all four BatchNorm parameters are constants of the
//! weight store, and the conv's output feeds the BatchNorm directly. It does not fire through a
//! non-linear op (`batchnorm(relu(conv(…)))`) or when the conv's weights are a runtime input.
//!
//! Numerical effect: the folded weights are computed in f64 and rounded once to f32; the conv
//! then sums `x·w'` instead of normalizing `Σ x·w`, a reordering whose difference is a few f32
//! ulps of the output (the soundness test bounds it at rel-L2 1e-5 on random inputs).
//!
//! ```text
//! before: %c = conv{…}(%x, %w, %b) : f32[1,8,16,16]
//!         %y = batchnorm{epsilon=1e-5}(%c, %s, %t, %m, %v) : f32[1,8,16,16]
//! after:  %y = conv{…}(%x, %w', %b') : f32[1,8,16,16]
//! ```

use cnnc_ir::Tensor;
use egg::{Applier, EGraph, Id, PatternAst, Rewrite, Subst, Symbol, rewrite};

use super::var;
use crate::analysis::CnnAnalysis;
use crate::analysis::{add_weight, attr_of, weight_of};
use crate::lang::Cnn;

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    vec![
        rewrite!("bn-fold-conv-bias"; "(batchnorm ?bn (conv ?c ?x ?w ?b) ?s ?t ?m ?v)" => { FoldBn { bias: true } }),
        rewrite!("bn-fold-conv"; "(batchnorm ?bn (conv ?c ?x ?w) ?s ?t ?m ?v)" => { FoldBn { bias: false } }),
        rewrite!("bn-fold-conv-transpose-bias";
            "(batchnorm ?bn (conv-transpose ?c ?x ?w ?b) ?s ?t ?m ?v)" => { FoldBn { bias: true } }),
        rewrite!("bn-fold-conv-transpose";
            "(batchnorm ?bn (conv-transpose ?c ?x ?w) ?s ?t ?m ?v)" => { FoldBn { bias: false } }),
        rewrite!("bn-fold-gemm-bias"; "(batchnorm ?bn (gemm ?c ?x ?w ?b) ?s ?t ?m ?v)" => { FoldBn { bias: true } }),
        rewrite!("bn-fold-gemm"; "(batchnorm ?bn (gemm ?c ?x ?w) ?s ?t ?m ?v)" => { FoldBn { bias: false } }),
    ]
}

struct FoldBn {
    bias: bool,
}

/// How weight elements map to output channels.
#[derive(Clone, Copy)]
enum Layout {
    /// `[C_out, …]`: element `i` feeds channel `i / per`.
    Conv,
    /// `[C_in, C_out / group, taps…]` with `group` groups.
    Transpose { group: usize },
    /// A Gemm's `B`: `[M, K]` when transposed, else `[K, M]`; the bias is scaled by `beta`.
    Gemm { trans_b: bool, beta: f32 },
}

impl Applier<Cnn, CnnAnalysis> for FoldBn {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let get = |egraph: &EGraph<Cnn, CnnAnalysis>, v: &str| weight_of(egraph, subst[var(v)]);
        let (Some(w), Some(s), Some(t), Some(m), Some(v)) =
            (get(egraph, "?w"), get(egraph, "?s"), get(egraph, "?t"), get(egraph, "?m"), get(egraph, "?v"))
        else {
            return Vec::new();
        };
        let b = if self.bias {
            match get(egraph, "?b") {
                Some(b) => Some(b),
                None => return Vec::new(),
            }
        } else {
            None
        };
        let Some(cnnc_ir::Op::BatchNorm { epsilon }) = attr_of(egraph, subst[var("?bn")]).map(|e| e.op.clone()) else {
            return Vec::new();
        };
        let layout = match attr_of(egraph, subst[var("?c")]).map(|e| &e.op) {
            Some(cnnc_ir::Op::Conv(_)) => Layout::Conv,
            Some(cnnc_ir::Op::ConvTranspose(a)) => Layout::Transpose { group: a.group },
            Some(&cnnc_ir::Op::Gemm { trans_b, beta, .. }) => Layout::Gemm { trans_b, beta },
            _ => return Vec::new(),
        };
        let key =
            format!("{rule_name}|{}|{}|{}|{}|{}|{:?}|{}", w.0, s.0, t.0, m.0, v.0, b.map(|b| b.0), epsilon.to_bits());
        let Some((w2, b2)) = fold(egraph, &key, [w, s, t, m, v], b, epsilon, layout) else { return Vec::new() };
        let attr = match layout {
            // The folded bias already holds β·c: the new Gemm adds it with β = 1.
            Layout::Gemm { .. } => {
                let Some(entry) = attr_of(egraph, subst[var("?c")]).cloned() else { return Vec::new() };
                let cnnc_ir::Op::Gemm { alpha, trans_a, trans_b, .. } = entry.op else { return Vec::new() };
                let op = cnnc_ir::Op::Gemm { alpha, beta: 1.0, trans_a, trans_b };
                let r = egraph.analysis.attrs.intern(&op, &entry.outputs, &entry.name);
                egraph.add(Cnn::Attr(r))
            }
            _ => subst[var("?c")],
        };
        let children = vec![attr, subst[var("?x")], w2, b2].into_boxed_slice();
        let conv = egraph.add(match layout {
            Layout::Conv => Cnn::Conv(children),
            Layout::Transpose { .. } => Cnn::ConvTranspose(children),
            Layout::Gemm { .. } => Cnn::Gemm(children),
        });
        if egraph.union(eclass, conv) { vec![eclass] } else { Vec::new() }
    }
}

/// The folded weight and bias classes (memoized by `key`, so re-applying the rule in later
/// iterations adds nothing); `None` when the shapes do not fit a per-channel fold.
fn fold(
    egraph: &mut EGraph<Cnn, CnnAnalysis>,
    key: &str,
    [w, s, t, m, v]: [crate::lang::WeightRef; 5],
    b: Option<crate::lang::WeightRef>,
    epsilon: f32,
    layout: Layout,
) -> Option<(Id, Id)> {
    if let Some(&(w2, b2)) = egraph.analysis.derived.get(key) {
        return Some((w2, b2));
    }
    let a = &egraph.analysis;
    let f = |r: crate::lang::WeightRef| a.weights.get(r.0 as usize).and_then(Tensor::as_f32);
    let (wv, sv, tv, mv, vv) = (f(w)?, f(s)?, f(t)?, f(m)?, f(v)?);
    let w_shape = a.weights[w.0 as usize].shape().to_vec();
    // Output channel of each weight element.
    let (channels, channel_of): (usize, Box<dyn Fn(usize) -> usize>) = match layout {
        Layout::Conv => {
            let channels = *w_shape.first()?;
            let per = wv.len().checked_div(channels)?;
            (channels, Box::new(move |i| i / per))
        }
        Layout::Transpose { group } => {
            let (c_in, c_out_g) = (*w_shape.first()?, *w_shape.get(1)?);
            let taps: usize = w_shape[2..].iter().product();
            let in_per_group = c_in.checked_div(group)?;
            (c_out_g * group, Box::new(move |i| (i / (c_out_g * taps) / in_per_group) * c_out_g + (i / taps) % c_out_g))
        }
        Layout::Gemm { trans_b, .. } => {
            let [rows, cols] = w_shape[..] else { return None };
            if trans_b { (rows, Box::new(move |i| i / cols)) } else { (cols, Box::new(move |i| i % cols)) }
        }
    };
    if channels == 0 || [sv.len(), tv.len(), mv.len(), vv.len()].iter().any(|&n| n != channels) {
        return None;
    }
    let bv: Vec<f32> = match (b, layout) {
        // A Gemm's C broadcasts over [N, M]: one value per column (`[M]`, `[1, M]`) or one value.
        (Some(b), Layout::Gemm { beta, .. }) => {
            let shape = a.weights[b.0 as usize].shape();
            let per_column = shape.last() == Some(&channels) && shape.iter().rev().skip(1).all(|&d| d == 1);
            let v = f(b)?;
            let scaled = |x: f32| (f64::from(beta) * f64::from(x)) as f32;
            match v {
                [x] if shape.iter().all(|&d| d == 1) => vec![scaled(*x); channels],
                _ if per_column => v.iter().map(|&x| scaled(x)).collect(),
                _ => return None,
            }
        }
        (Some(b), _) => f(b).filter(|x| x.len() == channels)?.to_vec(),
        (None, _) => vec![0.0; channels],
    };
    let k: Vec<f64> =
        (0..channels).map(|c| f64::from(sv[c]) / (f64::from(vv[c]) + f64::from(epsilon)).sqrt()).collect();
    let w_new: Vec<f32> = wv.iter().enumerate().map(|(i, &x)| (f64::from(x) * k[channel_of(i)]) as f32).collect();
    let b_new: Vec<f32> =
        (0..channels).map(|c| ((f64::from(bv[c]) - f64::from(mv[c])) * k[c] + f64::from(tv[c])) as f32).collect();
    let base = a.weight_names.get(w.0 as usize).cloned().unwrap_or_default();
    let w2 = add_weight(egraph, Tensor::from_f32(w_shape, w_new).ok()?, format!("{base}.bn_folded"));
    let b2 = add_weight(egraph, Tensor::from_f32([channels], b_new).ok()?, format!("{base}.bn_folded_bias"));
    egraph.analysis.derived.insert(key.to_owned(), (w2, b2));
    Some((w2, b2))
}
