//! ConvTranspose of any geometry (stride, padding, output padding, dilation, groups, 1-D to
//! 3-D) as a GEMM and a gather, through the host's microkernel:
//! `cols[(oc, tap)][input pixel] = Σ_ic W[ic][oc][tap]·x[ic][pixel]` for the input rows that a
//! block of output rows reads, then `y[oc][o] = bias[oc] + Σ cols[(oc, tap)][source of o]` over
//! the taps that reach `o`, in a fixed order (depth/row taps ascending, then column taps
//! ascending), whichever unit computes it. The GEMM sums its input channels in one FMA chain in
//! channel order (`sgemm_6x16_seq`), as onnxruntime's SGEMM does: a QDQ model's f32
//! conv-transpose (onnxruntime has no int8 one) then rounds to the same integers in both. Above
//! 128 input channels, K blocks of 128 (MLAS's K stride) each sum from zero and add to the
//! blocks before them, as MLAS's do.
//!
//! Columns: output column `o` of phase `c = o mod s` gets, from each column tap `kx` with
//! `c + p − kx·d ≡ 0 (mod s)`, input column `t + (c + p − kx·d)/s` where `t = (o − c)/s`:
//! contiguous in `t`, so the gather adds vectors of 4 outputs of one phase and the phases
//! interleave at the store. Input columns out of range read zeros: the packed input carries
//! zero halo columns on both sides (their GEMM results are +0, which leave a sum unchanged).
//! Rows (depth flattened in) read their taps from a table built at load.
//!
//! Work units: blocks of output rows × chunks of output channels of one (image, group). Each
//! unit runs the GEMM of its channels for the input rows its block reads; rows shared with a
//! neighbouring block are computed by both, in the same way. Blocks grow until at most a
//! quarter of the GEMM is such recomputation, within an L2-sized scratch; the channel chunks
//! keep enough units for the threads.

use cranelift_codegen::ir::{AbiParam, InstBuilder, SigRef, Signature, Value, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, Variable};

use super::super::builder::{for_range, unit_span};
use super::super::gemm::kit::{self, for_dyn, load_i64, scatter, shuffle32, splat_load, store};
use super::transpose_upsample::{divmod, pin};
use super::{AuxList, Geo};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Jit};
use crate::microkernel::{self, ACCUMULATE, MR, Microkernels, NR};

/// K block of the GEMM (input channels per packed panel; the last block takes the rest):
/// onnxruntime's SGEMM K stride (`MLAS_SGEMM_STRIDEK`), so that each block's chain and the
/// additions between blocks are its own.
const KC: usize = 128;
/// Multiply-adds (of the GEMM) a work unit aims at.
const UNIT_MACS: usize = 1 << 19;
/// Fewest units a layer is cut into when it has the rows for them (to balance threads).
const MIN_UNITS: usize = 16;
/// GEMM rows (output channels × taps) of a chunk, the third axis of the work units: chunks keep
/// row blocks tall (few input rows computed twice) within the scratch budget.
const CHUNK_M: usize = 192;
/// Input rows computed by all blocks over the distinct input rows, that blocks grow to reach.
const MAX_REDUNDANCY: f64 = 1.25;
/// Scratch budget of a unit (results + packed input) that blocks of several rows stay under.
const SCRATCH_BYTES: usize = 256 << 10;
/// Beyond this much scratch for a single output row, the gather kernel is used instead.
const MAX_SCRATCH_BYTES: usize = 8 << 20;

/// The microkernel GEMM that fills `cols` for a range of input pixels of one group and a chunk
/// of its output channels: weights packed at load into 6-row panels per chunk
/// (`[group][chunk][tile][K][6]`, rows past the chunk's channels × taps zero), the pixels
/// packed per K block by `pack_b_im2col` into the scratch after the results.
pub(super) struct ColsGemm {
    mk: Microkernels,
    /// K: input channels per group.
    cg: usize,
    /// Output channels per chunk (the last chunk may have fewer).
    pub mc: usize,
    /// 6-row panels of a chunk (`mc` channels × taps).
    pub tiles: usize,
    n_kb: usize,
    kc: usize,
    /// Row stride of `cols`, in f32 (a multiple of 16 at least the pixels of any call).
    pub ldc: usize,
}

/// The microkernels' signatures, imported into the function being built.
pub(super) struct Sigs {
    gemm: SigRef,
    pack: SigRef,
}

