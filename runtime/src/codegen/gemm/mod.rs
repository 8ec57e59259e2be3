//! Gemm (batch-1 GEMV and register-tiled GEMM) and batched MatMul.
//!
//! Both lower to one matrix-product emitter, [`emit_product`]: `Y = alpha·A·B (+ C)` with `A`
//! read in place through baked strides (so transposes are free), `B` either packed at load
//! into column panels (constant weights) or read in place, and the result vectorized over
//! the columns of `Y` with f32x4 accumulators: a register tile of 6 rows × 2 vectors, the `K`
//! loop carrying the 12 accumulators with two steps per body and read-only loads, so that
//! the live vectors fit the registers (the scheme of the direct conv, see `conv::direct`).
//! `M = 1` (batch-1 fully connected layers) gets a GEMV tiling: one row, up to 8 vectors (32
//! columns) per panel, so every `B` load is used once — where the host has the f32
//! microkernels, a Gemm or 2-D MatMul with constant weights and at most
//! [`MAX_DENSE_ROWS`](super::conv::gemv::MAX_DENSE_ROWS) rows runs on the AVX2
//! `sgemv_panels` routine instead ([`super::conv::gemv::emit_dense`]).
//!
//! Work units: blocks of register-tile rows × blocks of column panels (per batch item of a
//! MatMul); each output tile is reduced over the whole `K` in one unit.

pub(super) mod kit;

use cnnc_ir::{DType, Tensor};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use self::kit::{Epi, for_carry, for_dyn, gather, load_i64, scatter, splat_const};
use super::builder::{if_then, unit_span, units_of};
use super::conv::gemv;
use super::{Aux, CompileError, EmitCx, Emitted, Epilogue, Jit};

