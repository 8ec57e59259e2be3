//! Data-movement kernels (transpose, slice, pad, expand, gather, concat, split, cast) against
//! the reference interpreter, on every dtype (f32 4 bytes, i64 8 bytes, bool 1 byte), with odd
//! sizes, negative steps, cropping pads and pads larger than the axis.
//!
//! Tolerance: none. These kernels move bits (or, for cast, perform the same single conversion
//! as the reference), so outputs must be identical, NaN payloads aside.

use cnnc_ir::{DType, Graph, Op, PadMode, SliceAxis, Tensor, TensorData, verify};
use cnnc_runtime::testing::random_values;
use cnnc_runtime::{Model, run_reference};

fn tensor(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    let v = random_values(n, seed, 4.0);
    let data = match dtype {
        DType::F32 => TensorData::F32(v),
        DType::I64 => TensorData::I64(v.iter().enumerate().map(|(i, &x)| (x * 1e6) as i64 * (i as i64 + 1)).collect()),
        DType::Bool => TensorData::Bool(v.iter().map(|&x| x > 0.0).collect()),
        DType::U8 => TensorData::U8(v.iter().map(|&x| (x * 32.0 + 128.0) as u8).collect()),
        DType::I8 => TensorData::I8(v.iter().map(|&x| (x * 32.0) as i8).collect()),
        DType::I32 => TensorData::I32(v.iter().enumerate().map(|(i, &x)| (x * 1e6) as i32 ^ (i as i32) << 8).collect()),
    };
    Tensor::new(shape.to_vec(), data).expect("shape")
}

const DTYPES: [DType; 6] = DType::ALL;

/// Runs `op` on `inputs` (graph inputs, or weights where `weights[i]`) through the JIT and the
/// reference and requires identical outputs.
fn check(op: Op, inputs: &[Tensor], weights: &[bool]) {
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
    let outs = g.add_node("op", op.clone(), &refs).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    for (k, o) in outs.iter().enumerate() {
        g.add_output(format!("y{k}"), *o);
    }
    let g = verify(g).expect("verifies");
    let want = run_reference(&g, &feeds).unwrap_or_else(|e| panic!("{op:?}: reference: {e}"));
    let got = Model::compile(&g).unwrap_or_else(|e| panic!("{op:?}: {e}")).run(&feeds).expect("runs");
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        let same = match (a.data(), b.data()) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                a.shape() == b.shape()
                    && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()))
            }
            _ => a == b,
        };
        let shapes: Vec<_> = inputs.iter().map(|t| t.ty()).collect();
        assert!(same, "{op:?} on {shapes:?}, output {k}:\n got {a:?}\nwant {b:?}");
    }
}

/// Every permutation of `0..n`.
fn perms(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    perms(n - 1)
        .into_iter()
        .flat_map(|p| {
            (0..n).map(move |i| {
                let mut q = p.clone();
                q.insert(i, n - 1);
                q
            })
        })
        .collect()
}

#[test]
fn transpose_matches_reference_for_every_4d_permutation_and_dtype() {
    for dtype in DTYPES {
        for perm in perms(4) {
            check(Op::Transpose { perm }, &[tensor(dtype, &[2, 3, 5, 7], 1)], &[]);
        }
        for perm in perms(3) {
            check(Op::Transpose { perm }, &[tensor(dtype, &[9, 1, 6], 2)], &[]);
        }
    }
}

#[test]
fn transpose_nchw_nhwc_on_activation_sizes() {
    for (shape, perm) in [
        (&[1, 24, 32, 32][..], &[0, 2, 3, 1][..]),
        (&[1, 32, 32, 24], &[0, 3, 1, 2]),
        (&[1, 3, 17, 13], &[0, 2, 3, 1]),
        (&[1, 17, 13, 3], &[0, 3, 1, 2]),
        (&[2, 5, 6, 10], &[0, 3, 1, 2]),
        // 3 channels to planes (the AVX2 deinterleave where the host has it): pixel counts of
        // whole 8-pixel steps, with a tail, below one step, and two images.
        (&[1, 4, 8, 3], &[0, 3, 1, 2]),
        (&[2, 9, 7, 3], &[0, 3, 1, 2]),
        (&[1, 1, 5, 3], &[0, 3, 1, 2]),
        (&[1, 224, 224, 3], &[0, 3, 1, 2]),
        (&[8, 8], &[1, 0]),
        (&[7, 9], &[1, 0]),
    ] {
        for dtype in DTYPES {
            check(Op::Transpose { perm: perm.to_vec() }, &[tensor(dtype, shape, 3)], &[]);
        }
    }
}

