//! Upsampling ConvTranspose: the kernel equals the stride on every axis (no dilation, no
//! padding, no output padding), so input pixel `i` and tap `k` own output element `i·s + k`:
//! `y[oc][i·s + k] = bias[oc] + Σ_ic W[ic][oc][k]·x[ic][i]`. That is a GEMM per group (M =
//! output channels × taps, K = input channels, N = input pixels) whose results land on a
//! strided grid of the output; the column taps of a pixel are adjacent outputs, so stores
//! interleave them.
//!
//! - [`emit_gemm`] (the host's AVX2 microkernel, constant weights, more than [`MIN_GEMM_M`]
//!   GEMM rows): per work unit, the unit's input pixels are packed into 16-pixel strips and
//!   the 6×16 microkernel writes the `M × pixels` results into the unit's scratch
//!   ([`ColsGemm`]), then a generated pass adds the bias and stores each row into the output,
//!   interleaving column taps.
//! - [`emit_direct`] (pure Cranelift; also few output channels and runtime weights): each
//!   input row segment of a unit is copied to an L1-sized scratch, then a register tile per
//!   output channel (all taps when there are at most 8, else one depth/row tap's column taps)
//!   × up to 8 vectors of 4 adjacent pixels starts at the bias, is reduced over input channels
//!   with splatted weights and stored straight into the output.
//!
//! Work units: blocks of input rows (depth × rows flattened) × chunks of columns of one
//! (image, group); for the microkernel each unit's pixels are contiguous (whole rows, or a
//! chunk of one row). Each output element is computed by the same lane-wise operations in any
//! tile, block or unit, so every split gives the same bits.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::super::builder::{for_range, unit_span};
use super::super::gemm::kit::{self, Acc, for_dyn, gather, scatter, shuffle32, splat_load, store};
use super::transpose_cols::{ColsGemm, Sigs};
use super::{AuxList, Geo, const_f32, transpose4};
use crate::codegen::{Aux, CompileError, EmitCx, Emitted, Jit};
use crate::microkernel::{self, Microkernels, NR};

/// Multiply-adds a work unit aims at (~20–50 µs).
const UNIT_MACS: usize = 1 << 20;
/// Fewest units a layer is cut into when it has the pixels for them (to balance threads).
const MIN_UNITS: usize = 32;
/// Below this many GEMM rows (output channels × taps) the Cranelift tile is faster than the
/// microkernel with its zero-padded 6-row panels and separate store pass (measured: equal at
/// 32 rows, 0.5× at 4, 1.2× at 48).
const MIN_GEMM_M: usize = 32;
/// Scratch for one row of pixels of the Cranelift kernel, to stay in L1 (32 KiB) with the
/// tiles' weights and outputs.
const L1_COPY_BYTES: usize = 16 << 10;
/// Scratch budget of one GEMM unit (results + packed input), to stay in L2.
const SCRATCH_BYTES: usize = 160 << 10;

/// Whether every input pixel and tap of `geo` owns exactly one output element and every
/// output element has one: kernel = stride (no dilation), no padding, output = input × stride.
pub(super) fn applies(geo: &Geo) -> bool {
    let axes = (0..3).all(|a| {
        geo.k[a] == geo.s[a]
            && (geo.k[a] == 1 || geo.d[a] == 1)
            && geo.pb[a] == 0
            && geo.out[a] == geo.inp[a] * geo.s[a]
    });
    axes && geo.batch > 0 && geo.in_len() > 0 && geo.cg > 0 && geo.mg > 0
}

/// Through the microkernel when there is one, the weights are constant and the GEMM has more
/// than [`MIN_GEMM_M`] rows; else the Cranelift tile.
pub(super) fn emit(jit: &mut Jit, cx: &EmitCx, geo: &Geo, mk: Option<Microkernels>) -> Result<Emitted, CompileError> {
    match (mk, const_f32(cx, 1)) {
        (Some(mk), Some(w)) if geo.mg * geo.kvol() > MIN_GEMM_M => emit_gemm(jit, cx, geo, mk, w),
        _ => emit_direct(jit, cx, geo),
    }
}

