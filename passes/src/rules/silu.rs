//! SiLU and Swish spelled out as Sigmoid and Mul, recognized as the one op `swish{beta}`, which
//! `fuse-activation` can then fold into the producing conv or Gemm.
//!
//! What, six rules:
//! - `silu`, `silu-sx`: `x · sigmoid(x)` and `sigmoid(x) · x` ⇒ `swish{beta=1}(x)` (YOLOv5,
//!   YOLOv8 and YOLOX exports write every SiLU this way);
//! - `swish`, `swish-sx`, `swish-bx`, `swish-sx-bx`: `x · sigmoid(x · β)` with either operand
//!   order of both products (`-sx`: the sigmoid first; `-bx`: β first) ⇒ `swish{beta=β}(x)`.
//!
//! When: the products are `mul`s, the same value `x` feeds the sigmoid (or its product) and the
//! outer product, β is a constant with one f32 element, and the result has `x`'s type (nothing
//! broadcasts). It does not fire when the outer product's other factor is a different value
//! than the sigmoid's input (`y · sigmoid(x)`, a gate), on a sigmoid of a non-constant scale
//! (`x · sigmoid(x · s)` with `s` a tensor computed at run time), on `add`/`div` in place of a
//! product, or on a β of several elements (a per-channel scale).
//!
//! Numerical effect: the reference computes `x · σ(fl(β·x))` in f64 and rounds once, where the
//! spelled-out chain rounds σ and the product separately (≤ 1 ulp apart). The JIT kernels compute
//! `fl(β·x)`, the same inline sigmoid and `fl(x · s)` as the separate sigmoid and mul kernels do,
//! so compiled outputs are bit for bit those of the unrewritten graph.
//!
//! ```text
//! before: %s = sigmoid(%x) : f32[1,32,80,80] ; %y = mul(%x, %s) : f32[1,32,80,80]
//! after:  %y = swish{beta=1}(%x) : f32[1,32,80,80]
//! ```

use cnnc_ir::{BinaryOp, Op, UnaryOp};
use egg::{EGraph, Id, Pattern, Rewrite, Subst};

use super::{Decline, Declining, var};
use crate::analysis::CnnAnalysis;
use crate::analysis::{attr_of, weight_of};
use crate::lang::Cnn;

/// The rules of this family.
#[rustfmt::skip]
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let rule = |name: &str, pattern: &str, beta| {
        let pattern: Pattern<Cnn> = pattern.parse().expect("a valid pattern");
        Rewrite::new(name, pattern, Declining(Swish { beta })).expect("a valid rule")
    };
    vec![
        rule("silu",        "(binary ?mul ?x (unary ?sig ?x))", false),
        rule("silu-sx",     "(binary ?mul (unary ?sig ?x) ?x)", false),
        rule("swish",       "(binary ?mul ?x (unary ?sig (binary ?mulb ?x ?beta)))", true),
        rule("swish-sx",    "(binary ?mul (unary ?sig (binary ?mulb ?x ?beta)) ?x)", true),
        rule("swish-bx",    "(binary ?mul ?x (unary ?sig (binary ?mulb ?beta ?x)))", true),
        rule("swish-sx-bx", "(binary ?mul (unary ?sig (binary ?mulb ?beta ?x)) ?x)", true),
    ]
}

/// The applier; `beta` says whether the pattern has the inner product by `?beta`.
struct Swish {
    beta: bool,
}

/// The single f32 value of a weight class, if it is one.
fn scalar(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id) -> Option<f32> {
    let w = weight_of(egraph, class)?;
    match egraph.analysis.weights.get(w.0 as usize)?.as_f32()? {
        [v] => Some(*v),
        _ => None,
    }
}

impl Decline for Swish {
    fn apply(&self, egraph: &mut EGraph<Cnn, CnnAnalysis>, eclass: Id, subst: &Subst) -> Option<Id> {
        let op = |v: &str| attr_of(egraph, subst[var(v)]).map(|e| &e.op);
        let mul = |v: &str| matches!(op(v), Some(Op::Binary(BinaryOp::Mul)));
        if !mul("?mul") || !matches!(op("?sig"), Some(Op::Unary(UnaryOp::Sigmoid))) {
            return None;
        }
        let beta = if self.beta {
            if !mul("?mulb") {
                return None;
            }
            scalar(egraph, subst[var("?beta")])?
        } else {
            1.0
        };
        // The result keeps x's type: nothing broadcasts, so it is element-wise in x.
        let x_ty = egraph[subst[var("?x")]].data.types.first()?;
        let out_ty = egraph[eclass].data.types.first()?.clone();
        if *x_ty != out_ty || out_ty.dtype != cnnc_ir::DType::F32 {
            return None;
        }
        let name = attr_of(egraph, subst[var("?mul")]).map(|e| e.name.clone()).unwrap_or_default();
        let attr = egraph.analysis.attrs.intern(&Op::Unary(UnaryOp::Swish { beta }), &[out_ty], &name);
        let attr = egraph.add(Cnn::Attr(attr));
        let swish = egraph.add(Cnn::Unary(vec![attr, subst[var("?x")]].into_boxed_slice()));
        egraph.union(eclass, swish).then_some(eclass)
    }
}
