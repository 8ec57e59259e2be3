//! Data movement: transpose, slice, pad, expand, gather, concat, split, cast.
//!
//! Every dtype moves as raw bits (f32 and i32 4 bytes, i64 8 bytes, bool, u8 and i8 1 byte). Most of these ops
//! are strided copies: a baked loop nest ([`Nest`]) whose innermost row is a contiguous copy
//! (64-byte vector loop), a splat fill (stride 0) or an element-by-element strided copy.
//! Transposes of 4-byte elements that move the contiguous axis go through 4×4 register
//! transposes, except an NHWC → NCHW transpose of 3 channels, which calls the AVX2 routine
//! `deinterleave3` where the host has the f32 microkernels; other transposes run their outer
//! axes in the order of the input's strides (`Nest::outer_by_stride`), reading the input front
//! to back. Pad splits each axis into runs (constant fill, forward copy, mirrored copy, repeated
//! edge); a pad whose runs would multiply into too much code reads through an index table built
//! at load time instead.
//!
//! Work units: rows of the nest, or parts of long rows cut at 64-byte steps (a part that ends
//! a row copies the remainder without the overlapping store, which would reach into the
//! previous part); blocks of 4 rows of a transposing plane; the output positions of a pad's
//! outermost axis; the output rows of a gather; concat and split number their pieces' units
//! one after another.
//!
//! Gather with indices computed at run time writes zeros for an index outside `[-dim, dim)`
//! (the reference reports an error there); constant indices are checked at load.

use cnnc_ir::{DType, PadMode, SliceAxis};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{AbiParam, ConstantData, InstBuilder, MemFlagsData, Signature, Value, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

use super::builder::{address, balanced_grain, mem, unit_span, units_of};
use super::index_map::{
    Cols, Cut, GRAIN, Nest, StridedCopy, broadcast_strides, contiguous_strides, copy_align, copy_bytes, copy_elems,
    copy_elems_cols, fill, if_else, int_type, kb_loop, kb_loop_dyn, local_range, loop_units, offset, outer_cut,
};
use super::{Aux, CompileError, EmitCx, Emitted, Jit, Kb};

/// ONNX `Transpose`: output axis `i` is input axis `perm[i]`.
pub(crate) fn emit_transpose(jit: &mut Jit, cx: &EmitCx, perm: &[usize]) -> Result<Emitted, CompileError> {
    let (x, y) = (&cx.inputs[0], &cx.outputs[0]);
    let mut seen = vec![false; x.rank()];
    if perm.len() != x.rank() || perm.iter().any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true)) {
        return Err(cx.unsupported(format!("{perm:?} is not a permutation of {} axes", x.rank())));
    }
    let es = x.dtype.size_bytes();
    if es == 4
        && perm == [0, 3, 1, 2]
        && x.shape[3] == 3
        && x.numel() > 0
        && let Some(mk) = super::f32_kernels()?
    {
        return emit_deinterleave3(jit, cx, mk.deinterleave3);
    }
    let in_s = contiguous_strides(&x.shape, es);
    let src: Vec<i64> = perm.iter().map(|&p| in_s[p]).collect();
    let copy = NestCopy::new(es, Nest::new(&y.shape, vec![src, contiguous_strides(&y.shape, es)]));
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        let (px, py) = (kb.arg(x_arg), kb.arg(y_arg));
        let (lo, hi) = (kb.lo, kb.hi);
        copy.emit(kb, px, py, lo, hi);
    })?;
    Ok(Emitted::parallel(func, vec![], copy.units()))
}

/// `[N, H, W, 3] → [N, 3, H, W]` (4-byte elements) through the AVX2 routine at `f`
/// (`Microkernels::deinterleave3`): work units are ranges of one image's pixels.
fn emit_deinterleave3(jit: &mut Jit, cx: &EmitCx, f: u64) -> Result<Emitted, CompileError> {
    let x = &cx.inputs[0];
    let plane = (x.shape[1] * x.shape[2]) as i64;
    let grain = balanced_grain(plane, GRAIN / 3, 8);
    let per_image = units_of(plane, grain) as i64;
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    jit.note_variant("transpose-deinterleave3");
    let func = jit.kernel(cx.name, |kb| {
        let (px, py) = (kb.arg(x_arg), kb.arg(y_arg));
        let (lo, hi) = (kb.lo, kb.hi);
        kb_loop_dyn(kb, lo, hi, 1, |kb, u| {
            let b = &mut kb.b;
            let ptr = types::I64;
            let img = b.ins().udiv_imm_u(u, per_image);
            let chunk = b.ins().urem_imm_u(u, per_image);
            let p0 = b.ins().imul_imm_s(chunk, grain);
            let p1 = b.ins().iadd_imm_s(p0, grain);
            let cap = b.ins().iconst(ptr, plane);
            let p1 = b.ins().smin(p1, cap);
            // Image `img` starts 3·plane elements (of 4 bytes) into both the input and the output.
            let at = b.ins().imul_imm_s(img, 3 * plane * 4);
            let (xi, yi) = (b.ins().iadd(px, at), b.ins().iadd(py, at));
            let plane_v = b.ins().iconst(ptr, plane);
            let mut sig = Signature::new(CallConv::SystemV);
            sig.params.extend((0..5).map(|_| AbiParam::new(ptr)));
            let sig = b.import_signature(sig);
            let callee = b.ins().iconst(ptr, f as i64);
            // In bounds: `p0 < p1 ≤ plane` within image `img < N` of both tensors.
            b.ins().call_indirect(sig, callee, &[xi, yi, plane_v, p0, p1]);
        });
    })?;
    Ok(Emitted::parallel(func, vec![], x.shape[0] as u64 * per_image as u64))
}

