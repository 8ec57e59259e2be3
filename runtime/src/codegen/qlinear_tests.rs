//! Every int8 kernel tier against the integer reference (`reference/qlinear.rs`), bit for bit,
//! on random quantized convs and products: the VNNI and AVX2 microkernel drivers (`qconv.rs`,
//! `qdepthwise.rs`; each run only where the host has the tier), the matrix-vector kernels of
//! gemms (`qgemv.rs`: `vpdpbusd` and the i16 AVX2 kernel) and the portable Cranelift kernel. 1,000 cases
//! per tier: odd channel counts, padding, strides, dilation, groups and depthwise, u8 and i8
//! activations, i8 and u8 weights with non-zero (per-channel) zero points, every output kind,
//! scales that saturate the output, and values at the extremes (weight pairs of ±127/−128 times
//! inputs of 255 would overflow a 16-bit pair sum in the AVX2 tile without its split panels).
//! Work units run in reverse order, one per call, as threads may run them.

use cnnc_ir::{ConvAttrs, DType, Op, QLinear, QLinearOut, QuantParams, Tensor, TensorData, TensorType, infer_types};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::qlinear::emit_with;
use crate::codegen::{Aux, EmitCx, Jit};
use crate::microkernel::int8::{QTier, qkernels};

/// Deterministic bytes with a share of extreme values.
fn bytes(n: usize, seed: u64, extremes: bool) -> Vec<u8> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = (s >> 33) as u32;
            match (extremes, v % 8) {
                (true, 0) => 0,
                (true, 1 | 2) => 255,
                (true, 3) => 128,
                (true, 4) => 127,
                _ => (v >> 8) as u8,
            }
        })
        .collect()
}

fn tensor(dtype: DType, shape: Vec<usize>, b: Vec<u8>) -> Tensor {
    let data = match dtype {
        DType::U8 => TensorData::U8(b),
        _ => TensorData::I8(b.into_iter().map(|v| v as i8).collect()),
    };
    Tensor::new(shape, data).expect("shape")
}

#[derive(Clone, Debug)]
struct Case {
    op: Op,
    inputs: Vec<Tensor>,
}