/// `Y = alpha·op(A)·op(B) + beta·C`, `C` broadcast unidirectionally to `[M, N]`.
pub(crate) fn emit_gemm(
    jit: &mut Jit,
    cx: &EmitCx,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> Result<Emitted, CompileError> {
    emit_gemm_fused(jit, cx, alpha, beta, trans_a, trans_b, &Epilogue::default())
}

/// [`emit_gemm`] with `ep` applied to `alpha·op(A)·op(B) + beta·C` before the store;
/// `cx.inputs` are `A, B[, C]` followed by the residual, if any.
pub(crate) fn emit_gemm_fused(
    jit: &mut Jit,
    cx: &EmitCx,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    ep: &Epilogue,
) -> Result<Emitted, CompileError> {
    emit_gemm_with(jit, cx, alpha, beta, trans_a, trans_b, ep, super::f32_kernels()?)
}

/// [`emit_gemm_fused`] with the f32 microkernels `mk` (`None`: the Cranelift kernels only).
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_gemm_with(
    jit: &mut Jit,
    cx: &EmitCx,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    ep: &Epilogue,
    mk: Option<crate::microkernel::Microkernels>,
) -> Result<Emitted, CompileError> {
    check_f32(cx)?;
    ep.check(cx)?;
    let n_inputs = ep.op_inputs(cx);
    if !(2..=3).contains(&n_inputs) {
        return Err(cx.unsupported(format!("a gemm with {n_inputs} inputs")));
    }
    let (&[a0, a1], &[b0, b1]) = (&cx.inputs[0].shape[..], &cx.inputs[1].shape[..]) else {
        return Err(cx.unsupported("gemm operands that are not matrices"));
    };
    let (m, k) = if trans_a { (a1, a0) } else { (a0, a1) };
    let n = if trans_b { b0 } else { b1 };
    let a = if trans_a { Strided { rs: 4, cs: m as i64 * 4 } } else { Strided { rs: k as i64 * 4, cs: 4 } };
    let b_strides = if trans_b { Strided { rs: 4, cs: k as i64 * 4 } } else { Strided { rs: n as i64 * 4, cs: 4 } };
    // Few contiguous rows of A, constant B, no scaling, C (if any) one row of biases.
    let bias_row = |t: &[usize]| t == [n] || t == [1, n];
    let c_ok = n_inputs == 2 || (beta == 1.0 && bias_row(&cx.inputs[2].shape));
    if let (Some(t), Some(mk)) = (cx.consts[1], mk)
        && alpha == 1.0
        && c_ok
        && (1..=gemv::MAX_DENSE_ROWS).contains(&m)
        && (m == 1 || !trans_a)
        && k > 0
        && n > 0
        && gemv::act_ok(ep)
    {
        let v = f32_data(cx, t)?;
        return gemv::emit_dense(jit, cx, |oc, kk| v[strided_index(b_strides, kk, oc)], m, k, n, ep, mk);
    }
    let tiling = Tiling::for_shape(m, n);
    let mut aux = Vec::new();
    let b_src = match cx.consts[1] {
        Some(t) => {
            let v = f32_data(cx, t)?;
            aux.push(Aux::F32(pack_b(|kk, j| v[strided_index(b_strides, kk, j)], k, n, tiling.width())));
            BSrc::Packed { arg: cx.aux_arg(aux.len() - 1) }
        }
        None => BSrc::Strided(b_strides),
    };
    let c_src = match (cx.inputs[..n_inputs].get(2), cx.consts.get(2).copied().flatten()) {
        (None, _) => CSrc::None,
        (Some(_), Some(t)) => {
            let v = f32_data(cx, t)?;
            let s = c_strides(t.shape());
            let dense = (0..m * n).map(|i| beta * v[strided_index(s, i / n, i % n)]).collect();
            aux.push(Aux::F32(dense));
            CSrc::Dense { arg: cx.aux_arg(aux.len() - 1) }
        }
        (Some(ct), None) => CSrc::Strided { arg: cx.in_arg(2), s: c_strides(&ct.shape), beta },
    };
    let p = Product { m, n, k, a, b: b_src, c: c_src, alpha, tiling };
    let cut = Cut::new(&p);
    let (a_arg, b_arg, y_arg) = (cx.in_arg(0), cx.in_arg(1), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        let a_ptr = kb.arg(a_arg);
        let b_ptr = match p.b {
            BSrc::Packed { arg } => kb.arg(arg),
            BSrc::Strided(_) => kb.arg(b_arg),
        };
        let c_ptr = match p.c {
            CSrc::None => None,
            CSrc::Dense { arg } | CSrc::Strided { arg, .. } => Some(kb.arg(arg)),
        };
        let y_ptr = kb.arg(y_arg);
        let epi = Epi::new(kb, ep, y_ptr);
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let (u0, u1) = unit_span(b, lo, hi, cut.units() as i64, 1);
        for_dyn(b, u0, u1, 1, |b, u| {
            emit_product(b, &p, &cut, u, Bases { a: a_ptr, b: b_ptr, c: c_ptr, y: y_ptr, epi });
        });
    })?;
    Ok(Emitted::parallel(func, aux, cut.units()))
}

/// Numpy `matmul`: batched over the broadcast leading axes, 1-D operands promoted.
pub(crate) fn emit_matmul(jit: &mut Jit, cx: &EmitCx) -> Result<Emitted, CompileError> {
    emit_matmul_fused(jit, cx, &Epilogue::default())
}

/// [`emit_matmul`] with `ep` applied to each product before the store; `cx.inputs` are `A, B`
/// followed by the residual, if any.
pub(crate) fn emit_matmul_fused(jit: &mut Jit, cx: &EmitCx, ep: &Epilogue) -> Result<Emitted, CompileError> {
    emit_matmul_with(jit, cx, ep, super::f32_kernels()?)
}

