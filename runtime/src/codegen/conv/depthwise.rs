//! Convs with one input channel per group and few output channels per group (depthwise,
//! channel multiplier < 4): one output channel at a time, vectorized over 4 adjacent output
//! pixels with the tap weight splatted. The weights are read in place (no packing). The
//! portable path: hosts with AVX2/FMA run 1-D/2-D depthwise convs on [`super::depthwise_avx2`],
//! which computes the same sums in the same order.
//!
//! Work units: blocks of output channels (of the whole batch) × blocks of output rows; every
//! output row is computed by the same code whichever unit it falls in.

use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::super::builder::{for_range, unit_span, units_of};
use super::super::gemm::kit::{self, Acc, Epi, for_dyn, gather, shuffle32, splat_const, splat_load, store};
use super::{AuxList, Geo, Range, RowTaps, loop_range};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};

/// Vectors of 4 output pixels per register tile of the main loop.
const VECS: usize = 4;

pub(super) fn emit(jit: &mut Jit, cx: &EmitCx, geo: &Geo, ep: &Epilogue) -> Result<Emitted, CompileError> {
    let mut aux = AuxList::new(cx);
    let rows = RowTaps::build(geo);
    let table_arg = rows.needs_table().then(|| aux.push(Aux::I64(rows.table.clone())));
    let bias_arg = (ep.op_inputs(cx) > 2).then(|| cx.in_arg(2));
    let (x_arg, w_arg, y_arg) = (cx.in_arg(0), cx.in_arg(1), cx.out_arg(0));
    let (in_len, out_len, kvol) = (geo.in_len() as i64, geo.out_len() as i64, geo.kvol() as i64);
    let plan = Units::new(geo, UNIT_MACS);
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let w = kb.arg(w_arg);
        let bias = bias_arg.map(|a| kb.arg(a));
        let table = table_arg.map(|a| kb.arg(a));
        let epi = Epi::new(kb, ep, y);
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        if plan.chans == 0 || out_len == 0 {
            return;
        }
        let mg = geo.mg as i64;
        let per_image = (geo.group * geo.mg) as i64;
        let (u0, u1) = unit_span(b, lo, hi, plan.units() as i64, 1);
        for_dyn(b, u0, u1, 1, |b, u| {
            let (cb, rb) = if plan.row_blocks > 1 {
                (b.ins().udiv_imm_u(u, plan.row_blocks as i64), b.ins().urem_imm_u(u, plan.row_blocks as i64))
            } else {
                (u, b.ins().iconst(types::I64, 0))
            };
            let cb1 = b.ins().iadd_imm_s(cb, 1);
            let (c0, c1) = unit_span(b, cb, cb1, plan.chans as i64, plan.chans_per_unit as i64);
            // A unit with every row loops over constant bounds (fewer live registers).
            let span = (plan.row_blocks > 1).then(|| {
                let rb1 = b.ins().iadd_imm_s(rb, 1);
                unit_span(b, rb, rb1, plan.rows as i64, plan.rows_per_unit as i64)
            });
            // Output channel `c` of the batch: image `c / per_image`, channel `m` of the image,
            // reading input channel `m / mg` of the image.
            for_dyn(b, c0, c1, 1, |b, c| {
                let n = b.ins().udiv_imm_u(c, per_image);
                let m = b.ins().urem_imm_u(c, per_image);
                let g = b.ins().udiv_imm_u(m, mg);
                let ig = b.ins().imul_imm_s(n, geo.group as i64);
                let ig = b.ins().iadd(ig, g);
                let x_c = kit::offset(b, x, ig, in_len * 4, 0);
                let y_m = kit::offset(b, y, c, out_len * 4, 0);
                let w_m = kit::offset(b, w, m, kvol * 4, 0);
                let bias_m = match bias {
                    Some(p) => {
                        let p = kit::offset(b, p, m, 4, 0);
                        splat_load(b, p, 0)
                    }
                    None => splat_const(b, 0.0),
                };
                let ch = Channel { geo, rows: &rows, table, bias: bias_m, epi };
                ch.emit_rows(b, x_c, w_m, y_m, span);
            });
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, plan.units()))
}

/// Multiply-adds a work unit aims at (about 20 µs).
const UNIT_MACS: usize = 1 << 17;

