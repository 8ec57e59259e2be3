//! An explicit `Pad` folded into the conv or pooling window that reads it (exact).
//!
//! What, one rule per consumer:
//! - `pad-fold-conv`: `conv{pads=P}(pad{constant 0, Q}(x), w[, b])` ⇒ `conv{pads=P+Q}(x, w[, b])`
//!   (a conv's own padding is zeros);
//! - `pad-fold-avg-pool`: the same into an `avg-pool` with `count-include-pad=true` (its
//!   padding counts as zeros in the mean);
//! - `pad-fold-max-pool`: a pad with value `-inf` into a `max-pool` (its padding never wins).
//!
//! When: the pad is constant-mode with the right value, pads only spatial axes (batch and
//! channel pads are 0) and never crops (no negative pads). It does not fire for reflect/edge
//! padding, a non-zero constant before a conv, or a zero pad before a max-pool or an avg-pool
//! that excludes padding from its count. Exporters (TensorFlow's `SAME` padding, PyTorch's
//! asymmetric `ZeroPad2d`) write pads this way.
//!
//! Numerical effect: none — the kernel reads the same zeros (or -∞) without the copy.
//!
//! ```text
//! before: %p = pad{pads=[0, 0, 1, 1, 0, 0, 2, 2], mode=constant, value=0.0}(%x) : f32[1,3,11,11]
//!         %c = conv{kernel=[3, 3], strides=[2, 2], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%p, %w)
//! after:  %c = conv{kernel=[3, 3], strides=[2, 2], dilations=[1, 1], pads=[1, 1, 2, 2], group=1}(%x, %w)
//! ```

use cnnc_ir::{Op, PadMode};
use egg::{Applier, EGraph, Id, Pattern, PatternAst, Rewrite, Subst, Symbol};

use super::var;
use crate::analysis::CnnAnalysis;
use crate::analysis::attr_of;
use crate::lang::Cnn;

/// The rules of this family.
pub fn rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let rule = |name: &str, pattern: &str, operands: &'static [&'static str]| {
        let pattern: Pattern<Cnn> = pattern.parse().expect("a valid pattern");
        Rewrite::new(name, pattern, FoldPad { operands }).expect("a valid rule")
    };
    vec![
        rule("pad-fold-conv", "(conv ?c (pad ?p ?x) ?w ?b)", &["?w", "?b"]),
        rule("pad-fold-conv-no-bias", "(conv ?c (pad ?p ?x) ?w)", &["?w"]),
        rule("pad-fold-avg-pool", "(avg-pool ?c (pad ?p ?x))", &[]),
        rule("pad-fold-max-pool", "(max-pool ?c (pad ?p ?x))", &[]),
    ]
}

/// The consumer's operands after its padded input, by pattern variable.
struct FoldPad {
    operands: &'static [&'static str],
}

/// `pads` (IR order `[begin…, end…]` over the spatial axes) plus the spatial part of a
/// pad's `[begin…, end…]` over all `rank` axes, if the pad leaves batch and channels alone
/// and never crops.
fn merged(pads: &[usize], pad: &[i64], rank: usize) -> Option<Vec<usize>> {
    let ns = rank.checked_sub(2)?;
    if pad.len() != 2 * rank || pads.len() != 2 * ns || pad.iter().any(|&p| p < 0) {
        return None;
    }
    if pad[0] != 0 || pad[1] != 0 || pad[rank] != 0 || pad[rank + 1] != 0 {
        return None;
    }
    let extra = |side: usize, i: usize| pad[side * rank + 2 + i] as usize;
    Some((0..2 * ns).map(|j| pads[j] + extra(j / ns, j % ns)).collect())
}

impl Applier<Cnn, CnnAnalysis> for FoldPad {
    fn apply_one(
        &self,
        egraph: &mut EGraph<Cnn, CnnAnalysis>,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Cnn>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let Some(Op::Pad { pads: pad, mode: PadMode::Constant, value }) =
            attr_of(egraph, subst[var("?p")]).map(|e| e.op.clone())
        else {
            return Vec::new();
        };
        let Some(consumer) = attr_of(egraph, subst[var("?c")]).cloned() else { return Vec::new() };
        let Some(rank) = egraph[subst[var("?x")]].data.types.first().map(|t| t.shape.len()) else {
            return Vec::new();
        };
        let op = match consumer.op {
            Op::Conv(mut a) if value == 0.0 => {
                let Some(p) = merged(&a.pads, &pad, rank) else { return Vec::new() };
                a.pads = p;
                Op::Conv(a)
            }
            Op::AvgPool { mut pool, count_include_pad: true } if value == 0.0 => {
                let Some(p) = merged(&pool.pads, &pad, rank) else { return Vec::new() };
                pool.pads = p;
                Op::AvgPool { pool, count_include_pad: true }
            }
            Op::MaxPool(mut pool) if value == f32::NEG_INFINITY => {
                let Some(p) = merged(&pool.pads, &pad, rank) else { return Vec::new() };
                pool.pads = p;
                Op::MaxPool(pool)
            }
            _ => return Vec::new(),
        };
        let attr = egraph.analysis.attrs.intern(&op, &consumer.outputs, &consumer.name);
        let mut children = vec![egraph.add(Cnn::Attr(attr)), subst[var("?x")]];
        children.extend(self.operands.iter().map(|v| subst[var(v)]));
        let children = children.into_boxed_slice();
        let new = egraph.add(match op {
            Op::Conv(_) => Cnn::Conv(children),
            Op::AvgPool { .. } => Cnn::AvgPool(children),
            _ => Cnn::MaxPool(children),
        });
        if egraph.union(eclass, new) { vec![eclass] } else { Vec::new() }
    }
}
