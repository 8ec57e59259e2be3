//! Convs with one output pixel per image whose window is the whole input (a 1×1 conv on a 1×1
//! map, e.g. after global pooling, or a kernel the size of the input, unpadded): a
//! matrix-vector product `y = W·x` per image, with `K` = input channels × taps. The weights
//! are packed at load into 8-channel panels (`[panel][K][8]`, so they stream with unit stride
//! and every load feeds one FMA); the generated driver calls the AVX2/FMA routine
//! `sgemv_panels` ([`Microkernels::sgemv_panels`]) per block of panels and image, which adds
//! bias and residual and applies the activation in registers.
//!
//! Gemm and 2-D MatMul with few rows and constant weights (batch-1 fully connected layers)
//! take the same route ([`emit_dense`], called by `gemm`): each row of A is one image.
//!
//! Work units: blocks of panels (for every image of the batch); a channel's sum depends only
//! on `K` (see `sgemv_panels`), never on the block it falls in.

use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, types};
use cranelift_codegen::isa::CallConv;

use super::super::builder::{for_range, unit_span, units_of};
use super::super::gemm::kit;
use super::{AuxList, Geo, const_f32};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};
use crate::microkernel::{Act, BIAS, GEMV_PANEL, Microkernels, RESIDUAL};

/// Multiply-adds a work unit aims at (with the weights streaming from memory, ~10 µs).
const UNIT_MACS: usize = 1 << 16;

/// Whether this conv is a matrix-vector product per image: one group, one output pixel, the
/// kernel covering the input exactly (no leading padding, no dilation), constant weights, a
/// non-empty reduction and output, and an activation [`Act`] has.
pub(super) fn supports(cx: &EmitCx, geo: &Geo, ep: &Epilogue) -> bool {
    let act_ok = act_ok(ep);
    let window = (0..3).all(|a| geo.k[a] == geo.inp[a] && geo.pb[a] == 0 && (geo.k[a] == 1 || geo.d[a] == 1));
    act_ok
        && window
        && geo.group == 1
        && geo.out_len() == 1
        && geo.cg * geo.kvol() > 0
        && geo.m() > 0
        && geo.batch > 0
        && const_f32(cx, 1).is_some()
}

/// Packs the weights `[m][K]` into `[panel][K][8]`, channels past `m` zero.
fn pack(w: &[f32], m: usize, k: usize) -> Vec<f32> {
    let panels = m.div_ceil(GEMV_PANEL);
    let mut out = vec![0f32; panels * k * GEMV_PANEL];
    for (oc, row) in w.chunks_exact(k).take(m).enumerate() {
        let (p, l) = (oc / GEMV_PANEL, oc % GEMV_PANEL);
        for (kk, &v) in row.iter().enumerate() {
            out[(p * k + kk) * GEMV_PANEL + l] = v;
        }
    }
    out
}

pub(super) fn emit(
    jit: &mut Jit,
    cx: &EmitCx,
    geo: &Geo,
    ep: &Epilogue,
    mk: Microkernels,
) -> Result<Emitted, CompileError> {
    let w = const_f32(cx, 1).ok_or_else(|| cx.unsupported("a matrix-vector conv with runtime weights"))?;
    jit.note_variant("conv-gemv-avx2");
    let (m, k) = (geo.m(), geo.cg * geo.kvol());
    emit_panels(jit, cx, pack(w, m, k), m, k, geo.batch, ep, mk)
}

/// Most rows of A for which [`emit_dense`] runs a Gemm or MatMul as one matrix-vector product
/// per row (each row streams all the weights once; with more rows the register-tiled GEMM,
/// which reuses each weight load across 6 rows, wins).
pub(crate) const MAX_DENSE_ROWS: usize = 4;

/// `Y[r] = act(W·A[r] + bias (+ residual[r]))` for the `rows` rows of A (`k` f32 apart, as
/// the node's input 0), `W` the `n × k` weights given by `w(oc, kk)` and `bias` the node's
/// input 2 if it has one (`n` contiguous f32): a Gemm (`alpha = beta = 1`, C of shape `[n]` or
/// `[1, n]`) or a 2-D MatMul with constant weights and at most [`MAX_DENSE_ROWS`] rows, on
/// `sgemv_panels` instead of the Cranelift f32x4 GEMV (mnist_cnn's 3136 → 128 layer: 18 →
/// 70 GFLOP/s-class, the weights streaming through one FMA per load). The caller checks
/// those conditions and that `ep`'s activation has an [`Act`] form.
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_dense(
    jit: &mut Jit,
    cx: &EmitCx,
    w: impl Fn(usize, usize) -> f32,
    rows: usize,
    k: usize,
    n: usize,
    ep: &Epilogue,
    mk: Microkernels,
) -> Result<Emitted, CompileError> {
    jit.note_variant("gemv-avx2");
    let dense: Vec<f32> = (0..n).flat_map(|oc| (0..k).map(move |kk| (oc, kk))).map(|(oc, kk)| w(oc, kk)).collect();
    emit_panels(jit, cx, pack(&dense, n, k), n, k, rows, ep, mk)
}