/// Work units: blocks of output channels × blocks of output rows (depth and rows flattened).
pub(super) struct Units {
    pub chans: usize,
    pub chans_per_unit: usize,
    pub rows: usize,
    pub rows_per_unit: usize,
    pub row_blocks: usize,
}

impl Units {
    /// Units of about `unit_macs` multiply-adds: blocks of whole channels, or (when one
    /// channel is more than that) blocks of rows of one channel.
    pub(super) fn new(geo: &Geo, unit_macs: usize) -> Units {
        let chans = geo.batch * geo.group * geo.mg;
        let rows = geo.out[0] * geo.out[1];
        let row_macs = (geo.out[2] * geo.kvol()).max(1);
        // Blocks of whole 8-row register tiles of the AVX2 routine where they are that large.
        let rows_per_unit = unit_macs.div_ceil(row_macs);
        let rows_per_unit = if rows_per_unit >= 8 { rows_per_unit.next_multiple_of(8) } else { rows_per_unit };
        let rows_per_unit = rows_per_unit.clamp(1, rows.max(1));
        let row_blocks = rows.div_ceil(rows_per_unit).max(1);
        let chans_per_unit =
            if row_blocks > 1 { 1 } else { unit_macs.div_ceil(row_macs * rows.max(1)).clamp(1, chans.max(1)) };
        Units { chans, chans_per_unit, rows, rows_per_unit, row_blocks }
    }

    pub(super) fn units(&self) -> u64 {
        units_of(self.chans.div_ceil(self.chans_per_unit.max(1)) as i64, 1) * self.row_blocks as u64
    }
}

/// One output channel over all output pixels.
struct Channel<'a> {
    geo: &'a Geo,
    rows: &'a RowTaps,
    table: Option<Value>,
    /// The bias, splatted.
    bias: Value,
    epi: Epi,
}

