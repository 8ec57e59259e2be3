//! JIT pooling and batch-norm kernels against the reference interpreter: 1-D/2-D/3-D windows,
//! strides 1, 2 and 3 (the vector paths and the scalar one), dilations, asymmetric pads,
//! ceil mode, both average-pool divisor rules, NaN inputs and global pooling.

use cnnc_ir::{Graph, Op, PoolAttrs, Tensor, verify};
use cnnc_runtime::testing::random_values;
use cnnc_runtime::{Model, run_reference};

/// Deterministic pseudo-random values in [-2, 2).
fn noise(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_f32(shape.to_vec(), random_values(shape.iter().product(), seed, 2.0)).expect("shape")
}

/// Runs `op` on `x` (a graph input) and `weights` (constants) through the JIT and the
/// reference; every element must agree within `tol · (1 + |reference|)` (NaN matches NaN).
fn check(op: Op, x: Tensor, weights: &[Tensor], tol: f32) {
    let mut g = Graph::new("g");
    let xin = g.add_input("x", x.ty());
    let mut ins = vec![xin];
    ins.extend(weights.iter().enumerate().map(|(i, w)| g.add_weight(format!("w{i}"), w.clone())));
    let y = g.add_node("op", op.clone(), &ins).expect("infers")[0];
    g.add_output("y", y);
    let g = verify(g).expect("verifies");
    let model = Model::compile(&g).expect("compiles");
    let got = model.run(std::slice::from_ref(&x)).expect("runs");
    let want = run_reference(&g, &[x]).expect("reference runs");
    assert_eq!(got[0].shape(), want[0].shape(), "{op:?}");
    let (got, want) = (got[0].as_f32().expect("f32"), want[0].as_f32().expect("f32"));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * (1.0 + b.abs());
        assert!(ok, "{op:?}: element {i}: JIT {a} vs reference {b}");
    }
}

fn pool(kernel: &[usize], strides: &[usize], dilations: &[usize], pads: &[usize], ceil_mode: bool) -> PoolAttrs {
    PoolAttrs {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        pads: pads.to_vec(),
        ceil_mode,
    }
}

/// 2-D windows that exercise every column path: interior groups of 4 at strides 1 and 2, the
/// scalar interior remainder, the clipped edges, and stride 3 (scalar only).
fn cases_2d() -> Vec<PoolAttrs> {
    vec![
        pool(&[2, 2], &[2, 2], &[1, 1], &[0, 0, 0, 0], false),
        pool(&[3, 3], &[2, 2], &[1, 1], &[1, 1, 1, 1], false),
        pool(&[3, 3], &[2, 2], &[1, 1], &[0, 0, 0, 0], true),
        pool(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], false),
        pool(&[3, 2], &[1, 1], &[2, 3], &[2, 1, 0, 2], false),
        pool(&[3, 3], &[3, 3], &[1, 1], &[1, 0, 2, 1], true),
        pool(&[2, 3], &[2, 2], &[1, 2], &[1, 2, 1, 2], true),
        pool(&[5, 5], &[1, 1], &[1, 1], &[2, 2, 2, 2], false),
    ]
}

// Max pooling selects an input value exactly; only the average's f32 sum differs from the
// reference's f64 sum (a few ulp for ≤ 25 taps).
const AVG_TOL: f32 = 1e-6;

#[test]
fn max_pool_2d_matches_reference_on_strides_dilations_pads_and_ceil_mode() {
    for (i, a) in cases_2d().into_iter().enumerate() {
        for shape in [[1, 2, 13, 17], [2, 3, 8, 9], [1, 1, 5, 4]] {
            check(Op::MaxPool(a.clone()), noise(&shape, i as u64), &[], 0.0);
        }
    }
}

#[test]
fn avg_pool_2d_matches_reference_with_and_without_pad_counting() {
    for (i, a) in cases_2d().into_iter().enumerate() {
        for count_include_pad in [false, true] {
            for shape in [[1, 2, 13, 17], [2, 3, 8, 9], [1, 1, 5, 4]] {
                let op = Op::AvgPool { pool: a.clone(), count_include_pad };
                check(op, noise(&shape, i as u64), &[], AVG_TOL);
            }
        }
    }
}

