//! Kernels split into work units: every graph is run through `Model` at 1, 2 and 3 threads and
//! the outputs must be identical bit for bit (a 1-thread run makes one call over every unit, a
//! split run one call per unit), and match the reference interpreter.
//!
//! The graphs are big enough for the runtime to split them (≥ 32k output elements) into
//! several units, with odd extents so that rows end in vector and scalar tails; each test also
//! checks that its kernels did split.
//!
//! Tolerances against the reference are those of each op family's own test file: bit-exact for
//! data movement, casts, comparisons and the single-rounding f32 arithmetic (`add`, `mul`,
//! `div`, `max`, `prelu`, …); 1e-6·(1 + |ref|) for the inline unary functions (one or two
//! roundings from the f64 reference, `jit_smoke.rs`, `jit_unary_inline.rs`) and `pow` (f32
//! `powf` against a once-rounded f64 `powf`); 2e-6 for batch norm and linear resize; 1e-6
//! for average pooling; 1e-5 for softmax and reductions (f32 accumulation; `jit_reduce.rs`).

mod common;

use cnnc_ir::{Graph, Tensor, TensorData, VerifiedGraph, verify};
use cnnc_runtime::{Model, run_reference};

fn graph(text: &str) -> VerifiedGraph {
    verify(text.parse::<Graph>().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"))
}

fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.shape() == b.shape()
        && match (a.data(), b.data()) {
            (TensorData::F32(x), TensorData::F32(y)) => x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
            (x, y) => x == y,
        }
}

/// Runs `g` at 1, 2 and 3 threads: the outputs must be bit-identical, and every kernel must
/// have at least `min_units` units and have run split at 2 threads. Returns the outputs.
fn run_split(g: &VerifiedGraph, inputs: &[Tensor], min_units: u64) -> Vec<Tensor> {
    assert!(min_units >= 2, "a test of work units needs several");
    let mut model = Model::compile(g).unwrap_or_else(|e| panic!("{e}"));
    model.set_threads(1);
    let (want, _) = model.run_profiled(inputs).expect("runs");
    for threads in [2, 3] {
        model.set_threads(threads);
        let (got, profile) = model.run_profiled(inputs).expect("runs");
        for l in &profile.layers {
            assert!(l.units >= min_units, "`{}` ({}) has {} units", l.name, l.op, l.units);
            assert!(l.threads > 1, "`{}` ({}) ran on one thread", l.name, l.op);
        }
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(same_bits(a, b), "output {i}: {threads} threads differ from 1 thread");
        }
        // The plain run takes the same path as the profiled one.
        assert!(model.run(inputs).expect("runs").iter().zip(&want).all(|(a, b)| same_bits(a, b)));
    }
    want
}

/// [`run_split`], then every output against the reference within `tol · (1 + |ref|)` (NaN
/// matches NaN; `tol == 0` demands the reference's bits).
fn check(text: &str, inputs: &[Tensor], min_units: u64, tol: f32) {
    let g = graph(text);
    let got = run_split(&g, inputs, min_units);
    let want = run_reference(&g, inputs).expect("reference runs");
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.shape(), b.shape(), "output {i}");
        match (a.data(), b.data()) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                for (j, (&p, &q)) in x.iter().zip(y).enumerate() {
                    let ok = (p.is_nan() && q.is_nan())
                        || p.to_bits() == q.to_bits()
                        || (tol > 0.0 && (p - q).abs() <= tol * (1.0 + q.abs()));
                    assert!(ok, "output {i} element {j}: JIT {p} vs reference {q}");
                }
            }
            (x, y) => assert!(x == y, "output {i} differs from the reference"),
        }
    }
}

fn ints(shape: &[usize], seed: u64) -> Tensor {
    let v = common::random(shape, seed).as_f32().expect("f32").iter().map(|&x| (x * 1000.0) as i64).collect();
    Tensor::from_i64(shape.to_vec(), v).expect("shape")
}