/// ONNX `Slice` with normalized axes.
pub(crate) fn emit_slice(jit: &mut Jit, cx: &EmitCx, axes: &[SliceAxis]) -> Result<Emitted, CompileError> {
    let (x, y) = (&cx.inputs[0], &cx.outputs[0]);
    let es = x.dtype.size_bytes();
    let in_s = contiguous_strides(&x.shape, es);
    let mut src = in_s.clone();
    let mut base = 0i64;
    let mut seen = vec![false; x.rank()];
    for sa in axes {
        let SliceAxis { axis, start, end, step } = *sa;
        if axis >= x.rank() || std::mem::replace(&mut seen[axis], true) || step == 0 {
            return Err(cx.unsupported(format!("slice axis {axis} (step {step}) is invalid or repeated")));
        }
        let (s, e, st) = (i128::from(start), i128::from(end), i128::from(step));
        let len = if st > 0 {
            if e > s { (e - s + st - 1) / st } else { 0 }
        } else if s > e {
            (s - e - st - 1) / -st
        } else {
            0
        };
        if len != y.shape[axis] as i128 {
            return Err(cx.unsupported(format!("axis {axis}: slice length {len} disagrees with the output type")));
        }
        if len > 0 {
            let (last, dim) = (s + (len - 1) * st, x.shape[axis] as i128);
            if s < 0 || s >= dim || last < 0 || last >= dim {
                return Err(cx.unsupported(format!("axis {axis}: indices {start}..{end} step {step} leave [0, {dim})")));
            }
            base += start * in_s[axis];
        }
        src[axis] = if len > 1 { step * in_s[axis] } else { 0 };
    }
    let copy = NestCopy::new(es, Nest::new(&y.shape, vec![src, contiguous_strides(&y.shape, es)]));
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        let px = kb.arg(x_arg);
        let px = kb.b.ins().iadd_imm_s(px, base);
        let py = kb.arg(y_arg);
        let (lo, hi) = (kb.lo, kb.hi);
        copy.emit(kb, px, py, lo, hi);
    })?;
    Ok(Emitted::parallel(func, vec![], copy.units()))
}

/// ONNX `Expand`: `x` broadcast to the output shape.
pub(crate) fn emit_expand(jit: &mut Jit, cx: &EmitCx) -> Result<Emitted, CompileError> {
    let (x, y) = (&cx.inputs[0], &cx.outputs[0]);
    let broadcasts =
        x.rank() <= y.rank() && x.shape.iter().rev().zip(y.shape.iter().rev()).all(|(&a, &b)| a == b || a == 1);
    if !broadcasts {
        return Err(cx.unsupported(format!("{:?} does not broadcast to {:?}", x.shape, y.shape)));
    }
    let es = x.dtype.size_bytes();
    let copy =
        StridedCopy::new(es, &y.shape, broadcast_strides(&x.shape, &y.shape, es), contiguous_strides(&y.shape, es));
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        let (px, py) = (kb.arg(x_arg), kb.arg(y_arg));
        let (lo, hi) = (kb.lo, kb.hi);
        copy.emit(kb, px, py, lo, hi);
    })?;
    Ok(Emitted::parallel(func, vec![], copy.units()))
}

