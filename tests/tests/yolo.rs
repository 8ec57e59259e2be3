//! A YOLO-style detector whose 27 SiLUs are spelled `Mul(x, Sigmoid(x))` in both operand orders
//! (`fixtures/models/yolo_like.onnx`, made by `fixtures/scripts/make_yolo_like.py`): at `-O1`
//! every SiLU becomes one `swish` folded into its conv, no Sigmoid or Mul of a SiLU is left, and
//! the optimized graph still gives onnxruntime's output.
//!
//! Tolerance: the golden's bound, rel-L2 ≤ max(1e-5, 4 × onnxruntime's own on-vs-off) (here
//! 1e-5), for the reference; the JIT's bound is 1e-4 where the extraction picked Winograd convs
//! (ARCHITECTURE.md § Winograd convolution), else the same.

use cnnc_ir::{BinaryOp, Op, UnaryOp, verify};
use cnnc_passes::{OptConfig, TableCost, mac_estimate, optimize_exact, winograd_layers};
use cnnc_runtime::{Model, run_reference};
use cnnc_tests::{assert_close, import_with_inputs, load_golden, model_path, ordered_inputs};

/// The activation a node applies: its own unary op, or a fused op's activation.
fn activation(op: &Op) -> Option<UnaryOp> {
    match op {
        Op::Unary(u) => Some(*u),
        Op::Fused(f) => f.act,
        _ => None,
    }
}

#[test]
fn yolo_like_at_o1_runs_every_silu_fused_into_its_conv_and_matches_onnxruntime() {
    let Some(path) = model_path("yolo_like") else { return };
    let golden = load_golden("yolo_like");
    let graph = import_with_inputs(&path, &golden.inputs);
    let mut table = TableCost::new(1);
    let (out, report) =
        optimize_exact(&graph, &OptConfig::lossless(), &mut table, &mut mac_estimate).expect("optimizes");
    let opt = verify(out).expect("the optimized graph verifies");
    let silus: usize = ["silu", "silu-sx"]
        .iter()
        .map(|r| report.saturation.applied.iter().find(|(n, _)| n == r).map_or(0, |(_, c)| *c))
        .sum();
    assert_eq!(silus, 27, "{:?}", report.saturation.applied);
    let ops: Vec<&Op> = opt.node_ids().map(|id| &opt.node(id).op).collect();
    let sigmoids = ops.iter().filter(|op| matches!(op, Op::Unary(UnaryOp::Sigmoid))).count();
    let muls = ops.iter().filter(|op| matches!(op, Op::Binary(BinaryOp::Mul))).count();
    let swish = |op: &&&Op| matches!(activation(op), Some(UnaryOp::Swish { beta }) if beta == 1.0);
    let fused_swish = ops.iter().filter(|op| matches!(op, Op::Fused(_))).filter(swish).count();
    let class_scores = ops.iter().filter(|op| matches!(activation(op), Some(UnaryOp::Sigmoid))).count();
    assert_eq!((sigmoids, muls), (0, 0), "standalone sigmoids and muls left");
    assert_eq!(ops.iter().filter(swish).count(), fused_swish, "a swish left unfused");
    // 27 SiLUs, each after its own conv except where the importer's hash-consing shares one; the
    // two class-score Sigmoids are no SiLU and fuse into their convs as sigmoids.
    assert!(fused_swish >= 25, "{fused_swish} fused swish convs");
    assert_eq!(class_scores, 2);

    let inputs = ordered_inputs(&opt, &golden.inputs);
    let want = &golden.outputs[0].1;
    let tol = golden.tolerance[&golden.outputs[0].0];
    let reference = run_reference(&opt, &inputs).expect("reference");
    assert_close(&reference[0], want, tol, "yolo_like -O1 reference vs onnxruntime");
    let native = Model::compile(&opt).expect("compiles").run(&inputs).expect("runs");
    let jit_tol = if winograd_layers(&opt) > 0 { tol.max(1e-4) } else { tol };
    assert_close(&native[0], want, jit_tol, "yolo_like -O1 JIT vs onnxruntime");
}