impl Sigs {
    pub fn import(b: &mut FunctionBuilder) -> Sigs {
        let ptr = types::I64;
        let mut gemm = Signature::new(CallConv::SystemV);
        for t in [ptr, ptr, ptr, ptr, ptr, types::I32, ptr, ptr, types::F32, types::F32] {
            gemm.params.push(AbiParam::new(t));
        }
        let mut pack = Signature::new(CallConv::SystemV);
        for _ in 0..7 {
            pack.params.push(AbiParam::new(ptr));
        }
        Sigs { gemm: b.import_signature(gemm), pack: b.import_signature(pack) }
    }
}

impl ColsGemm {
    /// For calls of at most `max_px` pixels and chunks of `mc` output channels.
    pub fn new(geo: &Geo, mk: Microkernels, mc: usize, max_px: usize) -> ColsGemm {
        let n_kb = geo.cg.div_ceil(KC);
        let tiles = (mc * geo.kvol()).div_ceil(MR);
        ColsGemm { mk, cg: geo.cg, mc, tiles, n_kb, kc: KC.min(geo.cg), ldc: max_px.max(1).next_multiple_of(NR) }
    }

    /// Bytes of `cols` (at the start of the scratch) and the packed pixels after it, per pixel
    /// of `ldc`, for chunks of `mc` output channels.
    pub fn bytes_per_px(geo: &Geo, mc: usize) -> usize {
        let kc = KC.min(geo.cg);
        ((mc * geo.kvol()).div_ceil(MR) * MR + kc) * 4
    }

    /// Chunks of the output channels.
    pub fn chunks(&self, geo: &Geo) -> usize {
        geo.mg.div_ceil(self.mc)
    }

    /// Bytes of one group's packed weights.
    pub fn group_bytes(&self, geo: &Geo) -> i64 {
        (self.chunks(geo) * self.tiles * self.cg * MR * 4) as i64
    }

    /// Bytes of one chunk's packed weights.
    pub fn chunk_bytes(&self) -> i64 {
        (self.tiles * self.cg * MR * 4) as i64
    }

    pub fn scratch_bytes(&self) -> usize {
        (self.tiles * MR + self.kc) * self.ldc * 4
    }

    /// Packs the weights `[group·cg][mg·kvol]` (`A[m][k]` transposed, per group) into
    /// `[group][chunk][tile][K][6]`.
    pub fn pack_a(&self, geo: &Geo, w: &[f32]) -> Vec<f32> {
        let (k_len, kvol) = (geo.cg, geo.kvol());
        let m_len = geo.mg * kvol;
        let chunks = self.chunks(geo);
        let mut out = vec![0f32; geo.group * chunks * self.tiles * k_len * MR];
        for g in 0..geo.group {
            for k in 0..k_len {
                for m in 0..m_len {
                    let (ch, mm) = (m / (self.mc * kvol), m % (self.mc * kvol));
                    let panel = (g * chunks + ch) * self.tiles + mm / MR;
                    out[(panel * k_len + k) * MR + mm % MR] = w[(g * k_len + k) * m_len + m];
                }
            }
        }
        out
    }