/// Runs `case` through the kernel `emit_with` makes for `tier` (`None`: portable), every work
/// unit in its own call, last first; also the kernel variant the emitter noted (a microkernel
/// driver's, e.g. `qconv-vnni`, `qconv-depthwise-avx2`; none for the portable kernel).
fn run_jit(case: &Case, tier: Option<QTier>) -> (Tensor, Option<&'static str>) {
    let Op::QLinear(q) = &case.op else { unreachable!("a quantized op") };
    let types: Vec<TensorType> = case.inputs.iter().map(Tensor::ty).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let outputs = infer_types(&case.op, &refs).expect("infers");
    let consts: Vec<Option<&Tensor>> = case.inputs.iter().enumerate().map(|(i, t)| (i > 0).then_some(t)).collect();
    let cx = EmitCx { name: "q", op: &case.op, inputs: &types, outputs: &outputs, consts: &consts };
    let mut jit = Jit::new().expect("jit");
    let mk = tier.map(|t| qkernels(t).expect("the tier is supported"));
    let emitted = emit_with(&mut jit, &cx, q, mk).expect("emits");
    let variant = jit.take_variant();
    let (_code, kernels) = jit.finish(&[emitted.func]).expect("finishes");
    let scratch_bytes = emitted.aux.iter().map(|a| if let Aux::Scratch(n) = a { *n } else { 0 }).max().unwrap_or(0);
    // Scratch is undefined on entry: start from garbage, not zeros.
    let mut scratch = vec![0xa5a5_a5a5_a5a5_a5a5u64; scratch_bytes.div_ceil(8) + 1];
    let out_ty = &outputs[0];
    let mut y = vec![0u8; out_ty.numel() * out_ty.dtype.size_bytes()];
    let raw = |t: &Tensor| -> *mut u8 {
        match t.data() {
            TensorData::U8(v) => v.as_ptr() as *mut u8,
            TensorData::I8(v) => v.as_ptr() as *mut u8,
            TensorData::I32(v) => v.as_ptr() as *mut u8,
            other => panic!("unexpected operand {:?}", other.dtype()),
        }
    };
    let mut table: Vec<*mut u8> = case.inputs.iter().map(raw).collect();
    table.push(y.as_mut_ptr());
    let sp = scratch.as_mut_ptr().cast();
    table.extend(emitted.aux.iter().map(|a| a.ptr().unwrap_or(sp)));
    for u in (0..emitted.units).rev() {
        // SAFETY: one buffer per kernel argument, each of the size the kernel was compiled for
        // (scratch sized to its request); the code is alive; only `y` and scratch are written.
        unsafe { (kernels[0])(table.as_ptr(), u as i64, u as i64 + 1) };
    }
    let data = match out_ty.dtype {
        DType::U8 => TensorData::U8(y),
        DType::I8 => TensorData::I8(y.into_iter().map(|v| v as i8).collect()),
        DType::I32 => TensorData::I32(y.chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        _ => TensorData::F32(y.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
    };
    (Tensor::new(out_ty.shape.clone(), data).expect("shape"), variant)
}

/// A random quantized conv (1-D or 2-D) or product.
fn case() -> impl Strategy<Value = Case> {
    let geo = (
        1usize..=2,                                                               // batch
        prop_oneof![2 => Just(1usize), 1 => Just(2), 1 => Just(3), 1 => Just(0)], // group (0: depthwise)
        1usize..=9,                                                               // input channels per group
        1usize..=11,                                                              // output channels per group
        (1usize..=4, 1usize..=5),                                                 // kernel
        (1usize..=3, 1usize..=3),                                                 // strides
        (1usize..=2, 1usize..=2),                                                 // dilations
        (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),                         // pads
        (1usize..=9, 1usize..=12), // input size beyond the kernel's extent
    );
    let quant = (
        any::<bool>(),                                                         // i8 activations
        any::<bool>(),                                                         // u8 weights
        any::<bool>(),                                                         // per-channel weights
        any::<bool>(),                                                         // bias
        0u8..4,                                                                // output kind: u8, i8, i32, f32
        0u8..3,                                                                // output scale: normal, saturating, tiny
        any::<bool>(),                                                         // extreme values
        any::<u64>(),                                                          // seed
        prop_oneof![5 => Just(0u8), 2 => Just(1), 1 => Just(2), 1 => Just(3)], // conv-2d, conv-1d, gemm, matmul
        any::<bool>(),                                                         // clamp
        Just(false),                                                           // huge bias
    );
    (geo, quant).prop_map(|(geo, quant)| build(geo, quant))
}

type Geo = (
    usize,
    usize,
    usize,
    usize,
    (usize, usize),
    (usize, usize),
    (usize, usize),
    (usize, usize, usize, usize),
    (usize, usize),
);
type Quant = (bool, bool, bool, bool, u8, u8, bool, u64, u8, bool, bool);

fn build(geo: Geo, quant: Quant) -> Case {
    let (batch, group, cg, mg, k, s, d, p, extra) = geo;
    let (x_i8, w_u8, per_channel, bias, out_kind, scale_kind, extremes, seed, shape_kind, clamp, huge_bias) = quant;
    let x_ty = if x_i8 { DType::I8 } else { DType::U8 };
    let w_ty = if w_u8 { DType::U8 } else { DType::I8 };
    let (base, x_shape, w_shape, c_out, k_len) = match shape_kind {
        0 | 1 => {
            let two = shape_kind == 0;
            let (group, cg, mg) = if group == 0 { (cg, 1, 1) } else { (group, cg, mg) };
            let (kh, sh, dh, ph0, ph1) = if two { (k.0, s.0, d.0, p.0, p.1) } else { (1, 1, 1, 0, 0) };
            let (kw, sw, dw, pw0, pw1) = (k.1, s.1, d.1, p.2, p.3);
            let ih = if two { (kh - 1) * dh + extra.0 } else { 1 };
            let iw = (kw - 1) * dw + extra.1;
            let a = if two {
                ConvAttrs::new(&[kh, kw]).strides(&[sh, sw]).dilations(&[dh, dw]).pads(&[ph0, pw0, ph1, pw1])
            } else {
                ConvAttrs::new(&[kw]).strides(&[sw]).dilations(&[dw]).pads(&[pw0, pw1])
            }
            .group(group);
            let x = if two { vec![batch, group * cg, ih, iw] } else { vec![batch, group * cg, iw] };
            let w = if two { vec![group * mg, cg, kh, kw] } else { vec![group * mg, cg, kw] };
            (Op::Conv(a), x, w, group * mg, cg * kh * kw)
        }
        kind => {
            let (rows, kk, n) = (batch * extra.0, cg * k.0 * k.1, mg * 3);
            if kind == 2 {
                let trans_b = per_channel;
                let w = if trans_b { vec![n, kk] } else { vec![kk, n] };
                (Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b }, vec![rows, kk], w, n, kk)
            } else {
                (Op::MatMul, vec![batch, extra.0, kk], vec![kk, n], n, kk)
            }
        }
    };
    let x = tensor(x_ty, x_shape.clone(), bytes(x_shape.iter().product(), seed, extremes));
    let w = tensor(w_ty, w_shape.clone(), bytes(w_shape.iter().product(), seed ^ 0x55, extremes));
    let zp = |ty: DType, v: u8| if ty == DType::U8 { i32::from(v) } else { i32::from(v as i8) };
    let zb = bytes(c_out + 2, seed ^ 0xabc, false);
    let xq = QuantParams::per_tensor(0.02, zp(x_ty, zb[0]));
    let mut q = QLinear { base, x: xq, w: QuantParams::per_tensor(0.01, 0), out: QLinearOut::I32, clamp: None };
    let axis = q.weight_channel_axis(w_shape.len());
    q.w = if per_channel {
        QuantParams {
            axis: Some(axis),
            scales: (0..c_out).map(|c| 0.002 + 0.001 * (c % 7) as f32).collect(),
            // i8 weights from onnxruntime are symmetric, but any zero point is legal.
            zero_points: (0..c_out).map(|c| zp(w_ty, zb[2 + c])).collect(),
        }
    } else {
        QuantParams::per_tensor(0.003, zp(w_ty, zb[1]))
    };
    // Typical |acc| is about 127·128·K/4; scale the output so that it spans the type (normal),
    // mostly saturates, or rounds small values (ties happen with the tiny scale).
    let typical = (128.0 * 127.0 * (k_len as f32).sqrt()).max(1.0);
    let acc_scale = q.acc_scale(0);
    let sy = match scale_kind {
        0 => acc_scale * typical / 100.0,
        1 => acc_scale * typical / 10_000.0,
        _ => acc_scale * 0.5,
    };
    q.out = match out_kind {
        0 => QLinearOut::Quantized { params: QuantParams::per_tensor(sy, zp(DType::U8, zb[1])), to: DType::U8 },
        1 => QLinearOut::Quantized { params: QuantParams::per_tensor(sy, zp(DType::I8, zb[1])), to: DType::I8 },
        2 => QLinearOut::I32,
        _ => QLinearOut::F32,
    };
    if clamp && let QLinearOut::Quantized { params, to } = &q.out {
        let (lo, hi) = to.int_range().expect("quantized");
        let z = params.zero_points[0] as i64;
        q.clamp = Some((z.clamp(lo, hi) as i32, ((z + hi) / 2).clamp(z.clamp(lo, hi), hi) as i32));
    }
    let mut inputs = vec![x, w];
    if bias {
        let b = bytes(4 * c_out, seed ^ 0xb1a5, false);
        // A huge bias (up to ±2²⁷) saturates the output whatever the sum.
        let shift = if huge_bias { 4 } else { 12 };
        let v = b.chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) >> shift).collect();
        inputs.push(Tensor::new(vec![c_out], TensorData::I32(v)).expect("bias"));
    }
    Case { op: Op::QLinear(Box::new(q)), inputs }
}

