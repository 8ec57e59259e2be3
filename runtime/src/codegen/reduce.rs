//! Softmax, reductions and arg-max/arg-min.
//!
//! Extents and strides are baked in. Axes are merged into alternating runs of kept and reduced
//! axes; when the last run is kept, each output row reduces 4 adjacent outputs per vector over
//! the reduced runs, otherwise each output reduces its contiguous last run with 8 lanes of
//! partial results. Exponentials are the kernels' one inline `eˣ` (`codegen::expf`).
//!
//! Work units take whole groups: rows of outputs, or parts of a row of adjacent outputs cut at
//! multiples of 4 (the lanes); a reduction is never split.

use cnnc_ir::{DType, ReduceKind};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::builder::{for_range, mem, units_of};
use super::expf::exp_nonpos_any;
use super::index_map::{Cut, GRAIN, Nest, kb_loop, loop_units, outer_cut};
use super::math::Math1;
use super::{CompileError, EmitCx, Emitted, Jit, Kb};

/// ONNX `Softmax` over `axis`, or with `flatten` over every axis from `axis` on:
/// `exp(x − max) · (1 / Σ exp(x − max))`, the exponentials stored in the output between passes.
pub(crate) fn emit_softmax(jit: &mut Jit, cx: &EmitCx, axis: usize, flatten: bool) -> Result<Emitted, CompileError> {
    let xs = &cx.inputs[0].shape;
    let outer = xs[..axis].iter().product::<usize>() as i64;
    let (len, inner) = if flatten {
        (xs[axis..].iter().product::<usize>() as i64, 1)
    } else {
        (xs[axis] as i64, xs[axis + 1..].iter().product::<usize>() as i64)
    };
    // Units over the outer rows and, within a row, over its columns (the `inner` positions,
    // each an independent softmax), cut at multiples of 4.
    let rows = Nest { dims: vec![outer, inner], strides: vec![vec![len * inner * 4, 4]; 2] };
    let cut = rows.cut((GRAIN / len.max(1)).max(1), 4);
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        if outer * len * inner == 0 {
            return;
        }
        let bases = [kb.arg(x_arg), kb.arg(y_arg)];
        let (lo, hi) = (kb.lo, kb.hi);
        rows.for_units(kb, cut, lo, hi, &bases, &mut |kb, p, cols| {
            let (xo, yo) = (p[0], p[1]);
            if inner == 1 {
                softmax_row(&mut kb.b, xo, yo, len);
                return;
            }
            let lanes = |kb: &mut Kb, i: Value, ty: Type| {
                let b = &mut kb.b;
                let i4 = b.ins().ishl_imm_u(i, 2);
                let (xi, yi) = (b.ins().iadd(xo, i4), b.ins().iadd(yo, i4));
                softmax_lanes(b, xi, yi, len, inner * 4, ty);
            };
            let main = inner - inner % 4;
            cols.run(
                kb,
                main,
                4,
                |kb, i| lanes(kb, i, types::F32X4),
                |kb| kb_loop(kb, main, inner, 1, |kb, i| lanes(kb, i, types::F32)),
            );
        });
    })?;
    Ok(Emitted::parallel(func, vec![], if outer * len * inner == 0 { 1 } else { rows.units(cut) }))
}

/// Softmax of the `len` values at `x + j·stride` (one per lane of `ty`), into `y` likewise.
fn softmax_lanes(b: &mut FunctionBuilder, x: Value, y: Value, len: i64, stride: i64, ty: Type) {
    let max = Acc::MaxSkipNan;
    let m = b.declare_var(ty);
    let init = max.init(b, ty);
    b.def_var(m, init);
    for_range(b, 0, len, 1, |b, j| {
        let o = b.ins().imul_imm_s(j, stride);
        let p = b.ins().iadd(x, o);
        let v = b.ins().load(ty, mem(), p, 0);
        let a = b.use_var(m);
        let a = max.step(b, a, v);
        b.def_var(m, a);
    });
    let mv = b.use_var(m);
    let s = b.declare_var(ty);
    let zero = Acc::Add(Term::Id).init(b, ty);
    b.def_var(s, zero);
    for_range(b, 0, len, 1, |b, j| {
        let o = b.ins().imul_imm_s(j, stride);
        let (px, py) = (b.ins().iadd(x, o), b.ins().iadd(y, o));
        let v = b.ins().load(ty, mem(), px, 0);
        let d = b.ins().fsub(v, mv);
        let e = exp_nonpos_any(b, d);
        b.ins().store(mem(), e, py, 0);
        let a = b.use_var(s);
        let a = b.ins().fadd(a, e);
        b.def_var(s, a);
    });
    let sv = b.use_var(s);
    let one = splat_f32(b, 1.0, ty);
    let r = b.ins().fdiv(one, sv);
    for_range(b, 0, len, 1, |b, j| {
        let o = b.ins().imul_imm_s(j, stride);
        let py = b.ins().iadd(y, o);
        let v = b.ins().load(ty, mem(), py, 0);
        let v = b.ins().fmul(v, r);
        b.ins().store(mem(), v, py, 0);
    });
}

