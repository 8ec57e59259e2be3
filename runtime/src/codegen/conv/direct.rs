//! Direct convolution vectorized over output channels: a register tile of up to 8 output
//! channels (2 f32x4 weight vectors) × [`PIX`] output pixels (splatted input values), reduced
//! over input channels and the valid taps, in that order for every output element.
//!
//! Code shape (measured on Zen 4, Cranelift 0.135): input and weight loads are read-only, so
//! the optimizer places each next to its use; the reduction loops carry their accumulators as
//! explicit block parameters, and each loop body holds up to 3 column taps of one kernel row
//! (or a few input channels of a 1×1 kernel), so that the live vectors (accumulators, the body's weight
//! vectors, a few splats) fit the 16 xmm registers. Cranelift schedules a loop body
//! accumulator by accumulator ([`kit::for_carry`]), the accumulators of one weight vector
//! first; the splats feeding the second weight vector's accumulators are read through a base
//! pointer of their own, so that the optimizer does not merge them with the first's (a merged
//! splat would stay live across all the first vector's accumulators). Loops test at the top
//! so that `splat(load)` folds into one `vbroadcastss` (see [`kit::for_carry`]).
//!
//! Rows are cut into pixel tiles on a grid from column 0; tiles whose pixels all see every
//! column tap run in a loop, the others (borders, the last partial tile) are emitted at their
//! compile-time columns with each pixel's own taps. Input channels are reduced in blocks whose
//! weights and input lines stay cached ([`BLOCK_BYTES`]) while a row's pixel tiles reuse them;
//! the first block starts from the bias, later ones from the partial sums in the output, and
//! the last applies the epilogue.
//!
//! Work units: (image·group, block of output-channel tiles, block of output rows) — or block
//! of pixel tiles when the plane is one row without borders (1×1 stride-1 convs). A unit runs
//! every channel block of its outputs, with the same code whichever call computes it.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::super::builder::{unit_span, units_of};
use super::super::gemm::kit::{self, Epi, for_carry, for_carry_dyn, for_dyn, gather, scatter, splat_const};
use super::{AuxList, Geo, Range, RowTaps, WLayout, bias_vec, const_f32, oc_tiles, pack_oc_tiles, transpose4};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};

/// Output pixels per register tile: 8 accumulators, up to 3 taps' weight vectors and a splat.
const PIX: usize = 4;
/// Output pixels per register tile of 1×1 kernels: 12 accumulators, 2 channels' weights.
const PIX_1X1: usize = 6;
/// Bytes of a channel block's weights and input lines (L1 and the near part of L2).
const BLOCK_BYTES: usize = 65536;
/// Multiply-adds a work unit aims at (about 20 µs at this kernel's speed).
const UNIT_MACS: usize = 1 << 19;
/// Column taps per loop body: their weight vectors, splats and the accumulators fit the
/// registers (see the module docs).
const MAX_TAPS: usize = 3;
/// Distance between the base pointers that keep twin splats apart (see the module docs).
const TWIN: i64 = 1 << 16;