#[test]
fn unary_units_match_one_call() {
    // 103887 elements: 3 units cut at multiples of 16, the last ending in 3 vectors and 3
    // scalar elements.
    let text = r#"graph "g" {
  %x = input f32[1,7,97,153]
  %a = relu(%x) : f32[1,7,97,153]
  %b = sigmoid(%x) : f32[1,7,97,153]
  %c = tanh(%x) : f32[1,7,97,153]
  %d = clip{min=-0.5, max=0.25}(%x) : f32[1,7,97,153]
  %e = log(%x) : f32[1,7,97,153]
  %f = erf(%x) : f32[1,7,97,153]
  output "a" = %a
  output "b" = %b
  output "c" = %c
  output "d" = %d
  output "e" = %e
  output "f" = %f
}"#;
    check(text, &[common::random(&[1, 7, 97, 153], 1)], 3, 1e-6);
}

#[test]
fn same_shape_and_scalar_binaries_cut_rows_at_multiples_of_8() {
    // One flat row of 103887 elements: 3 units; the last ends in a 4-lane step and 3 scalars.
    let text = r#"graph "g" {
  %x = input f32[1,7,97,153]
  %y = input f32[1,7,97,153]
  %three = weight f32[] [3.0]
  %six = weight f32[1] [6.0]
  %add = add(%x, %y) : f32[1,7,97,153]
  %mul = mul(%x, %y) : f32[1,7,97,153]
  %div = div(%x, %y) : f32[1,7,97,153]
  %max = max(%x, %y) : f32[1,7,97,153]
  %plus3 = add(%x, %three) : f32[1,7,97,153]
  %by6 = div(%six, %y) : f32[1,7,97,153]
  %less = less(%x, %y) : bool[1,7,97,153]
  %sel = where(%less, %x, %three) : f32[1,7,97,153]
  output "add" = %add
  output "mul" = %mul
  output "div" = %div
  output "max" = %max
  output "plus3" = %plus3
  output "by6" = %by6
  output "less" = %less
  output "sel" = %sel
}"#;
    let (x, y) = (common::random(&[1, 7, 97, 153], 2), common::random(&[1, 7, 97, 153], 3));
    check(text, &[x, y], 3, 0.0);
    let pow = r#"graph "g" {
  %x = input f32[1,7,97,153]
  %y = input f32[1,7,97,153]
  %p = pow(%x, %y) : f32[1,7,97,153]
  output "p" = %p
}"#;
    let x = Tensor::from_f32(
        vec![1, 7, 97, 153],
        common::random(&[1, 7, 97, 153], 4).as_f32().expect("f32").iter().map(|v| v.abs() + 0.1).collect(),
    )
    .expect("shape");
    check(pow, &[x, common::random(&[1, 7, 97, 153], 5)], 3, 1e-6);
}

#[test]
fn broadcast_binaries_split_the_outer_loops_or_cut_long_rows() {
    // Per-channel operands: rows of 4355 (8 rows a unit), rows of 70503 (2 parts a row, the
    // second ending in a 4-lane step and 3 scalars), and both operands stretched (a nest of
    // 32 × 65 rows of 67, cut over both outer axes).
    let text = r#"graph "g" {
  %x = input f32[1,32,65,67]
  %s = input f32[1,32,1,1]
  %big = input f32[1,3,331,213]
  %t = input f32[1,3,1,1]
  %row = input f32[1,32,1,67]
  %col = input f32[1,1,65,1]
  %slope = input f32[32,1,1]
  %scaled = mul(%x, %s) : f32[1,32,65,67]
  %shifted = sub(%t, %big) : f32[1,3,331,213]
  %outer = add(%row, %col) : f32[1,32,65,67]
  %prelu = prelu(%x, %slope) : f32[1,32,65,67]
  output "scaled" = %scaled
  output "shifted" = %shifted
  output "outer" = %outer
  output "prelu" = %prelu
}"#;
    let inputs = [
        common::random(&[1, 32, 65, 67], 6),
        common::random(&[1, 32, 1, 1], 7),
        common::random(&[1, 3, 331, 213], 8),
        common::random(&[1, 3, 1, 1], 9),
        common::random(&[1, 32, 1, 67], 10),
        common::random(&[1, 1, 65, 1], 11),
        common::random(&[32, 1, 1], 12),
    ];
    check(text, &inputs, 4, 0.0);
}

