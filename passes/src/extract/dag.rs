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

use super::{ExtractError, NodeCost};
use crate::analysis::CnnAnalysis;
use crate::lang::Cnn;

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