/// ONNX `Gather`: `out[pre, j…, post] = data[pre, indices[j…], post]`.
pub(crate) fn emit_gather(jit: &mut Jit, cx: &EmitCx, axis: usize) -> Result<Emitted, CompileError> {
    let (data, idx, y) = (&cx.inputs[0], &cx.inputs[1], &cx.outputs[0]);
    if idx.dtype != DType::I64 || axis >= data.rank() {
        return Err(cx.unsupported(format!("gather on axis {axis} of {data} with {} indices", idx.dtype)));
    }
    let es = data.dtype.size_bytes() as i64;
    let dim = data.shape[axis] as i64;
    let outer: i64 = data.shape[..axis].iter().product::<usize>() as i64;
    let inner: i64 = data.shape[axis + 1..].iter().product::<usize>() as i64;
    let n_idx = idx.numel() as i64;
    let checked = match cx.consts.get(1).copied().flatten() {
        Some(t) => {
            let v = t.as_i64().ok_or_else(|| cx.unsupported("constant indices are not i64"))?;
            if let Some(bad) = v.iter().find(|&&i| i < -dim || i >= dim) {
                return Err(cx.unsupported(format!("index {bad} is out of range for axis of length {dim}")));
            }
            true
        }
        None => false,
    };
    let row = inner * es;
    // Units over the output rows `(o, j)`; operands: data, indices, output.
    let dims = [outer, n_idx];
    let strides = vec![vec![dim * row, 0], vec![0, 8], vec![n_idx * row, row]];
    let Cut::Outer { axes, per_unit } = outer_cut(&dims, inner, GRAIN) else { unreachable!("outer cuts only") };
    let units = if y.numel() == 0 { 1 } else { units_of(dims[..axes].iter().product(), per_unit) };
    let (d_arg, i_arg, y_arg) = (cx.in_arg(0), cx.in_arg(1), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        if y.numel() == 0 {
            return;
        }
        let bases = [kb.arg(d_arg), kb.arg(i_arg), kb.arg(y_arg)];
        let (lo, hi) = (kb.lo, kb.hi);
        loop_units(kb, &dims, &strides, &bases, (axes, per_unit), (lo, hi), &mut |kb, p| {
            let k = kb.b.ins().load(types::I64, mem(), p[1], 0);
            let neg = kb.b.ins().icmp_imm_s(IntCC::SignedLessThan, k, 0);
            let wrapped = kb.b.ins().iadd_imm_s(k, dim);
            let k = kb.b.ins().select(neg, wrapped, k);
            let dst = p[2];
            let copy = |kb: &mut Kb| {
                let src = offset(kb, p[0], k, row);
                copy_bytes(kb, src, dst, row);
            };
            if checked {
                copy(kb);
            } else {
                let ok = kb.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, k, dim);
                if_else(kb, ok, copy, |kb| {
                    let zero = kb.b.ins().iconst(types::I8, 0);
                    fill(kb, dst, 1, zero, 1, row);
                });
            }
        });
    })?;
    Ok(Emitted::parallel(func, vec![], units))
}

/// ONNX `Concat`: each input copied into its slab of the output.
pub(crate) fn emit_concat(jit: &mut Jit, cx: &EmitCx, axis: usize) -> Result<Emitted, CompileError> {
    let y = &cx.outputs[0];
    if axis >= y.rank() || cx.inputs.iter().any(|t| t.rank() != y.rank() || t.dtype != y.dtype) {
        return Err(cx.unsupported(format!("concat along axis {axis} of {y}")));
    }
    let es = y.dtype.size_bytes() as i64;
    let outer = y.shape[..axis].iter().product::<usize>();
    let row = y.shape[axis..].iter().product::<usize>() as i64;
    let mut pieces = Vec::with_capacity(cx.inputs.len());
    let mut off = 0i64;
    for (k, t) in cx.inputs.iter().enumerate() {
        let chunk = t.shape[axis..].iter().product::<usize>() as i64;
        pieces.push((cx.in_arg(k), off, chunk));
        off += chunk;
    }
    if off != row {
        return Err(cx.unsupported("input sizes along the axis do not add up to the output"));
    }
    slab_copies(jit, cx, es, outer, row, &pieces, cx.out_arg(0), true)
}

/// ONNX `Split` (the case the memory plan cannot turn into views): each output copied out of
/// its slab of the input.
pub(crate) fn emit_split(jit: &mut Jit, cx: &EmitCx, axis: usize, sizes: &[usize]) -> Result<Emitted, CompileError> {
    let x = &cx.inputs[0];
    if axis >= x.rank() || sizes.len() != cx.outputs.len() || sizes.iter().sum::<usize>() != x.shape[axis] {
        return Err(cx.unsupported(format!("split {sizes:?} along axis {axis} of {x}")));
    }
    let es = x.dtype.size_bytes() as i64;
    let outer = x.shape[..axis].iter().product::<usize>();
    let inner = x.shape[axis + 1..].iter().product::<usize>() as i64;
    let row = x.shape[axis] as i64 * inner;
    let mut pieces = Vec::with_capacity(sizes.len());
    let mut start = 0i64;
    for (k, &s) in sizes.iter().enumerate() {
        pieces.push((cx.out_arg(k), start * inner, s as i64 * inner));
        start += s as i64;
    }
    slab_copies(jit, cx, es, outer, row, &pieces, cx.in_arg(0), false)
}