#[test]
fn integer_binaries_and_casts_split() {
    let text = r#"graph "g" {
  %a = input i64[3,11,2053]
  %b = input i64[3,11,2053]
  %x = input f32[3,11,2053]
  %sum = add(%a, %b) : i64[3,11,2053]
  %gt = greater(%a, %b) : bool[3,11,2053]
  %i = cast{to=i64}(%x) : i64[3,11,2053]
  %f = cast{to=f32}(%a) : f32[3,11,2053]
  %bf = cast{to=f32}(%gt) : f32[3,11,2053]
  output "sum" = %sum
  output "gt" = %gt
  output "i" = %i
  output "f" = %f
  output "bf" = %bf
}"#;
    let x = Tensor::from_f32(
        vec![3, 11, 2053],
        common::random(&[3, 11, 2053], 12).as_f32().expect("f32").iter().map(|v| v * 1e4).collect(),
    )
    .expect("shape");
    check(text, &[ints(&[3, 11, 2053], 13), ints(&[3, 11, 2053], 14), x], 2, 0.0);
}

#[test]
fn copies_split_by_rows_and_by_row_parts() {
    // Concat of graph inputs (a kernel, not in place) along the channel axis (two long
    // contiguous rows) and along the last axis (many short strided rows); transposes with and
    // without 4×4 tiles; slices with steps; expand along inner (splat rows) and outer axes;
    // gather of rows with run-time indices.
    let text = r#"graph "g" {
  %x = input f32[1,5,97,271]
  %y = input f32[1,3,97,271]
  %p = input f32[2,300,61]
  %q = input f32[2,300,67]
  %t = input f32[1,3,1,1]
  %r = input f32[1,1,1,70001]
  %cat = concat{axis=1}(%x, %y) : f32[1,8,97,271]
  %cat2 = concat{axis=2}(%p, %q) : f32[2,300,128]
  %nhwc = transpose{perm=[0, 2, 3, 1]}(%x) : f32[1,97,271,5]
  %swap = transpose{perm=[0, 2, 1, 3]}(%x) : f32[1,97,5,271]
  %sl = slice{axes=[[1, 4, -1, -2], [3, 1, 270, 1]]}(%x) : f32[1,3,97,269]
  %ex = expand{shape=[1, 3, 331, 213]}(%t) : f32[1,3,331,213]
  %ex2 = expand{shape=[1, 3, 1, 70001]}(%r) : f32[1,3,1,70001]
  output "cat" = %cat
  output "cat2" = %cat2
  output "nhwc" = %nhwc
  output "swap" = %swap
  output "sl" = %sl
  output "ex" = %ex
  output "ex2" = %ex2
}"#;
    let inputs = [
        common::random(&[1, 5, 97, 271], 15),
        common::random(&[1, 3, 97, 271], 16),
        common::random(&[2, 300, 61], 17),
        common::random(&[2, 300, 67], 18),
        common::random(&[1, 3, 1, 1], 19),
        common::random(&[1, 1, 1, 70001], 20),
    ];
    check(text, &inputs, 2, 0.0);
    let pads = r#"graph "g" {
  %x = input f32[1,5,97,271]
  %f = input f32[1,40,2,2]
  %c = pad{pads=[0, 0, 1, 2, 0, 0, 3, 1], mode=constant, value=0.5}(%x) : f32[1,5,101,274]
  %r = pad{pads=[0, 0, 2, 2, 0, 0, 2, 2], mode=reflect, value=0.0}(%x) : f32[1,5,101,275]
  %e = pad{pads=[0, 1, 0, 3, 0, 2, 0, 0], mode=edge, value=0.0}(%x) : f32[1,8,97,274]
  %t = pad{pads=[0, 0, 20, 20, 0, 0, 20, 20], mode=wrap, value=0.0}(%f) : f32[1,40,42,42]
  output "c" = %c
  output "r" = %r
  output "e" = %e
  output "t" = %t
}"#;
    check(pads, &[common::random(&[1, 5, 97, 271], 22), common::random(&[1, 40, 2, 2], 23)], 2, 0.0);
    let gather = r#"graph "g" {
  %d = input f32[50,701]
  %i = input i64[61]
  %g = gather{axis=0}(%d, %i) : f32[61,701]
  output "g" = %g
}"#;
    let idx: Vec<i64> = (0..61).map(|k| (k * 37 % 100) - 50).collect();
    check(gather, &[common::random(&[50, 701], 21), Tensor::from_i64(vec![61], idx).expect("shape")], 2, 0.0);
}