pub(super) fn emit(jit: &mut Jit, cx: &EmitCx, geo: &Geo, ep: &Epilogue) -> Result<Emitted, CompileError> {
    let kvol = geo.kvol();
    let (cg, mg) = (geo.cg, geo.mg);
    let mut aux = AuxList::new(cx);
    let packed = const_f32(cx, 1);
    let w_arg = match packed {
        Some(w) => aux.push(Aux::F32(pack_oc_tiles(geo, |g, oc, ic, tap| w[((g * mg + oc) * cg + ic) * kvol + tap]))),
        None => cx.in_arg(1),
    };
    let mg_pad = (mg / 8) * 8 + (mg % 8).next_multiple_of(4);
    let layout = |t: usize| -> WLayout {
        let ck = (cg * kvol * 4) as i64;
        if packed.is_some() {
            WLayout {
                group: mg_pad as i64 * ck,
                tile: 8 * ck,
                ic: (kvol * t * 4) as i64,
                tap: t as i64 * 4,
                lane: None,
            }
        } else {
            WLayout { group: mg as i64 * ck, tile: 8 * ck, ic: kvol as i64 * 4, tap: 4, lane: Some(ck) }
        }
    };
    let rows = RowTaps::build(geo);
    let table_arg = rows.needs_table().then(|| aux.push(Aux::I64(rows.table.clone())));
    let bias_arg = (ep.op_inputs(cx) > 2).then(|| cx.in_arg(2));
    let plan = Plan::new(geo);
    // Nothing to compute (the verifier admits empty tensors).
    let empty = geo.batch * geo.group == 0 || geo.out_len() == 0 || mg == 0;
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let (in_len, out_len) = (geo.in_len() as i64, geo.out_len() as i64);
    let tiles = oc_tiles(mg);
    let n_tiles = tiles[0].0 + tiles[1].0;
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let w = kb.arg(w_arg);
        let bias = bias_arg.map(|a| kb.arg(a));
        let table = table_arg.map(|a| kb.arg(a));
        let epi = Epi::new(kb, ep, y);
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        if empty {
            return;
        }
        let (u0, u1) = unit_span(b, lo, hi, plan.units() as i64, 1);
        for_dyn(b, u0, u1, 1, |b, u| {
            let (ng, tb, sb) = plan.decode(b, u);
            let g =
                if geo.group > 1 { b.ins().urem_imm_u(ng, geo.group as i64) } else { b.ins().iconst(types::I64, 0) };
            let x_g = kit::offset(b, x, ng, cg as i64 * in_len * 4, 0);
            let y_g = kit::offset(b, y, ng, mg as i64 * out_len * 4, 0);
            let w_g = kit::offset(b, w, g, layout(8).group, 0);
            let bias_g = bias.map(|p| kit::offset(b, p, g, mg as i64 * 4, 0));
            let t0 = b.ins().imul_imm_s(tb, plan.tiles_per_unit as i64);
            let t1 = b.ins().iadd_imm_s(t0, plan.tiles_per_unit as i64);
            let cap = b.ins().iconst(types::I64, n_tiles as i64);
            let t1 = b.ins().smin(t1, cap);
            // One tile of output channels over this unit's rows (or pixel tiles).
            let tile = |b: &mut FunctionBuilder, t: Value, width: usize, lanes: usize| {
                let lay = layout(width);
                let w_t = kit::offset(b, w_g, t, lay.tile, 0);
                let y_t = kit::offset(b, y_g, t, 8 * out_len * 4, 0);
                let b_t = bias_g.map(|p| kit::offset(b, p, t, 32, 0));
                let k = Tile { geo, rows: &rows, table, lay, ocv: width / 4, lanes, kc: plan.kc, epi };
                k.emit_span(b, &plan, sb, x_g, w_t, b_t, y_t);
            };
            for_dyn(b, t0, t1, 1, |b, t| match tiles {
                [(0, ..), (_, width, lanes)] | [(_, width, lanes), (0, ..)] => tile(b, t, width, lanes),
                [(full, w0, l0), (_, w1, l1)] => {
                    let is_full = b.ins().icmp_imm_s(IntCC::SignedLessThan, t, full as i64);
                    if_else(b, is_full, |b| tile(b, t, w0, l0), |b| tile(b, t, w1, l1));
                }
            });
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, plan.units()))
}

/// `if cond { then } else { other }`.
fn if_else(
    b: &mut FunctionBuilder,
    cond: Value,
    then: impl FnOnce(&mut FunctionBuilder),
    other: impl FnOnce(&mut FunctionBuilder),
) {
    let (t, e, done) = (b.create_block(), b.create_block(), b.create_block());
    b.ins().brif(cond, t, &[], e, &[]);
    b.switch_to_block(t);
    then(b);
    b.ins().jump(done, &[]);
    b.switch_to_block(e);
    other(b);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
}

/// How the kernel's work is cut into units and channel blocks.
struct Plan {
    images: usize,
    /// Output-channel tiles per unit, and unit blocks of them per image.
    tiles_per_unit: usize,
    tile_blocks: usize,
    /// Rows per unit (or pixel tiles per unit when `cols`), and unit blocks of them.
    span_per_unit: usize,
    span_blocks: usize,
    /// The plane is one row without borders, cut into blocks of pixel tiles.
    cols: bool,
    /// Input channels per block.
    kc: usize,
    /// Output pixels per register tile.
    pix: usize,
}