/// How the input pixels of every (image, group) are cut into work units: blocks of `rpu` rows
/// × chunks of `cw` columns (the last chunk possibly narrower). Units are numbered
/// `(image·group, row block, chunk)`, row-major.
#[derive(Clone, Copy, Debug)]
struct Blocks {
    images: usize,
    /// Input rows, depth × rows flattened.
    rows: usize,
    width: usize,
    rpu: usize,
    row_blocks: usize,
    cw: usize,
    chunks: usize,
}

impl Blocks {
    /// Units of about [`UNIT_MACS`], at least [`MIN_UNITS`] when there are enough pixels, at
    /// most `max_px` pixels each; chunks are a multiple of `step` columns. `max_cw`: chunks of
    /// at most this many columns, with several rows per unit; `None`: each unit's pixels are
    /// contiguous (whole rows, or a chunk of one row).
    fn new(geo: &Geo, step: usize, max_px: usize, max_cw: Option<usize>) -> Blocks {
        let images = geo.batch * geo.group;
        let (rows, width) = (geo.inp[0] * geo.inp[1], geo.inp[2]);
        let px_macs = (geo.cg * geo.mg * geo.kvol()).max(1);
        let all = images * rows * width;
        let px = (UNIT_MACS / px_macs).min(all / MIN_UNITS).min(max_px);
        let px = (px / step).max(1) * step;
        let cw_cap = max_cw.map_or(px, |c| (c / step).max(1) * step);
        if width > cw_cap {
            let chunks = width.div_ceil(cw_cap);
            let cw = width.div_ceil(chunks).next_multiple_of(step);
            let rpu = if max_cw.is_some() { (px / cw).clamp(1, rows) } else { 1 };
            let row_blocks = rows.div_ceil(rpu);
            let rpu = rows.div_ceil(row_blocks);
            Blocks { images, rows, width, rpu, row_blocks: rows.div_ceil(rpu), cw, chunks: width.div_ceil(cw) }
        } else {
            let row_blocks = rows.div_ceil((px / width).max(1));
            let rpu = rows.div_ceil(row_blocks);
            Blocks { images, rows, width, rpu, row_blocks: rows.div_ceil(rpu), cw: width, chunks: 1 }
        }
    }

    fn units(&self) -> u64 {
        (self.images * self.row_blocks * self.chunks) as u64
    }

    /// Most pixels in one unit.
    fn max_px(&self) -> usize {
        self.rpu * self.cw
    }
}

/// One work unit: image·group `img`, input rows `r0..r1` and columns `c0..c0 + w`.
struct Unit {
    img: Value,
    r0: Value,
    r1: Value,
    c0: Value,
    w: usize,
}

/// `(x / d, x % d)` for a constant `d ≥ 1`.
pub(super) fn divmod(b: &mut FunctionBuilder, x: Value, d: usize) -> (Value, Value) {
    if d == 1 {
        return (x, b.ins().iconst(types::I64, 0));
    }
    (b.ins().udiv_imm_u(x, d as i64), b.ins().urem_imm_u(x, d as i64))
}

/// Emits `body` for each unit of `lo..hi`; the body is emitted twice (for the regular and the
/// last chunk width) when the last chunk is narrower, so column counts stay constants.
fn for_units(
    b: &mut FunctionBuilder,
    lo: Value,
    hi: Value,
    bl: &Blocks,
    mut body: impl FnMut(&mut FunctionBuilder, &Unit),
) {
    let (u0, u1) = unit_span(b, lo, hi, bl.units() as i64, 1);
    for_dyn(b, u0, u1, 1, |b, u| {
        let (t, cc) = divmod(b, u, bl.chunks);
        let (img, rb) = divmod(b, t, bl.row_blocks);
        let r0 = b.ins().imul_imm_s(rb, bl.rpu as i64);
        let r1 = b.ins().iadd_imm_s(r0, bl.rpu as i64);
        let cap = b.ins().iconst(types::I64, bl.rows as i64);
        let r1 = b.ins().smin(r1, cap);
        let c0 = b.ins().imul_imm_s(cc, bl.cw as i64);
        let last_w = bl.width - (bl.chunks - 1) * bl.cw;
        if last_w == bl.cw {
            body(b, &Unit { img, r0, r1, c0, w: bl.cw });
            return;
        }
        let (last, regular, done) = (b.create_block(), b.create_block(), b.create_block());
        let is_last = b.ins().icmp_imm_s(IntCC::Equal, cc, bl.chunks as i64 - 1);
        b.ins().brif(is_last, last, &[], regular, &[]);
        b.switch_to_block(regular);
        body(b, &Unit { img, r0, r1, c0, w: bl.cw });
        b.ins().jump(done, &[]);
        b.switch_to_block(last);
        body(b, &Unit { img, r0, r1, c0, w: last_w });
        b.ins().jump(done, &[]);
        b.switch_to_block(done);
    });
}

