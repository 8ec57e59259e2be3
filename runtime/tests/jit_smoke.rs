//! The JIT pipeline end to end on small graphs: plan, compile, run, compare with the reference.

use cnnc_ir::{Graph, Tensor, verify};
use cnnc_runtime::{Model, run_reference};

fn graph(text: &str) -> cnnc_ir::VerifiedGraph {
    verify(text.parse::<Graph>().expect("parses")).expect("verifies")
}

fn ramp(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f32(shape.to_vec(), (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.37).collect()).expect("shape")
}

#[test]
fn unary_chain_matches_reference() {
    let g = graph(
        r#"graph "g" {
  %x = input f32[2,3,5]
  %a = relu(%x) : f32[2,3,5]
  %b = hard-swish(%x) : f32[2,3,5]
  %c = sigmoid(%b) : f32[2,3,5]
  %d = clip{min=-1.0, max=2.5}(%x) : f32[2,3,5]
  output "a" = %a
  output "c" = %c
  output "d" = %d
}"#,
    );
    let model = Model::compile(&g).expect("compiles");
    let x = ramp(&[2, 3, 5]);
    let got = model.run(std::slice::from_ref(&x)).expect("runs");
    let want = run_reference(&g, &[x]).expect("reference runs");
    for (g, w) in got.iter().zip(&want) {
        let (g, w) = (g.as_f32().expect("f32"), w.as_f32().expect("f32"));
        for (a, b) in g.iter().zip(w) {
            // f32 kernels vs the f64 reference: one rounding step apart for these functions.
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

#[test]
fn single_exp_matches_reference() {
    let g = graph(
        r#"graph "g" {
  %x = input f32[7]
  %e = exp(%x) : f32[7]
  output "e" = %e
}"#,
    );
    let model = Model::compile(&g).expect("compiles");
    let x = ramp(&[7]);
    let got = model.run(std::slice::from_ref(&x)).expect("runs");
    let want = run_reference(&g, &[x]).expect("reference runs");
    assert_eq!(got[0].as_f32(), want[0].as_f32());
}

#[test]
fn model_is_send_and_sync_and_runs_concurrently() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
    let g = graph(
        r#"graph "g" {
  %x = input f32[64]
  %r = hard-swish(%x) : f32[64]
  output "r" = %r
}"#,
    );
    let model = Model::compile(&g).expect("compiles");
    let x = ramp(&[64]);
    let want = model.run(std::slice::from_ref(&x)).expect("runs");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| model.run(std::slice::from_ref(&x)).expect("runs"))).collect();
        for h in handles {
            assert_eq!(h.join().expect("no panic"), want, "every concurrent run gives the same bits");
        }
    });
}

#[test]
fn wrong_input_type_is_an_error_naming_the_input() {
    let g = graph(
        r#"graph "g" {
  %x = input f32[4]
  %r = relu(%x) : f32[4]
  output "r" = %r
}"#,
    );
    let model = Model::compile(&g).expect("compiles");
    let err = model.run(&[ramp(&[5])]).expect_err("shape mismatch");
    assert!(err.to_string().contains("`x`") && err.to_string().contains("f32[4]"), "{err}");
}

#[test]
fn in_place_concat_and_slab_split_match_reference() {
    // relu/abs write straight into their slabs of the concat; the split and reshape are views;
    // the final neg reads a view.
    let g = graph(
        r#"graph "g" {
  %x = input f32[1,2,3,4]
  %a = relu(%x) : f32[1,2,3,4]
  %b = abs(%x) : f32[1,2,3,4]
  %c = concat{axis=1}(%a, %b) : f32[1,4,3,4]
  %s = split{axis=1, sizes=[1,3]}(%c) : f32[1,1,3,4], f32[1,3,3,4]
  %r = reshape{shape=[3,12]}(%s:1) : f32[3,12]
  %n = neg(%r) : f32[3,12]
  output "c" = %c
  output "n" = %n
  output "s0" = %s
}"#,
    );
    let model = Model::compile(&g).expect("compiles");
    let x = ramp(&[1, 2, 3, 4]);
    let got = model.run(std::slice::from_ref(&x)).expect("runs");
    let want = run_reference(&g, &[x]).expect("reference runs");
    assert_eq!(got, want, "views and in-place concat move no values, and relu/abs/neg are exact");
}

#[test]
fn max_pool_over_an_empty_axis_is_minus_infinity_in_both_engines() {
    // Found by the random-graph proptest: a cropping pad empties an axis, ceil-mode pooling
    // with padding still has outputs, and each output's window holds no input.
    let g = graph(
        r#"graph "g" {
  %x = input f32[1,1,0,4]
  %p = max-pool{kernel=[2, 2], strides=[1, 1], dilations=[1, 1], pads=[1, 0, 1, 0], ceil-mode=true}(%x) : f32[1,1,1,3]
  output "p" = %p
}"#,
    );
    let model = Model::compile(&g).expect("compiles");
    let x = Tensor::from_f32(vec![1, 1, 0, 4], vec![]).expect("empty");
    let got = model.run(std::slice::from_ref(&x)).expect("runs");
    let want = run_reference(&g, &[x]).expect("reference runs");
    assert_eq!(got, want);
    assert!(got[0].as_f32().expect("f32").iter().all(|v| *v == f32::NEG_INFINITY));
}

#[test]
fn quantize_and_dequantize_match_the_reference_bit_for_bit() {
    let g = graph(
        r#"graph "g" {
  %x = input f32[2,3,5]
  %q = quantize{to=u8, scales=[0.5], zero-points=[3]}(%x) : u8[2,3,5]
  %d = dequantize{scales=[0.5], zero-points=[3]}(%q) : f32[2,3,5]
  %qc = quantize{to=i8, axis=1, scales=[0.25, 0.125, 2.0], zero-points=[-128, 0, 127]}(%x) : i8[2,3,5]
  %dc = dequantize{axis=1, scales=[0.25, 0.125, 2.0], zero-points=[-128, 0, 127]}(%qc) : f32[2,3,5]
  %b = weight i32[5] [-2147483648, -7, 0, 9, 2147483647]
  %db = dequantize{axis=0, scales=[1.0, 0.5, 3.0, 1e-9, 2.0], zero-points=[0, 1, 2, 3, 4]}(%b) : f32[5]
  output "q" = %q
  output "d" = %d
  output "qc" = %qc
  output "dc" = %dc
  output "db" = %db
}"#,
    );
    let model = Model::compile(&g).expect("compiles");
    // Ties (±0.25, ±0.75 over 0.5), saturation, NaN and ±∞ among a ramp.
    let mut v: Vec<f32> = (0..30).map(|i| (i as f32 - 15.0) * 0.37).collect();
    v[..8].copy_from_slice(&[0.25, -0.25, 0.75, -0.75, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e9]);
    let x = Tensor::from_f32([2, 3, 5], v).expect("30");
    let got = model.run(std::slice::from_ref(&x)).expect("runs");
    let want = run_reference(&g, &[x]).expect("reference runs");
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.data().to_le_bytes(), b.data().to_le_bytes(), "output {k}: {a:?} vs {b:?}");
    }
    // 0.25 / 0.5 and 0.75 / 0.5 tie: 0 and 2 (half to even), plus the zero point 3; NaN → 3.
    assert_eq!(want[0].as_u8().expect("u8")[..8], [3, 3, 5, 1, 3, 255, 0, 255]);
}
