//! Element-wise functions of one f32 input (`UnaryOp`): a main loop of four 4-lane vectors per
//! step, then single vectors, then a scalar tail.
//!
//! `exp`, `sigmoid` and `tanh` are inline too, on the kernels' one `eˣ` (`crate::expf`, emitted
//! by `codegen::expf`). Largest relative error against f64 over a dense sweep of the f32 range
//! (`tests/jit_unary_inline.rs`): `exp` 8.3e-8, `sigmoid` 1.7e-7, `tanh` 1.3e-7. `erf` and `log`
//! call the scalar math routines.

use cnnc_ir::{DType, UnaryOp};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};

use cranelift_codegen::ir::{AbiParam, Signature};
use cranelift_codegen::isa::CallConv;

use super::builder::{balanced_grain, mem, unit_span, units_of};
use super::expf::{exp_nonpos_x4, exp_x4};
use super::index_map::{GRAIN, Nest, kb_loop, offset};
use super::math::Math1;
use super::{CompileError, EmitCx, Emitted, Jit, Kb};
use crate::microkernel::{self, Act, Microkernels};

/// Vectors per step of the main loop.
const UNROLL: i64 = 4;

/// `y = f(x)` element-wise. Work units are ranges of [`GRAIN`] elements or more, cut at
/// multiples of the main loop's step so that only the last unit runs the tail, as one call
/// would.
pub(crate) fn emit_unary(jit: &mut Jit, cx: &EmitCx, op: UnaryOp) -> Result<Emitted, CompileError> {
    emit_unary_with(jit, cx, op, super::f32_kernels()?)
}

/// [`emit_unary`] with the given microkernels: `exp`, `tanh`, `sigmoid` and `swish` run on the
/// AVX2 routine when `mk` is `Some`, everything else (and everything when `None`) on the
/// Cranelift loop; both give the same bits.
pub(crate) fn emit_unary_with(
    jit: &mut Jit,
    cx: &EmitCx,
    op: UnaryOp,
    mk: Option<Microkernels>,
) -> Result<Emitted, CompileError> {
    if cx.inputs[0].dtype != DType::F32 {
        return Err(cx.unsupported(format!("{} on {}", op.name(), cx.inputs[0].dtype)));
    }
    if let Some(kind) = eltwise_kind(op)
        && let Some(mk) = mk
    {
        return emit_unary_avx2(jit, cx, op, kind, mk);
    }
    let n = cx.outputs[0].numel();
    let nest = Nest::new(&[n], vec![vec![4]; 2]);
    let cut = nest.cut(GRAIN, 4 * UNROLL);
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        let bases = [kb.arg(x_arg), kb.arg(y_arg)];
        let (lo, hi) = (kb.lo, kb.hi);
        let (n, s) = nest.inner();
        let scalar_at = |kb: &mut Kb, p: &[Value], i: Value| {
            let px = offset(kb, p[0], i, s[0]);
            let v = kb.b.ins().load(types::F32, mem(), px, 0);
            let r = scalar(kb, op, v);
            let py = offset(kb, p[1], i, s[1]);
            kb.b.ins().store(mem(), r, py, 0);
        };
        nest.for_units(kb, cut, lo, hi, &bases, &mut |kb, p, cols| {
            if !vectorizable(op) {
                // Every element calls a math routine, one at a time.
                cols.run(kb, n, 1, |kb, i| scalar_at(kb, p, i), |_| {});
                return;
            }
            // `UNROLL` vectors of 4 lanes per step up to `main`, then single vectors up to
            // `main4`, then one element at a time.
            let main = n - n % (4 * UNROLL);
            let main4 = n - n % 4;
            let vectors = |kb: &mut Kb, i: Value, count: i32| {
                let px = offset(kb, p[0], i, s[0]);
                let py = offset(kb, p[1], i, s[1]);
                let vs: Vec<Value> = (0..count).map(|k| kb.b.ins().load(types::F32X4, mem(), px, 16 * k)).collect();
                for (k, v) in vs.into_iter().enumerate() {
                    let r = VecCx { b: &mut kb.b }.apply(op, v);
                    kb.b.ins().store(mem(), r, py, 16 * k as i32);
                }
            };
            cols.run(
                kb,
                main,
                4 * UNROLL,
                |kb, i| vectors(kb, i, UNROLL as i32),
                |kb| {
                    kb_loop(kb, main, main4, 4, |kb, i| vectors(kb, i, 1));
                    kb_loop(kb, main4, n, 1, |kb, i| scalar_at(kb, p, i));
                },
            );
        });
    })?;
    Ok(Emitted::parallel(func, vec![], nest.units(cut)))
}

/// The `kind` of `Microkernels::unary_f32` that computes `op`, for the ops worth its 8 lanes:
/// those built on `eˣ` (the rest are a few instructions per vector and bound by memory).
fn eltwise_kind(op: UnaryOp) -> Option<u32> {
    match op {
        UnaryOp::Exp => Some(microkernel::KIND_EXP),
        UnaryOp::Tanh => Some(microkernel::KIND_TANH),
        UnaryOp::Sigmoid | UnaryOp::Swish { .. } => Act::of(op).map(|a| a.flags() >> microkernel::ACT_SHIFT),
        _ => None,
    }
}