#[test]
fn slice_matches_reference_with_steps_and_reversal() {
    let s = |axis, start, end, step| SliceAxis { axis, start, end, step };
    let cases: Vec<Vec<SliceAxis>> = vec![
        vec![s(1, 1, 3, 1)],
        vec![s(3, 6, -1, -1)],
        vec![s(2, 4, 0, -2), s(3, 0, 7, 3)],
        vec![s(0, 1, 2, 1), s(1, 0, 3, 2), s(2, 0, 5, 1), s(3, 2, 7, 1)],
        vec![s(3, 1, 6, 1)],
        vec![s(1, 2, 2, 1)],
        vec![s(2, 4, 3, 1)],
    ];
    for dtype in DTYPES {
        for axes in &cases {
            check(Op::Slice { axes: axes.clone() }, &[tensor(dtype, &[2, 3, 5, 7], 4)], &[]);
        }
    }
}

#[test]
fn pad_matches_reference_in_every_mode_with_crops_and_wide_pads() {
    let cases: &[(&[usize], &[i64])] = &[
        (&[2, 3, 5, 7], &[0, 0, 1, 2, 0, 0, 2, 1]),
        (&[2, 3, 5, 7], &[0, 1, 0, 0, 1, 0, 0, 0]),
        (&[2, 3, 5, 7], &[1, 0, -1, 3, 0, 2, 1, -2]),
        (&[2, 3, 5, 7], &[0, 0, -2, -3, 0, 0, -1, -1]),
        (&[4, 3], &[9, 8, 11, 13]),
        (&[1, 1, 2, 1], &[0, 0, 3, 4, 0, 0, 5, 2]),
        (&[6], &[5, 0]),
        (&[6], &[0, 0]),
        (&[3, 4, 5], &[2, 3, 4, 3, 4, 5]),
        (&[2, 2, 2, 2], &[3, 3, 3, 3, 3, 3, 3, 3]),
        // Wrap runs multiply past the code-size limit: read through the index table.
        (&[2, 2, 2, 2], &[5, 5, 5, 5, 5, 5, 5, 5]),
    ];
    for dtype in DTYPES {
        for &(shape, pads) in cases {
            for mode in [PadMode::Constant, PadMode::Reflect, PadMode::Edge, PadMode::Wrap] {
                // Shape inference rejects reflect pads that would mirror past the far edge.
                let rank = shape.len();
                let too_wide = (0..rank).any(|i| {
                    let (b, e) = (pads[i], pads[rank + i]);
                    (b > 0 || e > 0) && b.max(e) >= shape[i] as i64
                });
                if mode == PadMode::Reflect && too_wide {
                    continue;
                }
                let x = tensor(dtype, shape, 5);
                check(Op::Pad { pads: pads.to_vec(), mode, value: 2.5 }, &[x], &[]);
            }
        }
    }
}

#[test]
fn constant_pad_of_an_empty_axis_fills() {
    let x = Tensor::from_f32([2, 0, 3], vec![]).expect("empty");
    check(Op::Pad { pads: vec![0, 2, 1, 0, 1, 0], mode: PadMode::Constant, value: -1.5 }, &[x], &[]);
}

#[test]
fn expand_matches_reference() {
    for dtype in DTYPES {
        check(Op::Expand { shape: vec![2, 3, 4, 5] }, &[tensor(dtype, &[3, 1, 5], 6)], &[]);
        check(Op::Expand { shape: vec![4, 1] }, &[tensor(dtype, &[1, 9], 6)], &[]);
        check(Op::Expand { shape: vec![3, 2, 7] }, &[tensor(dtype, &[], 6)], &[]);
        check(Op::Expand { shape: vec![1, 1] }, &[tensor(dtype, &[2, 3, 4], 6)], &[]);
    }
}

#[test]
fn gather_matches_reference_with_constant_and_runtime_indices() {
    let idx = |shape: &[usize], v: Vec<i64>| Tensor::from_i64(shape.to_vec(), v).expect("indices");
    for dtype in DTYPES {
        let data = tensor(dtype, &[4, 5, 6], 7);
        for (axis, indices) in [
            (0, idx(&[3], vec![3, -4, 1])),
            (1, idx(&[2, 2], vec![-1, 0, 4, 2])),
            (2, idx(&[], vec![-6])),
            (2, idx(&[7], vec![0, 5, 5, -1, 2, 3, 1])),
            (1, idx(&[0], vec![])),
        ] {
            for weights in [[false, false], [false, true]] {
                check(Op::Gather { axis }, &[data.clone(), indices.clone()], &weights);
            }
        }
    }
}

