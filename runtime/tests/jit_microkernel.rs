//! Dense convs through the packed-GEMM path (the f32 register tile driven by generated code)
//! with the host's default tile, with each tile forced (`CNNC_KERNELS=avx512`, `avx2`) and,
//! compiled again with `CNNC_KERNELS=cranelift`, through the pure-Cranelift kernels, all
//! against the reference interpreter. On a host without AVX2/FMA the default compile takes
//! the Cranelift path; forcing a tile the host lacks must fail to compile (then that tile is
//! skipped, or the test fails where `CNNC_REQUIRE_CPU` names it).
//!
//! The cases hit every edge of the driver: partial 6-channel tiles (5, 70 channels), partial
//! 16-pixel strips, several pixel blocks (> 256 pixels), one, two and three K blocks (K up to
//! 576), padding on every side, strides, dilation, groups, 1×1 and 1-D convs.
//!
//! Tolerance: rel-L2 ≤ 1e-6 and every element within 1e-5·max|reference|. The kernels sum in
//! f32 in a different order than the f64 reference; with K ≤ 576 terms of magnitude ≤ 1 the
//! rounding error stays near 1e-7 relative, so a wrong tap, tile or block fails by orders of
//! magnitude.
//!
//! This file holds a single test because it sets an environment variable: no other test of
//! this binary runs concurrently with it.

mod common;
use cnnc_ir::{ConvAttrs, Graph, Op, Tensor, TensorType, verify};
use cnnc_runtime::{Model, run_reference};
use common::*;

struct Case {
    what: &'static str,
    x: Vec<usize>,
    m: usize,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<usize>,
    group: usize,
    bias: bool,
}

fn case(what: &'static str, x: &[usize], m: usize, kernel: &[usize], stride: usize, pad: usize) -> Case {
    let ns = kernel.len();
    Case {
        what,
        x: x.to_vec(),
        m,
        kernel: kernel.to_vec(),
        strides: vec![stride; ns],
        dilations: vec![1; ns],
        pads: vec![pad; 2 * ns],
        group: 1,
        bias: true,
    }
}

impl Case {
    fn graph(&self) -> (cnnc_ir::VerifiedGraph, Vec<Tensor>) {
        let mut g = Graph::new("conv");
        let x = g.add_input("x", TensorType::f32(self.x.clone()));
        let mut w_shape = vec![self.m, self.x[1] / self.group];
        w_shape.extend(&self.kernel);
        let w = g.add_weight("w", random(&w_shape, 2));
        let mut ins = vec![x, w];
        if self.bias {
            ins.push(g.add_weight("b", random(&[self.m], 3)));
        }
        let attrs = ConvAttrs::new(&self.kernel)
            .strides(&self.strides)
            .dilations(&self.dilations)
            .pads(&self.pads)
            .group(self.group);
        let y = g.add_node("conv", Op::Conv(attrs), &ins).expect("types");
        g.add_output("y", y[0]);
        (verify(g).unwrap_or_else(|e| panic!("{}: {e}", self.what)), vec![random(&self.x, 1)])
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("3x3 pad 1, 3 K blocks, 2 pixel blocks", &[1, 64, 17, 19], 13, &[3, 3], 1, 1),
        case("1x1 33->70, 2 pixel blocks", &[1, 33, 20, 15], 70, &[1, 1], 1, 0),
        case("1x1 with batch 2", &[2, 16, 7, 9], 6, &[1, 1], 1, 0),
        case("7x7 stride 2 pad 3", &[1, 3, 31, 29], 10, &[7, 7], 2, 3),
        case("3x3 3->5", &[1, 3, 9, 11], 5, &[3, 3], 1, 1),
        case("3x3 33->70 stride 2 pad 1", &[1, 33, 13, 12], 70, &[3, 3], 2, 1),
        case("1x1 stride 2", &[1, 20, 9, 8], 7, &[1, 1], 2, 0),
        Case { group: 2, ..case("grouped 3x3, no bias", &[2, 16, 10, 9], 12, &[3, 3], 1, 1) },
        Case { bias: false, ..case("no bias 5x5 pad 2", &[1, 8, 12, 23], 9, &[5, 5], 1, 2) },
        Case {
            strides: vec![2, 3],
            dilations: vec![2, 1],
            pads: vec![0, 2, 3, 1],
            ..case("strided dilated asymmetric pads", &[1, 6, 21, 37], 8, &[3, 2], 1, 0)
        },
        case("kernel overhangs the input", &[1, 4, 2, 3], 5, &[5, 5], 1, 3),
        case("1-D k5", &[2, 5, 40], 7, &[5], 1, 2),
        case("empty batch", &[0, 16, 5, 5], 6, &[3, 3], 1, 1),
    ]
}

/// Whether this host has the CPU features of the f32 tile `CNNC_KERNELS=tile` forces.
fn has_tile(tile: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx2") && has!("fma") && (tile == "avx2" || has!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = tile;
        false
    }
}

#[test]
fn packed_gemm_conv_with_each_f32_tile_and_forced_cranelift_conv_match_reference() {
    for kernels in [None, Some("avx512"), Some("avx2"), Some("cranelift")] {
        // SAFETY: this binary's only test sets the variable; nothing reads it concurrently.
        unsafe {
            match kernels {
                Some(k) => std::env::set_var("CNNC_KERNELS", k),
                None => std::env::remove_var("CNNC_KERNELS"),
            }
        }
        if let Some(tile) = kernels.filter(|k| *k != "cranelift" && !has_tile(k)) {
            // Forcing a tile the CPU lacks is an error naming it, never a silent fallback.
            let Err(err) = Model::compile(&cases()[0].graph().0) else {
                panic!("CNNC_KERNELS={tile} compiled on a CPU without the tile");
            };
            assert!(err.to_string().contains(&format!("CNNC_KERNELS={tile}")), "{err}");
            cnnc_runtime::testing::cpu_skip("packed_gemm_conv_with_each_f32_tile_and_forced_cranelift_conv", tile);
            continue;
        }
        for c in cases() {
            let (g, inputs) = c.graph();
            let model = Model::compile(&g).unwrap_or_else(|e| panic!("{}: {e}", c.what));
            let got = model.run(&inputs).expect("runs");
            let want = run_reference(&g, &inputs).expect("reference runs");
            let what = format!("{} ({})", c.what, kernels.unwrap_or("auto"));
            assert_close(&what, &got[0], &want[0]);
        }
    }
}