/// Softmax of a contiguous row of `len` values, 4 lanes at a time.
fn softmax_row(b: &mut FunctionBuilder, x: Value, y: Value, len: i64) {
    let m = contiguous(b, Acc::MaxSkipNan, x, len, None);
    let main = len - len % 4;
    let s = b.declare_var(types::F32X4);
    let ts = b.declare_var(types::F32);
    let zero = b.ins().f32const(0.0);
    let zv = b.ins().splat(types::F32X4, zero);
    b.def_var(s, zv);
    b.def_var(ts, zero);
    for (start, end, step, ty, var) in [(0, main, 4, types::F32X4, s), (main, len, 1, types::F32, ts)] {
        let mv = if ty == types::F32 { m } else { b.ins().splat(ty, m) };
        for_range(b, start, end, step, |b, j| {
            let o = b.ins().ishl_imm_u(j, 2);
            let (px, py) = (b.ins().iadd(x, o), b.ins().iadd(y, o));
            let v = b.ins().load(ty, mem(), px, 0);
            let d = b.ins().fsub(v, mv);
            let e = exp_nonpos_any(b, d);
            b.ins().store(mem(), e, py, 0);
            let a = b.use_var(var);
            let a = b.ins().fadd(a, e);
            b.def_var(var, a);
        });
    }
    let sv = b.use_var(s);
    let hs = horizontal(b, Acc::Add(Term::Id), sv);
    let tail = b.use_var(ts);
    let total = b.ins().fadd(hs, tail);
    let one = b.ins().f32const(1.0);
    let r = b.ins().fdiv(one, total);
    for (start, end, step, ty) in [(0, main, 4, types::F32X4), (main, len, 1, types::F32)] {
        let rv = if ty == types::F32 { r } else { b.ins().splat(ty, r) };
        for_range(b, start, end, step, |b, j| {
            let o = b.ins().ishl_imm_u(j, 2);
            let py = b.ins().iadd(y, o);
            let v = b.ins().load(ty, mem(), py, 0);
            let v = b.ins().fmul(v, rv);
            b.ins().store(mem(), v, py, 0);
        });
    }
}

/// What an accumulator does with each element.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Acc {
    Add(Term),
    /// Largest value; a NaN element makes (and keeps) the result NaN.
    Max,
    /// Smallest value; a NaN element makes (and keeps) the result NaN.
    Min,
    /// Largest value, NaN elements skipped (the max of log-sum-exp and softmax).
    MaxSkipNan,
    Mul,
}

/// The summand of an element `x`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Term {
    Id,
    Abs,
    Square,
}

impl Acc {
    fn init(self, b: &mut FunctionBuilder, ty: Type) -> Value {
        if ty == types::I64 {
            let v = match self {
                Acc::Add(_) => 0,
                Acc::Max | Acc::MaxSkipNan => i64::MIN,
                Acc::Min => i64::MAX,
                Acc::Mul => 1,
            };
            return b.ins().iconst(types::I64, v);
        }
        let v = match self {
            Acc::Add(_) => 0.0,
            Acc::Max | Acc::MaxSkipNan => f32::NEG_INFINITY,
            Acc::Min => f32::INFINITY,
            Acc::Mul => 1.0,
        };
        splat_f32(b, v, ty)
    }