/// Copies between one tensor `whole` of `outer` rows of `row` elements (`es` bytes each) and the
/// slabs `pieces` — `(argument, element offset in a row, elements per row)` — into `whole`
/// (concat) or out of it (split). Work units: those of every slab's copy, one after another.
#[allow(clippy::too_many_arguments)]
fn slab_copies(
    jit: &mut Jit,
    cx: &EmitCx,
    es: i64,
    outer: usize,
    row: i64,
    pieces: &[(usize, i64, i64)],
    whole: usize,
    into_whole: bool,
) -> Result<Emitted, CompileError> {
    let copies: Vec<(usize, i64, StridedCopy)> = pieces
        .iter()
        .map(|&(arg, off, chunk)| {
            let (slab, full) = (vec![chunk * es, es], vec![row * es, es]);
            let (src, dst) = if into_whole { (slab, full) } else { (full, slab) };
            (arg, off, StridedCopy::new(es as usize, &[outer, chunk as usize], src, dst))
        })
        .collect();
    let func = jit.kernel(cx.name, |kb| {
        let pw = kb.arg(whole);
        let (lo, hi) = (kb.lo, kb.hi);
        let mut first = 0;
        for (arg, off, copy) in &copies {
            let slab = kb.arg(*arg);
            let at = kb.b.ins().iadd_imm_s(pw, off * es);
            let (src, dst) = if into_whole { (slab, at) } else { (at, slab) };
            let (l, h) = local_range(kb, lo, hi, first, copy.units());
            copy.emit(kb, src, dst, l, h);
            first += copy.units();
        }
    })?;
    Ok(Emitted::parallel(func, vec![], copies.iter().map(|c| c.2.units()).sum()))
}

/// ONNX `Cast` between any two dtypes, as the reference: f32 → integer truncates toward zero
/// and saturates (NaN becomes 0), integer → narrower integer keeps the low bits, anything →
/// bool is `x != 0`.
pub(crate) fn emit_cast(jit: &mut Jit, cx: &EmitCx, to: DType) -> Result<Emitted, CompileError> {
    let (x, y) = (&cx.inputs[0], &cx.outputs[0]);
    let from = x.dtype;
    if y.dtype != to {
        return Err(cx.unsupported(format!("cast to {to} with output type {y}")));
    }
    let n = x.numel();
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let (ein, eout) = (from.size_bytes() as i64, to.size_bytes() as i64);
    if from == to {
        let copy = StridedCopy::new(ein as usize, &[n], vec![ein], vec![eout]);
        let func = jit.kernel(cx.name, |kb| {
            let (px, py) = (kb.arg(x_arg), kb.arg(y_arg));
            let (lo, hi) = (kb.lo, kb.hi);
            copy.emit(kb, px, py, lo, hi);
        })?;
        return Ok(Emitted::parallel(func, vec![], copy.units()));
    }
    let nest = Nest::new(&[n], vec![vec![ein], vec![eout]]);
    let cut = nest.cut(GRAIN, 1);
    let func = jit.kernel(cx.name, |kb| {
        let bases = [kb.arg(x_arg), kb.arg(y_arg)];
        let (lo, hi) = (kb.lo, kb.hi);
        let (n, s) = nest.inner();
        nest.for_units(kb, cut, lo, hi, &bases, &mut |kb, p, cols| {
            let elem = |kb: &mut Kb, i: Value| {
                let q = offset(kb, p[0], i, s[0]);
                let v = kb.b.ins().load(int_type(ein as usize), mem(), q, 0);
                let r = cast_value(&mut kb.b, from, to, v);
                let q = offset(kb, p[1], i, s[1]);
                kb.b.ins().store(mem(), r, q, 0);
            };
            cols.run(kb, n, 1, elem, |_| {});
        });
    })?;
    Ok(Emitted::parallel(func, vec![], nest.units(cut)))
}

/// `v`, an element of `from` loaded as the integer type of its size, converted to `to`.
fn cast_value(b: &mut FunctionBuilder, from: DType, to: DType, v: Value) -> Value {
    let int = |d: DType| int_type(d.size_bytes());
    match (from, to) {
        (DType::F32, _) => {
            let f = b.ins().bitcast(types::F32, MemFlagsData::new(), v);
            match to {
                DType::Bool => {
                    let z = b.ins().f32const(0.0);
                    b.ins().fcmp(FloatCC::NotEqual, f, z)
                }
                DType::I64 | DType::I32 => b.ins().fcvt_to_sint_sat(int(to), f),
                DType::U8 | DType::I8 => {
                    let (lo, hi) = to.int_range().expect("an integer type");
                    let w = b.ins().fcvt_to_sint_sat(types::I32, f);
                    let (lo, hi) = (b.ins().iconst(types::I32, lo), b.ins().iconst(types::I32, hi));
                    let w = b.ins().smax(w, lo);
                    let w = b.ins().smin(w, hi);
                    b.ins().ireduce(types::I8, w)
                }
                DType::F32 => v,
            }
        }
        (_, DType::Bool) => b.ins().icmp_imm_s(IntCC::NotEqual, v, 0),
        (DType::Bool, _) => {
            let t = b.ins().icmp_imm_s(IntCC::NotEqual, v, 0);
            cast_value(b, DType::U8, to, t)
        }
        (_, DType::F32) => {
            let w = widen(b, from, v, types::I64);
            b.ins().fcvt_from_sint(types::F32, w)
        }
        _ if to.size_bytes() > from.size_bytes() => widen(b, from, v, int(to)),
        _ if to.size_bytes() < from.size_bytes() => b.ins().ireduce(int(to), v),
        _ => v,
    }
}

