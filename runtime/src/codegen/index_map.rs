//! Loop nests over strided operands, shared by the element-wise and data-movement kernels:
//! axis merging, counted loops with the whole kernel builder in scope, work units over a nest
//! ([`Cut`]), and copy / fill primitives for elements of 1, 4 or 8 bytes moved as raw bits.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};

use super::Kb;
use super::builder::{address, balanced_grain, mem, unit_span, units_of};

/// Elements of simple element-wise work per unit (an add of 32k elements in cache takes about
/// 5 µs): handing a unit to a thread then costs little next to computing it. On ppocr_v4_det
/// at 2 threads, 16k-element units ran the element-wise layers 5–10% slower.
pub(crate) const GRAIN: i64 = 32_768;

/// The integer type that moves one element of `size` bytes.
pub(crate) fn int_type(size: usize) -> Type {
    match size {
        1 => types::I8,
        2 => types::I16,
        4 => types::I32,
        8 => types::I64,
        _ => unreachable!("elements are 1, 2, 4 or 8 bytes"),
    }
}

/// The 16-byte vector type whose lanes are elements of `size` bytes.
fn vec_type(size: usize) -> Type {
    match size {
        1 => types::I8X16,
        2 => types::I16X8,
        4 => types::I32X4,
        8 => types::I64X2,
        _ => unreachable!("elements are 1, 2, 4 or 8 bytes"),
    }
}

/// `ptr + iv·scale` (bytes).
pub(crate) fn offset(kb: &mut Kb, ptr: Value, iv: Value, scale: i64) -> Value {
    match scale {
        0 => ptr,
        1 => kb.b.ins().iadd(ptr, iv),
        s if s > 0 && (s as u64).is_power_of_two() => {
            let o = kb.b.ins().ishl_imm_u(iv, i64::from(s.trailing_zeros()));
            kb.b.ins().iadd(ptr, o)
        }
        s => {
            let o = kb.b.ins().imul_imm_s(iv, s);
            kb.b.ins().iadd(ptr, o)
        }
    }
}

/// `for iv in (start..end).step_by(step) { body(kb, iv) }` with an `i64` induction variable and
/// the whole kernel builder (math calls included) available in the body. Nothing is emitted
/// for an empty range; a single iteration is emitted straight-line.
pub(crate) fn kb_loop(kb: &mut Kb, start: i64, end: i64, step: i64, mut body: impl FnMut(&mut Kb, Value)) {
    assert!(step > 0, "loop step must be positive");
    if start >= end {
        return;
    }
    if end - start <= step {
        let iv = kb.b.ins().iconst(types::I64, start);
        body(kb, iv);
        return;
    }
    let header = kb.b.create_block();
    let body_blk = kb.b.create_block();
    let exit = kb.b.create_block();
    kb.b.append_block_param(header, types::I64);
    let s = kb.b.ins().iconst(types::I64, start);
    kb.b.ins().jump(header, &[s.into()]);
    kb.b.switch_to_block(header);
    let iv = kb.b.block_params(header)[0];
    let more = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, iv, end);
    kb.b.ins().brif(more, body_blk, &[], exit, &[]);
    kb.b.switch_to_block(body_blk);
    body(kb, iv);
    let next = kb.b.ins().iadd_imm_s(iv, step);
    kb.b.ins().jump(header, &[next.into()]);
    kb.b.switch_to_block(exit);
}

/// `for iv in (start..end).step_by(step) { body(kb, iv) }` with run-time `i64` bounds.
pub(crate) fn kb_loop_dyn(kb: &mut Kb, start: Value, end: Value, step: i64, mut body: impl FnMut(&mut Kb, Value)) {
    let header = kb.b.create_block();
    let body_blk = kb.b.create_block();
    let exit = kb.b.create_block();
    kb.b.append_block_param(header, types::I64);
    kb.b.ins().jump(header, &[start.into()]);
    kb.b.switch_to_block(header);
    let iv = kb.b.block_params(header)[0];
    let more = kb.b.ins().icmp(IntCC::SignedLessThan, iv, end);
    kb.b.ins().brif(more, body_blk, &[], exit, &[]);
    kb.b.switch_to_block(body_blk);
    body(kb, iv);
    let next = kb.b.ins().iadd_imm_s(iv, step);
    kb.b.ins().jump(header, &[next.into()]);
    kb.b.switch_to_block(exit);
}

