//! Hand-computed cases for every op family of the reference interpreter, through `eval_op`.
//!
//! Unless a test says otherwise the expected values are exact in f32 (small integers, halves,
//! quarters) and the interpreter computes in f64 before one rounding, so results are compared
//! exactly; tests with transcendental or non-dyadic values use the tolerance they state.

// Cases read best as literal arrays of owned tensors.
#![allow(clippy::cloned_ref_to_slice_refs)]

use cnnc_ir::{
    BinaryOp, ConvAttrs, ConvTransposeAttrs, CoordTransform, DType, NearestMode, Op, PadMode, PoolAttrs, QuantParams,
    ReduceKind, ResizeAttrs, ResizeMode, SliceAxis, Tensor, TensorType, UnaryOp,
};
use cnnc_runtime::eval_op;

fn f32t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(shape, data.to_vec()).expect("test tensor")
}

fn i64t(shape: &[usize], data: &[i64]) -> Tensor {
    Tensor::from_i64(shape, data.to_vec()).expect("test tensor")
}

fn boolt(shape: &[usize], data: &[bool]) -> Tensor {
    Tensor::from_bool(shape, data.to_vec()).expect("test tensor")
}

/// Evaluates `op` and checks it produced exactly `outs` (type and values).
fn check(op: Op, inputs: &[Tensor], outs: &[Tensor]) {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let types: Vec<TensorType> = outs.iter().map(Tensor::ty).collect();
    let got = eval_op(&op, &refs, &types).unwrap_or_else(|e| panic!("{op:?} failed: {e}"));
    assert_eq!(got, outs, "{op:?}");
}

/// Evaluates a one-output f32 op of known output shape.
fn eval_f32(op: &Op, inputs: &[Tensor], out_shape: &[usize]) -> Vec<f32> {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let got = eval_op(op, &refs, &[TensorType::f32(out_shape)]).unwrap_or_else(|e| panic!("{op:?} failed: {e}"));
    got[0].as_f32().expect("f32 output").to_vec()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "element {i}: got {g}, want {w}\n{got:?}\n{want:?}");
    }
}

fn eval_err(op: &Op, inputs: &[Tensor], out_types: &[TensorType]) -> String {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    eval_op(op, &refs, out_types).expect_err("op should fail")
}

fn conv_attrs(kernel: &[usize], strides: &[usize], dilations: &[usize], pads: &[usize], group: usize) -> ConvAttrs {
    ConvAttrs::new(kernel).strides(strides).dilations(dilations).pads(pads).group(group)
}