/// How many checked cases each microkernel driver compiled.
#[derive(Default)]
struct Reached {
    /// Any microkernel driver (`qconv-…`).
    driver: AtomicUsize,
    /// The depthwise kernel (`qconv-depthwise-…`).
    depthwise: AtomicUsize,
}

fn check(case: &Case, tier: Option<QTier>, reached: &Reached) -> Result<(), TestCaseError> {
    let refs: Vec<&Tensor> = case.inputs.iter().collect();
    let types: Vec<TensorType> = case.inputs.iter().map(Tensor::ty).collect();
    let trefs: Vec<&TensorType> = types.iter().collect();
    let out = infer_types(&case.op, &trefs).map_err(|e| TestCaseError::reject(e.reason))?;
    let want = crate::reference::eval_op(&case.op, &refs, &out).expect("reference").remove(0);
    let (got, variant) = run_jit(case, tier);
    reached.driver.fetch_add(usize::from(variant.is_some_and(|v| v.starts_with("qconv-"))), Ordering::Relaxed);
    reached
        .depthwise
        .fetch_add(usize::from(variant.is_some_and(|v| v.starts_with("qconv-depthwise"))), Ordering::Relaxed);
    let same = match (got.data(), want.data()) {
        (TensorData::F32(a), TensorData::F32(b)) => a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
        (a, b) => a == b,
    };
    prop_assert!(same, "{tier:?}: {:?}\ngot  {:?}\nwant {:?}", case.op, got.data(), want.data());
    Ok(())
}

