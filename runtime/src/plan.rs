//! The memory plan: where every value lives while a model runs.
//!
//! Graph inputs are read in place from the caller's tensors and weights from the model; every
//! value a kernel produces lives in one arena at an offset chosen so that values whose
//! lifetimes overlap never share bytes. Values that are pure views — `reshape` outputs, and
//! `split` outputs that are contiguous slabs of their input — take their source's storage and
//! extend its lifetime instead of being copied. A `concat` whose inputs are contiguous slabs of
//! its output, each produced by a kernel for this concat alone, costs nothing: its producers
//! write straight into their slab of the concat's buffer. A node all of whose outputs are
//! empty (a dimension of size 0) has nothing to write and gets no step.

use std::collections::HashMap;

use cnnc_ir::{Graph, NodeId, Op, ValueRef, VerifiedGraph, WeightId, numel};

/// Alignment of every arena value, in bytes (a cache line; also enough for 256-bit vectors).
pub(crate) const ALIGN: usize = 64;

/// Where a value's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    /// The caller's input tensor number `.0`.
    Input(usize),
    /// The model's weight.
    Weight(WeightId),
    /// The arena.
    Arena,
}

/// A value's location: base plus byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub base: Base,
    pub offset: usize,
}

/// One kernel launch, in execution order.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub node: NodeId,
    pub inputs: Vec<Loc>,
    pub outputs: Vec<Loc>,
}

#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    pub outputs: Vec<Loc>,
    /// Arena size in bytes.
    pub arena_bytes: usize,
}

