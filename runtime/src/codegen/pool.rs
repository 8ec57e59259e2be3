//! Pooling: max/average windows and global pooling.
//!
//! Windowed pooling runs over exactly three spatial axes (1-D and 2-D windows get leading unit
//! axes, as in the reference). The window is a box, so the taps of output `(z, r, c)` are the
//! valid input rows of `(z, r)` (a load-time table) times the valid columns of `c`. Columns whose
//! window lies inside the input (the interior) run with baked taps, 4 outputs per vector for
//! strides 1 and 2; the clipped edge columns run from a small table with runtime tap counts.
//! 2-D windows (a unit depth kernel) on output rows whose every window row is valid (all but
//! the padded top and bottom rows) also bake the rows: the taps of a column group are one
//! unrolled tree instead of a loop over the row table. At stride 2, two adjacent column taps
//! share their two loads (even and odd lanes of the same 8 inputs). Measured on BlazeFace's
//! 2×2 stride-2 pools and mnist_cnn's (1 thread): see BENCHMARKS.md.
//!
//! Work units take whole output rows (windowed pooling) or whole planes (global pooling).

use cnnc_ir::PoolAttrs;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{ConstantData, Endianness};
use cranelift_codegen::ir::{Immediate, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::builder::{for_range, if_else, mem, unit_span, units_of};
use super::gemm::kit::for_dyn;
use super::index_map::{Cut, GRAIN, loop_units, outer_cut};
use super::{Aux, CompileError, EmitCx, Emitted, Jit};

/// Kernel columns at or below this width are unrolled in the interior.
const MAX_BAKED_TAPS: usize = 32;

/// ONNX `MaxPool`: padding acts as −∞ and NaN inputs are skipped (`if x > best`).
pub(crate) fn emit_max_pool(jit: &mut Jit, cx: &EmitCx, a: &PoolAttrs) -> Result<Emitted, CompileError> {
    emit_window_pool(jit, cx, a, Pool::Max)
}

/// ONNX `AveragePool`, with the reference's divisor rule (see [`divisors`]).
pub(crate) fn emit_avg_pool(
    jit: &mut Jit,
    cx: &EmitCx,
    a: &PoolAttrs,
    count_include_pad: bool,
) -> Result<Emitted, CompileError> {
    emit_window_pool(jit, cx, a, Pool::Avg { count_include_pad })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pool {
    Max,
    Avg { count_include_pad: bool },
}

/// Geometry over three spatial axes `(d, h, w)`.
struct Geo {
    input: [usize; 3],
    output: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    dilation: [usize; 3],
    pad_begin: [usize; 3],
    pad_end: [usize; 3],
}

impl Geo {
    /// Input position of tap `k` of output `o` on `axis` (may lie in the padding).
    fn pos(&self, axis: usize, o: usize, k: usize) -> i64 {
        (o * self.stride[axis] + k * self.dilation[axis]) as i64 - self.pad_begin[axis] as i64
    }

    /// Taps `k` of output `o` on `axis` that read inside the input.
    fn valid_taps(&self, axis: usize, o: usize) -> Vec<usize> {
        (0..self.kernel[axis]).filter(|&k| (0..self.input[axis] as i64).contains(&self.pos(axis, o, k))).collect()
    }

    /// Divisor factor of output `o` on `axis`: with `count_include_pad` the taps inside the
    /// padded input `[−pad_begin, in + pad_end)` (not those of a ceil-mode window hanging past
    /// the end padding), otherwise the taps inside the input.
    fn divisor(&self, axis: usize, o: usize, count_include_pad: bool) -> usize {
        if count_include_pad {
            let limit = (self.input[axis] + self.pad_end[axis]) as i64;
            (0..self.kernel[axis]).filter(|&k| self.pos(axis, o, k) < limit).count()
        } else {
            self.valid_taps(axis, o).len()
        }
    }
}

fn embed(v: &[usize], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    out
}

fn emit_window_pool(jit: &mut Jit, cx: &EmitCx, a: &PoolAttrs, pool: Pool) -> Result<Emitted, CompileError> {
    let (xs, ys) = (&cx.inputs[0].shape, &cx.outputs[0].shape);
    let ns = a.kernel.len();
    if !(1..=3).contains(&ns) || xs.len() != ns + 2 || ys.len() != ns + 2 {
        return Err(cx.unsupported(format!("{ns}-D pooling of a rank-{} tensor", xs.len())));
    }
    let geo = Geo {
        input: embed(&xs[2..], 1),
        output: embed(&ys[2..], 1),
        kernel: embed(&a.kernel, 1),
        stride: embed(&a.strides, 1),
        dilation: embed(&a.dilations, 1),
        pad_begin: embed(&a.pads[..ns], 0),
        pad_end: embed(&a.pads[ns..], 0),
    };
    let planes = (xs[0] * xs[1]) as i64;
    let [_, ih, iw] = geo.input;
    let [od, oh, ow] = geo.output;
    let cip = matches!(pool, Pool::Avg { count_include_pad: true });

    // Output rows `(z, r)`: byte offsets of the valid input rows, and the row divisor.
    let mut row_ptr = vec![0i64];
    let mut row_list = Vec::new();
    let mut row_div = Vec::new();
    for z in 0..od {
        for r in 0..oh {
            for kz in geo.valid_taps(0, z) {
                for kr in geo.valid_taps(1, r) {
                    let (zi, ri) = (geo.pos(0, z, kz) as usize, geo.pos(1, r, kr) as usize);
                    row_list.push(((zi * ih + ri) * iw * 4) as i64);
                }
            }
            row_ptr.push(row_list.len() as i64);
            row_div.push((geo.divisor(0, z, cip) * geo.divisor(1, r, cip)) as f32);
        }
    }
    // Columns: the interior `[c_lo, c_hi)` has every tap inside the input; the others go to
    // the edge table `[out byte offset, first in byte offset, tap count]`.
    let (kw, sw, dw, pw) = (geo.kernel[2], geo.stride[2], geo.dilation[2], geo.pad_begin[2]);
    let full: Vec<bool> = (0..ow).map(|c| kw <= MAX_BAKED_TAPS && geo.valid_taps(2, c).len() == kw).collect();
    let c_lo = full.iter().position(|&f| f).unwrap_or(ow);
    let c_hi = c_lo + full[c_lo..].iter().take_while(|&&f| f).count();
    let mut edges = Vec::new();
    for c in (0..c_lo).chain(c_hi..ow) {
        let taps = geo.valid_taps(2, c);
        let first = taps.first().map_or(0, |&k| geo.pos(2, c, k));
        edges.extend([(c * 4) as i64, first * 4, taps.len() as i64]);
    }
    let col_div: Vec<f32> = (0..ow).map(|c| geo.divisor(2, c, cip) as f32).collect();
    let n_rows = (od * oh) as i64;
    let n_edges = (edges.len() / 3) as i64;
    let (in_plane, out_plane) = ((geo.input.iter().product::<usize>() * 4) as i64, (ow * oh * od * 4) as i64);
    // Interior columns as 4-lane groups (strides 1 and 2), then one at a time.
    let n_groups = if sw <= 2 { ((c_hi - c_lo) / 4) as i64 } else { 0 };
    let c_scalar = (c_lo as i64) + 4 * n_groups;
    // Rows baked in the interior: 2-D windows of at most MAX_BAKED_TAPS rows.
    let kh = geo.kernel[1];
    let bake_rows = geo.kernel[0] == 1 && kh <= MAX_BAKED_TAPS;
    let row_step = (geo.dilation[1] * iw * 4) as i64;

    // Units over the output rows of every plane. Operands: x, y, the row's entry in the row
    // table's index and in the row divisors.
    let dims = [planes, n_rows];
    let strides = vec![vec![in_plane, 0], vec![out_plane, (ow * 4) as i64], vec![0, 8], vec![0, 4]];
    let taps = (geo.kernel.iter().product::<usize>() * ow) as i64;
    let Cut::Outer { axes, per_unit } = outer_cut(&dims, taps, GRAIN) else { unreachable!("outer cuts only") };
    let units = units_of(dims[..axes].iter().product(), per_unit);

    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let aux_args: [usize; 5] = std::array::from_fn(|i| cx.aux_arg(i));
    let func = jit.kernel(cx.name, |kb| {
        if planes == 0 || out_plane == 0 {
            return;
        }
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let [rp, rl, rdiv, cdiv, et] = aux_args.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        loop_units(kb, &dims, &strides, &[x, y, rp, rdiv], (axes, per_unit), (lo, hi), &mut |kb, p| {
            let b = &mut kb.b;
            let (xp, yr) = (p[0], p[1]);
            let t0 = b.ins().load(types::I64, mem(), p[2], 0);
            let t1 = b.ins().load(types::I64, mem(), p[2], 8);
            let rd = b.ins().load(types::F32, mem(), p[3], 0);
            let w = Window { pool, xp, rl, t0, t1, rd, cdiv, yr, baked: None };
            let interior = |b: &mut FunctionBuilder, w: &Window| {
                for_range(b, 0, n_groups, 1, |b, g| {
                    let c = b.ins().imul_imm_s(g, 4);
                    let c = b.ins().iadd_imm_s(c, c_lo as i64);
                    w.interior(b, c, Lanes::of_stride(sw), kw, sw, dw, pw);
                });
                for_range(b, c_scalar, c_hi as i64, 1, |b, c| w.interior(b, c, Lanes::One, kw, sw, dw, pw));
            };
            if bake_rows {
                // Every window row valid: the rows are `first + kr·row_step`, baked.
                let count = b.ins().isub(t1, t0);
                let full = b.ins().icmp_imm_s(IntCC::Equal, count, kh as i64);
                if_else(
                    b,
                    full,
                    |b| {
                        let t8 = b.ins().ishl_imm_u(t0, 3);
                        let at = b.ins().iadd(rl, t8);
                        let first = b.ins().load(types::I64, mem(), at, 0);
                        interior(b, &Window { baked: Some((first, kh, row_step)), ..w });
                    },
                    |b| interior(b, &w),
                );
            } else {
                interior(b, &w);
            }
            for_range(b, 0, n_edges, 1, |b, e| w.edge(b, et, e, dw));
        });
    })?;
    let aux = vec![Aux::I64(row_ptr), Aux::I64(row_list), Aux::F32(row_div), Aux::F32(col_div), Aux::I64(edges)];
    Ok(Emitted::parallel(func, aux, units))
}

/// How the lanes of a column group read the input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lanes {
    /// One output.
    One,
    /// 4 adjacent outputs at stride 1: one vector load per tap.
    Stride1,
    /// 4 adjacent outputs at stride 2: two overlapping loads and a `shufps` per tap.
    Stride2,
}

impl Lanes {
    fn of_stride(s: usize) -> Lanes {
        if s == 1 { Lanes::Stride1 } else { Lanes::Stride2 }
    }

    fn ty(self) -> Type {
        if self == Lanes::One { types::F32 } else { types::F32X4 }
    }
}

/// What the code of one output row knows.
#[derive(Clone, Copy)]
struct Window {
    pool: Pool,
    /// Input plane.
    xp: Value,
    /// The row table, and this output row's range `[t0, t1)` in it.
    rl: Value,
    t0: Value,
    t1: Value,
    /// Divisor factor of the row, and the column divisor table.
    rd: Value,
    cdiv: Value,
    /// Output row.
    yr: Value,
    /// When every window row of this output row is valid: the byte offset of the first, the
    /// row count and the bytes between rows (baked); `None`: the rows come from the table.
    baked: Option<(Value, usize, i64)>,
}

impl Pool {
    /// The accumulator's start: −∞ for max, 0 for sums.
    fn init(self, b: &mut FunctionBuilder, ty: Type) -> Value {
        let v = b.ins().f32const(if self == Pool::Max { f32::NEG_INFINITY } else { 0.0 });
        if ty == types::F32 { v } else { b.ins().splat(ty, v) }
    }

    fn combine(self, b: &mut FunctionBuilder, acc: Value, v: Value) -> Value {
        match self {
            Pool::Max => select_gt(b, v, acc),
            Pool::Avg { .. } => b.ins().fadd(acc, v),
        }
    }
}

impl Window {
    /// `sum / (row divisor · column divisor)` for avg pool; `acc` for max pool.
    fn finish(&self, b: &mut FunctionBuilder, acc: Value, cdiv_at: Value) -> Value {
        if self.pool == Pool::Max {
            return acc;
        }
        let ty = b.func.dfg.value_type(acc);
        let cd = b.ins().load(ty, mem(), cdiv_at, 0);
        let rd = if ty == types::F32 { self.rd } else { b.ins().splat(ty, self.rd) };
        let d = b.ins().fmul(rd, cd);
        b.ins().fdiv(acc, d)
    }

    /// Interior output column(s) starting at `c`, with `kw` baked taps (and the rows baked too
    /// when [`Window::baked`] says so).
    #[allow(clippy::too_many_arguments)]
    fn interior(&self, b: &mut FunctionBuilder, c: Value, lanes: Lanes, kw: usize, sw: usize, dw: usize, pw: usize) {
        let ty = lanes.ty();
        let first = b.ins().imul_imm_s(c, (sw * 4) as i64);
        let first = b.ins().iadd_imm_s(first, -((pw * 4) as i64));
        let xp = self.xp;
        let a = match self.baked {
            Some((row0, kh, step)) => {
                let off = b.ins().iadd(row0, first);
                let base = b.ins().iadd(xp, off);
                let mut taps = Vec::with_capacity(kh * kw);
                for kr in 0..kh {
                    taps.extend(self.row_taps(b, base, kr as i64 * step, lanes, kw, dw));
                }
                let init = self.pool.init(b, ty);
                self.tree(b, init, taps)
            }
            None => {
                let acc = b.declare_var(ty);
                let init = self.pool.init(b, ty);
                b.def_var(acc, init);
                self.table_rows(b, first, |b, base| {
                    let taps = self.row_taps(b, base, 0, lanes, kw, dw);
                    let a = b.use_var(acc);
                    let a = self.tree(b, a, taps);
                    b.def_var(acc, a);
                });
                b.use_var(acc)
            }
        };
        let c4 = b.ins().ishl_imm_u(c, 2);
        let cd = b.ins().iadd(self.cdiv, c4);
        let r = self.finish(b, a, cd);
        let py = b.ins().iadd(self.yr, c4);
        b.ins().store(mem(), r, py, 0);
    }

    /// The `kw` taps of one window row at `base + row` (bytes) for the column(s) `lanes` reads.
    /// At stride 2 without dilation, taps `2j` and `2j + 1` are the even and odd lanes of the
    /// same 8 inputs (two loads); a last, unpaired tap reads `[x0 x1 x2 x3]` and `[x3 x4 x5 x6]`
    /// (it may not read past `x6`, the row's last input it needs).
    #[allow(clippy::too_many_arguments)]
    fn row_taps(
        &self,
        b: &mut FunctionBuilder,
        base: Value,
        row: i64,
        lanes: Lanes,
        kw: usize,
        dw: usize,
    ) -> Vec<Value> {
        let ty = lanes.ty();
        let load = |b: &mut FunctionBuilder, o: i64| match i32::try_from(row + o) {
            Ok(o) => b.ins().load(ty, mem(), base, o),
            Err(_) => {
                let p = b.ins().iadd_imm_s(base, row + o);
                b.ins().load(ty, mem(), p, 0)
            }
        };
        let mut taps = Vec::with_capacity(kw);
        let mut k = 0;
        while k < kw {
            let o = (k * dw * 4) as i64;
            match lanes {
                Lanes::One | Lanes::Stride1 => taps.push(load(b, o)),
                Lanes::Stride2 if dw == 1 && k + 1 < kw => {
                    // [x0 x1 x2 x3] and [x4 x5 x6 x7] → [x0 x2 x4 x6] and [x1 x3 x5 x7].
                    let (lo, hi) = (load(b, o), load(b, o + 16));
                    taps.push(lanes_of(b, lo, hi, [0, 2, 4, 6]));
                    taps.push(lanes_of(b, lo, hi, [1, 3, 5, 7]));
                    k += 1;
                }
                Lanes::Stride2 => {
                    // [x0 x1 x2 x3] and [x3 x4 x5 x6] → [x0 x2 x4 x6].
                    let (lo, hi) = (load(b, o), load(b, o + 12));
                    taps.push(lanes_of(b, lo, hi, [0, 2, 5, 7]));
                }
            }
            k += 1;
        }
        taps
    }

    /// `acc` combined with the taps by a tree, which keeps the dependency chain short. For max
    /// pooling the leaves go through `max(−∞, ·)` first, so a NaN never reaches an operand
    /// position where it would stick (NaN inputs are skipped).
    fn tree(&self, b: &mut FunctionBuilder, acc: Value, mut taps: Vec<Value>) -> Value {
        if self.pool == Pool::Max {
            let ty = b.func.dfg.value_type(acc);
            let ninf = self.pool.init(b, ty);
            for t in taps.iter_mut().step_by(2) {
                *t = self.pool.combine(b, ninf, *t);
            }
        }
        while taps.len() > 1 {
            taps = taps.chunks(2).map(|p| if let [l, r] = p { self.pool.combine(b, *l, *r) } else { p[0] }).collect();
        }
        self.pool.combine(b, acc, taps[0])
    }

    /// `body(base)` for each valid window row of this output row, from the row table: `base` is
    /// the input address `first` bytes into the row.
    fn table_rows(&self, b: &mut FunctionBuilder, first: Value, mut body: impl FnMut(&mut FunctionBuilder, Value)) {
        let (xp, rl) = (self.xp, self.rl);
        dyn_range(b, self.t0, self.t1, |b, t| {
            let t8 = b.ins().ishl_imm_u(t, 3);
            let at = b.ins().iadd(rl, t8);
            let row = b.ins().load(types::I64, mem(), at, 0);
            let off = b.ins().iadd(row, first);
            let base = b.ins().iadd(xp, off);
            body(b, base);
        });
    }

    /// Edge column number `e` of the edge table `et`, with runtime tap counts.
    fn edge(&self, b: &mut FunctionBuilder, et: Value, e: Value, dw: usize) {
        let eo = b.ins().imul_imm_s(e, 24);
        let at = b.ins().iadd(et, eo);
        let c4 = b.ins().load(types::I64, mem(), at, 0);
        let first = b.ins().load(types::I64, mem(), at, 8);
        let count = b.ins().load(types::I64, mem(), at, 16);
        let acc = b.declare_var(types::F32);
        let init = self.pool.init(b, types::F32);
        b.def_var(acc, init);
        self.table_rows(b, first, |b, base| {
            let zero = b.ins().iconst(types::I64, 0);
            dyn_range(b, zero, count, |b, k| {
                let ko = b.ins().imul_imm_s(k, (dw * 4) as i64);
                let p = b.ins().iadd(base, ko);
                let v = b.ins().load(types::F32, mem(), p, 0);
                let a = b.use_var(acc);
                let a = self.pool.combine(b, a, v);
                b.def_var(acc, a);
            });
        });
        let a = b.use_var(acc);
        let cd = b.ins().iadd(self.cdiv, c4);
        let r = self.finish(b, a, cd);
        let py = b.ins().iadd(self.yr, c4);
        b.ins().store(mem(), r, py, 0);
    }
}

/// `acc < v ? v : acc` (NaN in `v` is skipped), scalar or 4 lanes; on 4 lanes this exact
/// shape lowers to one `maxps`.
fn select_gt(b: &mut FunctionBuilder, v: Value, acc: Value) -> Value {
    let ty = b.func.dfg.value_type(v);
    let m = b.ins().fcmp(FloatCC::LessThan, acc, v);
    if ty == types::F32 {
        return b.ins().select(m, v, acc);
    }
    let m = b.ins().bitcast(types::F32X4, MemFlagsData::new(), m);
    b.ins().bitselect(m, v, acc)
}

/// Lanes `l` of the 8 lanes of `lo` then `hi` (lanes 0..4 of `lo`, 4..8 of `hi`): two from each
/// (one `shufps`).
fn lanes_of(b: &mut FunctionBuilder, lo: Value, hi: Value, l: [u8; 4]) -> Value {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let (x, y) = (b.ins().bitcast(types::I8X16, le, lo), b.ins().bitcast(types::I8X16, le, hi));
    let mask: Vec<u8> = l.iter().flat_map(|&lane| (0..4).map(move |i| lane * 4 + i)).collect();
    let imm: Immediate = b.func.dfg.immediates.push(ConstantData::from(mask));
    let s = b.ins().shuffle(x, y, imm);
    b.ins().bitcast(types::F32X4, le, s)
}

/// `for iv in start..end { body(iv) }` with runtime bounds.
fn dyn_range(b: &mut FunctionBuilder, start: Value, end: Value, mut body: impl FnMut(&mut FunctionBuilder, Value)) {
    let header = b.create_block();
    let body_blk = b.create_block();
    let exit = b.create_block();
    b.append_block_param(header, types::I64);
    b.ins().jump(header, &[start.into()]);
    b.switch_to_block(header);
    let iv = b.block_params(header)[0];
    let more = b.ins().icmp(IntCC::SignedLessThan, iv, end);
    b.ins().brif(more, body_blk, &[], exit, &[]);
    b.switch_to_block(body_blk);
    body(b, iv);
    let next = b.ins().iadd_imm_s(iv, 1);
    b.ins().jump(header, &[next.into()]);
    b.switch_to_block(exit);
}

/// ONNX `GlobalAveragePool` (`max == false`) or `GlobalMaxPool` over each `[N, C]` plane:
/// 8 lanes of partial results (two f32x4), combined at the end, then a scalar tail.
pub(crate) fn emit_global_pool(jit: &mut Jit, cx: &EmitCx, max: bool) -> Result<Emitted, CompileError> {
    let xs = &cx.inputs[0].shape;
    if xs.len() < 2 {
        return Err(cx.unsupported(format!("global pooling of a rank-{} tensor", xs.len())));
    }
    let planes = (xs[0] * xs[1]) as i64;
    let plane = xs[2..].iter().product::<usize>() as i64;
    let pool = if max { Pool::Max } else { Pool::Avg { count_include_pad: false } };
    // Units over the planes.
    let per_unit = (GRAIN / plane.max(1)).max(1);
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        if planes == 0 {
            return;
        }
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let (start, end) = unit_span(b, lo, hi, planes, per_unit);
        let main = plane - plane % 8;
        for_dyn(b, start, end, 1, |b, p| {
            let xo = b.ins().imul_imm_s(p, plane * 4);
            let xp = b.ins().iadd(x, xo);
            let accs = [b.declare_var(types::F32X4), b.declare_var(types::F32X4)];
            for &v in &accs {
                let init = pool.init(b, types::F32X4);
                b.def_var(v, init);
            }
            for_range(b, 0, main, 8, |b, i| {
                let off = b.ins().ishl_imm_u(i, 2);
                let at = b.ins().iadd(xp, off);
                for (j, &var) in accs.iter().enumerate() {
                    let v = b.ins().load(types::F32X4, mem(), at, 16 * j as i32);
                    let a = b.use_var(var);
                    let a = pool.combine(b, a, v);
                    b.def_var(var, a);
                }
            });
            let (a0, a1) = (b.use_var(accs[0]), b.use_var(accs[1]));
            let a = pool.combine(b, a0, a1);
            let mut s = b.ins().extractlane(a, 0);
            for lane in 1..4 {
                let l = b.ins().extractlane(a, lane);
                s = pool.combine(b, s, l);
            }
            let acc = b.declare_var(types::F32);
            b.def_var(acc, s);
            for_range(b, main, plane, 1, |b, i| {
                let off = b.ins().ishl_imm_u(i, 2);
                let at = b.ins().iadd(xp, off);
                let v = b.ins().load(types::F32, mem(), at, 0);
                let a = b.use_var(acc);
                let a = pool.combine(b, a, v);
                b.def_var(acc, a);
            });
            let mut r = b.use_var(acc);
            if !max {
                let n = b.ins().f32const(plane as f32);
                r = b.ins().fdiv(r, n);
            }
            let yo = b.ins().ishl_imm_u(p, 2);
            let py = b.ins().iadd(y, yo);
            b.ins().store(mem(), r, py, 0);
        });
    })?;
    Ok(Emitted::parallel(func, vec![], units_of(planes, per_unit)))
}
