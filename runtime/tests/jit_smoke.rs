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
fn quantize_and_dequantize_are_refused_by_node_until_they_have_kernels() {
    let g = graph(
        r#"graph "g" {
  %x = input f32[4]
  %q = quantize{to=u8, scales=[0.5], zero-points=[3]}(%x) : u8[4]
  %d = dequantize{scales=[0.5], zero-points=[3]}(%q) : f32[4]
  output "d" = %d
}"#,
    );
    match Model::compile(&g) {
        Err(cnnc_runtime::CompileError::Unsupported { node, op, .. }) => {
            assert_eq!((node.as_str(), op.as_str()), ("q", "quantize"))
        }
        Err(e) => panic!("expected an unsupported-op error, got {e}"),
        Ok(_) => panic!("quantize compiled, but it has no kernel"),
    }
    let y = run_reference(&g, &[Tensor::from_f32([4], vec![-2.0, 0.25, 0.75, 200.0]).expect("4")]).expect("runs");
    // q = clamp(round_half_even(x / 0.5) + 3, 0, 255) = [0, 3, 5, 255] (0.5 rounds to 0, 1.5 to 2).
    assert_eq!(y[0].as_f32().expect("f32"), [-1.5, 0.0, 1.0, 126.0]);
}
