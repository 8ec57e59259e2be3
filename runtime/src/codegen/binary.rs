//! Element-wise binary ops with numpy broadcasting, comparisons, and `where`.
//!
//! The output shape is iterated as a [`Nest`]: unit axes dropped, axes contiguous in every
//! operand merged, so same-shape operands become one flat loop, a per-channel `[1,C,1,1]`
//! operand a loop over planes with the channel's value splatted, and a scalar a splat. The
//! innermost axis of a broadcast operand has stride 0 (splat, hoisted out of the row) or one
//! element; f32 arithmetic runs 8 lanes (two f32x4) per step there with a scalar tail.
//!
//! Work units (see [`Nest::cut`]) take whole rows, or cut long rows at multiples of 8 columns
//! so that only the part reaching a row's end runs its 4-lane and scalar tail.
//!
//! i64 division truncates toward zero and wraps (`i64::MIN / -1 = i64::MIN`); where the
//! reference reports "integer division by zero", the kernel writes 0 instead of trapping.

use cnnc_ir::{BinaryOp, DType, TensorType};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::builder::mem;
use super::index_map::{Cols, GRAIN, Nest, broadcast_strides, contiguous_strides, int_type, offset};
use super::math::Math2;
use super::{CompileError, EmitCx, Emitted, Jit, Kb};

/// How the elements of the operands are combined.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    F32,
    I64,
    /// Add, sub and mul, wrapping.
    I32,
    Bool,
}

/// `y = a ∘ b` element-wise with broadcasting (`PRelu`: `a` is x, `b` the slope).
pub(crate) fn emit_binary(jit: &mut Jit, cx: &EmitCx, op: BinaryOp) -> Result<Emitted, CompileError> {
    let (ta, tb, to) = (&cx.inputs[0], &cx.inputs[1], &cx.outputs[0]);
    let kind = match (ta.dtype, tb.dtype) {
        (DType::F32, DType::F32) => Kind::F32,
        (DType::I64, DType::I64) => Kind::I64,
        (DType::I32, DType::I32) if matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul) => Kind::I32,
        (DType::Bool, DType::Bool) if op == BinaryOp::Equal => Kind::Bool,
        (da, db) => return Err(cx.unsupported(format!("{} on ({da}, {db})", op.name()))),
    };
    if ta.rank() > to.rank() || tb.rank() > to.rank() {
        return Err(cx.unsupported("an operand has a higher rank than the output"));
    }
    let nest = operand_nest(&[ta, tb], to);
    // `x ^ 2` is exactly `x · x` (the product of two f32 is exact in f64, as the reference
    // computes it, and rounds once either way).
    let square = op == BinaryOp::Pow && kind == Kind::F32 && const_all(cx, 1, 2.0);
    let cut = nest.cut(GRAIN, 8);
    let (a_arg, b_arg, y_arg) = (cx.in_arg(0), cx.in_arg(1), cx.out_arg(0));
    let func = jit.kernel(cx.name, |kb| {
        let bases = [kb.arg(a_arg), kb.arg(b_arg), kb.arg(y_arg)];
        let (lo, hi) = (kb.lo, kb.hi);
        let (n, s) = nest.inner();
        nest.for_units(kb, cut, lo, hi, &bases, &mut |kb, p, cols| match kind {
            Kind::F32 if op.is_comparison() => {
                scalar_row(kb, p, &s, n, cols, types::F32, |kb, x, y| kb.b.ins().fcmp(float_cc(op), x, y))
            }
            Kind::F32 if square || vector_op(op) => f32_row(kb, op, square, p, &s, n, cols),
            Kind::F32 => {
                scalar_row(kb, p, &s, n, cols, types::F32, |kb, x, y| kb.math2(Math2::Pow, x, y));
            }
            Kind::I64 if op.is_comparison() => {
                scalar_row(kb, p, &s, n, cols, types::I64, |kb, x, y| kb.b.ins().icmp(int_cc(op), x, y))
            }
            Kind::I64 => scalar_row(kb, p, &s, n, cols, types::I64, |kb, x, y| i64_op(kb, op, x, y)),
            Kind::I32 => scalar_row(kb, p, &s, n, cols, types::I32, |kb, x, y| match op {
                BinaryOp::Add => kb.b.ins().iadd(x, y),
                BinaryOp::Sub => kb.b.ins().isub(x, y),
                _ => kb.b.ins().imul(x, y),
            }),
            Kind::Bool => scalar_row(kb, p, &s, n, cols, types::I8, |kb, x, y| {
                // Bools are stored as 0/1 bytes; compare their truth values.
                let x = kb.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0);
                let y = kb.b.ins().icmp_imm_s(IntCC::NotEqual, y, 0);
                kb.b.ins().icmp(IntCC::Equal, x, y)
            }),
        });
    })?;
    Ok(Emitted::parallel(func, vec![], nest.units(cut)))
}

