//! 1×1 convs on small output maps as the transposed GEMM `Yᵀ[p][m] = Σ_k X[p][k]·W[k][m]`:
//! output pixels are the microkernel's 6-row side (12 on the AVX-512 tile set:
//! `Microkernels::small`'s `t_pixels`), read in place from the input (a load-time
//! table of each pixel's input offset; any stride, no padding read), and output channels its
//! 16-wide side (weights packed at load into 16-channel panels `[group][tile][K][16]`; on the
//! AVX-512 tile set 64-channel panels for the wide tile, 6 pixels × 64 channels, and 32-channel
//! panels for the two-panel tile, 12 × 32, where the channel tiles are whole). The
//! transposed tile (`sgemm_t`) keeps the whole reduction in registers and stores transposed, with the
//! bias, residual and activation applied before the store.
//!
//! Why: with 49 or 196 output pixels the channel-major tile fills its 16-pixel strips badly
//! (49 = 3·16 + 1), splits K = 512, 1024 into blocks that re-read and re-write C, and packs B
//! once per chunk of channel tiles; here 6-pixel tiles waste at most 5 rows per layer, no
//! packing or scratch is needed and each output element is written once.
//!
//! k×k convs on small maps ([`im2col_supports`]) take the same tiles: each work unit first
//! packs its block of pixels' im2col rows pixel-major into the kernel scratch
//! (`pack_im2col_t`, padding taps as zeros), which the tiles read with `lda = 1` through a
//! table of row offsets. The channel-major path packs B in 16-pixel strips that 49 or 196
//! pixels fill badly and reads its 6-row A panels with one broadcast per multiply-add; here
//! the 64-channel weight panel feeds four FMAs per broadcast.
//!
//! Work units: (batch, group, chunk of channel tiles, block of pixel tiles); a unit runs its
//! channel tiles, each over its pixel tiles (large maps split pixels once a chunk is one
//! channel tile), or, where all the weights fit in L1, each pixel tile through every channel
//! tile. With im2col a unit holds every channel tile (the block is packed once), unless the
//! weights outweigh the packed pixels: then every unit packs all pixels and takes a share of
//! the channel tiles (one per host thread), so each weight is read from memory once (256 →
//! 256 channels, 3×3 at 7×7: 0.60 → 0.48 ms). Each output element's sum is one `sgemm_t` call
//! over all of K, so any split gives the same bits.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, Value, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

use super::super::super::builder::if_then;
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
    if geo.kvol() > 1 {
        return im2col_supports(geo);
    }
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

/// Whether a k×k conv goes this way, its pixels packed pixel-major per block
/// (`pack_im2col_t`) for the transposed tiles to read with `lda = 1`: a 2-D conv with at
/// least [`MIN_CHANNELS`] output channels per group on a map of at most
/// [`MAX_PIXELS_IM2COL`] pixels ([`MAX_PIXELS_IM2COL_FEW`] below 64 channels). Against the
/// channel-major path (1 thread, same run, ms; AVX-512 host, then `CNNC_KERNELS=avx2`):
/// 3×3 128 → 128 at 14×14 0.90 → 0.41 and 0.96 → 0.59; 256 → 256 at 7×7 1.27 → 0.51 and 1.30
/// → 0.61; stride 2, 64 → 128 to 14×14 0.60 → 0.21 and 0.59 → 0.30; 7×7 stride 2, 3 → 64 to
/// 23×23 0.20 → 0.11 and 0.19 → 0.13; 3×3 64 → 64 at 40×40 1.33 → 0.98 (AVX-512). It loses on
/// larger maps (64 → 64 at 56×56 1.96 → 2.02, the 7×7 stride-2 stem to 112×112 1.84 → 2.55)
/// and with few channels (32 → 32 at 28×28 0.21 → 0.22, at 40×40 0.35 → 0.42; 48 → 48 at
/// 20×20 even).
fn im2col_supports(geo: &Geo) -> bool {
    let two_d = geo.inp[0] == 1 && geo.out[0] == 1 && geo.k[0] == 1;
    let max = if geo.mg >= FEW_CHANNELS { MAX_PIXELS_IM2COL } else { MAX_PIXELS_IM2COL_FEW };
    two_d && geo.out_len() > 0 && geo.out_len() <= max && geo.mg >= MIN_CHANNELS
}

/// Most output pixels of a k×k conv with at least [`FEW_CHANNELS`] output channels per group
/// on the transposed path ([`im2col_supports`])...
const MAX_PIXELS_IM2COL: usize = 1024;
/// ... and with fewer.
const MAX_PIXELS_IM2COL_FEW: usize = 256;

/// Most bytes of pixel-major im2col rows a unit that takes every pixel packs.
const IM2COL_ALL_BYTES: usize = 1 << 20;
/// Most bytes of pixel-major im2col rows a work unit packs at once.
const IM2COL_BLOCK_BYTES: usize = 192 << 10;