    /// `cols[m][n] = Σ_k A[m][k]·B[k][n]` for the `npx` pixels from `p0` of the packing
    /// geometry `geo_t` of the group's input `x_g`; `a_g` is the chunk's packed weights,
    /// `scratch` holds `cols` then the packed pixels.
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &self,
        b: &mut FunctionBuilder,
        sigs: &Sigs,
        geo_t: Value,
        x_g: Value,
        a_g: Value,
        p0: Value,
        npx: Value,
        scratch: Value,
    ) {
        let ptr = types::I64;
        let (cg, ldc) = (self.cg, self.ldc);
        let bp = kit::add(b, scratch, (self.tiles * MR * ldc * 4) as i64);
        let strips = b.ins().iadd_imm_s(npx, NR as i64 - 1);
        let strips = b.ins().ushr_imm_u(strips, NR.trailing_zeros() as i64);
        for kb_i in 0..self.n_kb {
            let k0 = kb_i * self.kc;
            let kcb = self.kc.min(cg - k0);
            let k0_v = b.ins().iconst(ptr, k0 as i64);
            let kc_v = b.ins().iconst(ptr, kcb as i64);
            let pack = b.ins().iconst(ptr, self.mk.pack_b_im2col as i64);
            b.ins().call_indirect(sigs.pack, pack, &[geo_t, x_g, k0_v, kc_v, p0, npx, bp]);
            let flags = microkernel::tile_flags(MR, NR) | if kb_i > 0 { ACCUMULATE } else { 0 };
            let zero = b.ins().iconst(ptr, 0);
            for_dyn(b, zero, strips, 1, |b, s| {
                let b_s = kit::offset(b, bp, s, (kcb * NR * 4) as i64, 0);
                let c_s = kit::offset(b, scratch, s, (NR * 4) as i64, 0);
                for_range(b, 0, self.tiles as i64, 1, |b, t| {
                    let a_t = kit::offset(b, a_g, t, (cg * MR * 4) as i64, (k0 * MR * 4) as i64);
                    let c_t = kit::offset(b, c_s, t, (MR * ldc * 4) as i64, 0);
                    let f = b.ins().iconst(types::I32, i64::from(flags));
                    let ldc_v = b.ins().iconst(ptr, ldc as i64);
                    let null = b.ins().iconst(ptr, 0);
                    let (lo, hi) = (b.ins().f32const(f32::NEG_INFINITY), b.ins().f32const(f32::INFINITY));
                    let callee = b.ins().iconst(ptr, self.mk.sgemm_6x16_seq as i64);
                    b.ins().call_indirect(sigs.gemm, callee, &[kc_v, a_t, b_s, c_t, ldc_v, f, null, null, lo, hi]);
                });
            });
        }
    }
}

/// The column geometry of the gather: per phase, the column taps and their input offsets.
struct Cols {
    /// Column stride `s`, the number of phases.
    s: usize,
    /// Per phase `c`: `(kx, offset)` with input column `t + offset` for output `c + s·t`.
    taps: Vec<Vec<(usize, i64)>>,
    /// Zero columns before the input's first column in each packed row.
    halo: usize,
    /// Packed row width: halo, input, halo.
    width: usize,
    /// Vectors of 4 outputs per phase in one gather step.
    pv: usize,
}

impl Cols {
    fn new(geo: &Geo) -> Cols {
        let (s, k, d, p) = (geo.s[2] as i64, geo.k[2], geo.d[2] as i64, geo.pb[2] as i64);
        let taps: Vec<Vec<(usize, i64)>> = (0..s)
            .map(|c| {
                (0..k)
                    .filter_map(|kx| {
                        let num = c + p - kx as i64 * d;
                        (num.rem_euclid(s) == 0).then(|| (kx, num.div_euclid(s)))
                    })
                    .collect()
            })
            .collect();
        let n_taps: usize = taps.iter().map(Vec::len).sum();
        // At most 8 vector loads per row tap, to stay in registers.
        let pv = if n_taps <= 4 { 2 } else { 1 };
        let t_pad = geo.out[2].div_ceil(s as usize).next_multiple_of(4 * pv) as i64;
        let offs = taps.iter().flatten().map(|&(_, o)| o);
        let (min_off, max_off) = (offs.clone().min().unwrap_or(0), offs.max().unwrap_or(0));
        let halo = (-min_off).max(0);
        let width = (halo + geo.inp[2] as i64).max(halo + max_off + t_pad) as usize;
        Cols { s: s as usize, taps, halo: halo as usize, width, pv }
    }
}

/// Output rows (depth × rows flattened) and, per row, its depth/row taps with the flattened
/// input row each reads, ascending.
fn row_entries(geo: &Geo) -> Vec<Vec<(usize, usize)>> {
    let axis = |a: usize, o: usize| -> Vec<(usize, usize)> {
        (0..geo.k[a])
            .filter_map(|k| {
                let num = o as i64 + geo.pb[a] as i64 - (k * geo.d[a]) as i64;
                let s = geo.s[a] as i64;
                (num >= 0 && num % s == 0 && num / s < geo.inp[a] as i64).then(|| (k, (num / s) as usize))
            })
            .collect()
    };
    let mut rows = Vec::with_capacity(geo.out[0] * geo.out[1]);
    for oz in 0..geo.out[0] {
        let zs = axis(0, oz);
        for oy in 0..geo.out[1] {
            let ys = axis(1, oy);
            let e = zs
                .iter()
                .flat_map(|&(kz, iz)| ys.iter().map(move |&(ky, iy)| (kz * geo.k[1] + ky, iz * geo.inp[1] + iy)));
            rows.push(e.collect());
        }
    }
    rows
}