/// Emits `then` only when `cond` (an `i8` truth value) is non-zero, `otherwise` else.
pub(crate) fn if_else(kb: &mut Kb, cond: Value, then: impl FnOnce(&mut Kb), otherwise: impl FnOnce(&mut Kb)) {
    let t = kb.b.create_block();
    let e = kb.b.create_block();
    let join = kb.b.create_block();
    kb.b.ins().brif(cond, t, &[], e, &[]);
    kb.b.switch_to_block(t);
    then(kb);
    kb.b.ins().jump(join, &[]);
    kb.b.switch_to_block(e);
    otherwise(kb);
    kb.b.ins().jump(join, &[]);
    kb.b.switch_to_block(join);
}

/// A rectangular iteration space over several operands, each with its own byte strides.
/// Unit axes are dropped and adjacent axes that are contiguous in every operand are merged,
/// so e.g. a per-channel `[1,C,1,1]` operand against `[N,C,H,W]` iterates `[N, C, H·W]`.
#[derive(Clone, Debug)]
pub(crate) struct Nest {
    pub dims: Vec<i64>,
    /// `strides[operand][axis]`, in bytes (may be 0 or negative).
    pub strides: Vec<Vec<i64>>,
}

impl Nest {
    /// `shape` is the iteration space; `strides[k]` the byte strides of operand `k` over it.
    pub(crate) fn new(shape: &[usize], strides: Vec<Vec<i64>>) -> Nest {
        let n_ops = strides.len();
        let mut dims: Vec<i64> = Vec::new();
        let mut st: Vec<Vec<i64>> = vec![Vec::new(); n_ops];
        for (ax, &d) in shape.iter().enumerate() {
            if d == 1 {
                continue;
            }
            let d = d as i64;
            let last = dims.len();
            let mergeable = last > 0 && (0..n_ops).all(|k| st[k][last - 1] == strides[k][ax] * d);
            if mergeable {
                dims[last - 1] *= d;
                for k in 0..n_ops {
                    st[k][last - 1] = strides[k][ax];
                }
            } else {
                dims.push(d);
                for k in 0..n_ops {
                    st[k].push(strides[k][ax]);
                }
            }
        }
        Nest { dims, strides: st }
    }

    pub(crate) fn numel(&self) -> i64 {
        self.dims.iter().product()
    }

    /// The same iterations with the outer axes (all but the innermost) ordered by operand
    /// `op`'s stride, largest outermost (a stable sort: ties keep their order). A transpose
    /// whose rows read with a stride then walks its input front to back instead of making one
    /// pass over it per outer output axis (a 6-D space-to-depth of a 224×224×3 image: 485 →
    /// 373 µs; the NHWC → NCHW transpose of the same image unchanged at 106–108 µs).
    pub(crate) fn outer_by_stride(self, op: usize) -> Nest {
        let Some(inner) = self.dims.len().checked_sub(1) else { return self };
        let mut order: Vec<usize> = (0..inner).collect();
        order.sort_by_key(|&a| std::cmp::Reverse(self.strides[op][a].unsigned_abs()));
        order.push(inner);
        Nest {
            dims: order.iter().map(|&a| self.dims[a]).collect(),
            strides: self.strides.iter().map(|st| order.iter().map(|&a| st[a]).collect()).collect(),
        }
    }

    /// Extent and per-operand byte strides of the innermost axis (1 and zeros for a scalar).
    pub(crate) fn inner(&self) -> (i64, Vec<i64>) {
        match self.dims.last() {
            Some(&d) => (d, self.strides.iter().map(|s| *s.last().expect("same rank")).collect()),
            None => (1, vec![0; self.strides.len()]),
        }
    }

