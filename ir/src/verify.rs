//! The verifier: checks every invariant of a [`Graph`] and reports all violations at once.

use std::fmt;
use std::ops::Deref;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::graph::{Graph, NodeId, ValueRef};
use crate::infer::infer_types;
use crate::op::Op;
use crate::tensor::TensorType;

/// One violated invariant, located at a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// Node name (or `<graph>` for graph-level problems).
    pub node: String,
    /// The node's op name.
    pub op: String,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node `{}` ({}): {}", self.node, self.op, self.message)
    }
}

/// Every violation found in a graph, in node order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct VerifyErrors(pub Vec<VerifyError>);

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "graph failed verification with {} error(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// A graph that passed [`verify`]; only `verify` makes one.
#[derive(Debug, Clone)]
pub struct VerifiedGraph(Graph);

impl VerifiedGraph {
    pub fn into_inner(self) -> Graph {
        self.0
    }
}

impl Deref for VerifiedGraph {
    type Target = Graph;
    fn deref(&self) -> &Graph {
        &self.0
    }
}

/// Checks every invariant of `graph`, collecting all violations.
pub fn verify(graph: Graph) -> Result<VerifiedGraph, VerifyErrors> {
    let errors = check(&graph);
    if errors.is_empty() { Ok(VerifiedGraph(graph)) } else { Err(VerifyErrors(errors)) }
}

/// Every violated invariant of `graph`: graph-level problems first, then per node in node
/// order, then graph outputs. Empty if and only if [`verify`] accepts the graph.
///
/// Invariants checked:
/// - the graph has at least one output, and no cycle;
/// - node names are unique;
/// - a node's input slots are exactly `0..n` with `n` within [`Op::arity`], and every input
///   reads an existing output slot of its producer;
/// - `graph.inputs()` lists each `Input` node once, at the position given by its index, and
///   only `Input` nodes;
/// - a `Weight` node's id exists in the store and its output type is the tensor's type;
/// - every other node's output types equal [`infer_types`] of its input types;
/// - graph outputs read existing values and have unique, non-empty names.
///
/// Weight values are not inspected: NaN and infinite constants are allowed.
pub fn check(graph: &Graph) -> Vec<VerifyError> {
    let mut errors = Vec::new();
    let graph_error = |message: String| VerifyError { node: GRAPH.into(), op: "graph".into(), message };

    if graph.outputs().is_empty() {
        errors.push(graph_error("graph has no outputs".into()));
    }
    if let Err(cycle) = graph.topo_order() {
        let op = graph.node_ids().map(|id| graph.node(id)).find(|n| n.name == cycle.node).map_or("?", |n| n.op.name());
        errors.push(VerifyError { node: cycle.node.clone(), op: op.into(), message: "node is on a cycle".into() });
    }
    check_input_list(graph, &mut errors);

    let mut names: HashMap<&str, NodeId> = HashMap::new();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let mut report = |message: String| {
            errors.push(VerifyError { node: node.name.clone(), op: node.op.name().into(), message });
        };
        match names.entry(&node.name) {
            Entry::Occupied(first) => {
                let other = graph.node(*first.get()).op.name();
                report(format!("name is already used by another node (a {other} node)"));
            }
            Entry::Vacant(slot) => {
                slot.insert(id);
            }
        }
        for message in check_node(graph, id) {
            report(message);
        }
    }

    let mut output_names: HashSet<&str> = HashSet::new();
    for (i, out) in graph.outputs().iter().enumerate() {
        if out.name.is_empty() {
            errors.push(graph_error(format!("graph output #{i} has an empty name")));
        } else if !output_names.insert(&out.name) {
            errors.push(graph_error(format!("graph output name `{}` is used twice", out.name)));
        }
        if graph.try_value_type(&out.value).is_none() {
            errors.push(graph_error(format!(
                "graph output `{}` refers to {}",
                out.name,
                describe_missing(graph, out.value)
            )));
        }
    }
    errors
}

/// Name used in [`VerifyError::node`] for problems not located at one node.
const GRAPH: &str = "<graph>";

