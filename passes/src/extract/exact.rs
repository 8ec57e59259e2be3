//! An exact solver of the multiple-choice knapsack behind budgeted extraction, for
//! cross-checking [`super::extract_budgeted`]'s Lagrangian on small graphs.
//!
//! Each proposal's latency change is measured on its own: the DAG extractor with only that
//! proposal allowed (its error free, every other proposal's infinite). Assuming layers do not
//! interact (a proposal's saving does not depend on what other layers chose), the best mix is
//! the choice of at most one proposal per layer minimizing the summed change subject to the
//! summed error ≤ budget, found here by exhaustive search with pruning.

use egg::{EGraph, Id};

use super::budget::{BudgetError, extract_budgeted};
use super::{NodeCost, Seed};
use crate::analysis::CnnAnalysis;
use crate::lang::{Cnn, ProposalId};

/// Mixes enumerated at most; a larger search is refused (the solver is a cross-check).
pub const MAX_MIXES: u64 = 50_000_000;

/// The exact optimum under the independence assumption.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactChoice {
    /// Predicted latency: the lossless DAG's plus the chosen proposals' changes.
    pub latency: f64,
    pub error: f64,
    pub proposals: Vec<ProposalId>,
}

/// Why the exact solver gave up.
#[derive(Debug, thiserror::Error)]
pub enum ExactError {
    #[error("{0} mixes exceed the exact solver's limit of {MAX_MIXES}")]
    TooLarge(u64),
    #[error(transparent)]
    Budget(#[from] BudgetError),
}

/// Each proposal's latency change when it alone is allowed (negative: faster; `None` when the
/// extractor does not take it even for free). `layer_of[p]` groups proposals by layer.
pub fn savings(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    root: Id,
    cost: &impl NodeCost,
    n_proposals: usize,
    seed: &Seed,
) -> Result<(f64, Vec<Option<f64>>), BudgetError> {
    let lossless = extract_budgeted(egraph, root, cost, &vec![f64::INFINITY; n_proposals], 0.0, seed)?.point.latency;
    let mut out = Vec::with_capacity(n_proposals);
    for p in 0..n_proposals {
        let mut errors = vec![f64::INFINITY; n_proposals];
        errors[p] = 0.0;
        let b = extract_budgeted(egraph, root, cost, &errors, 0.0, seed)?;
        let taken = b.point.proposals.iter().any(|q| q.0 as usize == p);
        out.push(taken.then_some(b.point.latency - lossless));
    }
    Ok((lossless, out))
}

/// The exact best mix: at most one proposal per layer (`layer_of[p]`), summed `errors` within
/// `budget`, least summed latency change.
pub fn extract_exact(
    egraph: &EGraph<Cnn, CnnAnalysis>,
    root: Id,
    cost: &impl NodeCost,
    layer_of: &[usize],
    errors: &[f64],
    budget: f64,
    seed: &Seed,
) -> Result<ExactChoice, ExactError> {
    let (lossless, delta) = savings(egraph, root, cost, errors.len(), seed)?;
    // Options per layer: (change, error, proposal), only those that save time.
    let n_layers = layer_of.iter().copied().max().map_or(0, |m| m + 1);
    let mut options: Vec<Vec<(f64, f64, ProposalId)>> = vec![Vec::new(); n_layers];
    for (p, d) in delta.iter().enumerate() {
        if let Some(d) = d
            && *d < 0.0
            && errors[p].is_finite()
        {
            options[layer_of[p]].push((*d, errors[p], ProposalId(p as u32)));
        }
    }
    options.retain(|o| !o.is_empty());
    let mixes = options.iter().fold(1u64, |acc, o| acc.saturating_mul(o.len() as u64 + 1));
    if mixes > MAX_MIXES {
        return Err(ExactError::TooLarge(mixes));
    }
    let (change, error, proposals) = solve_mckp(&options, budget).unwrap_or((0.0, 0.0, Vec::new()));
    Ok(ExactChoice { latency: lossless + change, error: error + 0.0, proposals })
}

/// The multiple-choice knapsack: at most one `(change, error, proposal)` option per layer,
/// least summed change with summed error ≤ `budget`: `(change, error, proposals ascending)`.
/// `None` when there are more than [`MAX_MIXES`] mixes.
pub fn solve_mckp(options: &[Vec<(f64, f64, ProposalId)>], budget: f64) -> Option<(f64, f64, Vec<ProposalId>)> {
    let mixes = options.iter().fold(1u64, |acc, o| acc.saturating_mul(o.len() as u64 + 1));
    if mixes > MAX_MIXES {
        return None;
    }
    // The most any later layers can still save, for pruning.
    let mut rest_best = vec![0.0; options.len() + 1];
    for i in (0..options.len()).rev() {
        let best = options[i].iter().map(|o| o.0).fold(0.0, f64::min);
        rest_best[i] = rest_best[i + 1] + best;
    }
    let mut best = (0.0, 0.0, Vec::new());
    let mut chosen = Vec::new();
    search(options, &rest_best, 0, 0.0, 0.0, budget, &mut chosen, &mut best);
    best.2.sort();
    Some(best)
}

#[allow(clippy::too_many_arguments)]
fn search(
    options: &[Vec<(f64, f64, ProposalId)>],
    rest_best: &[f64],
    layer: usize,
    change: f64,
    error: f64,
    budget: f64,
    chosen: &mut Vec<ProposalId>,
    best: &mut (f64, f64, Vec<ProposalId>),
) {
    if change + rest_best[layer] >= best.0 {
        return;
    }
    if layer == options.len() {
        *best = (change, error, chosen.clone());
        return;
    }
    for &(d, e, p) in &options[layer] {
        if error + e <= budget {
            chosen.push(p);
            search(options, rest_best, layer + 1, change + d, error + e, budget, chosen, best);
            chosen.pop();
        }
    }
    search(options, rest_best, layer + 1, change, error, budget, chosen, best);
}