impl Plan {
    fn new(geo: &Geo) -> Plan {
        let images = geo.batch * geo.group;
        let n_tiles = geo.mg.div_ceil(8);
        let [oz, oh, ow] = geo.out;
        let edge_free = geo.k == [1; 3] && geo.s == [1; 3] && geo.pb == [0; 3] && geo.inp == geo.out && oz * oh == 1;
        // One-tap kernels have one weight vector per channel live, so a wider tile fits. The
        // time of a row in tiles of `p` pixels, in tenths of a pixel of a 6-wide tile: a
        // 4-wide tile is about 10% slower per pixel, and a last tile of fewer than 4 pixels
        // (fewer than 8 accumulators) waits on the FMA latency and takes the time of 4.
        let row_time = |p: usize| {
            let tail = if ow % p == 0 { 0 } else { (ow % p).max(4) };
            (ow / p * p + tail) * if p == PIX_1X1 { 10 } else { 11 }
        };
        let pix = if geo.kvol() == 1 && row_time(PIX_1X1) < row_time(PIX) { PIX_1X1 } else { PIX };
        let cols = edge_free && ow >= 2 * pix;
        let (span, span_macs) = if cols {
            (ow.div_ceil(pix), pix * geo.cg * geo.kvol() * 8)
        } else {
            (oz * oh, ow * geo.cg * geo.kvol() * 8)
        };
        let span_macs = span_macs.max(1);
        let span_per_unit = UNIT_MACS.div_ceil(span_macs).clamp(1, span.max(1));
        let span_blocks = span.div_ceil(span_per_unit).max(1);
        let tiles_per_unit =
            if span_blocks > 1 { 1 } else { UNIT_MACS.div_ceil(span_macs * span.max(1)).clamp(1, n_tiles.max(1)) };
        let tile_blocks = n_tiles.div_ceil(tiles_per_unit).max(1);
        // Fewer units than the host has threads: the span cut into one block per thread
        // instead (mnist_cnn's 1 → 32 channels at 28×28, 226 k MACs, ran as one unit).
        let threads = crate::threads::available();
        let (span_per_unit, span_blocks) =
            if images * tile_blocks * span_blocks < threads && span >= threads && tile_blocks == 1 {
                let per = span.div_ceil(threads);
                (per, span.div_ceil(per))
            } else {
                (span_per_unit, span_blocks)
            };
        // Input channels per block: the weights of a tile and about two cache lines of each
        // input row a pixel tile reads, for `kc` channels, fill about half of L1.
        let per_channel = geo.kvol() * 32 + geo.k[0] * geo.k[1] * 128;
        let target = (BLOCK_BYTES / per_channel).max(4);
        let cg = geo.cg;
        let kc = if cg <= target {
            cg.max(1)
        } else {
            (target / 2..=target).rev().find(|&d| cg.is_multiple_of(d)).unwrap_or(target)
        };
        Plan { images, tiles_per_unit, tile_blocks, span_per_unit, span_blocks, cols, kc, pix }
    }

    fn units(&self) -> u64 {
        if self.images == 0 {
            return 1;
        }
        units_of((self.images * self.tile_blocks * self.span_blocks) as i64, 1)
    }

    /// Unit `u` as (image·group, tile block, span block).
    fn decode(&self, b: &mut FunctionBuilder, u: Value) -> (Value, Value, Value) {
        let split = |b: &mut FunctionBuilder, v: Value, n: usize| -> (Value, Value) {
            if n == 1 {
                (v, b.ins().iconst(types::I64, 0))
            } else {
                (b.ins().udiv_imm_u(v, n as i64), b.ins().urem_imm_u(v, n as i64))
            }
        };
        // Consecutive units share their input rows (the tile blocks are innermost).
        let (q, tb) = split(b, u, self.tile_blocks);
        let (ng, sb) = split(b, q, self.span_blocks);
        (ng, tb, sb)
    }
}

/// One tile of output channels.
struct Tile<'a> {
    geo: &'a Geo,
    rows: &'a RowTaps,
    table: Option<Value>,
    lay: WLayout,
    /// Weight vectors per tap (4 channels each).
    ocv: usize,
    /// Valid output channels in the tile.
    lanes: usize,
    /// Input channels per block.
    kc: usize,
    epi: Epi,
}

