//! The QOperator forms of quantized models: QLinearConv, QLinearMatMul, ConvInteger and
//! MatMulInteger (ai.onnx, opset 10 on), com.microsoft QGemm, each one [`QLinear`] op; and the
//! com.microsoft QLinearAdd and QLinearGlobalAveragePool, lowered to DequantizeLinear → f32 op →
//! QuantizeLinear.
//!
//! Scales and zero points must be constants; they become the op's attributes. A weight's
//! scales and zero points may be per output channel (a 1-D tensor with one entry per channel:
//! axis 0 of a conv weight, the last axis of a matmul's `b`, the output axis of QGemm's `B`);
//! an input's and an output's are per tensor. ConvInteger / MatMulInteger have no scales: their
//! output is the i32 accumulator.
//!
//! QLinearAdd and QLinearGlobalAveragePool are computed in f32 between the dequantize and the
//! quantize, which rounds once; onnxruntime's kernels fold the scales into one ratio per input
//! and round after adding the output zero point, so the two can differ by one step on ties. At
//! -O1 the optimizer's `qdq-lookup` tabulates a same-shape or constant-operand QLinearAdd with
//! onnxruntime's arithmetic, which removes that difference.

use cnnc_ir::{BinaryOp, DType, Op, QLinear, QLinearOut, QuantParams, ReduceKind, ValueRef};

use super::context::{LowerCx, Lowered, OnnxNode};
use super::conv::conv_attrs;
use super::error::ImportError;
use super::quantize::quantized_input;

/// The quantization of an operand: scale (input `s`) and zero point (input `z`, absent = 0),
/// per tensor, or per index of `axis` when `axis` is given and they hold more than one value.
fn params(
    cx: &LowerCx,
    node: &OnnxNode,
    s: Option<usize>,
    z: Option<usize>,
    axis: Option<usize>,
) -> Result<QuantParams, ImportError> {
    let scales = match s {
        Some(i) => cx
            .const_floats(node, i, "scale")?
            .ok_or_else(|| node.bad_input(format!("input {i} (scale) is required")))?,
        None => vec![1.0],
    };
    let zps = match z {
        Some(i) => cx.const_ints(node, i, "zero point")?,
        None => None,
    };
    let zero_points: Vec<i32> = match zps {
        Some(z) => z.iter().map(|&v| v as i32).collect(),
        None => vec![0; scales.len()],
    };
    // A per-tensor scale with per-channel zero points (or the reverse) repeats the single one.
    let n = scales.len().max(zero_points.len());
    fn widen<T: Copy>(node: &OnnxNode, v: Vec<T>, n: usize, what: &str) -> Result<Vec<T>, ImportError> {
        match v.len() {
            len if len == n => Ok(v),
            1 => Ok(vec![v[0]; n]),
            len => Err(node.bad_input(format!("{len} {what} for {n} channels"))),
        }
    }
    let (scales, zero_points) = (widen(node, scales, n, "scales")?, widen(node, zero_points, n, "zero points")?);
    if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(node.bad_input(format!("scale {bad} is not finite and positive")));
    }
    match axis {
        _ if n == 1 => Ok(QuantParams { axis: None, scales, zero_points }),
        Some(a) => Ok(QuantParams { axis: Some(a), scales, zero_points }),
        None => Err(node.bad_input(format!("{n} scales or zero points where one (per tensor) is supported"))),
    }
}

/// The output of a requantizing op: per tensor, of the zero point's type (u8 when absent).
fn out_params(cx: &LowerCx, node: &OnnxNode, s: usize, z: usize) -> Result<QLinearOut, ImportError> {
    let to = match node.input_name(z) {
        Some(_) => {
            let zp = cx.input(node, z)?;
            cx.narrow_int_dtype(zp).filter(|d| d.is_quantized()).ok_or_else(|| {
                node.bad_input(format!("input {z} (output zero point) must be a uint8 or int8 constant"))
            })?
        }
        None => DType::U8,
    };
    Ok(QLinearOut::Quantized { params: params(cx, node, Some(s), Some(z), None)?, to })
}