/// The input rows `lo..hi` that output rows `r0..r1` read (`(0, 0)` when none).
fn input_rows(rows: &[Vec<(usize, usize)>]) -> (usize, usize) {
    let mut it = rows.iter().flatten().map(|&(_, r)| r);
    let Some(first) = it.next() else { return (0, 0) };
    let (lo, hi) = it.fold((first, first), |(lo, hi), r| (lo.min(r), hi.max(r)));
    (lo, hi + 1)
}

/// Output channels per chunk: GEMM rows (channels × taps) of about [`CHUNK_M`].
fn chunk_channels(geo: &Geo) -> usize {
    let chunks = (geo.mg * geo.kvol()).div_ceil(CHUNK_M);
    geo.mg.div_ceil(chunks)
}

/// Output rows per unit: blocks of about [`UNIT_MACS`] of GEMM (or more, until neighbouring
/// blocks recompute at most [`MAX_REDUNDANCY`] of the input rows), at most [`SCRATCH_BYTES`]
/// of scratch, at least [`MIN_UNITS`] units where the rows allow. Returns the rows per unit
/// and the most input rows a unit reads.
fn rows_per_unit(geo: &Geo, rows: &[Vec<(usize, usize)>], width: usize, mc: usize) -> (usize, usize) {
    let images = geo.batch * geo.group * geo.mg.div_ceil(mc);
    let px_bytes = ColsGemm::bytes_per_px(geo, mc);
    let gemm_px_macs = geo.cg * mc * geo.kvol();
    let (all_lo, all_hi) = input_rows(rows);
    // (most input rows of a block, input rows of all blocks) for `rpu` rows per block.
    let blocks = |rpu: usize| {
        rows.chunks(rpu).map(input_rows).fold((0, 0), |(max, sum), (lo, hi)| (max.max(hi - lo), sum + hi - lo))
    };
    let mut rpu = 1;
    let (mut in_rows, mut total) = blocks(1);
    while rpu < rows.len() {
        let next = rpu + 1;
        let (next_in, next_total) = blocks(next);
        let fits = next_in * width * px_bytes <= SCRATCH_BYTES;
        let enough_units = images * rows.len().div_ceil(next) >= MIN_UNITS;
        let small = in_rows * width * gemm_px_macs < UNIT_MACS;
        let redundant = total as f64 > MAX_REDUNDANCY * (all_hi - all_lo) as f64;
        if !fits || !enough_units || !(small || redundant) {
            break;
        }
        (rpu, in_rows, total) = (next, next_in, next_total);
    }
    (rpu, in_rows)
}

/// Whether the GEMM form can take this geometry: nothing empty, and the scratch of one output
/// row's input rows stays under [`MAX_SCRATCH_BYTES`].
pub(super) fn applies(geo: &Geo) -> bool {
    let non_empty = geo.batch > 0 && geo.cg > 0 && geo.mg > 0 && geo.in_len() > 0 && geo.out_len() > 0;
    non_empty && {
        let rows = row_entries(geo);
        let widest = rows.iter().map(|r| input_rows(std::slice::from_ref(r))).map(|(lo, hi)| hi - lo).max();
        let px_bytes = ColsGemm::bytes_per_px(geo, chunk_channels(geo));
        widest.unwrap_or(0) * Cols::new(geo).width * px_bytes <= MAX_SCRATCH_BYTES
    }
}

