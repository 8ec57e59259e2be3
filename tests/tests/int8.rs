//! Quantized models from outside: onnxruntime's own int8 mnist_cnn in its QOperator form
//! (QLinearConv, u8 MaxPool, com.microsoft QGemm) and its QDQ form, made by
//! `fixtures/scripts/make_int8_models.py` with goldens from onnxruntime 1.32 on a VNNI host
//! (whose u8×i8 kernels are exact). Each is imported, run by the reference interpreter and by
//! the JIT (before and after `-O1`), and compared with onnxruntime on the integers that feed
//! the final DequantizeLinear.

use cnnc_ir::{DType, Graph, Op, QuantParams, Tensor, TensorType, VerifiedGraph, verify};
use cnnc_passes::{OptConfig, TableCost, mac_estimate, optimize_exact};
use cnnc_runtime::{Model, run_reference};
use cnnc_tests::{fixtures_dir, import_with_inputs, ordered_inputs, values_f64};

/// The final DequantizeLinear of both models: `logits = (q − 149) · 0.98107…` (meta.json).
const OUT_SCALE: f64 = 0.9810721278190613;
const OUT_ZERO_POINT: f64 = 149.0;

struct Case {
    graph: VerifiedGraph,
    inputs: Vec<Tensor>,
    /// onnxruntime's u8 values feeding the final DequantizeLinear, [16, 10].
    want: Vec<f64>,
}

fn case(form: &str) -> Case {
    let dir = fixtures_dir();
    let golden = dir.join("goldens/mnist_cnn_int8");
    let inputs = cnnc::npy::read_npz(&golden.join("inputs.npz")).expect("inputs.npz");
    let outputs = cnnc::npy::read_npz(&golden.join(format!("outputs.{form}.npz"))).expect("outputs");
    let want = outputs.iter().find(|(k, _)| k != "logits").map(|(_, t)| values_f64(t)).expect("the integer output");
    let graph = import_with_inputs(&dir.join(format!("models/mnist_cnn.{form}.onnx")), &inputs);
    let inputs = ordered_inputs(&graph, &inputs);
    Case { graph, inputs, want }
}

/// The integers behind cnnc's logits: `logits / scale + zero point` (exact up to the f32
/// product the DequantizeLinear rounded, far below half a step).
fn integers(logits: &Tensor) -> Vec<f64> {
    values_f64(logits).iter().map(|&l| (l / OUT_SCALE + OUT_ZERO_POINT).round()).collect()
}

/// How many of `got` differ from `want` by more than 0, 1 and 2 steps.
fn deviations(got: &[f64], want: &[f64]) -> [usize; 3] {
    assert_eq!(got.len(), want.len());
    let count = |d: f64| got.iter().zip(want).filter(|(a, b)| (*a - *b).abs() > d).count();
    [count(0.0), count(1.0), count(2.0)]
}

fn run_jit(graph: &VerifiedGraph, inputs: &[Tensor]) -> Tensor {
    let mut model = Model::compile(graph).expect("compiles");
    model.set_threads(1);
    let one = model.run(inputs).expect("runs").remove(0);
    // Work units never split a reduction: the same bits on more threads.
    model.set_threads(2);
    assert_eq!(model.run(inputs).expect("runs").remove(0), one, "1 vs 2 threads");
    one
}

fn optimized(graph: &VerifiedGraph) -> VerifiedGraph {
    let mut table = TableCost::new(1);
    let (g, _) = optimize_exact(graph, &OptConfig::lossless(), &mut table, &mut mac_estimate).expect("optimizes");
    verify(g).expect("the optimized graph verifies")
}

/// The QOperator model is integer arithmetic end to end (QLinearConv, u8 max-pool, QGemm), which
/// cnnc computes exactly as onnxruntime's VNNI kernels do: every one of the 160 integers
/// equal (tolerance 0), in the reference, the JIT and the `-O1` JIT.
#[test]
fn qoperator_mnist_matches_onnxruntime_exactly() {
    let c = case("qop");
    let reference = run_reference(&c.graph, &c.inputs).expect("reference runs").remove(0);
    assert_eq!(deviations(&integers(&reference), &c.want), [0, 0, 0], "reference vs onnxruntime");
    let jit = run_jit(&c.graph, &c.inputs);
    assert_eq!(jit, reference, "JIT vs reference (bit for bit)");
    let o1 = optimized(&c.graph);
    assert_eq!(run_jit(&o1, &c.inputs), reference, "-O1 JIT vs reference");
}

