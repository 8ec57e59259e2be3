//! 1×1 convs on small output maps as the transposed GEMM `Yᵀ[p][m] = Σ_k X[p][k]·W[k][m]`:
//! output pixels are the microkernel's 6-row side (12 on the AVX-512 tile set:
//! `Microkernels::small`'s `t_pixels`), read in place from the input (a load-time
//! table of each pixel's input offset; any stride, no padding read), and output channels its
//! 16-wide side (weights packed at load into 16-channel panels `[group][tile][K][16]`). The
//! transposed tile (`sgemm_t`) keeps the whole reduction in registers and stores transposed, with the
//! bias, residual and activation applied before the store.
//!
//! Why: with 49 or 196 output pixels the channel-major tile fills its 16-pixel strips badly
//! (49 = 3·16 + 1), splits K = 512, 1024 into blocks that re-read and re-write C, and packs B
//! once per chunk of channel tiles; here 6-pixel tiles waste at most 5 rows per layer, no
//! packing or scratch is needed and each output element is written once.
//!
//! Work units: (batch, group, chunk of channel tiles, block of pixel tiles); a unit runs its
//! channel tiles, each over its pixel tiles (large maps split pixels once a chunk is one
//! channel tile). Each output element's sum is one `sgemm_t` call over all of K, so
//! any split gives the same bits.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

use super::super::super::gemm::kit::{self, for_dyn};
use super::super::{AuxList, Geo, const_f32};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};
use crate::microkernel::{self, Act, BIAS, MR, Microkernels, NR, RESIDUAL, T_WIDE};

/// Most output pixels for which the transposed GEMM is used. Measured on opennsfw's 1×1 convs
/// (1 thread, same run, GFLOP/s channel-major → transposed): at 7×7, 1024 → 256 52 → 72,
/// 512 → 1024 stride 2 44 → 72, 256 → 1024 70 → 67; at 14×14, 512 → 128 75 → 100, 128 → 512
/// 86 → 97, 256 → 512 stride 2 50 → 71.
const MAX_PIXELS: usize = 256;
/// Up to this many output pixels the transposed GEMM is also used for strided convs (which
/// the channel-major path packs by gathering; at 28×28, 128 → 256 stride 2: 79 → 85)...
const MAX_PIXELS_STRIDED: usize = 1024;
/// ... and up to this many for at most [`FEW_CHANNELS`] output channels per group, which the
/// channel-major path splits into too few tiles to share its packing (at 28×28, 256 → 64:
/// 78 → 100, 128 → 64 stride 2: 43 → 88; at 56×56, 128 → 32: 73 → 94, 64 → 32: 70 → 81;
/// but stride 1 with more channels lost: 64 → 256 at 28×28 97 → 94).
const MAX_PIXELS_FEW_CHANNELS: usize = 4096;
const FEW_CHANNELS: usize = 64;
/// Fewest output channels per group (fewer leave the 16-wide side mostly empty).
const MIN_CHANNELS: usize = 32;
/// Fewest input channels per group for the few-channel rule on larger maps at stride 1:
/// shorter reductions spend most of each tile in its transposing store. Measured on the
/// AVX-512 host (1 thread, ms transposed → channel-major):
/// 32 → 36 channels at 31×31 0.040 → 0.025 and at 33×33 0.046 → 0.029; at K = 64 either
/// path can win (64 → 72 at 15×15 0.026 → 0.024, 64 → 32 at 28×28 0.033 → 0.040), and from
/// K = 96 the transposed tile mostly does (96 → 64 at 28×28 0.103 → 0.110, 1024 → 256 at 7×7
/// 0.25 → 0.37).
const MIN_K: usize = 48;
/// Fewest output pixels for the wide tile: its 64-channel weight panel (64 KiB at K = 256)
/// streams from L2 once per 6-pixel tile, which few pixel tiles do not repay. On opennsfw (1
/// thread, ms 12 × 16 → 6 × 64): at 28×28, 256 → 64 0.249 → 0.192, 512 → 256 stride 2 0.678 →
/// 0.566; at 14×14, 512 → 128 0.239 → 0.193, 128 → 512 0.266 → 0.253; at 7×7, 256 → 1024 0.297 →
/// 0.300–0.355 and 1024 → 256 0.280 → 0.281.
const WIDE_MIN_PIXELS: usize = 144;
/// Work per unit the channel chunks aim for, in multiply-adds (about 10 µs on one core).
const UNIT_MACS: usize = 1 << 20;

