//! IR ↔ e-graph: [`to_egraph`] adds a verified graph to a fresh e-graph (every value one
//! e-class, shared subgraphs such as residual branches once, graph outputs under one
//! `outputs` root); [`to_graph`] turns an extracted term back into an IR graph.
//!
//! The analysis ([`CnnAnalysis`], in `crate::analysis`) owns what the leaves refer to.

use std::collections::HashMap;

use cnnc_ir::{Graph, GraphOutput, Op, Tensor, ValueRef, VerifiedGraph, WeightId};
use egg::{EGraph, Id, Language, RecExpr};

use crate::analysis::CnnAnalysis;
use crate::lang::{AttrRef, Cnn, InputRef, OutIndex, WeightRef};

/// A graph in an e-graph: the e-graph and its root (the `outputs` e-class).
pub struct Loaded {
    pub egraph: EGraph<Cnn, CnnAnalysis>,
    pub root: Id,
}

/// Adds `graph` to a fresh e-graph: one e-class per value, in topological order.
pub fn to_egraph(graph: &VerifiedGraph) -> Loaded {
    let mut analysis = CnnAnalysis { graph_name: graph.name.clone(), ..CnnAnalysis::default() };
    let mut weights: Vec<(WeightId, Tensor)> = graph.weights().iter().map(|(id, t)| (id, t.clone())).collect();
    weights.sort_by_key(|(id, _)| *id);
    analysis.weights = weights.into_iter().map(|(_, t)| t).collect();
    analysis.weight_names = vec![String::new(); analysis.weights.len()];
    for &id in graph.inputs() {
        let node = graph.node(id);
        analysis.inputs.push((node.name.clone(), node.outputs[0].clone()));
    }
    analysis.output_names = graph.outputs().iter().map(|o| o.name.clone()).collect();
    let mut egraph = EGraph::new(analysis).with_explanations_disabled();

    let order = graph.topo_order().expect("a verified graph is acyclic");
    // The e-class of each (node, slot).
    let mut class: HashMap<ValueRef, Id> = HashMap::new();
    for id in order {
        let node = graph.node(id);
        let value = match &node.op {
            Op::Input { index } => {
                let leaf = egraph.add(Cnn::InputLeaf(InputRef(*index as u32)));
                vec![egraph.add(Cnn::Input(leaf))]
            }
            Op::Weight(w) => {
                egraph.analysis.weight_names[w.0 as usize] = node.name.clone();
                let leaf = egraph.add(Cnn::WeightLeaf(WeightRef(w.0)));
                vec![egraph.add(Cnn::Weight(leaf))]
            }
            op => {
                let attr = egraph.analysis.attrs.intern(op, &node.outputs, &node.name);
                let mut children = vec![egraph.add(Cnn::Attr(attr))];
                children.extend(graph.node_inputs(id).iter().map(|v| class[v]));
                let enode = Cnn::op_node(op, children.into_boxed_slice()).expect("sources handled above");
                let n = egraph.add(enode);
                if node.outputs.len() == 1 {
                    vec![n]
                } else {
                    (0..node.outputs.len())
                        .map(|slot| {
                            let i = egraph.add(Cnn::Out(OutIndex(slot as u32)));
                            egraph.add(Cnn::Get([i, n]))
                        })
                        .collect()
                }
            }
        };
        for (slot, c) in value.into_iter().enumerate() {
            class.insert(ValueRef::new(id, slot), c);
        }
    }
    let outs: Vec<Id> = graph.outputs().iter().map(|o| class[&o.value]).collect();
    let root = egraph.add(Cnn::Outputs(outs.into_boxed_slice()));
    egraph.rebuild();
    Loaded { egraph, root }
}

/// Why an extracted term is not a graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToGraphError {
    #[error("the term's root is not an `outputs` node")]
    NoOutputs,
    #[error("malformed term at node {0}: {1}")]
    Malformed(usize, String),
}

/// Builds the IR graph of an extracted term `expr` (rooted at an `outputs` node), with the
/// leaves resolved through `analysis`. Each term node becomes one IR node; weights and inputs
/// are added once each.
pub fn to_graph(expr: &RecExpr<Cnn>, analysis: &CnnAnalysis) -> Result<Graph, ToGraphError> {
    to_graph_values(expr, analysis).map(|(g, _)| g)
}

