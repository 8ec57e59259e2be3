//! The kernels' `eˣ` (`crate::expf`) emitted inline on 4 f32 lanes: every Cranelift kernel that
//! needs an exponential (the `exp`, `sigmoid`, `swish` and `tanh` element-wise kernels, their
//! epilogue forms, softmax) calls [`exp_x4`] or, where the argument is never positive,
//! [`exp_nonpos_x4`] / [`exp_nonpos_any`].

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

use crate::expf::{HI, LN2_HI, LN2_LO, LO, LOG2E, NONPOS_BIAS, NONPOS_SHIFT, P, SHIFTER};

fn splat(b: &mut FunctionBuilder, c: f32) -> Value {
    let s = b.ins().f32const(c);
    b.ins().splat(types::F32X4, s)
}

/// Lanes of `k` where `cc(v, k)` holds, else lanes of `v` (NaN in `v` is kept).
fn replace_if(b: &mut FunctionBuilder, cc: FloatCC, v: Value, k: Value) -> Value {
    let m = b.ins().fcmp(cc, v, k);
    let m = b.ins().bitcast(types::F32X4, MemFlagsData::new(), m);
    b.ins().bitselect(m, k, v)
}

/// `eˣ` on the 4 lanes of `x`: `crate::expf::exp`'s operations, in its order.
pub(crate) fn exp_x4(b: &mut FunctionBuilder, x: Value) -> Value {
    let lo = splat(b, LO);
    let x = replace_if(b, FloatCC::LessThan, x, lo);
    let hi = splat(b, HI);
    let x = replace_if(b, FloatCC::GreaterThan, x, hi);
    let (t, y) = reduce(b, x);
    let ti = b.ins().bitcast(types::I32X4, MemFlagsData::new(), t);
    let bias = b.ins().iconst(types::I32, i64::from(SHIFTER.to_bits()));
    let bias = b.ins().splat(types::I32X4, bias);
    let ni = b.ins().isub(ti, bias);
    let n1 = b.ins().sshr_imm_u(ni, 1);
    let n2 = b.ins().isub(ni, n1);
    let e127 = b.ins().iconst(types::I32, 127);
    let e127 = b.ins().splat(types::I32X4, e127);
    let mut scale = |n: Value| {
        let e = b.ins().iadd(n, e127);
        let e = b.ins().ishl_imm_u(e, 23);
        b.ins().bitcast(types::F32X4, MemFlagsData::new(), e)
    };
    let s1 = scale(n1);
    let s2 = scale(n2);
    let y = b.ins().fmul(y, s1);
    b.ins().fmul(y, s2)
}

/// [`exp_x4`] for lanes `≤ 0` (or NaN): the same bits, with `crate::expf::exp_nonpos`'s
/// operations.
pub(crate) fn exp_nonpos_x4(b: &mut FunctionBuilder, x: Value) -> Value {
    let lo = splat(b, LO);
    let x = replace_if(b, FloatCC::LessThan, x, lo);
    let (t, y) = reduce(b, x);
    let ti = b.ins().bitcast(types::I32X4, MemFlagsData::new(), t);
    let bias = b.ins().iconst(types::I32, i64::from(NONPOS_BIAS));
    let bias = b.ins().splat(types::I32X4, bias);
    let e = b.ins().iadd(ti, bias);
    let e = b.ins().ishl_imm_u(e, 23);
    let s = b.ins().bitcast(types::F32X4, MemFlagsData::new(), e);
    let y = b.ins().fmul(y, s);
    let down = splat(b, f32::from_bits(((127 - NONPOS_SHIFT) << 23) as u32));
    b.ins().fmul(y, down)
}

/// The shared middle of both forms on clamped `x`: `t = x·log₂e + SHIFTER` (whose bits hold
/// `n`) and `y = eʳ`.
fn reduce(b: &mut FunctionBuilder, x: Value) -> (Value, Value) {
    let log2e = splat(b, LOG2E);
    let shifter = splat(b, SHIFTER);
    let t = b.ins().fma(x, log2e, shifter);
    let n = b.ins().fsub(t, shifter);
    let ln2_hi = splat(b, LN2_HI);
    let ln2_lo = splat(b, LN2_LO);
    let r = b.ins().fma(n, ln2_hi, x);
    let r = b.ins().fma(n, ln2_lo, r);
    let mut p = splat(b, P[5]);
    for &k in P[..5].iter().rev() {
        let k = splat(b, k);
        p = b.ins().fma(p, r, k);
    }
    let r2 = b.ins().fmul(r, r);
    let y = b.ins().fma(p, r2, r);
    let one = splat(b, 1.0);
    (t, b.ins().fadd(y, one))
}

/// [`exp_nonpos_x4`] of an f32 (in lane 0 of a splat) or of 4 lanes; the caller guarantees
/// `x ≤ 0` (softmax's `x − max`).
pub(crate) fn exp_nonpos_any(b: &mut FunctionBuilder, x: Value) -> Value {
    if b.func.dfg.value_type(x) == types::F32X4 {
        return exp_nonpos_x4(b, x);
    }
    let v = b.ins().splat(types::F32X4, x);
    let e = exp_nonpos_x4(b, v);
    b.ins().extractlane(e, 0)
}
