//! Depthwise 2-D convs (one input channel per group) on the host's AVX2/FMA routine
//! `dw_conv_2d` ([`Microkernels::dw_conv_2d`]): the generated driver loops over the work
//! units and the output channels of each, and calls the routine once per (channel, block of
//! output rows; one call for all of a unit's channels when they are consecutive) through
//! `call_indirect`. The routine stages the input rows a band of output rows reads into the
//! per-thread [`Aux::Scratch`] (zero-padded, split into column phases for strided convs), then
//! computes register tiles of 8 output rows × 8 columns with each tap's weight broadcast (3×3
//! kernels of row stride 1–2: 4 rows, the 9 weights in registers, each input vector loaded once
//! for every output row that uses it), and applies bias, residual and activation in registers
//! before the store.
//!
//! Each output element is `bias + Σ taps` in row-major tap order, one FMA per tap, then the
//! residual and the activation: the Cranelift kernel's operations in its order (it skips the
//! padding taps, which this one multiplies by zero), so the two paths agree bit for bit on
//! finite data except for the sign of a zero.
//!
//! Work units: as the Cranelift depthwise kernel (blocks of output channels × blocks of output
//! rows); a unit's rows are split into staging bands inside the routine, which changes no sum.

use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, types};
use cranelift_codegen::isa::CallConv;

use super::super::builder::unit_span;
use super::super::gemm::kit::{self, for_dyn};
use super::depthwise::Units;
use super::{AuxList, Geo};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};
use crate::microkernel::{Act, BIAS, DwGeo, Microkernels, RESIDUAL};

/// Multiply-adds a work unit aims at (about 20 µs at the routine's speed).
const UNIT_MACS: usize = 1 << 18;

/// The routine's geometry when it handles this conv: 2-D (or 1-D), one input channel per
/// group, an output, a kernel at most [`crate::microkernel::DW_MAX_KW`] wide and a column
/// stride of at most 4, and an activation [`Act`] has (every one [`Epilogue::check`] admits).
pub(super) fn supports(geo: &Geo, ep: &Epilogue) -> Option<DwGeo> {
    let two_d = geo.inp[0] == 1 && geo.out[0] == 1 && geo.k[0] == 1;
    let act_ok = ep.act.is_none_or(|op| Act::of(op).is_some());
    if !two_d || !act_ok || geo.cg != 1 || geo.batch * geo.m() == 0 {
        return None;
    }
    let two = |v: [usize; 3]| [v[1], v[2]];
    DwGeo::new(two(geo.inp), two(geo.out), two(geo.k), two(geo.s), two(geo.d), two(geo.pb))
}

