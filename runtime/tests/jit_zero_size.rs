//! Tensors with a dimension of size 0 through the JIT, the memory plan and the reference: a
//! node whose outputs are all empty runs no kernel, and the kernels whose output is not empty
//! although an input is (a reduction over an empty axis, a concat or split with an empty part, a
//! pad of an empty tensor, a product over an empty inner dimension) write what the reference
//! computes. Outputs must match the reference exactly: every case sums at most a handful of
//! values or none.

use cnnc_ir::{Graph, Tensor, verify};
use cnnc_runtime::{Model, run_reference};

/// Compiles `text`, runs it on `inputs` through the JIT (1 and 2 threads) and the reference, and
/// checks that every output has the reference's type and bits; returns the outputs and the
/// number of kernels a run launches.
fn check(text: &str, inputs: &[Tensor]) -> (Vec<Tensor>, usize) {
    let g = verify(text.parse::<Graph>().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
    let want = run_reference(&g, inputs).expect("reference runs");
    let mut model = Model::compile(&g).unwrap_or_else(|e| panic!("{e}"));
    let launches = model.run_profiled(inputs).expect("runs").1.layers.len();
    for threads in [1, 2] {
        model.set_threads(threads);
        let got = model.run(inputs).expect("runs");
        assert_eq!(got.len(), want.len(), "output count");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a.ty(), b.ty(), "output {i}");
            assert_eq!(a, b, "output {i}, {threads} thread(s)");
        }
    }
    (want, launches)
}

fn f32s(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f32(shape.to_vec(), (0..n).map(|i| i as f32 * 0.5 - 1.0).collect()).expect("shape")
}

#[test]
fn element_wise_and_movement_ops_on_empty_tensors_run_no_kernel() {
    let (out, launches) = check(
        r#"graph "g" {
  %a = input f32[2,0,3]
  %b = input f32[1,0,3]
  %k = weight f32[3] [1.0, 2.0, 3.0]
  %s = add(%a, %b) : f32[2,0,3]
  %r = relu(%s) : f32[2,0,3]
  %m = mul(%r, %k) : f32[2,0,3]
  %t = transpose{perm=[2, 0, 1]}(%m) : f32[3,2,0]
  %c = cast{to=i64}(%t) : i64[3,2,0]
  %sm = softmax{axis=1, flatten=false}(%m) : f32[2,0,3]
  %sl = slice{axes=[[2, 1, 3, 1]]}(%m) : f32[2,0,2]
  output "c" = %c
  output "sm" = %sm
  output "sl" = %sl
}"#,
        &[f32s(&[2, 0, 3]), f32s(&[1, 0, 3])],
    );
    assert_eq!(out[0].shape(), [3, 2, 0]);
    assert_eq!(launches, 0, "every node's outputs are empty");
}

#[test]
fn reductions_over_an_empty_axis_give_the_identity() {
    let (out, _) = check(
        r#"graph "g" {
  %x = input f32[2,0,3]
  %sum = reduce-sum{axes=[1], keepdims=true}(%x) : f32[2,1,3]
  %prod = reduce-prod{axes=[1], keepdims=false}(%x) : f32[2,3]
  %max = reduce-max{axes=[1], keepdims=false}(%x) : f32[2,3]
  %l2 = reduce-l2{axes=[0, 1], keepdims=false}(%x) : f32[3]
  output "sum" = %sum
  output "prod" = %prod
  output "max" = %max
  output "l2" = %l2
}"#,
        &[f32s(&[2, 0, 3])],
    );
    assert_eq!(out[0].as_f32().expect("f32"), [0.0; 6]);
    assert_eq!(out[1].as_f32().expect("f32"), [1.0; 6]);
    assert_eq!(out[2].as_f32().expect("f32"), [f32::NEG_INFINITY; 6]);
}

#[test]
fn concat_and_split_with_empty_parts() {
    // Along axis 1 with 2 rows before it: the kernels copy slabs (no in-place concat, no views).
    let (out, _) = check(
        r#"graph "g" {
  %a = input f32[2,0,3]
  %b = input f32[2,2,3]
  %c = concat{axis=1}(%a, %b, %a) : f32[2,2,3]
  %p = split{axis=1, sizes=[1, 0, 1]}(%c) : f32[2,1,3], f32[2,0,3], f32[2,1,3]
  %e = concat{axis=0}(%a, %a) : f32[4,0,3]
  output "c" = %c
  output "p0" = %p
  output "p1" = %p:1
  output "p2" = %p:2
  output "e" = %e
}"#,
        &[f32s(&[2, 0, 3]), f32s(&[2, 2, 3])],
    );
    assert_eq!(out[0], f32s(&[2, 2, 3]));
    assert_eq!(out[2].shape(), [2, 0, 3]);
}

#[test]
fn padding_an_empty_tensor_fills_the_pad_value() {
    let (out, _) = check(
        r#"graph "g" {
  %x = input f32[0,2]
  %y = pad{pads=[1, 0, 2, 1], mode=constant, value=7.0}(%x) : f32[3,3]
  output "y" = %y
}"#,
        &[f32s(&[0, 2])],
    );
    assert_eq!(out[0].as_f32().expect("f32"), [7.0; 9]);
}

#[test]
fn products_over_an_empty_inner_dimension_are_zero_plus_bias() {
    let (out, _) = check(
        r#"graph "g" {
  %a = input f32[2,0]
  %b = input f32[0,3]
  %c = weight f32[3] [1.0, 2.0, 3.0]
  %w = weight f32[0,3] []
  %mm = matmul(%a, %b) : f32[2,3]
  %g = gemm{alpha=1.0, beta=2.0, trans-a=false, trans-b=false}(%a, %w, %c) : f32[2,3]
  output "mm" = %mm
  output "g" = %g
}"#,
        &[f32s(&[2, 0]), f32s(&[0, 3])],
    );
    assert_eq!(out[0].as_f32().expect("f32"), [0.0; 6]);
    assert_eq!(out[1].as_f32().expect("f32"), [2.0, 4.0, 6.0, 2.0, 4.0, 6.0]);
}

#[test]
fn windows_and_convs_over_an_empty_batch() {
    let (_, launches) = check(
        r#"graph "g" {
  %x = input f32[0,2,4,4]
  %w = weight f32[3,2,1,1] [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  %c = conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1}(%x, %w) : f32[0,3,4,4]
  %p = max-pool{kernel=[2, 2], strides=[2, 2], dilations=[1, 1], pads=[0, 0, 0, 0], ceil-mode=false}(%c) : f32[0,3,2,2]
  %g = global-avg-pool(%p) : f32[0,3,1,1]
  %r = resize{mode=linear, coord=half-pixel, nearest=round-prefer-floor, scales=[1.0, 1.0, 2.0, 2.0], out-shape=[0, 3, 4, 4]}(%p) : f32[0,3,4,4]
  output "g" = %g
  output "r" = %r
}"#,
        &[f32s(&[0, 2, 4, 4])],
    );
    assert_eq!(launches, 0);
}