    /// Cuts the nest into work units of about `grain` iterations. A row of at least two grains
    /// is cut into column ranges whose width is a multiple of `align` (the step of the
    /// caller's vector loop, or of its copy loop); shorter rows stay whole and the units take
    /// several rows of the outer axes.
    pub(crate) fn cut(&self, grain: i64, align: i64) -> Cut {
        let Some((&n, outer)) = self.dims.split_last() else { return Cut::Outer { axes: 0, per_unit: 1 } };
        if self.numel() == 0 {
            return Cut::Outer { axes: 0, per_unit: 1 };
        }
        if n >= 2 * grain {
            let align = align.max(1);
            let width = ceil_div(ceil_div(n, n / grain), align) * align;
            let chunks = ceil_div(n, width);
            if chunks >= 2 {
                return Cut::Cols { chunks, width };
            }
        }
        outer_cut(outer, n, grain)
    }

    /// The number of work units of `cut`.
    pub(crate) fn units(&self, cut: Cut) -> u64 {
        let outer = &self.dims[..self.dims.len().saturating_sub(1)];
        match cut {
            Cut::Outer { axes, per_unit } => units_of(outer[..axes].iter().product(), per_unit),
            Cut::Cols { chunks, .. } => units_of(outer.iter().product::<i64>() * chunks, 1),
        }
    }

    /// Runs units `lo..hi` (`i64` values) of `cut`: `body` receives each operand's pointer at
    /// the start of an innermost row and the columns of that row to compute.
    pub(crate) fn for_units(
        &self,
        kb: &mut Kb,
        cut: Cut,
        lo: Value,
        hi: Value,
        bases: &[Value],
        body: &mut dyn FnMut(&mut Kb, &[Value], Cols),
    ) {
        if self.numel() == 0 {
            return;
        }
        let rank = self.dims.len().saturating_sub(1);
        let outer: Vec<Vec<i64>> = self.strides.iter().map(|s| s[..rank].to_vec()).collect();
        let dims = &self.dims[..rank];
        match cut {
            Cut::Outer { axes, per_unit } => {
                loop_units(kb, dims, &outer, bases, (axes, per_unit), (lo, hi), &mut |kb, p| body(kb, p, Cols::Full))
            }
            Cut::Cols { chunks, width } => {
                let n = self.dims[rank];
                kb_loop_dyn(kb, lo, hi, 1, |kb, u| {
                    let q = kb.b.ins().udiv_imm_u(u, chunks);
                    let qc = kb.b.ins().imul_imm_s(q, chunks);
                    let c = kb.b.ins().isub(u, qc);
                    let ptrs = point(kb, dims, &outer, bases, q);
                    let start = kb.b.ins().imul_imm_s(c, width);
                    let end = kb.b.ins().iadd_imm_s(start, width);
                    let row_end = kb.b.ins().iconst(types::I64, n);
                    let end = kb.b.ins().smin(end, row_end);
                    let last = kb.b.ins().icmp_imm_s(IntCC::Equal, c, chunks - 1);
                    body(kb, &ptrs, Cols::Part { start, end, last });
                });
            }
        }
    }
}

/// How the iterations of a loop nest are cut into work units (see the threading contract in
/// [`super`]): units never split a row's vector/tail structure, so every element is computed
/// by the same code whichever call computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Units of `per_unit` iterations of the first `axes` outer axes taken together
    /// (row-major); each iteration runs the remaining axes and whole rows. `axes == 0` is one
    /// unit.
    Outer { axes: usize, per_unit: i64 },
    /// Every row cut into `chunks` column ranges of `width` columns: unit `q·chunks + c` is
    /// range `c` of row `q` (rows numbered row-major over the outer axes).
    Cols { chunks: i64, width: i64 },
}