/// Whether a conv the packed path accepts goes this way: a 1×1 kernel whose every output
/// pixel reads inside the input, at most [`MAX_PIXELS`] output pixels (more when strided or
/// with few channels and at least [`MIN_K`] input channels, see below), at least
/// [`MIN_CHANNELS`] output channels per group, on channel planes that do not alias in L1
/// ([`Geo::planes_alias`]).
pub(super) fn supports(geo: &Geo) -> bool {
    let in_range = |axis: usize| (0..geo.out[axis]).all(|o| geo.taps(axis, o) == (0, 1));
    let n = geo.out_len();
    let strided = geo.s.iter().any(|&s| s > 1);
    geo.kvol() == 1
        && (n <= MAX_PIXELS
            || (n <= MAX_PIXELS_STRIDED && strided)
            || (n <= MAX_PIXELS_FEW_CHANNELS && geo.mg <= FEW_CHANNELS && (strided || geo.cg >= MIN_K)))
        && geo.mg >= MIN_CHANNELS
        && !geo.planes_alias(geo.cg)
        && (0..3).all(in_range)
        && geo.out_len() > 0
}

/// Packs the weights `[group·mg][cg]` into `[group][tile of tc][cg][tc]` (zero channels past
/// `mg`), `tc` the tile's channels (16, or 64 for the wide tile).
fn pack_w(geo: &Geo, w: &[f32], tc: usize) -> Vec<f32> {
    let tiles = geo.mg.div_ceil(tc);
    let mut out = vec![0f32; geo.group * tiles * geo.cg * tc];
    for g in 0..geo.group {
        for oc in 0..geo.mg {
            let (t, l) = (oc / tc, oc % tc);
            let src = &w[(g * geo.mg + oc) * geo.cg..][..geo.cg];
            let dst = (g * tiles + t) * geo.cg * tc + l;
            for (kk, &v) in src.iter().enumerate() {
                out[dst + kk * tc] = v;
            }
        }
    }
    out
}

/// Input element offset (within a channel plane) of each output pixel, padded to whole
/// `pr`-pixel tiles with pixel 0's (read, never stored).
fn pixel_offsets(geo: &Geo, pr: usize) -> Vec<i64> {
    let n = geo.out_len();
    let [_, ih, iw] = geo.inp;
    let [_, oh, ow] = geo.out;
    let mut offs = Vec::with_capacity(n.next_multiple_of(pr));
    for od in 0..geo.out[0] {
        for oy in 0..oh {
            for ox in 0..ow {
                let (id, iy, ix) = (od * geo.s[0], oy * geo.s[1], ox * geo.s[2]);
                offs.push(((id * ih + iy) * iw + ix) as i64);
            }
        }
    }
    offs.resize(n.next_multiple_of(pr), 0);
    offs
}

