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

/// One `Op::Lookup` kernel shape: the table (a weight) and the operands' dtypes.
struct LookupCase {
    name: &'static str,
    table: Tensor,
    operands: Vec<DType>,
}

/// A byte pattern with no structure a kernel could get right by accident (not the identity,
/// not monotone, every bit varies).
fn scrambled(j: usize) -> u8 {
    ((j.wrapping_mul(2_654_435_761) >> 7) as u8) ^ (j as u8)
}

/// Every kernel shape: one u8 or i8 operand into a u8, i8 or f32 table (the f32 entries include
/// NaNs with payloads, a signaling and a negative NaN, ±0, ±∞ and subnormals, compared by bits),
/// and two operands into 65,536-entry u8 and f32 tables.
fn lookup_cases() -> Vec<LookupCase> {
    let bytes = |n: usize| (0..n).map(scrambled).collect::<Vec<u8>>();
    let floats = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|j| match j % 16 {
                0 => f32::from_bits(0x7fc0_0000 | j as u32),
                1 => -0.0,
                2 => f32::from_bits(0x7f80_0000 | (j as u32 + 1)),
                3 => f32::from_bits(0xffc0_0000 | j as u32),
                4 => f32::INFINITY,
                5 => f32::NEG_INFINITY,
                6 => f32::from_bits(j as u32 + 1),
                7 => 0.0,
                _ => (j as f32 - 128.5) * 0.37,
            })
            .collect()
    };
    vec![
        LookupCase {
            name: "u8 → u8",
            table: Tensor::from_u8([256], bytes(256)).expect("256"),
            operands: vec![DType::U8],
        },
        LookupCase {
            name: "i8 → i8",
            table: Tensor::from_i8([256], bytes(256).into_iter().map(|b| b as i8).collect()).expect("256"),
            operands: vec![DType::I8],
        },
        LookupCase {
            name: "u8 → f32",
            table: Tensor::from_f32([256], floats(256)).expect("256"),
            operands: vec![DType::U8],
        },
        LookupCase {
            name: "u8, i8 → u8",
            table: Tensor::from_u8([65536], bytes(65536)).expect("65536"),
            operands: vec![DType::U8, DType::I8],
        },
        LookupCase {
            name: "i8, u8 → f32",
            table: Tensor::from_f32([65536], floats(65536)).expect("65536"),
            operands: vec![DType::I8, DType::U8],
        },
    ]
}

/// Where a lookup's table comes from: a weight (the optimizer's tables; kernels may prepare
/// it at compile time) or a graph input (read at run time).
#[derive(Clone, Copy, Debug)]
enum Table {
    Weight,
    Input,
}

/// `y = lookup(table, x0[, x1])` over `[n]` elements, the operands graph inputs and the table
/// a weight or the first graph input.
fn lookup_graph(case: &LookupCase, n: usize, table: Table) -> VerifiedGraph {
    let mut g = Graph::new("lookup");
    let mut inputs = vec![match table {
        Table::Weight => g.add_weight("table", case.table.clone()),
        Table::Input => g.add_input("table", case.table.ty()),
    }];
    for (k, &dtype) in case.operands.iter().enumerate() {
        inputs.push(g.add_input(format!("x{k}"), TensorType::new(dtype, [n])));
    }
    let y = g.add_node("y", Op::Lookup, &inputs).expect("a well-typed lookup")[0];
    g.add_output("y", y);
    verify(g).expect("verifies")
}

/// The operands' bytes at element `i`: one operand runs through all 256 values in every 256
/// elements, two through all 65,536 pairs in every 65,536.
fn operand_bytes(n_operands: usize, i: usize) -> [u8; 2] {
    if n_operands == 1 {
        [(i * 167 + 89) as u8, 0]
    } else {
        let p = (i * 40_503 + 7) % 65_536;
        [(p >> 8) as u8, p as u8]
    }
}

fn lookup_inputs(case: &LookupCase, n: usize) -> Vec<Tensor> {
    let k_of = case.operands.len();
    (case.operands.iter().enumerate())
        .map(|(k, &dtype)| {
            let v: Vec<u8> = (0..n).map(|i| operand_bytes(k_of, i)[k]).collect();
            match dtype {
                DType::U8 => Tensor::from_u8([n], v),
                _ => Tensor::from_i8([n], v.into_iter().map(|b| b as i8).collect()),
            }
            .expect("n values")
        })
        .collect()
}

/// What `Op::Lookup` means, computed here on bytes: `table[256·a + b]` with `a`, `b` the
/// operands' bit patterns (i8 −1 is entry 255).
fn lookup_expected(case: &LookupCase, n: usize) -> Vec<u8> {
    let size = case.table.dtype().size_bytes();
    let table = case.table.data().to_le_bytes();
    (0..n)
        .flat_map(|i| {
            let [a, b] = operand_bytes(case.operands.len(), i).map(usize::from);
            let j = if case.operands.len() == 1 { a } else { 256 * a + b };
            table[j * size..(j + 1) * size].to_vec()
        })
        .collect()
}