/// True if `op` produces a view of its input (no kernel runs for it).
fn view_offsets(graph: &Graph, node: NodeId) -> Option<Vec<usize>> {
    let n = graph.node(node);
    match &n.op {
        Op::Reshape { .. } => Some(vec![0]),
        Op::Split { axis, sizes } => {
            let input = graph.node_inputs(node)[0];
            let ty = graph.value_type(&input);
            // Each output is a contiguous slab only if every axis before `axis` has size 1.
            if ty.shape[..*axis].iter().any(|&d| d != 1) {
                return None;
            }
            let inner: usize = ty.shape[axis + 1..].iter().product::<usize>() * ty.dtype.size_bytes();
            let mut off = 0;
            Some(
                sizes
                    .iter()
                    .map(|&s| {
                        let o = off;
                        off += s * inner;
                        o
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Byte offsets of a concat's inputs inside its output, if every input is a contiguous slab
/// (every axis before `axis` has size 1).
fn concat_slabs(graph: &Graph, node: NodeId) -> Option<Vec<usize>> {
    let Op::Concat { axis } = graph.node(node).op else { return None };
    let out = &graph.node(node).outputs[0];
    if out.shape[..axis].iter().any(|&d| d != 1) {
        return None;
    }
    let mut off = 0;
    Some(
        graph
            .node_inputs(node)
            .iter()
            .map(|v| {
                let o = off;
                off += size_of(graph, v);
                o
            })
            .collect(),
    )
}

/// Concats that need no kernel: every input is a slab of the output and is written there
/// directly by its producer, a kernel (not itself a concat) whose only consumer is this concat
/// (so it is not a graph output, a view source or another concat's input).
fn in_place_concats(graph: &Graph) -> HashMap<NodeId, Vec<usize>> {
    let outputs: std::collections::HashSet<ValueRef> = graph.outputs().iter().map(|o| o.value).collect();
    let mut result = HashMap::new();
    for id in graph.node_ids() {
        let Some(offsets) = concat_slabs(graph, id) else { continue };
        let ins = graph.node_inputs(id);
        let mut seen = std::collections::HashSet::new();
        let eligible = ins.iter().all(|v| {
            let producer = graph.node(v.node);
            seen.insert(*v)
                && !producer.op.is_source()
                && view_offsets(graph, v.node).is_none()
                && !matches!(producer.op, Op::Concat { .. })
                && !outputs.contains(v)
                && graph.consumers(*v).len() == 1
        });
        if eligible && !ins.is_empty() {
            result.insert(id, offsets);
        }
    }
    result
}

/// True if every output of `node` has no elements: no kernel needs to run for it.
fn writes_nothing(graph: &Graph, node: NodeId) -> bool {
    graph.node(node).outputs.iter().all(|t| t.numel() == 0)
}

fn size_of(graph: &Graph, v: &ValueRef) -> usize {
    let ty = graph.value_type(v);
    numel(&ty.shape) * ty.dtype.size_bytes()
}

/// Plans `graph`'s memory.
pub(crate) fn plan(graph: &VerifiedGraph) -> Plan {
    let order = graph.topo_order().expect("a verified graph is acyclic");
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let end = order.len();
    let concats = in_place_concats(graph);

    // Storage groups: each kernel output starts a group; views join their source's group.
    // `root[v]` = (group owner value, byte offset inside the owner).
    let mut root: HashMap<ValueRef, (ValueRef, usize)> = HashMap::new();
    let mut external: HashMap<ValueRef, Loc> = HashMap::new();
    for &id in &order {
        let node = graph.node(id);
        match node.op {
            Op::Input { index } => {
                external.insert(ValueRef::new(id, 0), Loc { base: Base::Input(index), offset: 0 });
                continue;
            }
            Op::Weight(w) => {
                external.insert(ValueRef::new(id, 0), Loc { base: Base::Weight(w), offset: 0 });
                continue;
            }
            _ => {}
        }
        if let Some(offsets) = concats.get(&id) {
            // The concat output owns the buffer; its inputs (all kernel outputs, not yet used by
            // anyone else) move into their slabs.
            let out = ValueRef::new(id, 0);
            root.insert(out, (out, 0));
            for (v, &off) in graph.node_inputs(id).iter().zip(offsets) {
                root.insert(*v, (out, off));
            }
        } else if let Some(offsets) = view_offsets(graph, id) {
            let src = graph.node_inputs(id)[0];
            for (slot, off) in offsets.into_iter().enumerate() {
                let v = ValueRef::new(id, slot);
                if let Some(loc) = external.get(&src).copied() {
                    external.insert(v, Loc { base: loc.base, offset: loc.offset + off });
                } else {
                    let (owner, base_off) = root[&src];
                    root.insert(v, (owner, base_off + off));
                }
            }
        } else {
            for slot in 0..node.outputs.len() {
                let v = ValueRef::new(id, slot);
                root.insert(v, (v, 0));
            }
        }
    }

    // Lifetime of each group owner, in step positions: from the first definition of any member
    // (an in-place concat's inputs come before the concat) to the last use of any member.
    let mut live: HashMap<ValueRef, (usize, usize)> = HashMap::new();
    for (&v, &(owner, _)) in &root {
        let def = pos[&v.node];
        let entry = live.entry(owner).or_insert((def, def));
        entry.0 = entry.0.min(def);
        entry.1 = entry.1.max(def);
        for (consumer, _) in graph.consumers(v) {
            entry.1 = entry.1.max(pos[&consumer]);
        }
    }
    for o in graph.outputs() {
        if let Some(&(owner, _)) = root.get(&o.value) {
            live.get_mut(&owner).expect("owner has a lifetime").1 = end;
        }
    }

    // First-fit offsets: visit owners by definition order; reuse gaps left by dead values.
    let mut owners: Vec<(ValueRef, (usize, usize))> = live.into_iter().collect();
    owners.sort_by_key(|&(v, (s, _))| (s, v));
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (offset, size, start, end)
    let mut offset_of: HashMap<ValueRef, usize> = HashMap::new();
    let mut arena_bytes = 0;
    for (v, (start, stop)) in owners {
        let size = size_of(graph, &v).max(1).div_ceil(ALIGN) * ALIGN;
        let mut busy: Vec<(usize, usize)> =
            placed.iter().filter(|&&(_, _, s, e)| s <= stop && start <= e).map(|&(o, sz, _, _)| (o, o + sz)).collect();
        busy.sort_unstable();
        let mut off = 0;
        for (lo, hi) in busy {
            if off + size <= lo {
                break;
            }
            off = off.max(hi);
        }
        placed.push((off, size, start, stop));
        offset_of.insert(v, off);
        arena_bytes = arena_bytes.max(off + size);
    }

    let loc = |v: &ValueRef| -> Loc {
        if let Some(l) = external.get(v) {
            return *l;
        }
        let (owner, off) = root[v];
        Loc { base: Base::Arena, offset: offset_of[&owner] + off }
    };
    let steps = order
        .iter()
        .filter(|&&id| {
            !graph.node(id).op.is_source()
                && view_offsets(graph, id).is_none()
                && !concats.contains_key(&id)
                && !writes_nothing(graph, id)
        })
        .map(|&id| Step {
            node: id,
            inputs: graph.node_inputs(id).iter().map(loc).collect(),
            outputs: (0..graph.node(id).outputs.len()).map(|s| loc(&ValueRef::new(id, s))).collect(),
        })
        .collect();
    let outputs = graph.outputs().iter().map(|o| loc(&o.value)).collect();
    Plan { steps, outputs, arena_bytes }
}
