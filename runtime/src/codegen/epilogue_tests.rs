//! Fused epilogues `act(op + bias + residual)` in the conv, Gemm and MatMul kernels, against
//! the reference interpreter running the unfused graph `op → add(residual) → act`. No IR op
//! carries an epilogue yet, so the kernels are built and called here directly: the Cranelift
//! kernels, and the packed-GEMM conv path on the host's microkernels (`packed_*` tests). Every
//! kernel must also give the same bits when run unit by unit in reverse order.
//!
//! Tolerance: rel-L2 ≤ 1e-6. The kernels sum in f32 in another order than the f64 reference:
//! with up to 576 products of values of order 1/√fan_in that leaves a few 1e-7 relative error
//! in the pre-activation value (measured: at most 4.8e-7, in the channel-blocked cases, and
//! there with no epilogue at all). The residual add is one more f32 rounding on both sides;
//! the activations are exact selections (ReLU, Clip), one or two roundings (LeakyReLU,
//! HardSigmoid, HardSwish) or within 1.7e-7 relative (the inline sigmoid, and swish one more
//! product around it, see
//! `tests/jit_unary_inline.rs`), and none amplifies relative error by more than ~|x| ≤ a few.
//! A missed bias, residual or activation, a wrong lane, an epilogue applied to partial sums or
//! an unwritten element (outputs start as NaN) fails by orders of magnitude.

use cnnc_ir::{BinaryOp, ConvAttrs, Graph, Op, Tensor, TensorType, UnaryOp, ValueRef, verify};

use super::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit, conv, gemm};
use crate::run_reference;
use crate::testing::{random, rel_l2};

/// Values in [-1, 1) scaled by `1/√fan_in`, as trained weights are, so that outputs are of
/// order 1 and every activation is exercised in its non-trivial range (a two-sided Clip of
/// outputs of order 10 would keep little norm but all the rounding error near 0).
fn scaled_weights(shape: &[usize], fan_in: usize, seed: u64) -> Tensor {
    let t = random(shape, seed);
    let s = 1.0 / (fan_in.max(1) as f32).sqrt();
    Tensor::from_f32(shape.to_vec(), t.as_f32().expect("f32").iter().map(|v| v * s).collect()).expect("shape")
}

/// One input of the op: its value, and whether it is a weight (a constant at compile time).
struct Operand {
    t: Tensor,
    weight: bool,
}

fn input(t: Tensor) -> Operand {
    Operand { t, weight: false }
}

fn weight(t: Tensor) -> Operand {
    Operand { t, weight: true }
}

type EmitFused<'a> = &'a dyn Fn(&mut Jit, &EmitCx, &Epilogue) -> Result<Emitted, CompileError>;

/// `act(op(operands) + residual)` by the reference interpreter, unfused.
fn reference(op: &Op, operands: &[Operand], residual: Option<&Tensor>, act: Option<UnaryOp>) -> Tensor {
    let mut g = Graph::new("unfused");
    let mut feeds = Vec::new();
    let ins: Vec<ValueRef> = operands
        .iter()
        .enumerate()
        .map(|(i, o)| {
            if o.weight {
                g.add_weight(format!("w{i}"), o.t.clone())
            } else {
                feeds.push(o.t.clone());
                g.add_input(format!("x{i}"), o.t.ty())
            }
        })
        .collect();
    let mut y = g.add_node("op", op.clone(), &ins).expect("op types")[0];
    if let Some(r) = residual {
        feeds.push(r.clone());
        let rv = g.add_input("residual", r.ty());
        y = g.add_node("add", Op::Binary(BinaryOp::Add), &[y, rv]).expect("add types")[0];
    }
    if let Some(a) = act {
        y = g.add_node("act", Op::Unary(a), &[y]).expect("act types")[0];
    }
    g.add_output("y", y);
    let g = verify(g).unwrap_or_else(|e| panic!("{e}"));
    run_reference(&g, &feeds).expect("reference runs").remove(0)
}