/// `got` is `want` bit for bit (f32 NaN payloads and −0.0 included); names the first difference.
fn assert_same_bits(got: &Tensor, want_ty: &TensorType, want: &[u8], what: &str) {
    assert_eq!(&got.ty(), want_ty, "{what}: type");
    let size = want_ty.dtype.size_bytes();
    let got = got.data().to_le_bytes();
    if let Some(i) = (0..want.len() / size).find(|&i| got[i * size..(i + 1) * size] != want[i * size..(i + 1) * size]) {
        let at = i * size..(i + 1) * size;
        panic!("{what}: element {i} has bytes {:02x?}, expected {:02x?}", &got[at.clone()], &want[at]);
    }
}

/// `Op::Lookup` in the JIT (the host's default kernels: precompiled loops for byte tables on
/// an int8 tier, the Cranelift loop otherwise) and in the reference interpreter, against the
/// op's definition, bit for bit (tolerance 0: a lookup copies table entries). Sizes cover a
/// lone element, a tail shorter than any step (7), whole steps (64), a ragged tail (1,003) and
/// three 32,768-element work units (70,000), on one and two threads; the table is a weight or
/// a run-time input. tests/tests/lookup_tiers.rs forces each kernel tier.
#[test]
fn lookup_kernels_equal_the_reference() {
    for case in lookup_cases() {
        for table in [Table::Weight, Table::Input] {
            for n in [1, 7, 64, 1003, 70_000] {
                let g = lookup_graph(&case, n, table);
                let mut inputs = lookup_inputs(&case, n);
                if let Table::Input = table {
                    inputs.insert(0, case.table.clone());
                }
                let want = lookup_expected(&case, n);
                let ty = TensorType::new(case.table.dtype(), [n]);
                let what = format!("{} ({table:?} table) n={n}", case.name);
                let reference = run_reference(&g, &inputs).expect("reference runs").remove(0);
                assert_same_bits(&reference, &ty, &want, &format!("{what}: reference"));
                let mut model = Model::compile(&g).expect("compiles");
                for threads in [1, 2] {
                    model.set_threads(threads);
                    let got = model.run(&inputs).expect("runs").remove(0);
                    assert_same_bits(&got, &ty, &want, &format!("{what}: JIT on {threads} thread(s)"));
                }
            }
        }
    }
}

/// `qdq-max-pool` (`passes/src/rules/qdq.rs`): `Q(max-pool(DQ(x)))` with one set of per-tensor
/// parameters, as onnxruntime's quantizer writes around a MaxPool, is a max-pool of the bytes at
/// `-O1`: no quantize or dequantize is left, the JIT runs the byte kernel (`codegen/qpool.rs`)
/// and the result equals the unoptimized chain's reference output bit for bit (tolerance 0:
/// the rewrite is exact), for u8 and i8, padded, strided and ceil-mode windows.
#[test]
fn quantized_max_pool_at_o1_is_a_byte_max_pool_equal_to_the_qdq_chain() {
    use cnnc_ir::PoolAttrs;
    let pools = [
        PoolAttrs {
            kernel: vec![3, 3],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            ceil_mode: false,
        },
        PoolAttrs {
            kernel: vec![2, 2],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![0, 0, 1, 1],
            ceil_mode: true,
        },
        PoolAttrs { kernel: vec![3], strides: vec![3], dilations: vec![1], pads: vec![0, 2], ceil_mode: true },
    ];
    for (to, zp) in [(DType::U8, 131), (DType::I8, -7)] {
        for a in &pools {
            let shape: Vec<usize> = if a.kernel.len() == 2 { vec![1, 3, 11, 37] } else { vec![2, 3, 41] };
            let n: usize = shape.iter().product();
            let p = QuantParams::per_tensor(0.037, zp);
            let mut g = Graph::new("qpool");
            let xin = g.add_input("x", TensorType { dtype: to, shape: shape.clone() });
            let d = g.add_node("dq", Op::Dequantize(p.clone()), &[xin]).expect("dq")[0];
            let m = g.add_node("pool", Op::MaxPool(a.clone()), &[d]).expect("pool")[0];
            let q = g.add_node("q", Op::Quantize { params: p, to }, &[m]).expect("q")[0];
            g.add_output("y", q);
            let g = verify(g).expect("verifies");
            let bytes: Vec<u8> = (0..n).map(|i| ((i * 7919 + i / 5) % 256) as u8).collect();
            let x = if to == DType::U8 {
                Tensor::from_u8(shape.clone(), bytes).expect("x")
            } else {
                Tensor::from_i8(shape.clone(), bytes.iter().map(|&b| b as i8).collect()).expect("x")
            };
            let want = run_reference(&g, std::slice::from_ref(&x)).expect("reference").remove(0);
            let o = optimized(&g);
            let ops: Vec<&Op> = o.node_ids().map(|id| &o.node(id).op).collect();
            assert!(
                ops.iter().all(|op| !matches!(op, Op::Quantize { .. } | Op::Dequantize(_))),
                "{to} {a:?}: Q/DQ left: {ops:?}"
            );
            assert!(ops.iter().any(|op| matches!(op, Op::MaxPool(_))), "{to} {a:?}: no max-pool: {ops:?}");
            assert_eq!(run_jit(&o, std::slice::from_ref(&x)), want, "{to} {a:?}: -O1 JIT");
            assert_eq!(run_reference(&o, &[x]).expect("reference").remove(0), want, "{to} {a:?}: -O1 reference");
        }
    }
}