    /// `acc ⊕ term(x)`.
    fn step(self, b: &mut FunctionBuilder, acc: Value, x: Value) -> Value {
        let ty = b.func.dfg.value_type(x);
        if ty == types::I64 {
            return match self {
                Acc::Add(Term::Id) => b.ins().iadd(acc, x),
                Acc::Add(Term::Abs) => {
                    let a = b.ins().iabs(x);
                    b.ins().iadd(acc, a)
                }
                Acc::Add(Term::Square) => {
                    let s = b.ins().imul(x, x);
                    b.ins().iadd(acc, s)
                }
                Acc::Max | Acc::MaxSkipNan => b.ins().smax(acc, x),
                Acc::Min => b.ins().smin(acc, x),
                Acc::Mul => b.ins().imul(acc, x),
            };
        }
        match self {
            Acc::Add(Term::Id) => b.ins().fadd(acc, x),
            Acc::Add(Term::Abs) => {
                let a = b.ins().fabs(x);
                b.ins().fadd(acc, a)
            }
            Acc::Add(Term::Square) => b.ins().fma(x, x, acc),
            Acc::Mul => b.ins().fmul(acc, x),
            Acc::MaxSkipNan => {
                // `acc < x ? x : acc`: one `maxps` on 4 lanes.
                let m = b.ins().fcmp(FloatCC::LessThan, acc, x);
                select_mask(b, m, x, acc)
            }
            Acc::Max | Acc::Min => {
                let cc = if self == Acc::Max { FloatCC::GreaterThan } else { FloatCC::LessThan };
                let better = b.ins().fcmp(cc, x, acc);
                let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
                let m = b.ins().bor(better, nan);
                select_mask(b, m, x, acc)
            }
        }
    }

    /// Combines two partial results of the same group.
    fn merge(self, b: &mut FunctionBuilder, a: Value, c: Value) -> Value {
        match self {
            Acc::Add(_) => {
                if b.func.dfg.value_type(a) == types::I64 {
                    b.ins().iadd(a, c)
                } else {
                    b.ins().fadd(a, c)
                }
            }
            _ => self.step(b, a, c),
        }
    }
}

/// `m ? x : y` for a scalar or per-lane compare result.
fn select_mask(b: &mut FunctionBuilder, m: Value, x: Value, y: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    if ty.is_vector() {
        let m = b.ins().bitcast(ty, MemFlagsData::new(), m);
        b.ins().bitselect(m, x, y)
    } else {
        b.ins().select(m, x, y)
    }
}

fn splat_f32(b: &mut FunctionBuilder, v: f32, ty: Type) -> Value {
    let s = b.ins().f32const(v);
    if ty == types::F32 { s } else { b.ins().splat(ty, s) }
}

/// The four lanes of `v` merged into one scalar.
fn horizontal(b: &mut FunctionBuilder, acc: Acc, v: Value) -> Value {
    let mut s = b.ins().extractlane(v, 0);
    for lane in 1..4 {
        let l = b.ins().extractlane(v, lane);
        s = acc.merge(b, s, l);
    }
    s
}

/// `acc` over the `len` contiguous elements at `x` (f32: two 4-lane partials, then a scalar
/// tail; i64: scalar). `shift` makes the summand `exp(x − shift)` (log-sum-exp).
fn contiguous(b: &mut FunctionBuilder, acc: Acc, x: Value, len: i64, shift: Option<Value>) -> Value {
    let (vars, tail) = contiguous_begin(b, acc, types::F32);
    contiguous_run(b, acc, x, len, shift, &vars, tail, types::F32);
    contiguous_end(b, acc, &vars, tail)
}

/// Accumulator variables of [`contiguous_run`]: two 4-lane partials (f32 only) and a scalar.
fn contiguous_begin(
    b: &mut FunctionBuilder,
    acc: Acc,
    ty: Type,
) -> (Vec<cranelift_frontend::Variable>, cranelift_frontend::Variable) {
    let vars = if ty == types::F32 {
        (0..2)
            .map(|_| {
                let v = b.declare_var(types::F32X4);
                let init = acc.init(b, types::F32X4);
                b.def_var(v, init);
                v
            })
            .collect()
    } else {
        Vec::new()
    };
    let tail = b.declare_var(ty);
    let init = acc.init(b, ty);
    b.def_var(tail, init);
    (vars, tail)
}

