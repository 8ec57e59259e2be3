//! DAG-aware extraction: picks one e-node per e-class reachable from the root so that the
//! chosen graph's total cost — every chosen class counted **once**, however many consumers it
//! has — is low.
//!
//! Tree extraction (egg's `Extractor`) prices a node as its cost plus its children's costs, so
//! a residual branch or any value with two consumers is paid twice, and it happily keeps a
//! rewritten copy of a conv for one consumer while the original stays for another. This is the
//! greedy DAG algorithm of the extraction-gym benchmarks: a class's candidate is the *set* of
//! classes its best node needs (its own class plus the union of its children's sets), priced by
//! summing each class of the set once; sweeps repeat until no class improves. Cycles cannot be
//! chosen: a node is priced only once every child has a price, and a node whose children's sets
//! contain its own class is skipped.
//!
//! The cost of one e-node comes from a [`NodeCost`]: `-O1` uses the measured
//! [`TableCost`](crate::cost::TableCost); [`MacCost`] (MACs plus a memory-traffic term) needs no
//! measurement and serves tests.

use std::collections::{BTreeMap, HashMap, HashSet};

use egg::{EGraph, Id, Language, RecExpr};

use crate::convert::CnnAnalysis;
use crate::lang::Cnn;

/// The cost of one e-node (its own work, not its operands').
pub trait NodeCost {
    fn cost(&self, egraph: &EGraph<Cnn, CnnAnalysis>, node: &Cnn) -> f64;
}

/// A roofline-style stand-in: `multiplies + bytes_per_mac⁻¹ · bytes written` (multiplies as
/// [`cnnc_ir::node_multiplies`] counts them: fewer for a Winograd conv). Sources, leaves and the
/// root cost nothing.
#[derive(Clone, Copy, Debug)]
pub struct MacCost {
    /// MAC-equivalents charged per output byte (memory traffic of element-wise ops).
    pub per_byte: f64,
}

impl Default for MacCost {
    fn default() -> MacCost {
        MacCost { per_byte: 0.25 }
    }
}

impl NodeCost for MacCost {
    fn cost(&self, egraph: &EGraph<Cnn, CnnAnalysis>, node: &Cnn) -> f64 {
        let Some(children) = node.op_children() else { return 0.0 };
        let Some(attr) = crate::rules::attr_of(egraph, children[0]) else { return f64::INFINITY };
        let inputs: Vec<&cnnc_ir::TensorType> =
            children[1..].iter().filter_map(|&c| egraph[c].data.types.first()).collect();
        let macs = cnnc_ir::node_multiplies(&attr.op, &inputs, &attr.outputs) as f64;
        let bytes: f64 = attr.outputs.iter().map(|t| (t.numel() * t.dtype.size_bytes()) as f64).sum();
        macs + self.per_byte * bytes
    }
}

/// Why extraction failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("no finite-cost, acyclic choice reaches e-class {0}")]
    Unreachable(usize),
    #[error("the extracted term is not a graph: {0}")]
    NotAGraph(String),
}

/// The classes a choice needs, with each class's own node cost.
type CostSet = BTreeMap<Id, f64>;

/// A known-good choice to start local search from: one e-node per e-class, recorded before
/// saturation ([`Seed::of`]), so the unrewritten graph is always among the candidates.
#[derive(Clone, Debug, Default)]
pub struct Seed(Vec<(Id, Cnn)>);

impl Seed {
    /// Every class's nodes in `egraph` (before saturation: the imported graph itself).
    pub fn of(egraph: &EGraph<Cnn, CnnAnalysis>) -> Seed {
        Seed(egraph.classes().flat_map(|c| c.nodes.iter().map(move |n| (c.id, n.clone()))).collect())
    }
}

/// Extracts a low-cost DAG from `root`: the term and its total cost (each class once).
pub fn extract_dag(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    root: Id,
    cost: &impl NodeCost,
) -> Result<(RecExpr<Cnn>, f64), ExtractError> {
    extract_dag_seeded(egraph, root, cost, &Seed::default())
}