#[test]
fn pools_1d_and_3d_match_reference() {
    let p1 = pool(&[3], &[2], &[1], &[1, 2], true);
    let p1s = pool(&[4], &[1], &[2], &[0, 3], false);
    let p3 = pool(&[2, 3, 2], &[1, 2, 1], &[1, 1, 2], &[1, 0, 1, 0, 1, 1], true);
    for (a, shape) in [(p1, vec![2, 3, 19]), (p1s, vec![1, 2, 11]), (p3, vec![1, 2, 4, 7, 9])] {
        check(Op::MaxPool(a.clone()), noise(&shape, 7), &[], 0.0);
        for count_include_pad in [false, true] {
            check(Op::AvgPool { pool: a.clone(), count_include_pad }, noise(&shape, 8), &[], AVG_TOL);
        }
    }
}

#[test]
fn max_pool_skips_nan_like_the_reference() {
    let mut x = noise(&[1, 1, 6, 10], 3).as_f32().expect("f32").to_vec();
    for i in [0, 7, 13, 14, 31, 59] {
        x[i] = f32::NAN;
    }
    let x = Tensor::from_f32([1, 1, 6, 10], x).expect("shape");
    for a in cases_2d() {
        check(Op::MaxPool(a), x.clone(), &[], 0.0);
    }
}

#[test]
fn global_pools_match_reference_on_odd_planes() {
    for shape in [vec![1, 3, 7, 7], vec![2, 5, 1, 1], vec![1, 2, 17], vec![1, 1, 3, 5, 6], vec![2, 3, 0, 4]] {
        check(Op::GlobalMaxPool, noise(&shape, 1), &[], 0.0);
        // f32 partial sums of ≤ 90 values vs the f64 reference.
        check(Op::GlobalAvgPool, noise(&shape, 2), &[], 1e-6);
    }
}

#[test]
fn empty_batch_pools_to_nothing() {
    check(Op::MaxPool(pool(&[2, 2], &[2, 2], &[1, 1], &[0, 0, 0, 0], false)), noise(&[0, 3, 4, 4], 0), &[], 0.0);
    check(Op::GlobalAvgPool, noise(&[0, 3, 4, 4], 0), &[], 0.0);
}

#[test]
fn batchnorm_matches_reference_with_constant_and_runtime_params() {
    for shape in [vec![2, 5, 3, 7], vec![3, 6], vec![1, 4, 9], vec![1, 3, 1, 1]] {
        let c = shape[1];
        let scale = noise(&[c], 11);
        let bias = noise(&[c], 12);
        let mean = noise(&[c], 13);
        let var = Tensor::from_f32([c], noise(&[c], 14).as_f32().expect("f32").iter().map(|v| v.abs()).collect())
            .expect("shape");
        // Folded `x·a + b` in f32 vs the reference's f64 `(x − m)/σ·s + b`: a few ulp of the
        // larger of |x·a| and |b| (cancellation near x = mean shows relative to 1 + |y|).
        check(Op::BatchNorm { epsilon: 1e-3 }, noise(&shape, 10), &[scale, bias, mean, var], 2e-6);
    }
}

