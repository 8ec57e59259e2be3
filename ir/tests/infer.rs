//! Shape and dtype inference, through `infer_types` only.

use cnnc_ir::{
    BinaryOp, ConvAttrs, ConvTransposeAttrs, CoordTransform, DType, InferError, NearestMode, Op, PadMode, PoolAttrs,
    ReduceKind, ResizeAttrs, ResizeMode, SliceAxis, TensorType, UnaryOp, broadcast_shapes, infer_types,
};
use proptest::prelude::*;

fn infer(op: &Op, inputs: impl Into<Vec<TensorType>>) -> Result<Vec<TensorType>, InferError> {
    let inputs = inputs.into();
    let refs: Vec<&TensorType> = inputs.iter().collect();
    infer_types(op, &refs)
}

/// The single output type of a well-typed op.
fn infer_one(op: &Op, inputs: impl Into<Vec<TensorType>>) -> TensorType {
    let inputs = inputs.into();
    match infer(op, inputs.clone()) {
        Ok(mut types) if types.len() == 1 => types.remove(0),
        other => panic!("{} on {inputs:?}: expected one output type, got {other:?}", op.name()),
    }
}

/// The reason of an inference error (the op name is checked too).
fn infer_err(op: &Op, inputs: impl Into<Vec<TensorType>>) -> String {
    let inputs = inputs.into();
    match infer(op, inputs.clone()) {
        Err(e) => {
            assert_eq!(e.op, op.name());
            e.reason
        }
        Ok(types) => panic!("{} on {inputs:?}: expected an error, got {types:?}", op.name()),
    }
}

fn f32s(shape: &[usize]) -> TensorType {
    TensorType::f32(shape)
}

fn conv(kernel: [usize; 2], strides: [usize; 2], dilations: [usize; 2], pads: [usize; 4], group: usize) -> Op {
    Op::Conv(ConvAttrs::new(&kernel).strides(&strides).dilations(&dilations).pads(&pads).group(group))
}

fn max_pool(kernel: usize, stride: usize, pads: [usize; 2], ceil_mode: bool) -> Op {
    Op::MaxPool(PoolAttrs {
        kernel: vec![kernel],
        strides: vec![stride],
        dilations: vec![1],
        pads: pads.to_vec(),
        ceil_mode,
    })
}

