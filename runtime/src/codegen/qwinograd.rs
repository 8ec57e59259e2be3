//! Quantized 3×3 stride-1 convs by exact Winograd F(2×2, 3×3) (`QLinear` over a conv whose
//! `algo` is `Winograd2`), on the kernel
//! [`QKernels::winograd`](crate::microkernel::int8::QKernels::winograd) (AVX2, both int8
//! tiers): the generated driver decodes each work unit into an image and a band of output tile
//! rows and calls the kernel once for it through `call_indirect`.
//!
//! At load the weights are centred (`w − zw[c]`) and transformed into the kernel's 16 i16
//! GEMM panels ([`winograd_weights`]), and the per-channel requantization multipliers computed
//! as [`QLinear::requant_scale`]; the bias input is passed as it is. Every output is the exact
//! i32 sum the reference computes (the kernel's module doc), so the results equal the direct
//! conv's bit for bit and do not depend on the units or threads. Layers whose sums could leave
//! the range where the transform is exact ([`QwGeo::exact_bound`]) run the direct conv.

use cnnc_ir::{ConvAlgo, ConvAttrs, DType, Op, QLinear, QLinearOut, TensorData};
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, types};
use cranelift_codegen::isa::CallConv;

use super::gemm::kit::{for_dyn, offset};
use super::{Aux, CompileError, EmitCx, Emitted, Jit};
use crate::microkernel::int8::{QKernels, QwGeo, winograd_weights};

/// Output tiles a work unit aims at: whole tile rows adding up to about this many.
const UNIT_TILES: usize = 96;

/// The centred weights `[C_out][C_in·9]` (`w − zw[c]`), if they are constant u8/i8.
fn centred_weights(cx: &EmitCx, q: &QLinear, c_out: usize) -> Option<Vec<i32>> {
    let w = cx.consts.get(1).copied().flatten()?;
    let v: Vec<i32> = match w.data() {
        TensorData::U8(v) => v.iter().map(|&b| i32::from(b)).collect(),
        TensorData::I8(v) => v.iter().map(|&b| i32::from(b)).collect(),
        _ => return None,
    };
    let k = v.len() / c_out.max(1);
    let zw = |ch: usize| if q.w.axis.is_some() { q.w.zero_points[ch] } else { q.w.zero_points[0] };
    Some(v.iter().enumerate().map(|(i, &w)| w - zw(i / k)).collect())
}

/// Whether the kernel computes this quantized op: a 2-D 3×3 stride-1 undilated conv of one
/// group marked `Winograd2`, with constant u8/i8 weights whose sums stay exact, a constant i32
/// bias (or none), u8/i8 input and a quantized output.
pub(crate) fn supports(cx: &EmitCx, q: &QLinear) -> bool {
    let Op::Conv(a) = &q.base else { return false };
    let (xs, ys) = (&cx.inputs[0].shape, &cx.outputs[0].shape);
    let bias = cx.inputs.len() < 3 || cx.consts.get(2).copied().flatten().and_then(|b| b.as_i32()).is_some();
    a.algo == ConvAlgo::Winograd2
        && a.winograd_eligible()
        && xs.len() == 4
        && ys.len() == 4
        && bias
        && cx.inputs[0].dtype.is_quantized()
        && matches!(q.out, QLinearOut::Quantized { .. })
        && q.out_bounds().is_some()
        && centred_weights(cx, q, ys[1]).is_some_and(|w| QwGeo::exact_bound(&w, ys[1]))
}

pub(crate) fn emit(
    jit: &mut Jit,
    cx: &EmitCx,
    q: &QLinear,
    a: &ConvAttrs,
    mk: QKernels,
) -> Result<Emitted, CompileError> {
    let (xs, ys) = (&cx.inputs[0].shape, &cx.outputs[0].shape);
    let (batch, c_in, c_out) = (xs[0], xs[1], ys[1]);
    let QLinearOut::Quantized { params, to } = &q.out else {
        return Err(cx.unsupported("a Winograd quantized conv without a quantized output"));
    };
    let (lo, hi) = q.out_bounds().ok_or_else(|| cx.unsupported("invalid output bounds"))?;
    let (oh, ow) = (ys[2], ys[3]);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    // Whole tile rows per unit, at least two units when there are two tile rows.
    let mut rows = UNIT_TILES.div_ceil(tw.max(1)).clamp(1, th.max(1));
    if batch * th.div_ceil(rows) < 2 && th >= 2 {
        rows = th.div_ceil(2);
    }
    let geo = QwGeo {
        ih: xs[2],
        iw: xs[3],
        oh,
        ow,
        ph: a.pads[0],
        pw: a.pads[1],
        c_in,
        c_out,
        zx: q.x.zero_points[0],
        zy: params.zero_points[0],
        lo,
        hi,
        x_i8: cx.inputs[0].dtype == DType::I8,
        out_i8: *to == DType::I8,
        rows_per_unit: rows,
    };
    if batch == 0 || oh * ow == 0 || c_out == 0 {
        let func = jit.kernel(cx.name, |_| {})?;
        return Ok(Emitted::serial(func, Vec::new()));
    }
    let w = centred_weights(cx, q, c_out).ok_or_else(|| cx.unsupported("quantized weights that are not u8/i8"))?;
    let panels: Vec<u8> = winograd_weights(&w, c_out, c_in).iter().flat_map(|v| v.to_le_bytes()).collect();
    let scale: Vec<f32> = (0..c_out).map(|ch| q.requant_scale(ch)).collect();
    let row_blocks = th.div_ceil(rows);
    let units = batch * row_blocks;
    let aux = vec![Aux::I64(geo.table()), Aux::Bytes(panels), Aux::F32(scale), Aux::Scratch(geo.scratch_bytes())];
    let [geo_arg, a_arg, scale_arg, scratch_arg] = [0, 1, 2, 3].map(|i| cx.aux_arg(i));
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let bias_arg = (cx.inputs.len() > 2).then(|| cx.in_arg(2));
    let (in_image, out_image) = ((c_in * xs[2] * xs[3]) as i64, (c_out * oh * ow) as i64);
    jit.note_variant("qconv-winograd-f2-avx2");
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let [pgeo, pa, pscale, pscr] = [geo_arg, a_arg, scale_arg, scratch_arg].map(|i| kb.arg(i));
        let bias = bias_arg.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let mut sig = Signature::new(CallConv::SystemV);
        for _ in 0..9 {
            sig.params.push(AbiParam::new(ptr));
        }
        let sig = b.import_signature(sig);
        let null = b.ins().iconst(ptr, 0);
        let pbias = bias.unwrap_or(null);
        for_dyn(b, lo, hi, 1, |b, u| {
            // u = image · row_blocks + row block
            let rb = b.ins().urem_imm_u(u, row_blocks as i64);
            let n = b.ins().udiv_imm_u(u, row_blocks as i64);
            let ty0 = b.ins().imul_imm_s(rb, rows as i64);
            let ty1 = b.ins().iadd_imm_s(ty0, rows as i64);
            let all = b.ins().iconst(ptr, th as i64);
            let ty1 = b.ins().smin(ty1, all);
            let xn = offset(b, x, n, in_image, 0);
            let yn = offset(b, y, n, out_image, 0);
            let args = [pgeo, xn, pa, pbias, pscale, yn, ty0, ty1, pscr];
            let callee = b.ins().iconst(ptr, mk.winograd as i64);
            b.ins().call_indirect(sig, callee, &args);
        });
    })?;
    Ok(Emitted::parallel(func, aux, units as u64))
}
