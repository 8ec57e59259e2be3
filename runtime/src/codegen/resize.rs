//! Resize: per-axis tap tables built at load, applied as a product of taps in one pass.
//!
//! The axes from the first to the last resized one each get a table of taps per output
//! coordinate (byte offset of the input sample, weight; an axis left alone has the identity
//! tap). Leading untouched axes are an outer loop over blocks; trailing untouched axes are a
//! contiguous inner run, 4 lanes at a time. An output element is the separable sum
//! `Σ_k1 w1·(Σ_k2 w2·(… x[off1 + off2 + …]))`; an axis whose every tap is a single sample of
//! weight 1 (all of nearest mode) is a pure gather, so nearest resizing copies input bits.
//!
//! Work units take output coordinates of the first resized axis (in every outer block).

use crate::reference::{resize_source_coord, resize_taps};
use cnnc_ir::{CoordTransform, ResizeAttrs};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::builder::{for_range, mem, unit_span, units_of};
use super::gemm::kit::for_dyn;
use super::index_map::{GRAIN, StridedCopy};
use super::{Aux, CompileError, EmitCx, Emitted, Jit};

/// Taps of one middle axis: `k` samples per output coordinate.
struct AxisTaps {
    len_out: usize,
    k: usize,
    /// `[o·k + j]`: byte offset of the sample (index times the axis's input stride).
    offsets: Vec<i64>,
    weights: Vec<f32>,
    /// Output coordinates outside the crop box (tf-crop-and-resize with extrapolation).
    outside: Option<Vec<i64>>,
    /// Every tap is one sample of weight 1: no arithmetic.
    gather: bool,
}