pub(super) fn emit(
    jit: &mut Jit,
    cx: &EmitCx,
    geo: &Geo,
    mk: Microkernels,
    w: &[f32],
) -> Result<Emitted, CompileError> {
    jit.note_variant("conv-transpose-gemm-avx2");
    let (cg, mg, kvol) = (geo.cg, geo.mg, geo.kvol());
    let cols = Cols::new(geo);
    let rows = row_entries(geo);
    let mc = chunk_channels(geo);
    let (rpu, max_in) = rows_per_unit(geo, &rows, cols.width, mc);
    let gemm = ColsGemm::new(geo, mk, mc, max_in * cols.width);
    let chunks = gemm.chunks(geo);
    let ldc = gemm.ldc;
    let kxn = geo.k[2];
    // Table: per block `(p0, npx)` of the packed geometry; per output row `(start, end)` of
    // its entries; entries: byte offset of the tap's results for the row (within a channel).
    let blocks: Vec<(usize, usize)> = rows.chunks(rpu).map(input_rows).collect();
    let index_at = 2 * blocks.len();
    let entries_at = index_at + 2 * rows.len();
    let mut table: Vec<i64> =
        blocks.iter().flat_map(|&(lo, hi)| [(lo * cols.width) as i64, ((hi - lo) * cols.width) as i64]).collect();
    let mut entries = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let lo = blocks[r / rpu].0;
        table.push((entries_at + entries.len()) as i64);
        for &(tap, in_row) in row {
            entries.push((((tap * kxn) * ldc + (in_row - lo) * cols.width) * 4) as i64);
        }
        table.push((entries_at + entries.len()) as i64);
    }
    table.extend(entries);
    let pack_geo = microkernel::PackGeo {
        ih: geo.inp[0] * geo.inp[1],
        iw: geo.inp[2],
        ow: cols.width,
        kh: 1,
        kw: 1,
        sh: 1,
        sw: 1,
        dh: 1,
        dw: 1,
        ph: 0,
        pw: cols.halo,
    };
    let mut aux = AuxList::new(cx);
    let a_arg = aux.push(Aux::F32(gemm.pack_a(geo, w)));
    let geo_arg = aux.push(Aux::I64(pack_geo.table()));
    let table_arg = aux.push(Aux::I64(table));
    let scratch_arg = aux.push(Aux::Scratch(gemm.scratch_bytes()));
    let bias_arg = (cx.inputs.len() > 2).then(|| cx.in_arg(2));
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let in_plane = geo.in_len() as i64 * 4;
    let out_plane = geo.out_len() as i64 * 4;
    let ow = geo.out[2];
    let n_blocks = blocks.len();
    let units = geo.batch * geo.group * n_blocks * chunks;
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let a = kb.arg(a_arg);
        let geo_t = kb.arg(geo_arg);
        let table = kb.arg(table_arg);
        let scratch = kb.arg(scratch_arg);
        let bias = bias_arg.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let sigs = Sigs::import(b);
        let (u0, u1) = unit_span(b, lo, hi, units as i64, 1);
        for_dyn(b, u0, u1, 1, |b, u| {
            let (u, ch) = divmod(b, u, chunks);
            let (img, blk) = divmod(b, u, n_blocks);
            let g = b.ins().urem_imm_u(img, geo.group as i64);
            let x_i = kit::offset(b, x, img, cg as i64 * in_plane, 0);
            // The chunk's first output channel, of the image and of the group.
            let oc0 = b.ins().imul_imm_s(ch, mc as i64);
            let y_i = kit::offset(b, y, img, mg as i64 * out_plane, 0);
            let y_i = kit::offset(b, y_i, oc0, out_plane, 0);
            let a_g = kit::offset(b, a, g, gemm.group_bytes(geo), 0);
            let a_g = kit::offset(b, a_g, ch, gemm.chunk_bytes(), 0);
            let b_g = bias.map(|p| {
                let p = kit::offset(b, p, g, mg as i64 * 4, 0);
                kit::offset(b, p, oc0, 4, 0)
            });
            let n_oc = {
                let left = b.ins().iconst(types::I64, mg as i64);
                let left = b.ins().isub(left, oc0);
                let mc_v = b.ins().iconst(types::I64, mc as i64);
                b.ins().smin(left, mc_v)
            };
            let t_blk = kit::offset(b, table, blk, 16, 0);
            let p0 = load_i64(b, t_blk, 0);
            let npx = load_i64(b, t_blk, 8);
            gemm.emit(b, &sigs, geo_t, x_i, a_g, p0, npx, scratch);
            let r0 = b.ins().imul_imm_s(blk, rpu as i64);
            let r1 = b.ins().iadd_imm_s(r0, rpu as i64);
            let cap = b.ins().iconst(types::I64, rows.len() as i64);
            let r1 = b.ins().smin(r1, cap);
            for_dyn(b, r0, r1, 1, |b, r| {
                let y_r = kit::offset(b, y_i, r, ow as i64 * 4, 0);
                let ix = kit::offset(b, table, r, 16, index_at as i64 * 8);
                let e0 = load_i64(b, ix, 0);
                let e1 = load_i64(b, ix, 8);
                let [y_r, e0, e1] = pin(b, [y_r, e0, e1]);
                let zero = b.ins().iconst(types::I64, 0);
                for_dyn(b, zero, n_oc, 1, |b, oc| {
                    let c_oc = kit::offset(b, scratch, oc, (kvol * ldc * 4) as i64, 0);
                    let y_oc = kit::offset(b, y_r, oc, out_plane, 0);
                    let init = match b_g {
                        Some(p) => {
                            let p = kit::offset(b, p, oc, 4, 0);
                            splat_load(b, p, 0)
                        }
                        None => kit::splat_const(b, 0.0),
                    };
                    let [c_oc, y_oc, init] = pin(b, [c_oc, y_oc, init]);
                    let gather = Gather { cols: &cols, table, e0, e1, ldc, init };
                    let step = 4 * cols.pv;
                    let full = ow / cols.s / step;
                    for_range(b, 0, (full * step) as i64, step as i64, |b, t0| {
                        gather.step(b, c_oc, y_oc, t0, cols.s * step);
                    });
                    let done = full * step * cols.s;
                    if done < ow {
                        let t0 = b.ins().iconst(types::I64, (full * step) as i64);
                        gather.step(b, c_oc, y_oc, t0, ow - done);
                    }
                });
            });
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, units as u64))
}

