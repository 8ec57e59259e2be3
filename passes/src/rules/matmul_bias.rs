//! A 2-D MatMul followed by a bias add becomes one Gemm (exact).
//!
//! What: `matmul(a, b) + c` (either operand order) ⇒ `gemm{alpha=1, beta=1}(a, b, c)`, so the
//! bias is added in the product's kernel and the add's pass over the output disappears (and
//! the Gemm can then take a fused activation, see [`super::fuse`]). Keras and TensorFlow
//! exports write every dense layer this way (mtcnn's `MatMul` + `Add`).
//!
//! When: `a` is `[M, K]`, `b` is `[K, N]`, and `c` is a constant of the weight store shaped
//! `[N]`, `[1, N]` or `[M, N]` (Gemm broadcasts C unidirectionally to `[M, N]`), so the sum
//! has the product's type. It does not fire for batched (3-D+) matmuls, a runtime `c`, or a
//! `c` that would broadcast the product to a bigger shape.
//!
//! Numerical effect: none beyond reordering: the Gemm kernel adds `1·c` to the f32 product,
//! as the add did.
//!
//! ```text
//! before: %m = matmul(%x, %w) : f32[1,128] ; %y = add(%m, %b) : f32[1,128]   ; %b : f32[128]
//! after:  %y = gemm{alpha=1.0, beta=1.0, trans-a=false, trans-b=false}(%x, %w, %b) : f32[1,128]
//! ```

use cnnc_ir::{BinaryOp, Op};
use egg::{Applier, EGraph, Id, Pattern, PatternAst, Rewrite, Subst, Symbol};

use super::var;
use crate::analysis::CnnAnalysis;
use crate::analysis::{attr_of, weight_of};
use crate::lang::Cnn;

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let left: Pattern<Cnn> = "(binary ?op (matmul ?m ?a ?b) ?c)".parse().expect("a valid pattern");
    let right: Pattern<Cnn> = "(binary ?op ?c (matmul ?m ?a ?b))".parse().expect("a valid pattern");
    vec![
        Rewrite::new("matmul-bias-to-gemm", left, MatMulBias).expect("a valid rule"),
        Rewrite::new("matmul-bias-to-gemm-swapped", right, MatMulBias).expect("a valid rule"),
    ]
}

struct MatMulBias;

impl Applier<Cnn, CnnAnalysis> for MatMulBias {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        if attr_of(egraph, subst[var("?op")]).map(|e| &e.op) != Some(&Op::Binary(BinaryOp::Add)) {
            return Vec::new();
        }
        let ty = |v: &str| egraph[subst[var(v)]].data.types.first().cloned();
        let (Some(a), Some(b), Some(c), Some(out)) =
            (ty("?a"), ty("?b"), ty("?c"), egraph[eclass].data.types.first().cloned())
        else {
            return Vec::new();
        };
        let (m, n) = match (&a.shape[..], &b.shape[..]) {
            (&[m, k], &[k2, n]) if k == k2 => (m, n),
            _ => return Vec::new(),
        };
        let c_ok = matches!(&c.shape[..], [cn] if *cn == n) || c.shape == [1, n] || c.shape == [m, n];
        if !c_ok || out.shape != [m, n] || weight_of(egraph, subst[var("?c")]).is_none() {
            return Vec::new();
        }
        let name = attr_of(egraph, subst[var("?m")]).map(|e| e.name.clone()).unwrap_or_default();
        let gemm = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false };
        let attr = egraph.analysis.attrs.intern(&gemm, &[out], &name);
        let attr = egraph.add(Cnn::Attr(attr));
        let node =
            egraph.add(Cnn::Gemm(vec![attr, subst[var("?a")], subst[var("?b")], subst[var("?c")]].into_boxed_slice()));
        if egraph.union(eclass, node) { vec![eclass] } else { Vec::new() }
    }
}