#[test]
fn batchnorm_with_runtime_params_matches_reference() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", cnnc_ir::TensorType::f32([2, 3, 5]));
    let params: Vec<_> = ["s", "b", "m", "v"].iter().map(|n| g.add_input(*n, cnnc_ir::TensorType::f32([3]))).collect();
    let y = g
        .add_node("bn", Op::BatchNorm { epsilon: 1e-5 }, &[x, params[0], params[1], params[2], params[3]])
        .expect("infers")[0];
    g.add_output("y", y);
    let g = verify(g).expect("verifies");
    let var = Tensor::from_f32([3], vec![0.5, 1.5, 0.01]).expect("shape");
    let inputs = vec![noise(&[2, 3, 5], 1), noise(&[3], 2), noise(&[3], 3), noise(&[3], 4), var];
    let got = Model::compile(&g).expect("compiles").run(&inputs).expect("runs");
    let want = run_reference(&g, &inputs).expect("reference runs");
    for (a, b) in got[0].as_f32().expect("f32").iter().zip(want[0].as_f32().expect("f32")) {
        // As above: the folded affine form in f32 vs the f64 reference.
        assert!((a - b).abs() <= 2e-6 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

/// Byte max-pool (u8 and i8, `codegen/qpool.rs`) against the reference, bit for bit, and the
/// reference's byte max-pool against its f32 max-pool of the same values (the quantized
/// max-pool is the f32 one on the integers; an all-padding window gives the type's minimum):
/// every 2-D case above plus 1-D windows, on rows from 4 to 70 bytes wide (the 16-output
/// vector groups at strides 1 and 2, the scalar tail and the scalar stride 3), bytes with
/// both extremes.
#[test]
fn byte_max_pool_matches_reference_and_the_float_max_pool() {
    let mut cases: Vec<(PoolAttrs, Vec<usize>)> = Vec::new();
    for a in cases_2d() {
        for shape in [vec![1, 2, 13, 17], vec![2, 3, 9, 40], vec![1, 1, 5, 4], vec![1, 2, 7, 70]] {
            cases.push((a.clone(), shape));
        }
    }
    cases.push((pool(&[3], &[2], &[1], &[1, 2], true), vec![2, 3, 67]));
    cases.push((pool(&[4], &[1], &[2], &[0, 3], false), vec![1, 2, 35]));
    cases.push((pool(&[2], &[3], &[1], &[1, 1], true), vec![1, 2, 50]));
    let mut s = 12345u64;
    let mut byte = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        match (s >> 33) % 8 {
            0 => 0u8,
            1 => 255,
            2 => 127,
            3 => 128,
            _ => (s >> 41) as u8,
        }
    };
    for (a, shape) in cases {
        let n: usize = shape.iter().product();
        let bytes: Vec<u8> = (0..n).map(|_| byte()).collect();
        for signed in [false, true] {
            let x = if signed {
                Tensor::from_i8(shape.clone(), bytes.iter().map(|&b| b as i8).collect()).expect("shape")
            } else {
                Tensor::from_u8(shape.clone(), bytes.clone()).expect("shape")
            };
            let mut g = Graph::new("g");
            let xin = g.add_input("x", x.ty());
            let y = g.add_node("pool", Op::MaxPool(a.clone()), &[xin]).expect("infers")[0];
            g.add_output("y", y);
            let g = verify(g).expect("verifies");
            let mut model = Model::compile(&g).expect("compiles");
            let want = run_reference(&g, std::slice::from_ref(&x)).expect("reference runs").remove(0);
            for threads in [1, 2] {
                model.set_threads(threads);
                let got = model.run(std::slice::from_ref(&x)).expect("runs").remove(0);
                assert_eq!(got, want, "{a:?} {shape:?} signed {signed}, {threads} thread(s)");
            }
            // The same pool in f32 on the integer values: equal where a window has an input tap,
            // −∞ (the type's minimum on bytes) where it has none.
            let xf: Vec<f32> = bytes.iter().map(|&b| if signed { f32::from(b as i8) } else { f32::from(b) }).collect();
            let xf = Tensor::from_f32(shape.clone(), xf).expect("shape");
            let mut gf = Graph::new("g");
            let xin = gf.add_input("x", xf.ty());
            let y = gf.add_node("pool", Op::MaxPool(a.clone()), &[xin]).expect("infers")[0];
            gf.add_output("y", y);
            let gf = verify(gf).expect("verifies");
            let wf = run_reference(&gf, &[xf]).expect("reference runs").remove(0);
            let min = if signed { -128.0 } else { 0.0 };
            let from_float: Vec<f32> = wf.as_f32().expect("f32").iter().map(|&v| v.max(min)).collect();
            let from_bytes: Vec<f32> = match want.data() {
                cnnc_ir::TensorData::U8(v) => v.iter().map(|&b| f32::from(b)).collect(),
                cnnc_ir::TensorData::I8(v) => v.iter().map(|&b| f32::from(b)).collect(),
                other => panic!("a byte max-pool gave {other:?}"),
            };
            assert_eq!(from_bytes, from_float, "{a:?} {shape:?} signed {signed}: bytes vs f32");
        }
    }
}