/// `for i in 0..n` (`n ≥ 1` constant) carrying pointers `start_j + i·step_j` as block params.
fn for_ptrs(
    b: &mut FunctionBuilder,
    n: i64,
    ptrs: &[(Value, i64)],
    mut body: impl FnMut(&mut FunctionBuilder, &[Value]),
) {
    debug_assert!(n >= 1);
    let head = b.create_block();
    let exit = b.create_block();
    b.append_block_param(head, types::I64);
    for _ in ptrs {
        b.append_block_param(head, types::I64);
    }
    let zero = b.ins().iconst(types::I64, 0);
    let init: Vec<_> = std::iter::once(zero).chain(ptrs.iter().map(|p| p.0)).map(Into::into).collect();
    b.ins().jump(head, &init);
    b.switch_to_block(head);
    let params = b.block_params(head).to_vec();
    body(b, &params[1..]);
    let i = b.ins().iadd_imm_s(params[0], 1);
    let mut next = vec![i.into()];
    for (p, &(_, step)) in params[1..].iter().zip(ptrs) {
        next.push(b.ins().iadd_imm_s(*p, step).into());
    }
    let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, i, n);
    b.ins().brif(more, head, &next, exit, &[]);
    b.switch_to_block(exit);
}

/// The values `vals` passed through block parameters: Cranelift's egraph sinks pure address
/// arithmetic to its uses (into inner loops, recomputed per iteration); a block parameter is
/// opaque to it, so values pinned at a loop level are computed once there.
pub(super) fn pin<const N: usize>(b: &mut FunctionBuilder, vals: [Value; N]) -> [Value; N] {
    let blk = b.create_block();
    for &v in &vals {
        let ty = b.func.dfg.value_type(v);
        b.append_block_param(blk, ty);
    }
    let args: Vec<_> = vals.iter().map(|&v| v.into()).collect();
    b.ins().jump(blk, &args);
    b.switch_to_block(blk);
    let params = b.block_params(blk);
    std::array::from_fn(|i| params[i])
}

/// Shapes every emitter needs, as byte strides where they address memory.
struct Shape {
    /// Column taps (= column stride).
    kxn: usize,
    kyn: usize,
    kzn: usize,
    kvol: usize,
    /// Input rows per depth slice (to split a flattened row).
    ih: usize,
    /// Input row, output row, output depth slice and output channel plane, in bytes.
    in_row: i64,
    out_row: i64,
    out_slice: i64,
    out_plane: i64,
}

impl Shape {
    fn new(geo: &Geo) -> Shape {
        let [_, oh, ow] = geo.out;
        Shape {
            kxn: geo.k[2],
            kyn: geo.k[1],
            kzn: geo.k[0],
            kvol: geo.kvol(),
            ih: geo.inp[1],
            in_row: geo.inp[2] as i64 * 4,
            out_row: ow as i64 * 4,
            out_slice: (oh * ow) as i64 * 4,
            out_plane: geo.out_len() as i64 * 4,
        }
    }

    /// The output address of tap (0, 0, 0) of flattened input row `rr` at column `c0`, given
    /// the image's output base `y_i`.
    fn out_row_at(&self, b: &mut FunctionBuilder, y_i: Value, rr: Value, c0: Value) -> Value {
        let (iz, iy) = divmod(b, rr, self.ih);
        let p = kit::offset(b, y_i, iz, self.out_slice * self.kzn as i64, 0);
        let p = kit::offset(b, p, iy, self.out_row * self.kyn as i64, 0);
        kit::offset(b, p, c0, 4 * self.kxn as i64, 0)
    }