#[allow(clippy::too_many_arguments)]
fn contiguous_run(
    b: &mut FunctionBuilder,
    acc: Acc,
    x: Value,
    len: i64,
    shift: Option<Value>,
    vars: &[cranelift_frontend::Variable],
    tail: cranelift_frontend::Variable,
    ty: Type,
) {
    let size = ty.bytes() as i64;
    let main = if vars.is_empty() { 0 } else { len - len % 8 };
    let shift_v = shift.map(|s| b.ins().splat(types::F32X4, s));
    for_range(b, 0, main, 8, |b, j| {
        let o = b.ins().ishl_imm_u(j, 2);
        let p = b.ins().iadd(x, o);
        for (k, &var) in vars.iter().enumerate() {
            let v = b.ins().load(types::F32X4, mem(), p, 16 * k as i32);
            let v = term_shift(b, v, shift_v);
            let a = b.use_var(var);
            let a = acc.step(b, a, v);
            b.def_var(var, a);
        }
    });
    for_range(b, main, len, 1, |b, j| {
        let o = b.ins().imul_imm_s(j, size);
        let p = b.ins().iadd(x, o);
        let v = b.ins().load(ty, mem(), p, 0);
        let v = term_shift(b, v, shift);
        let a = b.use_var(tail);
        let a = acc.step(b, a, v);
        b.def_var(tail, a);
    });
}

fn contiguous_end(
    b: &mut FunctionBuilder,
    acc: Acc,
    vars: &[cranelift_frontend::Variable],
    tail: cranelift_frontend::Variable,
) -> Value {
    let t = b.use_var(tail);
    if vars.is_empty() {
        return t;
    }
    let (v0, v1) = (b.use_var(vars[0]), b.use_var(vars[1]));
    let v = acc.merge(b, v0, v1);
    let h = horizontal(b, acc, v);
    acc.merge(b, h, t)
}

/// `exp(x − shift)` when shifting (`shift` is the maximum, so the argument is never positive),
/// else `x`.
fn term_shift(b: &mut FunctionBuilder, x: Value, shift: Option<Value>) -> Value {
    match shift {
        Some(s) => {
            let d = b.ins().fsub(x, s);
            exp_nonpos_any(b, d)
        }
        None => x,
    }
}

/// A run of merged axes: extent and byte strides in the input and the output.
#[derive(Clone, Copy)]
struct Run {
    len: i64,
    in_stride: i64,
    out_stride: i64,
}