pub(super) fn emit(
    jit: &mut Jit,
    cx: &EmitCx,
    geo: &Geo,
    ep: &Epilogue,
    mk: Microkernels,
) -> Result<Emitted, CompileError> {
    let w = const_f32(cx, 1).ok_or_else(|| cx.unsupported("packed conv with runtime weights"))?;
    let (k_len, n_len, mg) = (geo.cg, geo.out_len(), geo.mg);
    // The wide tile (6 pixels × 64 channels, AVX-512) where every channel tile is whole and
    // the map has at least [`WIDE_MIN_PIXELS`]: 4 weight loads and 6 broadcasts feed 24 FMAs
    // per K step, against 1 and 12 for 12 of the 12 × 16 tile; in L1 154–170 GFLOP/s against
    // 129–137 (`examples/sgemm_tile_bench.rs`).
    let wide = mk.small.sgemm_t_wide != 0 && mg.is_multiple_of(T_WIDE) && n_len >= WIDE_MIN_PIXELS;
    jit.note_variant(if wide { "conv-packed-t64" } else { "conv-packed-t-avx2" });
    // Channels and pixels per tile, and the tile.
    let (tc, pr, tile_fn) =
        if wide { (T_WIDE, MR, mk.small.sgemm_t_wide) } else { (NR, mk.small.t_pixels, mk.small.sgemm_t) };
    let ctiles = mg.div_ceil(tc);
    let mut aux = AuxList::new(cx);
    let w_arg = aux.push(Aux::F32(pack_w(geo, w, tc)));
    let offs_arg = aux.push(Aux::I64(pixel_offsets(geo, pr)));
    let bias_arg = (ep.op_inputs(cx) > 2).then(|| cx.in_arg(2));
    let res_arg = ep.residual;
    let act = ep.act.and_then(Act::of);
    let (p0, p1) = act.map_or((0.0, 0.0), Act::params);
    let params = u64::from(p0.to_bits()) | (u64::from(p1.to_bits()) << 32);
    let flags = act.map_or(0, Act::flags)
        | if res_arg.is_some() { RESIDUAL } else { 0 }
        | if bias_arg.is_some() { BIAS } else { 0 };
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let outer = geo.batch * geo.group;
    if outer == 0 {
        let func = jit.kernel(cx.name, |_| {})?;
        return Ok(Emitted::serial(func, aux.bufs));
    }
    let chunk = UNIT_MACS.div_ceil(n_len * tc * k_len).clamp(1, ctiles);
    let chunks = ctiles.div_ceil(chunk);
    // Large maps (one channel tile per chunk already above the target) also split their pixel
    // tiles into blocks; the partial tile (if any) is in the last block.
    let ptiles = n_len.div_ceil(pr);
    let pblocks = if chunk == 1 { (n_len * tc * k_len / UNIT_MACS).clamp(1, ptiles) } else { 1 };
    let block_tiles = ptiles.div_ceil(pblocks);
    let pblocks = ptiles.div_ceil(block_tiles);
    let units = (outer * chunks * pblocks) as u64;
    let in_len = geo.in_len() as i64;
    let out_bytes = n_len as i64 * 4;
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let wp = kb.arg(w_arg);
        let offs = kb.arg(offs_arg);
        let bias = bias_arg.map(|i| kb.arg(i));
        let res = res_arg.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let mut sig = Signature::new(CallConv::SystemV);
        for t in [ptr, ptr, ptr, ptr, ptr, ptr, ptr, types::I32, ptr, ptr, types::I64] {
            sig.params.push(AbiParam::new(t));
        }
        let sig = b.import_signature(sig);
        for_dyn(b, lo, hi, 1, |b, u| {
            // u = ((n · group + g) · chunks + chunk) · pblocks + pixel block
            let pb = b.ins().urem_imm_u(u, pblocks as i64);
            let u = b.ins().udiv_imm_u(u, pblocks as i64);
            let ch = b.ins().urem_imm_u(u, chunks as i64);
            let ng = b.ins().udiv_imm_u(u, chunks as i64);
            let p0 = b.ins().imul_imm_s(pb, block_tiles as i64);
            let p_end = b.ins().iadd_imm_s(p0, block_tiles as i64);
            let full_p = b.ins().iconst(ptr, (n_len / pr) as i64);
            let p1 = b.ins().smin(p_end, full_p);
            let last_pb = b.ins().icmp_imm_s(IntCC::Equal, pb, pblocks as i64 - 1);
            let g = b.ins().urem_imm_u(ng, geo.group as i64);
            let x_g = kit::offset(b, x, ng, geo.cg as i64 * in_len * 4, 0);
            let y_g = kit::offset(b, y, ng, mg as i64 * out_bytes, 0);
            let r_g = res.map(|r| kit::offset(b, r, ng, mg as i64 * out_bytes, 0));
            let w_g = kit::offset(b, wp, g, (ctiles * k_len * tc * 4) as i64, 0);
            let bias_g = bias.map(|p| kit::offset(b, p, g, mg as i64 * 4, 0));
            // One channel tile `t` of `m` channels over every pixel tile.
            let tile_row = |b: &mut FunctionBuilder, t: cranelift_codegen::ir::Value, m: usize| {
                let w_t = kit::offset(b, w_g, t, (k_len * tc * 4) as i64, 0);
                let row_bytes = tc as i64 * out_bytes;
                let y_t = kit::offset(b, y_g, t, row_bytes, 0);
                let r_t = r_g.map(|r| kit::offset(b, r, t, row_bytes, 0));
                let bias_t = bias_g.map(|p| kit::offset(b, p, t, (tc * 4) as i64, 0));
                let call = |b: &mut FunctionBuilder, pt: cranelift_codegen::ir::Value, n: usize| {
                    let zero = b.ins().iconst(ptr, 0);
                    let offs_p = kit::offset(b, offs, pt, (pr * 8) as i64, 0);
                    let y_p = kit::offset(b, y_t, pt, (pr * 4) as i64, 0);
                    let r_p = r_t.map_or(zero, |r| kit::offset(b, r, pt, (pr * 4) as i64, 0));
                    let k_v = b.ins().iconst(ptr, k_len as i64);
                    let lda = b.ins().iconst(ptr, in_len);
                    let ldy = b.ins().iconst(ptr, n_len as i64);
                    // (The wide tile always stores its 64 channels.)
                    let f = b.ins().iconst(types::I32, i64::from(flags | microkernel::tile_flags(n, m.min(NR))));
                    let bias_v = bias_t.unwrap_or(zero);
                    let params = b.ins().iconst(ptr, params as i64);
                    let callee = b.ins().iconst(ptr, tile_fn as i64);
                    let args = [k_v, x_g, lda, offs_p, w_t, y_p, ldy, f, bias_v, r_p, params];
                    b.ins().call_indirect(sig, callee, &args);
                };
                for_dyn(b, p0, p1, 1, |b, pt| call(b, pt, pr));
                if !n_len.is_multiple_of(pr) {
                    let (then, join) = (b.create_block(), b.create_block());
                    b.ins().brif(last_pb, then, &[], join, &[]);
                    b.switch_to_block(then);
                    let pt = b.ins().iconst(ptr, (n_len / pr) as i64);
                    call(b, pt, n_len % pr);
                    b.ins().jump(join, &[]);
                    b.switch_to_block(join);
                }
            };
            let t0 = b.ins().imul_imm_s(ch, chunk as i64);
            let t_end = b.ins().iadd_imm_s(t0, chunk as i64);
            let full = b.ins().iconst(ptr, (mg / tc) as i64);
            let t1 = b.ins().smin(t_end, full);
            for_dyn(b, t0, t1, 1, |b, t| tile_row(b, t, tc));
            if !mg.is_multiple_of(tc) {
                // The partial channel tile belongs to the last chunk.
                let last = b.ins().icmp_imm_s(IntCC::Equal, ch, chunks as i64 - 1);
                let (then, join) = (b.create_block(), b.create_block());
                b.ins().brif(last, then, &[], join, &[]);
                b.switch_to_block(then);
                let t = b.ins().iconst(ptr, (mg / tc) as i64);
                tile_row(b, t, mg % tc);
                b.ins().jump(join, &[]);
                b.switch_to_block(join);
            }
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, units))
}