    /// Loops over the depth and row taps, passing `(kz·kyn + ky, byte offset of the tap's
    /// output row)` to `body`.
    fn row_taps(&self, b: &mut FunctionBuilder, mut body: impl FnMut(&mut FunctionBuilder, Value, Value)) {
        for_range(b, 0, self.kzn as i64, 1, |b, kz| {
            for_range(b, 0, self.kyn as i64, 1, |b, ky| {
                let t = b.ins().imul_imm_s(kz, self.kyn as i64);
                let t = b.ins().iadd(t, ky);
                let o = b.ins().imul_imm_s(kz, self.out_slice);
                let oy = b.ins().imul_imm_s(ky, self.out_row);
                let o = b.ins().iadd(o, oy);
                body(b, t, o);
            });
        });
    }

    /// Stores `vals[kx][v]` (column tap `kx` of pixels `4v..4v + lanes[v]`) at `y` (the output
    /// of the first pixel's tap 0), interleaving the taps.
    fn store_taps(&self, b: &mut FunctionBuilder, vals: &[Vec<Value>], lanes: &[usize], y: Value) {
        let k = self.kxn;
        for (v, &l) in lanes.iter().enumerate() {
            let base = (v * 4 * k * 4) as i64;
            match k {
                1 => scatter(b, vals[0][v], y, base, 4, l),
                2 => {
                    let lo = shuffle32(b, vals[0][v], vals[1][v], [0, 4, 1, 5]);
                    scatter(b, lo, y, base, 4, (2 * l).min(4));
                    if l > 2 {
                        let hi = shuffle32(b, vals[0][v], vals[1][v], [2, 6, 3, 7]);
                        scatter(b, hi, y, base + 16, 4, 2 * l - 4);
                    }
                }
                4 => {
                    let px = transpose4(b, [vals[0][v], vals[1][v], vals[2][v], vals[3][v]]);
                    for (p, &pv) in px.iter().enumerate().take(l) {
                        store(b, pv, y, base + p as i64 * 16);
                    }
                }
                _ => {
                    for p in 0..l {
                        for (kx, row) in vals.iter().enumerate() {
                            let s = b.ins().extractlane(row[v], p as u8);
                            store(b, s, y, base + ((p * k + kx) * 4) as i64);
                        }
                    }
                }
            }
        }
    }
}

/// Lanes of each vector of a run of `n` pixels: full vectors, then the remainder.
fn vector_lanes(n: usize) -> Vec<usize> {
    let mut lanes = vec![4; n / 4];
    if !n.is_multiple_of(4) {
        lanes.push(n % 4);
    }
    lanes
}

/// Input channels per unrolled step of the direct kernel's reduction loop.
const UNROLL: usize = 2;