/// [`to_graph`], also giving the IR value(s) each term node became (`values[i]` for node `i`;
/// empty for leaves and the root).
pub fn to_graph_values(
    expr: &RecExpr<Cnn>,
    analysis: &CnnAnalysis,
) -> Result<(Graph, Vec<Vec<ValueRef>>), ToGraphError> {
    let nodes = expr.as_ref();
    let mut g = Graph::new(analysis.graph_name.clone());
    // Inputs keep their numbering even when unused.
    let inputs: Vec<ValueRef> = analysis.inputs.iter().map(|(n, t)| g.add_input(n.clone(), t.clone())).collect();
    // `base`, else `base.2`, `base.3`, … — the first not taken, also by a node whose own name
    // already ends in such a suffix (an imported `X.2` beside a second `X`).
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut unique = |base: &str| -> String {
        let n = names.entry(base.to_owned()).or_insert(0);
        loop {
            *n += 1;
            let name = if *n == 1 { base.to_owned() } else { format!("{base}.{n}") };
            if taken.insert(name.clone()) {
                return name;
            }
        }
    };
    // The value(s) each term node stands for.
    let mut vals: Vec<Vec<ValueRef>> = Vec::with_capacity(nodes.len());
    let bad = |i: usize, what: &str| ToGraphError::Malformed(i, what.to_owned());
    let leaf = |id: Id| &nodes[usize::from(id)];
    for (i, n) in nodes.iter().enumerate() {
        let v = match n {
            Cnn::Attr(_) | Cnn::WeightLeaf(_) | Cnn::InputLeaf(_) | Cnn::Out(_) | Cnn::Outputs(_) => Vec::new(),
            Cnn::Input(l) => match leaf(*l) {
                Cnn::InputLeaf(InputRef(k)) => {
                    vec![*inputs.get(*k as usize).ok_or_else(|| bad(i, "input index out of range"))?]
                }
                _ => return Err(bad(i, "input without an input leaf")),
            },
            Cnn::Weight(l) => match leaf(*l) {
                Cnn::WeightLeaf(WeightRef(k)) => {
                    let t = analysis.weights.get(*k as usize).ok_or_else(|| bad(i, "weight out of range"))?;
                    let name = analysis.weight_names.get(*k as usize).filter(|s| !s.is_empty());
                    let name = unique(name.map_or(&format!("w{k}"), |s| s));
                    vec![g.add_weight(name, t.clone())]
                }
                _ => return Err(bad(i, "weight without a weight leaf")),
            },
            Cnn::Get([idx, node]) => {
                let slot = match leaf(*idx) {
                    Cnn::Out(OutIndex(s)) => *s as usize,
                    _ => return Err(bad(i, "get without an index")),
                };
                let from = vals.get(usize::from(*node)).and_then(|v| v.get(slot));
                vec![*from.ok_or_else(|| bad(i, "get of a missing output"))?]
            }
            op_node => {
                let children = op_node.op_children().ok_or_else(|| bad(i, "unknown node"))?;
                let attr: AttrRef = match leaf(children[0]) {
                    Cnn::Attr(r) if (r.0 as usize) < analysis.attrs.len() => *r,
                    _ => return Err(bad(i, "op without an attribute leaf")),
                };
                let entry = analysis.attrs.get(attr);
                let operands: Vec<ValueRef> = children[1..]
                    .iter()
                    .map(|&c| vals[usize::from(c)].first().copied().ok_or_else(|| bad(i, "operand has no value")))
                    .collect::<Result<_, _>>()?;
                let id = g.add_node_typed(unique(&entry.name), entry.op.clone(), &operands, entry.outputs.clone());
                (0..entry.outputs.len()).map(|s| ValueRef::new(id, s)).collect()
            }
        };
        vals.push(v);
    }
    let root = nodes.last().ok_or(ToGraphError::NoOutputs)?;
    let Cnn::Outputs(outs) = root else { return Err(ToGraphError::NoOutputs) };
    if outs.len() != analysis.output_names.len() {
        return Err(bad(nodes.len() - 1, "output count differs from the graph's"));
    }
    for (name, &o) in analysis.output_names.iter().zip(outs.iter()) {
        let v = vals[usize::from(o)].first().copied().ok_or_else(|| bad(nodes.len() - 1, "output has no value"))?;
        g.outputs_mut().push(GraphOutput { name: name.clone(), value: v });
    }
    // `children` of every node precede it in a RecExpr, so the graph is built in a valid
    // order; `Language::children` is used by egg's own checks.
    debug_assert!(nodes.iter().enumerate().all(|(i, n)| n.children().iter().all(|&c| usize::from(c) < i)));
    Ok((g, vals))
}