/// An integer element of `from` extended to `ty` by its signedness (u8 zero-extends).
fn widen(b: &mut FunctionBuilder, from: DType, v: Value, ty: types::Type) -> Value {
    if int_type(from.size_bytes()) == ty {
        v
    } else if from == DType::U8 {
        b.ins().uextend(ty, v)
    } else {
        b.ins().sextend(ty, v)
    }
}

/// One stretch of output positions along a pad axis.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Run {
    /// Positions `o0..o0+len` hold the constant.
    Fill { o0: i64, len: i64 },
    /// Positions `o0 + k` read input index `i0 + k·step`, `step ∈ {-1, 0, 1}`.
    Copy { o0: i64, len: i64, i0: i64, step: i64 },
}

/// Input index read at each output position of an axis (`None` for the constant), exactly as
/// the reference: reflect and wrap fold repeatedly like numpy.
fn pad_sources(dim: i64, begin: i64, end: i64, mode: PadMode) -> Result<Vec<Option<i64>>, String> {
    let len = dim + begin + end;
    if len < 0 {
        return Err("pads crop below zero".into());
    }
    (0..len)
        .map(|o| {
            let i = o - begin;
            Ok(if (0..dim).contains(&i) {
                Some(i)
            } else {
                match mode {
                    PadMode::Constant => None,
                    _ if dim == 0 => return Err(format!("cannot {mode:?}-pad an empty axis")),
                    PadMode::Edge => Some(i.clamp(0, dim - 1)),
                    PadMode::Wrap => Some(i.rem_euclid(dim)),
                    PadMode::Reflect if dim == 1 => Some(0),
                    PadMode::Reflect => {
                        let period = 2 * (dim - 1);
                        let m = i.rem_euclid(period);
                        Some(if m >= dim { period - m } else { m })
                    }
                }
            })
        })
        .collect()
}

/// Groups an axis's sources into maximal runs.
fn runs(sources: &[Option<i64>]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (o, &s) in sources.iter().enumerate() {
        let o = o as i64;
        let extended = match (out.last_mut(), s) {
            (Some(Run::Fill { len, .. }), None) => {
                *len += 1;
                true
            }
            (Some(Run::Copy { len, i0, step, .. }), Some(i)) if *len == 1 && (i - *i0).abs() <= 1 => {
                *step = i - *i0;
                *len += 1;
                true
            }
            (Some(Run::Copy { len, i0, step, .. }), Some(i)) if *len > 1 && i == *i0 + *len * *step => {
                *len += 1;
                true
            }
            _ => false,
        };
        if !extended {
            out.push(match s {
                None => Run::Fill { o0: o, len: 1 },
                Some(i) => Run::Copy { o0: o, len: 1, i0: i, step: 1 },
            });
        }
    }
    out
}

/// Code emitted for a pad grows with the product of the axes' run counts; beyond this the
/// kernel reads through an index table instead.
const MAX_PAD_RUN_PRODUCT: usize = 256;