/// The pure-Cranelift kernel (see the module docs).
pub(super) fn emit_direct(jit: &mut Jit, cx: &EmitCx, geo: &Geo) -> Result<Emitted, CompileError> {
    jit.note_variant("conv-transpose-upsample");
    let sh = Shape::new(geo);
    let (cg, mg) = (geo.cg, geo.mg);
    // Register tile: `row_taps` depth/row taps (all of them when there are few taps, else one)
    // × kxn column taps × `pv` vectors of 4 pixels: 8 accumulators when the taps allow.
    let all_taps = sh.kvol <= 8;
    let row_taps = if all_taps { sh.kzn * sh.kyn } else { 1 };
    let pv = (8 / (row_taps * sh.kxn)).max(1);
    let step = 4 * pv;
    // Each row of a unit is first copied to scratch, `[cg][ldx]`, then computed: the channel
    // planes of the input are often 4 KiB apart, which would put a tile's loads in one L1 set;
    // the copy is sized to stay in L1 until the tiles have read it.
    let bl = Blocks::new(geo, step, usize::MAX, Some(L1_COPY_BYTES / (cg * 4)));
    let ldx = anti_alias(bl.cw.next_multiple_of(4));
    let in_plane = geo.in_len() as i64 * 4;
    let mut aux = AuxList::new(cx);
    // Weights `[group][oc][ic][tap]` when constant (packed at load), else the tensor itself.
    let (w_arg, w_oc, w_ic) = match const_f32(cx, 1) {
        Some(w) => {
            let kvol = sh.kvol;
            let mut packed = Vec::with_capacity(w.len());
            for g in 0..geo.group {
                for oc in 0..mg {
                    for ic in 0..cg {
                        let at = ((g * cg + ic) * mg + oc) * kvol;
                        packed.extend_from_slice(&w[at..at + kvol]);
                    }
                }
            }
            (aux.push(Aux::F32(packed)), (cg * kvol) as i64 * 4, kvol as i64 * 4)
        }
        None => (cx.in_arg(1), sh.kvol as i64 * 4, (mg * sh.kvol) as i64 * 4),
    };
    let scratch_arg = aux.push(Aux::Scratch(cg * ldx * 4));
    let bias_arg = (cx.inputs.len() > 2).then(|| cx.in_arg(2));
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let w = kb.arg(w_arg);
        let xs = kb.arg(scratch_arg);
        let bias = bias_arg.map(|a| kb.arg(a));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        for_units(b, lo, hi, &bl, |b, un| {
            let g = b.ins().urem_imm_u(un.img, geo.group as i64);
            let x_i = kit::offset(b, x, un.img, cg as i64 * in_plane, 0);
            let y_i = kit::offset(b, y, un.img, mg as i64 * sh.out_plane, 0);
            let w_g = kit::offset(b, w, g, mg as i64 * w_oc, 0);
            let b_g = bias.map(|p| kit::offset(b, p, g, mg as i64 * 4, 0));
            let width = un.w;
            for_dyn(b, un.r0, un.r1, 1, |b, rr| {
                let src = kit::offset(b, x_i, rr, sh.in_row, 0);
                let src = kit::offset(b, src, un.c0, 4, 0);
                copy_row(b, src, in_plane, cg, width, xs, ldx);
                let y_r = sh.out_row_at(b, y_i, rr, un.c0);
                let [x_r, y_r] = pin(b, [xs, y_r]);
                // One tile of pixels at `x_t` (`lanes` per vector), output at `y_t`, for every
                // channel and row tap.
                let tile = |b: &mut FunctionBuilder, x_t: Value, y_t: Value, lanes: &[usize]| {
                    for_range(b, 0, mg as i64, 1, |b, oc| {
                        let w_o = kit::offset(b, w_g, oc, w_oc, 0);
                        let y_o = kit::offset(b, y_t, oc, sh.out_plane, 0);
                        let init = match b_g {
                            Some(p) => {
                                let p = kit::offset(b, p, oc, 4, 0);
                                splat_load(b, p, 0)
                            }
                            None => kit::splat_const(b, 0.0),
                        };
                        let [w_o, y_o, init] = pin(b, [w_o, y_o, init]);
                        let body = |b: &mut FunctionBuilder, w_t: Value, y_tap: Value| {
                            let taps = row_taps * sh.kxn;
                            let acc = Acc::new(b, taps, lanes.len(), |_, _, _| init);
                            // Input channel `ic` at `x`, `w` plus `k` channels.
                            let channel = |b: &mut FunctionBuilder, x: Value, w: Value, k: usize| {
                                let xo = (k * ldx * 4) as i64;
                                let xv: Vec<Value> = lanes
                                    .iter()
                                    .enumerate()
                                    .map(|(v, &l)| gather(b, x, xo + v as i64 * 16, 4, l))
                                    .collect();
                                for tap in 0..taps {
                                    // Read-only: placed next to its FMAs, not at the top of the body
                                    // where every weight would stay live (and spill) until the
                                    // FMAs, elaborated at the back edge.
                                    let ws = kit::splat_load_ro(b, w, k as i64 * w_ic + tap as i64 * 4);
                                    for (v, &xv) in xv.iter().enumerate() {
                                        acc.fma(b, tap, v, ws, xv);
                                    }
                                }
                            };
                            let steps = cg / UNROLL;
                            if steps > 0 {
                                let ptrs = [(x_t, (UNROLL * ldx * 4) as i64), (w_t, UNROLL as i64 * w_ic)];
                                for_ptrs(b, steps as i64, &ptrs, |b, p| {
                                    for k in 0..UNROLL {
                                        channel(b, p[0], p[1], k);
                                    }
                                });
                            }
                            for k in steps * UNROLL..cg {
                                channel(b, x_t, w_t, k);
                            }
                            for rt in 0..row_taps {
                                let (kz, ky) = (rt / sh.kyn, rt % sh.kyn);
                                let vals: Vec<Vec<Value>> = (0..sh.kxn)
                                    .map(|kx| (0..lanes.len()).map(|v| acc.get(b, rt * sh.kxn + kx, v)).collect())
                                    .collect();
                                let y_rt = kit::add(b, y_tap, kz as i64 * sh.out_slice + ky as i64 * sh.out_row);
                                sh.store_taps(b, &vals, lanes, y_rt);
                            }
                        };
                        if all_taps {
                            body(b, w_o, y_o);
                        } else {
                            sh.row_taps(b, |b, t, y_off| {
                                let w_t = kit::offset(b, w_o, t, sh.kxn as i64 * 4, 0);
                                let y_tap = b.ins().iadd(y_o, y_off);
                                let [w_t, y_tap] = pin(b, [w_t, y_tap]);
                                body(b, w_t, y_tap);
                            });
                        }
                    });
                };
                let full = width / step;
                if full > 0 {
                    let ptrs = [(x_r, step as i64 * 4), (y_r, (step * sh.kxn) as i64 * 4)];
                    for_ptrs(b, full as i64, &ptrs, |b, p| tile(b, p[0], p[1], &[4; 8][..pv]));
                }
                if full * step < width {
                    let c = (full * step) as i64;
                    let x_t = kit::add(b, x_r, c * 4);
                    let y_t = kit::add(b, y_r, c * sh.kxn as i64 * 4);
                    tile(b, x_t, y_t, &vector_lanes(width - full * step));
                }
            });
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, bl.units()))
}