/// [`emit_unary`] on the host's AVX2 routine: work units of [`GRAIN`] elements, one call each
/// (an element's bits do not depend on where a unit starts).
fn emit_unary_avx2(
    jit: &mut Jit,
    cx: &EmitCx,
    op: UnaryOp,
    kind: u32,
    mk: Microkernels,
) -> Result<Emitted, CompileError> {
    jit.note_variant("elementwise-avx2");
    let n = cx.outputs[0].numel() as i64;
    let (p0, p1) = Act::of(op).map_or((0.0, 0.0), Act::params);
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let grain = balanced_grain(n, GRAIN, 64);
    let func = jit.kernel(cx.name, |kb| {
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let ptr = types::I64;
        let mut sig = Signature::new(CallConv::SystemV);
        for t in [ptr, ptr, ptr, types::I32, types::F32, types::F32] {
            sig.params.push(AbiParam::new(t));
        }
        let sig = b.import_signature(sig);
        let (start, end) = unit_span(b, lo, hi, n, grain);
        let len = b.ins().isub(end, start);
        let zero = b.ins().iconst(ptr, 0);
        let len = b.ins().smax(len, zero);
        let off = b.ins().imul_imm_s(start, 4);
        let xs = b.ins().iadd(x, off);
        let ys = b.ins().iadd(y, off);
        let k = b.ins().iconst(types::I32, i64::from(kind));
        let (p0, p1) = (b.ins().f32const(p0), b.ins().f32const(p1));
        let callee = b.ins().iconst(ptr, mk.unary_f32 as i64);
        b.ins().call_indirect(sig, callee, &[xs, ys, len, k, p0, p1]);
    })?;
    Ok(Emitted::parallel(func, vec![], units_of(n, grain)))
}

/// `op` on the 4 lanes of `v`, inline (as the main loop of [`emit_unary`] computes it); `None`
/// for ops that call a scalar math routine.
pub(crate) fn apply_vec(b: &mut cranelift_frontend::FunctionBuilder, op: UnaryOp, v: Value) -> Option<Value> {
    vectorizable(op).then(|| VecCx { b }.apply(op, v))
}

/// Ops computed inline on 4 lanes (no calls).
fn vectorizable(op: UnaryOp) -> bool {
    matches!(
        op,
        UnaryOp::Relu
            | UnaryOp::LeakyRelu { .. }
            | UnaryOp::Clip { .. }
            | UnaryOp::HardSigmoid { .. }
            | UnaryOp::HardSwish
            | UnaryOp::Neg
            | UnaryOp::Abs
            | UnaryOp::Sqrt
            | UnaryOp::Floor
            | UnaryOp::Ceil
            | UnaryOp::Reciprocal
            | UnaryOp::Exp
            | UnaryOp::Sigmoid
            | UnaryOp::Swish { .. }
            | UnaryOp::Tanh
    )
}

struct VecCx<'a, 'b> {
    b: &'a mut cranelift_frontend::FunctionBuilder<'b>,
}

impl VecCx<'_, '_> {
    fn splat(&mut self, c: f32) -> Value {
        let s = self.b.ins().f32const(c);
        self.b.ins().splat(types::F32X4, s)
    }