/// [`extract_dag`] that also starts the local search from `seed` (mapped into the saturated
/// e-graph) and keeps the cheaper result. The greedy pass can end where only changing two
/// classes at once helps (a conv's folded copy for one consumer and a fused copy for another,
/// where the one plain conv plus two cheap kernels is cheaper); starting from the unrewritten
/// graph guarantees the result is never worse than it.
pub fn extract_dag_seeded(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    root: Id,
    cost: &impl NodeCost,
    seed: &Seed,
) -> Result<(RecExpr<Cnn>, f64), ExtractError> {
    let root = egraph.find(root);
    // Node costs, computed once.
    let mut own: HashMap<(Id, usize), f64> = HashMap::new();
    for class in egraph.classes() {
        for (i, n) in class.nodes.iter().enumerate() {
            own.insert((class.id, i), cost.cost(egraph, n));
        }
    }
    let mut best: HashMap<Id, (f64, usize, CostSet)> = HashMap::new();
    // Classes in id order: the import adds operands before their users, so one sweep prices
    // most of the graph and later sweeps only propagate rewrites.
    let mut ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
    ids.sort();
    loop {
        let mut changed = false;
        for &id in &ids {
            for (i, n) in egraph[id].nodes.iter().enumerate() {
                let c = own[&(id, i)];
                if !c.is_finite() {
                    continue;
                }
                let kids: Option<Vec<&CostSet>> =
                    n.children().iter().map(|&k| best.get(&egraph.find(k)).map(|b| &b.2)).collect();
                let Some(kids) = kids else { continue };
                if kids.iter().any(|s| s.contains_key(&id)) {
                    continue; // would make a cycle through this class
                }
                let mut set: CostSet = CostSet::new();
                for s in kids {
                    set.extend(s.iter().map(|(k, v)| (*k, *v)));
                }
                set.insert(id, c);
                let total: f64 = set.values().sum();
                if best.get(&id).is_none_or(|b| total < b.0 - 1e-9 * b.0.abs()) {
                    best.insert(id, (total, i, set));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    if !best.contains_key(&root) {
        return Err(ExtractError::Unreachable(usize::from(root)));
    }
    // The greedy pass keeps one set per class, so it cannot see that a value another consumer
    // needs anyway is free for this one (it keeps a folded copy of a conv rather than the
    // conv + a cheap add). Improve by single swaps, each priced on the whole extracted DAG,
    // from the greedy choice and from the seed.
    let multi: Vec<Id> = ids.iter().copied().filter(|&id| egraph[id].nodes.len() > 1).collect();
    let greedy: HashMap<Id, usize> = best.iter().map(|(&id, b)| (id, b.1)).collect();
    let mut seeded = greedy.clone();
    for (id, node) in &seed.0 {
        let id = egraph.find(*id);
        let node = node.clone().map_children(|c| egraph.find(c));
        if let Some(i) = egraph[id].nodes.iter().position(|n| *n == node) {
            seeded.insert(id, i);
        }
    }
    let (mut choice, mut total) = improve(egraph, root, &multi, &own, greedy);
    if !seed.0.is_empty() {
        let (c, t) = improve(egraph, root, &multi, &own, seeded);
        if t < total - 1e-9 * total.abs() {
            (choice, total) = (c, t);
        }
    }
    if !total.is_finite() {
        return Err(ExtractError::Unreachable(usize::from(root)));
    }
    let chosen = |id: Id| -> Cnn {
        let id = egraph.find(id);
        egraph[id].nodes[choice[&id]].clone()
    };
    let expr = egraph[root].nodes[choice[&root]].build_recexpr(chosen);
    Ok((expr, total))
}

/// Local search by single swaps from `choice`: the improved choice and its DAG cost.
fn improve(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    root: Id,
    multi: &[Id],
    own: &HashMap<(Id, usize), f64>,
    mut choice: HashMap<Id, usize>,
) -> (HashMap<Id, usize>, f64) {
    let mut total = dag_cost(egraph, root, &choice, own).unwrap_or(f64::INFINITY);
    for _sweep in 0..20 {
        let mut improved = false;
        // A swap in a class the current DAG does not reach cannot change its cost, so only
        // reached classes are tried (the same result, far fewer pricings).
        let mut reached = reachable(egraph, root, &choice);
        for &id in multi {
            if !reached.contains(&id) {
                continue;
            }
            let Some(&current) = choice.get(&id) else { continue };
            for alt in 0..egraph[id].nodes.len() {
                let priced = egraph[id].nodes[alt].children().iter().all(|k| choice.contains_key(&egraph.find(*k)));
                if alt == current || !own[&(id, alt)].is_finite() || !priced {
                    continue;
                }
                choice.insert(id, alt);
                match dag_cost(egraph, root, &choice, own) {
                    Some(t) if t < total - 1e-9 * total.abs() => {
                        total = t;
                        improved = true;
                        reached = reachable(egraph, root, &choice);
                        break;
                    }
                    _ => {
                        choice.insert(id, current);
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
    (choice, total)
}

/// The classes the DAG `choice` reaches from `root` (stopping at classes without a choice).
fn reachable(egraph: &EGraph<Cnn, CnnAnalysis>, root: Id, choice: &HashMap<Id, usize>) -> HashSet<Id> {
    let mut seen: HashSet<Id> = HashSet::new();
    let mut stack = vec![egraph.find(root)];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(&node) = choice.get(&id) {
            stack.extend(egraph[id].nodes[node].children().iter().map(|&k| egraph.find(k)));
        }
    }
    seen
}

/// The cost of the DAG `choice` reaches from `root`, each class once; `None` if it has a cycle
/// or a class without a choice.
fn dag_cost(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    root: Id,
    choice: &HashMap<Id, usize>,
    own: &HashMap<(Id, usize), f64>,
) -> Option<f64> {
    // 1 = on the stack, 2 = done.
    let mut state: HashMap<Id, u8> = HashMap::new();
    let mut total = 0.0;
    let mut stack: Vec<(Id, bool)> = vec![(root, false)];
    while let Some((id, children_done)) = stack.pop() {
        if children_done {
            state.insert(id, 2);
            continue;
        }
        match state.get(&id) {
            Some(2) => continue,
            Some(_) => return None, // reached again while on the stack: a cycle
            None => {}
        }
        state.insert(id, 1);
        let node = *choice.get(&id)?;
        total += own[&(id, node)];
        stack.push((id, true));
        for &k in egraph[id].nodes[node].children() {
            let k = egraph.find(k);
            match state.get(&k) {
                Some(2) => {}
                Some(_) => return None,
                None => stack.push((k, false)),
            }
        }
    }
    Some(total)
}
