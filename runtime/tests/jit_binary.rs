//! Element-wise binary kernels and `where` against the reference interpreter, over the
//! broadcasting layouts the kernel specializes (same shape, scalar, per-channel, trailing
//! axis, both sides stretched) and odd sizes that exercise the 8/4/1-lane tails.
//!
//! Tolerance: the f32 arithmetic, max/min/prelu and comparisons compute the same single IEEE
//! operation as the reference, so they must match bit for bit (NaN matching NaN). Only `pow`
//! differs: the kernel calls f32 `powf`, the reference rounds f64 `powf` once, so they agree
//! to about one ulp (relative 2.5e-7).

use cnnc_ir::{BinaryOp, DType, Graph, Op, Tensor, TensorData, TensorType, verify};
use cnnc_runtime::testing::random_values;
use cnnc_runtime::{Model, run_reference};

/// Values with the special cases sprinkled in.
fn f32_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    let mut v = random_values(n, seed, 4.0);
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.0, -1.0];
    for (i, x) in v.iter_mut().enumerate() {
        if (i as u64 * 7 + seed).is_multiple_of(11) {
            *x = specials[(i + seed as usize) % specials.len()];
        }
    }
    Tensor::from_f32(shape.to_vec(), v).expect("shape")
}

fn i64_tensor(shape: &[usize], seed: u64, nonzero: bool) -> Tensor {
    let n = shape.iter().product();
    let v = random_values(n, seed, 4.0)
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let k = (x * 3.0) as i64;
            let k = if i % 13 == 5 { [i64::MIN, i64::MAX, -1][i % 3] } else { k };
            if nonzero && k == 0 { 3 } else { k }
        })
        .collect();
    Tensor::from_i64(shape.to_vec(), v).expect("shape")
}

fn bool_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_bool(shape.to_vec(), random_values(n, seed, 4.0).iter().map(|&x| x > 0.0).collect()).expect("shape")
}

/// Builds `out = op(inputs…)` where each input is a graph input, or a weight when `weights[i]`.
fn single_op(op: Op, inputs: &[Tensor], weights: &[bool]) -> (cnnc_ir::VerifiedGraph, Vec<Tensor>) {
    let mut g = Graph::new("t");
    let mut feeds = Vec::new();
    let refs: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if weights.get(i).copied().unwrap_or(false) {
                g.add_weight(format!("w{i}"), t.clone())
            } else {
                feeds.push(t.clone());
                g.add_input(format!("x{i}"), t.ty())
            }
        })
        .collect();
    let out = g.add_node("op", op, &refs).expect("infers");
    g.add_output("y", out[0]);
    (verify(g).expect("verifies"), feeds)
}

fn same_bits(got: &Tensor, want: &Tensor) -> bool {
    match (got.data(), want.data()) {
        (TensorData::F32(g), TensorData::F32(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
        }
        _ => got == want,
    }
}

/// Runs `op` through the JIT and the reference; compares exactly (or to `rel` for f32).
fn check(op: Op, inputs: &[Tensor], weights: &[bool], rel: Option<f32>) {
    let (g, feeds) = single_op(op.clone(), inputs, weights);
    let want = run_reference(&g, &feeds).expect("reference runs");
    let model = Model::compile(&g).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    let got = model.run(&feeds).expect("runs");
    let shapes: Vec<_> = inputs.iter().map(|t| t.ty()).collect();
    assert_eq!(got[0].ty(), want[0].ty());
    match rel {
        None => assert!(same_bits(&got[0], &want[0]), "{op:?} on {shapes:?}:\n got {:?}\nwant {:?}", got[0], want[0]),
        Some(tol) => {
            let (g, w) = (got[0].as_f32().expect("f32"), want[0].as_f32().expect("f32"));
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                let ok = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol * b.abs();
                assert!(ok, "{op:?} on {shapes:?}: element {i}: {a} vs {b}");
            }
        }
    }
}

/// Shape pairs covering every layout the kernel distinguishes.
const SHAPES: &[(&[usize], &[usize])] = &[
    (&[2, 3, 5, 7], &[2, 3, 5, 7]),
    (&[2, 3, 5, 7], &[1, 3, 1, 1]),
    (&[1, 3, 1, 1], &[2, 3, 5, 7]),
    (&[2, 3, 5, 7], &[]),
    (&[], &[2, 3, 5, 7]),
    (&[2, 3, 5, 7], &[7]),
    (&[2, 3, 4, 17], &[2, 1, 4, 1]),
    (&[5, 1], &[1, 6]),
    (&[3, 1, 4], &[2, 1, 5, 1]),
    (&[1, 16, 9, 9], &[1, 16, 1, 1]),
    (&[13], &[13]),
    (&[3], &[1]),
    (&[], &[]),
    (&[0, 3], &[1, 3]),
];

const F32_OPS: [BinaryOp; 7] =
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min, BinaryOp::Pow];

#[test]
fn f32_arithmetic_matches_reference_on_every_layout() {
    for (k, &(sa, sb)) in SHAPES.iter().enumerate() {
        for op in F32_OPS {
            let a = f32_tensor(sa, 3 * k as u64 + 1);
            let b = f32_tensor(sb, 3 * k as u64 + 2);
            let rel = (op == BinaryOp::Pow).then_some(2.5e-7);
            check(Op::Binary(op), &[a.clone(), b.clone()], &[], rel);
            // The same with the second operand a weight (a constant buffer).
            check(Op::Binary(op), &[a, b], &[false, true], rel);
        }
    }
}

