//! The depthwise and matrix-vector conv paths on the host's microkernels against the portable
//! Cranelift kernels, on a table laid out like `Model::run`'s with the kernel's scratch, with
//! every work unit in one call and with one call per unit in reverse order.
//!
//! Depthwise, on every f32 tile set the host has (the AVX2 routine, and the AVX-512 one under
//! the AVX-512 tile): the same bits as the Cranelift depthwise kernel (all add `bias + Σ taps`
//! with one FMA per tap in row-major tap order, then the residual, then the same activation;
//! the routines also multiply the padding taps by zero, which changes nothing on finite data
//! unless a sum is a signed zero, which random data does not produce). Matrix-vector: rel-L2
//! ≤ 1e-6 against the direct conv (both f32, different summation orders, ≤ 600 terms).

use cnnc_ir::{ConvAttrs, UnaryOp};

use super::packed_tests::Bench;
use crate::testing::rel_l2;

fn attrs(k: [usize; 2], s: [usize; 2], d: [usize; 2], pads: [usize; 4], group: usize) -> ConvAttrs {
    ConvAttrs::new(&k).strides(&s).dilations(&d).pads(&pads).group(group)
}

const ACTS: [Option<UnaryOp>; 8] = [
    None,
    Some(UnaryOp::Relu),
    Some(UnaryOp::Clip { min: -0.3, max: 0.4 }),
    Some(UnaryOp::LeakyRelu { alpha: 0.1 }),
    Some(UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 }),
    Some(UnaryOp::HardSwish),
    Some(UnaryOp::Sigmoid),
    Some(UnaryOp::Swish { beta: 1.0 }),
];

fn same_bits(what: &str, got: &[f32], want: &[f32]) {
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(a.to_bits() == b.to_bits(), "{what}: element {i}: {a} vs {b}");
    }
}

/// Input NCHW, channel multiplier, kernel, strides, dilations, pads (ONNX order).
type DwCase = ([usize; 4], usize, [usize; 2], [usize; 2], [usize; 2], [usize; 4]);

#[test]
fn depthwise_routines_give_the_cranelift_kernels_bits_for_any_unit_split() {
    let tiles = each_f32_tile!();
    // (input NCHW, multiplier, kernel, stride, dilation, pads): narrow and wide rows, column
    // tails (of an 8- and a 16-lane vector), strides 1–3 (3 goes through the scalar staging),
    // asymmetric pads, a multiplier of 2, a width that needs two column tiles, rows split into
    // several staging bands, and 3×3 maps whose row counts leave 8-, 4- and fewer-row tiles
    // (rows over 32 columns: the AVX-512 routine's zmm path; one with a multiplier of 2 and a
    // column dilation).
    let cases: [DwCase; 12] = [
        ([1, 5, 14, 14], 1, [5, 5], [1, 1], [1, 1], [2, 2, 2, 2]),
        ([2, 3, 7, 7], 1, [5, 5], [1, 1], [1, 1], [2, 2, 2, 2]),
        ([1, 4, 29, 31], 1, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1]),
        ([1, 2, 40, 45], 1, [3, 3], [1, 1], [1, 1], [1, 0, 2, 1]),
        ([1, 3, 23, 26], 2, [3, 2], [3, 3], [2, 1], [0, 3, 1, 2]),
        ([1, 2, 9, 1100], 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        ([1, 3, 1, 1], 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        ([1, 2, 150, 150], 1, [3, 3], [2, 2], [1, 1], [0, 0, 1, 1]),
        ([1, 3, 12, 10], 1, [7, 6], [1, 2], [2, 1], [3, 3, 3, 2]),
        ([1, 2, 30, 57], 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        ([1, 2, 11, 40], 2, [3, 3], [1, 1], [1, 2], [1, 2, 1, 2]),
        ([1, 3, 14, 14], 1, [5, 5], [1, 1], [1, 1], [2, 2, 2, 2]),
    ];
    for (x, mult, k, s, d, p) in cases {
        let a = attrs(k, s, d, p, x[1]);
        let m = x[1] * mult;
        for (i, &act) in ACTS.iter().enumerate() {
            let (bias, residual) = (i % 2 == 0, i % 3 != 1);
            let what = format!("{x:?} ×{mult} k{k:?} s{s:?} d{d:?} p{p:?} {act:?} bias {bias} residual {residual}");
            let mut want = Bench::new(&x, m, &a, act, bias, residual, None);
            want.run();
            for &mk in &tiles {
                let what = format!("{:?}: {what}", mk.tile);
                let mut got = Bench::new(&x, m, &a, act, bias, residual, Some(mk));
                got.run();
                same_bits(&what, &got.y, &want.y);
                got.assert_unit_split_gives_the_same_bits(&what);
            }
        }
    }
}

#[test]
fn single_pixel_pointwise_conv_is_a_gemv_matching_the_direct_conv() {
    let mk = microkernels_or_skip!();
    // (input, output channels, kernel): a 1×1 conv on a 1×1 map with a partial last panel,
    // several images, K not a multiple of 4, and a kernel covering a 3×2 input.
    let cases: [([usize; 4], usize, [usize; 2]); 4] = [
        ([1, 37, 1, 1], 203, [1, 1]),
        ([3, 64, 1, 1], 16, [1, 1]),
        ([2, 5, 1, 1], 9, [1, 1]),
        ([2, 7, 3, 2], 30, [3, 2]),
    ];
    for (x, m, k) in cases {
        let a = attrs(k, [1, 1], [1, 1], [0; 4], 1);
        for (i, &act) in ACTS.iter().enumerate() {
            let (bias, residual) = (i % 2 == 0, i % 3 != 1);
            let what = format!("{x:?} → {m} k{k:?} {act:?} bias {bias} residual {residual}");
            let mut want = Bench::new(&x, m, &a, act, bias, residual, None);
            want.run();
            let mut got = Bench::new(&x, m, &a, act, bias, residual, Some(mk));
            got.run();
            let rel = rel_l2(&got.y, &want.y);
            assert!(rel <= 1e-6, "{what}: rel-L2 {rel:.3e}");
            got.assert_unit_split_gives_the_same_bits(&what);
        }
    }
}
