//! Quantized gemm and matmul (`QLinear` over `Gemm` without `trans_a`, or a 2-D `MatMul`) on
//! the int8 matrix-vector kernels (`microkernel/int8/gemv.rs`): each row of `x` times the
//! constant weight, the weights streamed once per row — what a batch-1 fully connected layer
//! is. The weights are centred (`w − zw[c]`) and packed at load, the bias and the zero-point
//! correction folded into one i32 per channel (`corr`), and the per-channel scales computed
//! as [`QLinear::acc_scale`] / [`QLinear::requant_scale`]. VNNI (and AMX) hosts run the
//! `vpdpbusd` kernel where every centred weight fits i8, otherwise the AVX2 kernel on i16
//! weights. Every output is the reference's integer (`reference/qlinear.rs`) bit for bit.
//!
//! Work units: (row, block of channel blocks), each output computed whole by one call, so
//! results do not depend on the units or threads.

use cnnc_ir::{DType, Op, QLinear, QLinearOut, TensorData};
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, types};
use cranelift_codegen::isa::CallConv;

use super::gemm::kit::for_dyn;
use super::{Aux, CompileError, EmitCx, Emitted, Jit};
use crate::microkernel::int8::gemv::{AVX2_BLOCK, VNNI_BLOCK, geo, pack_avx2, pack_vnni};
use crate::microkernel::int8::{QKernels, QOut};

/// Multiply-adds a work unit aims at (~10 µs with the weights streaming from memory).
const UNIT_MACS: usize = 1 << 17;

/// Whether the kernels compute this op: a gemm (`trans_a` false) or matmul with a 2-D u8/i8
/// input `[rows, k]`, a constant 2-D u8/i8 weight, a constant i32 bias per output (or none).
pub(crate) fn supports(cx: &EmitCx, q: &QLinear) -> bool {
    let product = matches!(q.base, Op::Gemm { trans_a: false, .. } | Op::MatMul);
    let w = cx.consts.get(1).copied().flatten();
    let bias_ok = cx.inputs.len() < 3
        || cx
            .consts
            .get(2)
            .copied()
            .flatten()
            .and_then(|b| b.as_i32())
            .is_some_and(|b| b.len() == cx.outputs[0].shape[1]);
    product
        && cx.inputs[0].rank() == 2
        && cx.outputs[0].rank() == 2
        && cx.inputs[0].dtype.is_quantized()
        && w.is_some_and(|w| w.dtype().is_quantized() && w.shape().len() == 2)
        && bias_ok
}