impl Channel<'_> {
    /// Output rows `span` (depth and rows flattened; `None`: every row) of the channel.
    fn emit_rows(&self, b: &mut FunctionBuilder, x_c: Value, w_m: Value, y_m: Value, span: Option<(Value, Value)>) {
        let geo = self.geo;
        let [_, ih, iw] = geo.inp;
        let [oz, oh, ow] = geo.out;
        let (c0, c1) = geo.interior_cols();
        let sw = geo.s[2];
        let mut row = |b: &mut FunctionBuilder, rr: Value| {
            let (z, r) = if oz > 1 {
                (b.ins().udiv_imm_u(rr, oh as i64), b.ins().urem_imm_u(rr, oh as i64))
            } else {
                (b.ins().iconst(types::I64, 0), rr)
            };
            let rd = self.rows.range(b, geo, self.table, 0, z);
            let rh = self.rows.range(b, geo, self.table, 1, r);
            let origin = -(((geo.pb[0] * ih + geo.pb[1]) * iw + geo.pb[2]) as i64) * 4;
            let x_row = kit::offset(b, x_c, z, (geo.s[0] * ih * iw * 4) as i64, origin);
            let x_row = kit::offset(b, x_row, r, (geo.s[1] * iw * 4) as i64, 0);
            let y_row = kit::offset(b, y_m, z, (oh * ow * 4) as i64, 0);
            let y_row = kit::offset(b, y_row, r, ow as i64 * 4, 0);
            let ctx = Row { w_m, rd, rh };
            for o in (0..c0).chain(c1..ow) {
                let (x_o, y_o) = (kit::add(b, x_row, (o * sw * 4) as i64), kit::add(b, y_row, o as i64 * 4));
                self.emit_pixel(b, &ctx, x_o, y_o, geo.taps(2, o));
            }
            let (mut o, width) = (c0, c1 - c0);
            for vecs in [VECS, 1] {
                let count = (c1 - o) / (4 * vecs);
                let first = o;
                for_range(b, 0, count as i64, 1, |b, i| {
                    let step = (4 * vecs) as i64;
                    let x_o = kit::offset(b, x_row, i, step * sw as i64 * 4, (first * sw * 4) as i64);
                    let y_o = kit::offset(b, y_row, i, step * 4, first as i64 * 4);
                    self.emit_vectors(b, &ctx, x_o, y_o, vecs);
                });
                o += count * 4 * vecs;
            }
            debug_assert!(o <= c0 + width);
            for o in o..c1 {
                let (x_o, y_o) = (kit::add(b, x_row, (o * sw * 4) as i64), kit::add(b, y_row, o as i64 * 4));
                self.emit_pixel(b, &ctx, x_o, y_o, (0, geo.k[2]));
            }
        };
        match span {
            Some((r0, r1)) => for_dyn(b, r0, r1, 1, &mut row),
            None => for_range(b, 0, (oz * oh) as i64, 1, &mut row),
        }
    }

    /// The reduction over the valid depth and row taps; `tap(b, x_kh, w_kh)` handles one row
    /// of the kernel.
    fn reduce(
        &self,
        b: &mut FunctionBuilder,
        row: &Row,
        x_o: Value,
        mut tap: impl FnMut(&mut FunctionBuilder, Value, Value),
    ) {
        let geo = self.geo;
        let [_, ih, iw] = geo.inp;
        let [_, kh_n, kw_n] = geo.k;
        loop_range(b, row.rd, |b, kd| {
            let x_kd = kit::offset(b, x_o, kd, (geo.d[0] * ih * iw * 4) as i64, 0);
            let w_kd = kit::offset(b, row.w_m, kd, (kh_n * kw_n * 4) as i64, 0);
            loop_range(b, row.rh, |b, kh| {
                let x_kh = kit::offset(b, x_kd, kh, (geo.d[1] * iw * 4) as i64, 0);
                let w_kh = kit::offset(b, w_kd, kh, kw_n as i64 * 4, 0);
                tap(b, x_kh, w_kh);
            });
        });
    }

    /// `vecs` vectors of 4 adjacent interior output pixels starting at `x_o` / `y_o`.
    fn emit_vectors(&self, b: &mut FunctionBuilder, row: &Row, x_o: Value, y_o: Value, vecs: usize) {
        let geo = self.geo;
        let (sw, dw) = (geo.s[2] as i64, geo.d[2] as i64);
        let acc = Acc::new(b, 1, vecs, |_, _, _| self.bias);
        self.reduce(b, row, x_o, |b, x_kh, w_kh| {
            for kw in 0..geo.k[2] as i64 {
                let ws = kit::splat_load_ro(b, w_kh, kw * 4);
                for q in 0..vecs as i64 {
                    let off = (4 * q * sw + kw * dw) * 4;
                    let xv = match sw {
                        1 => kit::load_v_ro(b, x_kh, off),
                        // Elements e, e+2, e+4, e+6 from [e..e+3] and [e+3..e+6]: reads
                        // nothing past the last element used.
                        2 => {
                            let lo = kit::load_v_ro(b, x_kh, off);
                            let hi = kit::load_v_ro(b, x_kh, off + 12);
                            shuffle32(b, lo, hi, [0, 2, 5, 7])
                        }
                        _ => gather(b, x_kh, off, sw * 4, 4),
                    };
                    acc.fma(b, 0, q as usize, xv, ws);
                }
            }
        });
        for q in 0..vecs {
            let v = acc.get(b, 0, q);
            let v = self.epi.apply(b, v, y_o, q as i64 * 16, 4, 4);
            store(b, v, y_o, q as i64 * 16);
        }
    }

    /// One output pixel with column taps `taps` (lane 0 of splatted vectors).
    fn emit_pixel(&self, b: &mut FunctionBuilder, row: &Row, x_o: Value, y_o: Value, taps: (usize, usize)) {
        let dw = self.geo.d[2] as i64;
        let acc = Acc::new(b, 1, 1, |_, _, _| self.bias);
        self.reduce(b, row, x_o, |b, x_kh, w_kh| {
            for kw in taps.0 as i64..taps.1 as i64 {
                let ws = kit::splat_load_ro(b, w_kh, kw * 4);
                let xs = kit::splat_load_ro(b, x_kh, kw * dw * 4);
                acc.fma(b, 0, 0, xs, ws);
            }
        });
        let v = acc.get(b, 0, 0);
        // Every lane holds the pixel's value: the residual is splatted to match.
        let v = self.epi.apply(b, v, y_o, 0, 0, 4);
        let s = b.ins().extractlane(v, 0);
        store(b, s, y_o, 0);
    }
}

/// The channel's weights and the tap ranges of the current output row.
struct Row {
    w_m: Value,
    rd: Range,
    rh: Range,
}
