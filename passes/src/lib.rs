//! cnnc's graph optimizer: the egg language for CNN graphs ([`lang`]), IR ↔ e-graph
//! conversion with the e-class analysis ([`convert`]); the rewrite families, the cost model
//! ([`cost`]: kernel keys, the `CostOracle` trait, the cost table) and extraction build on them.
//! It depends on `ir` only: measurements come through traits that `compiler` implements over
//! the runtime.

pub mod analysis;
pub mod approx;
pub mod convert;
pub mod cost;
pub mod evaluate;
pub mod extract;
pub mod lang;
pub mod metric;
pub mod optimize;
pub mod rules;
pub mod speed;

pub use analysis::{ClassData, CnnAnalysis, add_weight, attr_of, weight_of};
pub use convert::{Loaded, ToGraphError, to_egraph, to_graph, to_graph_values};
pub use cost::{CostError, CostOracle, KernelKey, Operand, TableCost, UNMEASURABLE_US, mac_estimate};
pub use evaluate::{EvalBatch, EvalError, Evaluator, Flow, Split};
pub use extract::{
    BudgetError, BudgetMemo, Budgeted, CurvePoint, ExtractError, Extracted, MacCost, NodeCost, Seed, extract_budgeted,
    extract_budgeted_memo, extract_dag, extract_dag_choice, extract_dag_seeded,
};
pub use lang::{AttrEntry, AttrRef, AttrTable, Cnn, InputRef, OutIndex, ProposalId, WeightRef};
pub use metric::{Metric, MetricAcc};
pub use optimize::{OptConfig, OptReport, optimize_exact};
pub use rules::winograd::{force_conv_algo, winograd_layers};
pub use rules::{Limits, RuleOptions, Saturation, exact_rules, exact_rules_with, saturate};
pub use speed::{Lossless, SpeedSearch};