/// The gather of one output row and channel.
struct Gather<'a> {
    cols: &'a Cols,
    table: Value,
    /// The row's entries, element indices in the table.
    e0: Value,
    e1: Value,
    ldc: usize,
    /// The bias, splatted.
    init: Value,
}

impl Gather<'_> {
    /// Outputs `s·t0 .. s·t0 + n` (every phase of `4·pv` values of `t` from `t0`, the first `n`
    /// of their interleaving) from the channel's results at `c_oc` into the row at `y_oc`.
    fn step(&self, b: &mut FunctionBuilder, c_oc: Value, y_oc: Value, t0: Value, n: usize) {
        let cols = self.cols;
        let (s, pv) = (cols.s, cols.pv);
        let acc: Vec<Variable> = (0..s * pv)
            .map(|_| {
                let v = b.declare_var(types::F32X4);
                b.def_var(v, self.init);
                v
            })
            .collect();
        let c_t = kit::offset(b, c_oc, t0, 4, 0);
        for_dyn(b, self.e0, self.e1, 1, |b, e| {
            let p = kit::offset(b, self.table, e, 8, 0);
            let off = load_i64(b, p, 0);
            let base = b.ins().iadd(c_t, off);
            for (c, taps) in cols.taps.iter().enumerate() {
                for &(kx, o) in taps {
                    let at = ((kx * self.ldc) as i64 + cols.halo as i64 + o) * 4;
                    for v in 0..pv {
                        let x = kit::load_v(b, base, at + v as i64 * 16);
                        let a = b.use_var(acc[c * pv + v]);
                        let sum = b.ins().fadd(a, x);
                        b.def_var(acc[c * pv + v], sum);
                    }
                }
            }
        });
        let y_t = kit::offset(b, y_oc, t0, 4 * s as i64, 0);
        for v in 0..pv {
            // Outputs `s·4v ..` of the step, of which `left` are wanted.
            let left = n.saturating_sub(s * 4 * v).min(4 * s);
            if left == 0 {
                break;
            }
            let base = (s * 4 * v * 4) as i64;
            let vals: Vec<Value> = (0..s).map(|c| b.use_var(acc[c * pv + v])).collect();
            match s {
                1 => scatter(b, vals[0], y_t, base, 4, left),
                2 => {
                    let lo = shuffle32(b, vals[0], vals[1], [0, 4, 1, 5]);
                    scatter(b, lo, y_t, base, 4, left.min(4));
                    if left > 4 {
                        let hi = shuffle32(b, vals[0], vals[1], [2, 6, 3, 7]);
                        scatter(b, hi, y_t, base + 16, 4, left - 4);
                    }
                }
                _ => {
                    for i in 0..left {
                        let (l, c) = (i / s, i % s);
                        let x = b.ins().extractlane(vals[c], l as u8);
                        store(b, x, y_t, base + i as i64 * 4);
                    }
                }
            }
        }
    }
}