fn run_tier(tier: Option<QTier>) {
    if let Some(t) = tier
        && !t.supported()
    {
        crate::testing::cpu_skip("run_tier", t.env_name());
        return;
    }
    let config = ProptestConfig { cases: 1000, ..ProptestConfig::default() };
    let reached = Reached::default();
    proptest!(config, |(c in case())| {
        check(&c, tier, &reached)?;
    });
    // The microkernel tiers must have run on their drivers (convs), not only on the portable
    // kernel (products, tiny reductions).
    let on_driver = reached.driver.load(Ordering::Relaxed);
    eprintln!("{tier:?}: {on_driver} of 1000 cases on the microkernel driver");
    assert!(tier.is_none() || on_driver >= 400, "{tier:?}: only {on_driver} cases took the driver");
}

#[test]
fn amx_tier_equals_the_integer_reference() {
    run_tier(Some(QTier::Amx));
}

#[test]
fn vnni_tier_equals_the_integer_reference() {
    run_tier(Some(QTier::Vnni));
}

#[test]
fn avx2_tier_equals_the_integer_reference() {
    run_tier(Some(QTier::Avx2));
}

#[test]
fn portable_cranelift_kernel_equals_the_integer_reference() {
    run_tier(None);
}

/// Layers past one K block (512 rows) and one pixel block (256 columns): partial sums between K
/// blocks, column sums over several blocks (u8 weights with zero points), channel tiles split
/// into chunks for work units; every tier, bit for bit.
#[test]
fn layers_spanning_several_k_and_pixel_blocks_equal_the_reference() {
    // (batch, channels, size, out channels, kernel, stride, u8 weights): K = 64·9 = 576 (two
    // blocks), 150·9 = 1350 (three), 600·1 (two, 1×1).
    let layers = [
        (1, 64, 20, 24, 3, 1, false),
        (1, 150, 9, 40, 3, 2, true),
        (2, 600, 6, 13, 1, 1, true),
        (1, 17, 40, 70, 3, 1, false),
    ];
    for (i, &(batch, c, size, m, k, s, w_u8)) in layers.iter().enumerate() {
        for out_kind in 0..4u8 {
            let geo =
                (batch, 1, c, m, (k, k), (s, s), (1, 1), (k / 2, k / 2, k / 2, k / 2), (size - k + 1, size - k + 1));
            let quant = (i % 2 == 1, w_u8, true, true, out_kind, 0, true, 7 + i as u64, 0, out_kind == 0, false);
            let case = build(geo, quant);
            for tier in [Some(QTier::Amx), Some(QTier::Vnni), Some(QTier::Avx2), None] {
                if tier.is_some_and(|t| !t.supported()) {
                    continue;
                }
                let reached = Reached::default();
                check(&case, tier, &reached).unwrap_or_else(|e| panic!("layer {i}, out {out_kind}, {tier:?}: {e}"));
                assert_eq!(reached.driver.load(Ordering::Relaxed), usize::from(tier.is_some()), "layer {i}: driver");
            }
        }
    }
}

/// A random depthwise conv (2-D, or 1-D), mostly with a quantized output: the cases of the
/// depthwise kernel (`qdepthwise.rs`).
fn depthwise_case() -> impl Strategy<Value = Case> {
    let geo = (
        1usize..=2,                                       // batch
        Just(0usize),                                     // group: depthwise
        1usize..=13,                                      // channels
        Just(1usize),                                     // output channels per group
        (1usize..=5, 1usize..=5),                         // kernel (1×k and k×1 among them)
        (1usize..=3, 1usize..=3),                         // strides
        (1usize..=2, 1usize..=2),                         // dilations
        (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2), // pads
        (1usize..=9, 1usize..=40),                        // input size beyond the kernel's extent
    );
    let quant = (
        any::<bool>(),                                  // i8 activations
        any::<bool>(),                                  // u8 weights
        any::<bool>(),                                  // per-channel weights
        any::<bool>(),                                  // bias
        prop_oneof![9 => 0u8..2, 1 => 2u8..4],          // output kind: u8, i8 (i32, f32)
        0u8..3,                                         // output scale
        any::<bool>(),                                  // extreme values
        any::<u64>(),                                   // seed
        prop_oneof![4 => Just(0u8), 1 => Just(1)],      // conv-2d, conv-1d
        any::<bool>(),                                  // clamp
        prop_oneof![3 => Just(false), 1 => Just(true)], // huge bias
    );
    (geo, quant).prop_map(|(geo, quant)| build(geo, quant))
}

