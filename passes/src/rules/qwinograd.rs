//! Integer Winograd: a quantized 3×3 stride-1 conv may also run as Winograd F(2×2, 3×3) in
//! integers, which gives the direct sum exactly.
//!
//! What, one rule:
//! - `qlinear-winograd-f2`: `qlinear-conv{…}(x, w[, b])` ⇒
//!   `qlinear-conv{…, algo=winograd-f2}(x, w[, b])`.
//!
//! Both forms stay in the e-class; extraction picks per layer by each kernel's measured time.
//!
//! When: the quantized op's base is a direct conv that is 2-D with a 3×3 kernel, stride 1,
//! dilation 1 and one group ([`ConvAttrs::winograd_eligible`]); any padding. Always offered:
//! the rewrite is exact, so `--no-winograd` (which keeps the f32 Winograd rounding out of
//! `-O1`) does not remove it.
//!
//! Numerical effect: none. With `G' = 2G`, `Aᵀ[(G' g G'ᵀ) ⊙ (Bᵀ d B)]A = 4·Σ` holds in integers
//! (every transform matrix is integer), and the int8 kernel (runtime
//! `microkernel/int8/winograd.rs`) computes it modulo 2³² and divides by 4 exactly; it runs
//! only layers whose sums keep `|4·Σ| < 2³¹` and computes the others directly. The reference
//! interpreter computes the direct sum for every algorithm, and the two agree bit for bit.
//!
//! ```text
//! before: %y = qlinear-conv{kernel=[3, 3], …, group=1, x-scales=[…], …}(%x, %w, %b)
//! after:  %y = qlinear-conv{kernel=[3, 3], …, group=1, algo=winograd-f2, x-scales=[…], …}(%x, %w, %b)
//! ```

use cnnc_ir::{ConvAlgo, Op, QLinear};
use egg::{Applier, EGraph, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};

use crate::analysis::{CnnAnalysis, attr_of};
use crate::lang::Cnn;

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    vec![Rewrite::new("qlinear-winograd-f2", DirectQConv, AddWinograd).expect("a valid rule")]
}

/// The quantized ops of `class` over a direct, Winograd-eligible conv that lack their
/// `Winograd2` variant: the op with the variant's base, the operand classes and the attribute
/// class of each.
fn candidates(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id) -> Vec<(QLinear, Vec<Id>, Id)> {
    let qs: Vec<(&QLinear, &[Id], Id)> = egraph[class]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Cnn::QLinear(children) => match &attr_of(egraph, children[0])?.op {
                Op::QLinear(q) => Some((&**q, &children[1..], children[0])),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let variant = |q: &QLinear| match &q.base {
        Op::Conv(a) if a.algo == ConvAlgo::Direct && a.winograd_eligible() => {
            let mut v = q.clone();
            v.base = Op::Conv(cnnc_ir::ConvAttrs { algo: ConvAlgo::Winograd2, ..a.clone() });
            Some(v)
        }
        _ => None,
    };
    qs.iter()
        .filter_map(|(q, operands, attr)| {
            let v = variant(q)?;
            let present = qs.iter().any(|(p, o, _)| o == operands && **p == v);
            (!present).then(|| (v, operands.to_vec(), *attr))
        })
        .collect()
}

/// Finds the classes holding a direct quantized conv that lacks the variant.
struct DirectQConv;

impl Searcher<Cnn, CnnAnalysis> for DirectQConv {
    fn search_eclass_with_limit(
        &self,
        egraph: &EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, Cnn>> {
        (limit > 0 && !candidates(egraph, eclass).is_empty()).then(|| SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

/// Adds the Winograd variant next to each direct quantized conv of the class.
struct AddWinograd;

impl Applier<Cnn, CnnAnalysis> for AddWinograd {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        _subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let mut changed = false;
        for (q, operands, attr_class) in candidates(egraph, eclass) {
            let Some(entry) = attr_of(egraph, attr_class).cloned() else { continue };
            let op = Op::QLinear(Box::new(q));
            let attr = egraph.analysis.attrs.intern_tagged(&op, &entry.outputs, &entry.name, entry.proposal);
            let mut children = vec![egraph.add(Cnn::Attr(attr))];
            children.extend_from_slice(&operands);
            let node = egraph.add(Cnn::QLinear(children.into_boxed_slice()));
            changed |= egraph.union(eclass, node);
        }
        if changed { vec![eclass] } else { Vec::new() }
    }
}