#[test]
fn max_min_nan_semantics_match_reference() {
    let a = Tensor::from_f32([9], vec![f32::NAN, 1.0, f32::NAN, -0.0, 0.0, 2.0, f32::NAN, 3.0, -1.0]).expect("a");
    let b = Tensor::from_f32([9], vec![1.0, f32::NAN, f32::NAN, 0.0, -0.0, 2.0, 5.0, f32::INFINITY, -2.0]).expect("b");
    for op in [BinaryOp::Max, BinaryOp::Min] {
        check(Op::Binary(op), &[a.clone(), b.clone()], &[], None);
        check(Op::Binary(op), &[b.clone(), a.clone()], &[], None);
    }
}

#[test]
fn pow_by_constant_two_is_exact_square() {
    let a = f32_tensor(&[3, 11], 5);
    let two = Tensor::from_f32([1], vec![2.0]).expect("scalar");
    check(Op::Binary(BinaryOp::Pow), &[a, two], &[false, true], None);
}

#[test]
fn prelu_matches_reference_for_channel_scalar_and_trailing_slopes() {
    let x = f32_tensor(&[2, 6, 5, 9], 7);
    for slope in [&[6usize, 1, 1][..], &[1], &[9], &[1, 6, 1, 1], &[2, 6, 5, 9]] {
        let s = f32_tensor(slope, 8);
        check(Op::Binary(BinaryOp::PRelu), &[x.clone(), s.clone()], &[false, true], None);
        check(Op::Binary(BinaryOp::PRelu), &[x.clone(), s], &[], None);
    }
}

#[test]
fn comparisons_match_reference_on_f32_i64_and_bool() {
    for (k, &(sa, sb)) in SHAPES.iter().enumerate() {
        let seed = 5 * k as u64;
        for op in [BinaryOp::Equal, BinaryOp::Less, BinaryOp::Greater] {
            // Few distinct values so that equality actually happens.
            let round = |t: Tensor| {
                let v = t.as_f32().expect("f32").iter().map(|x| x.round()).collect();
                Tensor::from_f32(t.shape().to_vec(), v).expect("shape")
            };
            check(Op::Binary(op), &[round(f32_tensor(sa, seed)), round(f32_tensor(sb, seed + 1))], &[], None);
            check(Op::Binary(op), &[i64_tensor(sa, seed, false), i64_tensor(sb, seed + 1, false)], &[], None);
        }
        check(Op::Binary(BinaryOp::Equal), &[bool_tensor(sa, seed), bool_tensor(sb, seed + 2)], &[], None);
    }
}

#[test]
fn i64_arithmetic_matches_reference_and_wraps() {
    for (k, &(sa, sb)) in SHAPES.iter().enumerate() {
        let seed = 7 * k as u64;
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min] {
            check(Op::Binary(op), &[i64_tensor(sa, seed, false), i64_tensor(sb, seed + 1, true)], &[], None);
        }
    }
}

#[test]
fn i64_pow_matches_reference_on_small_values() {
    let a = Tensor::from_i64([12], vec![2, -3, 0, 1, -1, 5, 7, -2, 0, 3, 10, -1]).expect("a");
    let b = Tensor::from_i64([12], vec![10, 3, 0, -4, -3, 0, 2, 63, -1, -2, 19, 64]).expect("b");
    check(Op::Binary(BinaryOp::Pow), &[a, b], &[], None);
}

/// The reference rejects a zero divisor; the kernel documents 0 and must not trap.
#[test]
fn i64_division_by_zero_writes_zero_instead_of_trapping() {
    let a = Tensor::from_i64([4], vec![7, -7, i64::MIN, 0]).expect("a");
    let b = Tensor::from_i64([4], vec![0, 2, -1, 0]).expect("b");
    let (g, feeds) = single_op(Op::Binary(BinaryOp::Div), &[a, b], &[]);
    let got = Model::compile(&g).expect("compiles").run(&feeds).expect("runs");
    assert_eq!(got[0].as_i64(), Some(&[0, -3, i64::MIN, 0][..]));
}

#[test]
fn where_matches_reference_with_broadcasting_on_every_dtype() {
    let layouts: &[[&[usize]; 3]] = &[
        [&[2, 3, 5], &[2, 3, 5], &[2, 3, 5]],
        [&[1, 3, 1], &[2, 3, 5], &[]],
        [&[5], &[2, 1, 5], &[3, 1]],
        [&[], &[4, 9], &[4, 9]],
        [&[2, 1, 1], &[1, 7], &[2, 1, 7]],
    ];
    for (k, [sc, sa, sb]) in layouts.iter().enumerate() {
        let seed = 11 * k as u64;
        let c = bool_tensor(sc, seed);
        check(Op::Where, &[c.clone(), f32_tensor(sa, seed + 1), f32_tensor(sb, seed + 2)], &[], None);
        check(Op::Where, &[c.clone(), i64_tensor(sa, seed + 1, false), i64_tensor(sb, seed + 2, false)], &[], None);
        check(Op::Where, &[c, bool_tensor(sa, seed + 1), bool_tensor(sb, seed + 2)], &[], None);
    }
}

#[test]
fn zero_size_outputs_run_as_no_ops() {
    let a = Tensor::new(vec![0, 4], TensorData::F32(vec![])).expect("empty");
    let b = f32_tensor(&[1, 4], 1);
    check(Op::Binary(BinaryOp::Add), &[a, b], &[], None);
    let t = TensorType::new(DType::Bool, vec![0]);
    let c = Tensor::zeros(&t);
    let x = Tensor::from_f32([0], vec![]).expect("empty");
    check(Op::Where, &[c, x.clone(), x], &[], None);
}