/// ONNX `Reduce*` over `axes` (empty: every element is its own group). `keepdims` only
/// changes the output shape. f32 sums accumulate in f32 (see the module doc); i64 is exact
/// with wrapping, the mean truncating like onnxruntime's integer kernel.
pub(crate) fn emit_reduce(
    jit: &mut Jit,
    cx: &EmitCx,
    kind: ReduceKind,
    axes: &[usize],
    _keepdims: bool,
) -> Result<Emitted, CompileError> {
    let xs = &cx.inputs[0].shape;
    let dtype = cx.inputs[0].dtype;
    let int = match dtype {
        DType::F32 => false,
        DType::I64 if kind.accepts_i64() => true,
        _ => return Err(cx.unsupported(format!("{} on {dtype}", kind.name()))),
    };
    let esize = if int { 8 } else { 4 };
    let n_out: i64 = (0..xs.len()).filter(|i| !axes.contains(i)).map(|i| xs[i] as i64).product();
    let count: i64 = axes.iter().map(|&i| xs[i] as i64).product();
    // Merge adjacent axes of the same kind (unit axes dropped); keep strides in bytes.
    let mut runs: Vec<(bool, Run)> = Vec::new();
    let mut in_stride = esize;
    let mut out_stride = esize;
    for i in (0..xs.len()).rev() {
        let red = axes.contains(&i);
        let len = xs[i] as i64;
        if len != 1 {
            match runs.last_mut() {
                Some((r, run)) if *r == red => run.len *= len,
                _ => runs.push((red, Run { len, in_stride, out_stride: if red { 0 } else { out_stride } })),
            }
        }
        in_stride *= len;
        if !red {
            out_stride *= len;
        }
    }
    runs.reverse();
    let acc = match kind {
        ReduceKind::Mean | ReduceKind::Sum | ReduceKind::LogSum => Acc::Add(Term::Id),
        ReduceKind::L1 => Acc::Add(Term::Abs),
        ReduceKind::L2 | ReduceKind::SumSquare => Acc::Add(Term::Square),
        ReduceKind::Max => Acc::Max,
        ReduceKind::Min => Acc::Min,
        ReduceKind::Prod => Acc::Mul,
        ReduceKind::LogSumExp => Acc::MaxSkipNan,
    };
    let plan = Reduction { kind, acc, count, int };
    let reduced: Vec<Run> = runs.iter().filter(|(r, _)| *r).map(|&(_, run)| run).collect();
    // Units over the kept axes (each output reduces whole groups): with a kept contiguous
    // last run, its lanes are the rows' columns, cut at multiples of 4.
    let kept_last = matches!(runs.last(), Some((false, _)));
    let kept: Vec<Run> = runs.iter().filter(|(r, _)| !*r).map(|&(_, run)| run).collect();
    let outputs = Nest {
        dims: kept.iter().map(|r| r.len).collect(),
        strides: vec![kept.iter().map(|r| r.in_stride).collect(), kept.iter().map(|r| r.out_stride).collect()],
    };
    let cut = if kept_last {
        outputs.cut((GRAIN / count.max(1)).max(1), 4)
    } else {
        outer_cut(&outputs.dims, count.max(1), GRAIN)
    };
    let units = match cut {
        _ if n_out == 0 => 1,
        Cut::Outer { axes, per_unit } if !kept_last => units_of(outputs.dims[..axes].iter().product(), per_unit),
        _ => outputs.units(cut),
    };
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        if n_out == 0 {
            return;
        }
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let (lo, hi) = (kb.lo, kb.hi);
        if kept_last {
            // Kept contiguous last run: lanes are adjacent outputs.
            let len = *outputs.dims.last().expect("a kept run");
            outputs.for_units(kb, cut, lo, hi, &[x, y], &mut |kb, p, cols| {
                let (xo, yo) = (p[0], p[1]);
                let lanes = |kb: &mut Kb, i: Value, ty: Type| {
                    let off = kb.b.ins().imul_imm_s(i, esize);
                    let (xi, yi) = (kb.b.ins().iadd(xo, off), kb.b.ins().iadd(yo, off));
                    let v = plan.strided(kb, xi, &reduced, ty);
                    kb.b.ins().store(mem(), v, yi, 0);
                };
                if int {
                    cols.run(kb, len, 1, |kb, i| lanes(kb, i, types::I64), |_| {});
                } else {
                    let main = len - len % 4;
                    cols.run(
                        kb,
                        main,
                        4,
                        |kb, i| lanes(kb, i, types::F32X4),
                        |kb| kb_loop(kb, main, len, 1, |kb, i| lanes(kb, i, types::F32)),
                    );
                }
            });
        } else {
            // Reduced contiguous last run (or a single element).
            let (outer_red, last) = match reduced.split_last() {
                Some((last, rest)) => (rest.to_vec(), *last),
                None => (Vec::new(), Run { len: 1, in_stride: esize, out_stride: 0 }),
            };
            let Cut::Outer { axes, per_unit } = cut else { unreachable!("outer cuts only") };
            loop_units(kb, &outputs.dims, &outputs.strides, &[x, y], (axes, per_unit), (lo, hi), &mut |kb, p| {
                let v = plan.contiguous(kb, p[0], &outer_red, last.len);
                kb.b.ins().store(mem(), v, p[1], 0);
            });
        }
    })?;
    Ok(Emitted::parallel(func, vec![], units))
}

/// One reduction's code: the accumulator and how its result is finished.
struct Reduction {
    kind: ReduceKind,
    acc: Acc,
    /// Elements per group.
    count: i64,
    int: bool,
}

impl Reduction {
    /// The result for the lanes at `x`, reducing over `runs` (strided).
    fn strided(&self, kb: &mut Kb, x: Value, runs: &[Run], ty: Type) -> Value {
        let b = &mut kb.b;
        let a = strided_pass(b, self.acc, x, runs, ty, None);
        if self.kind == ReduceKind::LogSumExp {
            let s = strided_pass(b, Acc::Add(Term::Id), x, runs, ty, Some(a));
            return self.finish(kb, s, Some(a));
        }
        self.finish(kb, a, None)
    }

    /// The result of one group whose last run (`len` elements) is contiguous at `x`.
    fn contiguous(&self, kb: &mut Kb, x: Value, outer: &[Run], len: i64) -> Value {
        let ty = if self.int { types::I64 } else { types::F32 };
        let b = &mut kb.b;
        let pass = |b: &mut FunctionBuilder, acc: Acc, shift: Option<Value>| {
            let (vars, tail) = contiguous_begin(b, acc, ty);
            nest(b, outer, x, &mut |b, p| contiguous_run(b, acc, p, len, shift, &vars, tail, ty));
            contiguous_end(b, acc, &vars, tail)
        };
        let a = pass(b, self.acc, None);
        if self.kind == ReduceKind::LogSumExp {
            let s = pass(b, Acc::Add(Term::Id), Some(a));
            return self.finish(kb, s, Some(a));
        }
        self.finish(kb, a, None)
    }

