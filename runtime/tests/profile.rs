//! `Model::run_profiled`: the same outputs as `run`, one row per kernel launch.

use cnnc_ir::{Graph, Tensor, verify};
use cnnc_runtime::Model;

fn model(text: &str) -> Model {
    let g = verify(text.parse::<Graph>().expect("parses")).expect("verifies");
    Model::compile(&g).expect("compiles")
}

fn ramp(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f32(shape.to_vec(), (0..n).map(|i| (i as f32 * 0.731).sin()).collect()).expect("shape")
}

/// A conv, a view (reshape) that runs no kernel, a GEMV and an elementwise op.
fn net() -> Model {
    let values = |n: usize| (0..n).map(|i| format!("{:.3}", (i as f32 * 0.37).cos())).collect::<Vec<_>>().join(", ");
    model(&format!(
        r#"graph "g" {{
  %x = input f32[1,2,5,5]
  %w = weight f32[4,2,3,3] [{}]
  %c = conv{{kernel=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1}}(%x, %w) : f32[1,4,5,5]
  %f = reshape{{shape=[1, 100]}}(%c) : f32[1,100]
  %m = weight f32[100,3] [{}]
  %g = matmul(%f, %m) : f32[1,3]
  %r = relu(%g) : f32[1,3]
  output "r" = %r
}}"#,
        values(72),
        values(300)
    ))
}

#[test]
fn profiled_run_matches_run_bit_for_bit() {
    let m = net();
    let x = ramp(&[1, 2, 5, 5]);
    let plain = m.run(std::slice::from_ref(&x)).expect("runs");
    let (profiled, _) = m.run_profiled(std::slice::from_ref(&x)).expect("runs");
    let bits = |ts: &[Tensor]| -> Vec<Vec<u32>> {
        ts.iter().map(|t| t.as_f32().expect("f32").iter().map(|v| v.to_bits()).collect()).collect()
    };
    assert_eq!(bits(&plain), bits(&profiled));
}

#[test]
fn profile_has_one_row_per_kernel_launch_and_no_view_rows() {
    let m = net();
    let start = std::time::Instant::now();
    let (_, profile) = m.run_profiled(&[ramp(&[1, 2, 5, 5])]).expect("runs");
    let wall = start.elapsed();
    let rows: Vec<(&str, &str, u64)> = profile.layers.iter().map(|l| (l.op, l.kernel, l.macs)).collect();
    // conv: 1·4·5·5 outputs · 2·3·3; matmul: 3 outputs · K = 100. The conv and the one-row
    // matmul take the AVX2 microkernel paths where the host has them (and they are not forced
    // off), the Cranelift kernels elsewhere; the row names the one that was compiled.
    let fast = cfg!(target_arch = "x86_64")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::env::var("CNNC_KERNELS").map_or(true, |v| v != "cranelift");
    let (conv, gemv) = if fast { ("conv-packed-avx2", "gemv-avx2") } else { ("conv-direct", "gemv") };
    assert_eq!(rows, vec![("conv", conv, 1800), ("matmul", gemv, 300), ("relu", "elementwise", 0)]);
    // Every launch is timed (a kernel takes some nanoseconds), and the launches are parts of the
    // run: their total is within its wall time.
    assert!(profile.layers.iter().all(|l| l.time > std::time::Duration::ZERO), "{profile:?}");
    assert!(profile.total() <= wall, "kernels {:?} > run {wall:?}", profile.total());
}

#[test]
fn profiled_run_checks_its_inputs_like_run() {
    let m = net();
    assert!(m.run_profiled(&[]).is_err());
    assert!(m.run_profiled(&[ramp(&[1, 2, 5, 4])]).is_err());
}

/// `constant_bytes` counts the weights and what the kernels packed from them at load; evicting
/// them from the caches changes no output bit.
#[test]
fn evicting_the_constants_keeps_every_output_bit() {
    let m = net();
    // The conv's and the matmul's weights, 72 + 300 floats; packed copies come on top.
    assert!(m.constant_bytes() >= (72 + 300) * 4, "{} bytes", m.constant_bytes());
    let x = ramp(&[1, 2, 5, 5]);
    let warm = m.run(std::slice::from_ref(&x)).expect("runs");
    m.evict_constants();
    let cold = m.run(std::slice::from_ref(&x)).expect("runs");
    let bits = |ts: &[Tensor]| -> Vec<Vec<u32>> {
        ts.iter().map(|t| t.as_f32().expect("f32").iter().map(|v| v.to_bits()).collect()).collect()
    };
    assert_eq!(bits(&warm), bits(&cold));
}
