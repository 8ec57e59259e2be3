//! The direct conv, 1×1, grouped, depthwise, 1-D and 3-D conv kernels and the Gemm/MatMul
//! kernels split into work units: each graph runs through `Model` at 1, 2 and 3 threads (one
//! call over every unit, then one call per unit from a shared counter); the outputs must be
//! identical bit for bit, every kernel must have split, and they must match the reference.
//!
//! Every test in this binary first sets `CNNC_KERNELS=cranelift` (see [`portable`]), so the
//! dense convs take the pure-Cranelift direct path even on hosts with the AVX2 microkernel.
//! Shapes are odd so that rows end in partial pixel tiles, output channels in partial tiles,
//! and input channels in partial blocks (the direct conv's partial sums in the output).
//!
//! Tolerance against the reference: rel-L2 ≤ 2e-6 and every element within 2e-5·max|ref|.
//! The kernels sum up to 1024 products of magnitude ≤ 1 in f32 (the reference in f64), so
//! rounding stays within about 1e-6 relative; a wrong tap, a unit computed twice into the
//! partial sums or a skipped tail is off by orders of magnitude.

mod common;

use std::sync::Once;

use cnnc_ir::{ConvAttrs, Graph, Op, Tensor, TensorType, VerifiedGraph, verify};
use cnnc_runtime::testing::rel_l2;
use cnnc_runtime::{Model, run_reference};

/// Forces the portable Cranelift kernels for the whole test binary.
fn portable() {
    static SET: Once = Once::new();
    // SAFETY: every test of this binary calls `portable` before doing anything else, so this
    // single write happens before any read of the environment by its threads (the others wait
    // on `SET`), and no foreign code in the process reads the environment concurrently.
    SET.call_once(|| unsafe { std::env::set_var("CNNC_KERNELS", "cranelift") });
}

/// Runs `g` at 1, 2 and 3 threads: the outputs must be bit-identical and every launch must
/// have run on several threads. Returns the outputs.
fn run_split(g: &VerifiedGraph, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut model = Model::compile(g).unwrap_or_else(|e| panic!("{e}"));
    model.set_threads(1);
    let want = model.run(inputs).expect("runs");
    for threads in [2, 3] {
        model.set_threads(threads);
        let (got, profile) = model.run_profiled(inputs).expect("runs");
        for l in &profile.layers {
            assert!(
                l.units >= 2 && l.threads > 1,
                "`{}` ({}): {} units on {} threads",
                l.name,
                l.op,
                l.units,
                l.threads
            );
        }
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let same =
                a.as_f32().expect("f32").iter().zip(b.as_f32().expect("f32")).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "output {i}: {threads} threads differ from 1 thread");
        }
    }
    want
}

fn close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let (g, w) = (got.as_f32().expect("f32"), want.as_f32().expect("f32"));
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
        assert!((a - b).abs() <= 2e-5 * scale, "{what}: element {i}: {a} vs reference {b}");
    }
    let rel = rel_l2(g, w);
    assert!(rel <= 2e-6, "{what}: rel-L2 {rel:.3e}");
}

/// Split runs agree bit for bit, and with the reference.
fn check(g: Graph, inputs: &[Tensor]) {
    let g = verify(g).unwrap_or_else(|e| panic!("{e}"));
    let got = run_split(&g, inputs);
    let want = run_reference(&g, inputs).expect("reference runs");
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        close(&format!("output {i}"), got, want);
    }
}

/// A conv of `x` to `m` channels: `kernel`, `strides`, `pads` (ONNX order), `group`, with a
/// bias; `runtime_weights` makes the weights a graph input instead of a constant.
struct Conv {
    x: Vec<usize>,
    m: usize,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<usize>,
    group: usize,
    runtime_weights: bool,
}

impl Conv {
    fn new(x: &[usize], m: usize, kernel: &[usize]) -> Conv {
        let ns = kernel.len();
        Conv {
            x: x.to_vec(),
            m,
            kernel: kernel.to_vec(),
            strides: vec![1; ns],
            dilations: vec![1; ns],
            pads: vec![0; 2 * ns],
            group: 1,
            runtime_weights: false,
        }
    }

    fn strides(self, strides: &[usize]) -> Conv {
        Conv { strides: strides.to_vec(), ..self }
    }

    fn dilations(self, dilations: &[usize]) -> Conv {
        Conv { dilations: dilations.to_vec(), ..self }
    }

    fn pads(self, pads: &[usize]) -> Conv {
        Conv { pads: pads.to_vec(), ..self }
    }

    fn group(self, group: usize) -> Conv {
        Conv { group, ..self }
    }

    fn runtime_weights(self) -> Conv {
        Conv { runtime_weights: true, ..self }
    }

    fn check(self) {
        portable();
        let mut g = Graph::new("conv");
        let x = g.add_input("x", TensorType::f32(self.x.clone()));
        let mut w_shape = vec![self.m, self.x[1] / self.group];
        w_shape.extend(&self.kernel);
        let mut inputs = vec![common::random(&self.x, 1)];
        let w = if self.runtime_weights {
            inputs.push(common::random(&w_shape, 2));
            g.add_input("w", TensorType::f32(w_shape))
        } else {
            g.add_weight("w", common::random(&w_shape, 2))
        };
        let b = g.add_weight("b", common::random(&[self.m], 3));
        let attrs = ConvAttrs::new(&self.kernel)
            .strides(&self.strides)
            .dilations(&self.dilations)
            .pads(&self.pads)
            .group(self.group);
        let y = g.add_node("conv", Op::Conv(attrs), &[x, w, b]).expect("types");
        g.add_output("y", y[0]);
        check(g, &inputs);
    }
}