    /// The reduction's result from the accumulated value (`max`: log-sum-exp's shift).
    fn finish(&self, kb: &mut Kb, acc: Value, max: Option<Value>) -> Value {
        let ty = kb.b.func.dfg.value_type(acc);
        match self.kind {
            ReduceKind::Mean if self.int => {
                if self.count == 0 {
                    kb.b.ins().iconst(types::I64, 0)
                } else {
                    let n = kb.b.ins().iconst(types::I64, self.count);
                    kb.b.ins().sdiv(acc, n)
                }
            }
            ReduceKind::Mean if self.count == 0 => splat_f32(&mut kb.b, 0.0, ty),
            ReduceKind::Mean => {
                let n = splat_f32(&mut kb.b, self.count as f32, ty);
                kb.b.ins().fdiv(acc, n)
            }
            ReduceKind::L2 => kb.b.ins().sqrt(acc),
            ReduceKind::LogSum => map_lanes(kb, acc, Math1::Log),
            ReduceKind::LogSumExp => {
                let m = max.expect("log-sum-exp passes its maximum");
                let l = map_lanes(kb, acc, Math1::Log);
                let r = kb.b.ins().fadd(m, l);
                // An infinite maximum is the result itself (and keeps ∞ − ∞ out of the sum).
                let am = kb.b.ins().fabs(m);
                let inf = splat_f32(&mut kb.b, f32::INFINITY, ty);
                let is_inf = kb.b.ins().fcmp(FloatCC::Equal, am, inf);
                select_mask(&mut kb.b, is_inf, m, r)
            }
            _ => acc,
        }
    }
}

/// One pass of `acc` over the strided `runs` for the lanes at `x`.
fn strided_pass(b: &mut FunctionBuilder, acc: Acc, x: Value, runs: &[Run], ty: Type, shift: Option<Value>) -> Value {
    let var = b.declare_var(ty);
    let init = acc.init(b, ty);
    b.def_var(var, init);
    nest(b, runs, x, &mut |b, p| {
        let v = b.ins().load(ty, mem(), p, 0);
        let v = term_shift(b, v, shift);
        let a = b.use_var(var);
        let a = acc.step(b, a, v);
        b.def_var(var, a);
    });
    b.use_var(var)
}

/// Nested loops over `runs` (input strides), calling `body` with each input address.
fn nest(b: &mut FunctionBuilder, runs: &[Run], x: Value, body: &mut dyn FnMut(&mut FunctionBuilder, Value)) {
    let Some((first, rest)) = runs.split_first() else {
        body(b, x);
        return;
    };
    for_range(b, 0, first.len, 1, |b, i| {
        let o = b.ins().imul_imm_s(i, first.in_stride);
        let p = b.ins().iadd(x, o);
        nest(b, rest, p, body);
    });
}

/// `f` of each lane (a call per lane for vectors).
fn map_lanes(kb: &mut Kb, v: Value, f: Math1) -> Value {
    if kb.b.func.dfg.value_type(v) == types::F32 {
        return kb.math1(f, v);
    }
    let mut out = v;
    for lane in 0..4 {
        let l = kb.b.ins().extractlane(v, lane);
        let r = kb.math1(f, l);
        out = kb.b.ins().insertlane(out, r, lane);
    }
    out
}