/// Adds the op; `x`, `w` and the optional i32 bias `b` are its inputs.
fn add_qlinear(
    cx: &mut LowerCx,
    node: &OnnxNode,
    q: QLinear,
    x: ValueRef,
    w: ValueRef,
    b: Option<ValueRef>,
) -> Result<Lowered, ImportError> {
    let inputs: Vec<_> = [Some(x), Some(w), b].into_iter().flatten().collect();
    Ok(vec![cx.add1(node, Op::QLinear(Box::new(q)), &inputs)?])
}

/// An i32 bias input, narrowed from the importer's i64 constants.
fn bias(cx: &mut LowerCx, node: &OnnxNode, i: usize) -> Result<Option<ValueRef>, ImportError> {
    if node.input_name(i).is_none() {
        return Ok(None);
    }
    let b = quantized_input(cx, node, i)?;
    if cx.ty(b).dtype != DType::I32 {
        return Err(node.bad_input(format!("input {i} (bias) must be int32, got {}", cx.ty(b).dtype)));
    }
    Ok(Some(b))
}

/// `QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp[, B])`.
pub(super) fn lower_qlinear_conv(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = quantized_input(cx, node, 0)?;
    let w = quantized_input(cx, node, 3)?;
    let b = bias(cx, node, 8)?;
    let attrs = conv_attrs(node, &cx.shape(x), &cx.shape(w))?;
    let q = QLinear {
        base: Op::Conv(attrs),
        x: params(cx, node, Some(1), Some(2), None)?,
        w: params(cx, node, Some(4), Some(5), Some(0))?,
        out: out_params(cx, node, 6, 7)?,
        clamp: None,
    };
    add_qlinear(cx, node, q, x, w, b)
}

/// `ConvInteger(x, w[, x_zp, w_zp])`: the i32 accumulator.
pub(super) fn lower_conv_integer(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = quantized_input(cx, node, 0)?;
    let w = quantized_input(cx, node, 1)?;
    let attrs = conv_attrs(node, &cx.shape(x), &cx.shape(w))?;
    let q = QLinear {
        base: Op::Conv(attrs),
        x: params(cx, node, None, Some(2), None)?,
        w: params(cx, node, None, Some(3), Some(0))?,
        out: QLinearOut::I32,
        clamp: None,
    };
    add_qlinear(cx, node, q, x, w, None)
}

/// The output-channel axis of a matmul's 2-D `b`.
fn matmul_b_axis(cx: &LowerCx, node: &OnnxNode, b: ValueRef) -> Result<usize, ImportError> {
    match cx.ty(b).rank() {
        2 => Ok(1),
        r => Err(node.bad_input(format!("a quantized matmul's b must be 2-D (a weight matrix), got rank {r}"))),
    }
}

/// `QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)`.
pub(super) fn lower_qlinear_matmul(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let a = quantized_input(cx, node, 0)?;
    let b = quantized_input(cx, node, 3)?;
    let axis = matmul_b_axis(cx, node, b)?;
    let q = QLinear {
        base: Op::MatMul,
        x: params(cx, node, Some(1), Some(2), None)?,
        w: params(cx, node, Some(4), Some(5), Some(axis))?,
        out: out_params(cx, node, 6, 7)?,
        clamp: None,
    };
    add_qlinear(cx, node, q, a, b, None)
}

/// `MatMulInteger(a, b[, a_zp, b_zp])`: the i32 accumulator.
pub(super) fn lower_matmul_integer(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let a = quantized_input(cx, node, 0)?;
    let b = quantized_input(cx, node, 1)?;
    let axis = matmul_b_axis(cx, node, b)?;
    let q = QLinear {
        base: Op::MatMul,
        x: params(cx, node, None, Some(2), None)?,
        w: params(cx, node, None, Some(3), Some(axis))?,
        out: QLinearOut::I32,
        clamp: None,
    };
    add_qlinear(cx, node, q, a, b, None)
}