/// [`emit_matmul_fused`] with the f32 microkernels `mk` (`None`: the Cranelift kernels only).
pub(crate) fn emit_matmul_with(
    jit: &mut Jit,
    cx: &EmitCx,
    ep: &Epilogue,
    mk: Option<crate::microkernel::Microkernels>,
) -> Result<Emitted, CompileError> {
    check_f32(cx)?;
    ep.check(cx)?;
    if ep.op_inputs(cx) != 2 {
        return Err(cx.unsupported(format!("a matmul with {} inputs", ep.op_inputs(cx))));
    }
    let (a_shape, b_shape) = (&cx.inputs[0].shape, &cx.inputs[1].shape);
    let (a_batch, m, k) = match a_shape[..] {
        [k] => (&[][..], 1, k),
        _ => (&a_shape[..a_shape.len() - 2], a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]),
    };
    let (b_batch, n) = match b_shape[..] {
        [_] => (&[][..], 1),
        _ => (&b_shape[..b_shape.len() - 2], b_shape[b_shape.len() - 1]),
    };
    let rank = a_batch.len().max(b_batch.len());
    let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect() };
    let (ab, bb) = (pad(a_batch), pad(b_batch));
    let batch: Vec<usize> = ab.iter().zip(&bb).map(|(&x, &y)| if x == 1 { y } else { x }).collect();
    let n_batch: usize = batch.iter().product();
    if n_batch * m * n != cx.outputs[0].numel() {
        return Err(cx.unsupported(format!("matmul of {a_shape:?} and {b_shape:?} into {}", cx.outputs[0])));
    }
    // Matrix index of operand `dims` for flat output batch index `bi` (broadcast axes repeat).
    let mat_index = |dims: &[usize], mut bi: usize| -> usize {
        let (mut idx, mut scale) = (0, 1);
        for (d, &full) in dims.iter().zip(&batch).rev() {
            let i = bi % full;
            bi /= full;
            if *d != 1 {
                idx += i * scale;
            }
            scale *= d;
        }
        idx
    };
    // A 2-D (or 1-D) product with constant weights and few rows: as in `emit_gemm_fused`.
    if let (Some(t), Some(mk), [_, _]) = (cx.consts[1], mk, &b_shape[..])
        && rank == 0
        && (1..=gemv::MAX_DENSE_ROWS).contains(&m)
        && k > 0
        && n > 0
        && gemv::act_ok(ep)
    {
        let v = f32_data(cx, t)?;
        return gemv::emit_dense(jit, cx, |oc, kk| v[kk * n + oc], m, k, n, ep, mk);
    }
    let tiling = Tiling::for_shape(m, n);
    let mut aux = Vec::new();
    let b_strides = Strided { rs: n as i64 * 4, cs: 4 };
    let (b_src, b_mat_bytes) = match cx.consts[1] {
        Some(t) => {
            let v = f32_data(cx, t)?;
            let n_mats: usize = bb.iter().product();
            let mut packed = Vec::new();
            for mat in 0..n_mats {
                let base = mat * k * n;
                packed.extend(pack_b(|kk, j| v[base + kk * n + j], k, n, tiling.width()));
            }
            let per = packed.len() / n_mats.max(1);
            aux.push(Aux::F32(packed));
            (BSrc::Packed { arg: cx.aux_arg(aux.len() - 1) }, per * 4)
        }
        None => (BSrc::Strided(b_strides), k * n * 4),
    };
    let table_arg = (n_batch > 1).then(|| {
        let mut t = Vec::with_capacity(2 * n_batch);
        for bi in 0..n_batch {
            t.push((mat_index(&ab, bi) * m * k * 4) as i64);
            t.push((mat_index(&bb, bi) * b_mat_bytes) as i64);
        }
        aux.push(Aux::I64(t));
        cx.aux_arg(aux.len() - 1)
    });
    let a = Strided { rs: k as i64 * 4, cs: 4 };
    let p = Product { m, n, k, a, b: b_src, c: CSrc::None, alpha: 1.0, tiling };
    let cut = Cut::new(&p);
    // Units: the product's units of each batch item in turn.
    let units = units_of((n_batch * cut.units() as usize) as i64, 1);
    let (a_arg, b_arg, y_arg) = (cx.in_arg(0), cx.in_arg(1), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        let a_ptr = kb.arg(a_arg);
        let b_ptr = match p.b {
            BSrc::Packed { arg } => kb.arg(arg),
            BSrc::Strided(_) => kb.arg(b_arg),
        };
        let y_ptr = kb.arg(y_arg);
        let epi = Epi::new(kb, ep, y_ptr);
        let table = table_arg.map(|t| kb.arg(t));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        if n_batch == 0 {
            return;
        }
        let (u0, u1) = unit_span(b, lo, hi, units as i64, 1);
        for_dyn(b, u0, u1, 1, |b, u| match table {
            None => emit_product(b, &p, &cut, u, Bases { a: a_ptr, b: b_ptr, c: None, y: y_ptr, epi }),
            Some(table) => {
                let (bi, cu) = if cut.units() > 1 {
                    (b.ins().udiv_imm_u(u, cut.units() as i64), b.ins().urem_imm_u(u, cut.units() as i64))
                } else {
                    (u, b.ins().iconst(types::I64, 0))
                };
                let row = kit::offset(b, table, bi, 16, 0);
                let a_off = load_i64(b, row, 0);
                let b_off = load_i64(b, row, 8);
                let a_i = b.ins().iadd(a_ptr, a_off);
                let b_i = b.ins().iadd(b_ptr, b_off);
                let y_i = kit::offset(b, y_ptr, bi, (m * n * 4) as i64, 0);
                emit_product(b, &p, &cut, cu, Bases { a: a_i, b: b_i, c: None, y: y_i, epi });
            }
        });
    })?;
    Ok(Emitted::parallel(func, aux, units))
}

