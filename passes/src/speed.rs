//! The `-O speed` pipeline's e-graph side, step by step (the compiler's driver calls them in
//! order, with measurement and calibration data in between):
//!
//! 1. [`SpeedSearch::saturate`]: exact saturation, as `-O1`.
//! 2. [`SpeedSearch::extract_lossless`]: the best lossless DAG, the network every calibration
//!    statistic is taken on, and the layers the lossy families may replace in it, with the
//!    value to tap for each layer's input.
//! 3. (caller) the layers' input second moments on the fit split
//!    ([`crate::approx::stats::collect_moments`]).
//! 4. [`SpeedSearch::propose`]: the proposal step, then the exact rules that may rewrite
//!    around proposals, to saturation.
//! 5. (caller) price the new e-nodes, then [`crate::extract_budgeted`] with each proposal's
//!    predicted error.

use cnnc_ir::{NodeId, ValueRef, VerifiedGraph};
use egg::Id;

use crate::approx::int8::LayerQuant;
use crate::approx::linalg::SecondMoment;
use crate::approx::{Layer, Proposal, find_layers, propose, rules_after_proposals};
use crate::convert::{Loaded, to_egraph, to_graph_values};
use crate::extract::{ExtractError, Extracted, NodeCost, Seed, extract_dag_choice};
use crate::optimize::OptConfig;
use crate::rules::{Saturation, exact_rules_with, saturate};

/// The state of one `-O speed` search.
pub struct SpeedSearch {
    pub loaded: Loaded,
    /// The input graph's own nodes: extraction's local search starts from them too.
    pub seed: Seed,
    pub config: OptConfig,
    pub saturation: Saturation,
}

/// The lossless starting point of the search.
pub struct Lossless {
    pub extracted: Extracted,
    /// The extracted graph (verified), on which calibration statistics are taken.
    pub graph: VerifiedGraph,
    pub layers: Vec<Layer>,
    /// `taps[i]`: the value of `graph` that is layer `i`'s input.
    pub taps: Vec<ValueRef>,
    /// `params[i]`: the values of `graph` holding layer `i`'s weight and bias.
    pub params: Vec<(ValueRef, Option<ValueRef>)>,
    /// `nodes[i]`: the node of `graph` that computes layer `i` (plain or fused).
    pub nodes: Vec<NodeId>,
}

impl SpeedSearch {
    /// Loads `graph` and saturates it with the exact rules `config` selects.
    pub fn saturate(graph: &VerifiedGraph, config: &OptConfig) -> SpeedSearch {
        let loaded = to_egraph(graph);
        let seed = Seed::of(&loaded.egraph);
        let (loaded, saturation) = saturate(loaded, &exact_rules_with(config.rules), config.limits);
        SpeedSearch { loaded, seed, config: config.clone(), saturation }
    }

    pub fn root(&self) -> Id {
        self.loaded.root
    }

    /// The best lossless DAG under `cost` (which must price every e-node), as a verified graph,
    /// and the layers found in it.
    pub fn extract_lossless(&self, cost: &impl NodeCost) -> Result<Lossless, ExtractError> {
        let egraph = &self.loaded.egraph;
        let extracted = extract_dag_choice(egraph, self.loaded.root, cost, &self.seed)?;
        let (graph, values) =
            to_graph_values(&extracted.expr, &egraph.analysis).map_err(|e| ExtractError::NotAGraph(e.to_string()))?;
        let graph = cnnc_ir::verify(graph).map_err(|e| ExtractError::NotAGraph(e.to_string()))?;
        let mut layers = Vec::new();
        let mut taps = Vec::new();
        let mut params = Vec::new();
        let mut nodes = Vec::new();
        let value = |term: usize| values.get(term).and_then(|v| v.first()).copied();
        for mut layer in find_layers(egraph, &extracted) {
            let kids = extracted.expr.as_ref()[layer.term].op_children().unwrap_or(&[]).to_vec();
            let operand = |k: usize| kids.get(k).and_then(|&c| value(usize::from(c)));
            let (Some(x), Some(w), Some(y)) = (value(layer.input_term), operand(2), value(layer.term)) else {
                continue;
            };
            let b = if layer.bias.is_some() { operand(3) } else { None };
            taps.push(x);
            params.push((w, b));
            nodes.push(y.node);
            // The e-graph's op entries are shared by identical ops (two convs of one shape have
            // one entry and one name); the extracted graph's node names are unique.
            layer.name = graph.node(y.node).name.clone();
            layers.push(layer);
        }
        Ok(Lossless { extracted, graph, layers, taps, params, nodes })
    }

    /// Adds every proposal the configuration's families make for `layers` (with their input
    /// second moments on the fit split and, if given, on held-out data, and their activation
    /// quantization for the int8 family; none when the configuration is lossless) and
    /// saturates the rules that may
    /// rewrite around them; returns the proposals, numbered from 0.
    pub fn propose(
        &mut self,
        layers: &[Layer],
        moments: &[Option<SecondMoment>],
        held_out: &[Option<SecondMoment>],
        quant: &[Option<LayerQuant>],
    ) -> (Vec<Proposal>, Saturation) {
        let Some(config) = self.config.proposals.clone() else {
            return (Vec::new(), self.saturation.clone());
        };
        let proposals = propose(&mut self.loaded.egraph, layers, moments, held_out, quant, &config);
        let root = self.loaded.root;
        let loaded = std::mem::replace(&mut self.loaded, Loaded { egraph: egg::EGraph::new(Default::default()), root });
        let int8 = config.families.contains(&crate::approx::Family::Int8);
        let rules = rules_after_proposals(self.config.rules.winograd, int8);
        let (loaded, sat) = saturate(loaded, &rules, self.config.limits);
        self.loaded = loaded;
        (proposals, sat)
    }
}