/// ONNX `Pad`: constant, reflect, edge or wrap; negative pads crop.
pub(crate) fn emit_pad(
    jit: &mut Jit,
    cx: &EmitCx,
    pads: &[i64],
    mode: PadMode,
    value: f32,
) -> Result<Emitted, CompileError> {
    let (x, y) = (&cx.inputs[0], &cx.outputs[0]);
    let rank = x.rank();
    if pads.len() != 2 * rank || y.rank() != rank {
        return Err(cx.unsupported(format!("{} pads for rank {rank}", pads.len())));
    }
    let es = x.dtype.size_bytes();
    // Merge each unpadded axis into the axis outside it (for a constant pad, also padded
    // outer axes: their pads scale by the inner size).
    let mut axes: Vec<(i64, i64, i64)> = Vec::with_capacity(rank);
    for ax in (0..rank).rev() {
        let a = (x.shape[ax] as i64, pads[ax], pads[rank + ax]);
        if let Some(last) = axes.last_mut() {
            let (d, b, e) = *last;
            if b == 0 && e == 0 && (mode == PadMode::Constant || (a.1 == 0 && a.2 == 0)) {
                *last = (a.0 * d, a.1 * d, a.2 * d);
                continue;
            }
        }
        axes.push(a);
    }
    axes.reverse();
    // Unit axes without pads change nothing (and would leave one output position to cut).
    if axes.len() > 1 {
        axes.retain(|&a| a != (1, 0, 0));
        if axes.is_empty() {
            axes.push((1, 0, 0));
        }
    }
    let sources = axes
        .iter()
        .map(|&(d, b, e)| pad_sources(d, b, e, mode))
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| cx.unsupported(e))?;
    let out_dims: Vec<usize> = sources.iter().map(|s| s.len()).collect();
    if out_dims.iter().product::<usize>() != y.numel() {
        return Err(cx.unsupported("pads disagree with the output type"));
    }
    let in_dims: Vec<usize> = axes.iter().map(|a| a.0 as usize).collect();
    let in_s = contiguous_strides(&in_dims, es);
    let out_s = contiguous_strides(&out_dims, es);
    let axis_runs: Vec<Vec<Run>> = sources.iter().map(|s| runs(s)).collect();
    let product = axis_runs.iter().try_fold(1usize, |acc, r| acc.checked_mul(r.len().max(1)));
    let fill_bits: i64 = match x.dtype {
        DType::F32 => i64::from(value.to_bits()),
        DType::I64 => value as i64,
        DType::Bool => i64::from(value != 0.0),
        // Narrow constants are their bit patterns, zero-extended (what `iconst` of that width takes).
        DType::U8 => i64::from(value as u8),
        DType::I8 => i64::from(value as i8 as u8),
        DType::I32 => i64::from(value as i32 as u32),
    };
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let ity = int_type(es);
    if product.is_none_or(|p| p > MAX_PAD_RUN_PRODUCT) {
        return emit_pad_table(jit, cx, &sources, &in_s, es, fill_bits);
    }
    // Units over the output positions of the outermost axis (a pad of one axis stays whole).
    let per_unit = (out_dims.len() > 1 && y.numel() > 0).then(|| {
        let block = (out_dims[1..].iter().product::<usize>() as i64).max(1);
        (GRAIN / block).max(1)
    });
    let func = jit.kernel(cx.name, |kb| {
        if y.numel() == 0 {
            return;
        }
        let (px, py) = (kb.arg(x_arg), kb.arg(y_arg));
        let fillv = kb.b.ins().iconst(ity, fill_bits);
        let pad = PadNest { runs: &axis_runs, in_s: &in_s, out_s: &out_s, es, fill: fillv };
        match per_unit {
            Some(per_unit) => {
                let (lo, hi) = (kb.lo, kb.hi);
                let (start, end) = unit_span(&mut kb.b, lo, hi, out_dims[0] as i64, per_unit);
                pad.outermost(kb, px, py, start, end);
            }
            None => pad.axis(kb, 0, px, py),
        }
    })?;
    let units = per_unit.map_or(1, |per_unit| units_of(out_dims[0] as i64, per_unit));
    Ok(Emitted::parallel(func, vec![], units))
}

struct PadNest<'a> {
    runs: &'a [Vec<Run>],
    in_s: &'a [i64],
    out_s: &'a [i64],
    es: usize,
    fill: Value,
}

impl PadNest<'_> {
    /// The output positions `start..end` (`i64`) of the outermost axis (not the innermost):
    /// each run's part in that range, one position at a time.
    fn outermost(&self, kb: &mut Kb, src: Value, dst: Value, start: Value, end: Value) {
        let (is, os) = (self.in_s[0], self.out_s[0]);
        for &run in &self.runs[0] {
            let (o0, len) = match run {
                Run::Fill { o0, len } | Run::Copy { o0, len, .. } => (o0, len),
            };
            let lo = kb.b.ins().iconst(types::I64, o0);
            let hi = kb.b.ins().iconst(types::I64, o0 + len);
            let (a, b) = (kb.b.ins().smax(start, lo), kb.b.ins().smin(end, hi));
            kb_loop_dyn(kb, a, b, 1, |kb, o| {
                let d = offset(kb, dst, o, os);
                match run {
                    Run::Fill { .. } => fill(kb, d, self.es as i64, self.fill, self.es, os / self.es as i64),
                    Run::Copy { i0, step, .. } => {
                        // Input index `i0 + (o − o0)·step`.
                        let k = kb.b.ins().iadd_imm_s(o, -o0);
                        let s = kb.b.ins().iadd_imm_s(src, i0 * is);
                        let s = offset(kb, s, k, step * is);
                        self.axis(kb, 1, s, d);
                    }
                }
            });
        }
    }

    fn axis(&self, kb: &mut Kb, ax: usize, src: Value, dst: Value) {
        if ax == self.runs.len() {
            // Rank 0: one element.
            copy_bytes(kb, src, dst, self.es as i64);
            return;
        }
        let (is, os) = (self.in_s[ax], self.out_s[ax]);
        let innermost = ax + 1 == self.runs.len();
        for &run in &self.runs[ax] {
            match run {
                Run::Fill { o0, len } => {
                    let d = kb.b.ins().iadd_imm_s(dst, o0 * os);
                    fill(kb, d, self.es as i64, self.fill, self.es, len * os / self.es as i64);
                }
                Run::Copy { o0, len, i0, step } => {
                    let s = kb.b.ins().iadd_imm_s(src, i0 * is);
                    let d = kb.b.ins().iadd_imm_s(dst, o0 * os);
                    if innermost {
                        copy_elems(kb, self.es, s, step * is, d, os, len);
                    } else {
                        kb_loop(kb, 0, len, 1, |kb, k| {
                            let s = offset(kb, s, k, step * is);
                            let d = offset(kb, d, k, os);
                            self.axis(kb, ax + 1, s, d);
                        });
                    }
                }
            }
        }
    }
}

