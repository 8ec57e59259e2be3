//! `MatMul` and `Gemm`.

use cnnc_ir::Op;

use super::context::{LowerCx, Lowered, OnnxNode};
use super::error::ImportError;

pub(super) fn lower_matmul(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let a = cx.input(node, 0)?;
    let b = cx.input(node, 1)?;
    Ok(vec![cx.add1(node, Op::MatMul, &[a, b])?])
}

/// `Gemm`: `C` is optional from opset 11 on; the `broadcast` attribute of opsets < 7 is moot.
pub(super) fn lower_gemm(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let alpha = node.float_or("alpha", 1.0)?;
    let beta = node.float_or("beta", 1.0)?;
    let trans_a = node.flag("transA", false)?;
    let trans_b = node.flag("transB", false)?;
    let a = cx.input(node, 0)?;
    let b = cx.input(node, 1)?;
    let c = cx.opt_input(node, 2)?;
    if c.is_none() && node.opset < 11 {
        return Err(node.bad_input("input C is required before opset 11"));
    }
    let inputs: Vec<_> = [Some(a), Some(b), c].into_iter().flatten().collect();
    Ok(vec![cx.add1(node, Op::Gemm { alpha, beta, trans_a, trans_b }, &inputs)?])
}