/// ONNX `Where`: `cond ? a : b` with the three operands broadcast together; any dtype.
pub(crate) fn emit_where(jit: &mut Jit, cx: &EmitCx) -> Result<Emitted, CompileError> {
    let (tc, ta, tb, to) = (&cx.inputs[0], &cx.inputs[1], &cx.inputs[2], &cx.outputs[0]);
    if tc.dtype != DType::Bool || ta.dtype != tb.dtype || ta.dtype != to.dtype {
        return Err(cx.unsupported(format!("where on ({}, {}, {})", tc.dtype, ta.dtype, tb.dtype)));
    }
    if [tc, ta, tb].iter().any(|t| t.rank() > to.rank()) {
        return Err(cx.unsupported("an operand has a higher rank than the output"));
    }
    let nest = operand_nest(&[tc, ta, tb], to);
    let cut = nest.cut(GRAIN, 1);
    let ty = int_type(to.dtype.size_bytes());
    let args = [cx.in_arg(0), cx.in_arg(1), cx.in_arg(2), cx.out_arg(0)];
    let func = jit.kernel(cx.name, |kb| {
        let bases: Vec<Value> = args.iter().map(|&a| kb.arg(a)).collect();
        let (lo, hi) = (kb.lo, kb.hi);
        let (n, s) = nest.inner();
        nest.for_units(kb, cut, lo, hi, &bases, &mut |kb, p, cols| {
            let elem = |kb: &mut Kb, i: Value| {
                let pc = offset(kb, p[0], i, s[0]);
                let c = kb.b.ins().load(types::I8, mem(), pc, 0);
                let pa = offset(kb, p[1], i, s[1]);
                let x = kb.b.ins().load(ty, mem(), pa, 0);
                let pb = offset(kb, p[2], i, s[2]);
                let y = kb.b.ins().load(ty, mem(), pb, 0);
                let r = kb.b.ins().select(c, x, y);
                let po = offset(kb, p[3], i, s[3]);
                kb.b.ins().store(mem(), r, po, 0);
            };
            cols.run(kb, n, 1, elem, |_| {});
        });
    })?;
    Ok(Emitted::parallel(func, vec![], nest.units(cut)))
}

/// The iteration space of the output with every operand's broadcast byte strides, the output
/// last.
fn operand_nest(operands: &[&TensorType], out: &TensorType) -> Nest {
    let mut strides: Vec<Vec<i64>> =
        operands.iter().map(|t| broadcast_strides(&t.shape, &out.shape, t.dtype.size_bytes())).collect();
    strides.push(contiguous_strides(&out.shape, out.dtype.size_bytes()));
    Nest::new(&out.shape, strides)
}

/// True if input `i` is a constant whose every element equals `v`.
fn const_all(cx: &EmitCx, i: usize, v: f32) -> bool {
    cx.consts
        .get(i)
        .copied()
        .flatten()
        .and_then(|t| t.as_f32())
        .is_some_and(|x| !x.is_empty() && x.iter().all(|&e| e == v))
}

/// f32 ops computed inline on 4 lanes.
fn vector_op(op: BinaryOp) -> bool {
    matches!(
        op,
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Max | BinaryOp::Min | BinaryOp::PRelu
    )
}

fn float_cc(op: BinaryOp) -> FloatCC {
    match op {
        BinaryOp::Equal => FloatCC::Equal,
        BinaryOp::Less => FloatCC::LessThan,
        _ => FloatCC::GreaterThan,
    }
}

fn int_cc(op: BinaryOp) -> IntCC {
    match op {
        BinaryOp::Equal => IntCC::Equal,
        BinaryOp::Less => IntCC::SignedLessThan,
        _ => IntCC::SignedGreaterThan,
    }
}