    /// Lanes of `a` where `cc(v, k)` holds, else lanes of `b` (compare + bitselect; the
    /// compare mask is reinterpreted as f32 lanes).
    fn select_cmp(&mut self, cc: FloatCC, v: Value, k: Value, a: Value, b: Value) -> Value {
        let m = self.b.ins().fcmp(cc, v, k);
        let m = self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), m);
        self.b.ins().bitselect(m, a, b)
    }

    /// `max(v, c)`; NaN passes through.
    fn max_c(&mut self, v: Value, c: f32) -> Value {
        let k = self.splat(c);
        self.select_cmp(FloatCC::LessThan, v, k, k, v)
    }

    /// `min(v, c)`; NaN passes through.
    fn min_c(&mut self, v: Value, c: f32) -> Value {
        let k = self.splat(c);
        self.select_cmp(FloatCC::GreaterThan, v, k, k, v)
    }

    fn apply(&mut self, op: UnaryOp, v: Value) -> Value {
        match op {
            UnaryOp::Relu => self.max_c(v, 0.0),
            UnaryOp::LeakyRelu { alpha } => {
                let a = self.splat(alpha);
                let z = self.splat(0.0);
                let scaled = self.b.ins().fmul(v, a);
                self.select_cmp(FloatCC::LessThan, v, z, scaled, v)
            }
            UnaryOp::Clip { min, max } => {
                let lo = if min == f32::NEG_INFINITY { v } else { self.max_c(v, min) };
                if max == f32::INFINITY { lo } else { self.min_c(lo, max) }
            }
            UnaryOp::HardSigmoid { alpha, beta } => {
                let a = self.splat(alpha);
                let bb = self.splat(beta);
                let t = self.b.ins().fmul(v, a);
                let t = self.b.ins().fadd(t, bb);
                let t = self.max_c(t, 0.0);
                self.min_c(t, 1.0)
            }
            UnaryOp::HardSwish => {
                let sixth = self.splat(1.0 / 6.0);
                let half = self.splat(0.5);
                let t = self.b.ins().fmul(v, sixth);
                let t = self.b.ins().fadd(t, half);
                let t = self.max_c(t, 0.0);
                let t = self.min_c(t, 1.0);
                self.b.ins().fmul(v, t)
            }
            UnaryOp::Neg => self.b.ins().fneg(v),
            UnaryOp::Abs => self.b.ins().fabs(v),
            UnaryOp::Sqrt => self.b.ins().sqrt(v),
            UnaryOp::Floor => self.b.ins().floor(v),
            UnaryOp::Ceil => self.b.ins().ceil(v),
            UnaryOp::Reciprocal => {
                let one = self.splat(1.0);
                self.b.ins().fdiv(one, v)
            }
            UnaryOp::Exp => self.exp(v),
            UnaryOp::Sigmoid => self.sigmoid(v),
            UnaryOp::Swish { beta } => {
                // `x · sigmoid(β·x)`: the product `β·x` rounds first, as the Mul it stands for
                // (for β = 1 it is `x` exactly and left out).
                let t = if beta == 1.0 {
                    v
                } else {
                    let b = self.splat(beta);
                    self.b.ins().fmul(v, b)
                };
                let s = self.sigmoid(t);
                self.b.ins().fmul(v, s)
            }
            UnaryOp::Tanh => self.tanh(v),
            _ => unreachable!("only vectorizable ops reach the vector path"),
        }
    }

    fn as_int(&mut self, v: Value) -> Value {
        self.b.ins().bitcast(types::I32X4, MemFlagsData::new(), v)
    }

    fn as_float(&mut self, v: Value) -> Value {
        self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), v)
    }

    /// `p(r) = c[0] + r·(c[1] + r·(…))` by Horner's rule with fused multiply-adds.
    fn horner(&mut self, r: Value, c: &[f32]) -> Value {
        let (last, rest) = c.split_last().expect("at least one coefficient");
        let mut p = self.splat(*last);
        for &k in rest.iter().rev() {
            let k = self.splat(k);
            p = self.b.ins().fma(p, r, k);
        }
        p
    }

    fn exp(&mut self, x: Value) -> Value {
        exp_x4(self.b, x)
    }

    /// `1 / (1 + e⁻ˣ)`, computed as `s / (1 + s)` with `s = e^{-|x|}` for negative `x` so that
    /// tiny results keep their relative accuracy instead of underflowing through `1/∞`.
    fn sigmoid(&mut self, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let nax = self.b.ins().fneg(ax);
        let s = exp_nonpos_x4(self.b, nax);
        let one = self.splat(1.0);
        let den = self.b.ins().fadd(one, s);
        let zero = self.splat(0.0);
        let num = self.select_cmp(FloatCC::LessThan, x, zero, s, one);
        self.b.ins().fdiv(num, den)
    }

    /// `tanh x`: below |x| = 0.625 the Cephes odd polynomial `x + x·z·P(z)`, `z = x²`; above it
    /// `1 − 2/(e^{2|x|} + 1)` with the sign of `x` (e^{2|x|} = ∞ gives exactly ±1).
    fn tanh(&mut self, x: Value) -> Value {
        let z = self.b.ins().fmul(x, x);
        let p = self.horner(z, &crate::expf::TANH_P);
        let xz = self.b.ins().fmul(x, z);
        let small = self.b.ins().fma(xz, p, x);
        let ax = self.b.ins().fabs(x);
        let two_ax = self.b.ins().fadd(ax, ax);
        let e = self.exp(two_ax);
        let one = self.splat(1.0);
        let two = self.splat(2.0);
        let d = self.b.ins().fadd(e, one);
        let q = self.b.ins().fdiv(two, d);
        let big = self.b.ins().fsub(one, q);
        let sign_mask = self.splat(-0.0);
        let sign_mask = self.as_int(sign_mask);
        let xi = self.as_int(x);
        let sign = self.b.ins().band(xi, sign_mask);
        let bi = self.as_int(big);
        let big = self.b.ins().bor(bi, sign);
        let big = self.as_float(big);
        let limit = self.splat(crate::expf::TANH_SMALL);
        self.select_cmp(FloatCC::LessThan, ax, limit, small, big)
    }
}

fn scalar(kb: &mut Kb, op: UnaryOp, v: Value) -> Value {
    if vectorizable(op) {
        // Same formula on one lane: splat, apply, extract.
        let s = kb.b.ins().splat(types::F32X4, v);
        let r = VecCx { b: &mut kb.b }.apply(op, s);
        return kb.b.ins().extractlane(r, 0);
    }
    match op {
        UnaryOp::Log => kb.math1(Math1::Log, v),
        UnaryOp::Erf => kb.math1(Math1::Erf, v),
        _ => unreachable!("every unary op is either vectorizable or listed here"),
    }
}