/// Packs the weights `[group·mg][cg]` into `[group][tile of tc][cg][tc]` (zero channels past
/// `mg`), `tc` the tile's channels (16, or 64 for the wide tile).
fn pack_w(geo: &Geo, w: &[f32], tc: usize) -> Vec<f32> {
    let tiles = geo.mg.div_ceil(tc);
    let k = geo.cg * geo.kvol();
    let mut out = vec![0f32; geo.group * tiles * k * tc];
    for g in 0..geo.group {
        for oc in 0..geo.mg {
            let (t, l) = (oc / tc, oc % tc);
            let src = &w[(g * geo.mg + oc) * k..][..k];
            let dst = (g * tiles + t) * k * tc + l;
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
    let (k_len, n_len, mg) = (geo.cg * geo.kvol(), geo.out_len(), geo.mg);
    // k×k convs read their pixels from pixel-major im2col rows packed per pixel block.
    let im2col = geo.kvol() > 1;
    // The wide tile (6 pixels × 64 channels, AVX-512) where every channel tile is whole and
    // the map has at least [`WIDE_MIN_PIXELS`]: 4 weight loads and 6 broadcasts feed 24 FMAs
    // per K step, against 1 and 12 for 12 of the 12 × 16 tile; in L1 154–170 GFLOP/s against
    // 129–137 (`examples/sgemm_tile_bench.rs`).
    let wide = mk.small.sgemm_t_wide != 0 && mg.is_multiple_of(T_WIDE) && n_len >= WIDE_MIN_PIXELS;
    // Else whole 32-channel tiles take the two-panel tile where the tile set has one (12
    // pixels × 32 channels, AVX-512: two weight loads and 12 broadcasts feed 24 FMAs).
    let two_panel = !wide && mk.small.sgemm_t_32 != 0 && mg.is_multiple_of(2 * NR);
    // Channels and pixels per tile, the tile, and its name.
    let (tc, pr, tile_fn, variant) = if wide {
        (T_WIDE, MR, mk.small.sgemm_t_wide, "conv-packed-t64")
    } else if two_panel {
        (2 * NR, mk.small.t_pixels, mk.small.sgemm_t_32, "conv-packed-t32")
    } else {
        (NR, mk.small.t_pixels, mk.small.sgemm_t, "conv-packed-t-avx2")
    };
    jit.note_variant(variant);
    let ctiles = mg.div_ceil(tc);
    let mut aux = AuxList::new(cx);
    let w_arg = aux.push(Aux::F32(pack_w(geo, w, tc)));
    let ptiles = n_len.div_ceil(pr);
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
    // With im2col, a unit packs its pixel block once for every channel tile; where the weights
    // outweigh the packed pixels, each unit takes every pixel and a share of the channel tiles
    // (one per host thread), so every weight streams in once.
    let (w_bytes, p_bytes) = (ctiles * tc * k_len * 4, ptiles * pr * k_len * 4);
    let weight_bound = im2col && w_bytes > p_bytes && p_bytes <= IM2COL_ALL_BYTES;
    let chunk = if weight_bound {
        ctiles.div_ceil(crate::threads::available().min(ctiles))
    } else if im2col {
        ctiles
    } else {
        UNIT_MACS.div_ceil(n_len * tc * k_len).clamp(1, ctiles)
    };
    let chunks = ctiles.div_ceil(chunk);
    // Large maps (one channel tile per chunk already above the target) also split their pixel
    // tiles into blocks, as do im2col units (blocks of about `UNIT_MACS` whose packed rows take
    // at most `IM2COL_BLOCK_BYTES`); the partial tile (if any) is in the last block.
    let pblocks = if weight_bound {
        1
    } else if im2col {
        let by_bytes = (ptiles * pr * k_len * 4).div_ceil(IM2COL_BLOCK_BYTES);
        (n_len * ctiles * tc * k_len / UNIT_MACS).max(by_bytes).clamp(1, ptiles)
    } else if chunk == 1 {
        (n_len * tc * k_len / UNIT_MACS).clamp(1, ptiles)
    } else {
        1
    };
    let block_tiles = ptiles.div_ceil(pblocks);
    let pblocks = ptiles.div_ceil(block_tiles);
    // Each pixel's input offset; with im2col, each packed row's offset in the scratch block.
    let offs_arg = aux.push(Aux::I64(if im2col {
        (0..block_tiles * pr).map(|r| (r * k_len) as i64).collect()
    } else {
        pixel_offsets(geo, pr)
    }));
    let im2col_args = im2col.then(|| {
        let geo_arg = aux.push(Aux::I64(geo.pack_geo().table()));
        let scratch_arg = aux.push(Aux::Scratch(block_tiles * pr * k_len * 4));
        (geo_arg, scratch_arg)
    });
    let units = (outer * chunks * pblocks) as u64;
    let in_len = geo.in_len() as i64;
    let out_bytes = n_len as i64 * 4;
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let wp = kb.arg(w_arg);
        let offs = kb.arg(offs_arg);
        let im2col_vals = im2col_args.map(|(g, s)| (kb.arg(g), kb.arg(s)));
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
        let mut pack_sig = Signature::new(CallConv::SystemV);
        for _ in 0..7 {
            pack_sig.params.push(AbiParam::new(ptr));
        }
        let pack_sig = b.import_signature(pack_sig);
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
            // With im2col: the block's pixels packed into the scratch, which the tiles read.
            let src = match im2col_vals {
                Some((geo_t, scratch)) => {
                    let pix0 = b.ins().imul_imm_s(p0, pr as i64);
                    let end = b.ins().imul_imm_s(p_end, pr as i64);
                    let n_v = b.ins().iconst(ptr, n_len as i64);
                    let pix_end = b.ins().smin(end, n_v);
                    let npix = b.ins().isub(pix_end, pix0);
                    let all = b.ins().iconst(ptr, ptiles as i64);
                    let tiles_end = b.ins().smin(p_end, all);
                    let rows = b.ins().isub(tiles_end, p0);
                    let rows = b.ins().imul_imm_s(rows, pr as i64);
                    let k_v = b.ins().iconst(ptr, k_len as i64);
                    let callee = b.ins().iconst(ptr, mk.small.pack_im2col_t as i64);
                    b.ins().call_indirect(pack_sig, callee, &[geo_t, x_g, k_v, pix0, npix, rows, scratch]);
                    Some(scratch)
                }
                None => None,
            };
            // Channel tile `t` (of `m` channels) on pixel tile `pt` (of `n` pixels).
            let call = |b: &mut FunctionBuilder, t: Value, m: usize, pt: Value, n: usize| {
                let w_t = kit::offset(b, w_g, t, (k_len * tc * 4) as i64, 0);
                let row_bytes = tc as i64 * out_bytes;
                let y_t = kit::offset(b, y_g, t, row_bytes, 0);
                let r_t = r_g.map(|r| kit::offset(b, r, t, row_bytes, 0));
                let bias_t = bias_g.map(|p| kit::offset(b, p, t, (tc * 4) as i64, 0));
                let zero = b.ins().iconst(ptr, 0);
                let offs_p = match src {
                    Some(_) => {
                        let local = b.ins().isub(pt, p0);
                        kit::offset(b, offs, local, (pr * 8) as i64, 0)
                    }
                    None => kit::offset(b, offs, pt, (pr * 8) as i64, 0),
                };
                let y_p = kit::offset(b, y_t, pt, (pr * 4) as i64, 0);
                let r_p = r_t.map_or(zero, |r| kit::offset(b, r, pt, (pr * 4) as i64, 0));
                let k_v = b.ins().iconst(ptr, k_len as i64);
                let lda = b.ins().iconst(ptr, if src.is_some() { 1 } else { in_len });
                let ldy = b.ins().iconst(ptr, n_len as i64);
                // (The wide tile always stores its 64 channels.)
                let f = b.ins().iconst(types::I32, i64::from(flags | microkernel::tile_flags(n, m.min(NR))));
                let bias_v = bias_t.unwrap_or(zero);
                let params = b.ins().iconst(ptr, params as i64);
                let callee = b.ins().iconst(ptr, tile_fn as i64);
                let args = [k_v, src.unwrap_or(x_g), lda, offs_p, w_t, y_p, ldy, f, bias_v, r_p, params];
                b.ins().call_indirect(sig, callee, &args);
            };
            let t0 = b.ins().imul_imm_s(ch, chunk as i64);
            let t_end = b.ins().iadd_imm_s(t0, chunk as i64);
            let full = b.ins().iconst(ptr, (mg / tc) as i64);
            let t1 = b.ins().smin(t_end, full);
            // The partial channel tile belongs to the last chunk, the partial pixel tile to the
            // last pixel block.
            let last_ch = b.ins().icmp_imm_s(IntCC::Equal, ch, chunks as i64 - 1);
            // Every pixel tile of the block for channel tile `t` of `m` channels.
            let pixels = |b: &mut FunctionBuilder, t: Value, m: usize| {
                for_dyn(b, p0, p1, 1, |b, pt| call(b, t, m, pt, pr));
                if !n_len.is_multiple_of(pr) {
                    if_then(b, last_pb, |b| {
                        let pt = b.ins().iconst(ptr, (n_len / pr) as i64);
                        call(b, t, m, pt, n_len % pr);
                    });
                }
            };
            for_dyn(b, t0, t1, 1, |b, t| pixels(b, t, tc));
            if !mg.is_multiple_of(tc) {
                if_then(b, last_ch, |b| {
                    let t = b.ins().iconst(ptr, (mg / tc) as i64);
                    pixels(b, t, mg % tc);
                });
            }
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, units))
}
