//! Rewrite rules, one family per file, and equality saturation over them ([`saturate`]).
//!
//! Exact families (numerically equal up to float reordering) are equalities: both sides stay in
//! the e-class and extraction picks by cost. Each family's module documents what it rewrites,
//! when it fires and when not, its numerical effect, and the before/after text IR.

pub mod affine_input;
pub mod affine_reorder;
pub mod bn_fold;
pub mod channel_affine;
pub mod fuse;
pub mod hardswish;
pub mod lookup;
pub mod matmul_bias;
pub mod movement;
pub mod pad_fold;
pub mod qdq;
pub mod qwinograd;
pub mod silu;
pub mod space_to_depth;
pub mod winograd;

use egg::{Rewrite, Runner, StopReason, Var};

use crate::analysis::CnnAnalysis;
use crate::convert::Loaded;
use crate::lang::Cnn;

/// Which optional rule families a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleOptions {
    /// Offer Winograd F(2,3) and F(4,3) for eligible convs ([`winograd`]; `--no-winograd` clears
    /// it). They are exact up to the transforms' rounding, not bit-exact.
    pub winograd: bool,
}

impl Default for RuleOptions {
    fn default() -> RuleOptions {
        RuleOptions { winograd: true }
    }
}

/// Every exact rule.
pub fn exact_rules() -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    exact_rules_with(RuleOptions::default())
}

/// The exact rules `options` selects.
pub fn exact_rules_with(options: RuleOptions) -> Vec<Rewrite<Cnn, CnnAnalysis>> {
    let mut rules = bn_fold::rules();
    rules.extend(channel_affine::rules());
    rules.extend(affine_input::rules());
    rules.extend(affine_reorder::rules());
    rules.extend(hardswish::rules());
    rules.extend(silu::rules());
    rules.extend(matmul_bias::rules());
    rules.extend(fuse::rules());
    rules.extend(movement::rules());
    rules.extend(pad_fold::rules());
    rules.extend(space_to_depth::rules());
    rules.extend(qdq::rules());
    rules.extend(qwinograd::rules());
    rules.extend(lookup::rules());
    if options.winograd {
        rules.extend(winograd::rules());
    }
    rules
}

/// Limits of one saturation run (iterations and e-nodes; no wall clock, so runs are
/// deterministic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub iterations: usize,
    pub nodes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { iterations: 30, nodes: 200_000 }
    }
}

/// What a saturation run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Saturation {
    pub iterations: usize,
    pub nodes: usize,
    pub classes: usize,
    /// Why it stopped: `saturated`, `iteration limit`, `node limit`, or another reason.
    pub stop_reason: String,
    /// Applications per rule, in rule order (rules that never fired included).
    pub applied: Vec<(String, usize)>,
}

/// Runs `rules` on `loaded` to saturation or the limits; returns the e-graph and a summary.
pub fn saturate(loaded: Loaded, rules: &[Rewrite<Cnn, CnnAnalysis>], limits: Limits) -> (Loaded, Saturation) {
    let root = loaded.root;
    let runner = Runner::default()
        .with_egraph(loaded.egraph)
        .with_iter_limit(limits.iterations)
        .with_node_limit(limits.nodes)
        .with_time_limit(std::time::Duration::from_secs(3600))
        .run(rules);
    let stop_reason = match &runner.stop_reason {
        Some(StopReason::Saturated) => "saturated".to_owned(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(StopReason::TimeLimit(s)) => format!("time limit ({s:.0} s)"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "not run".to_owned(),
    };
    let applied = rules
        .iter()
        .map(|r| {
            (r.name.to_string(), runner.iterations.iter().map(|it| it.applied.get(&r.name).copied().unwrap_or(0)).sum())
        })
        .collect();
    let egraph = runner.egraph;
    let summary = Saturation {
        iterations: runner.iterations.len(),
        nodes: egraph.total_number_of_nodes(),
        classes: egraph.number_of_classes(),
        stop_reason,
        applied,
    };
    (Loaded { egraph, root: runner.roots.first().copied().unwrap_or(root) }, summary)
}

/// The pattern variable `name` (e.g. `?x`) of a rule's pattern.
pub(crate) fn var(name: &str) -> Var {
    name.parse().expect("a valid pattern variable")
}

/// An applier that may decline: [`Decline::apply`] returns the e-class it changed, or `None`
/// (not applicable here, or nothing new), so its body can use `?`. Wrap it in [`Declining`] to
/// get an egg [`egg::Applier`].
pub(crate) trait Decline {
    fn apply(&self, egraph: &mut egg::EGraph<Cnn, CnnAnalysis>, eclass: egg::Id, subst: &egg::Subst)
    -> Option<egg::Id>;
}

/// The egg applier of a [`Decline`].
pub(crate) struct Declining<T>(pub T);

impl<T: Decline> egg::Applier<Cnn, CnnAnalysis> for Declining<T> {
    fn apply_one(
        &self,
        egraph: &mut egg::EGraph<Cnn, CnnAnalysis>,
        eclass: egg::Id,
        subst: &egg::Subst,
        _searcher_ast: Option<&egg::PatternAst<Cnn>>,
        _rule_name: egg::Symbol,
    ) -> Vec<egg::Id> {
        self.0.apply(egraph, eclass, subst).into_iter().collect()
    }
}
