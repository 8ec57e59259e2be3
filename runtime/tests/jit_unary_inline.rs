//! The inline `exp`, `sigmoid`, `swish` and `tanh` (the host's AVX2 routine where it has one,
//! else the 4-lane Cranelift loop: the same bits) against f64 over a dense sweep of the f32 range
//! plus the special values (±0, ±∞, NaN, overflow and underflow thresholds).
//!
//! Tolerances: `exp` within 2e-7 relative wherever the result is a normal f32 (the reference
//! rounds f64 `exp` once; the polynomial and the range reduction add about one ulp), subnormal
//! results within 2 units of the smallest subnormal. `sigmoid` and `tanh` add one division
//! and one addition: 4e-7 relative; `swish` one product more: 5e-7 relative.

use cnnc_ir::{Graph, Op, Tensor, TensorType, UnaryOp, verify};
use cnnc_runtime::Model;

fn run(op: UnaryOp, xs: &[f32]) -> Vec<f32> {
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::f32([xs.len()]));
    let y = g.add_node("op", Op::Unary(op), &[x]).expect("infers");
    g.add_output("y", y[0]);
    let model = Model::compile(&verify(g).expect("verifies")).expect("compiles");
    let out = model.run(&[Tensor::from_f32([xs.len()], xs.to_vec()).expect("shape")]).expect("runs");
    out[0].as_f32().expect("f32").to_vec()
}

/// A dense sweep of [lo, hi], the specials, and an odd length so the scalar tail runs too.
fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    let mut xs: Vec<f32> = (0..n).map(|i| lo + (hi - lo) * (i as f32 / n as f32)).collect();
    xs.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 88.72283, 88.72284, -87.33655, -103.9, -104.0]);
    xs.extend([1e-8, -1e-8, 1e-30, f32::MIN_POSITIVE, 0.625, -0.625, 0.624_999_94, 9.0, -9.0, 20.0]);
    xs.push(1.5);
    xs
}

/// Largest relative error of `got` against `want(x)` over normal results; panics on a
/// mismatch in the special cases.
fn max_rel_err(xs: &[f32], got: &[f32], want: impl Fn(f64) -> f64) -> f64 {
    let mut worst = 0f64;
    for (&x, &g) in xs.iter().zip(got) {
        let w = want(f64::from(x));
        let wf = w as f32;
        if w.is_nan() {
            assert!(g.is_nan(), "f({x}) = {g}, expected NaN");
        } else if wf.is_infinite() || wf == 0.0 {
            assert!(g == wf || (wf == 0.0 && g.abs() <= 2.0 * 1.4e-45), "f({x}) = {g}, expected {wf}");
        } else if wf.abs() < f32::MIN_POSITIVE {
            assert!((f64::from(g) - w).abs() <= 2.0 * 1.4e-45, "f({x}) = {g}, expected {w}");
        } else {
            let e = ((f64::from(g) - w) / w).abs();
            worst = worst.max(e);
        }
    }
    worst
}

#[test]
fn inline_exp_is_within_2e_7_relative_over_the_f32_range() {
    let xs = sweep(-110.0, 95.0, 400_003);
    let got = run(UnaryOp::Exp, &xs);
    let e = max_rel_err(&xs, &got, f64::exp);
    assert!(e < 2e-7, "exp: max relative error {e:.3e}");
}

#[test]
fn inline_sigmoid_is_within_4e_7_relative() {
    let xs = sweep(-110.0, 40.0, 300_001);
    let got = run(UnaryOp::Sigmoid, &xs);
    let e = max_rel_err(&xs, &got, |x| 1.0 / (1.0 + (-x).exp()));
    assert!(e < 4e-7, "sigmoid: max relative error {e:.3e}");
}

#[test]
fn inline_swish_is_within_5e_7_relative() {
    for beta in [1.0f32, 1.702, -0.5] {
        // Where σ(β·x) is subnormal (β·x < −85), its absolute rounding is multiplied by |x|.
        let xs: Vec<f32> = sweep(-110.0, 40.0, 300_001)
            .into_iter()
            .filter(|&x| x.is_infinite() || x.is_nan() || beta * x >= -85.0)
            .collect();
        let got = run(UnaryOp::Swish { beta }, &xs);
        let e = max_rel_err(&xs, &got, |x| {
            let t = f64::from(beta * x as f32);
            x / (1.0 + (-t).exp())
        });
        assert!(e < 5e-7, "swish β = {beta}: max relative error {e:.3e}");
    }
}

#[test]
fn inline_tanh_is_within_4e_7_relative() {
    let mut xs = sweep(-12.0, 12.0, 300_001);
    xs.extend((0..2000).map(|i| 1e-6 * i as f32));
    let got = run(UnaryOp::Tanh, &xs);
    let e = max_rel_err(&xs, &got, f64::tanh);
    assert!(e < 4e-7, "tanh: max relative error {e:.3e}");
}