fn check_f32(cx: &EmitCx) -> Result<(), CompileError> {
    if cx.inputs.iter().chain(cx.outputs).any(|t| t.dtype != DType::F32) {
        return Err(cx.unsupported("non-f32 operands"));
    }
    Ok(())
}

fn f32_data<'t>(cx: &EmitCx, t: &'t Tensor) -> Result<&'t [f32], CompileError> {
    t.as_f32().ok_or_else(|| cx.unsupported("a non-f32 constant operand"))
}

/// Byte strides of a matrix operand read in place: element `(r, c)` at `r·rs + c·cs`.
#[derive(Clone, Copy, Debug)]
struct Strided {
    rs: i64,
    cs: i64,
}

fn strided_index(s: Strided, r: usize, c: usize) -> usize {
    (r as i64 * s.rs / 4 + c as i64 * s.cs / 4) as usize
}

/// Strides of `C` broadcast to `[M, N]` (a broadcast axis has stride 0).
fn c_strides(shape: &[usize]) -> Strided {
    let (rows, cols) = match shape {
        [] => (1, 1),
        [c] => (1, *c),
        [r, c, ..] => (*r, *c),
    };
    Strided { rs: if rows == 1 { 0 } else { cols as i64 * 4 }, cs: if cols == 1 { 0 } else { 4 } }
}

/// Where the right operand comes from.
#[derive(Clone, Copy, Debug)]
enum BSrc {
    /// Packed at load by [`pack_b`] into aux argument `arg`.
    Packed { arg: usize },
    /// Read in place.
    Strided(Strided),
}

/// The additive term of the epilogue.
#[derive(Clone, Copy, Debug)]
enum CSrc {
    None,
    /// Pre-broadcast `[M, N]` and pre-multiplied by beta at load, in aux argument `arg`.
    Dense {
        arg: usize,
    },
    /// Kernel argument `arg` read through broadcast strides, times `beta`.
    Strided {
        arg: usize,
        s: Strided,
        beta: f32,
    },
}

/// Register tile: `mr` rows × `nrv` vectors of 4 columns; `B` panels are `4·nrv` columns wide.
#[derive(Clone, Copy, Debug)]
struct Tiling {
    mr: usize,
    nrv: usize,
}

