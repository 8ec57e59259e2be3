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

use std::collections::HashMap;

use egg::{EGraph, Id, Language, RecExpr};

use super::{ExtractError, NodeCost};
use crate::analysis::CnnAnalysis;
use crate::lang::Cnn;

/// The classes a choice needs, with each class's own node cost, sorted by class.
type CostSet = Vec<(Id, f64)>;

/// The union of two cost sets; where both hold a class, `b`'s cost.
fn union(a: &[(Id, f64)], b: &[(Id, f64)]) -> CostSet {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(b[j]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

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
    extract_dag_choice(egraph, root, cost, seed).map(|x| (x.expr, x.cost))
}

/// An extracted DAG: the term, the e-class each term node was chosen from, and its total cost.
#[derive(Clone, Debug)]
pub struct Extracted {
    pub expr: RecExpr<Cnn>,
    /// `classes[i]` is the (canonical) e-class of `expr`'s node `i`, and `enodes[i]` the
    /// e-node chosen there (children as canonical e-classes).
    pub classes: Vec<Id>,
    pub enodes: Vec<Cnn>,
    pub cost: f64,
}

/// [`extract_dag_seeded`], also naming each term node's e-class.
pub fn extract_dag_choice(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    root: Id,
    cost: &impl NodeCost,
    seed: &Seed,
) -> Result<Extracted, ExtractError> {
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
                if kids.iter().any(|s| s.binary_search_by(|e| e.0.cmp(&id)).is_ok()) {
                    continue; // would make a cycle through this class
                }
                let mut set: CostSet = CostSet::new();
                for s in kids {
                    set = union(&set, s);
                }
                set = union(&set, &[(id, c)]);
                let total: f64 = set.iter().map(|e| e.1).sum();
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
    let (expr, classes) = build_term(egraph, root, &choice);
    let enodes =
        classes.iter().map(|id| egraph[*id].nodes[choice[id]].clone().map_children(|c| egraph.find(c))).collect();
    Ok(Extracted { expr, classes, enodes, cost: total })
}

/// The term `choice` picks from `root`, each class once, operands before their users, in the
/// order egg's `Language::build_recexpr` gives (so artifacts keep their node order).
fn build_term(egraph: &EGraph<Cnn, CnnAnalysis>, root: Id, choice: &HashMap<Id, usize>) -> (RecExpr<Cnn>, Vec<Id>) {
    let node_of = |id: Id| &egraph[id].nodes[choice[&id]];
    let mut expr = RecExpr::default();
    let mut classes = Vec::new();
    let mut index: HashMap<Id, Id> = HashMap::new();
    let mut todo: Vec<Id> = node_of(root).children().iter().map(|&c| egraph.find(c)).collect();
    while let Some(&id) = todo.last() {
        if index.contains_key(&id) {
            todo.pop();
            continue;
        }
        let node = node_of(id);
        let mut ready = true;
        for &k in node.children() {
            let k = egraph.find(k);
            if !index.contains_key(&k) {
                ready = false;
                todo.push(k);
            }
        }
        if ready {
            let n = node.clone().map_children(|c| index[&egraph.find(c)]);
            index.insert(id, expr.add(n));
            classes.push(id);
            todo.pop();
        }
    }
    expr.add(node_of(root).clone().map_children(|c| index[&egraph.find(c)]));
    classes.push(root);
    (expr, classes)
}

/// The e-graph as dense arrays indexed by canonical class id, for the local search's many
/// pricings (hash lookups dominated them): each node's own cost and canonical children.
struct Dense {
    own: Vec<Vec<f64>>,
    kids: Vec<Vec<Vec<usize>>>,
}

/// No node chosen in a class.
const NONE: usize = usize::MAX;

impl Dense {
    fn new(egraph: &EGraph<Cnn, CnnAnalysis>, own: &HashMap<(Id, usize), f64>) -> Dense {
        let n = egraph.classes().map(|c| usize::from(c.id) + 1).max().unwrap_or(0);
        let mut d = Dense { own: vec![Vec::new(); n], kids: vec![Vec::new(); n] };
        for class in egraph.classes() {
            let i = usize::from(class.id);
            d.own[i] = (0..class.nodes.len()).map(|k| own[&(class.id, k)]).collect();
            d.kids[i] = class
                .nodes
                .iter()
                .map(|node| node.children().iter().map(|&k| usize::from(egraph.find(k))).collect())
                .collect();
        }
        d
    }

    /// The classes the DAG `choice` reaches from `root` (stopping at classes without a choice).
    fn reachable(&self, root: usize, choice: &[usize]) -> Vec<bool> {
        let mut seen = vec![false; self.own.len()];
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id], true) {
                continue;
            }
            if choice[id] != NONE {
                stack.extend(self.kids[id][choice[id]].iter().copied());
            }
        }
        seen
    }

    /// The cost of the DAG `choice` reaches from `root`, each class once; `None` if it has a
    /// cycle or a class without a choice. `state` is scratch space of the class count.
    fn dag_cost(&self, root: usize, choice: &[usize], state: &mut [u8]) -> Option<f64> {
        // 1 = on the stack, 2 = done.
        state.fill(0);
        let mut total = 0.0;
        let mut stack: Vec<(usize, bool)> = vec![(root, false)];
        while let Some((id, children_done)) = stack.pop() {
            if children_done {
                state[id] = 2;
                continue;
            }
            match state[id] {
                2 => continue,
                1 => return None, // reached again while on the stack: a cycle
                _ => {}
            }
            state[id] = 1;
            let node = choice[id];
            if node == NONE {
                return None;
            }
            total += self.own[id][node];
            stack.push((id, true));
            for &k in &self.kids[id][node] {
                match state[k] {
                    2 => {}
                    1 => return None,
                    _ => stack.push((k, false)),
                }
            }
        }
        Some(total)
    }
}

/// Local search by single swaps from `choice`: the improved choice and its DAG cost.
fn improve(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    root: Id,
    multi: &[Id],
    own: &HashMap<(Id, usize), f64>,
    choice: HashMap<Id, usize>,
) -> (HashMap<Id, usize>, f64) {
    let d = Dense::new(egraph, own);
    let root = usize::from(egraph.find(root));
    let mut ch = vec![NONE; d.own.len()];
    for (&id, &node) in &choice {
        ch[usize::from(id)] = node;
    }
    let mut state = vec![0u8; d.own.len()];
    let mut total = d.dag_cost(root, &ch, &mut state).unwrap_or(f64::INFINITY);
    for _sweep in 0..20 {
        let mut improved = false;
        // A swap in a class the current DAG does not reach cannot change its cost, so only
        // reached classes are tried (the same result, far fewer pricings).
        let mut reached = d.reachable(root, &ch);
        for &id in multi {
            let id = usize::from(id);
            if !reached[id] {
                continue;
            }
            let current = ch[id];
            if current == NONE {
                continue;
            }
            for alt in 0..d.own[id].len() {
                let priced = d.kids[id][alt].iter().all(|&k| ch[k] != NONE);
                if alt == current || !d.own[id][alt].is_finite() || !priced {
                    continue;
                }
                ch[id] = alt;
                match d.dag_cost(root, &ch, &mut state) {
                    Some(t) if t < total - 1e-9 * total.abs() => {
                        total = t;
                        improved = true;
                        reached = d.reachable(root, &ch);
                        break;
                    }
                    _ => ch[id] = current,
                }
            }
        }
        if !improved {
            break;
        }
    }
    let choice = ch.iter().enumerate().filter(|&(_, &n)| n != NONE).map(|(i, &n)| (Id::from(i), n)).collect();
    (choice, total)
}
