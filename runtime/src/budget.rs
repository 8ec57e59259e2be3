//! The activation budget: a bound, checked before any planning or allocation, on the bytes of
//! all the values a graph's nodes produce.
//!
//! Verification bounds each tensor (artifact and import limits), but a hostile graph that
//! verifies can still ask for the node count times that: a few hundred nodes of 2³¹ f32
//! elements would make the memory plan, or the reference interpreter, try to allocate terabytes
//! and abort. [`check`] sums every node output (an upper bound of what the arena or the
//! reference can hold at once) and refuses a graph over the limit: [`DEFAULT_LIMIT`] bytes, or
//! the environment variable [`LIMIT_ENV`] (bytes; a plain integer) when set.

use cnnc_ir::{Graph, Op};

/// The default limit on the summed bytes of all node outputs: 16 GiB. The largest shared model
/// (ppocr_v4_det at 640×640) sums to well under 1 GiB.
pub const DEFAULT_LIMIT: u64 = 16 << 30;

/// The environment variable that replaces [`DEFAULT_LIMIT`] (a byte count).
pub const LIMIT_ENV: &str = "CNNC_MAX_ACTIVATION_BYTES";

/// Why a graph is refused before planning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "the graph's intermediate values total {total} bytes ({:.1} GiB), over the limit of {limit} bytes \
         ({:.1} GiB); set {LIMIT_ENV}=<bytes> to raise it",
        *total as f64 / (1u64 << 30) as f64,
        *limit as f64 / (1u64 << 30) as f64
    )]
    OverLimit { total: u128, limit: u64 },
    #[error("{LIMIT_ENV}={value:?} is not a byte count (a non-negative integer)")]
    BadLimit { value: String },
}

/// The limit in force: [`LIMIT_ENV`] if set, else [`DEFAULT_LIMIT`].
pub fn limit() -> Result<u64, BudgetError> {
    match std::env::var(LIMIT_ENV) {
        Ok(v) => v.trim().parse().map_err(|_| BudgetError::BadLimit { value: v }),
        Err(_) => Ok(DEFAULT_LIMIT),
    }
}

/// The summed bytes of every output of every node that is not a graph input or a weight (in
/// u128, saturating).
pub fn total_bytes(graph: &Graph) -> u128 {
    graph
        .node_ids()
        .filter(|&id| !matches!(graph.node(id).op, Op::Input { .. } | Op::Weight(_)))
        .flat_map(|id| graph.node(id).outputs.iter())
        .map(|t| {
            let n: u128 = t.shape.iter().fold(1u128, |n, &d| n.saturating_mul(d as u128));
            n.saturating_mul(t.dtype.size_bytes() as u128)
        })
        .fold(0u128, u128::saturating_add)
}

/// Refuses `graph` when its node outputs sum to more than the limit ([`limit`]).
pub fn check(graph: &Graph) -> Result<(), BudgetError> {
    let limit = limit()?;
    let total = total_bytes(graph);
    if total > u128::from(limit) {
        return Err(BudgetError::OverLimit { total, limit });
    }
    Ok(())
}