/// Which columns of an innermost row a piece of a unit computes.
#[derive(Clone, Copy)]
pub(crate) enum Cols {
    /// The whole row, with constant bounds (exactly the serial code).
    Full,
    /// Columns `start..end` (`i64`): `start` is a multiple of the cut's alignment, and so is
    /// `end` unless it is the row's end, which `last` (an `i8` truth value) tells.
    Part { start: Value, end: Value, last: Value },
}

impl Cols {
    /// Runs `body(kb, i)` for the columns `i` of `[0, main)`, `step` at a time, that this piece
    /// covers, then `tail` (the columns `[main, n)`) if the piece reaches the row's end.
    /// `main` must be a multiple of `step` and the cut's alignment a multiple of `step`: then
    /// a column is computed by the same code (vector body or tail) whichever unit covers it.
    pub(crate) fn run(
        self,
        kb: &mut Kb,
        main: i64,
        step: i64,
        body: impl FnMut(&mut Kb, Value),
        tail: impl FnOnce(&mut Kb),
    ) {
        match self {
            Cols::Full => {
                kb_loop(kb, 0, main, step, body);
                tail(kb);
            }
            Cols::Part { start, end, last } => {
                let m = kb.b.ins().iconst(types::I64, main);
                let e = kb.b.ins().smin(end, m);
                kb_loop_dyn(kb, start, e, step, body);
                if_else(kb, last, tail, |_| {});
            }
        }
    }
}

/// A [`Cut::Outer`] for a loop nest over `dims` whose innermost iteration does `work`
/// elements of work: the fewest leading axes that still give as many units of at least
/// `grain` as all axes would (capped at 16, plenty to balance two threads), so short inner
/// iterations need no index arithmetic.
pub(crate) fn outer_cut(dims: &[i64], work: i64, grain: i64) -> Cut {
    let split = |axes: usize| {
        let below: i64 = dims[axes..].iter().product::<i64>() * work.max(1);
        let per_unit = ceil_div(grain, below.max(1)).max(1);
        (units_of(dims[..axes].iter().product(), per_unit), per_unit)
    };
    let target = split(dims.len()).0.min(16);
    (0..=dims.len()).map(|axes| (axes, split(axes))).find(|&(_, (units, _))| units >= target).map_or(
        Cut::Outer { axes: 0, per_unit: 1 },
        |(axes, (_, per_unit))| Cut::Outer {
            axes,
            per_unit: balanced_grain(dims[..axes].iter().product(), per_unit, 1),
        },
    )
}

/// `⌈a / b⌉` for `a ≥ 0`, `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// Runs units `lo..hi` of the cut `(axes, per_unit)` of a loop nest over `dims` (a
/// [`Cut::Outer`]): `body` receives each operand's pointer `bases[k] + Σ iv·strides[k][axis]`.
pub(crate) fn loop_units(
    kb: &mut Kb,
    dims: &[i64],
    strides: &[Vec<i64>],
    bases: &[Value],
    (axes, per_unit): (usize, i64),
    (lo, hi): (Value, Value),
    body: &mut dyn FnMut(&mut Kb, &[Value]),
) {
    let rest: Vec<Vec<i64>> = strides.iter().map(|s| s[axes..].to_vec()).collect();
    if axes == 0 {
        // One unit: run it if it is in range (a multi-piece kernel may pass an empty range).
        let some = kb.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
        if_else(kb, some, |kb| loop_axes(kb, dims, &rest, bases, body), |_| {});
        return;
    }
    let lead: Vec<Vec<i64>> = strides.iter().map(|s| s[..axes].to_vec()).collect();
    let (start, end) = unit_span(&mut kb.b, lo, hi, dims[..axes].iter().product(), per_unit);
    kb_loop_dyn(kb, start, end, 1, |kb, q| {
        let ptrs = point(kb, &dims[..axes], &lead, bases, q);
        loop_axes(kb, &dims[axes..], &rest, &ptrs, body);
    });
}

