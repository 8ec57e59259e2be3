//! DAG-aware extraction (`cnnc_passes::extract_dag`): a value with several consumers is paid
//! once, so a rewrite that would duplicate a conv for one consumer is not taken, where tree
//! extraction takes it; on the real models the exact rules then remove work and never add a conv.
//!
//! Tolerance: rel-L2 ≤ the golden's bound (max(1e-5, 4 × onnxruntime's own on-vs-off)) for the
//! optimized graph through the reference and through the JIT, against the original through the
//! reference, on the golden's real-data input; the rules are exact up to f32 reordering, except
//! that the MAC estimate picks Winograd for large 3×3 convs, whose JIT kernels round
//! differently: wherever a Winograd layer is chosen the JIT bound is rel-L2 ≤ 1e-4, the -O1
//! bound (ARCHITECTURE.md § Winograd convolution); the reference computes the direct sum for
//! every algorithm.

use cnnc_ir::{Graph, Op, VerifiedGraph, verify};
use cnnc_passes::{
    Limits, Loaded, MacCost, Seed, exact_rules, extract_dag_seeded, saturate, to_egraph, to_graph, winograd_layers,
};
use cnnc_runtime::run_reference;
use cnnc_tests::{import_with_inputs, load_golden, model_path, ordered_inputs, rel_l2};
use egg::{AstSize, Extractor};

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.node_ids().filter(|&id| pred(&g.node(id).op)).count()
}

/// The op itself, or a fused op's base.
fn unfused(op: &Op) -> &Op {
    match op {
        Op::Fused(f) => &f.base,
        op => op,
    }
}

/// Saturates with the exact rules, then extracts by tree size and by DAG cost.
fn both(g: &VerifiedGraph) -> (VerifiedGraph, VerifiedGraph, f64) {
    let loaded = to_egraph(g);
    let seed = Seed::of(&loaded.egraph);
    let (Loaded { egraph, root }, _) = saturate(loaded, &exact_rules(), Limits::default());
    let (_, tree) = Extractor::new(&egraph, AstSize).find_best(root);
    let (dag, cost) = extract_dag_seeded(&egraph, root, &MacCost::default(), &seed).expect("extracts");
    let tree = verify(to_graph(&tree, &egraph.analysis).expect("graph")).expect("verifies");
    let dag = verify(to_graph(&dag, &egraph.analysis).expect("graph")).expect("verifies");
    (tree, dag, cost)
}

/// `conv + k` folds into a conv with bias `k`, but the plain conv also feeds a relu: keeping
/// both convs would do the conv's work twice.
const SHARED: &str = r#"graph "shared" {
  %x = input f32[1,2,8,8]
  %w = weight f32[3,2,3,3] [0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.11, -0.21, 0.31, 0.06, -0.16, 0.26, 0.13, -0.09, 0.03, 0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02, 0.4, -0.1, 0.2, 0.07, -0.17, 0.27, 0.14, -0.04, 0.01, 0.11, -0.21, 0.31, 0.06, -0.16, 0.26, 0.13, -0.09, 0.03, 0.1, -0.2, 0.3, 0.05, -0.15, 0.25, 0.12, -0.08, 0.02]
  %k = weight f32[] [3.0]
  %c = conv{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1}(%x, %w) : f32[1,3,8,8]
  %a = add(%c, %k) : f32[1,3,8,8]
  %r = relu(%c) : f32[1,3,8,8]
  %y = mul(%a, %r) : f32[1,3,8,8]
  output "y" = %y
}"#;

#[test]
fn a_shared_conv_is_paid_once_so_it_is_not_duplicated() {
    let g = verify(SHARED.parse::<Graph>().expect("parses")).expect("verifies");
    let (tree, dag, _) = both(&g);
    let convs = |g: &Graph| count(g, |op| matches!(unfused(op), Op::Conv(_)));
    assert_eq!(convs(&tree), 2, "tree extraction keeps a folded copy of the conv for the add");
    assert_eq!(convs(&dag), 1, "DAG extraction pays the conv once and keeps the add");
    let x = cnnc_ir::Tensor::from_f32([1, 2, 8, 8], (0..128).map(|i| (i as f32 * 0.37).sin()).collect())
        .expect("128 values");
    let want = run_reference(&g, std::slice::from_ref(&x)).expect("runs");
    let got = run_reference(&dag, &[x]).expect("runs");
    assert!(rel_l2(&got[0], &want[0]) <= 1e-6);
}

fn check_model(stem: &str) {
    let Some(path) = model_path(stem) else { return };
    let golden = load_golden(stem);
    let graph = import_with_inputs(&path, &golden.inputs);
    let inputs = ordered_inputs(&graph, &golden.inputs);
    let (_, dag, cost) = both(&graph);
    let heavy = |g: &Graph| {
        count(g, |op| matches!(unfused(op), Op::Conv(_) | Op::ConvTranspose(_) | Op::Gemm { .. } | Op::MatMul))
    };
    let bns = |g: &Graph| count(g, |op| matches!(op, Op::BatchNorm { .. }));
    eprintln!(
        "{stem}: {} → {} nodes, convs {} → {}, BatchNorms {} → {}, cost {cost:.3e}",
        graph.node_count(),
        dag.node_count(),
        heavy(&graph),
        heavy(&dag),
        bns(&graph),
        bns(&dag)
    );
    assert!(heavy(&dag) <= heavy(&graph), "{stem}: extraction added a conv");
    assert!(dag.node_count() <= graph.node_count(), "{stem}: extraction added nodes");
    assert_eq!(bns(&dag), 0, "{stem}: every BatchNorm folds");
    // Nothing computed from weights alone is left to run: the importer folds such subgraphs
    // and the rules compute their derived constants when they apply.
    let is_weight = |v: &cnnc_ir::ValueRef| matches!(dag.node(v.node).op, Op::Weight(_));
    let constant: Vec<&str> = dag
        .node_ids()
        .filter(|&id| !dag.node(id).op.is_source() && dag.node_inputs(id).iter().all(is_weight))
        .map(|id| dag.node(id).name.as_str())
        .collect();
    assert!(constant.is_empty(), "{stem}: weights-only nodes left: {constant:?}");
    let want = run_reference(&graph, &inputs).expect("before");
    let got = run_reference(&dag, &inputs).expect("after");
    // The optimized graph also compiles and runs natively (what an -O1 artifact does).
    let jit = cnnc_runtime::Model::compile(&dag).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let native = jit.run(&inputs).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let winograd = winograd_layers(&dag);
    let count = graph.outputs().len();
    assert_eq!((got.len(), want.len(), native.len()), (count, count, count), "{stem}: output counts");
    for (((o, g), w), n) in graph.outputs().iter().zip(&got).zip(&want).zip(&native) {
        let tol = golden.tolerance[&o.name].max(1e-5);
        let jit_tol = if winograd > 0 { tol.max(1e-4) } else { tol };
        let (e, en) = (rel_l2(g, w), rel_l2(n, w));
        eprintln!(
            "{stem} `{}`: -O1 reference {e:.3e} (bound {tol:.1e}), -O1 JIT {en:.3e} (bound {jit_tol:.1e}, {winograd} Winograd layers) vs -O0 reference",
            o.name
        );
        assert!(e <= tol && en <= jit_tol, "{stem} `{}`: rel-L2 {e:.3e} / JIT {en:.3e}", o.name);
    }
}

cnnc_tests::shared_model_tests!(
    /// Every shared model through the exact rules and DAG extraction (what `cnnc opt -O1` runs).
    exact_rules_with_dag_extraction,
    check_model
);