fn pool_attrs(kernel: &[usize], strides: &[usize], pads: &[usize], ceil_mode: bool) -> PoolAttrs {
    PoolAttrs {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        dilations: vec![1; kernel.len()],
        pads: pads.to_vec(),
        ceil_mode,
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn conv1d_with_stride_dilation_asymmetric_pads_and_bias() {
    // Padded x: [0 | 1 2 3 4 5 | 0 0]; y[o] = x[2o−1]·1 + x[2o+1]·10 + 0.5.
    let op = Op::Conv(conv_attrs(&[2], &[2], &[2], &[1, 2], 1));
    let x = f32t(&[1, 1, 5], &[1., 2., 3., 4., 5.]);
    let w = f32t(&[1, 1, 2], &[1., 10.]);
    let b = f32t(&[1], &[0.5]);
    check(op, &[x, w, b], &[f32t(&[1, 1, 3], &[20.5, 42.5, 4.5])]);
}

#[test]
fn depthwise_conv2d_with_padding() {
    let op = Op::Conv(conv_attrs(&[2, 2], &[1, 1], &[1, 1], &[1, 1, 1, 1], 2));
    let x = f32t(&[1, 2, 2, 2], &[1., 2., 3., 4., 5., 6., 7., 8.]);
    // Channel 0 sums each 2×2 window; channel 1 computes top-left minus bottom-right.
    let w = f32t(&[2, 1, 2, 2], &[1., 1., 1., 1., 1., 0., 0., -1.]);
    let want = [
        1., 3., 2., 4., 10., 6., 3., 7., 4., //
        -5., -6., 0., -7., -3., 6., 0., 7., 8.,
    ];
    check(op, &[x, w], &[f32t(&[1, 2, 3, 3], &want)]);
}

#[test]
fn grouped_conv2d_mixes_only_channels_of_its_group() {
    // 4 input channels, 2 groups, 2 outputs: output 0 sums channels 0–1, output 1 weighs 2–3.
    let op = Op::Conv(conv_attrs(&[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0], 2));
    let x = f32t(&[1, 4, 1, 2], &[1., 2., 10., 20., 100., 200., 1000., 2000.]);
    let w = f32t(&[2, 2, 1, 1], &[1., 1., 1., -1.]);
    check(op, &[x, w], &[f32t(&[1, 2, 1, 2], &[11., 22., -900., -1800.])]);
}

#[test]
fn conv2d_stride_two_sums_over_input_channels() {
    // x channel 0 = 0..16 as 4×4, channel 1 = all ones; 2×2 kernel, stride 2, no padding.
    let op = Op::Conv(conv_attrs(&[2, 2], &[2, 2], &[1, 1], &[0, 0, 0, 0], 1));
    let mut xv: Vec<f32> = (0..16).map(|v| v as f32).collect();
    xv.extend([1.0; 16]);
    let x = f32t(&[1, 2, 4, 4], &xv);
    // Output 0: top-left tap of channel 0 plus 2× the window sum of channel 1 (= 8).
    let w = f32t(&[1, 2, 2, 2], &[1., 0., 0., 0., 2., 2., 2., 2.]);
    check(op, &[x, w], &[f32t(&[1, 1, 2, 2], &[8., 10., 16., 18.])]);
}

#[test]
fn conv_transpose1d_scatters_with_stride_pads_and_output_padding() {
    // Full scatter of [1 2 3] with kernel [1 1], stride 2: [1 1 2 2 3 3]; pads [1, 0] drop the
    // first element and output_padding 1 appends one zero, then bias 0.25.
    let op = Op::ConvTranspose(ConvTransposeAttrs {
        kernel: vec![2],
        strides: vec![2],
        dilations: vec![1],
        pads: vec![1, 0],
        output_padding: vec![1],
        group: 1,
    });
    let x = f32t(&[1, 1, 3], &[1., 2., 3.]);
    let w = f32t(&[1, 1, 2], &[1., 1.]);
    let b = f32t(&[1], &[0.25]);
    check(op, &[x, w, b], &[f32t(&[1, 1, 6], &[1.25, 2.25, 2.25, 3.25, 3.25, 0.25])]);
}

#[test]
fn grouped_conv_transpose2d_with_dilation() {
    // Two groups, one channel each; kernel [[1, 2]] dilated by 2 along width, stride 1.
    // Channel c: y[j] = x[j] + 2·x[j−2] (width 2 + (2−1)·2 = 4), scaled by 1 or 10.
    let op = Op::ConvTranspose(ConvTransposeAttrs {
        kernel: vec![1, 2],
        strides: vec![1, 1],
        dilations: vec![1, 2],
        pads: vec![0, 0, 0, 0],
        output_padding: vec![0, 0],
        group: 2,
    });
    let x = f32t(&[1, 2, 1, 2], &[1., 2., 3., 4.]);
    let w = f32t(&[2, 1, 1, 2], &[1., 2., 10., 20.]);
    check(op, &[x, w], &[f32t(&[1, 2, 1, 4], &[1., 2., 2., 4., 30., 40., 60., 80.])]);
}

// ---------------------------------------------------------------------------------------------

#[test]
fn max_pool_ceil_mode_keeps_partial_last_window() {
    let op = Op::MaxPool(pool_attrs(&[2], &[2], &[0, 0], true));
    let x = f32t(&[1, 1, 5], &[1., 5., 2., 4., 3.]);
    check(op, &[x], &[f32t(&[1, 1, 3], &[5., 4., 3.])]);
}

#[test]
fn max_pool_ceil_mode_drops_window_starting_in_end_padding() {
    // ceil((5 + 2 − 2) / 2) + 1 = 4, but window 3 would start at position 5, in the end padding.
    let op = Op::MaxPool(pool_attrs(&[2], &[2], &[1, 1], true));
    let x = f32t(&[1, 1, 5], &[1., 5., 2., 4., 3.]);
    check(op, &[x], &[f32t(&[1, 1, 3], &[1., 5., 4.])]);
}

#[test]
fn max_pool_with_dilation() {
    let mut attrs = pool_attrs(&[2], &[1], &[0, 0], false);
    attrs.dilations = vec![2];
    let x = f32t(&[1, 1, 5], &[1., 5., 2., 4., 3.]);
    check(Op::MaxPool(attrs), &[x], &[f32t(&[1, 1, 3], &[2., 5., 3.])]);
}

#[test]
fn max_pool2d_padding_is_negative_infinity() {
    let op = Op::MaxPool(pool_attrs(&[2, 2], &[2, 2], &[1, 1, 0, 0], false));
    let x = f32t(&[1, 1, 2, 2], &[-1., -2., -3., -4.]);
    check(op, &[x], &[f32t(&[1, 1, 1, 1], &[-1.])]);
}

#[test]
fn avg_pool_ceil_mode_count_include_pad_excludes_overhang() {
    // x = 1..6, kernel 3, stride 2, pads [1, 1], ceil: windows start at −1, 1, 3, 5.
    // The last window covers 6, the end pad and one position past it: include_pad divides by 2.
    let attrs = pool_attrs(&[3], &[2], &[1, 1], true);
    let x = f32t(&[1, 1, 6], &[1., 2., 3., 4., 5., 6.]);
    let op = Op::AvgPool { pool: attrs.clone(), count_include_pad: true };
    check(op, &[x.clone()], &[f32t(&[1, 1, 4], &[1., 3., 5., 3.])]);
    let op = Op::AvgPool { pool: attrs, count_include_pad: false };
    check(op, &[x], &[f32t(&[1, 1, 4], &[1.5, 3., 5., 6.])]);
}

#[test]
fn avg_pool2d_end_padding_with_and_without_count_include_pad() {
    let attrs = pool_attrs(&[2, 2], &[2, 2], &[0, 0, 1, 1], false);
    let x = f32t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let op = Op::AvgPool { pool: attrs.clone(), count_include_pad: true };
    check(op, &[x.clone()], &[f32t(&[1, 1, 2, 2], &[3., 2.25, 3.75, 2.25])]);
    let op = Op::AvgPool { pool: attrs, count_include_pad: false };
    check(op, &[x], &[f32t(&[1, 1, 2, 2], &[3., 4.5, 7.5, 9.])]);
}

#[test]
fn global_pools_reduce_every_spatial_axis() {
    let x = f32t(&[1, 2, 2, 2], &[1., 2., 3., 6., -1., -2., -3., -4.]);
    check(Op::GlobalAvgPool, &[x.clone()], &[f32t(&[1, 2, 1, 1], &[3., -2.5])]);
    check(Op::GlobalMaxPool, &[x], &[f32t(&[1, 2, 1, 1], &[6., -1.])]);
}

// ---------------------------------------------------------------------------------------------

#[test]
fn gemm_with_alpha_beta_transposes_and_broadcast_c() {
    // a·b = [[4, 5], [10, 11]]; 2·(a·b) + 0.5·[1, 2].
    let want = f32t(&[2, 2], &[8.5, 11., 20.5, 23.]);
    let c = f32t(&[2], &[1., 2.]);
    let gemm = |trans_a, trans_b| Op::Gemm { alpha: 2.0, beta: 0.5, trans_a, trans_b };
    let a = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let b = f32t(&[3, 2], &[1., 0., 0., 1., 1., 1.]);
    let at = f32t(&[3, 2], &[1., 4., 2., 5., 3., 6.]);
    let bt = f32t(&[2, 3], &[1., 0., 1., 0., 1., 1.]);
    check(gemm(false, false), &[a.clone(), b.clone(), c.clone()], &[want.clone()]);
    check(gemm(true, false), &[at.clone(), b, c.clone()], &[want.clone()]);
    check(gemm(false, true), &[a, bt.clone(), c.clone()], &[want.clone()]);
    check(gemm(true, true), &[at, bt, c], &[want]);
}

#[test]
fn gemm_without_c() {
    let op = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false };
    check(op, &[f32t(&[1, 2], &[1., 2.]), f32t(&[2, 1], &[3., 4.])], &[f32t(&[1, 1], &[11.])]);
}

#[test]
fn matmul_broadcasts_batch_axes() {
    // Two row vectors times three column vectors: every dot product, shape [2, 3, 1, 1].
    let a = f32t(&[2, 1, 1, 2], &[1., 2., 3., 4.]);
    let b = f32t(&[3, 2, 1], &[1., 0., 0., 1., 1., 1.]);
    check(Op::MatMul, &[a, b], &[f32t(&[2, 3, 1, 1], &[1., 2., 3., 3., 4., 7.])]);
}

#[test]
fn matmul_promotes_one_dimensional_operands() {
    let m = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let v3 = f32t(&[3], &[1., 0., -1.]);
    let v2 = f32t(&[2], &[1., 1.]);
    check(Op::MatMul, &[m.clone(), v3.clone()], &[f32t(&[2], &[-2., -2.])]);
    check(Op::MatMul, &[v2, m], &[f32t(&[3], &[5., 7., 9.])]);
    check(Op::MatMul, &[v3.clone(), v3], &[f32t(&[], &[2.])]);
}

// ---------------------------------------------------------------------------------------------

fn resize_op(mode: ResizeMode, coord: CoordTransform, nearest: NearestMode, scales: &[f32], out: &[usize]) -> Op {
    Op::Resize(ResizeAttrs { mode, coord, nearest, scales: scales.to_vec(), out_shape: out.to_vec() })
}

const ALL_COORDS: [CoordTransform; 5] = [
    CoordTransform::HalfPixel,
    CoordTransform::HalfPixelSymmetric,
    CoordTransform::PytorchHalfPixel,
    CoordTransform::AlignCorners,
    CoordTransform::Asymmetric,
];

#[test]
fn resize_nearest_2x2_to_4x4_for_every_transform_and_rounding() {
    // Source coordinates of outputs 0..4 (in 2, out 4, scale 2):
    //   half_pixel, half_pixel_symmetric (adjustment 1), pytorch_half_pixel: −0.25 0.25 0.75 1.25
    //   align_corners: 0 1/3 2/3 1;  asymmetric: 0 0.5 1 1.5;  tf_half_pixel_for_nn: 0.25 0.75 1.25 1.75
    // Rounded and clamped to [0, 1], per axis:
    use CoordTransform::*;
    use NearestMode::*;
    let table: [(CoordTransform, NearestMode, [usize; 4]); 24] = [
        (HalfPixel, RoundPreferFloor, [0, 0, 1, 1]),
        (HalfPixel, RoundPreferCeil, [0, 0, 1, 1]),
        (HalfPixel, Floor, [0, 0, 0, 1]),
        (HalfPixel, Ceil, [0, 1, 1, 1]),
        (HalfPixelSymmetric, RoundPreferFloor, [0, 0, 1, 1]),
        (HalfPixelSymmetric, RoundPreferCeil, [0, 0, 1, 1]),
        (HalfPixelSymmetric, Floor, [0, 0, 0, 1]),
        (HalfPixelSymmetric, Ceil, [0, 1, 1, 1]),
        (PytorchHalfPixel, RoundPreferFloor, [0, 0, 1, 1]),
        (PytorchHalfPixel, RoundPreferCeil, [0, 0, 1, 1]),
        (PytorchHalfPixel, Floor, [0, 0, 0, 1]),
        (PytorchHalfPixel, Ceil, [0, 1, 1, 1]),
        (AlignCorners, RoundPreferFloor, [0, 0, 1, 1]),
        (AlignCorners, RoundPreferCeil, [0, 0, 1, 1]),
        (AlignCorners, Floor, [0, 0, 0, 1]),
        (AlignCorners, Ceil, [0, 1, 1, 1]),
        (Asymmetric, RoundPreferFloor, [0, 0, 1, 1]),
        (Asymmetric, RoundPreferCeil, [0, 1, 1, 1]),
        (Asymmetric, Floor, [0, 0, 1, 1]),
        (Asymmetric, Ceil, [0, 1, 1, 1]),
        (TfHalfPixelForNn, RoundPreferFloor, [0, 1, 1, 1]),
        (TfHalfPixelForNn, RoundPreferCeil, [0, 1, 1, 1]),
        (TfHalfPixelForNn, Floor, [0, 0, 1, 1]),
        (TfHalfPixelForNn, Ceil, [1, 1, 1, 1]),
    ];
    let src = [1f32, 2., 3., 4.];
    let x = f32t(&[1, 1, 2, 2], &src);
    for (coord, nearest, idx) in table {
        let op = resize_op(ResizeMode::Nearest, coord.clone(), nearest, &[1., 1., 2., 2.], &[1, 1, 4, 4]);
        let want: Vec<f32> = (0..16).map(|i| src[idx[i / 4] * 2 + idx[i % 4]]).collect();
        assert_eq!(eval_f32(&op, std::slice::from_ref(&x), &[1, 1, 4, 4]), want, "{coord:?} {nearest:?}");
    }
}

#[test]
fn resize_linear_2x2_to_4x4_for_every_transform() {
    // x = [[1, 2], [3, 4]] so bilinear values are 1 + c + 2r at clamped source coordinates (r, c).
    // half_pixel-like transforms: clamp(−0.25 0.25 0.75 1.25) = 0 0.25 0.75 1.
    let half = [1., 1.25, 1.75, 2., 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3., 3.25, 3.75, 4.];
    // align_corners: 0 1/3 2/3 1 → 1 + c/3·1 + r/3·2.
    let corners: Vec<f32> = (0..16).map(|i| 1. + (i % 4) as f32 / 3. + 2. * (i / 4) as f32 / 3.).collect();
    // asymmetric: clamp(0 0.5 1 1.5) = 0 0.5 1 1.
    let asym = [1., 1.5, 2., 2., 2., 2.5, 3., 3., 3., 3.5, 4., 4., 3., 3.5, 4., 4.];
    let x = f32t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    for coord in ALL_COORDS {
        let want: &[f32] = match coord {
            CoordTransform::AlignCorners => &corners,
            CoordTransform::Asymmetric => &asym,
            _ => &half,
        };
        let op = resize_op(ResizeMode::Linear, coord, NearestMode::RoundPreferFloor, &[1., 1., 2., 2.], &[1, 1, 4, 4]);
        // Thirds are not exact in f32; the coordinate itself is computed in f32 (1 ulp ≈ 6e-8).
        assert_close(&eval_f32(&op, std::slice::from_ref(&x), &[1, 1, 4, 4]), want, 1e-6);
    }
}

#[test]
fn resize_pytorch_half_pixel_maps_single_output_to_zero() {
    let x = f32t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let op = |coord| resize_op(ResizeMode::Linear, coord, NearestMode::Floor, &[1., 1., 0.5, 0.5], &[1, 1, 1, 1]);
    assert_eq!(eval_f32(&op(CoordTransform::PytorchHalfPixel), std::slice::from_ref(&x), &[1, 1, 1, 1]), [1.]);
    // half_pixel: (0 + 0.5) / 0.5 − 0.5 = 0.5 on both axes, the centre of the image.
    assert_eq!(eval_f32(&op(CoordTransform::HalfPixel), &[x], &[1, 1, 1, 1]), [2.5]);
}

#[test]
fn resize_half_pixel_symmetric_shifts_by_the_rounding_adjustment() {
    // in 2, scale 1.6, out 3: adjustment 3 / 3.2 = 0.9375, offset 1·(1 − 0.9375) = 0.0625;
    // coordinates −0.125, 0.5, 1.125 (half_pixel gives −0.1875, 0.4375, 1.0625).
    let x = f32t(&[1, 2], &[10., 20.]);
    // Nearest uses floor: the middle coordinate is 0.5 only up to f32 rounding, so a tie-break
    // mode would pin rounding noise.
    let op = |mode, coord| resize_op(mode, coord, NearestMode::Floor, &[1., 1.6], &[1, 3]);
    let sym = |mode| eval_f32(&op(mode, CoordTransform::HalfPixelSymmetric), std::slice::from_ref(&x), &[1, 3]);
    // 1.6 is inexact in f32, so coordinates carry ~1e-7 error.
    assert_close(&sym(ResizeMode::Linear), &[10., 15., 20.], 1e-6);
    assert_eq!(sym(ResizeMode::Nearest), [10., 10., 20.]);
    let half = eval_f32(&op(ResizeMode::Linear, CoordTransform::HalfPixel), &[x], &[1, 3]);
    assert_close(&half, &[10., 14.375, 20.], 1e-6);
}

#[test]
fn resize_nearest_downsample_three_to_two() {
    // scale 2/3: half_pixel → 0.25, 1.75 → [0, 2]; asymmetric → 0, 1.5 → floor-tie 1, ceil-tie 2.
    let x = f32t(&[3], &[7., 8., 9.]);
    let s = 2.0f32 / 3.0;
    let run = |coord, nearest| {
        eval_f32(&resize_op(ResizeMode::Nearest, coord, nearest, &[s], &[2]), std::slice::from_ref(&x), &[2])
    };
    assert_eq!(run(CoordTransform::HalfPixel, NearestMode::RoundPreferFloor), [7., 9.]);
    assert_eq!(run(CoordTransform::AlignCorners, NearestMode::RoundPreferFloor), [7., 9.]);
    assert_eq!(run(CoordTransform::Asymmetric, NearestMode::Floor), [7., 8.]);
}

#[test]
fn resize_cubic_uses_keys_weights_and_repeats_or_excludes_the_edge() {
    // Asymmetric 2x on an impulse: sources 0, 0.5, 1, …, 4.5. At fraction 0.5 and a = −0.75
    // the weights of samples −1, 0, 1, 2 are −0.09375, 0.59375, 0.59375, −0.09375; at
    // fraction 0 they are 0, 1, 0, 0.
    let x = f32t(&[5], &[0., 0., 1., 0., 0.]);
    let cubic = |exclude_outside| {
        let mode = ResizeMode::Cubic { a: -0.75, exclude_outside };
        resize_op(mode, CoordTransform::Asymmetric, NearestMode::Floor, &[2.], &[10])
    };
    let repeat = eval_f32(&cubic(false), std::slice::from_ref(&x), &[10]);
    assert_eq!(repeat, [0., -0.09375, 0., 0.59375, 1., 0.59375, 0., -0.09375, 0., 0.]);
    // Output 1 (source 0.5) reads samples −1..=2; excluding sample −1 renormalizes the other
    // three weights by their sum 1.09375. Other outputs with an outside sample read zeros.
    let exclude = eval_f32(&cubic(true), &[x], &[10]);
    assert_close(&exclude[..4], &[0., -0.09375 / 1.09375, 0., 0.59375], 1e-7);
}

#[test]
fn resize_tf_crop_and_resize_samples_the_box_and_extrapolates_outside() {
    let crop = |mode, roi: &[f32], out: usize| {
        let coord = CoordTransform::TfCropAndResize { roi: roi.to_vec(), extrapolation: -1.0 };
        resize_op(mode, coord, NearestMode::RoundPreferFloor, &[out as f32 / 3.], &[out])
    };
    let x = f32t(&[3], &[10., 20., 30.]);
    let run = |mode, roi: &[f32], out| eval_f32(&crop(mode, roi, out), std::slice::from_ref(&x), &[out]);
    // Box [0.25, 1.25] of an axis of length 3: sources 0.5, 1, 1.5, 2, 2.5 (past the end).
    assert_eq!(run(ResizeMode::Linear, &[0.25, 1.25], 5), [15., 20., 25., 30., -1.]);
    assert_eq!(run(ResizeMode::Nearest, &[0.25, 1.25], 5), [10., 20., 20., 30., -1.]);
    assert_eq!(run(ResizeMode::Linear, &[-0.25, 0.75], 5), [-1., 10., 15., 20., 25.]);
    // One output samples the centre of the box: 0.5·(0.25 + 1.25)·2 = 1.5.
    assert_eq!(run(ResizeMode::Linear, &[0.25, 1.25], 1), [25.]);
    // An output outside the box on any axis is the extrapolation value. Columns: −0.5, 0.25, 1.
    let x = f32t(&[2, 2], &[1., 2., 3., 4.]);
    let coord = CoordTransform::TfCropAndResize { roi: vec![0., -0.5, 1., 1.], extrapolation: -1.0 };
    let op = resize_op(ResizeMode::Linear, coord, NearestMode::Floor, &[1.5, 1.5], &[3, 3]);
    assert_eq!(eval_f32(&op, &[x], &[3, 3]), [-1., 1.25, 2., -1., 2.25, 3., -1., 3.25, 4.]);
}

#[test]
fn resize_to_the_input_shape_is_a_copy() {
    // onnxruntime copies whenever the output shape equals the input's, whatever the scales.
    let x = f32t(&[1, 4], &[1., 2., 3., 4.]);
    let op = resize_op(ResizeMode::Linear, CoordTransform::HalfPixel, NearestMode::Floor, &[1., 1.2], &[1, 4]);
    assert_eq!(eval_f32(&op, std::slice::from_ref(&x), &[1, 4]), [1., 2., 3., 4.]);
}

// ---------------------------------------------------------------------------------------------

#[test]
fn unary_activations_at_hand_picked_points() {
    let x = f32t(&[5], &[-4., -1., 0., 1.5, 4.]);
    let run = |u| eval_f32(&Op::Unary(u), std::slice::from_ref(&x), &[5]);
    assert_eq!(run(UnaryOp::Relu), [0., 0., 0., 1.5, 4.]);
    assert_eq!(run(UnaryOp::LeakyRelu { alpha: 0.5 }), [-2., -0.5, 0., 1.5, 4.]);
    assert_eq!(run(UnaryOp::Clip { min: -1.0, max: 1.0 }), [-1., -1., 0., 1., 1.]);
    assert_eq!(run(UnaryOp::HardSigmoid { alpha: 0.25, beta: 0.5 }), [0., 0.25, 0.5, 0.875, 1.]);
    // x · clamp(x/6 + 1/2, 0, 1): −4 → 0; −1 → −1/3; 1.5 → 1.125; 4 → 4.
    assert_close(&run(UnaryOp::HardSwish), &[0., -1. / 3., 0., 1.125, 4.], 1e-7);
    assert_eq!(run(UnaryOp::Neg), [4., 1., -0., -1.5, -4.]);
    assert_eq!(run(UnaryOp::Abs), [4., 1., 0., 1.5, 4.]);
    assert_eq!(run(UnaryOp::Floor), [-4., -1., 0., 1., 4.]);
    assert_eq!(run(UnaryOp::Ceil), [-4., -1., 0., 2., 4.]);
    // Correctly rounded f32 of the f64 value; 1 ulp slack.
    let sig: Vec<f32> = [-4f64, -1., 0., 1.5, 4.].iter().map(|v| (1. / (1. + (-v).exp())) as f32).collect();
    assert_close(&run(UnaryOp::Sigmoid), &sig, 1.2e-7);
}

#[test]
fn erf_unary_rounds_the_exact_value() {
    // Values from CPython math.erf, rounded to f32; the f64 erf is good to 1e-14, so the f32
    // result is the correctly rounded one.
    let x = f32t(&[4], &[0.5, -1., 2., 10.]);
    let want = [0.5204998778130465f64, -0.8427007929497149, 0.9953222650189527, 1.0].map(|v| v as f32);
    assert_eq!(eval_f32(&Op::Unary(UnaryOp::Erf), &[x], &[4]), want);
}

#[test]
fn binary_broadcasts_multidirectionally() {
    let a = f32t(&[2, 1], &[1., 2.]);
    let b = f32t(&[3], &[10., 20., 30.]);
    check(Op::Binary(BinaryOp::Add), &[a.clone(), b.clone()], &[f32t(&[2, 3], &[11., 21., 31., 12., 22., 32.])]);
    check(Op::Binary(BinaryOp::Sub), &[a, b], &[f32t(&[2, 3], &[-9., -19., -29., -8., -18., -28.])]);
}

#[test]
fn binary_max_min_pow_div_on_f32() {
    let a = f32t(&[3], &[1., -2., 3.]);
    let b = f32t(&[3], &[2., -4., 0.5]);
    check(Op::Binary(BinaryOp::Max), &[a.clone(), b.clone()], &[f32t(&[3], &[2., -2., 3.])]);
    check(Op::Binary(BinaryOp::Min), &[a.clone(), b.clone()], &[f32t(&[3], &[1., -4., 0.5])]);
    check(Op::Binary(BinaryOp::Div), &[a.clone(), b], &[f32t(&[3], &[0.5, 0.5, 6.])]);
    check(Op::Binary(BinaryOp::Pow), &[a, f32t(&[], &[2.])], &[f32t(&[3], &[1., 4., 9.])]);
}

#[test]
fn prelu_broadcasts_slope_to_x() {
    let x = f32t(&[2, 2], &[-1., 2., -3., 4.]);
    let slope = f32t(&[2], &[0.25, 0.5]);
    check(Op::Binary(BinaryOp::PRelu), &[x, slope], &[f32t(&[2, 2], &[-0.25, 2., -0.75, 4.])]);
}

#[test]
fn integer_division_truncates_toward_zero() {
    let a = i64t(&[4], &[7, -7, 7, -7]);
    let b = i64t(&[4], &[2, 2, -2, -2]);
    check(Op::Binary(BinaryOp::Div), &[a, b], &[i64t(&[4], &[3, -3, -3, 3])]);
}

#[test]
fn integer_division_by_zero_is_an_error() {
    let err = eval_err(
        &Op::Binary(BinaryOp::Div),
        &[i64t(&[1], &[1]), i64t(&[1], &[0])],
        &[TensorType::new(DType::I64, [1])],
    );
    assert!(err.contains("division by zero"), "{err}");
}

#[test]
fn integer_arithmetic_for_shape_computations() {
    let a = i64t(&[3], &[1, 2, 3]);
    let b = i64t(&[], &[2]);
    check(Op::Binary(BinaryOp::Mul), &[a.clone(), b.clone()], &[i64t(&[3], &[2, 4, 6])]);
    check(Op::Binary(BinaryOp::Add), &[a.clone(), b.clone()], &[i64t(&[3], &[3, 4, 5])]);
    check(Op::Binary(BinaryOp::Sub), &[a.clone(), b.clone()], &[i64t(&[3], &[-1, 0, 1])]);
    check(Op::Binary(BinaryOp::Max), &[a, b], &[i64t(&[3], &[2, 2, 3])]);
}

#[test]
fn comparisons_produce_bool() {
    let a = f32t(&[3], &[1., 2., 3.]);
    let b = f32t(&[], &[2.]);
    check(Op::Binary(BinaryOp::Less), &[a.clone(), b.clone()], &[boolt(&[3], &[true, false, false])]);
    check(Op::Binary(BinaryOp::Greater), &[a.clone(), b.clone()], &[boolt(&[3], &[false, false, true])]);
    check(Op::Binary(BinaryOp::Equal), &[a, b], &[boolt(&[3], &[false, true, false])]);
    let ia = i64t(&[2], &[5, -1]);
    check(Op::Binary(BinaryOp::Equal), &[ia, i64t(&[1], &[-1])], &[boolt(&[2], &[false, true])]);
}

#[test]
fn where_broadcasts_condition_and_branches() {
    let cond = boolt(&[2, 1], &[true, false]);
    let a = i64t(&[2], &[1, 2]);
    let b = i64t(&[], &[-1]);
    check(Op::Where, &[cond, a, b], &[i64t(&[2, 2], &[1, 2, -1, -1])]);
}

// ---------------------------------------------------------------------------------------------

#[test]
fn softmax_over_one_axis_and_flattened() {
    let x = f32t(&[1, 2, 2], &[1., 2., 3., 4.]);
    // softmax(1, 3) = [1/(1+e²), e²/(1+e²)]; softmax(1, 2) = [1/(1+e), e/(1+e)].
    let (s13, s12) = (0.119_202_92_f32, 0.268_941_42_f32);
    // Tolerance: one f32 ulp of the hand-rounded constants.
    let axis1 = eval_f32(&Op::Softmax { axis: 1, flatten: false }, std::slice::from_ref(&x), &[1, 2, 2]);
    assert_close(&axis1, &[s13, s13, 1. - s13, 1. - s13], 1e-7);
    let axis2 = eval_f32(&Op::Softmax { axis: 2, flatten: false }, std::slice::from_ref(&x), &[1, 2, 2]);
    assert_close(&axis2, &[s12, 1. - s12, s12, 1. - s12], 1e-7);
    // Flattened from axis 1: softmax over all four values.
    let flat = eval_f32(&Op::Softmax { axis: 1, flatten: true }, &[x], &[1, 2, 2]);
    assert_close(&flat, &[0.032_058_603, 0.087_144_32, 0.236_882_82, 0.643_914_3], 1e-7);
}

#[test]
fn softmax_is_stable_for_large_inputs() {
    let x = f32t(&[2], &[1000., 1000.]);
    assert_eq!(eval_f32(&Op::Softmax { axis: 0, flatten: false }, &[x], &[2]), [0.5, 0.5]);
}

#[test]
fn reduce_mean_over_axes_with_and_without_keepdims() {
    let x = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let mean = |axes: Vec<usize>, keepdims| Op::Reduce { kind: ReduceKind::Mean, axes, keepdims };
    check(mean(vec![1], false), &[x.clone()], &[f32t(&[2], &[2., 5.])]);
    check(mean(vec![0], true), &[x.clone()], &[f32t(&[1, 3], &[2.5, 3.5, 4.5])]);
    check(mean(vec![0, 1], true), &[x.clone()], &[f32t(&[1, 1], &[3.5])]);
    check(mean(vec![], true), &[x.clone()], &[x]);
}

fn reduce(kind: ReduceKind, axes: &[usize]) -> Op {
    Op::Reduce { kind, axes: axes.to_vec(), keepdims: false }
}

#[test]
fn every_reduction_kind_over_rows() {
    use ReduceKind::*;
    let x = f32t(&[2, 3], &[1., -2., 3., 4., 5., -6.]);
    for (kind, want) in [
        (Sum, [2., 3.]),
        (Max, [3., 5.]),
        (Min, [-2., -6.]),
        (Prod, [-6., -120.]),
        (L1, [6., 15.]),
        (SumSquare, [14., 77.]),
    ] {
        check(reduce(kind, &[1]), &[x.clone()], &[f32t(&[2], &want)]);
    }
    check(reduce(L2, &[1]), &[f32t(&[2, 2], &[3., -4., 6., 8.])], &[f32t(&[2], &[5., 10.])]);
    // ln(1 + 3) both ways; f32 rounding of ln 3 and the result.
    let ln3 = 3f32.ln();
    assert_close(&eval_f32(&reduce(LogSum, &[0]), &[f32t(&[2], &[1., 3.])], &[]), &[4f32.ln()], 1e-7);
    assert_close(&eval_f32(&reduce(LogSumExp, &[0]), &[f32t(&[2], &[0., ln3])], &[]), &[4f32.ln()], 1e-7);
    // Stable for large inputs: 1000 + ln 2.
    assert_eq!(eval_f32(&reduce(LogSumExp, &[0]), &[f32t(&[2], &[1000., 1000.])], &[]), [1000.0 + 2f32.ln()]);
}

#[test]
fn reducing_no_axes_applies_the_per_element_part() {
    let x = f32t(&[3], &[-2., 0.5, 3.]);
    check(reduce(ReduceKind::SumSquare, &[]), &[x.clone()], &[f32t(&[3], &[4., 0.25, 9.])]);
    check(reduce(ReduceKind::L1, &[]), &[x.clone()], &[f32t(&[3], &[2., 0.5, 3.])]);
    check(reduce(ReduceKind::Max, &[]), &[x.clone()], &[x]);
}

#[test]
fn empty_groups_reduce_to_the_identity() {
    use ReduceKind::*;
    let x = f32t(&[2, 0], &[]);
    let inf = f32::INFINITY;
    for (kind, want) in [(Sum, 0.), (Mean, 0.), (Prod, 1.), (Max, -inf), (Min, inf), (L2, 0.), (LogSumExp, -inf)] {
        check(reduce(kind, &[1]), &[x.clone()], &[f32t(&[2], &[want; 2])]);
    }
    check(reduce(Max, &[1]), &[i64t(&[1, 0], &[])], &[i64t(&[1], &[i64::MIN])]);
}

#[test]
fn integer_reductions_are_exact() {
    use ReduceKind::*;
    let x = i64t(&[2, 2], &[3, -4, 5, 7]);
    for (kind, want) in [(Sum, [-1, 12]), (Max, [3, 7]), (Min, [-4, 5]), (Prod, [-12, 35]), (Mean, [0, 6])] {
        check(reduce(kind, &[1]), &[x.clone()], &[i64t(&[2], &want)]);
    }
    check(reduce(L1, &[1]), &[x.clone()], &[i64t(&[2], &[7, 12])]);
    check(reduce(SumSquare, &[1]), &[x], &[i64t(&[2], &[25, 74])]);
}

#[test]
fn arg_max_and_min_pick_the_first_or_last_extremum() {
    let x = f32t(&[2, 3], &[1., 3., 3., 2., 0., 2.]);
    let arg = |max, select_last_index| Op::ArgReduce { max, axis: 1, keepdims: true, select_last_index };
    check(arg(true, false), &[x.clone()], &[i64t(&[2, 1], &[1, 0])]);
    check(arg(true, true), &[x.clone()], &[i64t(&[2, 1], &[2, 2])]);
    check(arg(false, false), &[x.clone()], &[i64t(&[2, 1], &[0, 1])]);
    let along_rows = Op::ArgReduce { max: true, axis: 0, keepdims: false, select_last_index: false };
    check(along_rows, &[i64t(&[2, 2], &[5, -1, 4, 9])], &[i64t(&[2], &[0, 1])]);
}

#[test]
fn batch_norm_normalizes_over_axis_one() {
    // std = √(var + 1) = [2, 1].
    let x = f32t(&[1, 2, 1, 2], &[1., 2., 3., 4.]);
    let scale = f32t(&[2], &[1., 2.]);
    let bias = f32t(&[2], &[0., 1.]);
    let mean = f32t(&[2], &[1., 3.]);
    let var = f32t(&[2], &[3., 0.]);
    check(Op::BatchNorm { epsilon: 1.0 }, &[x, scale, bias, mean, var], &[f32t(&[1, 2, 1, 2], &[0., 0.5, 1., 3.])]);
}

// ---------------------------------------------------------------------------------------------

#[test]
fn gather_counts_negative_indices_from_the_end() {
    let data = f32t(&[3, 2], &[1., 2., 3., 4., 5., 6.]);
    check(Op::Gather { axis: 0 }, &[data.clone(), i64t(&[2], &[-1, 0])], &[f32t(&[2, 2], &[5., 6., 1., 2.])]);
    check(Op::Gather { axis: 1 }, &[data.clone(), i64t(&[1], &[-2])], &[f32t(&[3, 1], &[1., 3., 5.])]);
    check(Op::Gather { axis: 0 }, &[data, i64t(&[], &[1])], &[f32t(&[2], &[3., 4.])]);
}

#[test]
fn gather_out_of_range_index_is_an_error_not_a_panic() {
    let data = i64t(&[3], &[1, 2, 3]);
    let out = [TensorType::new(DType::I64, [1])];
    for bad in [3, -4, i64::MIN, i64::MAX] {
        let err = eval_err(&Op::Gather { axis: 0 }, &[data.clone(), i64t(&[1], &[bad])], &out);
        assert!(err.contains("out of range"), "{err}");
    }
}

#[test]
fn pad_modes_on_one_axis() {
    let x = f32t(&[3], &[1., 2., 3.]);
    let pad = |mode, value| Op::Pad { pads: vec![2, 2], mode, value };
    check(pad(PadMode::Constant, 9.0), &[x.clone()], &[f32t(&[7], &[9., 9., 1., 2., 3., 9., 9.])]);
    check(pad(PadMode::Reflect, 0.0), &[x.clone()], &[f32t(&[7], &[3., 2., 1., 2., 3., 2., 1.])]);
    check(pad(PadMode::Edge, 0.0), &[x.clone()], &[f32t(&[7], &[1., 1., 1., 2., 3., 3., 3.])]);
    check(pad(PadMode::Wrap, 0.0), &[x], &[f32t(&[7], &[2., 3., 1., 2., 3., 1., 2.])]);
}

#[test]
fn pad_reflect_2d_and_negative_pads_crop() {
    let x = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let reflect = Op::Pad { pads: vec![1, 1, 0, 0], mode: PadMode::Reflect, value: 0.0 };
    check(reflect, &[x.clone()], &[f32t(&[3, 4], &[5., 4., 5., 6., 2., 1., 2., 3., 5., 4., 5., 6.])]);
    let crop = Op::Pad { pads: vec![0, -1, -1, 1], mode: PadMode::Constant, value: 0.5 };
    check(crop, &[x], &[f32t(&[1, 3], &[2., 3., 0.5])]);
    let ints = Op::Pad { pads: vec![1, 0], mode: PadMode::Constant, value: 7.0 };
    check(ints, &[i64t(&[1], &[3])], &[i64t(&[2], &[7, 3])]);
}

#[test]
fn slice_with_negative_steps() {
    let x = i64t(&[5], &[0, 1, 2, 3, 4]);
    let slice = |start, end, step| Op::Slice { axes: vec![SliceAxis { axis: 0, start, end, step }] };
    check(slice(4, -1, -2), &[x.clone()], &[i64t(&[3], &[4, 2, 0])]);
    check(slice(3, 0, -1), &[x.clone()], &[i64t(&[3], &[3, 2, 1])]);
    check(slice(1, 5, 3), &[x.clone()], &[i64t(&[2], &[1, 4])]);
    check(slice(2, 2, 1), &[x], &[i64t(&[0], &[])]);
}

#[test]
fn slice_2d_inner_axis() {
    let x = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let op = Op::Slice { axes: vec![SliceAxis { axis: 1, start: 2, end: 0, step: -2 }] };
    check(op, &[x], &[f32t(&[2, 1], &[3., 6.])]);
}

#[test]
fn transpose_reshape_expand_concat_split() {
    let x = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    check(Op::Transpose { perm: vec![1, 0] }, &[x.clone()], &[f32t(&[3, 2], &[1., 4., 2., 5., 3., 6.])]);
    check(Op::Reshape { shape: vec![3, 1, 2] }, &[x.clone()], &[f32t(&[3, 1, 2], &[1., 2., 3., 4., 5., 6.])]);
    check(
        Op::Expand { shape: vec![2, 1, 3] },
        &[f32t(&[1, 3], &[1., 2., 3.])],
        &[f32t(&[2, 1, 3], &[1., 2., 3., 1., 2., 3.])],
    );
    // Expand is bidirectional: a 1 in `shape` keeps the input's dimension.
    check(
        Op::Expand { shape: vec![1, 2] },
        &[f32t(&[3, 1], &[1., 2., 3.])],
        &[f32t(&[3, 2], &[1., 1., 2., 2., 3., 3.])],
    );
    let y = f32t(&[2, 1], &[7., 8.]);
    check(Op::Concat { axis: 1 }, &[x.clone(), y], &[f32t(&[2, 4], &[1., 2., 3., 7., 4., 5., 6., 8.])]);
    check(
        Op::Split { axis: 1, sizes: vec![1, 2] },
        &[x],
        &[f32t(&[2, 1], &[1., 4.]), f32t(&[2, 2], &[2., 3., 5., 6.])],
    );
    check(Op::Concat { axis: 0 }, &[i64t(&[1], &[1]), i64t(&[2], &[2, 3])], &[i64t(&[3], &[1, 2, 3])]);
}

#[test]
fn cast_f32_to_i64_truncates_toward_zero() {
    let x = f32t(&[6], &[-2.7, -0.5, 0.5, 2.7, 3.0, -0.0]);
    check(Op::Cast { to: DType::I64 }, &[x.clone()], &[i64t(&[6], &[-2, 0, 0, 2, 3, 0])]);
    check(Op::Cast { to: DType::Bool }, &[x], &[boolt(&[6], &[true, true, true, true, true, false])]);
}

#[test]
fn cast_between_i64_bool_and_f32() {
    check(Op::Cast { to: DType::F32 }, &[i64t(&[2], &[-3, 5])], &[f32t(&[2], &[-3., 5.])]);
    check(Op::Cast { to: DType::Bool }, &[i64t(&[2], &[0, 5])], &[boolt(&[2], &[false, true])]);
    check(Op::Cast { to: DType::F32 }, &[boolt(&[2], &[true, false])], &[f32t(&[2], &[1., 0.])]);
    check(Op::Cast { to: DType::I64 }, &[boolt(&[2], &[true, false])], &[i64t(&[2], &[1, 0])]);
}

#[test]
fn cast_f32_to_8_bit_truncates_and_saturates_and_nan_becomes_zero() {
    let x = f32t(&[7], &[f32::NAN, -300.0, -128.9, -0.9, 127.9, 255.9, 1e10]);
    let u = Tensor::from_u8([7], vec![0, 0, 0, 0, 127, 255, 255]).expect("7");
    let i = Tensor::from_i8([7], vec![0, -128, -128, 0, 127, 127, 127]).expect("7");
    check(Op::Cast { to: DType::U8 }, &[x.clone()], &[u]);
    check(Op::Cast { to: DType::I8 }, &[x], &[i]);
}

#[test]
fn cast_between_integers_keeps_the_low_bits_and_widens_by_signedness() {
    let x = Tensor::from_i32([4], vec![-1, 255, 256, -129]).expect("4");
    check(Op::Cast { to: DType::U8 }, &[x.clone()], &[Tensor::from_u8([4], vec![255, 255, 0, 127]).expect("4")]);
    check(Op::Cast { to: DType::I8 }, &[x], &[Tensor::from_i8([4], vec![-1, -1, 0, 127]).expect("4")]);
    let u = Tensor::from_u8([2], vec![200, 5]).expect("2");
    check(Op::Cast { to: DType::I32 }, &[u.clone()], &[Tensor::from_i32([2], vec![200, 5]).expect("2")]);
    check(Op::Cast { to: DType::I8 }, &[u], &[Tensor::from_i8([2], vec![-56, 5]).expect("2")]);
    let i = Tensor::from_i8([2], vec![-56, 5]).expect("2");
    check(Op::Cast { to: DType::I64 }, &[i.clone()], &[i64t(&[2], &[-56, 5])]);
    check(Op::Cast { to: DType::F32 }, &[i], &[f32t(&[2], &[-56., 5.])]);
}

#[test]
fn quantize_rounds_half_to_even_adds_the_zero_point_and_saturates() {
    // x / 0.5: -3, -2.5 → -2, -1.5 → -2, -0.5 → -0, 0.5 → 0, 1.5 → 2, 2.5 → 2, 200, NaN, ∞.
    let x = f32t(&[10], &[-1.5, -1.25, -0.75, -0.25, 0.25, 0.75, 1.25, 100.0, f32::NAN, f32::INFINITY]);
    let p = QuantParams::per_tensor(0.5, 10);
    let u = Tensor::from_u8([10], vec![7, 8, 8, 10, 10, 12, 12, 210, 10, 255]).expect("10");
    check(Op::Quantize { params: p, to: DType::U8 }, &[x.clone()], &[u]);
    let p = QuantParams::per_tensor(0.5, -100);
    let i = Tensor::from_i8([10], vec![-103, -102, -102, -100, -100, -98, -98, 100, -100, 127]).expect("10");
    check(Op::Quantize { params: p, to: DType::I8 }, &[x], &[i]);
}

#[test]
fn quantize_divides_in_f32_as_onnx_specifies() {
    // 0.35f32 / 0.1f32 rounds to exactly 3.5 in f32, so half to even gives 4; the same
    // quotient in f64 is 3.49999988… and would give 3. 0.3f32 / 0.1f32 is exactly 3.
    let x = f32t(&[2], &[0.35, 0.3]);
    let p = QuantParams::per_tensor(0.1, 0);
    check(Op::Quantize { params: p, to: DType::U8 }, &[x], &[Tensor::from_u8([2], vec![4, 3]).expect("2")]);
}

#[test]
fn per_axis_params_follow_the_axis_index() {
    // Axis 1 of [2, 3, 2]: channel c has scale 2^c and zero point 10·c.
    let p = QuantParams { axis: Some(1), scales: vec![1.0, 2.0, 4.0], zero_points: vec![0, 10, 20] };
    let x: Vec<f32> = (0..12).map(|i| i as f32 * 4.0).collect();
    let want: Vec<u8> = (0..12)
        .map(|i| {
            let c = (i / 2) % 3;
            ((i as f32 * 4.0) / [1.0, 2.0, 4.0][c]).round_ties_even() as u8 + 10 * c as u8
        })
        .collect();
    let q = Tensor::from_u8([2, 3, 2], want.clone()).expect("12");
    check(Op::Quantize { params: p.clone(), to: DType::U8 }, &[f32t(&[2, 3, 2], &x)], &[q.clone()]);
    // Every value is representable, so dequantizing gives x back exactly.
    check(Op::Dequantize(p), &[q], &[f32t(&[2, 3, 2], &x)]);
}

#[test]
fn dequantize_subtracts_the_zero_point_exactly_for_every_integer_type() {
    let p = QuantParams::per_tensor(0.25, -128);
    let i = Tensor::from_i8([3], vec![-128, 0, 127]).expect("3");
    check(Op::Dequantize(p), &[i], &[f32t(&[3], &[0.0, 32.0, 63.75])]);
    let p = QuantParams::per_tensor(0.5, 255);
    let u = Tensor::from_u8([2], vec![0, 255]).expect("2");
    check(Op::Dequantize(p), &[u], &[f32t(&[2], &[-127.5, 0.0])]);
    let p = QuantParams::per_tensor(2.0, 0);
    let b = Tensor::from_i32([2], vec![i32::MIN, i32::MAX]).expect("2");
    check(Op::Dequantize(p), &[b], &[f32t(&[2], &[-4294967296.0, 4294967296.0])]);
}

// ---------------------------------------------------------------------------------------------

#[test]
fn output_type_disagreeing_with_inference_is_an_error() {
    let x = f32t(&[2], &[1., 2.]);
    let err = eval_err(&Op::Unary(UnaryOp::Relu), &[x], &[TensorType::f32([3])]);
    assert!(err.contains("shape inference"), "{err}");
}

#[test]
fn wrong_input_count_is_an_error() {
    let err = eval_err(&Op::MatMul, &[f32t(&[1], &[1.])], &[TensorType::f32([])]);
    assert!(err.contains("inputs"), "{err}");
}

#[test]
fn malformed_conv_is_an_error_not_a_panic() {
    let x = f32t(&[1, 1, 3], &[1., 2., 3.]);
    let out = [TensorType::f32([1, 1, 1])];
    // Weight shape does not match the kernel; group does not divide channels; kernel too big.
    let op = Op::Conv(conv_attrs(&[2], &[1], &[1], &[0, 0], 1));
    assert!(eval_err(&op, &[x.clone(), f32t(&[1, 1, 3], &[1., 1., 1.])], &out).contains("w has shape"));
    let op = Op::Conv(conv_attrs(&[3], &[1], &[1], &[0, 0], 2));
    assert!(eval_err(&op, &[x.clone(), f32t(&[1, 1, 3], &[1., 1., 1.])], &out).contains("group"));
    let op = Op::Conv(conv_attrs(&[4], &[1], &[1], &[0, 0], 1));
    assert!(eval_err(&op, &[x, f32t(&[1, 1, 4], &[1.; 4])], &out).contains("smaller than"));
}