/// The general pad: `out[o] = table[o] == u32::MAX ? constant : in[table[o]]`.
fn emit_pad_table(
    jit: &mut Jit,
    cx: &EmitCx,
    sources: &[Vec<Option<i64>>],
    in_s: &[i64],
    es: usize,
    fill_bits: i64,
) -> Result<Emitted, CompileError> {
    let x = &cx.inputs[0];
    if x.numel() == 0 || x.numel() >= u32::MAX as usize {
        return Err(cx.unsupported(format!("index-table pad of {x}")));
    }
    let mut table: Vec<u32> = vec![0];
    for (ax, src) in sources.iter().enumerate() {
        let step = in_s[ax] / es as i64;
        let mut next = Vec::with_capacity(table.len() * src.len());
        for &t in &table {
            for s in src {
                next.push(match s {
                    Some(i) if t != u32::MAX => t + (i * step) as u32,
                    _ => u32::MAX,
                });
            }
        }
        table = next;
    }
    let n = table.len() as i64;
    let (x_arg, y_arg, t_arg) = (cx.in_arg(0), cx.out_arg(0), cx.aux_arg(0));
    let ity = int_type(es);
    let grain = balanced_grain(n, GRAIN, 64);
    let func = jit.kernel(cx.name, |kb| {
        let (px, py, pt) = (kb.arg(x_arg), kb.arg(y_arg), kb.arg(t_arg));
        let fillv = kb.b.ins().iconst(ity, fill_bits);
        let (lo, hi) = (kb.lo, kb.hi);
        let (start, end) = unit_span(&mut kb.b, lo, hi, n, grain);
        kb_loop_dyn(kb, start, end, 1, |kb, i| {
            let p = offset(kb, pt, i, 4);
            let t = kb.b.ins().load(types::I32, mem(), p, 0);
            let is_fill = kb.b.ins().icmp_imm_s(IntCC::Equal, t, -1);
            let t = kb.b.ins().uextend(types::I64, t);
            let zero = kb.b.ins().iconst(types::I64, 0);
            let t = kb.b.ins().select(is_fill, zero, t);
            let s = offset(kb, px, t, es as i64);
            let v = kb.b.ins().load(ity, mem(), s, 0);
            let r = kb.b.ins().select(is_fill, fillv, v);
            let d = offset(kb, py, i, es as i64);
            kb.b.ins().store(mem(), r, d, 0);
        });
    })?;
    Ok(Emitted::parallel(func, vec![Aux::U32(table)], units_of(n, grain)))
}

/// A copy over a [`Nest`] of `[src, dst]` byte strides, cut into work units; 4-byte elements
/// whose rows read with a stride while another axis reads contiguously go through 4×4
/// register transposes (one [`Plane`] per point of the other axes, the units' grain).
enum NestCopy {
    Rows {
        copy: Nest,
        es: usize,
        cut: Cut,
    },
    /// `planes` iterates the other axes and, innermost, the plane's rows (cut at multiples of
    /// 4 when a plane is cut into parts).
    Planes {
        planes: Nest,
        plane: Plane,
        cut: Cut,
    },
}

impl NestCopy {
    fn new(es: usize, nest: Nest) -> NestCopy {
        let (n, s) = nest.inner();
        let rank = nest.dims.len();
        let tile_axis = (0..rank.saturating_sub(1)).rev().find(|&a| nest.strides[0][a] == 4 && nest.dims[a] >= 4);
        match tile_axis {
            Some(a) if nest.numel() > 0 && es == 4 && s[1] == 4 && s[0] != 4 && n >= 4 => {
                let others = (0..rank - 1).filter(|&k| k != a).chain([a]);
                let planes = Nest {
                    dims: others.clone().map(|k| nest.dims[k]).collect(),
                    strides: nest.strides.iter().map(|st| others.clone().map(|k| st[k]).collect()).collect(),
                };
                let plane = Plane { rows: nest.dims[a], row_dst: nest.strides[1][a], cols: n, col_src: s[0] };
                let cut = planes.cut((GRAIN / n).max(1), 4);
                NestCopy::Planes { planes, plane, cut }
            }
            _ => {
                let nest = nest.outer_by_stride(0);
                NestCopy::Rows { cut: nest.cut(GRAIN, copy_align(es)), copy: nest, es }
            }
        }
    }