/// The operands' pointers at the row-major flat index `q` of `dims`.
fn point(kb: &mut Kb, dims: &[i64], strides: &[Vec<i64>], bases: &[Value], mut q: Value) -> Vec<Value> {
    let mut ptrs = bases.to_vec();
    for a in (0..dims.len()).rev() {
        let idx = if a == 0 {
            q
        } else {
            let i = kb.b.ins().urem_imm_u(q, dims[a]);
            q = kb.b.ins().udiv_imm_u(q, dims[a]);
            i
        };
        for (p, s) in ptrs.iter_mut().zip(strides) {
            *p = offset(kb, *p, idx, s[a]);
        }
    }
    ptrs
}

/// Units `lo..hi` of a kernel restricted to the `units` units that start at unit `first`,
/// as a local range (empty when they do not meet).
pub(crate) fn local_range(kb: &mut Kb, lo: Value, hi: Value, first: u64, units: u64) -> (Value, Value) {
    let (first, units) = (first as i64, units as i64);
    let clamp = |kb: &mut Kb, v: Value| {
        let v = kb.b.ins().iadd_imm_s(v, -first);
        let zero = kb.b.ins().iconst(types::I64, 0);
        let top = kb.b.ins().iconst(types::I64, units);
        let v = kb.b.ins().smax(v, zero);
        kb.b.ins().smin(v, top)
    };
    (clamp(kb, lo), clamp(kb, hi))
}

/// Loops over every axis of `dims` (outermost first); `body` receives each operand's pointer
/// `bases[k] + Σ iv·strides[k][axis]`.
pub(crate) fn loop_axes(
    kb: &mut Kb,
    dims: &[i64],
    strides: &[Vec<i64>],
    bases: &[Value],
    body: &mut dyn FnMut(&mut Kb, &[Value]),
) {
    loop_from(kb, 0, dims, strides, bases, body);
}

fn loop_from(
    kb: &mut Kb,
    axis: usize,
    dims: &[i64],
    strides: &[Vec<i64>],
    ptrs: &[Value],
    body: &mut dyn FnMut(&mut Kb, &[Value]),
) {
    if axis == dims.len() {
        body(kb, ptrs);
        return;
    }
    kb_loop(kb, 0, dims[axis], 1, |kb, iv| {
        let next: Vec<Value> = ptrs.iter().zip(strides).map(|(&p, s)| offset(kb, p, iv, s[axis])).collect();
        loop_from(kb, axis + 1, dims, strides, &next, body);
    });
}

/// Row-major byte strides of a contiguous tensor of `shape` with `esize`-byte elements.
pub(crate) fn contiguous_strides(shape: &[usize], esize: usize) -> Vec<i64> {
    let mut s = vec![esize as i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

/// Byte strides that read a contiguous tensor of `shape` broadcast (right-aligned) to `out`:
/// stretched and missing axes get stride 0.
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize], esize: usize) -> Vec<i64> {
    let own = contiguous_strides(shape, esize);
    let lead = out.len() - shape.len();
    let mut s = vec![0; out.len()];
    for (i, (&d, &st)) in shape.iter().zip(&own).enumerate() {
        if d != 1 {
            s[lead + i] = st;
        }
    }
    s
}

/// Copies `bytes` bytes from `src` to `dst` (the ranges do not overlap): a 64-byte vector
/// loop, then 16-byte pieces (the last one overlapping backwards), then small pieces.
pub(crate) fn copy_bytes(kb: &mut Kb, src: Value, dst: Value, bytes: i64) {
    let v = types::I8X16;
    let main = bytes / 64 * 64;
    if main > 0 {
        kb_loop(kb, 0, main, 64, |kb, off| {
            let s = kb.b.ins().iadd(src, off);
            let d = kb.b.ins().iadd(dst, off);
            let parts: Vec<Value> = (0..4).map(|k| kb.b.ins().load(v, mem(), s, 16 * k)).collect();
            for (k, p) in parts.into_iter().enumerate() {
                kb.b.ins().store(mem(), p, d, 16 * k as i32);
            }
        });
    }
    let rest = bytes - main;
    if rest == 0 {
        return;
    }
    if bytes >= 16 {
        let mut o = main;
        while o < bytes {
            let at_ = o.min(bytes - 16);
            move_piece(kb, v, src, dst, at_);
            o += 16;
        }
        return;
    }
    let mut o = 0;
    for (w, ty) in [(8, types::I64), (4, types::I32), (2, types::I16), (1, types::I8)] {
        while bytes - o >= w {
            move_piece(kb, ty, src, dst, o);
            o += w;
        }
    }
}

