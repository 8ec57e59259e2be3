//! Winograd convolution: a 3×3 stride-1 conv may also run as Winograd F(2×2,3×3) or
//! F(4×4,3×3) (exact up to the transforms' documented rounding).
//!
//! What, one rule per variant:
//! - `winograd-f2`: `conv{…}(x, w[, b])` ⇒ `conv{…, algo=winograd-f2}(x, w[, b])`;
//! - `winograd-f4`: the same with `algo=winograd-f4`.
//!
//! Both forms stay in the e-class, and the epilogue rules ([`super::fuse`]) fuse activations
//! and residual adds into every variant alike, so extraction picks direct, F(2,3) or F(4,3)
//! per layer by each kernel's measured time.
//!
//! When: the conv is 2-D with a 3×3 kernel, stride 1, dilation 1 and one group
//! ([`ConvAttrs::winograd_eligible`]); any padding. It does not fire on strided, dilated,
//! grouped (depthwise) or 1×1 convs, nor on a conv that already names an algorithm.
//! `cnnc opt --no-winograd` leaves the family out ([`super::RuleOptions`]).
//!
//! Numerical effect: not bit-exact. The runtime computes `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` per tile:
//! the transforms' constants amplify f32 rounding, F(4,3)'s (up to 8 in Bᵀ, 1/24 in G) more
//! than F(2,3)'s (0, ±1, ½). ARCHITECTURE.md § Winograd convolution gives the measured error;
//! wherever a Winograd variant is chosen the -O1 bound is rel-L2 ≤ 1e-4 end to end, and the
//! report says so. The reference interpreter computes the direct sum for every algorithm.
//!
//! ```text
//! before: %c = conv{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1}(%x, %w, %b)
//! after:  %c = conv{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1, algo=winograd-f4}(%x, %w, %b)
//! ```

use cnnc_ir::{ConvAlgo, ConvAttrs, Graph, Op};
use egg::{Applier, EGraph, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};

use crate::analysis::CnnAnalysis;
use crate::analysis::attr_of;
use crate::lang::Cnn;

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    [("winograd-f2", ConvAlgo::Winograd2), ("winograd-f4", ConvAlgo::Winograd4)]
        .into_iter()
        .map(|(name, algo)| Rewrite::new(name, DirectConv(algo), AddVariant(algo)).expect("a valid rule"))
        .collect()
}

/// The direct, Winograd-eligible conv e-nodes of `class` lacking their `algo` variant: the
/// attributes, operand classes and attribute class of each.
fn candidates(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id, algo: ConvAlgo) -> Vec<(ConvAttrs, Vec<Id>, Id)> {
    let convs: Vec<(&ConvAttrs, &[Id], Id)> = egraph[class]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Cnn::Conv(children) => {
                let entry = attr_of(egraph, children[0])?;
                match &entry.op {
                    Op::Conv(a) => Some((a, &children[1..], children[0])),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    convs
        .iter()
        .filter(|(a, operands, _)| {
            a.algo == ConvAlgo::Direct
                && a.winograd_eligible()
                && !convs
                    .iter()
                    .any(|(b, o, _)| b.algo == algo && o == operands && **b == ConvAttrs { algo, ..(*a).clone() })
        })
        .map(|(a, operands, attr)| ((*a).clone(), operands.to_vec(), *attr))
        .collect()
}

/// Finds the classes holding a direct conv that lacks the variant (one match per class).
struct DirectConv(ConvAlgo);

impl Searcher<Cnn, CnnAnalysis> for DirectConv {
    fn search_eclass_with_limit(
        &self,
        egraph: &EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, Cnn>> {
        (limit > 0 && !candidates(egraph, eclass, self.0).is_empty()).then(|| SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

/// Adds the conv with `algo` next to each direct conv of the class.
struct AddVariant(ConvAlgo);

impl Applier<Cnn, CnnAnalysis> for AddVariant {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        _subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let mut changed = false;
        for (attrs, operands, attr_class) in candidates(egraph, eclass, self.0) {
            let Some(entry) = attr_of(egraph, attr_class).cloned() else { continue };
            let op = Op::Conv(ConvAttrs { algo: self.0, ..attrs });
            let attr = egraph.analysis.attrs.intern_tagged(&op, &entry.outputs, &entry.name, entry.proposal);
            let mut children = vec![egraph.add(Cnn::Attr(attr))];
            children.extend_from_slice(&operands);
            let node = egraph.add(Cnn::Conv(children.into_boxed_slice()));
            changed |= egraph.union(eclass, node);
        }
        if changed { vec![eclass] } else { Vec::new() }
    }
}

/// `graph` with every Winograd-eligible conv (plain or the base of a fused conv) set to run
/// with `algo`; the others unchanged. For tests and benchmarks that force one algorithm on
/// every layer it applies to; the result needs verifying like any rewritten graph.
pub fn force_conv_algo(graph: &Graph, algo: ConvAlgo) -> Graph {
    let mut out = graph.clone();
    let ids: Vec<_> = out.node_ids().collect();
    for id in ids {
        let attrs = match &mut out.node_mut(id).op {
            Op::Conv(a) => a,
            Op::Fused(f) => match &mut f.base {
                Op::Conv(a) => a,
                _ => continue,
            },
            _ => continue,
        };
        if attrs.winograd_eligible() {
            attrs.algo = algo;
        }
    }
    out
}

/// How many convs of `graph` (plain or fused) run with a Winograd algorithm.
pub fn winograd_layers(graph: &Graph) -> usize {
    graph
        .node_ids()
        .filter(|&id| match &graph.node(id).op {
            Op::Conv(a) => a.algo != ConvAlgo::Direct,
            Op::Fused(f) => matches!(&f.base, Op::Conv(a) if a.algo != ConvAlgo::Direct),
            _ => false,
        })
        .count()
}