#[test]
fn conv_output_shape_follows_pads_strides_and_dilations() {
    let x = f32s(&[1, 3, 32, 32]);
    let w = f32s(&[8, 3, 3, 3]);
    let same = conv([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1);
    assert_eq!(infer_one(&same, [x.clone(), w.clone()]), f32s(&[1, 8, 32, 32]));
    let strided = conv([3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 1);
    assert_eq!(infer_one(&strided, [x.clone(), w.clone()]), f32s(&[1, 8, 16, 16]));
    // A dilation of 2 makes the 3-tap kernel span 5 inputs.
    let dilated = conv([3, 3], [1, 1], [2, 2], [0, 0, 0, 0], 1);
    assert_eq!(infer_one(&dilated, [x.clone(), w.clone()]), f32s(&[1, 8, 28, 28]));
    // pads are [h_begin, w_begin, h_end, w_end].
    let asymmetric = conv([3, 3], [1, 1], [1, 1], [0, 1, 2, 3], 1);
    assert_eq!(infer_one(&asymmetric, [x, w]), f32s(&[1, 8, 32, 34]));
}

#[test]
fn grouped_conv_takes_output_channels_from_the_weight() {
    let x = f32s(&[2, 8, 10, 10]);
    let grouped = conv([3, 3], [1, 1], [1, 1], [0, 0, 0, 0], 4);
    assert_eq!(infer_one(&grouped, [x.clone(), f32s(&[12, 2, 3, 3]), f32s(&[12])]), f32s(&[2, 12, 8, 8]));
    let depthwise = conv([3, 3], [1, 1], [1, 1], [0, 0, 0, 0], 8);
    assert_eq!(infer_one(&depthwise, [x, f32s(&[8, 1, 3, 3])]), f32s(&[2, 8, 8, 8]));
}

#[test]
fn conv_channel_mismatch_names_the_numbers() {
    let op = conv([3, 3], [1, 1], [1, 1], [0, 0, 0, 0], 1);
    let reason = infer_err(&op, [f32s(&[1, 8, 5, 5]), f32s(&[4, 3, 3, 3])]);
    assert_eq!(reason, "weight has 3 input channels per group but input has 8 channels with group 1");

    let grouped = conv([3, 3], [1, 1], [1, 1], [0, 0, 0, 0], 3);
    let reason = infer_err(&grouped, [f32s(&[1, 8, 5, 5]), f32s(&[3, 2, 3, 3])]);
    assert!(reason.contains("8 channels") && reason.contains("group 3"), "{reason}");

    let reason = infer_err(&grouped, [f32s(&[1, 6, 5, 5]), f32s(&[4, 2, 3, 3])]);
    assert!(reason.contains("4 output channels") && reason.contains("group 3"), "{reason}");
}

#[test]
fn conv_bias_must_have_one_value_per_output_channel() {
    let op = conv([1, 1], [1, 1], [1, 1], [0, 0, 0, 0], 1);
    let reason = infer_err(&op, [f32s(&[1, 2, 4, 4]), f32s(&[6, 2, 1, 1]), f32s(&[2])]);
    assert!(reason.contains("[2]") && reason.contains("[6]"), "{reason}");
}

#[test]
fn conv_rejects_a_kernel_wider_than_the_padded_input() {
    let op = conv([5, 5], [1, 1], [1, 1], [1, 1, 0, 0], 1);
    let reason = infer_err(&op, [f32s(&[1, 1, 3, 8]), f32s(&[1, 1, 5, 5])]);
    assert!(reason.contains("padded input size 4") && reason.contains("extent 5"), "{reason}");
}

#[test]
fn conv_rejects_attributes_of_the_wrong_length() {
    let op = Op::Conv(ConvAttrs::new(&[3, 3]).strides(&[1]));
    let reason = infer_err(&op, [f32s(&[1, 1, 5, 5]), f32s(&[1, 1, 3, 3])]);
    assert!(reason.contains("strides has 1 entries, expected 2"), "{reason}");
}

#[test]
fn conv_transpose_output_shape_includes_output_padding() {
    let op = |group, output_padding: [usize; 2]| {
        Op::ConvTranspose(ConvTransposeAttrs {
            kernel: vec![3, 3],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            output_padding: output_padding.to_vec(),
            group,
        })
    };
    // 2·(5−1) + 1 + 3 − 1 − 1 = 10
    let x = f32s(&[1, 4, 5, 5]);
    assert_eq!(infer_one(&op(1, [1, 1]), [x.clone(), f32s(&[4, 2, 3, 3])]), f32s(&[1, 2, 10, 10]));
    assert_eq!(infer_one(&op(2, [0, 1]), [x.clone(), f32s(&[4, 3, 3, 3]), f32s(&[6])]), f32s(&[1, 6, 9, 10]));
    let reason = infer_err(&op(1, [0, 0]), [x, f32s(&[3, 2, 3, 3])]);
    assert!(reason.contains("3 input channels") && reason.contains("4 channels"), "{reason}");
}

#[test]
fn ceil_mode_pooling_drops_a_window_that_starts_in_the_end_padding() {
    // in 4, kernel 2, stride 3, pads (0, 2): windows start at 0, 3 and 6; 6 lies in the padding.
    let x = f32s(&[1, 1, 4]);
    assert_eq!(infer_one(&max_pool(2, 3, [0, 2], true), [x.clone()]), f32s(&[1, 1, 2]));
    assert_eq!(infer_one(&max_pool(2, 3, [0, 2], false), [x]), f32s(&[1, 1, 2]));
}

#[test]
fn ceil_mode_pooling_keeps_a_partial_window_that_starts_inside_the_input() {
    // in 6, kernel 3, stride 2: floor gives 2 windows, ceil adds one starting at 4.
    let x = f32s(&[1, 1, 6]);
    assert_eq!(infer_one(&max_pool(3, 2, [0, 0], false), [x.clone()]), f32s(&[1, 1, 2]));
    assert_eq!(infer_one(&max_pool(3, 2, [0, 0], true), [x.clone()]), f32s(&[1, 1, 3]));
    let avg = Op::AvgPool {
        pool: PoolAttrs { kernel: vec![2], strides: vec![2], dilations: vec![1], pads: vec![1, 1], ceil_mode: true },
        count_include_pad: false,
    };
    assert_eq!(infer_one(&avg, [x]), f32s(&[1, 1, 4]));
}

#[test]
fn global_pooling_keeps_batch_and_channels() {
    assert_eq!(infer_one(&Op::GlobalAvgPool, [f32s(&[2, 5, 7, 9])]), f32s(&[2, 5, 1, 1]));
    assert_eq!(infer_one(&Op::GlobalMaxPool, [f32s(&[2, 5, 7])]), f32s(&[2, 5, 1]));
}

#[test]
fn batch_norm_parameters_must_match_channels() {
    let op = Op::BatchNorm { epsilon: 1e-5 };
    let x = f32s(&[1, 3, 4, 4]);
    let c = f32s(&[3]);
    assert_eq!(infer_one(&op, [x.clone(), c.clone(), c.clone(), c.clone(), c.clone()]), x);
    let reason = infer_err(&op, [x, c.clone(), c.clone(), f32s(&[4]), c]);
    assert!(reason.contains("mean") && reason.contains("[4]") && reason.contains("3 channels"), "{reason}");
}

#[test]
fn matmul_broadcasts_batch_dimensions_and_promotes_vectors() {
    let cases: [(&[usize], &[usize], &[usize]); 6] = [
        (&[3, 4], &[4, 5], &[3, 5]),
        (&[2, 1, 3, 4], &[5, 4, 6], &[2, 5, 3, 6]),
        (&[4], &[3, 4, 6], &[3, 6]),
        (&[2, 3, 4], &[4], &[2, 3]),
        (&[4], &[4], &[]),
        (&[1, 3, 4], &[7, 4, 2], &[7, 3, 2]),
    ];
    for (a, b, out) in cases {
        assert_eq!(infer_one(&Op::MatMul, [f32s(a), f32s(b)]), f32s(out), "{a:?} @ {b:?}");
    }
}

#[test]
fn matmul_rejects_mismatched_inner_and_batch_dimensions() {
    let reason = infer_err(&Op::MatMul, [f32s(&[3, 4]), f32s(&[5, 6])]);
    assert!(reason.contains("4 columns") && reason.contains("5 rows"), "{reason}");
    let reason = infer_err(&Op::MatMul, [f32s(&[2, 3, 4]), f32s(&[3, 4, 6])]);
    assert!(reason.contains("[2]") && reason.contains("[3]"), "{reason}");
}

#[test]
fn gemm_applies_transposes_and_broadcasts_c() {
    let op = |trans_a, trans_b| Op::Gemm { alpha: 1.0, beta: 1.0, trans_a, trans_b };
    let a = f32s(&[4, 3]);
    assert_eq!(infer_one(&op(true, false), [a.clone(), f32s(&[4, 5]), f32s(&[5])]), f32s(&[3, 5]));
    assert_eq!(infer_one(&op(false, true), [a.clone(), f32s(&[5, 3]), f32s(&[4, 1])]), f32s(&[4, 5]));
    let reason = infer_err(&op(false, false), [a.clone(), f32s(&[4, 5])]);
    assert!(reason.contains("[4, 3]") && reason.contains("[4, 5]"), "{reason}");
    let reason = infer_err(&op(false, true), [a, f32s(&[5, 3]), f32s(&[2, 5])]);
    assert!(reason.contains("C has shape [2, 5]"), "{reason}");
}

#[test]
fn broadcast_shapes_follows_numpy() {
    assert_eq!(broadcast_shapes(&[2, 1, 3], &[4, 1]), Some(vec![2, 4, 3]));
    assert_eq!(broadcast_shapes(&[], &[3]), Some(vec![3]));
    assert_eq!(broadcast_shapes(&[0, 1], &[1, 5]), Some(vec![0, 5]));
    assert_eq!(broadcast_shapes(&[2, 3], &[4]), None);
    assert_eq!(broadcast_shapes(&[0], &[2]), None);
}

#[test]
fn binary_ops_report_incompatible_shapes() {
    let reason = infer_err(&Op::Binary(BinaryOp::Add), [f32s(&[2, 3]), f32s(&[4])]);
    assert_eq!(reason, "shapes [2, 3] and [4] do not broadcast");
}

#[test]
fn binary_ops_need_equal_dtypes_and_comparisons_give_bool() {
    let i = TensorType::new(DType::I64, [3]);
    assert_eq!(infer_one(&Op::Binary(BinaryOp::Mul), [i.clone(), i.clone()]), i);
    let reason = infer_err(&Op::Binary(BinaryOp::Add), [f32s(&[3]), i.clone()]);
    assert!(reason.contains("f32") && reason.contains("i64"), "{reason}");
    let cmp = infer_one(&Op::Binary(BinaryOp::Less), [f32s(&[2, 1]), f32s(&[3])]);
    assert_eq!(cmp, TensorType::new(DType::Bool, [2, 3]));
    let b = TensorType::new(DType::Bool, [3]);
    assert!(infer(&Op::Binary(BinaryOp::Equal), [b.clone(), b.clone()]).is_ok());
    assert!(infer(&Op::Binary(BinaryOp::Add), [b.clone(), b]).is_err());
}

#[test]
fn prelu_slope_broadcasts_to_the_input_only() {
    let op = Op::Binary(BinaryOp::PRelu);
    assert_eq!(infer_one(&op, [f32s(&[1, 3, 4, 4]), f32s(&[3, 1, 1])]), f32s(&[1, 3, 4, 4]));
    assert!(infer(&op, [f32s(&[3, 1]), f32s(&[3, 4])]).is_err());
}

#[test]
fn where_needs_a_bool_condition_and_broadcasts_all_three() {
    let cond = TensorType::new(DType::Bool, [2, 1]);
    assert_eq!(infer_one(&Op::Where, [cond.clone(), f32s(&[3]), f32s(&[1, 1])]), f32s(&[2, 3]));
    let reason = infer_err(&Op::Where, [f32s(&[2, 1]), f32s(&[3]), f32s(&[3])]);
    assert!(reason.contains("condition has dtype f32"), "{reason}");
}

#[test]
fn unary_ops_take_f32_only() {
    let op = Op::Unary(UnaryOp::Clip { min: 0.0, max: 6.0 });
    assert_eq!(infer_one(&op, [f32s(&[2, 2])]), f32s(&[2, 2]));
    let reason = infer_err(&op, [TensorType::new(DType::I64, [2])]);
    assert_eq!(reason, "input has dtype i64, expected f32");
}

#[test]
fn slice_lengths_count_negative_steps_correctly() {
    let x = f32s(&[10, 6]);
    let slice = |axes: &[(usize, i64, i64, i64)]| Op::Slice {
        axes: axes.iter().map(|&(axis, start, end, step)| SliceAxis { axis, start, end, step }).collect(),
    };
    // 9, 7, 5, 3, 1 and 5, 2.
    assert_eq!(infer_one(&slice(&[(0, 9, -1, -2), (1, 5, 1, -3)]), [x.clone()]), f32s(&[5, 2]));
    assert_eq!(infer_one(&slice(&[(1, 1, 6, 2)]), [x.clone()]), f32s(&[10, 3]));
    assert_eq!(infer_one(&slice(&[(0, 4, 4, 1)]), [x.clone()]), f32s(&[0, 6]));
    let reason = infer_err(&slice(&[(1, 0, 8, 1)]), [x.clone()]);
    assert!(reason.contains("outside 0..6"), "{reason}");
    assert!(infer_err(&slice(&[(0, 0, 1, 0)]), [x.clone()]).contains("step is 0"));
    assert!(infer_err(&slice(&[(2, 0, 1, 1)]), [x]).contains("axis 2 is out of range"));
}

#[test]
fn gather_replaces_the_axis_by_the_index_shape() {
    let op = Op::Gather { axis: 1 };
    let indices = TensorType::new(DType::I64, [2, 3]);
    assert_eq!(infer_one(&op, [f32s(&[4, 5, 6]), indices]), f32s(&[4, 2, 3, 6]));
    let reason = infer_err(&op, [f32s(&[4, 5, 6]), f32s(&[2])]);
    assert!(reason.contains("indices has dtype f32"), "{reason}");
}

#[test]
fn expand_output_is_the_broadcast_of_input_and_shape() {
    assert_eq!(infer_one(&Op::Expand { shape: vec![2, 1, 4] }, [f32s(&[3, 1])]), f32s(&[2, 3, 4]));
    assert!(infer(&Op::Expand { shape: vec![2] }, [f32s(&[3])]).is_err());
}

#[test]
fn reshape_needs_equal_element_counts() {
    assert_eq!(infer_one(&Op::Reshape { shape: vec![6, 4] }, [f32s(&[2, 3, 4])]), f32s(&[6, 4]));
    let reason = infer_err(&Op::Reshape { shape: vec![5, 5] }, [f32s(&[2, 3, 4])]);
    assert!(reason.contains("24 elements") && reason.contains("25 elements"), "{reason}");
}

#[test]
fn transpose_needs_a_permutation_of_the_axes() {
    assert_eq!(infer_one(&Op::Transpose { perm: vec![0, 2, 3, 1] }, [f32s(&[1, 2, 3, 4])]), f32s(&[1, 3, 4, 2]));
    assert!(infer(&Op::Transpose { perm: vec![0, 0, 1] }, [f32s(&[1, 2, 3])]).is_err());
    assert!(infer(&Op::Transpose { perm: vec![1, 0] }, [f32s(&[1, 2, 3])]).is_err());
}

#[test]
fn concat_and_split_add_and_divide_the_axis() {
    let cat = infer_one(&Op::Concat { axis: 1 }, [f32s(&[1, 2, 5]), f32s(&[1, 3, 5])]);
    assert_eq!(cat, f32s(&[1, 5, 5]));
    assert!(infer(&Op::Concat { axis: 1 }, [f32s(&[1, 2, 5]), f32s(&[1, 3, 4])]).is_err());
    let split = infer(&Op::Split { axis: 1, sizes: vec![2, 3] }, [cat.clone()]);
    assert_eq!(split, Ok(vec![f32s(&[1, 2, 5]), f32s(&[1, 3, 5])]));
    let reason = infer_err(&Op::Split { axis: 1, sizes: vec![2, 2] }, [cat]);
    assert!(reason.contains("sum to 4") && reason.contains("size 5"), "{reason}");
}

#[test]
fn pad_adds_begin_and_end_and_rejects_negative_sizes() {
    let op = |pads: Vec<i64>, mode| Op::Pad { pads, mode, value: 0.0 };
    assert_eq!(infer_one(&op(vec![0, 1, 0, -2], PadMode::Constant), [f32s(&[3, 4])]), f32s(&[3, 3]));
    let reason = infer_err(&op(vec![0, -3, 0, -2], PadMode::Constant), [f32s(&[3, 4])]);
    assert!(reason.contains("negative"), "{reason}");
    assert!(infer(&op(vec![0, 4, 0, 0], PadMode::Reflect), [f32s(&[3, 4])]).is_err());
    assert!(infer(&op(vec![0, 3, 0, 0], PadMode::Reflect), [f32s(&[3, 4])]).is_ok());
}

#[test]
fn reduce_keeps_or_drops_reduced_axes() {
    let x = f32s(&[2, 3, 4, 5]);
    let keep = Op::Reduce { kind: ReduceKind::Mean, axes: vec![2, 3], keepdims: true };
    assert_eq!(infer_one(&keep, [x.clone()]), f32s(&[2, 3, 1, 1]));
    let drop = Op::Reduce { kind: ReduceKind::LogSumExp, axes: vec![1], keepdims: false };
    assert_eq!(infer_one(&drop, [x.clone()]), f32s(&[2, 4, 5]));
    assert!(infer(&Op::Reduce { kind: ReduceKind::Sum, axes: vec![4], keepdims: true }, [x]).is_err());
}

#[test]
fn integer_reductions_keep_i64_and_float_only_kinds_reject_it() {
    let x = TensorType::new(DType::I64, [2, 3]);
    let sum = Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdims: false };
    assert_eq!(infer_one(&sum, [x.clone()]), TensorType::new(DType::I64, [2]));
    let l2 = Op::Reduce { kind: ReduceKind::L2, axes: vec![1], keepdims: false };
    assert!(infer_err(&l2, [x]).contains("expected f32"));
}

#[test]
fn arg_reduce_gives_i64_indices_and_rejects_an_empty_axis() {
    let op = |axis, keepdims| Op::ArgReduce { max: true, axis, keepdims, select_last_index: false };
    assert_eq!(infer_one(&op(1, false), [f32s(&[2, 3, 4])]), TensorType::new(DType::I64, [2, 4]));
    assert_eq!(infer_one(&op(2, true), [f32s(&[2, 3, 4])]), TensorType::new(DType::I64, [2, 3, 1]));
    assert!(infer(&op(3, true), [f32s(&[2, 3, 4])]).is_err());
    assert!(infer(&op(1, true), [f32s(&[2, 0, 4])]).is_err());
}

#[test]
fn crop_and_resize_needs_a_start_and_end_per_axis() {
    let op = |roi: Vec<f32>| {
        Op::Resize(ResizeAttrs {
            mode: ResizeMode::Cubic { a: -0.75, exclude_outside: false },
            coord: CoordTransform::TfCropAndResize { roi, extrapolation: 0.0 },
            nearest: NearestMode::RoundPreferFloor,
            scales: vec![2.0, 2.0],
            out_shape: vec![4, 6],
        })
    };
    assert_eq!(infer_one(&op(vec![0.0, 0.25, 1.0, 0.75]), [f32s(&[2, 3])]), f32s(&[4, 6]));
    assert!(infer_err(&op(vec![0.25, 0.75]), [f32s(&[2, 3])]).contains("roi has 2 entries, expected 4"));
}

#[test]
fn softmax_and_cast_keep_the_shape() {
    let x = f32s(&[2, 3]);
    assert_eq!(infer_one(&Op::Softmax { axis: 1, flatten: false }, [x.clone()]), x);
    assert!(infer(&Op::Softmax { axis: 2, flatten: true }, [x.clone()]).is_err());
    assert_eq!(infer_one(&Op::Cast { to: DType::I64 }, [x]), TensorType::new(DType::I64, [2, 3]));
}

#[test]
fn wrong_input_count_and_source_ops_are_errors() {
    assert_eq!(infer_err(&Op::MatMul, [f32s(&[2, 2])]), "expects 2 input(s), got 1");
    assert!(infer_err(&Op::Concat { axis: 0 }, []).contains("at least 1"));
    assert!(infer(&Op::Input { index: 0 }, []).is_err());
}

fn arb_shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..6, 0..5)
}