/// Builds the fused kernel with `emit` and runs it on a table laid out like `Model::run`'s:
/// `[operands…, residual?, y, aux…]` (with scratch memory for [`Aux::Scratch`]). The output
/// starts as NaN so unwritten elements show. The kernel runs as one call over all its work
/// units, then unit by unit in reverse order (as threads may): both must give the same bits.
fn run_fused(
    emit: EmitFused,
    op: &Op,
    operands: &[Operand],
    residual: Option<&Tensor>,
    out: &TensorType,
    ep: &Epilogue,
) -> Result<Vec<f32>, CompileError> {
    let tensors: Vec<&Tensor> = operands.iter().map(|o| &o.t).chain(residual).collect();
    let inputs: Vec<TensorType> = tensors.iter().map(|t| t.ty()).collect();
    let consts: Vec<Option<&Tensor>> =
        operands.iter().map(|o| o.weight.then_some(&o.t)).chain(residual.map(|_| None)).collect();
    let outputs = [out.clone()];
    let cx = EmitCx { name: "fused", op, inputs: &inputs, outputs: &outputs, consts: &consts };
    let mut jit = Jit::new()?;
    let emitted = emit(&mut jit, &cx, ep)?;
    let (code, kernels) = jit.finish(&[emitted.func])?;
    let scratch_bytes = emitted.aux.iter().map(|a| if let Aux::Scratch(n) = a { *n } else { 0 }).max().unwrap_or(0);
    let mut scratch = vec![0u64; scratch_bytes.div_ceil(8)];
    let mut run = |calls: &[(u64, u64)]| {
        let mut y = vec![f32::NAN; out.numel()];
        let scratch = scratch.as_mut_ptr().cast();
        let mut table: Vec<*mut u8> =
            tensors.iter().map(|t| t.as_f32().expect("f32 operands").as_ptr() as *mut u8).collect();
        table.push(y.as_mut_ptr().cast());
        table.extend(emitted.aux.iter().map(|a| a.ptr().unwrap_or(scratch)));
        for &(lo, hi) in calls {
            // SAFETY: the table holds one buffer per kernel argument, each of the size and type
            // the kernel was compiled for (scratch as requested); `code` (which owns the kernel)
            // is alive; only `y` and the scratch are written.
            unsafe { kernels[0](table.as_ptr(), lo as i64, hi as i64) };
        }
        y
    };
    let whole = run(&[(0, emitted.units)]);
    let reversed: Vec<(u64, u64)> = (0..emitted.units).rev().map(|u| (u, u + 1)).collect();
    let by_unit = run(&reversed);
    assert!(
        whole.iter().zip(&by_unit).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{ep:?}: a unit-by-unit run differs from one call ({} units)",
        emitted.units
    );
    drop(code);
    Ok(whole)
}

/// Every activation the kernels fuse (Clip both two-sided and as ReLU6), and none.
fn activations() -> Vec<Option<UnaryOp>> {
    vec![
        None,
        Some(UnaryOp::Relu),
        Some(UnaryOp::LeakyRelu { alpha: 0.1 }),
        Some(UnaryOp::Clip { min: -0.5, max: 0.5 }),
        Some(UnaryOp::Clip { min: 0.0, max: 6.0 }),
        Some(UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 }),
        Some(UnaryOp::HardSwish),
        Some(UnaryOp::Sigmoid),
        Some(UnaryOp::Swish { beta: 1.0 }),
        Some(UnaryOp::Swish { beta: 1.702 }),
    ]
}