impl Tiling {
    fn for_shape(m: usize, n: usize) -> Tiling {
        let vecs = n.div_ceil(4).max(1);
        if m == 1 { Tiling { mr: 1, nrv: vecs.min(8) } } else { Tiling { mr: m.min(6), nrv: vecs.min(2) } }
    }

    fn width(self) -> usize {
        self.nrv * 4
    }
}

/// Packs `B` (`k × n`, element `(kk, j)` from `at`) into column panels of `width` columns:
/// panel `p` holds `B[kk][p·width + j]` at `kk·w + j` where `w` is the panel's width (`width`,
/// or for the last, partial panel its column count rounded up to 4, zero-padded). Panels are
/// stored back to back.
fn pack_b(at: impl Fn(usize, usize) -> f32, k: usize, n: usize, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(k * n.next_multiple_of(4));
    let mut j0 = 0;
    while j0 < n {
        let cols = (n - j0).min(width);
        let w = cols.next_multiple_of(4);
        for kk in 0..k {
            for j in 0..w {
                out.push(if j < cols { at(kk, j0 + j) } else { 0.0 });
            }
        }
        j0 += cols;
    }
    out
}

/// One matrix product `Y[M×N] = alpha·A·B + C` with shapes baked in.
struct Product {
    m: usize,
    n: usize,
    k: usize,
    a: Strided,
    b: BSrc,
    c: CSrc,
    alpha: f32,
    tiling: Tiling,
}

/// Multiply-adds a work unit aims at (about 20 µs).
const UNIT_MACS: usize = 1 << 18;
/// `K` steps per loop body.
const UNROLL: usize = 2;
/// Distance between the base pointers that keep twin splats apart (see [`emit_tile`]).
const TWIN: i64 = 1 << 16;

/// How a product's register tiles are cut into work units: blocks of `rows_per` tile rows ×
/// blocks of `panels_per` column panels (the partial row tile and panel are the last ones).
/// Every tile is computed over the whole `K` by the same code whichever unit holds it.
#[derive(Clone, Copy, Debug)]
struct Cut {
    row_tiles: usize,
    rows_per: usize,
    panels: usize,
    panels_per: usize,
}

impl Cut {
    fn new(p: &Product) -> Cut {
        let Tiling { mr, nrv } = p.tiling;
        let row_tiles = p.m.div_ceil(mr.max(1));
        let panels = p.n.div_ceil(nrv * 4);
        let row_macs = (mr * p.n * p.k).max(1);
        let rows_per = UNIT_MACS.div_ceil(row_macs).clamp(1, row_tiles.max(1));
        let panels_per = if rows_per < row_tiles {
            panels.max(1)
        } else {
            UNIT_MACS.div_ceil((p.m * nrv * 4 * p.k).max(1)).clamp(1, panels.max(1))
        };
        Cut { row_tiles, rows_per, panels, panels_per }
    }

    fn row_blocks(&self) -> usize {
        self.row_tiles.div_ceil(self.rows_per).max(1)
    }

    fn panel_blocks(&self) -> usize {
        self.panels.div_ceil(self.panels_per).max(1)
    }

    fn units(&self) -> u64 {
        (self.row_blocks() * self.panel_blocks()) as u64
    }
}