fn arb_type() -> impl Strategy<Value = TensorType> {
    (prop::sample::select(vec![DType::F32, DType::I64, DType::Bool]), arb_shape())
        .prop_map(|(dtype, shape)| TensorType::new(dtype, shape))
}

fn arb_op() -> impl Strategy<Value = Op> {
    let small = || prop::collection::vec(0usize..4, 0..5);
    prop_oneof![
        (small(), small(), small(), small(), 0usize..4).prop_map(|(kernel, strides, dilations, pads, group)| {
            Op::Conv(ConvAttrs::new(&kernel).strides(&strides).dilations(&dilations).pads(&pads).group(group))
        }),
        (small(), small(), small(), small(), small(), 0usize..4).prop_map(
            |(kernel, strides, dilations, pads, output_padding, group)| {
                Op::ConvTranspose(ConvTransposeAttrs { kernel, strides, dilations, pads, output_padding, group })
            }
        ),
        (small(), small(), small(), small(), any::<bool>()).prop_map(
            |(kernel, strides, dilations, pads, ceil_mode)| {
                Op::MaxPool(PoolAttrs { kernel, strides, dilations, pads, ceil_mode })
            }
        ),
        Just(Op::BatchNorm { epsilon: 1e-5 }),
        Just(Op::Unary(UnaryOp::Relu)),
        Just(Op::Binary(BinaryOp::PRelu)),
        Just(Op::Binary(BinaryOp::Greater)),
        Just(Op::Where),
        Just(Op::GlobalAvgPool),
        Just(Op::MatMul),
        (any::<bool>(), any::<bool>()).prop_map(|(trans_a, trans_b)| Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a,
            trans_b
        }),
        (0usize..4).prop_map(|axis| Op::Concat { axis }),
        (0usize..4, small()).prop_map(|(axis, sizes)| Op::Split { axis, sizes }),
        small().prop_map(|shape| Op::Reshape { shape }),
        small().prop_map(|perm| Op::Transpose { perm }),
        prop::collection::vec((0usize..4, -12i64..12, -12i64..12, -4i64..4), 0..3).prop_map(|axes| Op::Slice {
            axes: axes.into_iter().map(|(axis, start, end, step)| SliceAxis { axis, start, end, step }).collect()
        }),
        (0usize..4).prop_map(|axis| Op::Gather { axis }),
        small().prop_map(|shape| Op::Expand { shape }),
        (0usize..4).prop_map(|axis| Op::Softmax { axis, flatten: false }),
        prop::collection::vec(-6i64..6, 0..9).prop_map(|pads| Op::Pad { pads, mode: PadMode::Reflect, value: 0.0 }),
        (prop::sample::select(ReduceKind::ALL.to_vec()), small(), any::<bool>())
            .prop_map(|(kind, axes, keepdims)| Op::Reduce { kind, axes, keepdims }),
        (any::<bool>(), 0usize..4, any::<bool>()).prop_map(|(max, axis, keepdims)| Op::ArgReduce {
            max,
            axis,
            keepdims,
            select_last_index: false
        }),
        Just(Op::Pad { pads: vec![i64::MIN, i64::MAX], mode: PadMode::Edge, value: 0.0 }),
        Just(Op::Slice { axes: vec![SliceAxis { axis: 0, start: i64::MIN, end: i64::MAX, step: i64::MIN }] }),
    ]
}