/// ONNX `Resize`, with the reference's rules: a resize to the input's own shape is a copy, and
/// axes whose length and scale are unchanged are left alone.
pub(crate) fn emit_resize(jit: &mut Jit, cx: &EmitCx, a: &ResizeAttrs) -> Result<Emitted, CompileError> {
    let (xs, ys) = (&cx.inputs[0].shape, &cx.outputs[0].shape);
    let rank = xs.len();
    let n_out: usize = ys.iter().product();
    let resized: Vec<bool> = (0..rank).map(|i| !(xs[i] == ys[i] && a.scales[i] == 1.0)).collect();
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    if xs == ys || n_out == 0 || !resized.contains(&true) {
        let whole = StridedCopy::new(4, &[n_out], vec![4], vec![4]);
        let func = jit.kernel(cx.name, |kb| {
            let x = kb.arg(x_arg);
            let y = kb.arg(y_arg);
            let (lo, hi) = (kb.lo, kb.hi);
            whole.emit(kb, x, y, lo, hi);
        })?;
        return Ok(Emitted::parallel(func, vec![], whole.units()));
    }
    if let Some(axis) = (0..rank).find(|&i| resized[i] && xs[i] == 0) {
        return Err(cx.unsupported(format!("resizing the empty axis {axis} to {}", ys[axis])));
    }
    let first = resized.iter().position(|&r| r).expect("some axis is resized");
    let last = rank - 1 - resized.iter().rev().position(|&r| r).expect("some axis is resized");
    let outer: usize = xs[..first].iter().product();
    let inner: usize = xs[last + 1..].iter().product();
    let in_stride = |i: usize| xs[i + 1..].iter().product::<usize>() as i64 * 4;
    let extrapolation = match &a.coord {
        CoordTransform::TfCropAndResize { extrapolation, .. } => Some(*extrapolation),
        _ => None,
    };
    let axes: Vec<AxisTaps> = (first..=last)
        .map(|axis| {
            let stride = in_stride(axis);
            if !resized[axis] {
                let offsets = (0..ys[axis] as i64).map(|o| o * stride).collect();
                return AxisTaps {
                    len_out: ys[axis],
                    k: 1,
                    offsets,
                    weights: vec![1.0; ys[axis]],
                    outside: None,
                    gather: true,
                };
            }
            axis_taps(a, axis, xs[axis], ys[axis], stride, extrapolation.is_some())
        })
        .collect();
    let ext = extrapolation.unwrap_or(0.0);
    let out_strides: Vec<i64> = (first..=last).map(|i| ys[i + 1..].iter().product::<usize>() as i64 * 4).collect();
    let mut aux = Vec::new();
    // Aux layout per middle axis: offsets, weights (unless a gather), crop flags (if any),
    // repeat flags (if any).
    let mut slots = Vec::new();
    for (j, t) in axes.iter().enumerate() {
        let off = aux.len();
        aux.push(Aux::I64(t.offsets.clone()));
        let w = (!t.gather).then(|| {
            aux.push(Aux::F32(t.weights.clone()));
            aux.len() - 1
        });
        let f = t.outside.as_ref().map(|flags| {
            aux.push(Aux::I64(flags.clone()));
            aux.len() - 1
        });
        let d = repeats(t, out_strides[j]).map(|flags| {
            aux.push(Aux::I64(flags));
            aux.len() - 1
        });
        slots.push((off, w, f, d));
    }
    let aux_base = cx.aux_arg(0);
    let shape = Shape { outer: outer as i64, inner: inner as i64, in_block: in_stride(first) * xs[first] as i64 };
    // Units over the output coordinates of the first resized axis in every outer block.
    let len0 = ys[first] as i64;
    let rows = shape.outer * len0;
    let per_unit = (GRAIN / (out_strides[0] / 4).max(1)).max(1);
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let tables: Vec<Tables> = slots
            .iter()
            .map(|&(o, w, f, d)| Tables {
                offsets: kb.arg(aux_base + o),
                weights: w.map(|w| kb.arg(aux_base + w)),
                outside: f.map(|f| kb.arg(aux_base + f)),
                repeats: d.map(|d| kb.arg(aux_base + d)),
            })
            .collect();
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let out_block = out_strides[0] * len0;
        let (start, end) = unit_span(b, lo, hi, rows, per_unit);
        for_dyn(b, start, end, 1, |b, t| {
            let p = b.ins().udiv_imm_u(t, len0);
            let pl = b.ins().imul_imm_s(p, len0);
            let o = b.ins().isub(t, pl);
            let xo = b.ins().imul_imm_s(p, shape.in_block);
            let yo = b.ins().imul_imm_s(p, out_block);
            let (xp, yp) = (b.ins().iadd(x, xo), b.ins().iadd(y, yo));
            // The first coordinate of a unit never copies its predecessor, which another
            // unit computes; recomputing it gives the same bits.
            let inside = b.ins().icmp(IntCC::SignedGreaterThan, t, start);
            let e = Emit { axes: &axes, tables: &tables, out_strides: &out_strides, inner: shape.inner, ext };
            e.coord(b, 0, o, xp, yp, &mut Vec::new(), None, Some(inside));
        });
    })?;
    Ok(Emitted::parallel(func, aux, units_of(rows, per_unit)))
}

struct Shape {
    outer: i64,
    inner: i64,
    /// Bytes of one outer block of the input.
    in_block: i64,
}

/// Buffer pointers of one middle axis's tables.
struct Tables {
    offsets: Value,
    weights: Option<Value>,
    outside: Option<Value>,
    repeats: Option<Value>,
}

/// The taps of one output coordinate of one axis, loaded in its loop.
struct Loaded {
    offsets: Vec<Value>,
    weights: Vec<Value>,
}

struct Emit<'a> {
    axes: &'a [AxisTaps],
    tables: &'a [Tables],
    out_strides: &'a [i64],
    inner: i64,
    ext: f32,
}

