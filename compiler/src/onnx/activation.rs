//! Element-wise activations and math functions of one input: `Relu`, `LeakyRelu`, `Sigmoid`,
//! `HardSigmoid`, `HardSwish`, `Tanh`, `Clip`, `PRelu`, `Exp`, `Log`, `Erf`, `Sqrt`, …

use cnnc_ir::{BinaryOp, Op, UnaryOp};

use super::context::{LowerCx, Lowered, OnnxNode};
use super::error::ImportError;

/// A unary op without attributes.
pub(super) fn lower_unary(cx: &mut LowerCx, node: &OnnxNode, op: UnaryOp) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    Ok(vec![cx.add1(node, Op::Unary(op), &[x])?])
}

pub(super) fn lower_leaky_relu(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let alpha = node.float_or("alpha", 0.01)?;
    lower_unary(cx, node, UnaryOp::LeakyRelu { alpha })
}

pub(super) fn lower_hard_sigmoid(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let alpha = node.float_or("alpha", 0.2)?;
    let beta = node.float_or("beta", 0.5)?;
    lower_unary(cx, node, UnaryOp::HardSigmoid { alpha, beta })
}

/// `Clip`: bounds are attributes before opset 11 and optional constant inputs from 11 on.
pub(super) fn lower_clip(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let (min, max) = if node.opset < 11 {
        (node.float("min")?, node.float("max")?)
    } else {
        (cx.const_scalar(node, 1, "min")?, cx.const_scalar(node, 2, "max")?)
    };
    let min = min.unwrap_or(f32::NEG_INFINITY);
    let max = max.unwrap_or(f32::INFINITY);
    if min.is_nan() || max.is_nan() {
        return Err(node.bad_input(format!("clip bounds must be numbers, got min {min}, max {max}")));
    }
    lower_unary(cx, node, UnaryOp::Clip { min, max })
}

pub(super) fn lower_prelu(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let slope = cx.input(node, 1)?;
    Ok(vec![cx.add1(node, Op::Binary(BinaryOp::PRelu), &[x, slope])?])
}