fn move_piece(kb: &mut Kb, ty: Type, src: Value, dst: Value, off: i64) {
    let (s, so) = address(&mut kb.b, src, off);
    let x = kb.b.ins().load(ty, mem(), s, so);
    let (d, dof) = address(&mut kb.b, dst, off);
    kb.b.ins().store(mem(), x, d, dof);
}

/// Stores `n` copies of the `esize`-byte integer `value` at `dst`, `dst_stride` bytes apart.
pub(crate) fn fill(kb: &mut Kb, dst: Value, dst_stride: i64, value: Value, esize: usize, n: i64) {
    if n <= 0 {
        return;
    }
    let es = esize as i64;
    if dst_stride != es {
        kb_loop(kb, 0, n, 1, |kb, i| {
            let d = offset(kb, dst, i, dst_stride);
            kb.b.ins().store(mem(), value, d, 0);
        });
        return;
    }
    let bytes = n * es;
    if bytes < 16 {
        for k in 0..n {
            let (d, o) = address(&mut kb.b, dst, k * es);
            kb.b.ins().store(mem(), value, d, o);
        }
        return;
    }
    let v = kb.b.ins().splat(vec_type(esize), value);
    let main = bytes / 64 * 64;
    if main > 0 {
        kb_loop(kb, 0, main, 64, |kb, off| {
            let d = kb.b.ins().iadd(dst, off);
            for k in 0..4 {
                kb.b.ins().store(mem(), v, d, 16 * k);
            }
        });
    }
    // 16 is a multiple of every element size, so the overlapping last store stays in phase.
    let mut o = main;
    while o < bytes {
        let (d, off) = address(&mut kb.b, dst, o.min(bytes - 16));
        kb.b.ins().store(mem(), v, d, off);
        o += 16;
    }
}

/// Copies `n` elements of `esize` bytes from `src` (stride `src_stride` bytes, possibly 0 or
/// negative) to `dst` (stride `dst_stride`).
pub(crate) fn copy_elems(kb: &mut Kb, esize: usize, src: Value, src_stride: i64, dst: Value, dst_stride: i64, n: i64) {
    if n <= 0 {
        return;
    }
    let es = esize as i64;
    let ty = int_type(esize);
    if n == 1 || (src_stride == es && dst_stride == es) {
        return copy_bytes(kb, src, dst, n * es);
    }
    if src_stride == 0 {
        let x = kb.b.ins().load(ty, mem(), src, 0);
        return fill(kb, dst, dst_stride, x, esize, n);
    }
    kb_loop(kb, 0, n, 1, |kb, i| {
        let s = offset(kb, src, i, src_stride);
        let x = kb.b.ins().load(ty, mem(), s, 0);
        let d = offset(kb, dst, i, dst_stride);
        kb.b.ins().store(mem(), x, d, 0);
    });
}

/// The column alignment a [`Cut`] needs for [`copy_elems_cols`] on `esize`-byte elements: one
/// 64-byte step of the copy loop.
pub(crate) fn copy_align(esize: usize) -> i64 {
    64 / esize as i64
}

