//! Loop nests over strided operands, shared by the element-wise and data-movement kernels:
//! axis merging, counted loops with the whole kernel builder in scope, and copy / fill
//! primitives for elements of 1, 4 or 8 bytes moved as raw bits.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};

use super::Kb;
use super::builder::mem;

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

/// `ptr + off` as an address plus an `i32` immediate offset.
fn at(kb: &mut Kb, ptr: Value, off: i64) -> (Value, i32) {
    match i32::try_from(off) {
        Ok(o) => (ptr, o),
        Err(_) => (kb.b.ins().iadd_imm_s(ptr, off), 0),
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

    /// Extent and per-operand byte strides of the innermost axis (1 and zeros for a scalar).
    pub(crate) fn inner(&self) -> (i64, Vec<i64>) {
        match self.dims.last() {
            Some(&d) => (d, self.strides.iter().map(|s| *s.last().expect("same rank")).collect()),
            None => (1, vec![0; self.strides.len()]),
        }
    }

    /// Loops over every axis but the innermost; `body` receives each operand's pointer at the
    /// start of an innermost row.
    pub(crate) fn outer(&self, kb: &mut Kb, bases: &[Value], body: &mut dyn FnMut(&mut Kb, &[Value])) {
        let n = self.dims.len().saturating_sub(1);
        let strides: Vec<Vec<i64>> = self.strides.iter().map(|s| s[..n].to_vec()).collect();
        loop_axes(kb, &self.dims[..n], &strides, bases, body);
    }
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
    let (s, so) = at(kb, src, off);
    let x = kb.b.ins().load(ty, mem(), s, so);
    let (d, dof) = at(kb, dst, off);
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
            let (d, o) = at(kb, dst, k * es);
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
        let (d, off) = at(kb, dst, o.min(bytes - 16));
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

/// Copies the elements of `shape` from `src` to `dst`, each side with its own byte strides.
pub(crate) fn strided_copy(
    kb: &mut Kb,
    esize: usize,
    shape: &[usize],
    src_strides: Vec<i64>,
    dst_strides: Vec<i64>,
    src: Value,
    dst: Value,
) {
    let nest = Nest::new(shape, vec![src_strides, dst_strides]);
    if nest.numel() == 0 {
        return;
    }
    let (n, s) = nest.inner();
    nest.outer(kb, &[src, dst], &mut |kb, p| copy_elems(kb, esize, p[0], s[0], p[1], s[1], n));
}