proptest! {
    #[test]
    fn inference_never_panics_on_arbitrary_ops_and_types(op in arb_op(), inputs in prop::collection::vec(arb_type(), 0..6)) {
        if let Ok(types) = infer(&op, inputs) {
            prop_assert_eq!(types.len(), op.n_outputs());
        }
    }
}

#[test]
fn a_fused_op_takes_its_base_type_a_same_typed_residual_and_an_inline_activation() {
    use cnnc_ir::Fused;
    let base = conv([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1);
    let fused = |act, residual| Op::Fused(Box::new(Fused { base: base.clone(), act, residual }));
    let (x, w, y) = (f32s(&[1, 2, 5, 5]), f32s(&[4, 2, 3, 3]), f32s(&[1, 4, 5, 5]));
    assert_eq!(infer_one(&fused(Some(UnaryOp::HardSwish), true), [x.clone(), w.clone(), y.clone()]), y);
    assert_eq!(fused(None, true).name(), "fused-conv");
    let bad_res = infer_err(&fused(None, true), [x.clone(), w.clone(), f32s(&[1, 4, 1, 1])]);
    assert!(bad_res.contains("the residual is f32[1,4,1,1], expected the output's type f32[1,4,5,5]"), "{bad_res}");
    let tanh = infer_err(&fused(Some(UnaryOp::Tanh), false), [x.clone(), w.clone()]);
    assert!(tanh.contains("tanh is not a fusible activation"), "{tanh}");
    let t = ConvTransposeAttrs {
        kernel: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        output_padding: vec![0, 0],
        group: 1,
    };
    let ct = Op::Fused(Box::new(Fused { base: Op::ConvTranspose(t), act: None, residual: false }));
    assert!(infer_err(&ct, [x, f32s(&[2, 4, 2, 2])]).contains("must be a conv, gemm or matmul"));
}

#[test]
fn movement_ops_keep_the_quantized_dtypes() {
    for dtype in [DType::U8, DType::I8, DType::I32] {
        let x = TensorType::new(dtype, [1, 2, 3]);
        let t = infer_one(&Op::Transpose { perm: vec![0, 2, 1] }, [x.clone()]);
        assert_eq!(t, TensorType::new(dtype, [1, 3, 2]));
        let c = infer_one(&Op::Concat { axis: 1 }, [x.clone(), x.clone()]);
        assert_eq!(c, TensorType::new(dtype, [1, 4, 3]));
        assert_eq!(infer_one(&Op::Cast { to: DType::F32 }, [x.clone()]), TensorType::f32([1, 2, 3]));
        assert_eq!(infer_one(&Op::Cast { to: dtype }, [f32s(&[4])]), TensorType::new(dtype, [4]));
    }
}

#[test]
fn arithmetic_and_float_ops_refuse_the_quantized_dtypes() {
    for dtype in [DType::U8, DType::I8, DType::I32] {
        let x = TensorType::new(dtype, [2, 2]);
        let e = infer_err(&Op::Binary(BinaryOp::Div), [x.clone(), x.clone()]);
        assert_eq!(e, format!("operands have dtype {dtype}, expected f32 or i64 (or i32 for add, sub and mul)"));
        // i32 adds, subtracts and multiplies (biases and accumulators); the 8-bit types do not.
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
            let r = infer_types(&Op::Binary(op), &[&x, &x]);
            assert_eq!(r.is_ok(), dtype == DType::I32, "{op:?} on {dtype}");
        }
        assert!(infer_err(&Op::Unary(UnaryOp::Relu), [x.clone()]).contains("expected f32"));
        let e = infer_err(&Op::ArgReduce { max: true, axis: 0, keepdims: false, select_last_index: false }, [x]);
        assert_eq!(e, format!("input has dtype {dtype}, expected f32 or i64"));
    }
}