/// Emits unit `u` of the product (see [`Cut`]) with `Y` row-major (`N` columns).
fn emit_product(b: &mut FunctionBuilder, p: &Product, cut: &Cut, u: Value, bases: Bases) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    let Tiling { mr, nrv } = p.tiling;
    let width = nrv * 4;
    let (full_rows, rem_rows) = (p.m / mr, p.m % mr);
    let (full_panels, rem_cols) = (p.n / width, p.n % width);
    let pb_n = cut.panel_blocks() as i64;
    let (rb, pb) =
        if pb_n > 1 { (b.ins().udiv_imm_u(u, pb_n), b.ins().urem_imm_u(u, pb_n)) } else { (u, index_const(b, 0)) };
    let rb1 = b.ins().iadd_imm_s(rb, 1);
    let (t0, t1) = unit_span(b, rb, rb1, cut.row_tiles as i64, cut.rows_per as i64);
    let pb1 = b.ins().iadd_imm_s(pb, 1);
    let (p0, p1) = unit_span(b, pb, pb1, cut.panels as i64, cut.panels_per as i64);
    // The unit's panels of one row tile: full ones, then the partial one if the unit has it.
    let panels = |b: &mut FunctionBuilder, i0: RowCol, rows: usize| {
        let cap = index_const(b, full_panels);
        let end = b.ins().smin(p1, cap);
        for_dyn(b, p0, end, 1, |b, pi| {
            let j0 = RowCol { base: pi, scale: width, first: 0 };
            emit_tile(b, p, &bases, i0, j0, Dims { rows, cols: width, panel: width });
        });
        if rem_cols > 0 {
            let has = b.ins().icmp_imm_s(IntCC::SignedGreaterThan, p1, full_panels as i64);
            if_then(b, has, |b| {
                let j0 = RowCol { base: index_const(b, full_panels), scale: width, first: 0 };
                let dims = Dims { rows, cols: rem_cols, panel: rem_cols.next_multiple_of(4) };
                emit_tile(b, p, &bases, i0, j0, dims);
            });
        }
    };
    let cap = index_const(b, full_rows);
    let end = b.ins().smin(t1, cap);
    for_dyn(b, t0, end, 1, |b, ti| panels(b, RowCol { base: ti, scale: mr, first: 0 }, mr));
    if rem_rows > 0 {
        let has = b.ins().icmp_imm_s(IntCC::SignedGreaterThan, t1, full_rows as i64);
        if_then(b, has, |b| {
            let i0 = RowCol { base: index_const(b, full_rows), scale: mr, first: 0 };
            panels(b, i0, rem_rows);
        });
    }
}

fn index_const(b: &mut FunctionBuilder, v: usize) -> Value {
    b.ins().iconst(types::I64, v as i64)
}

/// A run-time tile origin `first + base·scale`.
#[derive(Clone, Copy)]
struct RowCol {
    base: Value,
    scale: usize,
    first: usize,
}

impl RowCol {
    /// `ptr + (first + base·scale)·bytes`.
    fn at(self, b: &mut FunctionBuilder, ptr: Value, bytes: i64) -> Value {
        kit::offset(b, ptr, self.base, self.scale as i64 * bytes, self.first as i64 * bytes)
    }
}

/// Base pointers of the operands (`b`: the packed buffer or `B`) and the epilogue, which
/// reads the residual at `y`'s offsets.
#[derive(Clone, Copy)]
struct Bases {
    a: Value,
    b: Value,
    c: Option<Value>,
    y: Value,
    epi: Epi,
}

/// A register tile: `rows` × `cols` outputs, `cols` ≤ the width `panel` of its `B` panel.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    cols: usize,
    panel: usize,
}

