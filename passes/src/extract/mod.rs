//! Extraction: choosing one e-node per e-class reachable from the root.
//!
//! - [`dag`]: DAG-aware extraction (`-O1`): the chosen graph's total cost counts every chosen
//!   class once, however many consumers it has.
//! - [`budget`]: budgeted extraction (`-O speed`): the fastest DAG whose approximate proposals'
//!   predicted error stays within a budget, by a Lagrangian sweep over the DAG extractor.
//! - [`exact`]: an exact multiple-choice knapsack solver to cross-check it on small graphs.

mod budget;
mod dag;
pub mod exact;

use egg::EGraph;

use crate::analysis::CnnAnalysis;
use crate::lang::Cnn;

pub use budget::{BudgetError, BudgetMemo, Budgeted, CurvePoint, extract_budgeted, extract_budgeted_memo};
pub use dag::{Extracted, Seed, extract_dag, extract_dag_choice, extract_dag_seeded};

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
        let Some(attr) = crate::analysis::attr_of(egraph, children[0]) else { return f64::INFINITY };
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
