//! The dataflow graph: a petgraph `StableDiGraph` of [`Node`]s whose edges connect an output
//! slot of a producer to an input slot of a consumer, plus the weight store.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

use crate::infer::{InferError, infer_types};
use crate::op::{Op, WeightId};
use crate::tensor::{Tensor, TensorType};

/// Identifies a node; stable across removals of other nodes.
pub type NodeId = NodeIndex<u32>;

/// One output of one node: the IR's notion of a value (an SSA tensor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    pub node: NodeId,
    pub slot: usize,
}

impl ValueRef {
    pub fn new(node: NodeId, slot: usize) -> Self {
        ValueRef { node, slot }
    }
}

/// An operator application with its output types.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique within the graph (the ONNX node name, or the value name for inputs and weights).
    pub name: String,
    pub op: Op,
    /// One type per output slot.
    pub outputs: Vec<TensorType>,
}

/// Edge payload: which output of the source feeds which input of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub from_slot: usize,
    pub to_slot: usize,
}

/// A named graph output.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphOutput {
    pub name: String,
    pub value: ValueRef,
}

/// Constant tensors referred to by [`Op::Weight`] nodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightStore {
    tensors: Vec<Tensor>,
}

impl WeightStore {
    pub fn get(&self, id: WeightId) -> Option<&Tensor> {
        self.tensors.get(id.0 as usize)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (WeightId, &Tensor)> {
        self.tensors.iter().enumerate().map(|(i, t)| (WeightId(i as u32), t))
    }

    fn push(&mut self, t: Tensor) -> WeightId {
        let id = WeightId(u32::try_from(self.tensors.len()).expect("fewer than 2^32 weights"));
        self.tensors.push(t);
        id
    }
}

/// A cycle found while ordering the graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("graph has a cycle through node `{node}`")]
pub struct CycleError {
    pub node: String,
}

/// A computation graph with static shapes. Build it freely; [`crate::verify`] checks it.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    g: StableDiGraph<Node, Edge>,
    inputs: Vec<NodeId>,
    outputs: Vec<GraphOutput>,
    weights: WeightStore,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    /// Adds graph input number `inputs().len()`.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueRef {
        let index = self.inputs.len();
        let id = self.g.add_node(Node { name: name.into(), op: Op::Input { index }, outputs: vec![ty] });
        self.inputs.push(id);
        ValueRef::new(id, 0)
    }

    /// Adds a constant to the weight store and a node that produces it.
    pub fn add_weight(&mut self, name: impl Into<String>, tensor: Tensor) -> ValueRef {
        let ty = tensor.ty();
        let wid = self.weights.push(tensor);
        let id = self.g.add_node(Node { name: name.into(), op: Op::Weight(wid), outputs: vec![ty] });
        ValueRef::new(id, 0)
    }

    /// Adds a node with explicit output types (unchecked until [`crate::verify`]).
    pub fn add_node_typed(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[ValueRef],
        outputs: Vec<TensorType>,
    ) -> NodeId {
        let id = self.g.add_node(Node { name: name.into(), op, outputs });
        for (to_slot, v) in inputs.iter().enumerate() {
            self.g.add_edge(v.node, id, Edge { from_slot: v.slot, to_slot });
        }
        id
    }

    /// Adds a node whose output types are inferred from its inputs; returns its outputs.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[ValueRef],
    ) -> Result<Vec<ValueRef>, InferError> {
        let types: Vec<&TensorType> = inputs
            .iter()
            .map(|v| {
                self.try_value_type(v).ok_or_else(|| InferError {
                    op: op.name(),
                    reason: format!("input refers to a missing value (node {}, slot {})", v.node.index(), v.slot),
                })
            })
            .collect::<Result<_, _>>()?;
        let outputs = infer_types(&op, &types)?;
        let n = outputs.len();
        let id = self.add_node_typed(name, op, inputs, outputs);
        Ok((0..n).map(|slot| ValueRef::new(id, slot)).collect())
    }

    /// Marks `value` as a graph output called `name`.
    pub fn add_output(&mut self, name: impl Into<String>, value: ValueRef) {
        self.outputs.push(GraphOutput { name: name.into(), value });
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }

    pub fn contains_node(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// All node ids in insertion order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    /// The values feeding `id`, ordered by input slot.
    pub fn node_inputs(&self, id: NodeId) -> Vec<ValueRef> {
        let mut edges: Vec<(usize, ValueRef)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (e.weight().to_slot, ValueRef::new(e.source(), e.weight().from_slot)))
            .collect();
        edges.sort_by_key(|&(slot, _)| slot);
        edges.into_iter().map(|(_, v)| v).collect()
    }

    /// Input slots of `id` as recorded on its edges (for the verifier: must be 0..n).
    pub fn node_input_slots(&self, id: NodeId) -> Vec<usize> {
        let mut slots: Vec<usize> =
            self.g.edges_directed(id, Direction::Incoming).map(|e| e.weight().to_slot).collect();
        slots.sort_unstable();
        slots
    }

    /// Every (consumer node, input slot) reading `value`.
    pub fn consumers(&self, value: ValueRef) -> Vec<(NodeId, usize)> {
        let mut out: Vec<(NodeId, usize)> = self
            .g
            .edges_directed(value.node, Direction::Outgoing)
            .filter(|e| e.weight().from_slot == value.slot)
            .map(|e| (e.target(), e.weight().to_slot))
            .collect();
        out.sort();
        out
    }

    /// Type of a value. Panics if the node or slot does not exist (a bug in the caller).
    pub fn value_type(&self, v: &ValueRef) -> &TensorType {
        &self.g[v.node].outputs[v.slot]
    }

    /// Type of a value, `None` if the node or slot does not exist.
    pub fn try_value_type(&self, v: &ValueRef) -> Option<&TensorType> {
        self.g.node_weight(v.node).and_then(|n| n.outputs.get(v.slot))
    }

    /// Graph inputs, in order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[GraphOutput] {
        &self.outputs
    }

    pub fn outputs_mut(&mut self) -> &mut Vec<GraphOutput> {
        &mut self.outputs
    }

    pub fn weights(&self) -> &WeightStore {
        &self.weights
    }

    /// The constant behind a weight node, if `v` is one.
    pub fn weight_of(&self, v: &ValueRef) -> Option<&Tensor> {
        match self.g.node_weight(v.node)?.op {
            Op::Weight(id) => self.weights.get(id),
            _ => None,
        }
    }

    /// Nodes ordered so that producers come before consumers; among ready nodes the lowest
    /// id goes first, so the order is deterministic (Kahn's algorithm with a min-heap).
    pub fn topo_order(&self) -> Result<Vec<NodeId>, CycleError> {
        let (order, cyclic) = self.lowest_id_order(&HashSet::new());
        match cyclic.first() {
            Some(&stuck) => Err(CycleError { node: self.g[stuck].name.clone() }),
            None => Ok(order),
        }
    }

    /// The canonical node order, which the text form prints and the artifact stores: the
    /// nodes not in `placed`, producers before consumers, always taking the lowest ready node
    /// id (Kahn's algorithm with a min-heap), with the nodes of `placed` counted as already
    /// ordered. Returns that order and, apart and in id order, the nodes it never reaches
    /// because they are on or behind a cycle.
    pub(crate) fn lowest_id_order(&self, placed: &HashSet<NodeId>) -> (Vec<NodeId>, Vec<NodeId>) {
        let mut pending: HashMap<NodeId, usize> = HashMap::new();
        let mut ready = BinaryHeap::new();
        for id in self.g.node_indices().filter(|id| !placed.contains(id)) {
            let n = self.g.edges_directed(id, Direction::Incoming).filter(|e| !placed.contains(&e.source())).count();
            if n == 0 {
                ready.push(Reverse(id));
            } else {
                pending.insert(id, n);
            }
        }
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(Reverse(id)) = ready.pop() {
            order.push(id);
            for e in self.g.edges_directed(id, Direction::Outgoing) {
                if let Some(n) = pending.get_mut(&e.target()) {
                    *n -= 1;
                    if *n == 0 {
                        pending.remove(&e.target());
                        ready.push(Reverse(e.target()));
                    }
                }
            }
        }
        let mut cyclic: Vec<NodeId> = pending.into_keys().collect();
        cyclic.sort_unstable();
        (order, cyclic)
    }

    /// Makes every consumer of `from` (and any graph output) read `to` instead.
    pub fn replace_uses(&mut self, from: ValueRef, to: ValueRef) {
        let edges: Vec<(EdgeIndex, NodeId, Edge)> = self
            .g
            .edges_directed(from.node, Direction::Outgoing)
            .filter(|e| e.weight().from_slot == from.slot)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (eid, target, w) in edges {
            self.g.remove_edge(eid);
            self.g.add_edge(to.node, target, Edge { from_slot: to.slot, to_slot: w.to_slot });
        }
        for o in &mut self.outputs {
            if o.value == from {
                o.value = to;
            }
        }
    }

    /// Removes nodes that no graph output depends on (graph inputs are kept) and compacts the
    /// weight store to the weights still referenced.
    pub fn remove_dead_nodes(&mut self) {
        let mut live = HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs.iter().map(|o| o.value.node).collect();
        stack.extend(self.inputs.iter().copied());
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<NodeId> = self.g.node_indices().filter(|n| !live.contains(n)).collect();
        for n in dead {
            self.g.remove_node(n);
        }
        let mut remap = HashMap::new();
        let mut kept = WeightStore::default();
        let ids: Vec<NodeId> = self.g.node_indices().collect();
        for n in ids {
            if let Op::Weight(old) = self.g[n].op {
                let new = *remap.entry(old).or_insert_with(|| kept.push(self.weights.tensors[old.0 as usize].clone()));
                self.g[n].op = Op::Weight(new);
            }
        }
        self.weights = kept;
    }

    /// Total number of weight elements of dtype f32 (the "params" of `cnnc inspect`).
    pub fn n_params(&self) -> usize {
        self.weights.iter().filter(|(_, t)| t.dtype() == crate::DType::F32).map(|(_, t)| t.numel()).sum()
    }

    /// Read access to the underlying petgraph graph (for analyses).
    pub fn petgraph(&self) -> &StableDiGraph<Node, Edge> {
        &self.g
    }
}