#[test]
fn quantize_and_dequantize_check_their_params_against_the_input() {
    use cnnc_ir::QuantParams;
    let x = f32s(&[1, 3, 2]);
    let q = |axis, scales: Vec<f32>, zero_points: Vec<i32>| QuantParams { axis, scales, zero_points };
    let per_channel = q(Some(1), vec![0.5, 1.0, 2.0], vec![0, 10, 255]);
    let op = Op::Quantize { params: per_channel.clone(), to: DType::U8 };
    assert_eq!(infer_one(&op, [x.clone()]), TensorType::new(DType::U8, [1, 3, 2]));
    let u8s = TensorType::new(DType::U8, [1, 3, 2]);
    assert_eq!(infer_one(&Op::Dequantize(per_channel), [u8s.clone()]), f32s(&[1, 3, 2]));
    let cases = [
        (
            Op::Quantize { params: QuantParams::per_tensor(1.0, 0), to: DType::I32 },
            x.clone(),
            "quantizes to i32, expected u8 or i8",
        ),
        (
            Op::Quantize { params: QuantParams::per_tensor(1.0, 0), to: DType::I8 },
            u8s.clone(),
            "input has dtype u8, expected f32",
        ),
        (Op::Dequantize(QuantParams::per_tensor(1.0, 0)), x.clone(), "input has dtype f32, expected u8, i8 or i32"),
        (Op::Dequantize(q(Some(3), vec![1.0], vec![0])), u8s.clone(), "quantization axis 3 is out of range"),
        (
            Op::Dequantize(q(Some(2), vec![1.0; 3], vec![0; 3])),
            u8s.clone(),
            "3 scale(s) and 3 zero point(s), expected 2",
        ),
        (Op::Dequantize(QuantParams::per_tensor(0.0, 0)), u8s.clone(), "scale 0.0 is not finite and positive"),
        (Op::Dequantize(QuantParams::per_tensor(f32::NAN, 0)), u8s.clone(), "scale NaN is not finite and positive"),
        (Op::Dequantize(QuantParams::per_tensor(1.0, 256)), u8s, "zero point 256 is outside the range of u8"),
        (
            Op::Quantize { params: QuantParams::per_tensor(1.0, -129), to: DType::I8 },
            x,
            "zero point -129 is outside the range of i8",
        ),
    ];
    for (op, input, message) in cases {
        let e = infer_err(&op, [input]);
        assert!(e.contains(message), "{op:?}: got `{e}`, expected `{message}`");
    }
}

