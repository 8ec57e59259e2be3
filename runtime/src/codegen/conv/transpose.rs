//! ConvTranspose. Upsampling layers (kernel = stride on every axis, no padding) go to
//! [`super::transpose_upsample`], where every input pixel and tap owns one output element;
//! other geometries with constant weights go to the GEMM + gather of
//! [`super::transpose_cols`] when the host has the microkernel. The rest runs here in gather
//! form: each output pixel sums, over the kernel taps whose source input position is integral
//! and in range, input pixel × weight vector; vectorized over up to 8 output channels, taps in
//! a fixed order. The taps of every output index on every axis come from a table built at load
//! (`(tap, input offset)` entries), so the inner loops never divide.
//!
//! Work units: blocks of output rows (depth × rows flattened) of one image and group, with
//! every output channel; each output element is computed by the same code in any unit.

use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::super::builder::{for_range, unit_span, units_of};
use super::super::gemm::kit::{self, Acc, for_dyn, load_i64, scatter, splat_load};
use super::{AuxList, Geo, WLayout, bias_vec, const_f32, oc_tiles, pack_oc_tiles};
use super::{transpose_cols, transpose_upsample};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Jit};
use crate::microkernel::Microkernels;

/// Multiply-adds a work unit of the gather kernel aims at (~0.1 ms at its speed).
const UNIT_MACS: usize = 1 << 18;

pub(super) fn emit(jit: &mut Jit, cx: &EmitCx, geo: &Geo, mk: Option<Microkernels>) -> Result<Emitted, CompileError> {
    if transpose_upsample::applies(geo) {
        return transpose_upsample::emit(jit, cx, geo, mk);
    }
    if let (Some(mk), Some(w)) = (mk, const_f32(cx, 1))
        && transpose_cols::applies(geo)
    {
        return transpose_cols::emit(jit, cx, geo, mk, w);
    }
    let kvol = geo.kvol();
    let (cg, mg) = (geo.cg, geo.mg);
    let mut aux = AuxList::new(cx);
    let packed = const_f32(cx, 1);
    let w_arg = match packed {
        Some(w) => aux.push(Aux::F32(pack_oc_tiles(geo, |g, oc, ic, tap| w[((g * cg + ic) * mg + oc) * kvol + tap]))),
        None => cx.in_arg(1),
    };
    let mg_pad = (mg / 8) * 8 + (mg % 8).next_multiple_of(4);
    let layout = |t: usize| -> WLayout {
        let kv = kvol as i64 * 4;
        if packed.is_some() {
            WLayout {
                group: (mg_pad * cg) as i64 * kv,
                tile: 8 * cg as i64 * kv,
                ic: kv * t as i64,
                tap: t as i64 * 4,
                lane: None,
            }
        } else {
            WLayout { group: (cg * mg) as i64 * kv, tile: 8 * kv, ic: mg as i64 * kv, tap: 4, lane: Some(kv) }
        }
    };
    let (table, index_at) = tap_table(geo);
    let table_arg = aux.push(Aux::I64(table));
    let bias_arg = (cx.inputs.len() > 2).then(|| cx.in_arg(2));
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let (in_len, out_len) = (geo.in_len() as i64, geo.out_len() as i64);
    // Units: `rpu` output rows of one (image, group).
    let rows = geo.out[0] * geo.out[1];
    let images = geo.batch * geo.group;
    let row_macs = (cg * geo.in_len() * mg * kvol).div_ceil(rows.max(1)).max(1);
    let rpu = (UNIT_MACS / row_macs).clamp(1, (images * rows / 16).max(1)).min(rows.max(1));
    let row_blocks = rows.div_ceil(rpu).max(1);
    let units = units_of((images * row_blocks) as i64, 1);
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let w = kb.arg(w_arg);
        let bias = bias_arg.map(|a| kb.arg(a));
        let table = kb.arg(table_arg);
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let (u0, u1) = unit_span(b, lo, hi, (images * row_blocks) as i64, 1);
        for_dyn(b, u0, u1, 1, |b, u| {
            let ng = b.ins().udiv_imm_u(u, row_blocks as i64);
            let rb = b.ins().urem_imm_u(u, row_blocks as i64);
            let g = b.ins().urem_imm_u(ng, geo.group as i64);
            let x_g = kit::offset(b, x, ng, cg as i64 * in_len * 4, 0);
            let y_g = kit::offset(b, y, ng, mg as i64 * out_len * 4, 0);
            let w_g = kit::offset(b, w, g, layout(8).group, 0);
            let bias_g = bias.map(|p| kit::offset(b, p, g, mg as i64 * 4, 0));
            let (r0, r1) = {
                let r0 = b.ins().imul_imm_s(rb, rpu as i64);
                let r1 = b.ins().iadd_imm_s(r0, rpu as i64);
                let cap = b.ins().iconst(types::I64, rows as i64);
                (r0, b.ins().smin(r1, cap))
            };
            let mut first = 0;
            for (count, width, lanes) in oc_tiles(mg) {
                let lay = layout(width);
                for_range(b, 0, count as i64, 1, |b, t| {
                    let f = first as i64;
                    let w_t = kit::offset(b, w_g, t, lay.tile, f * lay.tile);
                    let y_t = kit::offset(b, y_g, t, 8 * out_len * 4, f * 8 * out_len * 4);
                    let b_t = bias_g.map(|p| kit::offset(b, p, t, 32, f * 32));
                    let tile = Tile { geo, lay, ocv: width / 4, lanes, table, index_at };
                    tile.emit(b, x_g, w_t, b_t, y_t, (r0, r1));
                });
                first += count;
            }
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, units))
}