#[test]
fn dense_3x3_padded_conv_units_are_bit_identical() {
    // 24 channels (3 tiles of 8) × 30 rows of 29 columns (border tiles and a 1-pixel tail).
    Conv::new(&[1, 20, 30, 29], 24, &[3, 3]).pads(&[1, 1, 1, 1]).check();
    // 50 input channels: two channel blocks, partial sums kept in the output between them;
    // 13 output channels: a full tile and a 5-channel one.
    Conv::new(&[1, 50, 19, 22], 13, &[3, 3]).pads(&[1, 1, 1, 1]).check();
}

/// A conv below one unit's worth of work (mnist_cnn's first layer, 226 k MACs) still splits
/// over the host's threads, where it has more than one.
#[test]
fn small_conv_splits_over_the_hosts_threads() {
    portable();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: this host has one thread, so small convs keep one unit");
        return;
    }
    Conv::new(&[1, 1, 28, 28], 32, &[3, 3]).pads(&[1, 1, 1, 1]).check();
}

#[test]
fn strided_dilated_conv_units_are_bit_identical() {
    Conv::new(&[2, 12, 41, 37], 20, &[3, 3]).strides(&[2, 2]).pads(&[1, 0, 2, 1]).check();
    Conv::new(&[1, 8, 45, 43], 12, &[3, 2]).dilations(&[2, 3]).pads(&[2, 1, 2, 2]).check();
    Conv::new(&[1, 3, 64, 64], 16, &[7, 7]).strides(&[2, 2]).pads(&[3, 3, 3, 3]).check();
}

#[test]
fn pointwise_conv_units_are_bit_identical() {
    // 37·41 = 1517 pixels in one row: pixel tiles of 6 cut into units, the last tile 5 wide.
    Conv::new(&[1, 64, 37, 41], 40, &[1, 1]).check();
    Conv::new(&[2, 64, 13, 13], 36, &[1, 1]).check();
    // Stride 2: rows of 32 output pixels.
    Conv::new(&[1, 64, 63, 64], 40, &[1, 1]).strides(&[2, 2]).check();
}

#[test]
fn grouped_and_runtime_weight_conv_units_are_bit_identical() {
    Conv::new(&[1, 24, 33, 35], 36, &[3, 3]).pads(&[1, 1, 1, 1]).group(3).check();
    Conv::new(&[1, 16, 29, 30], 12, &[3, 3]).pads(&[1, 1, 1, 1]).runtime_weights().check();
}

#[test]
fn depthwise_conv_units_are_bit_identical() {
    Conv::new(&[1, 16, 60, 61], 16, &[3, 3]).pads(&[1, 1, 1, 1]).group(16).check();
    Conv::new(&[2, 12, 61, 58], 24, &[3, 3]).strides(&[2, 2]).pads(&[1, 1, 1, 1]).group(12).check();
    Conv::new(&[1, 8, 40, 40], 8, &[5, 5]).pads(&[2, 2, 2, 2]).group(8).check();
}

#[test]
fn conv1d_and_conv3d_units_are_bit_identical() {
    Conv::new(&[2, 8, 3001], 12, &[5]).pads(&[2, 2]).check();
    // 7 dilated taps: a loop over chunks of 3 taps and a last chunk of 1.
    Conv::new(&[1, 6, 2500], 16, &[7]).dilations(&[2]).pads(&[6, 5]).check();
    Conv::new(&[1, 4, 9, 20, 21], 8, &[3, 3, 3]).pads(&[1, 1, 1, 1, 1, 1]).check();
}

/// `op(operands…)`, operands a constant (`true`) or a graph input.
fn check_op(op: Op, operands: &[(&[usize], bool)]) {
    portable();
    let mut g = Graph::new("g");
    let mut inputs = Vec::new();
    let ins: Vec<_> = operands
        .iter()
        .enumerate()
        .map(|(i, &(shape, constant))| {
            let t = common::random(shape, 10 + i as u64);
            if constant {
                g.add_weight(format!("w{i}"), t)
            } else {
                inputs.push(t);
                g.add_input(format!("x{i}"), TensorType::f32(shape.to_vec()))
            }
        })
        .collect();
    let y = g.add_node("op", op, &ins).expect("types");
    g.add_output("y", y[0]);
    check(g, &inputs);
}

#[test]
fn gemm_and_matmul_units_are_bit_identical() {
    let gemm = |trans_b| Op::Gemm { alpha: 0.5, beta: 1.5, trans_a: false, trans_b };
    // 67 rows: 11 tiles of 6 rows and a 1-row tail; 45 columns: panels of 8 and a 5-wide one.
    check_op(gemm(false), &[(&[67, 130], false), (&[130, 45], true), (&[45], true)]);
    // Batch-1 GEMV: panels of 32 columns and a 8-wide one, cut into units.
    check_op(gemm(true), &[(&[1, 1024], false), (&[1000, 1024], true), (&[1, 1000], false)]);
    check_op(Op::MatMul, &[(&[3, 37, 64], false), (&[64, 50], true)]);
    check_op(Op::MatMul, &[(&[2, 29, 40], false), (&[2, 40, 70], false)]);
}