/// ONNX `ArgMax` (`max`) / `ArgMin` along `axis`: the first index of the extremum, or the last
/// with `select_last_index`; NaN never wins a comparison (as in the reference). f32 inputs run
/// 4 adjacent positions per vector when the axis is not the last.
pub(crate) fn emit_arg_reduce(
    jit: &mut Jit,
    cx: &EmitCx,
    max: bool,
    axis: usize,
    select_last_index: bool,
) -> Result<Emitted, CompileError> {
    let xs = &cx.inputs[0].shape;
    let dtype = cx.inputs[0].dtype;
    let ty = match dtype {
        DType::F32 => types::F32,
        DType::I64 => types::I64,
        _ => return Err(cx.unsupported(format!("arg-reduce on {dtype}"))),
    };
    let esize = ty.bytes() as i64;
    let outer = xs[..axis].iter().product::<usize>() as i64;
    let len = xs[axis] as i64;
    let inner = xs[axis + 1..].iter().product::<usize>() as i64;
    let vector = ty == types::F32 && len <= i64::from(i32::MAX);
    // Units over the outer rows and the columns (`inner` positions) of a row, cut at
    // multiples of 4.
    let rows = Nest { dims: vec![outer, inner], strides: vec![vec![len * inner * esize, esize], vec![inner * 8, 8]] };
    let cut = rows.cut((GRAIN / len.max(1)).max(1), 4);
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        if outer * inner == 0 || len == 0 {
            return;
        }
        let bases = [kb.arg(x_arg), kb.arg(y_arg)];
        let (lo, hi) = (kb.lo, kb.hi);
        rows.for_units(kb, cut, lo, hi, &bases, &mut |kb, p, cols| {
            let (xo, yo) = (p[0], p[1]);
            let at = |kb: &mut Kb, i: Value, vty: Type| {
                let b = &mut kb.b;
                let xi = b.ins().imul_imm_s(i, esize);
                let xi = b.ins().iadd(xo, xi);
                let yi = b.ins().ishl_imm_u(i, 3);
                let yi = b.ins().iadd(yo, yi);
                arg_lanes(b, xi, yi, len, inner * esize, vty, max, select_last_index);
            };
            if vector {
                let main = inner - inner % 4;
                cols.run(
                    kb,
                    main,
                    4,
                    |kb, i| at(kb, i, types::F32X4),
                    |kb| kb_loop(kb, main, inner, 1, |kb, i| at(kb, i, ty)),
                );
            } else {
                cols.run(kb, inner, 1, |kb, i| at(kb, i, ty), |_| {});
            }
        });
    })?;
    Ok(Emitted::parallel(func, vec![], if outer * inner == 0 || len == 0 { 1 } else { rows.units(cut) }))
}

/// Arg-extremum of the `len` values at `x + j·stride` per lane of `ty`, stored as i64 at `y`.
#[allow(clippy::too_many_arguments)]
fn arg_lanes(b: &mut FunctionBuilder, x: Value, y: Value, len: i64, stride: i64, ty: Type, max: bool, last: bool) {
    let idx_ty = if ty == types::F32X4 { types::I32X4 } else { types::I64 };
    let best = b.declare_var(ty);
    let idx = b.declare_var(idx_ty);
    let first = b.ins().load(ty, mem(), x, 0);
    b.def_var(best, first);
    let zero = if ty == types::F32X4 {
        let z = b.ins().iconst(types::I32, 0);
        b.ins().splat(idx_ty, z)
    } else {
        b.ins().iconst(types::I64, 0)
    };
    b.def_var(idx, zero);
    for_range(b, 1, len, 1, |b, j| {
        let o = b.ins().imul_imm_s(j, stride);
        let p = b.ins().iadd(x, o);
        let v = b.ins().load(ty, mem(), p, 0);
        let cur = b.use_var(best);
        let m = if ty == types::I64 {
            let cc = if max { IntCC::SignedGreaterThan } else { IntCC::SignedLessThan };
            let m = b.ins().icmp(cc, v, cur);
            if last {
                let eq = b.ins().icmp(IntCC::Equal, v, cur);
                b.ins().bor(m, eq)
            } else {
                m
            }
        } else {
            let cc = if max { FloatCC::GreaterThan } else { FloatCC::LessThan };
            let m = b.ins().fcmp(cc, v, cur);
            if last {
                let eq = b.ins().fcmp(FloatCC::Equal, v, cur);
                b.ins().bor(m, eq)
            } else {
                m
            }
        };
        let nb = select_mask(b, m, v, cur);
        b.def_var(best, nb);
        let ci = b.use_var(idx);
        let ni = if ty == types::F32X4 {
            let j32 = b.ins().ireduce(types::I32, j);
            let js = b.ins().splat(idx_ty, j32);
            b.ins().bitselect(m, js, ci)
        } else {
            b.ins().select(m, j, ci)
        };
        b.def_var(idx, ni);
    });
    let r = b.use_var(idx);
    if ty == types::F32X4 {
        for lane in 0..4u8 {
            let l = b.ins().extractlane(r, lane);
            let l = b.ins().sextend(types::I64, l);
            b.ins().store(mem(), l, y, 8 * i32::from(lane));
        }
    } else {
        b.ins().store(mem(), r, y, 0);
    }
}
