//! Depthwise convs (one input channel per group, channel multiplier 1–3) and single-pixel 1×1
//! convs through `Model`, on the host's kernels (the AVX2 routines where the CPU has them),
//! against the reference interpreter: random geometries (channels, rows and columns from 1,
//! widths that are not multiples of the 8-lane vector, kernels 1–7, strides 1–2, dilations
//! 1–2, asymmetric pads 0–3) with and without bias and residual, under every fused activation;
//! then large layers split into work units at 1, 2 and 3 threads, which must agree bit for
//! bit. (The portable Cranelift kernels are compared with the AVX2 ones bit for bit, with units
//! in reverse order, in the crate's `conv::depthwise_tests`.)
//!
//! Tolerance (random geometries): each element within the worst-case f32 rounding of its sum,
//! `1.5·(n + 2)·2⁻²⁴·Σ|terms|` for `n` terms summed in any order (the reference sums in f64 and
//! is taken as exact; see [`check_reference`]), plus 4 ulps of the value for Sigmoid's inline
//! `exp`. The kernels do not keep the reference's order, so a few ulps, not bit-exactness, is
//! what to expect; outputs near zero from cancelling terms need the `Σ|terms|` scale (a plain
//! relative tolerance fails there). On the large layers: rel-L2 ≤ 1e-6 and every element within
//! 1e-5·max|reference| (`assert_close`): ≤ 480 terms of magnitude ≤ 1 without heavy
//! cancellation. A wrong tap, a skipped column tail or an unwritten row fails by orders of
//! magnitude.

mod common;

use cnnc_ir::{ConvAttrs, Fused, Graph, Op, Tensor, TensorType, UnaryOp, VerifiedGraph, verify};
use cnnc_runtime::{Model, run_reference};
use common::{assert_close, random};

use proptest::prelude::*;

const ACTS: [Option<UnaryOp>; 7] = [
    None,
    Some(UnaryOp::Relu),
    Some(UnaryOp::Clip { min: -0.3, max: 0.4 }),
    Some(UnaryOp::LeakyRelu { alpha: 0.1 }),
    Some(UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 }),
    Some(UnaryOp::HardSwish),
    Some(UnaryOp::Sigmoid),
];

/// A (fused) conv of `x` to `m` channels in `a.group` groups, with optional bias, activation
/// and residual; returns the graph and its inputs. With `abs`, every operand is replaced by its
/// absolute value and the activation dropped: the reference then gives each output's sum of
/// `|term|`, the scale of its rounding error.
fn conv_graph(
    x: &[usize],
    m: usize,
    a: ConvAttrs,
    bias: bool,
    act: Option<UnaryOp>,
    residual: bool,
    abs: bool,
) -> Option<(VerifiedGraph, Vec<Tensor>)> {
    let data = |shape: &[usize], seed: u64| {
        let t = random(shape, seed);
        if !abs {
            return t;
        }
        let v = t.as_f32().expect("f32").iter().map(|v| v.abs()).collect();
        Tensor::from_f32(shape.to_vec(), v).expect("shape")
    };
    let act = if abs { None } else { act };
    let mut g = Graph::new("dw");
    let xv = g.add_input("x", TensorType::f32(x.to_vec()));
    let mut inputs = vec![data(x, 1)];
    let mut w_shape = vec![m, x[1] / a.group];
    w_shape.extend(&a.kernel);
    let mut ins = vec![xv, g.add_weight("w", data(&w_shape, 2))];
    if bias {
        ins.push(g.add_weight("b", data(&[m], 3)));
    }
    let tys: Vec<TensorType> = ins.iter().map(|v| g.value_type(v).clone()).collect();
    let y_ty = cnnc_ir::infer_types(&Op::Conv(a.clone()), &tys.iter().collect::<Vec<_>>()).ok()?.remove(0);
    if y_ty.numel() == 0 {
        return None;
    }
    if residual {
        inputs.push(data(&y_ty.shape, 4));
        ins.push(g.add_input("r", y_ty));
    }
    let op = if act.is_some() || residual {
        Op::Fused(Box::new(Fused { base: Op::Conv(a), act, residual }))
    } else {
        Op::Conv(a)
    };
    let y = g.add_node("conv", op, &ins).ok()?;
    g.add_output("y", y[0]);
    Some((verify(g).ok()?, inputs))
}

