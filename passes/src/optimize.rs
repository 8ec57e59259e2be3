//! The lossless optimizer (`-O1`): saturate with every exact rule under limits, then extract
//! the cheapest DAG.

use std::time::Instant;

use cnnc_ir::{Graph, VerifiedGraph};

use crate::convert::to_egraph;
use crate::extract::{ExtractError, NodeCost, Seed, extract_dag, extract_dag_seeded};
use crate::rules::{Limits, Saturation, exact_rules, saturate};
use crate::to_graph;

/// What one optimization did (the `--report`).
#[derive(Clone, Debug, PartialEq)]
pub struct OptReport {
    pub saturation: Saturation,
    /// Nodes of the graph before and after (weights and inputs included).
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Predicted cost of the graph before and after, in the cost model's unit.
    pub cost_before: f64,
    pub cost_after: f64,
    /// Wall-clock milliseconds of saturation and extraction.
    pub saturate_ms: f64,
    pub extract_ms: f64,
}

/// Optimizes `graph` with the exact rules and `cost`; the result is unverified (the caller
/// verifies it, as every producer of a graph must).
pub fn optimize_exact(
    graph: &VerifiedGraph,
    limits: Limits,
    cost: &impl NodeCost,
) -> Result<(Graph, OptReport), ExtractError> {
    let loaded = to_egraph(graph);
    let (_, cost_before) = extract_dag(&loaded.egraph, loaded.root, cost)?;
    let seed = Seed::of(&loaded.egraph);
    let t0 = Instant::now();
    let (loaded, saturation) = saturate(loaded, &exact_rules(), limits);
    let t1 = Instant::now();
    let (expr, cost_after) = extract_dag_seeded(&loaded.egraph, loaded.root, cost, &seed)?;
    let out = to_graph(&expr, &loaded.egraph.analysis).map_err(|e| ExtractError::NotAGraph(e.to_string()))?;
    let t2 = Instant::now();
    let report = OptReport {
        saturation,
        nodes_before: graph.node_count(),
        nodes_after: out.node_count(),
        cost_before,
        cost_after,
        saturate_ms: (t1 - t0).as_secs_f64() * 1e3,
        extract_ms: (t2 - t1).as_secs_f64() * 1e3,
    };
    Ok((out, report))
}
