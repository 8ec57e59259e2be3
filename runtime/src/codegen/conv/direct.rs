//! Direct convolution vectorized over output channels: a register tile of up to 8 output
//! channels (2 f32x4 weight vectors) × 4 output pixels (splatted input values), 8
//! accumulators, reduced over input channels and the valid taps.

use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::super::builder::for_range;
use super::super::gemm::kit::{self, Acc, Epi, gather, load_v, scatter, splat_const, splat_load, store};
use super::{
    AuxList, Geo, Range, RowTaps, WLayout, bias_vec, const_f32, loop_range, oc_tiles, pack_oc_tiles, transpose4,
};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};

/// Output pixels per register tile.
const PIX: usize = 4;

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
    // Input channels per block: the weights of a tile and about two cache lines of each
    // input row a column tile reads, for `block` channels, fill about half of L1.
    let per_channel = kvol * 32 + geo.k[0] * geo.k[1] * 128;
    let target = (16384 / per_channel).max(4);
    // A divisor of `cg` near the target, if there is one, avoids a second copy of the row code
    // for a partial last block.
    let block =
        if cg <= target { cg.max(4) } else { (target / 2..=target).rev().find(|d| cg % d == 0).unwrap_or(target) };
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let (in_len, out_len) = (geo.in_len() as i64, geo.out_len() as i64);
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let w = kb.arg(w_arg);
        let bias = bias_arg.map(|a| kb.arg(a));
        let table = table_arg.map(|a| kb.arg(a));
        let epi = Epi::new(kb, ep, y);
        let b = &mut kb.b;
        for_range(b, 0, geo.batch as i64, 1, |b, n| {
            let x_n = kit::offset(b, x, n, geo.c() as i64 * in_len * 4, 0);
            let y_n = kit::offset(b, y, n, geo.m() as i64 * out_len * 4, 0);
            for_range(b, 0, geo.group as i64, 1, |b, g| {
                let x_g = kit::offset(b, x_n, g, cg as i64 * in_len * 4, 0);
                let y_g = kit::offset(b, y_n, g, mg as i64 * out_len * 4, 0);
                let w_g = kit::offset(b, w, g, layout(8).group, 0);
                let bias_g = bias.map(|p| kit::offset(b, p, g, mg as i64 * 4, 0));
                let mut first = 0;
                for (count, width, lanes) in oc_tiles(mg) {
                    let lay = layout(width);
                    for_range(b, 0, count as i64, 1, |b, t| {
                        let f = first as i64;
                        let w_t = kit::offset(b, w_g, t, lay.tile, f * lay.tile);
                        let y_t = kit::offset(b, y_g, t, 8 * out_len * 4, f * 8 * out_len * 4);
                        let b_t = bias_g.map(|p| kit::offset(b, p, t, 32, f * 32));
                        let tile = Tile { geo, rows: &rows, table, lay, ocv: width / 4, lanes, block, epi };
                        tile.emit_planes(b, x_g, w_t, b_t, y_t);
                    });
                    first += count;
                }
            });
        });
    })?;
    Ok(Emitted { func, aux: aux.bufs })
}

/// One tile of output channels over all output pixels.
struct Tile<'a> {
    geo: &'a Geo,
    rows: &'a RowTaps,
    table: Option<Value>,
    lay: WLayout,
    /// Weight vectors per tap (4 channels each).
    ocv: usize,
    /// Valid output channels in the tile.
    lanes: usize,
    /// Input channels per cache block (`cg` when the channels are not blocked).
    block: usize,
    epi: Epi,
}

/// What the pixel tiles of the current output row reduce over and where they write: the
/// input channels (pointers to the first one's input at column 0, tap 0, and to its
/// weights, and how many), whether the accumulators start from the partial sums in `y`
/// (channel blocks after the bias fill) or from the bias, whether these are the last
/// channels (the sums are final: the epilogue applies), and the row's tap ranges.
struct Run {
    x: Value,
    w: Value,
    count: usize,
    from_y: bool,
    last: bool,
    bias: Option<Value>,
    y_row: Value,
    rd: Range,
    rh: Range,
}

/// A tile's first output column: a compile-time constant or `first + iv·step`.
#[derive(Clone, Copy)]
enum Col {
    Const(usize),
    Dyn { iv: Value, step: usize, first: usize },
}

impl Col {
    /// `ptr + column·bytes + off`.
    fn at(self, b: &mut FunctionBuilder, ptr: Value, bytes: i64, off: i64) -> Value {
        match self {
            Col::Const(c) => kit::add(b, ptr, c as i64 * bytes + off),
            Col::Dyn { iv, step, first } => kit::offset(b, ptr, iv, step as i64 * bytes, first as i64 * bytes + off),
        }
    }
}

