//! The e-class analysis ([`CnnAnalysis`]): what the leaves of an e-graph refer to — the
//! attribute table, the weight store, the graph inputs — and, per e-class, its output types and
//! whether it is computed from weights only (constant-foldable). The helpers every rule family,
//! the cost model, extraction and the proposals use to read and extend it live here too.

use std::collections::{BTreeMap, HashMap};

use cnnc_ir::{Tensor, TensorType};
use egg::{Analysis, DidMerge, EGraph, Id};

use crate::lang::{AttrEntry, AttrTable, Cnn, ProposalId, WeightRef};

/// What the leaves of an e-graph refer to, and the per-class facts rules rely on.
#[derive(Clone, Debug, Default)]
pub struct CnnAnalysis {
    pub attrs: AttrTable,
    /// The weight store, by [`WeightRef`] index.
    pub weights: Vec<Tensor>,
    /// Names of the weights (for the IR nodes they become).
    pub weight_names: Vec<String>,
    /// Graph inputs, by [`InputRef`] index.
    pub inputs: Vec<(String, TensorType)>,
    /// Graph output names, in the order of the `outputs` root's children.
    pub output_names: Vec<String>,
    /// The graph's name.
    pub graph_name: String,
    /// Weights rules derived, by a key naming the rule and its operands, so that a rule
    /// applied again in a later iteration reuses them.
    pub derived: HashMap<String, (Id, Id)>,
    /// The error charge of approximate proposals: a weight a proposal derived, which every
    /// variant exact rules build around the proposal shares, names the proposal whose predicted
    /// error extraction pays once when any node using it is chosen (`crate::approx`).
    pub charged: BTreeMap<WeightRef, ProposalId>,
}

/// Facts about an e-class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassData {
    /// Output types of the class's value(s); empty for leaves (attributes, indices) and the
    /// `outputs` root.
    pub types: Vec<TensorType>,
    /// Computed from weights alone (a weight, or an op whose operands all are).
    pub weights_only: bool,
}

impl Analysis<Cnn> for CnnAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut EGraph<Cnn, Self>, enode: &Cnn, _id: Id) -> ClassData {
        let a = &egraph.analysis;
        let data = |id: Id| &egraph[id].data;
        match enode {
            Cnn::Input(leaf) => {
                let types = match &egraph[*leaf].nodes[..] {
                    [Cnn::InputLeaf(r)] => a.inputs.get(r.0 as usize).map(|(_, t)| vec![t.clone()]),
                    _ => None,
                };
                ClassData { types: types.unwrap_or_default(), weights_only: false }
            }
            Cnn::Weight(leaf) => {
                let types = match &egraph[*leaf].nodes[..] {
                    [Cnn::WeightLeaf(r)] => a.weights.get(r.0 as usize).map(|t| vec![t.ty()]),
                    _ => None,
                };
                ClassData { types: types.unwrap_or_default(), weights_only: true }
            }
            Cnn::Get([idx, node]) => {
                let slot = match &egraph[*idx].nodes[..] {
                    [Cnn::Out(i)] => i.0 as usize,
                    _ => usize::MAX,
                };
                let d = data(*node);
                ClassData { types: d.types.get(slot).cloned().into_iter().collect(), weights_only: d.weights_only }
            }
            Cnn::Outputs(_) | Cnn::Attr(_) | Cnn::WeightLeaf(_) | Cnn::InputLeaf(_) | Cnn::Out(_) => {
                ClassData { types: Vec::new(), weights_only: false }
            }
            _ => {
                let children = enode.op_children().expect("every other variant is an op");
                let types = match &egraph[children[0]].nodes[..] {
                    [Cnn::Attr(r)] => a.attrs.get(*r).outputs.clone(),
                    _ => Vec::new(),
                };
                let weights_only = children[1..].iter().all(|&c| data(c).weights_only);
                ClassData { types, weights_only }
            }
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        // Equal values have equal types; a rule that merges classes of different types is a
        // bug, caught here in debug builds.
        debug_assert!(a.types.is_empty() || b.types.is_empty() || a.types == b.types, "{a:?} vs {b:?}");
        let mut changed_a = false;
        if a.types.is_empty() && !b.types.is_empty() {
            a.types = b.types.clone();
            changed_a = true;
        }
        // Weights-only is a property of the value: one weights-only form proves it.
        let changed_b = a.weights_only && !b.weights_only;
        if b.weights_only && !a.weights_only {
            a.weights_only = true;
            changed_a = true;
        }
        DidMerge(changed_a, changed_b)
    }
}

/// The weight a class holds, if it contains a `(weight wN)` node.
pub fn weight_of(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id) -> Option<WeightRef> {
    egraph[class].nodes.iter().find_map(|n| match n {
        Cnn::Weight(leaf) => egraph[*leaf].nodes.iter().find_map(|l| match l {
            Cnn::WeightLeaf(r) => Some(*r),
            _ => None,
        }),
        _ => None,
    })
}

/// The attribute entry of an `@n` leaf class.
pub fn attr_of(egraph: &EGraph<Cnn, CnnAnalysis>, class: Id) -> Option<&AttrEntry> {
    egraph[class].nodes.iter().find_map(|n| match n {
        Cnn::Attr(r) if (r.0 as usize) < egraph.analysis.attrs.len() => Some(egraph.analysis.attrs.get(*r)),
        _ => None,
    })
}

/// Adds `tensor` to the weight store and returns the class of `(weight wN)`.
pub fn add_weight(egraph: &mut EGraph<Cnn, CnnAnalysis>, tensor: Tensor, name: String) -> Id {
    let r = WeightRef(u32::try_from(egraph.analysis.weights.len()).expect("fewer than 2^32 weights"));
    egraph.analysis.weights.push(tensor);
    egraph.analysis.weight_names.push(name);
    let leaf = egraph.add(Cnn::WeightLeaf(r));
    egraph.add(Cnn::Weight(leaf))
}