/// Checks `op` with every activation, with and without a residual, fused against unfused.
fn check_every_epilogue(what: &str, emit: EmitFused, op: &Op, operands: &[Operand]) {
    let out = reference(op, operands, None, None).ty();
    let res = random(&out.shape, 99);
    for act in activations() {
        for residual in [None, Some(&res)] {
            let ep = Epilogue { act, residual: residual.map(|_| operands.len()) };
            let want = reference(op, operands, residual, act);
            let got = run_fused(emit, op, operands, residual, &out, &ep)
                .unwrap_or_else(|e| panic!("{what} with {ep:?}: {e}"));
            let rel = rel_l2(&got, want.as_f32().expect("f32"));
            assert!(rel <= 1e-6, "{what} with {ep:?}: rel-L2 {rel:.3e}");
        }
    }
}

struct ConvCase {
    what: &'static str,
    x: Vec<usize>,
    m: usize,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    pads: Vec<usize>,
    group: usize,
    bias: bool,
    /// The weights are a kernel input rather than a constant packed at load.
    runtime_weights: bool,
    /// Compile with the host's microkernels, and require the packed-GEMM path (skipped on a
    /// host without them).
    packed: bool,
}

impl ConvCase {
    fn new(what: &'static str, x: &[usize], m: usize, kernel: &[usize], stride: usize, pad: usize) -> ConvCase {
        let ns = kernel.len();
        ConvCase {
            what,
            x: x.to_vec(),
            m,
            kernel: kernel.to_vec(),
            strides: vec![stride; ns],
            pads: vec![pad; 2 * ns],
            group: 1,
            bias: true,
            runtime_weights: false,
            packed: false,
        }
    }

    fn check(&self) {
        let a = ConvAttrs::new(&self.kernel).strides(&self.strides).pads(&self.pads).group(self.group);
        let mut w_shape = vec![self.m, self.x[1] / self.group];
        w_shape.extend(&self.kernel);
        let w = scaled_weights(&w_shape, w_shape[1..].iter().product(), 2);
        let mut operands = vec![input(random(&self.x, 1)), if self.runtime_weights { input(w) } else { weight(w) }];
        if self.bias {
            operands.push(weight(random(&[self.m], 3)));
        }
        if self.packed {
            for mk in each_f32_tile!() {
                let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| {
                    let e = conv::emit_conv_with(jit, cx, &a, ep, Some(mk))?;
                    let what = self.what;
                    assert!(e.aux.iter().any(|a| matches!(a, Aux::Scratch(_))), "{what} with {ep:?}: not packed");
                    Ok(e)
                };
                let what = format!("{} ({:?} tile)", self.what, mk.tile);
                check_every_epilogue(&what, &emit, &Op::Conv(a.clone()), &operands);
            }
        } else {
            let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| conv::emit_conv_fused(jit, cx, &a, ep);
            check_every_epilogue(self.what, &emit, &Op::Conv(a.clone()), &operands);
        }
    }
}

#[test]
fn conv_3x3_pad_1_fuses_every_epilogue() {
    // 10 output channels: a full tile of 8 and a partial one; border and interior columns.
    ConvCase::new("3x3 pad 1", &[1, 5, 9, 11], 10, &[3, 3], 1, 1).check();
}

#[test]
fn conv_1x1_fuses_every_epilogue() {
    // The flattened-plane (GEMM-shaped) path, batch 2, a pixel tail (35 = 8·4 + 3).
    ConvCase::new("1x1", &[2, 6, 7, 5], 12, &[1, 1], 1, 0).check();
}

#[test]
fn conv_1x1_with_runtime_weights_and_no_bias_fuses_every_epilogue() {
    let case = ConvCase {
        bias: false,
        runtime_weights: true,
        ..ConvCase::new("1x1 runtime w", &[1, 5, 3, 7], 6, &[1, 1], 1, 0)
    };
    case.check();
}

#[test]
fn depthwise_3x3_stride_2_fuses_every_epilogue() {
    let case = ConvCase { group: 6, ..ConvCase::new("depthwise 3x3 s2", &[1, 6, 13, 14], 6, &[3, 3], 2, 1) };
    case.check();
}