impl Tile<'_> {
    fn lanes_of(&self, v: usize) -> usize {
        self.lanes.saturating_sub(v * 4).min(4)
    }

    fn emit_planes(&self, b: &mut FunctionBuilder, x_g: Value, w_t: Value, b_t: Option<Value>, y_t: Value) {
        let geo = self.geo;
        let [_, ih, iw] = geo.inp;
        let [_, oh, ow] = geo.out;
        let (c0, c1) = geo.interior_cols();
        let blocked = self.block < geo.cg;
        if blocked {
            self.emit_bias_fill(b, b_t, y_t);
        }
        let in_bytes = geo.in_len() as i64 * 4;
        for_range(b, 0, geo.out[0] as i64, 1, |b, z| {
            for_range(b, 0, oh as i64, 1, |b, r| {
                let rd = self.rows.range(b, geo, self.table, 0, z);
                let rh = self.rows.range(b, geo, self.table, 1, r);
                // Input address of tap (0, 0, 0) for output column 0 of this row.
                let origin = -(((geo.pb[0] * ih + geo.pb[1]) * iw + geo.pb[2]) as i64) * 4;
                let x_row = kit::offset(b, x_g, z, (geo.s[0] * ih * iw * 4) as i64, origin);
                let x_row = kit::offset(b, x_row, r, (geo.s[1] * iw * 4) as i64, 0);
                let y_row = kit::offset(b, y_t, z, (oh * ow * 4) as i64, 0);
                let y_row = kit::offset(b, y_row, r, ow as i64 * 4, 0);
                // Every column of the row over input channels `x_ch`/`w_ch` (`chans` of them).
                let columns = |b: &mut FunctionBuilder, x_ch: Value, w_ch: Value, chans: usize, last: bool| {
                    let run = Run { x: x_ch, w: w_ch, count: chans, from_y: blocked, last, bias: b_t, y_row, rd, rh };
                    let px = |b: &mut FunctionBuilder, col: Col, pix: usize, taps: (usize, usize)| {
                        self.emit_pixels(b, &run, col, pix, taps);
                    };
                    for o in (0..c0).chain(c1..ow) {
                        px(b, Col::Const(o), 1, geo.taps(2, o));
                    }
                    let n_full = (c1 - c0) / PIX;
                    for_range(b, 0, n_full as i64, 1, |b, i| {
                        px(b, Col::Dyn { iv: i, step: PIX, first: c0 }, PIX, (0, geo.k[2]));
                    });
                    let first = c0 + n_full * PIX;
                    for_range(b, 0, (c1 - first) as i64, 1, |b, i| {
                        px(b, Col::Dyn { iv: i, step: 1, first }, 1, (0, geo.k[2]));
                    });
                };
                if blocked {
                    // Channel blocks keep the weights and input rows one column tile touches
                    // in L1 while the next tiles reuse them; partial sums live in `y`.
                    // Only the last block's sums are final, so it alone applies the epilogue;
                    // without a partial block, the last full one is peeled off the loop (an
                    // empty epilogue needs neither).
                    let rem = geo.cg % self.block;
                    let peel = rem == 0 && !self.epi.is_empty();
                    let looped = geo.cg / self.block - usize::from(peel);
                    for_range(b, 0, looped as i64, 1, |b, blk| {
                        let x_ch = kit::offset(b, x_row, blk, self.block as i64 * in_bytes, 0);
                        let w_ch = kit::offset(b, w_t, blk, self.block as i64 * self.lay.ic, 0);
                        columns(b, x_ch, w_ch, self.block, false);
                    });
                    let done = (looped * self.block) as i64;
                    if rem > 0 || peel {
                        let x_ch = kit::add(b, x_row, done * in_bytes);
                        let w_ch = kit::add(b, w_t, done * self.lay.ic);
                        columns(b, x_ch, w_ch, geo.cg - looped * self.block, true);
                    }
                } else {
                    columns(b, x_row, w_t, geo.cg, true);
                }
            });
        });
    }

    /// Fills the tile's output planes with the bias (the start of blocked accumulation).
    fn emit_bias_fill(&self, b: &mut FunctionBuilder, b_t: Option<Value>, y_t: Value) {
        let plane = self.geo.out_len();
        for oc in 0..self.lanes {
            let s = match b_t {
                Some(p) => kit::load_f32(b, p, oc as i64 * 4),
                None => b.ins().f32const(0.0),
            };
            let v = b.ins().splat(types::F32X4, s);
            let y_oc = kit::add(b, y_t, (oc * plane * 4) as i64);
            for_range(b, 0, (plane / 4) as i64, 1, |b, i| {
                let p = kit::offset(b, y_oc, i, 16, 0);
                store(b, v, p, 0);
            });
            for px in plane - plane % 4..plane {
                store(b, s, y_oc, px as i64 * 4);
            }
        }
    }

    /// `pix` adjacent output pixels from column `col` with column taps `taps`.
    fn emit_pixels(&self, b: &mut FunctionBuilder, ch: &Run, col: Col, pix: usize, taps: (usize, usize)) {
        let (rd, rh) = (ch.rd, ch.rh);
        let geo = self.geo;
        let [_, ih, iw] = geo.inp;
        let [_, kh_n, kw_n] = geo.k;
        let (sw, dw) = (geo.s[2] as i64, geo.d[2] as i64);
        let lay = self.lay;
        let in_len = geo.in_len() as i64;
        let x_c = col.at(b, ch.x, sw * 4, 0);
        let y_c = col.at(b, ch.y_row, 4, 0);
        let plane = geo.out_len() as i64 * 4;
        let mut init = Vec::with_capacity(self.ocv * pix);
        for v in 0..self.ocv {
            let lanes = self.lanes_of(v);
            let y_v = v as i64 * 4 * plane;
            if !ch.from_y {
                let bv = bias_vec(b, ch.bias, v, lanes);
                init.extend(std::iter::repeat_n(bv, pix));
            } else if pix == 4 {
                let zero = splat_const(b, 0.0);
                let rows = [0, 1, 2, 3].map(|l| if l < lanes { load_v(b, y_c, y_v + l as i64 * plane) } else { zero });
                init.extend(transpose4(b, rows));
            } else {
                init.push(gather(b, y_c, y_v, plane, lanes));
            }
        }
        let acc = Acc::new(b, self.ocv, pix, |_, v, p| init[v * pix + p]);
        // The reduction over one input channel, its pointers offset by constants.
        let channel = |b: &mut FunctionBuilder, x_ic: Value, x_off: i64, w_ic: Value, w_off: i64| {
            loop_range(b, rd, |b, kd| {
                let x_kd = kit::offset(b, x_ic, kd, (geo.d[0] * ih * iw * 4) as i64, 0);
                let w_kd = kit::offset(b, w_ic, kd, (kh_n * kw_n) as i64 * lay.tap, 0);
                loop_range(b, rh, |b, kh| {
                    let x_kh = kit::offset(b, x_kd, kh, (geo.d[1] * iw * 4) as i64, 0);
                    let w_kh = kit::offset(b, w_kd, kh, kw_n as i64 * lay.tap, 0);
                    for kw in taps.0..taps.1 {
                        let wv: Vec<Value> = (0..self.ocv)
                            .map(|v| lay.load(b, w_kh, w_off + kw as i64 * lay.tap, v, self.lanes_of(v)))
                            .collect();
                        for p in 0..pix {
                            let xs = splat_load(b, x_kh, x_off + (p as i64 * sw + kw as i64 * dw) * 4);
                            for (v, &wv) in wv.iter().enumerate() {
                                acc.fma(b, v, p, wv, xs);
                            }
                        }
                    }
                });
            });
        };
        // Unroll the channel loop when it is the only loop (1×1 kernels).
        let single = |r: Range| matches!(r, Range::Const(lo, hi) if hi - lo == 1);
        let unroll = if single(rd) && single(rh) && ch.count >= 4 { 4 } else { 1 };
        let main = ch.count - ch.count % unroll;
        for_range(b, 0, main as i64, unroll as i64, |b, ic| {
            let x_ic = kit::offset(b, x_c, ic, in_len * 4, 0);
            let w_ic = kit::offset(b, ch.w, ic, lay.ic, 0);
            for u in 0..unroll as i64 {
                channel(b, x_ic, u * in_len * 4, w_ic, u * lay.ic);
            }
        });
        for ic in main..ch.count {
            let ic = ic as i64;
            channel(b, x_c, ic * in_len * 4, ch.w, ic * lay.ic);
        }
        let epi = ch.last.then_some(self.epi);
        for v in 0..self.ocv {
            let lanes = self.lanes_of(v);
            let y_v = v as i64 * 4 * plane;
            if pix == 4 {
                let a = [0, 1, 2, 3].map(|p| acc.get(b, v, p));
                for (l, row) in transpose4(b, a).into_iter().enumerate().take(lanes) {
                    let off = y_v + l as i64 * plane;
                    let row = epi.map_or(row, |e| e.apply(b, row, y_c, off, 4, 4));
                    store(b, row, y_c, off);
                }
            } else {
                for p in 0..pix {
                    let a = acc.get(b, v, p);
                    let off = y_v + p as i64 * 4;
                    let a = epi.map_or(a, |e| e.apply(b, a, y_c, off, plane, lanes));
                    scatter(b, a, y_c, off, plane, lanes);
                }
            }
        }
    }
}
