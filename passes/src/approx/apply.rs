//! A chosen set of proposals as a graph, built directly on the lossless graph (no extraction):
//! each chosen layer's node is replaced by its proposal's factor chain, the node's fused
//! activation and residual moving onto the last factor, as the exact rules around a proposal
//! would fuse them. The graph computes what any extraction of the same choice computes (up to
//! float reordering); it is what the error model is audited on and what the asymmetric refit
//! (`super::refit`) runs, where forcing a choice through extraction would be fragile (a layer
//! has many lossless variants in the e-graph).
//!
//! ```text
//! before: %y = fused{conv, relu}(%x, %w, %b)
//! after:  %t = conv(%x, %a, %ab)                   (factor 0, proposal weights)
//!         %y = fused{conv 1×1, relu}(%t, %v, %c)   (last factor, the node's epilogue)
//! ```

use cnnc_ir::{BinaryOp, Graph, Op, ValueRef, VerifiedGraph};
use egg::EGraph;

use super::Proposal;
use super::calib::ACT_DTYPE;
use super::int8::QuantForm;
use crate::analysis::CnnAnalysis;
use crate::lang::{Cnn, WeightRef};
use crate::speed::Lossless;

/// Why a choice could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApplyError {
    #[error("two proposals chosen for layer `{0}`")]
    TwoForOneLayer(String),
    #[error("proposal {0} names layer {1}, which the lossless graph does not have")]
    NoLayer(u32, usize),
    #[error("weight {0} of a proposal is missing from the e-graph's store")]
    NoWeight(u32),
    #[error("factor `{0}`: {1}")]
    Infer(String, String),
    #[error("the built graph does not verify: {0}")]
    Verify(String),
}

/// `lossless.graph` with each proposal of `chosen` (at most one per layer) in place of its
/// layer.
pub fn apply(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    lossless: &Lossless,
    chosen: &[&Proposal],
) -> Result<VerifiedGraph, ApplyError> {
    let mut seen = std::collections::HashSet::new();
    let mut g: Graph = (*lossless.graph).clone();
    let weight = |g: &mut Graph, r: WeightRef, name: String| -> Result<ValueRef, ApplyError> {
        let t = egraph.analysis.weights.get(r.0 as usize).ok_or(ApplyError::NoWeight(r.0))?;
        Ok(g.add_weight(name, t.clone()))
    };
    for p in chosen {
        let (Some(&node), Some(layer)) = (lossless.nodes.get(p.layer), lossless.layers.get(p.layer)) else {
            return Err(ApplyError::NoLayer(p.id.0, p.layer));
        };
        if !seen.insert(p.layer) {
            return Err(ApplyError::TwoForOneLayer(layer.name.clone()));
        }
        // The layer's input as it is now: a layer chosen before may have replaced it.
        let inputs = g.node_inputs(node);
        let op = g.node(node).op.clone();
        if let Some(q) = &p.quant {
            let out = int8_chain(&mut g, egraph, q, &op, &inputs, &layer.name)?;
            g.replace_uses(ValueRef::new(node, 0), out);
            continue;
        }
        let mut cur = inputs[0];
        for (k, f) in p.factors.iter().enumerate() {
            let mut ins = vec![cur, weight(&mut g, f.weight, format!("{}.w", f.name))?];
            if let Some(b) = f.bias {
                ins.push(weight(&mut g, b, format!("{}.b", f.name))?);
            }
            let op_k = match &op {
                Op::Fused(fused) if k + 1 == p.factors.len() => {
                    ins.extend_from_slice(&inputs[fused.base_inputs(inputs.len())..]);
                    Op::Fused(Box::new(cnnc_ir::Fused { base: f.op.clone(), ..(**fused).clone() }))
                }
                _ => f.op.clone(),
            };
            let out =
                g.add_node(f.name.clone(), op_k, &ins).map_err(|e| ApplyError::Infer(f.name.clone(), e.to_string()))?;
            cur = out[0];
        }
        g.replace_uses(ValueRef::new(node, 0), cur);
    }
    g.remove_dead_nodes();
    cnnc_ir::verify(g).map_err(|e| ApplyError::Verify(e.to_string()))
}

/// An int8 form as f32 graph nodes (`super::int8`): the input quantized and dequantized, the
/// base op on the dequantized weights, the activation if the form holds it, the output
/// quantized and dequantized, then the node's residual add and activation if it does not.
/// Equal to the integer kernels the `qdq` rules make of it up to float reordering.
fn int8_chain(
    g: &mut Graph,
    egraph: &EGraph<Cnn, CnnAnalysis>,
    q: &QuantForm,
    op: &Op,
    inputs: &[ValueRef],
    name: &str,
) -> Result<ValueRef, ApplyError> {
    let (w, b) = q.dequantized(egraph).ok_or(ApplyError::NoWeight(q.weight.0))?;
    let add = |g: &mut Graph, suffix: &str, op: Op, ins: &[ValueRef]| -> Result<ValueRef, ApplyError> {
        let n = format!("{name}.int8.{suffix}");
        g.add_node(n.clone(), op, ins).map(|v| v[0]).map_err(|e| ApplyError::Infer(n, e.to_string()))
    };
    let xq = add(g, "xq", Op::Quantize { params: q.x.clone(), to: ACT_DTYPE }, &inputs[..1])?;
    let xd = add(g, "xd", Op::Dequantize(q.x.clone()), &[xq])?;
    let wv = g.add_weight(format!("{name}.int8.w"), w);
    let bv = g.add_weight(format!("{name}.int8.b"), b);
    let mut y = add(g, "base", q.base.clone(), &[xd, wv, bv])?;
    if let (Some((cp, rp)), Op::Fused(f)) = (&q.residual, op) {
        let cq = add(g, "cq", Op::Quantize { params: cp.clone(), to: ACT_DTYPE }, &[y])?;
        let cd = add(g, "cd", Op::Dequantize(cp.clone()), &[cq])?;
        let r = inputs[f.base_inputs(inputs.len())];
        let rq = add(g, "rq", Op::Quantize { params: rp.clone(), to: ACT_DTYPE }, &[r])?;
        let rd = add(g, "rd", Op::Dequantize(rp.clone()), &[rq])?;
        y = add(g, "residual", Op::Binary(BinaryOp::Add), &[cd, rd])?;
    }
    if let Some(act) = &q.act {
        y = add(g, "act", Op::Unary(*act), &[y])?;
    }
    let yq = add(g, "yq", Op::Quantize { params: q.y.clone(), to: ACT_DTYPE }, &[y])?;
    y = add(g, "yd", Op::Dequantize(q.y.clone()), &[yq])?;
    if let (false, Op::Fused(f)) = (q.whole, op) {
        if f.residual {
            let r = inputs[f.base_inputs(inputs.len())];
            y = add(g, "residual", Op::Binary(BinaryOp::Add), &[y, r])?;
        }
        if let Some(act) = &f.act {
            y = add(g, "post-act", Op::Unary(*act), &[y])?;
        }
    }
    Ok(y)
}
