//! HardSwish spelled out as Add/Clip/Mul/Div, recognized as the one op (exact up to rounding).
//!
//! What: `(y · clip(y + 3, 0, 6)) / 6` ⇒ `hard-swish(y)`, with either operand order of the
//! add and of the product (exporters such as PaddlePaddle's write it this way).
//!
//! When: the constants are scalars (one element) equal to 3 and 6, the clip bounds are exactly
//! 0 and 6, and the same value `y` feeds the add and the product. It does not fire on other
//! constants (e.g. `clip(y + 3, 0, 6) / 6` alone is a HardSigmoid, another rule) or when the
//! product's other factor is a different value.
//!
//! Numerical effect: `hard-swish(y) = y · clamp(y/6 + 0.5, 0, 1)` rounds differently from the
//! spelled-out chain (three f32 roundings instead of four); a few ulps.
//!
//! ```text
//! before: %a = add(%y, %three) ; %c = clip{min=0, max=6}(%a) ; %m = mul(%y, %c) ; %d = div(%m, %six)
//! after:  %d = hard-swish(%y)
//! ```

use cnnc_ir::{BinaryOp, Op, UnaryOp};
use egg::{Applier, EGraph, Id, Pattern, PatternAst, Rewrite, Subst, Symbol};

use super::var;
use crate::analysis::CnnAnalysis;
use crate::analysis::{attr_of, weight_of};
use crate::lang::Cnn;

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let mut rules = Vec::new();
    for (add_name, add) in [("", "(binary ?add ?y ?three)"), ("-3y", "(binary ?add ?three ?y)")] {
        for (mul_name, mul) in
            [("", "(binary ?mul ?y (unary ?clip ADD))"), ("-cy", "(binary ?mul (unary ?clip ADD) ?y)")]
        {
            let pattern: Pattern<Cnn> =
                format!("(binary ?div {} ?six)", mul.replace("ADD", add)).parse().expect("a valid pattern");
            let name = format!("hardswish-spelled-out{add_name}{mul_name}");
            rules.push(Rewrite::new(name, pattern, HardSwish).expect("a valid rule"));
        }
    }
    rules
}

struct HardSwish;

/// The single f32 value of a weight class, if it is one.
fn scalar(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id) -> Option<f32> {
    let w = weight_of(egraph, class)?;
    match egraph.analysis.weights.get(w.0 as usize)?.as_f32()? {
        [v] => Some(*v),
        _ => None,
    }
}

impl Applier<Cnn, CnnAnalysis> for HardSwish {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let op = |v: &str| attr_of(egraph, subst[var(v)]).map(|e| e.op.clone());
        let ok = matches!(op("?add"), Some(Op::Binary(BinaryOp::Add)))
            && matches!(op("?mul"), Some(Op::Binary(BinaryOp::Mul)))
            && matches!(op("?div"), Some(Op::Binary(BinaryOp::Div)))
            && matches!(op("?clip"), Some(Op::Unary(UnaryOp::Clip { min, max })) if min == 0.0 && max == 6.0)
            && scalar(egraph, subst[var("?three")]) == Some(3.0)
            && scalar(egraph, subst[var("?six")]) == Some(6.0);
        // The result keeps y's type (no broadcasting by the scalars).
        let y_ty = egraph[subst[var("?y")]].data.types.first().cloned();
        let out_ty = egraph[eclass].data.types.first().cloned();
        let (true, Some(y_ty), Some(out_ty)) = (ok, y_ty, out_ty) else { return Vec::new() };
        if y_ty != out_ty {
            return Vec::new();
        }
        let name = attr_of(egraph, subst[var("?div")]).map(|e| e.name.clone()).unwrap_or_default();
        let attr = egraph.analysis.attrs.intern(&Op::Unary(UnaryOp::HardSwish), &[out_ty], &name);
        let attr = egraph.add(Cnn::Attr(attr));
        let hs = egraph.add(Cnn::Unary(vec![attr, subst[var("?y")]].into_boxed_slice()));
        if egraph.union(eclass, hs) { vec![eclass] } else { Vec::new() }
    }
}