/// The QDQ model at `-O0` computes each layer in f32 between its DequantizeLinear and
/// QuantizeLinear, which rounds differently from onnxruntime's fused integer kernels: the
/// issue's bound, at least 99.9 % of the integers within one step (here: all 160) and none
/// beyond two.
#[test]
fn qdq_mnist_is_within_one_step_of_onnxruntime() {
    let c = case("qdq");
    let reference = run_reference(&c.graph, &c.inputs).expect("reference runs").remove(0);
    let [_, over1, over2] = deviations(&integers(&reference), &c.want);
    assert_eq!((over1, over2), (0, 0), "reference: integers more than 1 / 2 steps from onnxruntime");
    let jit = run_jit(&c.graph, &c.inputs);
    let [_, over1, over2] = deviations(&integers(&jit), &c.want);
    assert_eq!((over1, over2), (0, 0), "JIT: integers more than 1 / 2 steps from onnxruntime");
}

/// At `-O1` the QDQ rules (`passes/src/rules/qdq.rs`) turn each DequantizeLinear → conv/gemm →
/// QuantizeLinear chain into one integer op, as onnxruntime's graph optimizer does: all four
/// layers become `qlinear-…` ops, no f32 conv or gemm is left, and every integer equals
/// onnxruntime's (tolerance 0).
#[test]
fn qdq_mnist_at_o1_runs_integer_ops_and_matches_onnxruntime_exactly() {
    let c = case("qdq");
    let o1 = optimized(&c.graph);
    let count = |f: fn(&Op) -> bool| o1.node_ids().filter(|&id| f(&o1.node(id).op)).count();
    assert_eq!(count(|op| matches!(op, Op::QLinear(_))), 4, "quantized layers:\n{}", *o1);
    assert_eq!(count(|op| matches!(op, Op::Conv(_) | Op::Gemm { .. } | Op::MatMul | Op::Fused(_))), 0);
    let jit = run_jit(&o1, &c.inputs);
    assert_eq!(deviations(&integers(&jit), &c.want), [0, 0, 0], "-O1 JIT vs onnxruntime");
    let reference = run_reference(&o1, &c.inputs).expect("reference runs").remove(0);
    assert_eq!(jit, reference, "JIT vs reference (bit for bit)");
}

/// The vectorized per-tensor QuantizeLinear / DequantizeLinear kernels (16 elements per step,
/// the scalar loop for the tail) against the reference, bit for bit, on values that exercise
/// every rule: ties (x/s on .5), saturation at both ends, ±∞ and NaN (→ the zero point), huge
/// finite values, for u8 and i8 with several zero points, 1,003 elements (a tail of 11).
#[test]
fn vector_quantize_and_dequantize_equal_the_reference() {
    let n = 1003;
    let x: Vec<f32> = (0..n)
        .map(|i| match i % 13 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            3 => 1e30,
            4 => -1e30,
            5 => (i as f32 - 500.0) * 0.25, // ties at scale 0.5
            _ => ((i * 7919) % 1000) as f32 * 0.37 - 185.0,
        })
        .collect();
    for (to, zp) in [(DType::U8, 0), (DType::U8, 131), (DType::I8, -7), (DType::I8, 0)] {
        let p = QuantParams::per_tensor(0.5, zp);
        let mut g = Graph::new("qdq");
        let xin = g.add_input("x", TensorType::f32([n]));
        let q = g.add_node("q", Op::Quantize { params: p.clone(), to }, &[xin]).expect("q")[0];
        let d = g.add_node("d", Op::Dequantize(p), &[q]).expect("d")[0];
        g.add_output("q", q);
        g.add_output("d", d);
        let g = verify(g).expect("verifies");
        let inputs = [Tensor::from_f32(vec![n], x.clone()).expect("x")];
        let want = run_reference(&g, &inputs).expect("reference");
        let got = run_jit_all(&g, &inputs);
        assert_eq!(got[0], want[0], "{to} zero point {zp}: quantize");
        let bits = |t: &Tensor| t.as_f32().expect("f32").iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got[1]), bits(&want[1]), "{to} zero point {zp}: dequantize");
    }
}

fn run_jit_all(graph: &VerifiedGraph, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut model = Model::compile(graph).expect("compiles");
    model.set_threads(1);
    model.run(inputs).expect("runs")
}
