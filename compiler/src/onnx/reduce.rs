//! `Softmax` and `ReduceMean`.

use cnnc_ir::Op;

use super::context::{LowerCx, Lowered, OnnxNode};
use super::error::ImportError;

/// `Softmax`: before opset 13 the input is coerced to 2-D at `axis` (default 1); from 13 on it
/// normalizes one axis (default −1).
pub(super) fn lower_softmax(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let rank = cx.ty(x).rank();
    let legacy = node.opset < 13;
    let axis = node.int_or("axis", if legacy { 1 } else { -1 })?;
    let axis = node.axis("axis", axis, rank)?;
    // Coercing to 2-D at the last axis is the same as normalizing that axis alone.
    let flatten = legacy && axis + 1 != rank;
    Ok(vec![cx.add1(node, Op::Softmax { axis, flatten }, &[x])?])
}

/// `ReduceMean`: axes are an attribute before opset 18 and an optional constant input from 18 on.
pub(super) fn lower_reduce_mean(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let rank = cx.ty(x).rank();
    let keepdims = node.flag("keepdims", true)?;
    let axes = if node.opset < 18 { node.ints("axes")?.map(<[i64]>::to_vec) } else { cx.const_ints(node, 1, "axes")? };
    let mut axes = match axes.filter(|a| !a.is_empty()) {
        Some(a) => node.axes("axes", &a, rank)?,
        None if node.opset >= 18 && node.flag("noop_with_empty_axes", false)? => return Ok(vec![x]),
        None => (0..rank).collect(),
    };
    axes.sort_unstable();
    Ok(vec![cx.add1(node, Op::ReduceMean { axes, keepdims }, &[x])?])
}