impl Emit<'_> {
    /// Loop over the output coordinates of middle axis `j`, or the inner run past the last.
    fn level(
        &self,
        b: &mut FunctionBuilder,
        j: usize,
        xp: Value,
        yp: Value,
        taps: &mut Vec<Loaded>,
        out: Option<Value>,
    ) {
        if j == self.axes.len() {
            self.inner_run(b, xp, yp, taps, out);
            return;
        }
        for_range(b, 0, self.axes[j].len_out as i64, 1, |b, o| self.coord(b, j, o, xp, yp, taps, out, None));
    }

    /// Output coordinate `o` of middle axis `j` and everything below it. `may_repeat` (an `i8`
    /// truth value), when given, restricts copying the previous coordinate's block.
    #[allow(clippy::too_many_arguments)]
    fn coord(
        &self,
        b: &mut FunctionBuilder,
        j: usize,
        o: Value,
        xp: Value,
        yp: Value,
        taps: &mut Vec<Loaded>,
        out: Option<Value>,
        may_repeat: Option<Value>,
    ) {
        let t = &self.axes[j];
        let tb = &self.tables[j];
        let k = t.k as i64;
        let oo = b.ins().imul_imm_s(o, k * 8);
        let at = b.ins().iadd(tb.offsets, oo);
        let offsets = (0..k).map(|i| b.ins().load(types::I64, mem(), at, (i * 8) as i32)).collect();
        let weights = match tb.weights {
            Some(w) => {
                let oo = b.ins().imul_imm_s(o, k * 4);
                let at = b.ins().iadd(w, oo);
                (0..k).map(|i| b.ins().load(types::F32, mem(), at, (i * 4) as i32)).collect()
            }
            None => Vec::new(),
        };
        let out = match tb.outside {
            Some(f) => {
                let oo = b.ins().ishl_imm_u(o, 3);
                let at = b.ins().iadd(f, oo);
                let flag = b.ins().load(types::I64, mem(), at, 0);
                Some(match out {
                    Some(prev) => b.ins().bor(prev, flag),
                    None => flag,
                })
            }
            None => out,
        };
        let yo = b.ins().imul_imm_s(o, self.out_strides[j]);
        let yj = b.ins().iadd(yp, yo);
        taps.push(Loaded { offsets, weights });
        match tb.repeats {
            Some(d) => {
                // A block that samples the same input as the previous one is a copy of it.
                let oo = b.ins().ishl_imm_u(o, 3);
                let at = b.ins().iadd(d, oo);
                let flag = b.ins().load(types::I64, mem(), at, 0);
                let flag = match may_repeat {
                    Some(m) => {
                        let m = b.ins().uextend(types::I64, m);
                        b.ins().band(flag, m)
                    }
                    None => flag,
                };
                let (dup, fresh, join) = (b.create_block(), b.create_block(), b.create_block());
                b.ins().brif(flag, dup, &[], fresh, &[]);
                b.switch_to_block(dup);
                let prev = b.ins().iadd_imm_s(yj, -self.out_strides[j]);
                copy(b, prev, yj, self.out_strides[j] / 4);
                b.ins().jump(join, &[]);
                b.switch_to_block(fresh);
                self.level(b, j + 1, xp, yj, taps, out);
                b.ins().jump(join, &[]);
                b.switch_to_block(join);
            }
            None => self.level(b, j + 1, xp, yj, taps, out),
        }
        taps.pop();
    }

    /// The contiguous run of `inner` outputs at `yp`, 4 lanes at a time then one at a time.
    fn inner_run(&self, b: &mut FunctionBuilder, xp: Value, yp: Value, taps: &[Loaded], out: Option<Value>) {
        let main = self.inner - self.inner % 4;
        for (start, end, step, ty) in [(0, main, 4, types::F32X4), (main, self.inner, 1, types::F32)] {
            for_range(b, start, end, step, |b, i| {
                let off = b.ins().ishl_imm_u(i, 2);
                let base = b.ins().iadd(xp, off);
                let mut v = self.sum(b, 0, base, taps, ty);
                if let Some(flag) = out {
                    let e = b.ins().f32const(self.ext);
                    let e = if ty == types::F32 { e } else { b.ins().splat(ty, e) };
                    let c = b.ins().icmp_imm_u(IntCC::NotEqual, flag, 0);
                    v = b.ins().select(c, e, v);
                }
                let py = b.ins().iadd(yp, off);
                b.ins().store(mem(), v, py, 0);
            });
        }
    }

    /// `Σ_k w_j[k] · sum(j + 1, ptr + off_j[k])`, or the sample at `ptr` past the last axis.
    fn sum(&self, b: &mut FunctionBuilder, j: usize, ptr: Value, taps: &[Loaded], ty: Type) -> Value {
        if j == taps.len() {
            return b.ins().load(ty, mem(), ptr, 0);
        }
        let t = &taps[j];
        let mut acc: Option<Value> = None;
        for (k, &off) in t.offsets.iter().enumerate() {
            let p = b.ins().iadd(ptr, off);
            let v = self.sum(b, j + 1, p, taps, ty);
            if self.axes[j].gather {
                return v;
            }
            let w = if ty == types::F32 { t.weights[k] } else { b.ins().splat(ty, t.weights[k]) };
            acc = Some(match acc {
                None => b.ins().fmul(w, v),
                Some(a) => b.ins().fma(w, v, a),
            });
        }
        acc.expect("every axis has at least one tap")
    }
}