/// The columns `cols` of one innermost row, one element at a time: `out[i] = f(a[i], b[i])`
/// with operands of type `ty` and the result stored in its own type. `p` and `s` are the row's
/// pointers and byte strides `[a, b, out]`.
fn scalar_row(
    kb: &mut Kb,
    p: &[Value],
    s: &[i64],
    n: i64,
    cols: Cols,
    ty: types::Type,
    f: impl Fn(&mut Kb, Value, Value) -> Value,
) {
    let hoist = |kb: &mut Kb, k: usize| (s[k] == 0).then(|| kb.b.ins().load(ty, mem(), p[k], 0));
    let (ha, hb) = (hoist(kb, 0), hoist(kb, 1));
    let elem = |kb: &mut Kb, i: Value| {
        let x = match ha {
            Some(v) => v,
            None => {
                let pa = offset(kb, p[0], i, s[0]);
                kb.b.ins().load(ty, mem(), pa, 0)
            }
        };
        let y = match hb {
            Some(v) => v,
            None => {
                let pb = offset(kb, p[1], i, s[1]);
                kb.b.ins().load(ty, mem(), pb, 0)
            }
        };
        let r = f(kb, x, y);
        let po = offset(kb, p[2], i, s[2]);
        kb.b.ins().store(mem(), r, po, 0);
    };
    cols.run(kb, n, 1, elem, |_| {});
}

/// The columns `cols` of one innermost row of an inline f32 op: 8 lanes per step, then 4,
/// then a scalar tail (the tail only in the part that reaches the row's end). Operands with
/// stride 0 are loaded once and splatted.
fn f32_row(kb: &mut Kb, op: BinaryOp, square: bool, p: &[Value], s: &[i64], n: i64, cols: Cols) {
    // Broadcasting leaves only strides 0 and 4 on the innermost axis; anything else would be
    // a bug upstream, handled correctly (if slowly) by the scalar row.
    if s[..2].iter().any(|&x| x != 0 && x != 4) || s[2] != 4 {
        return scalar_row(kb, p, s, n, cols, types::F32, |kb, x, y| f32_op(&mut kb.b, op, square, x, y));
    }
    let hoist = |kb: &mut Kb, k: usize| {
        (s[k] == 0).then(|| {
            let x = kb.b.ins().load(types::F32, mem(), p[k], 0);
            (x, kb.b.ins().splat(types::F32X4, x))
        })
    };
    let (ha, hb) = (hoist(kb, 0), hoist(kb, 1));
    // Loads 4 lanes (or one) of operand `k` at element `i` + `lane`.
    let load = |kb: &mut Kb, k: usize, h: Option<(Value, Value)>, i: Value, lane: i32, ty: types::Type| match h {
        Some((x, v)) => {
            if ty == types::F32 {
                x
            } else {
                v
            }
        }
        None => {
            let pk = offset(kb, p[k], i, s[k]);
            kb.b.ins().load(ty, mem(), pk, lane * 4)
        }
    };
    let step = |kb: &mut Kb, i: Value, lanes: &[i32], ty: types::Type| {
        let results: Vec<Value> = lanes
            .iter()
            .map(|&l| {
                let x = load(kb, 0, ha, i, l, ty);
                let y = load(kb, 1, hb, i, l, ty);
                f32_op(&mut kb.b, op, square, x, y)
            })
            .collect();
        let po = offset(kb, p[2], i, s[2]);
        for (&l, r) in lanes.iter().zip(results) {
            kb.b.ins().store(mem(), r, po, l * 4);
        }
    };
    let main8 = n - n % 8;
    cols.run(
        kb,
        main8,
        8,
        |kb, i| step(kb, i, &[0, 4], types::F32X4),
        |kb| {
            let mut done = main8;
            if n - done >= 4 {
                let i = kb.b.ins().iconst(types::I64, done);
                step(kb, i, &[0], types::F32X4);
                done += 4;
            }
            for e in done..n {
                let i = kb.b.ins().iconst(types::I64, e);
                step(kb, i, &[0], types::F32);
            }
        },
    );
}

/// `x ∘ y` for an inline f32 op on scalars or f32x4 lanes, NaN handling as the reference:
/// `max`/`min` return `x` when `x` is NaN and `y` when only `y` is.
fn f32_op(b: &mut FunctionBuilder, op: BinaryOp, square: bool, x: Value, y: Value) -> Value {
    if square {
        return b.ins().fmul(x, x);
    }
    let ty = b.func.dfg.value_type(x);
    let select = |b: &mut FunctionBuilder, m: Value, t: Value, f: Value| {
        if ty.is_vector() {
            let m = b.ins().bitcast(types::F32X4, MemFlagsData::new(), m);
            b.ins().bitselect(m, t, f)
        } else {
            b.ins().select(m, t, f)
        }
    };
    match op {
        BinaryOp::Add => b.ins().fadd(x, y),
        BinaryOp::Sub => b.ins().fsub(x, y),
        BinaryOp::Mul => b.ins().fmul(x, y),
        BinaryOp::Div => b.ins().fdiv(x, y),
        BinaryOp::Max | BinaryOp::Min => {
            let cc = if op == BinaryOp::Max { FloatCC::GreaterThan } else { FloatCC::LessThan };
            let better = b.ins().fcmp(cc, x, y);
            let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
            let m = b.ins().bor(better, nan);
            select(b, m, x, y)
        }
        BinaryOp::PRelu => {
            let zero = b.ins().f32const(0.0);
            let zero = if ty.is_vector() { b.ins().splat(ty, zero) } else { zero };
            let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
            let scaled = b.ins().fmul(y, x);
            select(b, neg, scaled, x)
        }
        _ => unreachable!("only inline ops reach f32_op"),
    }
}