fn run_depthwise(tier: QTier) {
    if !tier.supported() {
        crate::testing::cpu_skip("run_depthwise", tier.env_name());
        return;
    }
    let config = ProptestConfig { cases: 1000, ..ProptestConfig::default() };
    let reached = Reached::default();
    proptest!(config, |(c in depthwise_case())| {
        check(&c, Some(tier), &reached)?;
    });
    // Every case with a quantized output (about 90%) must have run on the depthwise kernel.
    let on_kernel = reached.depthwise.load(Ordering::Relaxed);
    eprintln!("{tier:?}: {on_kernel} of 1000 depthwise cases on the depthwise kernel");
    assert!(on_kernel >= 800, "{tier:?}: only {on_kernel} depthwise cases took the depthwise kernel");
}

#[test]
fn vnni_tier_depthwise_convs_equal_the_integer_reference() {
    run_depthwise(QTier::Vnni);
}

#[test]
fn avx2_tier_depthwise_convs_equal_the_integer_reference() {
    run_depthwise(QTier::Avx2);
}

/// Depthwise layers larger than one staged band (several bands, a partial last one), split
/// into row blocks (one plane) or plane blocks, with strides past 2 and dilations: every tier
/// with the kernel, bit for bit, on the kernel.
#[test]
fn depthwise_layers_spanning_several_bands_and_units_equal_the_reference() {
    // (batch, channels, (ih, iw) beyond the kernel's extent, kernel, stride, dilation, pads)
    let layers = [
        (1, 1, (118, 331), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        (2, 3, (89, 142), (5, 5), (2, 2), (2, 2), (3, 1, 2, 4)),
        (1, 5, (58, 400), (3, 1), (3, 3), (1, 1), (1, 0, 2, 2)),
        (1, 16, (38, 38), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
        (1, 7, (200, 20), (1, 5), (1, 2), (2, 1), (0, 2, 2, 0)),
    ];
    for (i, &(batch, c, extra, k, s, d, p)) in layers.iter().enumerate() {
        for out_kind in 0..2u8 {
            let geo = (batch, 0, c, 1, k, s, d, p, extra);
            let quant =
                (i % 2 == 1, i % 3 == 0, true, true, out_kind, 0, true, 11 + i as u64, 0, out_kind == 0, i == 2);
            let case = build(geo, quant);
            for tier in [QTier::Vnni, QTier::Avx2] {
                if !tier.supported() {
                    continue;
                }
                let reached = Reached::default();
                check(&case, Some(tier), &reached)
                    .unwrap_or_else(|e| panic!("layer {i}, out {out_kind}, {tier:?}: {e}"));
                assert_eq!(reached.depthwise.load(Ordering::Relaxed), 1, "layer {i}: the depthwise kernel");
            }
        }
    }
}

/// Sums at the ends of the i32 range (biases near `i32::MIN`/`MAX`) requantized with
/// multipliers of exactly 1/2 (the largest for which the depthwise kernel rounds to i32 before
/// clamping) and just above it (the f32 clamp), u8 and i8 outputs with clamps: bit for bit.
#[test]
fn depthwise_requantization_at_the_i32_extremes_equals_the_reference() {
    for (i, out_kind) in [0u8, 1].into_iter().enumerate() {
        for per_sy in [2.0f32, 1.999, 1e-6] {
            let geo = (1, 0, 7, 1, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), (9, 21));
            let quant = (i == 1, false, false, true, out_kind, 0, true, 5, 0, true, false);
            let mut case = build(geo, quant);
            let Op::QLinear(q) = &mut case.op else { unreachable!("a quantized op") };
            let sy = q.acc_scale(0) * per_sy;
            if let QLinearOut::Quantized { params, .. } = &mut q.out {
                params.scales = vec![sy];
            }
            let b = [i32::MAX, i32::MIN, i32::MAX - 70_000, i32::MIN + 70_000, 0, 1 << 30, -(1 << 30)];
            case.inputs[2] = Tensor::new(vec![7], TensorData::I32(b.to_vec())).expect("bias");
            for tier in [QTier::Vnni, QTier::Avx2] {
                if !tier.supported() {
                    continue;
                }
                let reached = Reached::default();
                check(&case, Some(tier), &reached)
                    .unwrap_or_else(|e| panic!("out {out_kind}, {per_sy}, {tier:?}: {e}"));
                assert_eq!(reached.depthwise.load(Ordering::Relaxed), 1, "the depthwise kernel");
            }
        }
    }
}

/// A random quantized gemm `[rows, K] × [K, N]` for the matrix-vector kernels (`qgemv.rs`): K
/// up to 240 (ragged last quads and pairs), N up to 81 (several 4-block groups, a partial last
/// block), 1–3 rows, `trans_b` either way, every output kind, u8/i8 activations and weights,
/// per-channel zero points (u8 weights centre past i8: the AVX2 kernel even on VNNI hosts).
fn gemv_case() -> impl Strategy<Value = Case> {
    let geo = (1usize..=12, 1usize..=27, (1usize..=4, 1usize..=5), 1usize..=3);
    let quant = (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..4,
        0u8..3,
        any::<bool>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    );
    // Symmetric weights (zero points 0, as onnxruntime's and cnnc's quantizers write i8
    // weights) in most cases: those that fit i8 once centred.
    let symmetric = prop_oneof![3 => Just(true), 1 => Just(false)];
    (geo, quant, symmetric).prop_map(
        |((cg, mg, k, rows), (x_i8, w_u8, pc, bias, out, scale, ext, seed, clamp, huge), symmetric)| {
            let geo = (1, 1, cg, mg, k, (1, 1), (1, 1), (0, 0, 0, 0), (rows, 1));
            let mut c = build(geo, (x_i8, w_u8, pc, bias, out, scale, ext, seed, 2, clamp, huge));
            if let Op::QLinear(q) = &mut c.op
                && symmetric
                && !w_u8
            {
                q.w.zero_points.iter_mut().for_each(|z| *z = 0);
            }
            c
        },
    )
}

fn run_gemv(tier: QTier) {
    if !tier.supported() {
        crate::testing::cpu_skip("run_gemv", tier.env_name());
        return;
    }
    let config = ProptestConfig { cases: 1000, ..ProptestConfig::default() };
    let (on_kernel, on_vnni) = (AtomicUsize::new(0), AtomicUsize::new(0));
    proptest!(config, |(c in gemv_case())| {
        let refs: Vec<&Tensor> = c.inputs.iter().collect();
        let types: Vec<TensorType> = c.inputs.iter().map(Tensor::ty).collect();
        let trefs: Vec<&TensorType> = types.iter().collect();
        let out = infer_types(&c.op, &trefs).map_err(|e| TestCaseError::reject(e.reason))?;
        let want = crate::reference::eval_op(&c.op, &refs, &out).expect("reference").remove(0);
        let (got, variant) = run_jit(&c, Some(tier));
        on_kernel.fetch_add(usize::from(variant.is_some_and(|v| v.starts_with("qgemv-"))), Ordering::Relaxed);
        on_vnni.fetch_add(usize::from(variant == Some("qgemv-vnni")), Ordering::Relaxed);
        let same = match (got.data(), want.data()) {
            (TensorData::F32(a), TensorData::F32(b)) => a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            (a, b) => a == b,
        };
        prop_assert!(same, "{tier:?} {variant:?}: {:?}\ngot  {:?}\nwant {:?}", c.op, got.data(), want.data());
    });
    let n = on_kernel.load(Ordering::Relaxed);
    assert_eq!(n, 1000, "{tier:?}: only {n} of 1000 gemms took the matrix-vector kernels");
    // i8 weights whose centred values fit i8 run `vpdpbusd` on VNNI hosts (the rest, and every
    // case on the AVX2 tier, the i16 kernel).
    let vnni = on_vnni.load(Ordering::Relaxed);
    eprintln!("{tier:?}: {vnni} of 1000 gemms on the VNNI matrix-vector kernel");
    assert!(if tier == QTier::Avx2 { vnni == 0 } else { vnni >= 250 }, "{tier:?}: {vnni} on qgemv-vnni");
}

#[test]
fn vnni_tier_gemv_equals_the_integer_reference() {
    run_gemv(QTier::Vnni);
}

#[test]
fn avx2_tier_gemv_equals_the_integer_reference() {
    run_gemv(QTier::Avx2);
}
