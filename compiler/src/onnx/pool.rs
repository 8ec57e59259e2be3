//! `MaxPool`, `AveragePool`, `GlobalAveragePool`, `GlobalMaxPool`.

use cnnc_ir::{Op, PoolAttrs};

use super::context::{LowerCx, Lowered, OnnxNode};
use super::conv::{per_axis, resolve_pads};
use super::error::ImportError;

pub(super) fn lower_max_pool(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    if node.int_or("storage_order", 0)? != 0 {
        return Err(node.bad_attr("storage_order", "only 0 (row major) is supported"));
    }
    if node.wants_output(1) {
        return Err(node.bad_input("the Indices output of MaxPool is not supported"));
    }
    let (x, pool) = pool_attrs(cx, node)?;
    let dtype = cx.ty(x).dtype;
    if dtype.is_quantized() {
        // u8/i8 (QOperator models): every value is exact in f32 and the maximum commutes with
        // the monotone conversion, so the f32 max-pool between two casts gives the same bits.
        let xf = cx.add1(node, Op::Cast { to: cnnc_ir::DType::F32 }, &[x])?;
        let y = cx.add1(node, Op::MaxPool(pool), &[xf])?;
        return Ok(vec![cx.add1(node, Op::Cast { to: dtype }, &[y])?]);
    }
    Ok(vec![cx.add1(node, Op::MaxPool(pool), &[x])?])
}

pub(super) fn lower_avg_pool(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let count_include_pad = node.flag("count_include_pad", false)?;
    let (x, pool) = pool_attrs(cx, node)?;
    Ok(vec![cx.add1(node, Op::AvgPool { pool, count_include_pad }, &[x])?])
}

pub(super) fn lower_global_avg_pool(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    Ok(vec![cx.add1(node, Op::GlobalAvgPool, &[x])?])
}

pub(super) fn lower_global_max_pool(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    Ok(vec![cx.add1(node, Op::GlobalMaxPool, &[x])?])
}

fn pool_attrs(cx: &LowerCx, node: &OnnxNode) -> Result<(cnnc_ir::ValueRef, PoolAttrs), ImportError> {
    let x = cx.input(node, 0)?;
    let xs = cx.shape(x);
    if xs.len() < 3 {
        return Err(node.shape_err(format!("input must have rank at least 3 (N, C, spatial…), got shape {xs:?}")));
    }
    let n = xs.len() - 2;
    let kernel = node.usizes("kernel_shape", 1)?.ok_or_else(|| node.bad_attr("kernel_shape", "is required"))?;
    if kernel.len() != n {
        return Err(node.bad_attr("kernel_shape", format!("needs {n} values (one per spatial axis), got {kernel:?}")));
    }
    let strides = per_axis(node, "strides", n)?;
    let dilations = per_axis(node, "dilations", n)?;
    let ceil_mode = node.flag("ceil_mode", false)?;
    let pads = resolve_pads(node, &xs[2..], &kernel, &strides, &dilations)?;
    Ok((x, PoolAttrs { kernel, strides, dilations, pads, ceil_mode }))
}