#[test]
fn depthwise_multiplier_2_fuses_every_epilogue() {
    // Stride 1 over 21 columns: vector runs of 16 and 4 pixels, single pixels, no bias.
    let case =
        ConvCase { group: 3, bias: false, ..ConvCase::new("depthwise x2 3x3", &[1, 3, 6, 37], 6, &[3, 3], 1, 1) };
    case.check();
}

#[test]
fn grouped_conv_fuses_every_epilogue() {
    let case = ConvCase { group: 2, ..ConvCase::new("grouped 3x3", &[1, 8, 7, 9], 12, &[3, 3], 1, 1) };
    case.check();
}

#[test]
fn conv_1d_fuses_every_epilogue() {
    ConvCase::new("1-D k5", &[2, 5, 23], 7, &[5], 1, 2).check();
}

#[test]
fn conv_3d_fuses_every_epilogue() {
    let case = ConvCase { pads: vec![0, 1, 1, 1, 1, 1], ..ConvCase::new("3-D", &[1, 3, 4, 5, 6], 5, &[2, 3, 3], 1, 0) };
    case.check();
}

#[test]
fn channel_blocked_conv_applies_the_epilogue_once_on_the_peeled_last_block() {
    // 48 input channels of a 3×3 kernel are reduced in 2 blocks of 24 (partial sums in `y`):
    // the epilogue must see only the final sums.
    ConvCase::new("blocked, 2 full blocks", &[1, 48, 6, 7], 8, &[3, 3], 1, 1).check();
}

#[test]
fn channel_blocked_conv_applies_the_epilogue_on_the_partial_last_block() {
    // 50 = 2·24 + 2 input channels: the partial block comes last.
    ConvCase::new("blocked, partial block", &[1, 50, 5, 6], 5, &[3, 3], 1, 1).check();
}

#[test]
fn packed_3x3_fuses_every_epilogue_over_two_k_blocks_and_partial_tiles() {
    // K = 33·9 = 297: two K blocks (bias in the first, epilogue in the last); 13 channels are
    // two full 6-channel tiles and one of 1; 180 pixels end in a strip of 4.
    ConvCase { packed: true, ..ConvCase::new("packed 3x3", &[1, 33, 9, 20], 13, &[3, 3], 1, 1) }.check();
    ConvCase { packed: true, bias: false, ..ConvCase::new("packed 3x3 no bias", &[1, 33, 9, 20], 13, &[3, 3], 1, 1) }
        .check();
}

#[test]
fn packed_conv_fuses_every_epilogue_over_three_k_blocks_and_channel_chunks() {
    // K = 64·9 = 576: three K blocks (the middle one only accumulates); 61 channels on two
    // pixel blocks split into chunks of channel tiles (work units), the partial tile in the
    // last; stride 2 over 31×35 gives 16·18 = 288 pixels (more than the transposed path takes
    // with fewer than 64 channels).
    ConvCase { packed: true, ..ConvCase::new("packed 3x3 s2", &[1, 64, 31, 35], 61, &[3, 3], 2, 1) }.check();
}

#[test]
fn transposed_3x3_fuses_every_epilogue_over_partial_tiles() {
    // A small map takes the transposed tiles over packed im2col rows (`packed/swap.rs`): 110
    // pixels end in a partial pixel tile, 48 channels are three 16-channel tiles.
    ConvCase { packed: true, ..ConvCase::new("transposed 3x3", &[1, 32, 10, 11], 48, &[3, 3], 1, 1) }.check();
}

#[test]
fn packed_1x1_fuses_every_epilogue_without_bias_over_a_batch() {
    // K = 300 input channels: two K blocks; batch 2; 35 pixels; 10 channels (a tile of 4).
    ConvCase { packed: true, bias: false, ..ConvCase::new("packed 1x1", &[2, 300, 7, 5], 10, &[1, 1], 1, 0) }.check();
}

#[test]
fn empty_batch_conv_with_epilogue_is_a_no_op() {
    ConvCase::new("batch 0", &[0, 4, 5, 5], 6, &[3, 3], 1, 1).check();
}