/// Compiles and runs `case(false)` and compares it with the reference element by element:
/// `|got − want| ≤ 1.5·(chain + 2)·2⁻²⁴·S + 2⁻²²·|want| + 1e-30`, with `S` the sum of the absolute
/// terms (the reference on `case(true)`). An f32 sum of `chain` FMAs or adds is within
/// `chain·2⁻²⁴·S` of the exact one (each step rounds once, relative to a partial sum ≤ S);
/// the activations change an error by at most 1.5× (HardSwish's steepest slope), and
/// Sigmoid's inline `exp` adds its 1.7e-7 relative error.
fn check_reference(case: impl Fn(bool) -> Option<(VerifiedGraph, Vec<Tensor>)>, chain: usize) {
    let (g, inputs) = case(false).expect("valid");
    let (g_abs, inputs_abs) = case(true).expect("valid");
    let model = Model::compile(&g).unwrap_or_else(|e| panic!("{e}"));
    let got = model.run(&inputs).expect("runs");
    let want = run_reference(&g, &inputs).expect("reference runs");
    let scale = run_reference(&g_abs, &inputs_abs).expect("reference runs");
    assert_eq!(got[0].shape(), want[0].shape());
    let ulp = (2f64).powi(-24);
    let (got, want, scale) =
        (got[0].as_f32().expect("f32"), want[0].as_f32().expect("f32"), scale[0].as_f32().expect("f32"));
    for (i, ((&a, &b), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = 1.5 * (chain + 2) as f64 * ulp * f64::from(s) + 4.0 * ulp * f64::from(b.abs()) + 1e-30;
        let err = (f64::from(a) - f64::from(b)).abs();
        assert!(err <= tol, "element {i}: {a} vs reference {b} (tolerance {tol:.3e})");
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn depthwise_matches_reference_on_random_geometries(
        batch in 1usize..3,
        c in 1usize..6,
        mult in 1usize..4,
        h in 1usize..20,
        w in 1usize..40,
        k in (1usize..8, 1usize..8),
        s in (1usize..3, 1usize..3),
        d in (1usize..3, 1usize..3),
        pads in (0usize..4, 0usize..4, 0usize..4, 0usize..4),
        bias in any::<bool>(),
        residual in any::<bool>(),
        act in 0usize..ACTS.len(),
    ) {
        let a = ConvAttrs::new(&[k.0, k.1])
            .strides(&[s.0, s.1])
            .dilations(&[d.0, d.1])
            .pads(&[pads.0, pads.1, pads.2, pads.3])
            .group(c);
        let kvol = k.0 * k.1;
        let case = |abs| conv_graph(&[batch, c, h, w], c * mult, a.clone(), bias, ACTS[act], residual, abs);
        prop_assume!(case(false).is_some());
        // bias, taps, residual: one rounding each.
        check_reference(case, kvol + 2);
    }

    #[test]
    fn single_pixel_pointwise_conv_matches_reference(
        batch in 1usize..3,
        c in 1usize..300,
        m in 1usize..70,
        bias in any::<bool>(),
        residual in any::<bool>(),
        act in 0usize..ACTS.len(),
    ) {
        let a = ConvAttrs::new(&[1, 1]);
        let case = |abs| conv_graph(&[batch, c, 1, 1], m, a.clone(), bias, ACTS[act], residual, abs);
        // c products, bias and residual (the AVX2 routine's four chains of ⌈c/4⌉ FMAs need
        // less; the bound covers any order, e.g. the Cranelift fallback's).
        check_reference(case, c + 2);
    }
}

/// Runs `g` at 1, 2 and 3 threads: the outputs must be bit-identical, the conv must have run
/// on several threads with `kernel` (when the host has AVX2/FMA), and match the reference.
fn check_split(g: &VerifiedGraph, inputs: &[Tensor], kernel: &str) {
    let mut model = Model::compile(g).unwrap_or_else(|e| panic!("{e}"));
    model.set_threads(1);
    let want = model.run(inputs).expect("runs");
    let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    for threads in [2, 3] {
        model.set_threads(threads);
        let (got, profile) = model.run_profiled(inputs).expect("runs");
        for l in &profile.layers {
            assert!(l.units >= 2 && l.threads > 1, "`{}`: {} units on {} threads", l.name, l.units, l.threads);
            if avx2 && std::env::var("CNNC_KERNELS").is_err() {
                assert_eq!(l.kernel, kernel, "`{}`", l.name);
            }
        }
        let same = got[0]
            .as_f32()
            .expect("f32")
            .iter()
            .zip(want[0].as_f32().expect("f32"))
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{threads} threads differ from 1 thread");
    }
    let reference = run_reference(g, inputs).expect("reference runs");
    assert_close("y", &want[0], &reference[0]);
}

fn dw(k: usize, s: usize, pad: usize, group: usize) -> ConvAttrs {
    ConvAttrs::new(&[k, k]).strides(&[s, s]).pads(&[pad; 4]).group(group)
}

#[test]
fn depthwise_units_are_bit_identical_across_threads() {
    // Channel blocks (many small planes), and row blocks of one large plane per channel.
    let cases = [
        ([1, 64, 28, 28], dw(3, 1, 1, 64), Some(UnaryOp::HardSwish), true),
        ([1, 48, 29, 30], dw(5, 2, 2, 48), None, false),
        ([2, 3, 230, 190], dw(3, 1, 1, 3), Some(UnaryOp::Relu), true),
        ([1, 4, 601, 240], dw(3, 2, 1, 4), Some(UnaryOp::Sigmoid), false),
    ];
    for (x, a, act, residual) in cases {
        let m = x[1];
        let (g, inputs) = conv_graph(&x, m, a, true, act, residual, false).expect("valid");
        check_split(&g, &inputs, "conv-depthwise-avx2");
    }
}

#[test]
fn single_pixel_pointwise_units_are_bit_identical_across_threads() {
    let a = ConvAttrs::new(&[1, 1]);
    let (g, inputs) = conv_graph(&[1, 480, 1, 1], 1283, a, true, Some(UnaryOp::HardSwish), true, false).expect("valid");
    check_split(&g, &inputs, "conv-gemv-avx2");
}
