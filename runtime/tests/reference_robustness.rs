//! `eval_op` reports malformed ops and operands as errors: random, mostly invalid attributes
//! and shapes must never panic.

use cnnc_ir::{
    ConvAttrs, ConvTransposeAttrs, CoordTransform, NearestMode, Op, PadMode, PoolAttrs, ReduceKind, ResizeAttrs,
    ResizeMode, SliceAxis, Tensor, TensorType,
};
use cnnc_runtime::eval_op;
use proptest::prelude::*;

fn tensor(shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(shape, (0..n).map(|i| i as f32).collect()).expect("tensor")
}

/// Runs `op`; any `Ok`/`Err` is fine, a panic fails the test.
fn survives(op: &Op, inputs: &[Tensor]) {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let _ = eval_op(op, &refs, &[TensorType::f32([1])]);
}

fn small_shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..4, 0..5)
}

fn usizes(len: std::ops::Range<usize>, max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..max, len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn conv_with_arbitrary_attributes_does_not_panic(
        x in small_shape(), w in small_shape(), kernel in usizes(0..4, 4), strides in usizes(0..4, 3),
        dilations in usizes(0..4, 3), pads in usizes(0..8, 3), group in 0usize..3, bias: bool,
        output_padding in usizes(0..4, 3),
    ) {
        let mut inputs = vec![tensor(&x), tensor(&w)];
        if bias {
            inputs.push(tensor(&w[..w.len().min(1)]));
        }
        let attrs = ConvAttrs::new(&kernel).strides(&strides).dilations(&dilations).pads(&pads).group(group);
        survives(&Op::Conv(attrs), &inputs);
        let attrs = ConvTransposeAttrs { kernel: kernel.clone(), strides: strides.clone(), dilations: dilations.clone(), pads: pads.clone(), output_padding, group };
        survives(&Op::ConvTranspose(attrs), &inputs);
        let pool = PoolAttrs { kernel, strides, dilations, pads, ceil_mode: bias };
        survives(&Op::MaxPool(pool.clone()), &inputs[..1]);
        survives(&Op::AvgPool { pool, count_include_pad: group == 1 }, &inputs[..1]);
        survives(&Op::GlobalAvgPool, &inputs[..1]);
        survives(&Op::MatMul, &inputs[..2]);
        survives(&Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: bias, trans_b: group == 1 }, &inputs);
        survives(&Op::BatchNorm { epsilon: 1e-5 }, &[inputs[0].clone(), inputs[1].clone(), inputs[1].clone(), inputs[1].clone(), inputs[1].clone()]);
    }

    #[test]
    fn shape_ops_with_arbitrary_attributes_do_not_panic(
        x in small_shape(), axis in 0usize..5, start in -3i64..8, end in -3i64..8, step in -3i64..4,
        pads in prop::collection::vec(-4i64..4, 0..9), mode in 0usize..4, idx in -6i64..6,
        perm in usizes(0..5, 5), sizes in usizes(0..3, 4),
    ) {
        let t = tensor(&x);
        survives(&Op::Slice { axes: vec![SliceAxis { axis, start, end, step }] }, std::slice::from_ref(&t));
        let mode = [PadMode::Constant, PadMode::Reflect, PadMode::Edge, PadMode::Wrap][mode];
        survives(&Op::Pad { pads, mode, value: 1.0 }, std::slice::from_ref(&t));
        let indices = Tensor::from_i64([1], vec![idx]).expect("tensor");
        survives(&Op::Gather { axis }, &[t.clone(), indices]);
        survives(&Op::Transpose { perm: perm.clone() }, std::slice::from_ref(&t));
        survives(&Op::Reshape { shape: perm.clone() }, std::slice::from_ref(&t));
        survives(&Op::Expand { shape: perm.clone() }, std::slice::from_ref(&t));
        survives(&Op::Split { axis, sizes }, std::slice::from_ref(&t));
        survives(&Op::Concat { axis }, &[t.clone(), tensor(&perm)]);
        survives(&Op::Softmax { axis, flatten: step > 0 }, std::slice::from_ref(&t));
        let kind = ReduceKind::ALL[(idx + 6) as usize % ReduceKind::ALL.len()];
        survives(&Op::Reduce { kind, axes: perm, keepdims: step > 0 }, std::slice::from_ref(&t));
        let arg = Op::ArgReduce { max: step > 0, axis, keepdims: start > 0, select_last_index: end > 0 };
        survives(&arg, std::slice::from_ref(&t));
    }

    #[test]
    fn resize_with_arbitrary_attributes_does_not_panic(
        x in small_shape(), out in small_shape(), scales in prop::collection::vec(-1.0f32..4.0, 0..5),
        mode in 0usize..4, coord in 0usize..7, nearest in 0usize..4,
        roi in prop::collection::vec(-2.0f32..3.0, 0..11), a in -1.0f32..0.0,
    ) {
        let crop = CoordTransform::TfCropAndResize { roi, extrapolation: 0.5 };
        let coord = [
            CoordTransform::HalfPixel, CoordTransform::HalfPixelSymmetric, CoordTransform::PytorchHalfPixel,
            CoordTransform::AlignCorners, CoordTransform::Asymmetric, CoordTransform::TfHalfPixelForNn, crop,
        ][coord].clone();
        let nearest = [NearestMode::RoundPreferFloor, NearestMode::RoundPreferCeil, NearestMode::Floor, NearestMode::Ceil][nearest];
        let mode = [
            ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic { a, exclude_outside: false },
            ResizeMode::Cubic { a, exclude_outside: true },
        ][mode];
        survives(&Op::Resize(ResizeAttrs { mode, coord, nearest, scales, out_shape: out }), &[tensor(&x)]);
    }
}
