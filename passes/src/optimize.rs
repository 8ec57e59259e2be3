//! The lossless optimizer (`-O1`): saturate with every exact rule under limits, price every
//! e-node through the cost table, then extract the cheapest DAG.

use std::time::Instant;

use cnnc_ir::{Graph, VerifiedGraph};

use crate::approx::ProposalConfig;
use crate::convert::to_egraph;
use crate::cost::{CostOracle, TableCost};
use crate::extract::{ExtractError, Seed, extract_dag_seeded};
use crate::rules::{Limits, RuleOptions, Saturation, exact_rules_with, saturate};
use crate::to_graph;

/// What one optimization may do: the exact rule families and saturation limits, and for
/// `-O speed` the lossy proposal step. `OptConfig::lossless()` is `-O1`, `OptConfig::speed()`
/// `-O speed`; callers adjust fields (`--no-winograd`, `--families`) from there.
#[derive(Clone, Debug, PartialEq)]
pub struct OptConfig {
    pub rules: RuleOptions,
    pub limits: Limits,
    /// `None`: no approximate form (lossless).
    pub proposals: Option<ProposalConfig>,
}

impl OptConfig {
    /// `-O1`: every exact rule, no approximation.
    pub fn lossless() -> OptConfig {
        OptConfig { rules: RuleOptions::default(), limits: Limits::default(), proposals: None }
    }

    /// `-O speed`: `-O1`'s rules and every lossy family.
    pub fn speed() -> OptConfig {
        OptConfig { proposals: Some(ProposalConfig::default()), ..OptConfig::lossless() }
    }

    /// The same, with Winograd's rules left out (`--no-winograd`) when `winograd` is false.
    pub fn with_winograd(mut self, winograd: bool) -> OptConfig {
        self.rules.winograd = winograd;
        self
    }
}

/// What one optimization did (the `--report`).
#[derive(Clone, Debug, PartialEq)]
pub struct OptReport {
    pub saturation: Saturation,
    /// Nodes of the graph before and after (weights and inputs included).
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Predicted kernel time of the graph before and after, in µs.
    pub cost_before: f64,
    pub cost_after: f64,
    /// Wall-clock milliseconds of saturation, of pricing the e-graph (the oracle's measuring
    /// included), and of extraction.
    pub saturate_ms: f64,
    pub cost_ms: f64,
    pub extract_ms: f64,
}

/// Optimizes `graph` with the exact rules `config` selects (its proposals are ignored: this is
/// the lossless optimizer), pricing e-nodes with `cost` (which asks `oracle` for what it lacks,
/// in one batch); the result is unverified (the caller verifies it, as every producer of a
/// graph must). Afterwards `cost` holds every price the decision used.
pub fn optimize_exact(
    graph: &VerifiedGraph,
    config: &OptConfig,
    cost: &mut TableCost,
    oracle: &mut dyn CostOracle,
) -> Result<(Graph, OptReport), ExtractError> {
    let t0 = Instant::now();
    let loaded = to_egraph(graph);
    // The input graph itself, as a starting point of extraction's local search.
    let seed = Seed::of(&loaded.egraph);
    let (loaded, saturation) = saturate(loaded, &exact_rules_with(config.rules), config.limits);
    let t1 = Instant::now();
    // Saturation only adds e-nodes, so pricing the saturated e-graph prices the input graph's
    // nodes too.
    cost.add_egraph(&loaded.egraph, oracle);
    let t2 = Instant::now();
    let (expr, cost_after) = extract_dag_seeded(&loaded.egraph, loaded.root, &*cost, &seed)?;
    let out = to_graph(&expr, &loaded.egraph.analysis).map_err(|e| ExtractError::NotAGraph(e.to_string()))?;
    let t3 = Instant::now();
    let report = OptReport {
        saturation,
        nodes_before: graph.node_count(),
        nodes_after: out.node_count(),
        cost_before: cost.graph_cost(graph),
        cost_after,
        saturate_ms: (t1 - t0).as_secs_f64() * 1e3,
        cost_ms: (t2 - t1).as_secs_f64() * 1e3,
        extract_ms: (t3 - t2).as_secs_f64() * 1e3,
    };
    Ok((out, report))
}