fn weight(name: &str, values: &[f32]) -> String {
    let v: Vec<String> = values.iter().map(|x| format!("{x:?}")).collect();
    format!("  %{name} = weight f32[{}] [{}]\n", values.len(), v.join(", "))
}

fn channel_values(c: usize, seed: u64, lo: f32) -> Vec<f32> {
    common::random(&[c], seed).as_f32().expect("f32").iter().map(|v| v.abs() + lo).collect()
}

#[test]
fn batchnorm_units_take_planes_or_cut_long_planes() {
    // Folded (weights) and per-run (inputs) parameters; planes of 4355 (several a unit), of
    // 70503 (two parts, the second ending in 3 scalars), and `[N, C]` rows over channels.
    for (shape, c) in [("1,32,65,67", 32), ("1,3,331,213", 3), ("4001,17", 17)] {
        let dims: Vec<usize> = shape.split(',').map(|d| d.parse().expect("dim")).collect();
        let mut text = String::from("graph \"g\" {\n");
        text += &format!("  %x = input f32[{shape}]\n");
        for (i, name) in ["s", "b", "m"].iter().enumerate() {
            text += &weight(name, &channel_values(c, 30 + i as u64, -0.5));
        }
        text += &weight("v", &channel_values(c, 33, 0.1));
        for name in ["s2", "b2", "m2", "v2"] {
            text += &format!("  %{name} = input f32[{c}]\n");
        }
        text += &format!("  %y = batchnorm{{epsilon=1e-5}}(%x, %s, %b, %m, %v) : f32[{shape}]\n");
        text += &format!("  %z = batchnorm{{epsilon=1e-3}}(%x, %s2, %b2, %m2, %v2) : f32[{shape}]\n");
        text += "  output \"y\" = %y\n  output \"z\" = %z\n}";
        let mut inputs = vec![common::random(&dims, 34)];
        for i in 0..3 {
            inputs.push(common::random(&[c], 35 + i));
        }
        inputs.push(Tensor::from_f32(vec![c], channel_values(c, 38, 0.1)).expect("shape"));
        check(&text, &inputs, 3, 2e-6);
    }
}

#[test]
fn window_pool_units_take_output_rows() {
    let text = r#"graph "g" {
  %x = input f32[1,16,131,97]
  %y = input f32[1,4,131,97]
  %max = max-pool{kernel=[3, 3], strides=[2, 2], dilations=[1, 1], pads=[1, 1, 1, 1], ceil-mode=false}(%x) : f32[1,16,66,49]
  %avg = avg-pool{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], ceil-mode=false, count-include-pad=false}(%y) : f32[1,4,131,97]
  %avg2 = avg-pool{kernel=[2, 2], strides=[2, 2], dilations=[1, 1], pads=[0, 0, 0, 0], ceil-mode=true, count-include-pad=true}(%x) : f32[1,16,66,49]
  output "max" = %max
  output "avg" = %avg
  output "avg2" = %avg2
}"#;
    check(text, &[common::random(&[1, 16, 131, 97], 40), common::random(&[1, 4, 131, 97], 41)], 3, 1e-6);
}

