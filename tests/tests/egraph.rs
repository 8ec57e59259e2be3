//! IR ↔ e-graph conversion (`cnnc_passes::{to_egraph, to_graph}`): every shared model goes into
//! an e-graph and back unchanged in meaning, shared subgraphs stay shared, identical
//! subexpressions hash-cons into one e-class, and the analysis knows types and constness.
//!
//! Tolerance: none. Without rewrites the round trip must rebuild the same ops on the same
//! operands, so the reference interpreter's outputs are compared bit for bit.

use cnnc_ir::{Graph, Tensor, verify};
use cnnc_passes::{Cnn, to_egraph, to_graph};
use cnnc_runtime::run_reference;
use cnnc_tests::{import_with_inputs, load_golden, model_path, ordered_inputs};
use egg::{AstSize, Extractor};

/// Graph → e-graph → extracted term → graph.
fn round_trip(g: &cnnc_ir::VerifiedGraph) -> (Graph, usize) {
    let loaded = to_egraph(g);
    let (_, expr) = Extractor::new(&loaded.egraph, AstSize).find_best(loaded.root);
    let classes = loaded.egraph.number_of_classes();
    (to_graph(&expr, &loaded.egraph.analysis).expect("an extracted term is a graph"), classes)
}

fn bits(t: &Tensor) -> Vec<u8> {
    t.data().to_le_bytes()
}

fn check_model(stem: &str) {
    let Some(path) = model_path(stem) else { return };
    let golden = load_golden(stem);
    let graph = import_with_inputs(&path, &golden.inputs);
    let inputs = ordered_inputs(&graph, &golden.inputs);
    let (back, classes) = round_trip(&graph);
    // Every op node and weight of the original is one e-class (no duplicates in these models
    // beyond what hash-consing merges), plus the leaves.
    assert!(back.node_count() <= graph.node_count(), "{stem}: {} nodes from {}", back.node_count(), graph.node_count());
    assert!(classes >= back.node_count(), "{stem}: {classes} e-classes for {} nodes", back.node_count());
    let back = verify(back).unwrap_or_else(|e| panic!("{stem}: the rebuilt graph does not verify: {e}"));
    assert_eq!(back.outputs().len(), graph.outputs().len());
    for (a, b) in back.outputs().iter().zip(graph.outputs()) {
        assert_eq!(a.name, b.name);
        assert_eq!(back.value_type(&a.value), graph.value_type(&b.value), "{stem} `{}`", a.name);
    }
    let want = run_reference(&graph, &inputs).expect("reference on the original");
    let got = run_reference(&back, &inputs).expect("reference on the round trip");
    for ((o, g), w) in graph.outputs().iter().zip(&got).zip(&want) {
        assert!(bits(g) == bits(w), "{stem} `{}`: outputs differ after the round trip", o.name);
    }
    eprintln!("{stem}: {} nodes → {classes} e-classes → {} nodes", graph.node_count(), back.node_count());
}

cnnc_tests::shared_model_tests!(round_trip_keeps_every_shared_model, check_model);

const TWIN_CONVS: &str = r#"graph "twins" {
  %x = input f32[1,1,4,4]
  %w = weight f32[2,1,1,1] [0.5, -1.0]
  %a = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%x, %w) : f32[1,2,4,4]
  %b = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%x, %w) : f32[1,2,4,4]
  %r = relu(%a) : f32[1,2,4,4]
  %s = add(%r, %b) : f32[1,2,4,4]
  %parts = split{axis=1, sizes=[1, 1]}(%s) : f32[1,1,4,4], f32[1,1,4,4]
  %k = mul(%w, %w) : f32[2,1,1,1]
  output "y" = %parts:1
  output "k" = %k
}"#;

#[test]
fn identical_subexpressions_share_one_eclass_and_the_round_trip_keeps_one() {
    let g = verify(TWIN_CONVS.parse::<Graph>().expect("parses")).expect("verifies");
    let loaded = to_egraph(&g);
    let eg = &loaded.egraph;
    let convs: Vec<_> = eg.classes().filter(|c| c.nodes.iter().any(|n| matches!(n, Cnn::Conv(_)))).collect();
    assert_eq!(convs.len(), 1, "the two identical convs are one e-class");
    let (back, _) = round_trip(&g);
    let n_convs = back.node_ids().filter(|&id| matches!(back.node(id).op, cnnc_ir::Op::Conv(_))).count();
    assert_eq!(n_convs, 1);
    let back = verify(back).expect("verifies");
    let x = Tensor::from_f32([1, 1, 4, 4], (0..16).map(|i| i as f32 - 7.5).collect()).expect("16 values");
    let want = run_reference(&g, std::slice::from_ref(&x)).expect("runs");
    let got = run_reference(&back, &[x]).expect("runs");
    assert_eq!(got, want);
}

#[test]
fn the_analysis_gives_types_and_weights_only() {
    let g = verify(TWIN_CONVS.parse::<Graph>().expect("parses")).expect("verifies");
    let loaded = to_egraph(&g);
    let eg = &loaded.egraph;
    let class_of = |pred: &dyn Fn(&Cnn) -> bool| {
        eg.classes().find(|c| c.nodes.iter().any(pred)).unwrap_or_else(|| panic!("no such class"))
    };
    let k = class_of(&|n| matches!(n, Cnn::Binary(c) if c.len() == 3 && eg[c[1]].data.weights_only));
    assert!(k.data.weights_only, "w·w is computed from weights alone");
    assert_eq!(k.data.types[0].shape, vec![2, 1, 1, 1]);
    let conv = class_of(&|n| matches!(n, Cnn::Conv(_)));
    assert!(!conv.data.weights_only, "a conv of an input is not constant");
    assert_eq!(conv.data.types[0].shape, vec![1, 2, 4, 4]);
    let split = class_of(&|n| matches!(n, Cnn::Split(_)));
    assert_eq!(split.data.types.len(), 2, "a split's class carries both output types");
    let get = class_of(&|n| matches!(n, Cnn::Get(_)));
    assert_eq!(get.data.types.len(), 1);
}
