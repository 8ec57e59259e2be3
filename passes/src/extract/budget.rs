//! Budgeted extraction: the lowest-latency DAG whose approximate proposals' predicted error
//! stays within a budget — a multiple-choice knapsack over the layers, solved by Lagrangian
//! relaxation: the DAG extractor ([`super::extract_dag_choice`]) minimizes
//! `latency + λ · error`, where each chosen proposal's error is charged once, on the weight it
//! derived that every variant built around it shares (`CnnAnalysis::charged`). Sweeping λ from
//! ∞ (lossless: charged weights cannot be chosen) down to 0 traces the latency/error trade-off
//! curve; the fastest point within budget wins, after bisecting λ between the last feasible and
//! the first infeasible point of the sweep.
//!
//! A Lagrangian point is optimal for the budget equal to its own error, so the answer can sit
//! below the budget by the gap between two neighbouring curve points; the knapsack over the
//! proposals the sweep met is then solved exactly (each proposal's latency change measured
//! alone) and its mix extracted for real, kept when it fits and is faster.

use std::collections::{BTreeMap, BTreeSet};

use egg::{EGraph, Id};

use super::dag::{Seed, extract_dag_choice};
use super::{ExtractError, NodeCost};
use crate::analysis::CnnAnalysis;
use crate::lang::{Cnn, ProposalId};

/// Powers of two of λ (relative to `lossless latency / budget`, rounded down to a power of
/// two) the sweep visits, high to low.
const SWEEP_EXPONENTS: std::ops::RangeInclusive<i32> = -14..=4;
/// Bisection steps between the last feasible and the first infeasible sweep point.
const BISECTIONS: usize = 6;

/// One point of the trade-off curve.
#[derive(Clone, Debug, PartialEq)]
pub struct CurvePoint {
    /// The Lagrange multiplier (µs per unit of error); `f64::INFINITY` for the lossless point,
    /// NaN for a point the greedy fill found past the sweep.
    pub lambda: f64,
    /// Predicted latency (µs, the node costs' unit) and error (the sum of the chosen proposals').
    pub latency: f64,
    pub error: f64,
    /// The proposals the point uses, ascending.
    pub proposals: Vec<ProposalId>,
}

/// The chosen DAG and the curve that led to it.
#[derive(Clone, Debug)]
pub struct Budgeted {
    pub extracted: super::dag::Extracted,
    /// The chosen point (a copy of one entry of `curve`).
    pub point: CurvePoint,
    /// Every distinct point the sweep found, by λ descending: the lossless point (λ = ∞)
    /// first, the knapsack's (λ NaN) last.
    pub curve: Vec<CurvePoint>,
}

/// Why budgeted extraction failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    #[error("error budget {0} is not a non-negative number")]
    BadBudget(f64),
    #[error(transparent)]
    Extract(#[from] ExtractError),
}

/// Prices a node with `base`, plus `λ · error` for a weight that carries a proposal's charge.
struct Charged<'a, C> {
    base: &'a C,
    lambda: f64,
    errors: &'a [f64],
}

impl<C: NodeCost> NodeCost for Charged<'_, C> {
    fn cost(&self, egraph: &EGraph<Cnn, CnnAnalysis>, node: &Cnn) -> f64 {
        let base = self.base.cost(egraph, node);
        match charge_of(egraph, node) {
            Some(p) => {
                let e = self.errors.get(p.0 as usize).copied().unwrap_or(f64::INFINITY);
                // 0 · ∞ (a free proposal at λ = ∞) stays 0: only errors cost.
                if e == 0.0 { base } else { base + self.lambda * e }
            }
            None => base,
        }
    }
}

/// The proposal whose charge a `(weight wN)` node carries.
fn charge_of(egraph: &EGraph<Cnn, CnnAnalysis>, node: &Cnn) -> Option<ProposalId> {
    let Cnn::Weight(leaf) = node else { return None };
    egraph[*leaf].nodes.iter().find_map(|l| match l {
        Cnn::WeightLeaf(r) => egraph.analysis.charged.get(r).copied(),
        _ => None,
    })
}

