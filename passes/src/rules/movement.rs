//! Data-movement cancellation and canonicalization (exact: no arithmetic at all).
//!
//! What, one rule each:
//! - `transpose-transpose`: `transpose{p}(transpose{q}(x))` ⇒ `transpose{q∘p}(x)`, and ⇒ `x`
//!   when the composed permutation is the identity (an NHWC export's NCHW→NHWC→NCHW pair).
//! - `transpose-identity`: `transpose{0,1,…}(x)` ⇒ `x`.
//! - `reshape-reshape`: `reshape(reshape(x))` ⇒ `reshape(x)` (the outer shape).
//! - `noop-reshape`, `noop-expand`, `noop-cast`: a reshape or expand to `x`'s own shape, a
//!   cast to `x`'s own dtype ⇒ `x`.
//! - `noop-pad`, `noop-slice`, `noop-concat`: a pad of all zeros, a slice that keeps every
//!   element in order, a concat of one input ⇒ `x`.
//!
//! When: always for these shapes; the result has the type of the node it replaces (checked).
//! Identity nodes never reach the IR (the importer drops them). Not done: transpose/reshape
//! commuting with element-wise ops, and cast chains (f32 → i64 → f32 is not the identity).
//!
//! Numerical effect: none (bit-identical).
//!
//! ```text
//! before: %t = transpose{perm=[0, 2, 3, 1]}(%x) : f32[1,8,8,3]
//!         %u = transpose{perm=[0, 3, 1, 2]}(%t) : f32[1,3,8,8]
//!         %r = reshape{shape=[1, 192]}(%u) ; %s = reshape{shape=[1, 3, 64]}(%r)
//! after:  %s = reshape{shape=[1, 3, 64]}(%x)
//! ```

use cnnc_ir::Op;
use egg::{Applier, EGraph, Id, Pattern, PatternAst, Rewrite, Subst, Symbol};

use super::var;
use crate::analysis::CnnAnalysis;
use crate::analysis::attr_of;
use crate::lang::Cnn;

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let rule = |name: &str, pattern: &str, applier: Move| {
        let pattern: Pattern<Cnn> = pattern.parse().expect("a valid pattern");
        Rewrite::new(name, pattern, applier).expect("a valid rule")
    };
    vec![
        rule("transpose-transpose", "(transpose ?a (transpose ?b ?x))", Move::TransposeTranspose),
        rule("transpose-identity", "(transpose ?a ?x)", Move::Noop),
        rule("reshape-reshape", "(reshape ?a (reshape ?b ?x))", Move::ReshapeReshape),
        rule("noop-reshape", "(reshape ?a ?x)", Move::Noop),
        rule("noop-expand", "(expand ?a ?x)", Move::Noop),
        rule("noop-cast", "(cast ?a ?x)", Move::Noop),
        rule("noop-pad", "(pad ?a ?x)", Move::Noop),
        rule("noop-slice", "(slice ?a ?x)", Move::Noop),
        rule("noop-concat", "(concat ?a ?x)", Move::Noop),
    ]
}

#[derive(Clone, Copy)]
enum Move {
    TransposeTranspose,
    ReshapeReshape,
    /// The op (attribute `?a`) leaves `?x` as it is.
    Noop,
}

/// Whether `op` on an input of `x`'s type returns that input unchanged (its type is checked
/// by the caller).
fn is_noop(op: &Op, shape: &[usize]) -> bool {
    match op {
        Op::Transpose { perm } => perm.iter().enumerate().all(|(i, &p)| i == p),
        // Same output type as input: nothing to do.
        Op::Reshape { .. } | Op::Expand { .. } | Op::Cast { .. } | Op::Concat { .. } => true,
        Op::Pad { pads, .. } => pads.iter().all(|&p| p == 0),
        Op::Slice { axes } => {
            axes.iter().all(|a| a.step == 1 && a.start == 0 && shape.get(a.axis).is_some_and(|&n| a.end >= n as i64))
        }
        _ => false,
    }
}

impl Applier<Cnn, CnnAnalysis> for Move {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let x = subst[var("?x")];
        let Some(out) = egraph[eclass].data.types.first().cloned() else { return Vec::new() };
        let Some(outer) = attr_of(egraph, subst[var("?a")]).cloned() else { return Vec::new() };
        let x_ty = egraph[x].data.types.first().cloned();
        let new = match self {
            Move::Noop => {
                if x_ty.as_ref() != Some(&out) || !is_noop(&outer.op, &out.shape) {
                    return Vec::new();
                }
                x
            }
            Move::TransposeTranspose => {
                let inner = attr_of(egraph, subst[var("?b")]).map(|e| e.op.clone());
                let (Op::Transpose { perm: p }, Some(Op::Transpose { perm: q })) = (&outer.op, inner) else {
                    return Vec::new();
                };
                // out axis i = inner axis p[i] = x axis q[p[i]].
                let Some(perm) = p.iter().map(|&i| q.get(i).copied()).collect::<Option<Vec<usize>>>() else {
                    return Vec::new();
                };
                if perm.iter().enumerate().all(|(i, &a)| i == a) {
                    if x_ty.as_ref() != Some(&out) {
                        return Vec::new();
                    }
                    x
                } else {
                    let attr = egraph.analysis.attrs.intern(&Op::Transpose { perm }, &[out], &outer.name);
                    let attr = egraph.add(Cnn::Attr(attr));
                    egraph.add(Cnn::Transpose(vec![attr, x].into_boxed_slice()))
                }
            }
            Move::ReshapeReshape => {
                let inner = attr_of(egraph, subst[var("?b")]).map(|e| e.op.clone());
                if !matches!((&outer.op, inner), (Op::Reshape { .. }, Some(Op::Reshape { .. }))) {
                    return Vec::new();
                }
                egraph.add(Cnn::Reshape(vec![subst[var("?a")], x].into_boxed_slice()))
            }
        };
        if egraph.union(eclass, new) { vec![eclass] } else { Vec::new() }
    }
}