#[test]
fn gemm_fuses_every_epilogue() {
    // M = 5 (a 4-row tile and a 1-row tail), N = 11 (a partial panel), C a broadcast row.
    let op = Op::Gemm { alpha: 0.7, beta: 1.3, trans_a: false, trans_b: true };
    let operands = [input(random(&[5, 9], 1)), weight(scaled_weights(&[11, 9], 9, 2)), weight(random(&[11], 3))];
    let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| gemm::emit_gemm_fused(jit, cx, 0.7, 1.3, false, true, ep);
    check_every_epilogue("gemm 5x11x9", &emit, &op, &operands);
}

#[test]
fn gemv_fuses_every_epilogue() {
    // Batch-1 fully connected layer: the Cranelift M = 1 tiling (no microkernels), 37 columns.
    let op = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false };
    let operands = [input(random(&[1, 20], 1)), weight(scaled_weights(&[20, 37], 20, 2)), weight(random(&[1, 37], 3))];
    let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| {
        let e = gemm::emit_gemm_with(jit, cx, 1.0, 1.0, false, false, ep, None)?;
        assert_ne!(jit.take_variant(), Some("gemv-avx2"), "the Cranelift tiling");
        Ok(e)
    };
    check_every_epilogue("gemv 1x37x20", &emit, &op, &operands);
}

/// Gemm and 2-D MatMul with constant weights and at most 4 rows run on `sgemv_panels` on every
/// f32 tile set the host has (the variant says so), with every epilogue: one row and three,
/// N = 37 and 13 (partial 8-channel panels), odd K, C as `[1, N]` and `[N]` or absent, B
/// transposed or not, A transposed at one row, 1-D and 2-D MatMul operands. Beside them, the
/// shapes that must keep the Cranelift GEMM: 5 rows, `alpha ≠ 1`, `beta ≠ 1`, C per row.
#[test]
fn dense_layers_with_few_rows_run_on_the_gemv_microkernel_with_every_epilogue() {
    let gemm_case = |m: usize, k: usize, n: usize, ta: bool, tb: bool, c: Option<Vec<usize>>, ab: (f32, f32)| {
        let op = Op::Gemm { alpha: ab.0, beta: ab.1, trans_a: ta, trans_b: tb };
        let a = if ta { [k, m] } else { [m, k] };
        let b = if tb { [n, k] } else { [k, n] };
        let mut operands = vec![input(random(&a, 1)), weight(scaled_weights(&b, k, 2))];
        if let Some(c) = &c {
            operands.push(weight(random(c, 3)));
        }
        (op, operands)
    };
    let gemv_shapes = [
        (1, 20, 37, false, false, Some(vec![1, 37])),
        (3, 37, 13, false, true, Some(vec![13])),
        (1, 9, 16, true, false, None),
        (4, 8, 5, false, false, Some(vec![5])),
    ];
    let other_shapes = [
        (5, 9, 11, false, false, Some(vec![11]), (1.0, 1.0)),
        (1, 9, 11, false, false, Some(vec![11]), (0.7, 1.0)),
        (1, 9, 11, false, false, Some(vec![11]), (1.0, 1.3)),
        (2, 9, 11, false, false, Some(vec![2, 11]), (1.0, 1.0)),
    ];
    for mk in each_f32_tile!() {
        let tile = mk.tile;
        for (m, k, n, ta, tb, c) in gemv_shapes.clone() {
            let (op, operands) = gemm_case(m, k, n, ta, tb, c.clone(), (1.0, 1.0));
            let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| {
                let e = gemm::emit_gemm_with(jit, cx, 1.0, 1.0, ta, tb, ep, Some(mk))?;
                assert_eq!(jit.take_variant(), Some("gemv-avx2"), "gemm {m}x{k}x{n} on the {tile:?} tiles");
                Ok(e)
            };
            check_every_epilogue(&format!("gemm {m}x{k}x{n} C {c:?} ({tile:?})"), &emit, &op, &operands);
        }
        for (m, k, n, ta, tb, c, (alpha, beta)) in other_shapes.clone() {
            let (op, operands) = gemm_case(m, k, n, ta, tb, c.clone(), (alpha, beta));
            let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| {
                let e = gemm::emit_gemm_with(jit, cx, alpha, beta, ta, tb, ep, Some(mk))?;
                assert_ne!(jit.take_variant(), Some("gemv-avx2"), "gemm {m}x{k}x{n} alpha {alpha} beta {beta}");
                Ok(e)
            };
            check_every_epilogue(&format!("gemm {m}x{k}x{n} a {alpha} b {beta} ({tile:?})"), &emit, &op, &operands);
        }
        for (a, b) in [(vec![2, 37], vec![37, 9]), (vec![37], vec![37, 9])] {
            let operands = [input(random(&a, 1)), weight(scaled_weights(&b, 37, 2))];
            let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| {
                let e = gemm::emit_matmul_with(jit, cx, ep, Some(mk))?;
                assert_eq!(jit.take_variant(), Some("gemv-avx2"), "matmul {a:?} x {b:?}");
                Ok(e)
            };
            check_every_epilogue(&format!("matmul {a:?} x {b:?} ({tile:?})"), &emit, &Op::MatMul, &operands);
        }
    }
}

