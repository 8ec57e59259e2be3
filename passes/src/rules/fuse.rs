//! Conv/Gemm/MatMul epilogue fusion: the activation after a conv, and a residual add into it,
//! become one `fused-…` op whose kernel applies them in registers before the store (exact).
//!
//! What, two rules:
//! - `fuse-activation`: `act(base(…))` ⇒ `fused-base{act}(…)` for `base` a conv, gemm or
//!   matmul, and `act(fused-base{residual}(…, r))` ⇒ `fused-base{act, residual}(…, r)`; `act`
//!   is one of [`Fused::ACTIVATIONS`]: ReLU, LeakyReLU, Clip (ReLU6), HardSigmoid, HardSwish,
//!   Sigmoid or Swish (SiLU, which the `silu` rules recognize in Sigmoid·Mul).
//! - `fuse-residual`: `base(…) + r` (either operand order) ⇒ `fused-base{residual}(…, r)`.
//!
//! When: the activation is one a kernel applies inline ([`Fused::fusible_act`]); the residual
//! has exactly the base's output type (an add that broadcasts does not fuse) and the base has
//! no residual yet; the activation comes after the residual, never before (`act(conv) + r`
//! does not fuse: the kernel computes `act(acc + r)`). It does not fire on PReLU (its slope is
//! a tensor, not an attribute), on conv-transpose (no fused kernel), or on a conv whose output
//! is f32 but whose activation is, e.g., Tanh. A base with other consumers keeps its plain
//! form in the e-class too; extraction weighs one fused kernel plus the plain base against the
//! base plus the separate element-wise kernel.
//!
//! Numerical effect: none. The fused kernel adds the residual and applies the activation to
//! the f32 value the base would have stored, in the same order and with the same operations
//! as the separate kernels (`Epilogue`, runtime/src/codegen/mod.rs).
//!
//! ```text
//! before: %c = conv{…}(%x, %w, %b) : f32[1,64,56,56]
//!         %s = add(%c, %r) : f32[1,64,56,56]
//!         %y = relu(%s) : f32[1,64,56,56]
//! after:  %y = fused-conv{…, act=relu, residual=true}(%x, %w, %b, %r) : f32[1,64,56,56]
//! ```

use cnnc_ir::{BinaryOp, Fused, Op};
use egg::{Applier, EGraph, Id, Pattern, PatternAst, Rewrite, Subst, Symbol};

use super::var;
use crate::analysis::CnnAnalysis;
use crate::analysis::attr_of;
use crate::lang::{Cnn, ProposalId};

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let act: Pattern<Cnn> = "(unary ?act ?y)".parse().expect("a valid pattern");
    let add: Pattern<Cnn> = "(binary ?add ?a ?b)".parse().expect("a valid pattern");
    vec![
        Rewrite::new("fuse-activation", act, FuseActivation).expect("a valid rule"),
        Rewrite::new("fuse-residual", add, FuseResidual).expect("a valid rule"),
    ]
}

/// A node of `class` that can take an epilogue: its op, operand classes and node name.
struct Base {
    op: Op,
    operands: Vec<Id>,
    name: String,
    /// The approximate proposal the base is a factor of, which its fused forms stay.
    proposal: Option<ProposalId>,
}

/// The base-able nodes of `class` (conv, gemm, matmul, or a fused op passing `keep`).
fn bases(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id, keep: impl Fn(&Fused) -> bool) -> Vec<Base> {
    egraph[class]
        .nodes
        .iter()
        .filter_map(|n| {
            let children = n.op_children()?;
            let entry = attr_of(egraph, children[0])?;
            let ok = match &entry.op {
                Op::Conv(_) | Op::Gemm { .. } | Op::MatMul => true,
                Op::Fused(f) => keep(f),
                _ => false,
            };
            ok.then(|| Base {
                op: entry.op.clone(),
                operands: children[1..].to_vec(),
                name: entry.name.clone(),
                proposal: entry.proposal,
            })
        })
        .collect()
}

/// Adds `(fused @f operands…)` with the output type of `eclass` and unions it into `eclass`.
fn add_fused(
    egraph: &mut EGraph<Cnn, CnnAnalysis>,
    eclass: Id,
    f: Fused,
    operands: &[Id],
    (name, proposal): (&str, Option<ProposalId>),
) -> bool {
    let Some(out) = egraph[eclass].data.types.first().cloned() else { return false };
    let attr = egraph.analysis.attrs.intern_tagged(&Op::Fused(Box::new(f)), &[out], name, proposal);
    let mut children = vec![egraph.add(Cnn::Attr(attr))];
    children.extend_from_slice(operands);
    let node = egraph.add(Cnn::Fused(children.into_boxed_slice()));
    egraph.union(eclass, node)
}

struct FuseActivation;

impl Applier<Cnn, CnnAnalysis> for FuseActivation {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let Some(Op::Unary(act)) = attr_of(egraph, subst[var("?act")]).map(|e| e.op.clone()) else {
            return Vec::new();
        };
        if !Fused::fusible_act(&act) {
            return Vec::new();
        }
        let mut changed = false;
        for base in bases(egraph, subst[var("?y")], |f| f.act.is_none()) {
            let f = match base.op {
                Op::Fused(f) => Fused { act: Some(act), ..*f },
                op => Fused { base: op, act: Some(act), residual: false },
            };
            changed |= add_fused(egraph, eclass, f, &base.operands, (&base.name, base.proposal));
        }
        if changed { vec![eclass] } else { Vec::new() }
    }
}

struct FuseResidual;

impl Applier<Cnn, CnnAnalysis> for FuseResidual {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        if !matches!(attr_of(egraph, subst[var("?add")]).map(|e| &e.op), Some(Op::Binary(BinaryOp::Add))) {
            return Vec::new();
        }
        let Some(out) = egraph[eclass].data.types.first().cloned() else { return Vec::new() };
        let mut changed = false;
        for (base_class, residual) in [(subst[var("?a")], subst[var("?b")]), (subst[var("?b")], subst[var("?a")])] {
            // No broadcasting: both operands have the add's type.
            let same = |c: Id| egraph[c].data.types.first() == Some(&out);
            if !(same(base_class) && same(residual)) {
                continue;
            }
            for base in bases(egraph, base_class, |_| false) {
                let mut operands = base.operands;
                operands.push(residual);
                let f = Fused { base: base.op, act: None, residual: true };
                changed |= add_fused(egraph, eclass, f, &operands, (&base.name, base.proposal));
            }
        }
        if changed { vec![eclass] } else { Vec::new() }
    }
}