/// A row stride (in f32) near `n` whose byte size is not a multiple of 4 KiB.
fn anti_alias(n: usize) -> usize {
    if (n * 4).is_multiple_of(4096) { n + 16 } else { n }
}

/// Copies `w` pixels of channels `0..cg` (planes `in_plane` bytes apart) from `src` to `dst`
/// as `[cg][ldx]`.
fn copy_row(b: &mut FunctionBuilder, src: Value, in_plane: i64, cg: usize, w: usize, dst: Value, ldx: usize) {
    for_ptrs(b, cg as i64, &[(src, in_plane), (dst, ldx as i64 * 4)], |b, p| {
        let full = (w / 16 * 16) as i64;
        for_range(b, 0, full, 16, |b, c| {
            let s = kit::offset(b, p[0], c, 4, 0);
            let t = kit::offset(b, p[1], c, 4, 0);
            let v: Vec<Value> = (0..4).map(|i| kit::load_v(b, s, i * 16)).collect();
            for (i, v) in v.into_iter().enumerate() {
                store(b, v, t, i as i64 * 16);
            }
        });
        for (v, l) in vector_lanes(w - full as usize).into_iter().enumerate() {
            let off = full * 4 + v as i64 * 16;
            let x = gather(b, p[0], off, 4, l);
            scatter(b, x, p[1], off, 4, l);
        }
    });
}