/// One register tile over the whole `K`.
fn emit_tile(b: &mut FunctionBuilder, p: &Product, bases: &Bases, i0: RowCol, j0: RowCol, dims: Dims) {
    let Dims { rows, cols, panel: w } = dims;
    let Bases { a: a_ptr, b: b_ptr, c: c_ptr, y: y_ptr, epi } = *bases;
    let nv = cols.div_ceil(4);
    let lanes = |v: usize| (cols - v * 4).min(4);
    let a_row = i0.at(b, a_ptr, p.a.rs);
    // `B` for column `j0` and row 0, and the byte step between rows of `B`.
    let (b_col, b_rs) = match p.b {
        BSrc::Packed { .. } => (j0.at(b, b_ptr, p.k as i64 * 4), w as i64 * 4),
        BSrc::Strided(s) => (j0.at(b, b_ptr, s.cs), s.rs),
    };
    // Accumulators `[v][r]`, carried in that order through the `K` loop (see
    // [`kit::for_carry`]): a body's `B` vectors of one column vector stay live across the rows.
    // The splats of `A` for column vector `v` are read through a base pointer of their own, so
    // that the optimizer does not merge them into one splat kept live across every vector.
    let zero = splat_const(b, 0.0);
    let step = |b: &mut FunctionBuilder, a_k: Value, b_k: Value, u: i64, accs: &mut [Value]| {
        for v in 0..nv {
            let bv = match p.b {
                BSrc::Packed { .. } => kit::load_v_ro(b, b_k, u * b_rs + v as i64 * 16),
                BSrc::Strided(s) => gather(b, b_k, u * b_rs + v as i64 * 4 * s.cs, s.cs, lanes(v)),
            };
            let twin = v as i64 * TWIN;
            let a_v = kit::add(b, a_k, twin);
            for r in 0..rows {
                let av = kit::splat_load_ro(b, a_v, u * p.a.cs + r as i64 * p.a.rs - twin);
                let i = v * rows + r;
                accs[i] = b.ins().fma(av, bv, accs[i]);
            }
        }
    };
    let main = p.k - p.k % UNROLL;
    let mut init = vec![a_row, b_col];
    init.extend(std::iter::repeat_n(zero, rows * nv));
    let out = for_carry(b, 0, main as i64, UNROLL as i64, init, |b, _, mut cur| {
        let (a_k, b_k) = (cur[0], cur[1]);
        let mut accs = cur.split_off(2);
        for u in 0..UNROLL as i64 {
            step(b, a_k, b_k, u, &mut accs);
        }
        let mut next = vec![kit::add(b, a_k, UNROLL as i64 * p.a.cs), kit::add(b, b_k, UNROLL as i64 * b_rs)];
        next.extend(accs);
        next
    });
    let mut accs = out[2..].to_vec();
    for u in 0..(p.k - main) as i64 {
        step(b, out[0], out[1], u, &mut accs);
    }
    // Epilogue: alpha, the C term, the fused epilogue, and the store (partial vectors lane by
    // lane).
    let alpha = (p.alpha != 1.0).then(|| splat_const(b, p.alpha));
    let beta = match p.c {
        CSrc::Strided { beta, .. } if beta != 1.0 => Some(splat_const(b, beta)),
        _ => None,
    };
    let y_tile = i0.at(b, y_ptr, p.n as i64 * 4);
    let y_tile = j0.at(b, y_tile, 4);
    let c_tile = match (p.c, c_ptr) {
        (CSrc::Dense { .. }, Some(c)) => {
            let t = i0.at(b, c, p.n as i64 * 4);
            Some((j0.at(b, t, 4), Strided { rs: p.n as i64 * 4, cs: 4 }))
        }
        (CSrc::Strided { s, .. }, Some(c)) => {
            let t = i0.at(b, c, s.rs);
            Some((j0.at(b, t, s.cs), s))
        }
        _ => None,
    };
    for r in 0..rows {
        for v in 0..nv {
            let mut x = accs[v * rows + r];
            let c_term = c_tile.map(|(c, s)| {
                let cv = gather(b, c, r as i64 * s.rs + v as i64 * 4 * s.cs, s.cs, lanes(v));
                match beta {
                    Some(bt) => b.ins().fmul(cv, bt),
                    None => cv,
                }
            });
            x = match (alpha, c_term) {
                (Some(al), Some(c)) => b.ins().fma(x, al, c),
                (Some(al), None) => b.ins().fmul(x, al),
                (None, Some(c)) => b.ins().fadd(x, c),
                (None, None) => x,
            };
            let off = r as i64 * p.n as i64 * 4 + v as i64 * 16;
            let x = epi.apply(b, x, y_tile, off, 4, lanes(v));
            scatter(b, x, y_tile, off, 4, lanes(v));
        }
    }
}