/// [`copy_elems`] of the columns `cols` of a row of `n` elements (cut with [`copy_align`]).
/// A part of a contiguous (or splatted) row runs the 64-byte loop over its own range and, at
/// the row's end, the remainder in pieces that stay inside the row part.
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_elems_cols(
    kb: &mut Kb,
    esize: usize,
    src: Value,
    src_stride: i64,
    dst: Value,
    dst_stride: i64,
    n: i64,
    cols: Cols,
) {
    let Cols::Part { start, end, last } = cols else {
        return copy_elems(kb, esize, src, src_stride, dst, dst_stride, n);
    };
    let es = esize as i64;
    let ty = int_type(esize);
    if dst_stride != es || (src_stride != es && src_stride != 0) {
        kb_loop_dyn(kb, start, end, 1, |kb, i| {
            let s = offset(kb, src, i, src_stride);
            let x = kb.b.ins().load(ty, mem(), s, 0);
            let d = offset(kb, dst, i, dst_stride);
            kb.b.ins().store(mem(), x, d, 0);
        });
        return;
    }
    // A splatted source fills; its value as a vector and as one element.
    let splat = (src_stride == 0).then(|| {
        let x = kb.b.ins().load(ty, mem(), src, 0);
        (kb.b.ins().splat(vec_type(esize), x), x)
    });
    let v = types::I8X16;
    let bytes = n * es;
    let main = bytes / 64 * 64;
    let bs = kb.b.ins().imul_imm_s(start, es);
    let be = kb.b.ins().imul_imm_s(end, es);
    let m = kb.b.ins().iconst(types::I64, main);
    let be = kb.b.ins().smin(be, m);
    kb_loop_dyn(kb, bs, be, 64, |kb, off| {
        let d = kb.b.ins().iadd(dst, off);
        match splat {
            Some((sv, _)) => {
                for k in 0..4 {
                    kb.b.ins().store(mem(), sv, d, 16 * k);
                }
            }
            None => {
                let s = kb.b.ins().iadd(src, off);
                let parts: Vec<Value> = (0..4).map(|k| kb.b.ins().load(v, mem(), s, 16 * k)).collect();
                for (k, p) in parts.into_iter().enumerate() {
                    kb.b.ins().store(mem(), p, d, 16 * k as i32);
                }
            }
        }
    });
    if main == bytes {
        return;
    }
    if_else(
        kb,
        last,
        |kb| {
            let mut o = main;
            match splat {
                Some((sv, x)) => {
                    while bytes - o >= 16 {
                        let (d, dof) = address(&mut kb.b, dst, o);
                        kb.b.ins().store(mem(), sv, d, dof);
                        o += 16;
                    }
                    while o < bytes {
                        let (d, dof) = address(&mut kb.b, dst, o);
                        kb.b.ins().store(mem(), x, d, dof);
                        o += es;
                    }
                }
                None => {
                    for (w, ty) in [(16, v), (8, types::I64), (4, types::I32), (2, types::I16), (1, types::I8)] {
                        while bytes - o >= w {
                            move_piece(kb, ty, src, dst, o);
                            o += w;
                        }
                    }
                }
            }
        },
        |_| {},
    );
}

/// A copy of the elements of a shape between two strided layouts, cut into work units.
pub(crate) struct StridedCopy {
    nest: Nest,
    esize: usize,
    cut: Cut,
}

impl StridedCopy {
    /// Copies `esize`-byte elements of `shape`, each side with its own byte strides.
    pub(crate) fn new(esize: usize, shape: &[usize], src_strides: Vec<i64>, dst_strides: Vec<i64>) -> StridedCopy {
        let nest = Nest::new(shape, vec![src_strides, dst_strides]);
        let cut = nest.cut(GRAIN, copy_align(esize));
        StridedCopy { nest, esize, cut }
    }

    pub(crate) fn units(&self) -> u64 {
        self.nest.units(self.cut)
    }

    /// Copies units `lo..hi` from `src` to `dst`.
    pub(crate) fn emit(&self, kb: &mut Kb, src: Value, dst: Value, lo: Value, hi: Value) {
        let (n, s) = self.nest.inner();
        let es = self.esize;
        self.nest.for_units(kb, self.cut, lo, hi, &[src, dst], &mut |kb, p, cols| {
            copy_elems_cols(kb, es, p[0], s[0], p[1], s[1], n, cols)
        });
    }
}

#[cfg(test)]
#[path = "units_tests.rs"]
mod units_tests;