/// Out-of-range runtime indices write zeros (the reference reports an error).
#[test]
fn gather_with_out_of_range_runtime_index_writes_zeros() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", cnnc_ir::TensorType::f32([3, 2]));
    let i = g.add_input("i", cnnc_ir::TensorType::new(DType::I64, [3]));
    let y = g.add_node("gather", Op::Gather { axis: 0 }, &[x, i]).expect("infers");
    g.add_output("y", y[0]);
    let g = verify(g).expect("verifies");
    let data = Tensor::from_f32([3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("x");
    let idx = Tensor::from_i64([3], vec![3, -1, -4]).expect("i");
    let got = Model::compile(&g).expect("compiles").run(&[data, idx]).expect("runs");
    assert_eq!(got[0].as_f32(), Some(&[0.0, 0.0, 5.0, 6.0, 0.0, 0.0][..]));
}

#[test]
fn constant_out_of_range_gather_index_is_rejected_at_load() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", cnnc_ir::TensorType::f32([3, 2]));
    let i = g.add_weight("i", Tensor::from_i64([1], vec![3]).expect("i"));
    let y = g.add_node("gather", Op::Gather { axis: 0 }, &[x, i]).expect("infers");
    g.add_output("y", y[0]);
    let err = Model::compile(&verify(g).expect("verifies")).err().expect("rejected");
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn concat_matches_reference_on_every_axis() {
    for dtype in DTYPES {
        for axis in 0..4 {
            let shape = |k: usize| {
                let mut s = vec![2, 3, 4, 5];
                s[axis] = k;
                s
            };
            let inputs = [tensor(dtype, &shape(1), 1), tensor(dtype, &shape(3), 2), tensor(dtype, &shape(2), 3)];
            check(Op::Concat { axis }, &inputs, &[false, true, false]);
        }
        check(Op::Concat { axis: 0 }, &[tensor(dtype, &[0], 1), tensor(dtype, &[5], 2)], &[]);
    }
}

#[test]
fn split_that_is_not_a_view_matches_reference() {
    for dtype in DTYPES {
        check(Op::Split { axis: 1, sizes: vec![1, 4, 2] }, &[tensor(dtype, &[2, 7, 3, 5], 8)], &[]);
        check(Op::Split { axis: 3, sizes: vec![2, 3] }, &[tensor(dtype, &[2, 2, 3, 5], 8)], &[]);
        check(Op::Split { axis: 2, sizes: vec![0, 6] }, &[tensor(dtype, &[3, 1, 6], 8)], &[]);
    }
}

#[test]
fn cast_matches_reference_for_every_dtype_pair() {
    let special = Tensor::from_f32(
        [12],
        vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.9e18, -3.9e18, -2.7, 2.7, -0.0, 0.0, 1.0, 0.5, -1e-30],
    )
    .expect("x");
    let big = Tensor::from_i64([6], vec![i64::MIN, i64::MAX, 0, -1, 1 << 40, 16_777_217]).expect("i");
    for from in DTYPES {
        for to in DTYPES {
            check(Op::Cast { to }, &[tensor(from, &[3, 7], 9)], &[]);
        }
    }
    for to in DTYPES {
        check(Op::Cast { to }, std::slice::from_ref(&special), &[]);
        check(Op::Cast { to }, std::slice::from_ref(&big), &[]);
    }
}

/// The NHWC → NCHW transpose of a 3-channel image takes the AVX2 deinterleave routine on a host
/// with AVX2 and FMA (its bits are checked against the reference above), and its units split
/// over threads give the same bits. Under `CNNC_KERNELS=cranelift` the Cranelift transpose runs.
#[test]
fn three_channel_nhwc_to_nchw_takes_the_deinterleave_routine() {
    let x = tensor(DType::F32, &[2, 150, 150, 3], 7);
    let mut g = Graph::new("t");
    let input = g.add_input("x", x.ty());
    let y = g.add_node("t", Op::Transpose { perm: vec![0, 3, 1, 2] }, &[input]).expect("adds")[0];
    g.add_output("y", y);
    let g = verify(g).expect("verifies");
    let mut model = Model::compile(&g).expect("compiles");
    model.set_threads(1);
    let (one, profile) = model.run_profiled(std::slice::from_ref(&x)).expect("runs");
    let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    let want = match std::env::var("CNNC_KERNELS").as_deref() {
        Ok("cranelift") => "movement",
        _ if avx2 => "transpose-deinterleave3",
        _ => {
            cnnc_runtime::testing::cpu_skip("three_channel_nhwc_to_nchw_takes_the_deinterleave_routine", "avx2");
            return;
        }
    };
    assert_eq!(profile.layers.len(), 1);
    assert_eq!(profile.layers[0].kernel, want);
    assert!(profile.layers[0].units >= 2, "{} units", profile.layers[0].units);
    model.set_threads(2);
    let two = model.run(std::slice::from_ref(&x)).expect("runs");
    assert_eq!(one.len(), 1);
    assert_eq!(one, two, "2 threads differ from 1");
    assert_eq!(one, run_reference(&g, &[x]).expect("reference"));
}