#[test]
fn lookup_gives_the_table_dtype_in_the_operands_shape() {
    let t = |dtype, shape: &[usize]| TensorType::new(dtype, shape);
    assert_eq!(infer_one(&Op::Lookup, [f32s(&[256]), t(DType::U8, &[2, 3])]), f32s(&[2, 3]));
    assert_eq!(infer_one(&Op::Lookup, [t(DType::U8, &[256]), t(DType::I8, &[])]), t(DType::U8, &[]));
    let two = infer_one(&Op::Lookup, [t(DType::I8, &[65536]), t(DType::U8, &[4, 1]), t(DType::I8, &[4, 1])]);
    assert_eq!(two, t(DType::I8, &[4, 1]));
}

#[test]
fn lookup_rejects_a_table_or_operands_that_do_not_fit() {
    let t = |dtype, shape: &[usize]| TensorType::new(dtype, shape);
    let (u8s, i8s) = (|s: &[usize]| t(DType::U8, s), |s: &[usize]| t(DType::I8, s));
    let cases = [
        (vec![u8s(&[255]), u8s(&[4])], "table has shape [255], expected [256] for 1 operand(s)"),
        (vec![u8s(&[256]), u8s(&[4]), u8s(&[4])], "table has shape [256], expected [65536] for 2 operand(s)"),
        (vec![u8s(&[65536]), u8s(&[4])], "table has shape [65536], expected [256] for 1 operand(s)"),
        (vec![u8s(&[16, 16]), u8s(&[4])], "table has shape [16, 16], expected [256]"),
        (vec![t(DType::I64, &[256]), u8s(&[4])], "table has dtype i64, expected f32, u8 or i8"),
        (vec![t(DType::I32, &[256]), u8s(&[4])], "table has dtype i32, expected f32, u8 or i8"),
        (vec![u8s(&[256]), f32s(&[4])], "operand 1 has dtype f32, expected u8 or i8"),
        (vec![u8s(&[65536]), u8s(&[4]), t(DType::I32, &[4])], "operand 2 has dtype i32, expected u8 or i8"),
        (vec![u8s(&[65536]), u8s(&[2, 3]), i8s(&[3, 2])], "operands have shapes [2, 3] and [3, 2], expected one shape"),
        // Shapes that would broadcast are still two shapes: a lookup does not broadcast.
        (vec![u8s(&[65536]), u8s(&[1, 4]), u8s(&[4])], "operands have shapes [1, 4] and [4], expected one shape"),
        (vec![u8s(&[256])], "expects 2 to 3 input(s), got 1"),
        (vec![u8s(&[256]), u8s(&[4]), u8s(&[4]), u8s(&[4])], "expects 2 to 3 input(s), got 4"),
    ];
    for (inputs, message) in cases {
        let e = infer_err(&Op::Lookup, inputs.clone());
        assert!(e.contains(message), "{inputs:?}: got `{e}`, expected `{message}`");
    }
}