pub(super) fn emit(
    jit: &mut Jit,
    cx: &EmitCx,
    geo: &Geo,
    dg: DwGeo,
    ep: &Epilogue,
    mk: Microkernels,
) -> Result<Emitted, CompileError> {
    jit.note_variant("conv-depthwise-avx2");
    let mut aux = AuxList::new(cx);
    let geo_arg = aux.push(Aux::I64(dg.table()));
    let scratch_arg = aux.push(Aux::Scratch(dg.scratch_floats() * 4));
    let bias_arg = (ep.op_inputs(cx) > 2).then(|| cx.in_arg(2));
    let res_arg = ep.residual;
    let act = ep.act.and_then(Act::of);
    let (p0, p1) = act.map_or((0.0, 0.0), Act::params);
    let flags = act.map_or(0, Act::flags)
        | if bias_arg.is_some() { BIAS } else { 0 }
        | if res_arg.is_some() { RESIDUAL } else { 0 };
    let (x_arg, w_arg, y_arg) = (cx.in_arg(0), cx.in_arg(1), cx.out_arg(0));
    let (in_len, out_len, kvol) = (geo.in_len() as i64, geo.out_len() as i64, geo.kvol() as i64);
    let plan = Units::new(geo, UNIT_MACS);
    // One image and one output channel per group: channel `c` reads input plane, weights and
    // bias `c`.
    let contiguous = geo.batch == 1 && geo.mg == 1;
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let w = kb.arg(w_arg);
        let bias = bias_arg.map(|a| kb.arg(a));
        let res = res_arg.map(|a| kb.arg(a));
        let geo_t = kb.arg(geo_arg);
        let scratch = kb.arg(scratch_arg);
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let mut sig = Signature::new(CallConv::SystemV);
        for t in [ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, types::I32, types::F32, types::F32] {
            sig.params.push(AbiParam::new(t));
        }
        let sig = b.import_signature(sig);
        let mg = geo.mg as i64;
        let per_image = (geo.group * geo.mg) as i64;
        let (u0, u1) = unit_span(b, lo, hi, plan.units() as i64, 1);
        for_dyn(b, u0, u1, 1, |b, u| {
            let (cb, rb) = if plan.row_blocks > 1 {
                (b.ins().udiv_imm_u(u, plan.row_blocks as i64), b.ins().urem_imm_u(u, plan.row_blocks as i64))
            } else {
                (u, b.ins().iconst(ptr, 0))
            };
            let cb1 = b.ins().iadd_imm_s(cb, 1);
            let (c0, c1) = unit_span(b, cb, cb1, plan.chans as i64, plan.chans_per_unit as i64);
            let (r0, r1) = if plan.row_blocks > 1 {
                let rb1 = b.ins().iadd_imm_s(rb, 1);
                unit_span(b, rb, rb1, plan.rows as i64, plan.rows_per_unit as i64)
            } else {
                (b.ins().iconst(ptr, 0), b.ins().iconst(ptr, plan.rows as i64))
            };
            let zero = b.ins().iconst(ptr, 0);
            let f = b.ins().iconst(types::I32, i64::from(flags));
            let (p0, p1) = (b.ins().f32const(p0), b.ins().f32const(p1));
            let callee = b.ins().iconst(ptr, mk.dw_conv_2d as i64);
            if contiguous {
                // One call for the unit's channels, which are consecutive in every operand.
                let x_c = kit::offset(b, x, c0, in_len * 4, 0);
                let y_c = kit::offset(b, y, c0, out_len * 4, 0);
                let w_c = kit::offset(b, w, c0, kvol * 4, 0);
                let bias_c = bias.map_or(zero, |p| kit::offset(b, p, c0, 4, 0));
                let res_c = res.map_or(zero, |p| kit::offset(b, p, c0, out_len * 4, 0));
                let n = b.ins().isub(c1, c0);
                let args = [geo_t, x_c, w_c, bias_c, res_c, y_c, r0, r1, n, scratch, f, p0, p1];
                b.ins().call_indirect(sig, callee, &args);
                return;
            }
            // Output channel `c` of the batch: image `c / per_image`, channel `m` of the image,
            // reading input channel `m / mg` of the image.
            for_dyn(b, c0, c1, 1, |b, c| {
                let n = b.ins().udiv_imm_u(c, per_image);
                let m = b.ins().urem_imm_u(c, per_image);
                let g = b.ins().udiv_imm_u(m, mg);
                let ig = b.ins().imul_imm_s(n, geo.group as i64);
                let ig = b.ins().iadd(ig, g);
                let x_c = kit::offset(b, x, ig, in_len * 4, 0);
                let y_c = kit::offset(b, y, c, out_len * 4, 0);
                let w_m = kit::offset(b, w, m, kvol * 4, 0);
                let bias_m = bias.map_or(zero, |p| kit::offset(b, p, m, 4, 0));
                let res_c = res.map_or(zero, |p| kit::offset(b, p, c, out_len * 4, 0));
                let one = b.ins().iconst(ptr, 1);
                let args = [geo_t, x_c, w_m, bias_m, res_c, y_c, r0, r1, one, scratch, f, p0, p1];
                b.ins().call_indirect(sig, callee, &args);
            });
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, plan.units()))
}