/// Per output coordinate of a gather axis, 1 where it samples the same input as the previous
/// one (its output block of `block` bytes is then a copy); `None` when nothing repeats or the
/// blocks are too small to bother.
fn repeats(t: &AxisTaps, block: i64) -> Option<Vec<i64>> {
    if !t.gather || t.outside.is_some() || block < 32 {
        return None;
    }
    let flags: Vec<i64> = (0..t.len_out).map(|o| i64::from(o > 0 && t.offsets[o] == t.offsets[o - 1])).collect();
    flags.contains(&1).then_some(flags)
}

/// `y[i] = x[i]` for `n` f32 elements.
fn copy(b: &mut FunctionBuilder, x: Value, y: Value, n: i64) {
    let main = n - n % 4;
    for (start, end, step, ty) in [(0, main, 4, types::F32X4), (main, n, 1, types::F32)] {
        for_range(b, start, end, step, |b, i| {
            let off = b.ins().ishl_imm_u(i, 2);
            let px = b.ins().iadd(x, off);
            let v = b.ins().load(ty, mem(), px, 0);
            let py = b.ins().iadd(y, off);
            b.ins().store(mem(), v, py, 0);
        });
    }
}

/// The taps of a resized axis, padded to the axis's largest tap count with weight-0 repeats
/// of the first sample (linear mode has one tap where the coordinate is an integer).
fn axis_taps(a: &ResizeAttrs, axis: usize, len_in: usize, len_out: usize, stride: i64, crop: bool) -> AxisTaps {
    let scale = a.scales[axis];
    let mut all = Vec::with_capacity(len_out);
    let mut outside = vec![0i64; len_out];
    for (o, flag) in outside.iter_mut().enumerate() {
        let src = resize_source_coord(&a.coord, axis, o, scale, len_in, len_out);
        if crop && (src < 0.0 || src > (len_in - 1) as f32) {
            *flag = 1;
            all.push(vec![(0, 0.0)]);
        } else {
            all.push(resize_taps(a.mode, a.nearest, src, len_in));
        }
    }
    let k = all.iter().map(Vec::len).max().unwrap_or(1);
    let gather = all.iter().all(|t| t.len() == 1 && t[0].1 == 1.0);
    let (mut offsets, mut weights) = (Vec::with_capacity(len_out * k), Vec::with_capacity(len_out * k));
    for t in &all {
        for j in 0..k {
            let (i, w) = t.get(j).copied().unwrap_or((t[0].0, 0.0));
            offsets.push(i as i64 * stride);
            weights.push(w as f32);
        }
    }
    let outside = outside.contains(&1).then_some(outside);
    AxisTaps { len_out, k, offsets, weights, outside, gather }
}
