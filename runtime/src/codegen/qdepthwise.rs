//! Depthwise quantized convs (`QLinear` over a 1-D or 2-D conv with one input and one output
//! channel per group) with a quantized output, on the kernel
//! [`QKernels::depthwise`](crate::microkernel::int8::QKernels::depthwise) (AVX2, both int8
//! tiers; `vpdpwssd` on the VNNI tier):
//! the generated driver decodes each work unit into a block of (image, channel) planes and a
//! block of output rows and calls the kernel once for it through `call_indirect`.
//!
//! At load the weights are centred (`w − zw[c]`) and packed in the kernel's tap pairs
//! (`[C][⌈taps/2⌉]` i32, two i16 each) and the per-channel requantization multipliers `m[c]`
//! computed as [`QLinear::requant_scale`]; the bias input is passed as it is. Every output is the exact
//! i32 sum the reference computes, so results do not depend on the units or threads.

use cnnc_ir::{ConvAttrs, DType, Op, QLinear, QLinearOut, TensorData};
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, types};
use cranelift_codegen::isa::CallConv;

use super::gemm::kit::for_dyn;
use super::{Aux, CompileError, EmitCx, Emitted, Jit};
use crate::microkernel::int8::{QKernels, QdwGeo};

/// Multiply-adds a work unit aims at (about 20–40 µs at the kernel's speed).
const UNIT_MACS: usize = 1 << 19;
/// Fewest work units when there is enough work: two threads each get some.
const MIN_UNITS: usize = 2;

/// Whether the kernel computes this quantized op: a conv over 1 or 2 spatial axes with
/// `group = C_in = C_out`, constant u8/i8 weights, a constant i32 bias (or none), u8/i8 input
/// and a quantized output.
pub(crate) fn supports(cx: &EmitCx, q: &QLinear) -> bool {
    let Op::Conv(a) = &q.base else { return false };
    let (xs, ys) = (&cx.inputs[0].shape, &cx.outputs[0].shape);
    let ws = &cx.inputs[1].shape;
    let weights = cx.consts.get(1).copied().flatten().is_some_and(|w| w.dtype().is_quantized());
    let bias = cx.inputs.len() < 3 || cx.consts.get(2).copied().flatten().and_then(|b| b.as_i32()).is_some();
    a.kernel.len() <= 2
        && xs.len() == a.kernel.len() + 2
        && a.group == xs[1]
        && ys[1] == xs[1]
        && ws.get(1) == Some(&1)
        && weights
        && bias
        && cx.inputs[0].dtype.is_quantized()
        && matches!(q.out, QLinearOut::Quantized { .. })
        && q.out_bounds().is_some()
}

/// The centred weights packed as the kernel's tap pairs (`[C][pairs]`, the weight of tap `a`
/// in the low i16, of tap `b` or 0 in the high one; [`QdwGeo::pairing`]).
fn weight_pairs(cx: &EmitCx, q: &QLinear, geo: &QdwGeo) -> Option<Vec<u32>> {
    let w = cx.consts.get(1).copied().flatten()?;
    let v: Vec<i32> = match w.data() {
        TensorData::U8(v) => v.iter().map(|&b| i32::from(b)).collect(),
        TensorData::I8(v) => v.iter().map(|&b| i32::from(b)).collect(),
        _ => return None,
    };
    let taps = geo.kh * geo.kw;
    let zw = |ch: usize| if q.w.axis.is_some() { q.w.zero_points[ch] } else { q.w.zero_points[0] };
    let tap = |ch: usize, t: usize| (v[ch * taps + t] - zw(ch)) as i16 as u16 as u32;
    let (pairs, _) = geo.pairing();
    let packed = (0..geo.channels)
        .flat_map(|ch| pairs.iter().map(move |p| (ch, *p)))
        .map(|(ch, p)| tap(ch, p.a) | p.b.map_or(0, |b| tap(ch, b) << 16))
        .collect();
    Some(packed)
}

