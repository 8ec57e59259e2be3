//! `Softmax`, the `Reduce*` family, `ArgMax` and `ArgMin`.

use cnnc_ir::{Op, ReduceKind};

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

/// `ReduceMean`, `ReduceSum`, …: axes are an attribute before opset 18 (`ReduceSum`: 13) and an
/// optional constant input from then on. Without axes every axis is reduced, or, with
/// `noop_with_empty_axes`, none: each element is its own group, so `ReduceSumSquare` still
/// squares (as onnxruntime does).
pub(super) fn lower_reduce(cx: &mut LowerCx, node: &OnnxNode, kind: ReduceKind) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let rank = cx.ty(x).rank();
    let keepdims = node.flag("keepdims", true)?;
    let axes_input = node.opset >= if kind == ReduceKind::Sum { 13 } else { 18 };
    let axes = if axes_input { cx.const_ints(node, 1, "axes")? } else { node.ints("axes")?.map(<[i64]>::to_vec) };
    let mut axes = match axes.filter(|a| !a.is_empty()) {
        Some(a) => node.axes("axes", &a, rank)?,
        None if axes_input && node.flag("noop_with_empty_axes", false)? => {
            if matches!(kind, ReduceKind::Mean | ReduceKind::Sum | ReduceKind::Max | ReduceKind::Min | ReduceKind::Prod)
            {
                return Ok(vec![x]);
            }
            Vec::new()
        }
        None => (0..rank).collect(),
    };
    axes.sort_unstable();
    Ok(vec![cx.add1(node, Op::Reduce { kind, axes, keepdims }, &[x])?])
}

/// `ArgMax` (`max`) and `ArgMin`: `select_last_index` exists from opset 12.
pub(super) fn lower_arg_reduce(cx: &mut LowerCx, node: &OnnxNode, max: bool) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let rank = cx.ty(x).rank();
    let axis = node.axis("axis", node.int_or("axis", 0)?, rank)?;
    let keepdims = node.flag("keepdims", true)?;
    let select_last_index = node.flag("select_last_index", false)?;
    Ok(vec![cx.add1(node, Op::ArgReduce { max, axis, keepdims, select_last_index }, &[x])?])
}