/// The microkernel kernel (see the module docs).
pub(super) fn emit_gemm(
    jit: &mut Jit,
    cx: &EmitCx,
    geo: &Geo,
    mk: Microkernels,
    w: &[f32],
) -> Result<Emitted, CompileError> {
    jit.note_variant("conv-transpose-upsample-avx2");
    let sh = Shape::new(geo);
    let (cg, mg) = (geo.cg, geo.mg);
    let max_px = (SCRATCH_BYTES / ColsGemm::bytes_per_px(geo, mg) / NR * NR).max(NR);
    let bl = Blocks::new(geo, NR, max_px, None);
    let gemm = ColsGemm::new(geo, mk, mg, bl.max_px());
    let ldc = gemm.ldc;
    let in_len = geo.in_len();
    // A 1×1 geometry over the flattened plane: the pixels as a plain `[K][N]` matrix.
    let pack_geo =
        microkernel::PackGeo { ih: 1, iw: in_len, ow: in_len, kh: 1, kw: 1, sh: 1, sw: 1, dh: 1, dw: 1, ph: 0, pw: 0 };
    let mut aux = AuxList::new(cx);
    let a_arg = aux.push(Aux::F32(gemm.pack_a(geo, w)));
    let geo_arg = aux.push(Aux::I64(pack_geo.table()));
    let scratch_arg = aux.push(Aux::Scratch(gemm.scratch_bytes()));
    let bias_arg = (cx.inputs.len() > 2).then(|| cx.in_arg(2));
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let in_plane = in_len as i64 * 4;
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let a = kb.arg(a_arg);
        let geo_t = kb.arg(geo_arg);
        let cols = kb.arg(scratch_arg);
        let bias = bias_arg.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let sigs = Sigs::import(b);
        for_units(b, lo, hi, &bl, |b, un| {
            let g = b.ins().urem_imm_u(un.img, geo.group as i64);
            let x_i = kit::offset(b, x, un.img, cg as i64 * in_plane, 0);
            let y_i = kit::offset(b, y, un.img, mg as i64 * sh.out_plane, 0);
            let a_g = kit::offset(b, a, g, gemm.group_bytes(geo), 0);
            let b_g = bias.map(|p| kit::offset(b, p, g, mg as i64 * 4, 0));
            let width = un.w;
            // The unit's pixels are contiguous: `p0 .. p0 + (r1 − r0)·width`.
            let p0 = b.ins().imul_imm_s(un.r0, geo.inp[2] as i64);
            let p0 = b.ins().iadd(p0, un.c0);
            let n_rows = b.ins().isub(un.r1, un.r0);
            let npx = b.ins().imul_imm_s(n_rows, width as i64);
            gemm.emit(b, &sigs, geo_t, x_i, a_g, p0, npx, cols);
            // Results row `oc·kvol + tap`, pixel `(rr − r0)·width + c` → output, plus bias.
            for_dyn(b, un.r0, un.r1, 1, |b, rr| {
                let rel = b.ins().isub(rr, un.r0);
                let src_r = kit::offset(b, cols, rel, width as i64 * 4, 0);
                let y_r = sh.out_row_at(b, y_i, rr, un.c0);
                let [src_r, y_r] = pin(b, [src_r, y_r]);
                for_range(b, 0, mg as i64, 1, |b, oc| {
                    let src_oc = kit::offset(b, src_r, oc, (sh.kvol * ldc * 4) as i64, 0);
                    let y_oc = kit::offset(b, y_r, oc, sh.out_plane, 0);
                    let bias_v = b_g.map(|p| {
                        let p = kit::offset(b, p, oc, 4, 0);
                        let v = splat_load(b, p, 0);
                        pin(b, [v])[0]
                    });
                    sh.row_taps(b, |b, t, y_off| {
                        let src_t = kit::offset(b, src_oc, t, (sh.kxn * ldc * 4) as i64, 0);
                        let y_t = b.ins().iadd(y_oc, y_off);
                        let [src_t, y_t] = pin(b, [src_t, y_t]);
                        let run = |b: &mut FunctionBuilder, src: Value, y_c: Value, lanes: &[usize]| {
                            let vals: Vec<Vec<Value>> = (0..sh.kxn)
                                .map(|kx| {
                                    let off = (kx * ldc * 4) as i64;
                                    let vs = lanes
                                        .iter()
                                        .enumerate()
                                        .map(|(v, &l)| gather(b, src, off + v as i64 * 16, 4, l));
                                    let vs: Vec<Value> = vs.collect();
                                    match bias_v {
                                        Some(bv) => vs.into_iter().map(|v| b.ins().fadd(v, bv)).collect(),
                                        None => vs,
                                    }
                                })
                                .collect();
                            sh.store_taps(b, &vals, lanes, y_c);
                        };
                        let full = width / 8;
                        if full > 0 {
                            let ptrs = [(src_t, 32), (y_t, 32 * sh.kxn as i64)];
                            for_ptrs(b, full as i64, &ptrs, |b, p| run(b, p[0], p[1], &[4, 4]));
                        }
                        if full * 8 < width {
                            let c = (full * 8) as i64;
                            let src = kit::add(b, src_t, c * 4);
                            let y_c = kit::add(b, y_t, c * sh.kxn as i64 * 4);
                            run(b, src, y_c, &vector_lanes(width - full * 8));
                        }
                    });
                });
            });
        });
    })?;
    Ok(Emitted::parallel(func, aux.bufs, bl.units()))
}