/// Whether `sgemv_panels` applies `ep`'s activation (every fusible one has an [`Act`] form).
pub(crate) fn act_ok(ep: &Epilogue) -> bool {
    ep.act.is_none_or(|op| Act::of(op).is_some())
}

/// The driver of both: `batch` matrix-vector products `y[b] = W·x[b]` (`x[b]` the `k` f32 of
/// input 0 at `b·k`, `y[b]` the `m` f32 of the output at `b·m`) over the packed weights `a`,
/// with bias (input 2, if the node has one), residual and activation from `ep`.
#[allow(clippy::too_many_arguments)]
fn emit_panels(
    jit: &mut Jit,
    cx: &EmitCx,
    a_packed: Vec<f32>,
    m: usize,
    k: usize,
    batch: usize,
    ep: &Epilogue,
    mk: Microkernels,
) -> Result<Emitted, CompileError> {
    let panels = m.div_ceil(GEMV_PANEL);
    let per_unit = UNIT_MACS.div_ceil(k * GEMV_PANEL * batch).clamp(1, panels);
    let units = units_of(panels as i64, per_unit as i64);
    let mut aux = AuxList::new(cx);
    let a_arg = aux.push(Aux::F32(a_packed));
    let bias_arg = (ep.op_inputs(cx) > 2).then(|| cx.in_arg(2));
    let res_arg = ep.residual;
    let act = ep.act.and_then(Act::of);
    let (p0, p1) = act.map_or((0.0, 0.0), Act::params);
    let flags = act.map_or(0, Act::flags)
        | if bias_arg.is_some() { BIAS } else { 0 }
        | if res_arg.is_some() { RESIDUAL } else { 0 };
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let a = kb.arg(a_arg);
        let bias = bias_arg.map(|i| kb.arg(i));
        let res = res_arg.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let mut sig = Signature::new(CallConv::SystemV);
        for t in [ptr, ptr, ptr, ptr, ptr, ptr, types::I32, ptr, ptr, types::F32, types::F32] {
            sig.params.push(AbiParam::new(t));
        }
        let sig = b.import_signature(sig);
        let (q0, q1) = unit_span(b, lo, hi, panels as i64, per_unit as i64);
        // Every unit's panels, one call per image.
        let (start, end) = (q0, q1);
        // An empty unit range gives no panels (the routine then does nothing).
        let n_panels = b.ins().isub(end, start);
        let none = b.ins().iconst(ptr, 0);
        let n_panels = b.ins().smax(n_panels, none);
        let c0 = b.ins().imul_imm_s(start, GEMV_PANEL as i64);
        let m_v = b.ins().iconst(ptr, m as i64);
        let left = b.ins().isub(m_v, c0);
        let span = b.ins().imul_imm_s(n_panels, GEMV_PANEL as i64);
        let valid = b.ins().smin(left, span);
        let valid = b.ins().smax(valid, none);
        let a_u = kit::offset(b, a, start, (k * GEMV_PANEL * 4) as i64, 0);
        let zero = b.ins().iconst(ptr, 0);
        let bias_u = bias.map_or(zero, |p| kit::offset(b, p, c0, 4, 0));
        let k_v = b.ins().iconst(ptr, k as i64);
        let body = |b: &mut cranelift_frontend::FunctionBuilder, n| {
            let x_n = kit::offset(b, x, n, (k * 4) as i64, 0);
            let y_n = kit::offset(b, y, n, (m * 4) as i64, 0);
            let y_u = kit::offset(b, y_n, c0, 4, 0);
            let zero = b.ins().iconst(ptr, 0);
            let res_u = match res {
                Some(r) => {
                    let r_n = kit::offset(b, r, n, (m * 4) as i64, 0);
                    kit::offset(b, r_n, c0, 4, 0)
                }
                None => zero,
            };
            let f = b.ins().iconst(types::I32, i64::from(flags));
            let (p0, p1) = (b.ins().f32const(p0), b.ins().f32const(p1));
            let callee = b.ins().iconst(ptr, mk.sgemv_panels as i64);
            let args = [k_v, a_u, x_n, y_u, valid, n_panels, f, bias_u, res_u, p0, p1];
            b.ins().call_indirect(sig, callee, &args);
        };
        for_range(b, 0, batch as i64, 1, body);
    })?;
    Ok(Emitted::parallel(func, aux.bufs, units))
}
