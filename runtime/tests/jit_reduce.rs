//! JIT softmax, reductions and arg-max/arg-min against the reference interpreter: every reduce
//! kind on f32 (and i64 where allowed), axis patterns that leave the contiguous run kept or
//! reduced, empty and full axis lists, odd extents (vector tails), ties and NaN.

use cnnc_ir::{Graph, Op, ReduceKind, Tensor, verify};
use cnnc_runtime::testing::random_values;
use cnnc_runtime::{Model, run_reference};

/// Deterministic pseudo-random values in [-2, 2).
fn noise(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_f32(shape.to_vec(), random_values(shape.iter().product(), seed, 2.0)).expect("shape")
}

/// Small integers in [-4, 4] (exact products and sums), ties included.
fn ints(shape: &[usize], seed: u64) -> Tensor {
    let v = noise(shape, seed).as_f32().expect("f32").iter().map(|&v| (v * 2.2).round() as i64).collect();
    Tensor::from_i64(shape.to_vec(), v).expect("shape")
}

/// Runs `op` on `x` through the JIT and the reference. f32 elements must agree within
/// `tol · (1 + |reference|)` (NaN matches NaN, infinities exactly); i64 exactly.
fn check(op: Op, x: Tensor, tol: f32) {
    let mut g = Graph::new("g");
    let xin = g.add_input("x", x.ty());
    let y = g.add_node("op", op.clone(), &[xin]).expect("infers")[0];
    g.add_output("y", y);
    let g = verify(g).expect("verifies");
    let got = Model::compile(&g).expect("compiles").run(std::slice::from_ref(&x)).expect("runs");
    let want = run_reference(&g, &[x]).expect("reference runs");
    assert_eq!(got[0].ty(), want[0].ty(), "{op:?}");
    if let (Some(got), Some(want)) = (got[0].as_f32(), want[0].as_f32()) {
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * (1.0 + b.abs());
            assert!(ok, "{op:?}: element {i}: JIT {a} vs reference {b}");
        }
    } else {
        assert_eq!(got[0], want[0], "{op:?}");
    }
}

const SHAPE: [usize; 4] = [2, 3, 5, 7];

fn axis_sets() -> Vec<Vec<usize>> {
    vec![vec![], vec![0], vec![1], vec![3], vec![2, 3], vec![1, 2], vec![0, 2], vec![1, 3], vec![0, 1, 2, 3]]
}

// f32 sums and products of ≤ 210 values in [-2, 2) vs the f64 reference (products of up to
// 210 factors and log/exp add a few ulp more).
const TOL: f32 = 1e-5;

#[test]
fn every_f32_reduction_matches_reference_over_every_axis_pattern() {
    for kind in ReduceKind::ALL {
        for axes in axis_sets() {
            for keepdims in [false, true] {
                let mut x = noise(&SHAPE, 3);
                if matches!(kind, ReduceKind::LogSum) {
                    let v = x.as_f32().expect("f32").iter().map(|v| v.abs() + 0.1).collect();
                    x = Tensor::from_f32(SHAPE.to_vec(), v).expect("shape");
                }
                if kind == ReduceKind::Prod {
                    // Keep products of 210 factors within range.
                    let v = x.as_f32().expect("f32").iter().map(|v| 1.0 + v * 0.1).collect();
                    x = Tensor::from_f32(SHAPE.to_vec(), v).expect("shape");
                }
                check(Op::Reduce { kind, axes: axes.clone(), keepdims }, x, TOL);
            }
        }
    }
}

#[test]
fn long_contiguous_reductions_use_partial_sums() {
    for kind in [ReduceKind::Mean, ReduceKind::Max, ReduceKind::L2, ReduceKind::LogSumExp] {
        check(Op::Reduce { kind, axes: vec![2, 3], keepdims: true }, noise(&[1, 3, 31, 33], 5), TOL);
        check(Op::Reduce { kind, axes: vec![0], keepdims: false }, noise(&[37, 13], 6), TOL);
    }
}

#[test]
fn every_integer_reduction_matches_reference_exactly() {
    for kind in ReduceKind::ALL.into_iter().filter(ReduceKind::accepts_i64) {
        for axes in axis_sets() {
            let x = if kind == ReduceKind::Prod { ints(&[2, 3, 2, 3], 4) } else { ints(&SHAPE, 4) };
            if axes.iter().any(|&a| a >= x.shape().len()) {
                continue;
            }
            check(Op::Reduce { kind, axes: axes.clone(), keepdims: true }, x, 0.0);
        }
    }
}

#[test]
fn max_and_min_propagate_nan_and_log_sum_exp_handles_infinities() {
    let mut v = noise(&[3, 9], 7).as_f32().expect("f32").to_vec();
    v[4] = f32::NAN;
    v[10] = f32::INFINITY;
    v[18..27].fill(f32::NEG_INFINITY);
    let x = Tensor::from_f32([3, 9], v).expect("shape");
    for kind in [ReduceKind::Max, ReduceKind::Min, ReduceKind::LogSumExp, ReduceKind::Sum] {
        for axes in [vec![0], vec![1]] {
            check(Op::Reduce { kind, axes, keepdims: false }, x.clone(), TOL);
        }
    }
}

#[test]
fn reductions_of_empty_groups_give_the_identity() {
    for kind in ReduceKind::ALL {
        check(Op::Reduce { kind, axes: vec![1], keepdims: true }, noise(&[3, 0, 5], 1), 0.0);
        check(Op::Reduce { kind, axes: vec![0], keepdims: false }, noise(&[0, 6], 1), 0.0);
    }
}

// Softmax: inline exp (≈1 ulp), f32 sum and reciprocal vs f64.
const SOFTMAX_TOL: f32 = 2e-6;

#[test]
fn softmax_matches_reference_on_every_axis_and_flatten() {
    for axis in 0..4 {
        for flatten in [false, true] {
            check(Op::Softmax { axis, flatten }, noise(&SHAPE, 9), SOFTMAX_TOL);
        }
    }
    check(Op::Softmax { axis: 1, flatten: false }, noise(&[1, 1000], 2), SOFTMAX_TOL);
    let big = noise(&[2, 37], 3).as_f32().expect("f32").iter().map(|v| v * 60.0).collect();
    check(Op::Softmax { axis: 1, flatten: false }, Tensor::from_f32([2, 37], big).expect("shape"), SOFTMAX_TOL);
}

#[test]
fn arg_reduce_matches_reference_on_ties_nan_and_both_dtypes() {
    let mut v: Vec<f32> = noise(&SHAPE, 11).as_f32().expect("f32").iter().map(|v| (v * 1.5).round()).collect();
    v[0] = f32::NAN;
    v[40] = f32::NAN;
    let xf = Tensor::from_f32(SHAPE.to_vec(), v).expect("shape");
    let xi = ints(&SHAPE, 12);
    for x in [xf, xi] {
        for axis in 0..4 {
            for max in [true, false] {
                for select_last_index in [false, true] {
                    let op = Op::ArgReduce { max, axis, keepdims: axis % 2 == 0, select_last_index };
                    check(op, x.clone(), 0.0);
                }
            }
        }
    }
}