#[test]
fn global_pool_units_take_planes() {
    // Enough planes that the output reaches the runtime's split threshold.
    let text = r#"graph "g" {
  %x = input f32[2,16411,3,3]
  %avg = global-avg-pool(%x) : f32[2,16411,1,1]
  %max = global-max-pool(%x) : f32[2,16411,1,1]
  output "avg" = %avg
  output "max" = %max
}"#;
    check(text, &[common::random(&[2, 16411, 3, 3], 42)], 3, 1e-6);
}

#[test]
fn resize_units_take_coordinates_of_the_first_resized_axis() {
    // Nearest 2× repeats every other output row as a copy of the previous one; with rows of
    // 102 a unit is 321 rows, so unit 1 starts on a repeated row and must compute it afresh.
    let nearest = r#"graph "g" {
  %x = input f32[1,8,41,51]
  %up = resize{mode=nearest, coord=half-pixel, nearest=round-prefer-floor, scales=[1.0, 1.0, 2.0, 2.0], out-shape=[1, 8, 82, 102]}(%x) : f32[1,8,82,102]
  output "up" = %up
}"#;
    check(nearest, &[common::random(&[1, 8, 41, 51], 43)], 3, 0.0);
    let linear = r#"graph "g" {
  %x = input f32[1,8,41,51]
  %up = resize{mode=linear, coord=half-pixel, nearest=round-prefer-floor, scales=[1.0, 1.0, 2.0, 2.0], out-shape=[1, 8, 82, 102]}(%x) : f32[1,8,82,102]
  %c = input f32[1,11,43,53]
  %ch = resize{mode=nearest, coord=asymmetric, nearest=floor, scales=[1.0, 3.0, 1.0, 1.0], out-shape=[1, 33, 43, 53]}(%c) : f32[1,33,43,53]
  output "up" = %up
  output "ch" = %ch
}"#;
    // The channel resize has blocks of 2279 outputs per channel: 3 units.
    check(linear, &[common::random(&[1, 8, 41, 51], 44), common::random(&[1, 11, 43, 53], 45)], 3, 2e-6);
}

#[test]
fn softmax_and_reduction_units_never_split_a_group() {
    let softmax = r#"graph "g" {
  %a = input f32[1,17,61,101]
  %b = input f32[600,131]
  %c = input f32[5,5,2731]
  %sa = softmax{axis=1, flatten=false}(%a) : f32[1,17,61,101]
  %sb = softmax{axis=1, flatten=false}(%b) : f32[600,131]
  %sc = softmax{axis=1, flatten=true}(%c) : f32[5,5,2731]
  output "sa" = %sa
  output "sb" = %sb
  output "sc" = %sc
}"#;
    let inputs =
        [common::random(&[1, 17, 61, 101], 50), common::random(&[600, 131], 51), common::random(&[5, 5, 2731], 52)];
    check(softmax, &inputs, 3, 1e-5);
    let reduce = r#"graph "g" {
  %a = input f32[1,5,181,191]
  %b = input f32[3,11,1021,3]
  %c = input f32[2,50001]
  %i = input i64[3,40000]
  %mean = reduce-mean{axes=[1], keepdims=true}(%a) : f32[1,1,181,191]
  %max = reduce-max{axes=[3], keepdims=false}(%b) : f32[3,11,1021]
  %lse = reduce-log-sum-exp{axes=[0], keepdims=false}(%c) : f32[50001]
  %sum = reduce-sum{axes=[0], keepdims=false}(%i) : i64[40000]
  %arg = arg-max{axis=1, keepdims=true, select-last-index=false}(%a) : i64[1,1,181,191]
  output "mean" = %mean
  output "max" = %max
  output "lse" = %lse
  output "sum" = %sum
  output "arg" = %arg
}"#;
    let inputs = [
        common::random(&[1, 5, 181, 191], 53),
        common::random(&[3, 11, 1021, 3], 54),
        common::random(&[2, 50001], 55),
        ints(&[3, 40000], 56),
    ];
    check(reduce, &inputs, 3, 1e-5);
}