/// Checks that `graph.inputs()` lists only existing `Input` nodes, each once.
fn check_input_list(graph: &Graph, errors: &mut Vec<VerifyError>) {
    let mut seen = HashSet::new();
    for (pos, &id) in graph.inputs().iter().enumerate() {
        let located = |message: String| {
            let node = graph.node(id);
            VerifyError { node: node.name.clone(), op: node.op.name().into(), message }
        };
        if !graph.contains_node(id) {
            errors.push(VerifyError {
                node: GRAPH.into(),
                op: "graph".into(),
                message: format!("graph input #{pos} refers to a removed node"),
            });
        } else if !matches!(graph.node(id).op, Op::Input { .. }) {
            errors.push(located(format!("listed as graph input #{pos} but is not an input node")));
        } else if !seen.insert(id) {
            errors.push(located(format!("listed again as graph input #{pos}")));
        }
    }
}

/// Violations local to node `id`, as messages.
fn check_node(graph: &Graph, id: NodeId) -> Vec<String> {
    let node = graph.node(id);
    let mut problems = Vec::new();

    let slots = graph.node_input_slots(id);
    let n = slots.len();
    let mut inputs_ok = true;
    if slots.iter().copied().ne(0..n) {
        problems.push(format!("input slots are {slots:?}, expected 0..{n}"));
        inputs_ok = false;
    }
    let (lo, hi) = node.op.arity();
    if !(lo..=hi).contains(&n) {
        let allowed = match (lo, hi) {
            _ if lo == hi => format!("{lo}"),
            (_, usize::MAX) => format!("at least {lo}"),
            _ => format!("{lo} to {hi}"),
        };
        problems.push(format!("has {n} input(s), but {} takes {allowed}", node.op.name()));
        inputs_ok = false;
    }
    let mut input_types = Vec::with_capacity(n);
    for (i, v) in graph.node_inputs(id).into_iter().enumerate() {
        match graph.try_value_type(&v) {
            Some(t) => input_types.push(t),
            None => {
                problems.push(format!("input {i} reads {}", describe_missing(graph, v)));
                inputs_ok = false;
            }
        }
    }

    match node.op {
        Op::Input { index } => {
            match graph.inputs().iter().position(|&i| i == id) {
                None => problems.push("input node is not listed among the graph inputs".into()),
                Some(pos) if pos != index => {
                    problems.push(format!("input node has index {index} but is graph input #{pos}"));
                }
                Some(_) => {}
            }
            if node.outputs.len() != 1 {
                problems.push(format!("input node has {} output types, expected 1", node.outputs.len()));
            }
        }
        Op::Weight(wid) => match graph.weights().get(wid) {
            None => problems.push(format!(
                "weight #{} does not exist (the store holds {} tensors)",
                wid.0,
                graph.weights().len()
            )),
            Some(t) => {
                let ty = t.ty();
                if node.outputs != [ty.clone()] {
                    problems.push(format!(
                        "stored output type {} differs from the weight tensor's type {ty}",
                        Types(&node.outputs)
                    ));
                }
            }
        },
        _ if inputs_ok => match infer_types(&node.op, &input_types) {
            Ok(inferred) if inferred != node.outputs => problems.push(format!(
                "stored output type {} differs from inferred {} (inputs {})",
                Types(&node.outputs),
                Types(&inferred),
                RefTypes(&input_types)
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!("{e} (inputs {})", RefTypes(&input_types))),
        },
        _ => {}
    }
    problems
}

/// Describes a value that does not exist, for messages (`output 2 of `split` (which has 2)`).
fn describe_missing(graph: &Graph, v: ValueRef) -> String {
    if graph.contains_node(v.node) {
        let producer = graph.node(v.node);
        format!(
            "output {} of `{}` ({}), which has {} output(s)",
            v.slot,
            producer.name,
            producer.op.name(),
            producer.outputs.len()
        )
    } else {
        format!("output {} of a removed node", v.slot)
    }
}

/// A list of types printed as `f32[1,2], i64[3]` (`()` when empty).
struct Types<'a>(&'a [TensorType]);

impl fmt::Display for Types<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        RefTypes(&self.0.iter().collect::<Vec<_>>()).fmt(f)
    }
}

struct RefTypes<'a, 'b>(&'a [&'b TensorType]);

impl fmt::Display for RefTypes<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("()");
        }
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}
