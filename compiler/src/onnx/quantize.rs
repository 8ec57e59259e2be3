//! QuantizeLinear and DequantizeLinear (opsets 10, 13, 19, 21, 23–28).
//!
//! Opset 10 quantizes per tensor; 13 adds `axis` (default 1) with 1-D scales for per-axis
//! quantization; 19 adds float8 types and `saturate` (which only concerns float8); 21 adds
//! blocked quantization (`block_size`), 4-bit and 16-bit types and QuantizeLinear's
//! `output_dtype`; 23 adds QuantizeLinear's `precision` (of the division) and DequantizeLinear's
//! `output_dtype`, both the scale's type (f32) by default; 24, 25 and 28 add only types. cnnc
//! takes u8 and i8 (and i32 for DequantizeLinear), per tensor or per
//! axis; scales and zero points must be constants, and become the op's attributes.

use cnnc_ir::{DType, Op, QuantParams, Tensor, ValueRef};
use onnx_protobuf::tensor_proto::DataType;
use protobuf::Enum;

use super::context::{LowerCx, Lowered, OnnxNode};
use super::error::ImportError;

pub(super) fn lower_quantize_linear(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let to = match cx.opt_input(node, 2)? {
        Some(zp) => zero_point_dtype(cx, node, zp)?,
        None => match node.int_or("output_dtype", 0)? {
            0 => DType::U8,
            t if t == i64::from(DataType::UINT8.value()) => DType::U8,
            t if t == i64::from(DataType::INT8.value()) => DType::I8,
            t => {
                return Err(
                    node.bad_attr("output_dtype", format!("element type {t} is not supported (uint8 and int8 are)"))
                );
            }
        },
    };
    if !to.is_quantized() {
        return Err(node.bad_input(format!("quantizing to {to} is not supported (uint8 and int8 are)")));
    }
    require_f32_attr(node, "precision")?;
    let params = quant_params(cx, node, x)?;
    Ok(vec![cx.add1(node, Op::Quantize { params, to }, &[x])?])
}

/// Input `i` with its ONNX element type: quantized constants arrive widened to i64 (as shape
/// tensors need them) and get their u8, i8 or i32 type back here.
pub(super) fn quantized_input(cx: &mut LowerCx, node: &OnnxNode, i: usize) -> Result<ValueRef, ImportError> {
    let x = cx.input(node, i)?;
    match (cx.narrow_int_dtype(x), cx.constant(x)) {
        (Some(d), Some(t)) => {
            let narrowed = narrow(t, d).ok_or_else(|| node.bad_input(format!("input {i} holds values outside {d}")))?;
            Ok(cx.add_const(&format!("{}.in{i}", node.name), narrowed))
        }
        _ => Ok(x),
    }
}

pub(super) fn lower_dequantize_linear(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = quantized_input(cx, node, 0)?;
    let from = cx.ty(x).dtype;
    if !(from.is_quantized() || from == DType::I32) {
        return Err(node.bad_input(format!("dequantizing {from} is not supported (uint8, int8 and int32 are)")));
    }
    if let Some(zp) = cx.opt_input(node, 2)?
        && zero_point_dtype(cx, node, zp)? != from
    {
        return Err(node.bad_input(format!("the zero point's type differs from the input's ({from})")));
    }
    require_f32_attr(node, "output_dtype")?;
    let params = quant_params(cx, node, x)?;
    Ok(vec![cx.add1(node, Op::Dequantize(params), &[x])?])
}

/// An element-type attribute (`precision`, DequantizeLinear's `output_dtype`) that must be
/// absent, 0 (unset) or float.
fn require_f32_attr(node: &OnnxNode, attr: &str) -> Result<(), ImportError> {
    match node.int(attr)? {
        None | Some(0) => Ok(()),
        Some(t) if t == i64::from(DataType::FLOAT.value()) => Ok(()),
        Some(t) => Err(node.bad_attr(attr, format!("element type {t} is not supported (only float is)"))),
    }
}

/// The ONNX element type of a zero-point input.
fn zero_point_dtype(cx: &LowerCx, node: &OnnxNode, zp: ValueRef) -> Result<DType, ImportError> {
    cx.narrow_int_dtype(zp)
        .ok_or_else(|| node.bad_input("input 2 (zero point) must be a uint8, int8 or int32 initializer or Constant"))
}

/// `t` (i64 values) as `d`, or `None` if a value is out of range.
fn narrow(t: &Tensor, d: DType) -> Option<Tensor> {
    let (lo, hi) = d.int_range()?;
    let v = t.as_i64()?;
    if v.iter().any(|x| !(lo..=hi).contains(x)) {
        return None;
    }
    let shape = t.shape().to_vec();
    match d {
        DType::U8 => Tensor::from_u8(shape, v.iter().map(|&x| x as u8).collect()).ok(),
        DType::I8 => Tensor::from_i8(shape, v.iter().map(|&x| x as i8).collect()).ok(),
        _ => Tensor::from_i32(shape, v.iter().map(|&x| x as i32).collect()).ok(),
    }
}

/// Scales and zero points (inputs 1 and 2) and the axis, for input `x`.
fn quant_params(cx: &LowerCx, node: &OnnxNode, x: ValueRef) -> Result<QuantParams, ImportError> {
    if node.int_or("block_size", 0)? != 0 {
        return Err(node.bad_attr("block_size", "blocked quantization is not supported"));
    }
    let scales = cx.const_floats(node, 1, "scale")?.ok_or_else(|| node.bad_input("input 1 (scale) is required"))?;
    let n = scales.len();
    let zero_points = match cx.const_ints(node, 2, "zero point")? {
        Some(z) if z.len() == n => z.iter().map(|&v| v as i32).collect(),
        Some(z) => return Err(node.bad_input(format!("{} zero points for {n} scales", z.len()))),
        None => vec![0; n],
    };
    let scale_rank = cx.shape(cx.input(node, 1)?).len();
    let axis = if scale_rank == 0 || n == 1 {
        None
    } else if scale_rank == 1 && node.opset >= 13 {
        let rank = cx.ty(x).rank();
        Some(node.axis("axis", node.int_or("axis", 1)?, rank)?)
    } else {
        return Err(node.bad_input(format!(
            "a scale of shape {:?} is not supported (a scalar, or from opset 13 a 1-D per-axis scale)",
            cx.shape(cx.input(node, 1)?)
        )));
    };
    Ok(QuantParams { axis, scales, zero_points })
}