/// Extractions [`extract_budgeted_memo`] made, reused by later calls with the same e-graph,
/// costs, errors and seed (the caller keeps those fixed while it holds the memo; a change of
/// `errors` clears it): the points at each λ, and each proposal's point alone. The `-O speed`
/// search solves up to ten budgets on one e-graph, and most of each solve repeats the last.
#[derive(Default)]
pub struct BudgetMemo {
    errors: Vec<u64>,
    points: std::collections::HashMap<u64, (CurvePoint, super::dag::Extracted)>,
    singles: std::collections::HashMap<ProposalId, CurvePoint>,
}

/// Extracts the fastest DAG from `root` whose chosen proposals' errors (`errors[p]` for
/// proposal `p`) sum to at most `budget`. `cost` prices latency. Never fails where lossless
/// extraction succeeds: the lossless DAG (error 0) is always a candidate.
pub fn extract_budgeted(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    root: Id,
    cost: &impl NodeCost,
    errors: &[f64],
    budget: f64,
    seed: &Seed,
) -> Result<Budgeted, BudgetError> {
    extract_budgeted_memo(egraph, root, cost, errors, budget, seed, &mut BudgetMemo::default())
}

/// [`extract_budgeted`], reusing and extending `memo`: the same result as without it.
pub fn extract_budgeted_memo(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    root: Id,
    cost: &impl NodeCost,
    errors: &[f64],
    budget: f64,
    seed: &Seed,
    memo: &mut BudgetMemo,
) -> Result<Budgeted, BudgetError> {
    if !(budget >= 0.0 && budget.is_finite()) {
        return Err(BudgetError::BadBudget(budget));
    }
    let bits: Vec<u64> = errors.iter().map(|e| e.to_bits()).collect();
    if memo.errors != bits {
        *memo = BudgetMemo { errors: bits, ..BudgetMemo::default() };
    }
    let point_with = |lambda: f64, errors: &[f64]| -> Result<(CurvePoint, super::dag::Extracted), ExtractError> {
        let ext = extract_dag_choice(egraph, root, &Charged { base: cost, lambda, errors }, seed)?;
        let latency = ext.enodes.iter().map(|n| cost.cost(egraph, n)).sum();
        let used: BTreeSet<ProposalId> = ext.expr.as_ref().iter().filter_map(|n| term_charge(egraph, n)).collect();
        // `+ 0.0`: an empty f64 sum is -0.0.
        let error = used.iter().map(|p| errors.get(p.0 as usize).copied().unwrap_or(f64::INFINITY)).sum::<f64>() + 0.0;
        Ok((CurvePoint { lambda, latency, error, proposals: used.into_iter().collect() }, ext))
    };
    let points = &mut memo.points;
    let mut point_at = |lambda: f64| -> Result<(CurvePoint, super::dag::Extracted), ExtractError> {
        if let Some(p) = points.get(&lambda.to_bits()) {
            return Ok(p.clone());
        }
        let p = point_with(lambda, errors)?;
        points.insert(lambda.to_bits(), p.clone());
        Ok(p)
    };
    // At λ = ∞ with the allowed proposals' errors 0: the fastest DAG using any of them.
    let point_at_errors = |trial: &[f64]| point_with(f64::INFINITY, trial);
    let singles = &mut memo.singles;

    let (lossless, lossless_ext) = point_at(f64::INFINITY)?;
    let lossless = &lossless;
    let mut best = (lossless.clone(), lossless_ext);
    let mut curve = vec![lossless.clone()];
    if budget > 0.0 && errors.iter().any(|e| e.is_finite()) {
        // `lossless latency / budget` rounded down to a power of two, so that solves at
        // neighbouring budgets visit the same λ values (and a memo serves them).
        let unit = lossless.latency.max(f64::MIN_POSITIVE) * 2f64.powi((1.0 / budget).log2().floor() as i32);
        let mut feasible_lambda = f64::INFINITY;
        let mut infeasible_lambda = None;
        for k in SWEEP_EXPONENTS.rev() {
            let lambda = unit * 2f64.powi(k);
            let (p, ext) = point_at(lambda)?;
            let fits = p.error <= budget;
            if fits {
                feasible_lambda = lambda;
            } else if infeasible_lambda.is_none() {
                infeasible_lambda = Some(lambda);
            }
            consider(&mut best, &mut curve, p, ext, budget);
            if !fits {
                break;
            }
        }
        // Bisect (geometrically) between the last λ within budget and the first beyond it.
        if let Some(mut lo) = infeasible_lambda {
            let mut hi = feasible_lambda;
            if hi.is_finite() {
                for _ in 0..BISECTIONS {
                    let mid = (lo * hi).sqrt();
                    let (p, ext) = point_at(mid)?;
                    if p.error <= budget {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                    consider(&mut best, &mut curve, p, ext, budget);
                }
            }
        }
    }
    // A Lagrangian point is optimal only for a budget equal to its own error. Between the hull
    // points the sweep found, solve the knapsack exactly over the proposals on the curve: each
    // one's latency change measured alone, at most one per layer, then the mix extracted for
    // real (those proposals free, the others banned) and kept if it fits and is faster.
    if budget > 0.0 {
        let mut cands: Vec<ProposalId> = curve.iter().flat_map(|c| c.proposals.iter().copied()).collect();
        cands.sort();
        cands.dedup();
        let layer = layer_keys(egraph);
        let mut options: BTreeMap<Id, Vec<(f64, f64, ProposalId)>> = BTreeMap::new();
        for &c in &cands {
            let p = match singles.get(&c) {
                Some(p) => p.clone(),
                None => {
                    let mut trial = vec![f64::INFINITY; errors.len()];
                    trial[c.0 as usize] = 0.0;
                    let (p, _) = point_at_errors(&trial)?;
                    singles.insert(c, p.clone());
                    p
                }
            };
            if p.proposals.contains(&c)
                && p.latency < lossless.latency
                && let Some(&key) = layer.get(&c)
            {
                options.entry(key).or_default().push((p.latency - lossless.latency, errors[c.0 as usize], c));
            }
        }
        let options: Vec<Vec<(f64, f64, ProposalId)>> = options.into_values().collect();
        if let Some((_, _, mix)) = super::exact::solve_mckp(&options, budget) {
            let mut trial = vec![f64::INFINITY; errors.len()];
            for p in &mix {
                trial[p.0 as usize] = 0.0;
            }
            let (mut p, ext) = point_at_errors(&trial)?;
            p.error = p.proposals.iter().map(|q| errors[q.0 as usize]).sum::<f64>() + 0.0;
            if p.error <= budget && p.latency < best.0.latency {
                p.lambda = f64::NAN;
                curve.push(p.clone());
                best = (p, ext);
            }
        }
    }
    // By λ descending (the lossless point, λ = ∞, first); the knapsack's point (λ NaN) last.
    let key = |c: &CurvePoint| if c.lambda.is_nan() { -1.0 } else { c.lambda };
    curve.sort_by(|a, b| key(b).total_cmp(&key(a)));
    curve.dedup_by(|a, b| a.proposals == b.proposals && a.latency == b.latency);
    let (point, extracted) = best;
    Ok(Budgeted { extracted, point, curve })
}

/// Keeps `p` on the curve and as the best point if it fits the budget and is faster.
fn consider(
    best: &mut (CurvePoint, super::dag::Extracted),
    curve: &mut Vec<CurvePoint>,
    p: CurvePoint,
    ext: super::dag::Extracted,
    budget: f64,
) {
    if p.error <= budget && p.latency < best.0.latency {
        *best = (p.clone(), ext);
    }
    curve.push(p);
}

/// Each proposal's layer, as a key: the smallest e-class holding a node that reads the
/// proposal's charged weight (its last factor's class is the layer's, and every variant built
/// around it reads the same weight, so proposals of one layer share the key).
fn layer_keys(egraph: &EGraph<Cnn, CnnAnalysis>) -> BTreeMap<ProposalId, Id> {
    let mut keys: BTreeMap<ProposalId, Id> = BTreeMap::new();
    for class in egraph.classes() {
        for node in &class.nodes {
            let Some(children) = node.op_children() else { continue };
            for &k in &children[1..] {
                let Some(p) = egraph[k].nodes.iter().find_map(|n| charge_of(egraph, n)) else { continue };
                let key = keys.entry(p).or_insert(class.id);
                *key = (*key).min(class.id);
            }
        }
    }
    keys
}

/// The charge of a term node (a `(weight wN)` whose leaf child is resolved in the e-graph's
/// analysis by its weight number).
fn term_charge(egraph: &EGraph<Cnn, CnnAnalysis>, node: &Cnn) -> Option<ProposalId> {
    match node {
        Cnn::WeightLeaf(r) => egraph.analysis.charged.get(r).copied(),
        _ => None,
    }
}