/// The tap table: for each axis, one `(start, end)` pair per output index (element indices of
/// its entries in the same table), then the entries `(tap · taps-per-step, input offset in
/// bytes)` of the taps `k` with `o = i·s + k·d − pad` for an input index `i` in range.
fn tap_table(geo: &Geo) -> (Vec<i64>, [usize; 3]) {
    let index_len: usize = geo.out.iter().map(|o| 2 * o).sum();
    let mut index = Vec::with_capacity(index_len);
    let mut entries = Vec::new();
    let mut index_at = [0; 3];
    let tap_step = [geo.k[1] * geo.k[2], geo.k[2], 1];
    let in_step = [geo.inp[1] * geo.inp[2] * 4, geo.inp[2] * 4, 4];
    for axis in 0..3 {
        index_at[axis] = index.len();
        for o in 0..geo.out[axis] {
            index.push((index_len + entries.len()) as i64);
            for k in 0..geo.k[axis] {
                let num = o as i64 + geo.pb[axis] as i64 - (k * geo.d[axis]) as i64;
                let s = geo.s[axis] as i64;
                if num >= 0 && num % s == 0 && num / s < geo.inp[axis] as i64 {
                    entries.push((k * tap_step[axis]) as i64);
                    entries.push(num / s * in_step[axis] as i64);
                }
            }
            index.push((index_len + entries.len()) as i64);
        }
    }
    index.extend(entries);
    (index, index_at)
}

struct Tile<'a> {
    geo: &'a Geo,
    lay: WLayout,
    ocv: usize,
    lanes: usize,
    table: Value,
    index_at: [usize; 3],
}

impl Tile<'_> {
    fn lanes_of(&self, v: usize) -> usize {
        self.lanes.saturating_sub(v * 4).min(4)
    }

    /// Loops over the entries of output index `o` on `axis`, passing each entry's
    /// `(tap units, input byte offset)`.
    fn entries(
        &self,
        b: &mut FunctionBuilder,
        axis: usize,
        o: Value,
        mut body: impl FnMut(&mut FunctionBuilder, Value, Value),
    ) {
        let t = self.table;
        let p = kit::offset(b, t, o, 16, self.index_at[axis] as i64 * 8);
        let start = load_i64(b, p, 0);
        let end = load_i64(b, p, 8);
        for_dyn(b, start, end, 2, |b, e| {
            let q = kit::offset(b, t, e, 8, 0);
            let tap = load_i64(b, q, 0);
            let off = load_i64(b, q, 8);
            body(b, tap, off);
        });
    }

    /// Output rows `rows.0..rows.1` (depth and rows flattened) of the tile.
    fn emit(
        &self,
        b: &mut FunctionBuilder,
        x_g: Value,
        w_t: Value,
        b_t: Option<Value>,
        y_t: Value,
        rows: (Value, Value),
    ) {
        let geo = self.geo;
        let [_, oh, ow] = geo.out;
        let lay = self.lay;
        let in_len = geo.in_len() as i64;
        let plane = geo.out_len() as i64 * 4;
        for_dyn(b, rows.0, rows.1, 1, |b, zr| {
            let (z, r) = if geo.out[0] > 1 {
                (b.ins().udiv_imm_u(zr, oh as i64), b.ins().urem_imm_u(zr, oh as i64))
            } else {
                (b.ins().iconst(types::I64, 0), zr)
            };
            for_range(b, 0, ow as i64, 1, |b, c| {
                let acc = Acc::new(b, self.ocv, 1, |b, v, _| bias_vec(b, b_t, v, self.lanes_of(v)));
                self.entries(b, 0, z, |b, tz, xz| {
                    self.entries(b, 1, r, |b, tr, xr| {
                        self.entries(b, 2, c, |b, tc, xc| {
                            let tap = b.ins().iadd(tz, tr);
                            let tap = b.ins().iadd(tap, tc);
                            let xo = b.ins().iadd(xz, xr);
                            let xo = b.ins().iadd(xo, xc);
                            let w_tap = kit::offset(b, w_t, tap, lay.tap, 0);
                            let x_tap = b.ins().iadd(x_g, xo);
                            for_range(b, 0, geo.cg as i64, 1, |b, ic| {
                                let w_ic = kit::offset(b, w_tap, ic, lay.ic, 0);
                                let x_ic = kit::offset(b, x_tap, ic, in_len * 4, 0);
                                let xs = splat_load(b, x_ic, 0);
                                for v in 0..self.ocv {
                                    let wv = lay.load(b, w_ic, 0, v, self.lanes_of(v));
                                    acc.fma(b, v, 0, wv, xs);
                                }
                            });
                        });
                    });
                });
                let pix = b.ins().imul_imm_s(zr, ow as i64);
                let pix = b.ins().iadd(pix, c);
                let y_p = kit::offset(b, y_t, pix, 4, 0);
                for v in 0..self.ocv {
                    let a = acc.get(b, v, 0);
                    scatter(b, a, y_p, v as i64 * 4 * plane, plane, self.lanes_of(v));
                }
            });
        });
    }
}