/// How a pixel tile's accumulators start.
#[derive(Clone, Copy, PartialEq)]
enum Init {
    Bias,
    Y,
}

/// What the pixel tiles of one output row share: the input at the first channel of the
/// current block (tap 0, output column 0), the block's weights, the output row, the bias, the
/// row's tap ranges.
#[derive(Clone, Copy)]
struct Row {
    x: Value,
    w: Value,
    y: Value,
    bias: Option<Value>,
    rd: Range,
    rh: Range,
}

/// A pixel tile's first output column: a compile-time constant or `iv·step`.
#[derive(Clone, Copy)]
enum Col {
    Const(usize),
    Dyn { iv: Value, step: usize },
}

impl Col {
    /// `ptr + column·bytes`.
    fn at(self, b: &mut FunctionBuilder, ptr: Value, bytes: i64) -> Value {
        match self {
            Col::Const(c) => kit::add(b, ptr, c as i64 * bytes),
            Col::Dyn { iv, step } => kit::offset(b, ptr, iv, step as i64 * bytes, 0),
        }
    }
}

impl Tile<'_> {
    fn lanes_of(&self, v: usize) -> usize {
        self.lanes.saturating_sub(v * 4).min(4)
    }

    /// This unit's rows (or pixel tiles) of the tile.
    #[allow(clippy::too_many_arguments)]
    fn emit_span(
        &self,
        b: &mut FunctionBuilder,
        plan: &Plan,
        sb: Value,
        x_g: Value,
        w_t: Value,
        b_t: Option<Value>,
        y_t: Value,
    ) {
        let geo = self.geo;
        let [oz, oh, ow] = geo.out;
        let pix = plan.pix;
        if plan.cols {
            // One row without borders: pixel tiles `s0..s1` of this unit, and the last
            // partial tile in the unit that ends the row.
            let full = ow / pix;
            let s0 = b.ins().imul_imm_s(sb, plan.span_per_unit as i64);
            let s1 = b.ins().iadd_imm_s(s0, plan.span_per_unit as i64);
            let cap = b.ins().iconst(types::I64, full as i64);
            let s1 = b.ins().smin(s1, cap);
            let rd = Range::Const(0, 1);
            let rh = Range::Const(0, 1);
            let last = (ow % pix > 0).then(|| b.ins().icmp_imm_s(IntCC::Equal, sb, plan.span_blocks as i64 - 1));
            self.emit_blocks(b, x_g, w_t, y_t, b_t, rd, rh, &|b, row| {
                for_dyn(b, s0, s1, 1, |b, s| {
                    self.emit_pixels(b, row, Col::Dyn { iv: s, step: pix }, &vec![(0, 1); pix]);
                });
                if let Some(is_last) = last {
                    let (t, done) = (b.create_block(), b.create_block());
                    b.ins().brif(is_last, t, &[], done, &[]);
                    b.switch_to_block(t);
                    self.emit_pixels(b, row, Col::Const(full * pix), &vec![(0, 1); ow % pix]);
                    b.ins().jump(done, &[]);
                    b.switch_to_block(done);
                }
            });
            return;
        }
        let rows_total = (oz * oh) as i64;
        let r0 = b.ins().imul_imm_s(sb, plan.span_per_unit as i64);
        let r1 = b.ins().iadd_imm_s(r0, plan.span_per_unit as i64);
        let cap = b.ins().iconst(types::I64, rows_total);
        let r1 = b.ins().smin(r1, cap);
        let [_, ih, iw] = geo.inp;
        // Pixel tiles on a grid from column 0: a run of interior ones (every column tap
        // valid) loops; the others are emitted at their columns with per-pixel taps.
        let (c0, c1) = geo.interior_cols();
        let grid: Vec<(usize, usize)> = (0..ow.div_ceil(pix)).map(|i| (i * pix, ((i + 1) * pix).min(ow))).collect();
        let interior = |&(a, e): &(usize, usize)| e - a == pix && a >= c0 && e <= c1;
        let first_in = grid.iter().position(interior);
        let run = first_in.map_or((0, 0), |f| (f, f + grid[f..].iter().take_while(|t| interior(t)).count()));
        for_dyn(b, r0, r1, 1, |b, rr| {
            let (z, r) = if oz > 1 {
                (b.ins().udiv_imm_u(rr, oh as i64), b.ins().urem_imm_u(rr, oh as i64))
            } else {
                (b.ins().iconst(types::I64, 0), rr)
            };
            let rd = self.rows.range(b, geo, self.table, 0, z);
            let rh = self.rows.range(b, geo, self.table, 1, r);
            // Input address of tap (0, 0, 0) for output column 0 of this row.
            let origin = -(((geo.pb[0] * ih + geo.pb[1]) * iw + geo.pb[2]) as i64) * 4;
            let x_row = kit::offset(b, x_g, z, (geo.s[0] * ih * iw * 4) as i64, origin);
            let x_row = kit::offset(b, x_row, r, (geo.s[1] * iw * 4) as i64, 0);
            let y_row = kit::offset(b, y_t, rr, ow as i64 * 4, 0);
            self.emit_blocks(b, x_row, w_t, y_row, b_t, rd, rh, &|b, row| {
                for (i, &(a, e)) in grid.iter().enumerate() {
                    if i == run.0 && run.1 > run.0 {
                        let (s, n) = (run.0 as i64, (run.1 - run.0) as i64);
                        for_const(b, s, s + n, |b, iv| {
                            self.emit_pixels(b, row, Col::Dyn { iv, step: pix }, &vec![(0, geo.k[2]); pix]);
                        });
                    }
                    if i >= run.0 && i < run.1 {
                        continue;
                    }
                    let taps: Vec<(usize, usize)> = (a..e).map(|o| geo.taps(2, o)).collect();
                    self.emit_pixels(b, row, Col::Const(a), &taps);
                }
            });
        });
    }

    /// The channel blocks of one row: `cols(b, row)` emits its pixel tiles for the block in
    /// `row` (first block from the bias, the others from the partial sums; the last applies
    /// the epilogue).
    #[allow(clippy::too_many_arguments)]
    fn emit_blocks(
        &self,
        b: &mut FunctionBuilder,
        x_row: Value,
        w_t: Value,
        y_row: Value,
        bias: Option<Value>,
        rd: Range,
        rh: Range,
        cols: &dyn Fn(&mut FunctionBuilder, &Block),
    ) {
        let cg = self.geo.cg;
        let kc = self.kc.min(cg).max(1);
        let in_bytes = self.geo.in_len() as i64 * 4;
        let row = Row { x: x_row, w: w_t, y: y_row, bias, rd, rh };
        let n_blocks = cg.div_ceil(kc).max(1);
        if n_blocks == 1 {
            cols(b, &Block { row, count: cg, init: Init::Bias, last: true });
            return;
        }
        cols(b, &Block { row, count: kc, init: Init::Bias, last: false });
        let mids = (cg - kc) / kc - usize::from((cg - kc).is_multiple_of(kc));
        for_const(b, 1, 1 + mids as i64, |b, blk| {
            let x = kit::offset(b, x_row, blk, kc as i64 * in_bytes, 0);
            let w = kit::offset(b, w_t, blk, kc as i64 * self.lay.ic, 0);
            cols(b, &Block { row: Row { x, w, ..row }, count: kc, init: Init::Y, last: false });
        });
        let done = (1 + mids) * kc;
        let x = kit::add(b, x_row, done as i64 * in_bytes);
        let w = kit::add(b, w_t, done as i64 * self.lay.ic);
        cols(b, &Block { row: Row { x, w, ..row }, count: cg - done, init: Init::Y, last: true });
    }

    /// `taps.len()` adjacent output pixels from column `col`, pixel `p` with column taps
    /// `taps[p]`, over the block's input channels.
    fn emit_pixels(&self, b: &mut FunctionBuilder, blk: &Block, col: Col, taps: &[(usize, usize)]) {
        let geo = self.geo;
        let row = blk.row;
        let pix = taps.len();
        let sw = geo.s[2] as i64;
        let x_c = col.at(b, row.x, sw * 4);
        let y_c = col.at(b, row.y, 4);
        let plane = geo.out_len() as i64 * 4;
        let ocv = self.ocv;
        // Accumulators `[v][p]`: v-major, the order the loops carry them in.
        let mut accs = Vec::with_capacity(ocv * pix);
        for v in 0..ocv {
            let lanes = self.lanes_of(v);
            match blk.init {
                Init::Bias => {
                    let bv = bias_vec(b, row.bias, v, lanes);
                    accs.extend(std::iter::repeat_n(bv, pix));
                }
                Init::Y => {
                    let zero = splat_const(b, 0.0);
                    for c in (0..pix).step_by(4) {
                        let n = (pix - c).min(4);
                        let rows = [0, 1, 2, 3].map(|l| {
                            if l < lanes {
                                gather(b, y_c, (v * 4 + l) as i64 * plane + c as i64 * 4, 4, n)
                            } else {
                                zero
                            }
                        });
                        accs.extend(transpose4(b, rows).into_iter().take(n));
                    }
                }
            }
        }
        let in_bytes = geo.in_len() as i64 * 4;
        let lay = self.lay;
        // 1×1 kernels reduce a few channels per loop iteration (their body has one tap).
        let single = |r: Range| matches!(r, Range::Const(lo, hi) if hi - lo == 1);
        let one_tap = single(row.rd) && single(row.rh) && taps.iter().all(|&(lo, hi)| hi - lo <= 1);
        // Live vectors: the accumulators, one splat and one weight vector per unrolled channel.
        let unroll = if one_tap { 14usize.saturating_sub(ocv * pix).clamp(1, 4) } else { 1 };
        let count = blk.count;
        let main = count - count % unroll;
        let mut ptrs_accs = vec![x_c, row.w];
        ptrs_accs.extend(accs);
        let out = for_carry(b, 0, main as i64, unroll as i64, ptrs_accs, |b, _, mut cur| {
            let (x_ic, w_ic) = (cur[0], cur[1]);
            let mut accs = cur.split_off(2);
            for u in 0..unroll as i64 {
                let x_u = kit::add(b, x_ic, u * in_bytes);
                let w_u = kit::add(b, w_ic, u * lay.ic);
                accs = self.channel(b, row, x_u, w_u, taps, accs);
            }
            let mut next = vec![kit::add(b, x_ic, unroll as i64 * in_bytes), kit::add(b, w_ic, unroll as i64 * lay.ic)];
            next.extend(accs);
            next
        });
        let (x_ic, w_ic) = (out[0], out[1]);
        let mut accs = out[2..].to_vec();
        for u in 0..(count - main) as i64 {
            let x_u = kit::add(b, x_ic, u * in_bytes);
            let w_u = kit::add(b, w_ic, u * lay.ic);
            accs = self.channel(b, row, x_u, w_u, taps, accs);
        }
        let epi = blk.last.then_some(self.epi);
        let zero = splat_const(b, 0.0);
        for v in 0..ocv {
            let lanes = self.lanes_of(v);
            for c in (0..pix).step_by(4) {
                let n = (pix - c).min(4);
                let a = [0, 1, 2, 3].map(|j| if j < n { accs[v * pix + c + j] } else { zero });
                for (l, r) in transpose4(b, a).into_iter().enumerate().take(lanes) {
                    let off = (v * 4 + l) as i64 * plane + c as i64 * 4;
                    let r = epi.map_or(r, |e| e.apply(b, r, y_c, off, 4, n));
                    scatter(b, r, y_c, off, 4, n);
                }
            }
        }
    }

    /// Adds one input channel's valid taps (at `x_ic`, weights at `w_ic`) to `accs`.
    fn channel(
        &self,
        b: &mut FunctionBuilder,
        row: Row,
        x_ic: Value,
        w_ic: Value,
        taps: &[(usize, usize)],
        accs: Vec<Value>,
    ) -> Vec<Value> {
        let geo = self.geo;
        let [_, ih, iw] = geo.inp;
        let [_, kh_n, kw_n] = geo.k;
        let lay = self.lay;
        range_carry(b, row.rd, accs, |b, kd, accs| {
            let x_kd = kit::offset(b, x_ic, kd, (geo.d[0] * ih * iw * 4) as i64, 0);
            let w_kd = kit::offset(b, w_ic, kd, (kh_n * kw_n) as i64 * lay.tap, 0);
            range_carry(b, row.rh, accs, |b, kh, accs| {
                let x_kh = kit::offset(b, x_kd, kh, (geo.d[1] * iw * 4) as i64, 0);
                let w_kh = kit::offset(b, w_kd, kh, kw_n as i64 * lay.tap, 0);
                self.taps(b, x_kh, w_kh, taps, accs)
            })
        })
    }

    /// One kernel row's column taps for every pixel. A long row of taps that every pixel
    /// sees runs as a loop over chunks of [`MAX_TAPS`] (see the module docs).
    fn taps(
        &self,
        b: &mut FunctionBuilder,
        x_kh: Value,
        w_kh: Value,
        taps: &[(usize, usize)],
        accs: Vec<Value>,
    ) -> Vec<Value> {
        let kw_n = self.geo.k[2];
        if kw_n <= MAX_TAPS || taps.iter().any(|&t| t != (0, kw_n)) {
            return self.tap_range(b, x_kh, w_kh, taps, accs);
        }
        let chunk = vec![(0, MAX_TAPS); taps.len()];
        let x_step = (MAX_TAPS * self.geo.d[2] * 4) as i64;
        let w_step = MAX_TAPS as i64 * self.lay.tap;
        let mut init = vec![x_kh, w_kh];
        init.extend(accs);
        let out = for_carry(b, 0, (kw_n / MAX_TAPS) as i64, 1, init, |b, _, mut cur| {
            let (x, w) = (cur[0], cur[1]);
            let accs = self.tap_range(b, x, w, &chunk, cur.split_off(2));
            let mut next = vec![kit::add(b, x, x_step), kit::add(b, w, w_step)];
            next.extend(accs);
            next
        });
        let rest = vec![(0, kw_n % MAX_TAPS); taps.len()];
        self.tap_range(b, out[0], out[1], &rest, out[2..].to_vec())
    }

    /// Column taps `taps[p]` of every pixel `p`, tap 0 at `x_kh` / `w_kh`.
    fn tap_range(
        &self,
        b: &mut FunctionBuilder,
        x_kh: Value,
        w_kh: Value,
        taps: &[(usize, usize)],
        mut accs: Vec<Value>,
    ) -> Vec<Value> {
        let geo = self.geo;
        let (sw, dw) = (geo.s[2] as i64, geo.d[2] as i64);
        let pix = taps.len();
        let lay = self.lay;
        let lo = taps.iter().map(|t| t.0).min().unwrap_or(0);
        let hi = taps.iter().map(|t| t.1).max().unwrap_or(0);
        // The splats of the second weight vector are read through a base pointer of their own
        // (see the module docs); those of one weight vector are shared between the taps.
        for kw in lo..hi {
            for v in 0..self.ocv {
                let wv = lay.load(b, w_kh, kw as i64 * lay.tap, v, self.lanes_of(v));
                for (p, &(t0, t1)) in taps.iter().enumerate() {
                    if kw < t0 || kw >= t1 {
                        continue;
                    }
                    let k = v as i64 * TWIN;
                    let base = kit::add(b, x_kh, k);
                    let xs = kit::splat_load_ro(b, base, (p as i64 * sw + kw as i64 * dw) * 4 - k);
                    let i = v * pix + p;
                    accs[i] = b.ins().fma(xs, wv, accs[i]);
                }
            }
        }
        accs
    }
}

/// The input channels of one channel block, with the row they belong to, how the
/// accumulators start and whether the sums are final.
struct Block {
    row: Row,
    count: usize,
    init: Init,
    last: bool,
}

/// A loop over `r` carrying `accs`.
fn range_carry(
    b: &mut FunctionBuilder,
    r: Range,
    accs: Vec<Value>,
    body: impl FnMut(&mut FunctionBuilder, Value, Vec<Value>) -> Vec<Value>,
) -> Vec<Value> {
    match r {
        Range::Const(lo, hi) => for_carry(b, lo, hi, 1, accs, body),
        Range::Dyn(lo, hi) => for_carry_dyn(b, lo, hi, 1, accs, body),
    }
}

/// `for iv in start..end` with compile-time bounds (inline for one iteration).
fn for_const(b: &mut FunctionBuilder, start: i64, end: i64, mut body: impl FnMut(&mut FunctionBuilder, Value)) {
    for_carry(b, start, end, 1, Vec::new(), |b, iv, _| {
        body(b, iv);
        Vec::new()
    });
}