pub(crate) fn emit(
    jit: &mut Jit,
    cx: &EmitCx,
    q: &QLinear,
    a: &ConvAttrs,
    mk: QKernels,
) -> Result<Emitted, CompileError> {
    let (xs, ys) = (&cx.inputs[0].shape, &cx.outputs[0].shape);
    let two = |v: &[usize], fill: usize| if v.len() == 2 { [v[0], v[1]] } else { [fill, v[0]] };
    let sp = |s: &[usize]| if s.len() == 4 { [s[2], s[3]] } else { [1, s[2]] };
    let ns = a.kernel.len();
    let (batch, c) = (xs[0], xs[1]);
    let (inp, out) = (sp(xs), sp(ys));
    let (k, s, d, p) = (two(&a.kernel, 1), two(&a.strides, 1), two(&a.dilations, 1), two(&a.pads[..ns], 0));
    let QLinearOut::Quantized { params, to } = &q.out else {
        return Err(cx.unsupported("a depthwise quantized conv without a quantized output"));
    };
    let (lo, hi) = q.out_bounds().ok_or_else(|| cx.unsupported("invalid output bounds"))?;
    let geo = QdwGeo {
        ih: inp[0],
        iw: inp[1],
        oh: out[0],
        ow: out[1],
        kh: k[0],
        kw: k[1],
        sh: s[0],
        sw: s[1],
        dh: d[0],
        dw: d[1],
        ph: p[0],
        pw: p[1],
        channels: c,
        zx: q.x.zero_points[0],
        zy: params.zero_points[0],
        lo,
        hi,
        x_i8: cx.inputs[0].dtype == DType::I8,
        out_i8: *to == DType::I8,
        small_scales: (0..c).all(|ch| q.requant_scale(ch).abs() <= 0.5),
    };
    let taps = k[0] * k[1];
    let planes = batch * c;
    if planes == 0 || out[0] * out[1] == 0 || taps == 0 {
        let func = jit.kernel(cx.name, |_| {})?;
        return Ok(Emitted::serial(func, Vec::new()));
    }
    let w = weight_pairs(cx, q, &geo).ok_or_else(|| cx.unsupported("quantized weights that are not u8/i8"))?;
    let scale: Vec<f32> = (0..c).map(|ch| q.requant_scale(ch)).collect();
    // Units: blocks of planes, or (when there are fewer planes than MIN_UNITS, or one plane
    // is more than a unit's work) blocks of rows of single planes.
    let plane_macs = out[0] * out[1] * taps;
    let row_blocks = if planes >= MIN_UNITS {
        plane_macs.div_ceil(UNIT_MACS)
    } else {
        MIN_UNITS.div_ceil(planes).max(plane_macs.div_ceil(UNIT_MACS))
    }
    .clamp(1, out[0]);
    let rows_per_unit = out[0].div_ceil(row_blocks);
    let row_blocks = out[0].div_ceil(rows_per_unit);
    let planes_per_unit =
        if row_blocks > 1 { 1 } else { UNIT_MACS.div_ceil(plane_macs).min(planes.div_ceil(MIN_UNITS)).max(1) };
    let plane_blocks = planes.div_ceil(planes_per_unit);
    let units = plane_blocks * row_blocks;

    let aux = vec![Aux::I64(geo.table()), Aux::U32(w), Aux::F32(scale), Aux::Scratch(geo.scratch_bytes())];
    let [geo_arg, w_arg, scale_arg, scratch_arg] = [0, 1, 2, 3].map(|i| cx.aux_arg(i));
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let bias_arg = (cx.inputs.len() > 2).then(|| cx.in_arg(2));
    jit.note_variant(mk.depthwise_variant);
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let [pgeo, pw, pscale, pscr] = [geo_arg, w_arg, scale_arg, scratch_arg].map(|i| kb.arg(i));
        let bias = bias_arg.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let mut sig = Signature::new(CallConv::SystemV);
        for _ in 0..11 {
            sig.params.push(AbiParam::new(ptr));
        }
        let sig = b.import_signature(sig);
        let null = b.ins().iconst(ptr, 0);
        let pbias = bias.unwrap_or(null);
        for_dyn(b, lo, hi, 1, |b, u| {
            // u = plane block · row_blocks + row block
            let rb = b.ins().urem_imm_u(u, row_blocks as i64);
            let pb = b.ins().udiv_imm_u(u, row_blocks as i64);
            let p0 = b.ins().imul_imm_s(pb, planes_per_unit as i64);
            let p1 = b.ins().iadd_imm_s(p0, planes_per_unit as i64);
            let all = b.ins().iconst(ptr, planes as i64);
            let p1 = b.ins().smin(p1, all);
            let r0 = b.ins().imul_imm_s(rb, rows_per_unit as i64);
            let r1 = b.ins().iadd_imm_s(r0, rows_per_unit as i64);
            let oh = b.ins().iconst(ptr, out[0] as i64);
            let r1 = b.ins().smin(r1, oh);
            let args = [pgeo, x, pw, pbias, pscale, y, p0, p1, r0, r1, pscr];
            let callee = b.ins().iconst(ptr, mk.depthwise as i64);
            b.ins().call_indirect(sig, callee, &args);
        });
    })?;
    Ok(Emitted::parallel(func, aux, units as u64))
}
