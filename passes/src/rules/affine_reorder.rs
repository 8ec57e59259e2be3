//! A scalar affine `y · s + t` reordered as `(y + t/s) · s` (exact up to rounding), so that the
//! scale can fold into the conv that reads it ([`super::affine_input`] folds a scale into the
//! weights of any conv, padded or not, but a shift only into an unpadded one).
//!
//! What: `add(mul(y, s), t)` ⇒ `mul(add(y, t'), s)` with `t' = t / s`, in every operand order.
//! PP-LCNetV3's "learnable affine block" (`act(conv(…)) · s + t`) sits in front of padded
//! depthwise convs in ppocr_v4_det: after this rule the scale folds into the depthwise
//! weights and one element-wise pass (the shift) is left instead of two.
//!
//! When: `s` and `t` are single-value constants of the weight store (shape `[]` or all ones), `s`
//! is finite and non-zero and `t / s` finite, and the result has `y`'s type (no broadcast). Both
//! forms stay in the e-class: extraction keeps the reordered one only when a consumer folds the
//! scale (or it is otherwise no dearer).
//!
//! Numerical effect: `t / s` is computed in f64 and rounded once to f32; the result rounds
//! `y + t'` before the scale instead of `y · s` before the shift — a few ulps of `t`.
//!
//! ```text
//! before: %m = mul(%s, %y) : f32[1,48,160,160]          ; %s : f32[1] = [0.9]
//!         %a = add(%m, %t) : f32[1,48,160,160]          ; %t : f32[1] = [0.05]
//! after:  %a2 = add(%y, %t2) : f32[1,48,160,160]        ; %t2 : f32[1] = [0.0555…]
//!         %a = mul(%a2, %s) : f32[1,48,160,160]
//! ```

use cnnc_ir::{BinaryOp, Op, Tensor};
use egg::{Applier, EGraph, Id, Pattern, PatternAst, Rewrite, Subst, Symbol};

use super::var;
use crate::analysis::CnnAnalysis;
use crate::analysis::{add_weight, attr_of, weight_of};
use crate::lang::Cnn;

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let mut rules = Vec::new();
    for (mul_name, mul) in [("", "(binary ?mul ?y ?s)"), ("-scale-first", "(binary ?mul ?s ?y)")] {
        for (add_name, add) in
            [("", format!("(binary ?add {mul} ?t)")), ("-shift-first", format!("(binary ?add ?t {mul})"))]
        {
            let pattern: Pattern<Cnn> = add.parse().expect("a valid pattern");
            let name = format!("affine-reorder{mul_name}{add_name}");
            rules.push(Rewrite::new(name, pattern, Reorder).expect("a valid rule"));
        }
    }
    rules
}

struct Reorder;

/// The single f32 value of a constant of shape `[]` or all ones.
fn scalar(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id) -> Option<(f32, Vec<usize>)> {
    let w = weight_of(egraph, class)?;
    let t = egraph.analysis.weights.get(w.0 as usize)?;
    match t.as_f32()? {
        [v] if t.shape().iter().all(|&d| d == 1) => Some((*v, t.shape().to_vec())),
        _ => None,
    }
}

impl Applier<Cnn, CnnAnalysis> for Reorder {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let is = |v: &str, op: BinaryOp| attr_of(egraph, subst[var(v)]).map(|e| &e.op) == Some(&Op::Binary(op));
        if !(is("?add", BinaryOp::Add) && is("?mul", BinaryOp::Mul)) {
            return Vec::new();
        }
        let (y, out) = (subst[var("?y")], egraph[eclass].data.types.first().cloned());
        // No broadcast: `y`, `y · s` and the sum all have one type.
        if out.is_none() || egraph[y].data.types.first() != out.as_ref() {
            return Vec::new();
        }
        let (Some((s, _)), Some((t, t_shape))) = (scalar(egraph, subst[var("?s")]), scalar(egraph, subst[var("?t")]))
        else {
            return Vec::new();
        };
        let shift = (f64::from(t) / f64::from(s)) as f32;
        if !(s.is_finite() && s != 0.0 && shift.is_finite()) {
            return Vec::new();
        }
        let base = weight_of(egraph, subst[var("?t")])
            .and_then(|w| egraph.analysis.weight_names.get(w.0 as usize).cloned())
            .unwrap_or_default();
        let key = format!("{rule_name}|{s:?}|{t:?}|{t_shape:?}");
        let shift_class = match egraph.analysis.derived.get(&key) {
            Some(&(class, _)) => class,
            None => {
                let Ok(tensor) = Tensor::from_f32(t_shape, vec![shift]) else { return Vec::new() };
                let class = add_weight(egraph, tensor, format!("{base}.over_scale"));
                egraph.analysis.derived.insert(key, (class, class));
                class
            }
        };
        let add = egraph.add(Cnn::Binary(vec![subst[var("?add")], y, shift_class].into_boxed_slice()));
        let mul = egraph.add(Cnn::Binary(vec![subst[var("?mul")], add, subst[var("?s")]].into_boxed_slice()));
        if egraph.union(eclass, mul) { vec![eclass] } else { Vec::new() }
    }
}