/// `x ∘ y` on i64 scalars, wrapping like the reference.
fn i64_op(kb: &mut Kb, op: BinaryOp, x: Value, y: Value) -> Value {
    let b = &mut kb.b;
    match op {
        BinaryOp::Add => b.ins().iadd(x, y),
        BinaryOp::Sub => b.ins().isub(x, y),
        BinaryOp::Mul => b.ins().imul(x, y),
        BinaryOp::Max => {
            let m = b.ins().icmp(IntCC::SignedGreaterThan, x, y);
            b.ins().select(m, x, y)
        }
        BinaryOp::Min => {
            let m = b.ins().icmp(IntCC::SignedLessThan, x, y);
            b.ins().select(m, x, y)
        }
        BinaryOp::PRelu => {
            let neg = b.ins().icmp_imm_s(IntCC::SignedLessThan, x, 0);
            let scaled = b.ins().imul(y, x);
            b.ins().select(neg, scaled, x)
        }
        BinaryOp::Div => {
            // `sdiv` traps on a zero divisor and on MIN / -1: divide by 1 in those cases and
            // patch the result (0 for a zero divisor, the wrapping negation for -1).
            let zero = b.ins().icmp_imm_s(IntCC::Equal, y, 0);
            let minus1 = b.ins().icmp_imm_s(IntCC::Equal, y, -1);
            let special = b.ins().bor(zero, minus1);
            let one = b.ins().iconst(types::I64, 1);
            let d = b.ins().select(special, one, y);
            let q = b.ins().sdiv(x, d);
            let negx = b.ins().ineg(x);
            let q = b.ins().select(minus1, negx, q);
            let z = b.ins().iconst(types::I64, 0);
            b.ins().select(zero, z, q)
        }
        BinaryOp::Pow => i64_pow(kb, x, y),
        _ => unreachable!("comparisons are handled separately"),
    }
}

/// `(x as f64).powf(y as f64) as i64` (onnxruntime's integer Pow through doubles), by binary
/// exponentiation in f64: exact while the magnitude stays below 2^53, saturating beyond i64.
fn i64_pow(kb: &mut Kb, x: Value, y: Value) -> Value {
    let b = &mut kb.b;
    let xf = b.ins().fcvt_from_sint(types::F64, x);
    let neg = b.ins().icmp_imm_s(IntCC::SignedLessThan, y, 0);
    let ny = b.ins().ineg(y);
    // |y| as an unsigned bit pattern (|i64::MIN| = 2^63 works too).
    let e0 = b.ins().select(neg, ny, y);
    let one = b.ins().f64const(1.0);
    let header = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    for blk in [header, body] {
        b.append_block_param(blk, types::I64);
        b.append_block_param(blk, types::F64);
        b.append_block_param(blk, types::F64);
    }
    b.append_block_param(exit, types::F64);
    b.ins().jump(header, &[e0.into(), xf.into(), one.into()]);
    b.switch_to_block(header);
    let [e, base, acc] = [0, 1, 2].map(|k| b.block_params(header)[k]);
    b.ins().brif(e, body, &[e.into(), base.into(), acc.into()], exit, &[acc.into()]);
    b.switch_to_block(body);
    let [e, base, acc] = [0, 1, 2].map(|k| b.block_params(body)[k]);
    let bit = b.ins().band_imm_s(e, 1);
    let prod = b.ins().fmul(acc, base);
    let acc = b.ins().select(bit, prod, acc);
    let base = b.ins().fmul(base, base);
    let e = b.ins().ushr_imm_u(e, 1);
    b.ins().jump(header, &[e.into(), base.into(), acc.into()]);
    b.switch_to_block(exit);
    let p = b.block_params(exit)[0];
    let inv = b.ins().fdiv(one, p);
    let r = b.ins().select(neg, inv, p);
    b.ins().fcvt_to_sint_sat(types::I64, r)
}