    fn units(&self) -> u64 {
        match self {
            NestCopy::Rows { copy, cut, .. } => copy.units(*cut),
            NestCopy::Planes { planes, cut, .. } => planes.units(*cut),
        }
    }

    /// Copies units `lo..hi` from `src` to `dst`.
    fn emit(&self, kb: &mut Kb, src: Value, dst: Value, lo: Value, hi: Value) {
        match self {
            NestCopy::Rows { copy, es, cut } => {
                let (n, s) = copy.inner();
                copy.for_units(kb, *cut, lo, hi, &[src, dst], &mut |kb, p, cols| {
                    copy_elems_cols(kb, *es, p[0], s[0], p[1], s[1], n, cols)
                });
            }
            NestCopy::Planes { planes, plane, cut } => {
                planes.for_units(kb, *cut, lo, hi, &[src, dst], &mut |kb, p, rows| plane.emit(kb, p[0], p[1], rows));
            }
        }
    }
}

/// A transposing plane of 4-byte elements: `dst[r·row_dst + c·4] = src[r·4 + c·col_src]` for
/// `r < rows`, `c < cols`.
struct Plane {
    rows: i64,
    row_dst: i64,
    cols: i64,
    col_src: i64,
}

impl Plane {
    /// The rows `rows` of the plane (cut at multiples of 4): blocks of 4 rows, then the
    /// remaining rows one at a time.
    fn emit(&self, kb: &mut Kb, src: Value, dst: Value, rows: Cols) {
        let (r4, c4) = (self.rows / 4 * 4, self.cols / 4 * 4);
        let block = |kb: &mut Kb, r: Value| {
            let s_r = offset(kb, src, r, 4);
            let d_r = offset(kb, dst, r, self.row_dst);
            kb_loop(kb, 0, c4, 4, |kb, c| {
                let s = offset(kb, s_r, c, self.col_src);
                let d = offset(kb, d_r, c, 4);
                // v[k] holds rows r..r+4 of column c+k; the transpose gives w[k], columns
                // c..c+4 of row r+k.
                let v: Vec<Value> = (0..4)
                    .map(|k| {
                        let (p, o) = address(&mut kb.b, s, k * self.col_src);
                        kb.b.ins().load(types::I8X16, mem(), p, o)
                    })
                    .collect();
                let w = transpose4x4(kb, [v[0], v[1], v[2], v[3]]);
                for (k, wk) in w.into_iter().enumerate() {
                    let k = k as i64;
                    let (p, o) = address(&mut kb.b, d, k * self.row_dst);
                    kb.b.ins().store(mem(), wk, p, o);
                }
            });
            if c4 < self.cols {
                for k in 0..4 {
                    let s = kb.b.ins().iadd_imm_s(s_r, k * 4 + c4 * self.col_src);
                    let d = kb.b.ins().iadd_imm_s(d_r, k * self.row_dst + c4 * 4);
                    copy_elems(kb, 4, s, self.col_src, d, 4, self.cols - c4);
                }
            }
        };
        let rest = |kb: &mut Kb| {
            kb_loop(kb, r4, self.rows, 1, |kb, r| {
                let s = offset(kb, src, r, 4);
                let d = offset(kb, dst, r, self.row_dst);
                copy_elems(kb, 4, s, self.col_src, d, 4, self.cols);
            })
        };
        rows.run(kb, r4, 4, block, rest);
    }
}

/// Transposes a 4×4 block of 32-bit lanes held in four 16-byte vectors (unpack low/high of
/// 32-bit then of 64-bit lanes).
fn transpose4x4(kb: &mut Kb, v: [Value; 4]) -> [Value; 4] {
    let mut shuffle = |a: Value, b: Value, lanes: [u8; 4]| {
        let bytes: Vec<u8> = lanes.iter().flat_map(|&l| (0..4).map(move |k| l * 4 + k)).collect();
        let mask = kb.b.func.dfg.immediates.push(ConstantData::from(bytes));
        kb.b.ins().shuffle(a, b, mask)
    };
    let t0 = shuffle(v[0], v[1], [0, 4, 1, 5]);
    let t1 = shuffle(v[0], v[1], [2, 6, 3, 7]);
    let t2 = shuffle(v[2], v[3], [0, 4, 1, 5]);
    let t3 = shuffle(v[2], v[3], [2, 6, 3, 7]);
    [
        shuffle(t0, t2, [0, 1, 4, 5]),
        shuffle(t0, t2, [2, 3, 6, 7]),
        shuffle(t1, t3, [0, 1, 4, 5]),
        shuffle(t1, t3, [2, 3, 6, 7]),
    ]
}