#[test]
fn gemm_with_runtime_operands_and_no_c_fuses_every_epilogue() {
    let op = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: true, trans_b: false };
    let operands = [input(random(&[7, 6], 1)), input(scaled_weights(&[7, 10], 7, 2))];
    let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| gemm::emit_gemm_fused(jit, cx, 1.0, 1.0, true, false, ep);
    check_every_epilogue("gemm runtime B", &emit, &op, &operands);
}

#[test]
fn batched_matmul_fuses_every_epilogue() {
    let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| gemm::emit_matmul_fused(jit, cx, ep);
    let operands = [input(random(&[2, 3, 5, 6], 1)), weight(scaled_weights(&[6, 9], 6, 2))];
    check_every_epilogue("matmul const B", &emit, &Op::MatMul, &operands);
    let operands = [input(random(&[2, 4, 5], 1)), input(scaled_weights(&[2, 5, 7], 5, 2))];
    check_every_epilogue("matmul runtime B", &emit, &Op::MatMul, &operands);
}

fn conv_3x3() -> (ConvAttrs, [Operand; 2], TensorType) {
    let a = ConvAttrs::new(&[3, 3]).pads(&[1; 4]);
    let operands = [input(random(&[1, 4, 5, 5], 1)), weight(random(&[4, 4, 3, 3], 2))];
    let out = reference(&Op::Conv(a.clone()), &operands, None, None).ty();
    (a, operands, out)
}

#[test]
fn fused_activation_that_needs_a_call_is_unsupported() {
    let (a, operands, out) = conv_3x3();
    let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| conv::emit_conv_fused(jit, cx, &a, ep);
    for act in [UnaryOp::Tanh, UnaryOp::Log, UnaryOp::Exp] {
        let ep = Epilogue { act: Some(act), residual: None };
        let err = run_fused(&emit, &Op::Conv(a.clone()), &operands, None, &out, &ep).expect_err("rejected");
        assert!(matches!(err, CompileError::Unsupported { .. }), "{err}");
    }
}

#[test]
fn residual_of_another_shape_is_unsupported() {
    let (a, operands, out) = conv_3x3();
    let emit = |jit: &mut Jit, cx: &EmitCx, ep: &Epilogue| conv::emit_conv_fused(jit, cx, &a, ep);
    let wrong = random(&[1, 4, 5, 4], 5);
    let ep = Epilogue { act: None, residual: Some(2) };
    let err = run_fused(&emit, &Op::Conv(a.clone()), &operands, Some(&wrong), &out, &ep).expect_err("rejected");
    assert!(matches!(err, CompileError::Unsupported { .. }), "{err}");
}