pub(crate) fn emit(jit: &mut Jit, cx: &EmitCx, q: &QLinear, mk: QKernels) -> Result<Emitted, CompileError> {
    let (rows, k) = (cx.inputs[0].shape[0], cx.inputs[0].shape[1]);
    let n = cx.outputs[0].shape[1];
    let w =
        cx.consts.get(1).copied().flatten().ok_or_else(|| cx.unsupported("a quantized gemm with run-time weights"))?;
    let wv: Vec<i32> = match w.data() {
        TensorData::U8(v) => v.iter().map(|&b| i32::from(b)).collect(),
        TensorData::I8(v) => v.iter().map(|&b| i32::from(b)).collect(),
        _ => return Err(cx.unsupported("quantized weights that are not u8/i8")),
    };
    let zw = |c: usize| if q.w.axis.is_some() { q.w.zero_points[c] } else { q.w.zero_points[0] };
    // `[n][k]`, centred: a gemm with `trans_b` stores `[n, k]`, others `[k, n]`.
    let by_rows = matches!(q.base, Op::Gemm { trans_b: true, .. });
    let centred: Vec<i32> = (0..n * k)
        .map(|i| {
            let (c, kk) = (i / k, i % k);
            let v = if by_rows { wv[c * k + kk] } else { wv[kk * n + c] };
            v - zw(c)
        })
        .collect();
    let x_i8 = cx.inputs[0].dtype == DType::I8;
    let vnni = mk.gemv_vnni.filter(|_| centred.iter().all(|&v| (-128..=127).contains(&v)));
    // The VNNI kernel reads `x` as u8: an i8 input's bytes are XORed with 0x80 (+128).
    let zx = q.x.zero_points[0] + if vnni.is_some() && x_i8 { 128 } else { 0 };
    let bias: Option<&[i32]> =
        if cx.inputs.len() > 2 { cx.consts.get(2).copied().flatten().and_then(|b| b.as_i32()) } else { None };
    let corr: Vec<u32> = (0..n)
        .map(|c| {
            let sum = centred[c * k..(c + 1) * k].iter().fold(0i32, |a, &v| a.wrapping_add(v));
            bias.map_or(0, |b| b[c]).wrapping_sub(zx.wrapping_mul(sum)) as u32
        })
        .collect();
    let (out, scale, zy, lo, hi) = match &q.out {
        QLinearOut::I32 => (QOut::I32, vec![1.0; n], 0, 0, 0),
        QLinearOut::F32 => (QOut::F32, (0..n).map(|c| q.acc_scale(c)).collect(), 0, 0, 0),
        QLinearOut::Quantized { params, to } => {
            let (lo, hi) = q.out_bounds().ok_or_else(|| cx.unsupported("invalid output bounds"))?;
            let kind = if *to == DType::U8 { QOut::U8 } else { QOut::I8 };
            (kind, (0..n).map(|c| q.requant_scale(c)).collect(), params.zero_points[0], lo, hi)
        }
    };
    if rows == 0 || n == 0 {
        let func = jit.kernel(cx.name, |_| {})?;
        return Ok(Emitted::serial(func, Vec::new()));
    }
    let (packed, block, kernel, variant) = match vnni {
        Some(f) => (pack_vnni(&centred, n, k), VNNI_BLOCK, f, "qgemv-vnni"),
        None => (pack_avx2(&centred, n, k), AVX2_BLOCK, mk.gemv_avx2, "qgemv-avx2"),
    };
    let blocks = n.div_ceil(block);
    let per_unit = (UNIT_MACS / (k.max(1) * block)).clamp(1, blocks);
    // At least two units per row when there are blocks to split: two threads share the stream.
    let per_unit = if rows == 1 && blocks > 1 { per_unit.min(blocks.div_ceil(2)) } else { per_unit };
    let chunks = blocks.div_ceil(per_unit);
    let units = rows * chunks;
    let aux = vec![Aux::I64(geo(k, n, out, zy, lo, hi, x_i8)), Aux::Bytes(packed), Aux::U32(corr), Aux::F32(scale)];
    let [geo_arg, w_arg, corr_arg, scale_arg] = [0, 1, 2, 3].map(|i| cx.aux_arg(i));
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let x_row = k as i64 * cx.inputs[0].dtype.size_bytes() as i64;
    let y_row = n as i64 * cx.outputs[0].dtype.size_bytes() as i64;
    jit.note_variant(variant);
    let func = jit.kernel(cx.name, |kb| {
        let (x, y) = (kb.arg(x_arg), kb.arg(y_arg));
        let [pgeo, pw, pcorr, pscale] = [geo_arg, w_arg, corr_arg, scale_arg].map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let mut sig = Signature::new(CallConv::SystemV);
        for _ in 0..8 {
            sig.params.push(AbiParam::new(ptr));
        }
        let sig = b.import_signature(sig);
        for_dyn(b, lo, hi, 1, |b, u| {
            // u = row · chunks + chunk
            let chunk = b.ins().urem_imm_u(u, chunks as i64);
            let row = b.ins().udiv_imm_u(u, chunks as i64);
            let b0 = b.ins().imul_imm_s(chunk, per_unit as i64);
            let b1 = b.ins().iadd_imm_s(b0, per_unit as i64);
            let all = b.ins().iconst(ptr, blocks as i64);
            let b1 = b.ins().smin(b1, all);
            let xo = b.ins().imul_imm_s(row, x_row);
            let xr = b.ins().iadd(x, xo);
            let yo = b.ins().imul_imm_s(row, y_row);
            let yr = b.ins().iadd(y, yo);
            let callee = b.ins().iconst(ptr, kernel as i64);
            b.ins().call_indirect(sig, callee, &[pgeo, pw, xr, pcorr, pscale, yr, b0, b1]);
        });
    })?;
    Ok(Emitted::parallel(func, aux, units as u64))
}