/// com.microsoft `QGemm(A, a_scale, a_zp, B, b_scale, b_zp[, C, y_scale, y_zp])`: alpha 1
/// only; without `y_scale` the output is f32 (`acc · a_scale · b_scale`).
pub(super) fn lower_qgemm(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let alpha = node.float_or("alpha", 1.0)?;
    if alpha != 1.0 {
        return Err(node.bad_attr("alpha", format!("{alpha} is not supported (only 1)")));
    }
    let trans_a = node.flag("transA", false)?;
    let trans_b = node.flag("transB", false)?;
    let a = quantized_input(cx, node, 0)?;
    let b = quantized_input(cx, node, 3)?;
    let c = bias(cx, node, 6)?;
    let out = if node.input_name(7).is_some() { out_params(cx, node, 7, 8)? } else { QLinearOut::F32 };
    let q = QLinear {
        base: Op::Gemm { alpha: 1.0, beta: 1.0, trans_a, trans_b },
        x: params(cx, node, Some(1), Some(2), None)?,
        w: params(cx, node, Some(4), Some(5), Some(if trans_b { 0 } else { 1 }))?,
        out,
        clamp: None,
    };
    add_qlinear(cx, node, q, a, b, c)
}

/// Dequantizes input `i` with scale input `s` and zero point input `z` (per tensor).
fn dequantized(cx: &mut LowerCx, node: &OnnxNode, i: usize, s: usize, z: usize) -> Result<ValueRef, ImportError> {
    let x = quantized_input(cx, node, i)?;
    if !cx.ty(x).dtype.is_quantized() {
        return Err(node.bad_input(format!("input {i} must be uint8 or int8, got {}", cx.ty(x).dtype)));
    }
    let p = params(cx, node, Some(s), Some(z), None)?;
    cx.add1(node, Op::Dequantize(p), &[x])
}

/// Quantizes `y` like input `x` of `node` with the output scale `s` and zero point `z`.
fn requantized(
    cx: &mut LowerCx,
    node: &OnnxNode,
    y: ValueRef,
    x: ValueRef,
    s: usize,
    z: usize,
) -> Result<Lowered, ImportError> {
    let to = match node.input_name(z) {
        Some(_) => cx.narrow_int_dtype(cx.input(node, z)?).unwrap_or(cx.ty(x).dtype),
        None => cx.ty(x).dtype,
    };
    let params = params(cx, node, Some(s), Some(z), None)?;
    Ok(vec![cx.add1(node, Op::Quantize { params, to }, &[y])?])
}

/// com.microsoft `QLinearAdd(A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp)`.
pub(super) fn lower_qlinear_add(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let a = dequantized(cx, node, 0, 1, 2)?;
    let b = dequantized(cx, node, 3, 4, 5)?;
    let sum = cx.add1(node, Op::Binary(BinaryOp::Add), &[a, b])?;
    let x = cx.input(node, 0)?;
    requantized(cx, node, sum, x, 6, 7)
}

/// com.microsoft `QLinearGlobalAveragePool(X, x_scale, x_zp, y_scale, y_zp)`; with
/// `channels_last = 1` the mean runs over the middle axes of `[N, …, C]`.
pub(super) fn lower_qlinear_global_avg_pool(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = dequantized(cx, node, 0, 1, 2)?;
    let op = match node.int_or("channels_last", 0)? {
        0 => Op::GlobalAvgPool,
        1 => Op::Reduce {
            kind: ReduceKind::Mean,
            axes: (1..cx.ty(x).rank().saturating_sub(1)).collect(),
            keepdims: true,
        },
        v => return Err(node.bad_attr("channels_last", format!("{v} is neither 0 nor 1"))),
    };
    let pooled = cx.add1(node, op, &[x])?;
    let xin = cx.input(node, 0)?;
    requantized(cx, node, pooled, xin, 3, 4)
}
