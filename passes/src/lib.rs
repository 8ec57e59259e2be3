//! cnnc's graph optimizer: the egg language for CNN graphs ([`lang`]), IR ↔ e-graph
//! conversion with the e-class analysis ([`convert`]); the rewrite families, the cost model
//! ([`cost`]: kernel keys, the `CostOracle` trait, the cost table) and extraction build on them.
//! It depends on `ir` only: measurements come through traits that `compiler` implements over
//! the runtime.

pub mod convert;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod optimize;
pub mod rules;

pub use convert::{ClassData, CnnAnalysis, Loaded, ToGraphError, to_egraph, to_graph};
pub use cost::{CostError, CostOracle, KernelKey, Operand, TableCost, UNMEASURABLE_US, mac_estimate};
pub use extract::{ExtractError, MacCost, NodeCost, Seed, extract_dag, extract_dag_seeded};
pub use lang::{AttrEntry, AttrRef, AttrTable, Cnn, InputRef, OutIndex, WeightRef};
pub use optimize::{OptReport, optimize_exact};
pub use rules::winograd::{force_conv_algo, winograd_layers};
pub use rules::{Limits, RuleOptions, Saturation, exact_rules, exact_rules_with, saturate};
