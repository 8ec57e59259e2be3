//! QuantizeLinear and DequantizeLinear: one element at a time, with exactly the reference's
//! arithmetic (`reference/quant.rs`): an f32 division rounded half to even (`nearest`),
//! saturated, plus the zero point; dequantizing, the exact difference with the zero point
//! converted once to f32 and multiplied by the scale. Scales and zero points are load-time
//! tables indexed by the element's position on the quantization axis.

use cnnc_ir::{DType, QuantParams};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, Value, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

use super::builder::{balanced_grain, mem, unit_span, units_of};
use super::index_map::{GRAIN, kb_loop_dyn, offset};
use super::{Aux, CompileError, EmitCx, Emitted, Jit, Kb};

/// Bounds the rounded quotient before the zero point is added (the reference's saturating
/// add): any bound beyond every quantized range gives the same result.
const QUOTIENT_BOUND: i64 = 1 << 40;

/// `(inner, n_channels)`: the element at flat index `i` uses entry `(i / inner) % n_channels`.
fn channel_layout(cx: &EmitCx, p: &QuantParams) -> Result<(i64, i64), CompileError> {
    let shape = &cx.inputs[0].shape;
    let (inner, n) = match p.axis {
        None => (1, 1),
        Some(a) if a < shape.len() => (shape[a + 1..].iter().product::<usize>(), shape[a]),
        Some(a) => return Err(cx.unsupported(format!("quantization axis {a} of {shape:?}"))),
    };
    if p.scales.len() != n || p.zero_points.len() != n {
        return Err(cx.unsupported(format!("{} scales for {n} channels", p.scales.len())));
    }
    Ok((inner.max(1) as i64, n as i64))
}

/// Loads the scale and the zero point (as i64) of flat element `i`.
fn params_of(kb: &mut Kb, tables: (Value, Value), layout: (i64, i64), i: Value) -> (Value, Value) {
    let (inner, n) = layout;
    let ch = if n > 1 {
        let q = kb.b.ins().udiv_imm_u(i, inner);
        kb.b.ins().urem_imm_u(q, n)
    } else {
        kb.b.ins().iconst(types::I64, 0)
    };
    let ps = offset(kb, tables.0, ch, 4);
    let pz = offset(kb, tables.1, ch, 8);
    let s = kb.b.ins().load(types::F32, mem(), ps, 0);
    let z = kb.b.ins().load(types::I64, mem(), pz, 0);
    (s, z)
}

fn clamp(b: &mut FunctionBuilder, k: Value, lo: i64, hi: i64) -> Value {
    let (lo, hi) = (b.ins().iconst(types::I64, lo), b.ins().iconst(types::I64, hi));
    let k = b.ins().smax(k, lo);
    b.ins().smin(k, hi)
}

fn tables(p: &QuantParams) -> Vec<Aux> {
    vec![Aux::F32(p.scales.clone()), Aux::I64(p.zero_points.iter().map(|&z| i64::from(z)).collect())]
}

/// ONNX `QuantizeLinear` of an f32 tensor to u8 or i8.
pub(crate) fn emit_quantize(jit: &mut Jit, cx: &EmitCx, p: &QuantParams, to: DType) -> Result<Emitted, CompileError> {
    let (x, y) = (&cx.inputs[0], &cx.outputs[0]);
    let range = to.int_range().filter(|_| to.is_quantized() && x.dtype == DType::F32 && y.dtype == to);
    let Some((lo, hi)) = range else {
        return Err(cx.unsupported(format!("quantize {x} to {to}")));
    };
    let layout = channel_layout(cx, p)?;
    let n = x.numel() as i64;
    let (x_arg, y_arg, s_arg, z_arg) = (cx.in_arg(0), cx.out_arg(0), cx.aux_arg(0), cx.aux_arg(1));
    let grain = balanced_grain(n, GRAIN, 64);
    let func = jit.kernel(cx.name, |kb| {
        let (px, py) = (kb.arg(x_arg), kb.arg(y_arg));
        let tabs = (kb.arg(s_arg), kb.arg(z_arg));
        let (l, h) = (kb.lo, kb.hi);
        let (start, end) = unit_span(&mut kb.b, l, h, n, grain);
        // Per tensor: 16 elements per step in f32x4 (the scalar loop finishes the tail).
        let start = if layout.1 == 1 {
            let (s, z) = (p.scales[0], p.zero_points[0]);
            vector_steps(kb, start, end, |kb, i| quantize16(kb, px, py, i, (s, z), (lo, hi), to))
        } else {
            start
        };
        kb_loop_dyn(kb, start, end, 1, |kb, i| {
            let (s, z) = params_of(kb, tabs, layout, i);
            let pi = offset(kb, px, i, 4);
            let b = &mut kb.b;
            let v = b.ins().load(types::F32, mem(), pi, 0);
            let q = b.ins().fdiv(v, s);
            let r = b.ins().nearest(q);
            // NaN converts to 0 and ±∞ saturate, as `as i64` in the reference.
            let k = b.ins().fcvt_to_sint_sat(types::I64, r);
            let k = clamp(b, k, -QUOTIENT_BOUND, QUOTIENT_BOUND);
            let k = b.ins().iadd(k, z);
            let k = clamp(b, k, lo, hi);
            let k = b.ins().ireduce(types::I8, k);
            let po = offset(kb, py, i, 1);
            kb.b.ins().store(mem(), k, po, 0);
        });
    })?;
    Ok(Emitted::parallel(func, tables(p), units_of(n, grain)))
}

/// ONNX `DequantizeLinear` of a u8, i8 or i32 tensor to f32.
pub(crate) fn emit_dequantize(jit: &mut Jit, cx: &EmitCx, p: &QuantParams) -> Result<Emitted, CompileError> {
    let (x, y) = (&cx.inputs[0], &cx.outputs[0]);
    if !(matches!(x.dtype, DType::U8 | DType::I8 | DType::I32) && y.dtype == DType::F32) {
        return Err(cx.unsupported(format!("dequantize {x}")));
    }
    let layout = channel_layout(cx, p)?;
    let n = x.numel() as i64;
    let from = x.dtype;
    let es = from.size_bytes() as i64;
    let (x_arg, y_arg, s_arg, z_arg) = (cx.in_arg(0), cx.out_arg(0), cx.aux_arg(0), cx.aux_arg(1));
    let grain = balanced_grain(n, GRAIN, 64);
    let func = jit.kernel(cx.name, |kb| {
        let (px, py) = (kb.arg(x_arg), kb.arg(y_arg));
        let tabs = (kb.arg(s_arg), kb.arg(z_arg));
        let (l, h) = (kb.lo, kb.hi);
        let (start, end) = unit_span(&mut kb.b, l, h, n, grain);
        // 8-bit per tensor: 16 elements per step in f32x4 (the scalar loop finishes the tail).
        let start = if layout.1 == 1 && from != DType::I32 {
            let (s, z) = (p.scales[0], p.zero_points[0]);
            vector_steps(kb, start, end, |kb, i| dequantize16(kb, px, py, i, (s, z), from))
        } else {
            start
        };
        kb_loop_dyn(kb, start, end, 1, |kb, i| {
            let (s, z) = params_of(kb, tabs, layout, i);
            let pi = offset(kb, px, i, es);
            let b = &mut kb.b;
            let k = match from {
                DType::U8 => b.ins().uload8(types::I64, mem(), pi, 0),
                DType::I8 => b.ins().sload8(types::I64, mem(), pi, 0),
                _ => b.ins().sload32(mem(), pi, 0),
            };
            let d = b.ins().isub(k, z);
            let f = b.ins().fcvt_from_sint(types::F32, d);
            let r = b.ins().fmul(f, s);
            let po = offset(kb, py, i, 4);
            kb.b.ins().store(mem(), r, po, 0);
        });
    })?;
    Ok(Emitted::parallel(func, tables(p), units_of(n, grain)))
}

/// Runs `step(i)` for `i = start, start + 16, …` while `i + 16 ≤ end`; returns where it stopped.
fn vector_steps(kb: &mut Kb, start: Value, end: Value, step: impl FnMut(&mut Kb, Value)) -> Value {
    steps_of(kb, start, end, 16, step)
}

/// Runs `step(i)` for `i = start, start + n, …` while `i + n ≤ end` (`n` a power of two);
/// returns where it stopped.
fn steps_of(kb: &mut Kb, start: Value, end: Value, n: i64, mut step: impl FnMut(&mut Kb, Value)) -> Value {
    // The last full step: start + ⌊(end − start) / n⌋·n.
    let len = kb.b.ins().isub(end, start);
    let full = kb.b.ins().band_imm_s(len, !(n - 1));
    let stop = kb.b.ins().iadd(start, full);
    kb_loop_dyn(kb, start, stop, n, |kb, i| step(kb, i));
    stop
}

/// `Op::Lookup`: `y[i] = table[byte(a[i])]` or `table[256·byte(a[i]) + byte(b[i])]` (the table
/// is input 0, a weight or any tensor), eight elements per step then one at a time. A 256-entry
/// table is 256 bytes or 1 KiB and stays in L1; the 64 KiB two-operand table mostly in L2.
pub(crate) fn emit_lookup(jit: &mut Jit, cx: &EmitCx) -> Result<Emitted, CompileError> {
    let (table, y) = (&cx.inputs[0], &cx.outputs[0]);
    let operands = &cx.inputs[1..];
    let ok = matches!(table.dtype, DType::F32 | DType::U8 | DType::I8)
        && y.dtype == table.dtype
        && (1..=2).contains(&operands.len())
        && operands.iter().all(|t| t.dtype.is_quantized() && t.shape == y.shape);
    if !ok {
        return Err(cx.unsupported(format!("lookup in {table} of {} operand(s)", operands.len())));
    }
    let n = y.numel() as i64;
    let es = y.dtype.size_bytes() as i64;
    let ty = if es == 4 { types::I32 } else { types::I8 };
    let (t_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let op_args: Vec<usize> = (1..=operands.len()).map(|i| cx.in_arg(i)).collect();
    // Byte tables on an int8 tier call a precompiled loop: one operand the VBMI register table
    // where the host has it, else (and for two operands) a gather from a copy of the constant
    // table with the 3 bytes of padding the gathers' dword loads need (an aux buffer); a run-time
    // table or an f32 table stays on the loop below.
    let table32 = cx.consts.first().copied().flatten().and_then(|t| match t.data() {
        cnnc_ir::TensorData::U8(v) => Some(v.iter().copied().chain([0; 3]).collect::<Vec<u8>>()),
        cnnc_ir::TensorData::I8(v) => Some(v.iter().map(|&b| b as u8).chain([0; 3]).collect()),
        _ => None,
    });
    let call = match (super::qlinear::int8_kernels()?, es) {
        (Some(k), 1) => match (k.lookup_u8, operands.len(), &table32) {
            (Some(f), 1, _) => Some((f, false)),
            (_, 1, Some(_)) => Some((k.lookup_avx2, true)),
            (_, 2, Some(_)) => Some((k.lookup2_avx512.unwrap_or(k.lookup_avx2), true)),
            _ => None,
        },
        _ => None,
    };
    let aux: Vec<Aux> = match (&call, table32) {
        (Some((_, true)), Some(t)) => vec![Aux::Bytes(t)],
        _ => Vec::new(),
    };
    let aux_arg = cx.aux_arg(0);
    let grain = balanced_grain(n, GRAIN, 64);
    let func = jit.kernel(cx.name, |kb| {
        let (pt, py) = (kb.arg(t_arg), kb.arg(y_arg));
        let ops: Vec<Value> = op_args.iter().map(|&a| kb.arg(a)).collect();
        let (l, h) = (kb.lo, kb.hi);
        let (start, end) = unit_span(&mut kb.b, l, h, n, grain);
        if let Some((f, gather)) = call {
            // `lookup_u8_vbmi(table, a + start, y + start, len)` or
            // `lookup…(table32, a + start, b + start or null, y + start, len)`: in bounds, as the
            // unit's span is within the n elements of the operands and `y`.
            let ptr = types::I64;
            let mut args = Vec::with_capacity(5);
            args.push(if gather { kb.arg(aux_arg) } else { pt });
            args.push(offset(kb, ops[0], start, 1));
            if gather {
                let b = match ops.get(1) {
                    Some(&p) => offset(kb, p, start, 1),
                    None => kb.b.ins().iconst(ptr, 0),
                };
                args.push(b);
            }
            args.push(offset(kb, py, start, 1));
            args.push(kb.b.ins().isub(end, start));
            let mut sig = Signature::new(CallConv::SystemV);
            sig.params.extend(args.iter().map(|_| AbiParam::new(ptr)));
            let sig = kb.b.import_signature(sig);
            let callee = kb.b.ins().iconst(ptr, f as i64);
            kb.b.ins().call_indirect(sig, callee, &args);
            return;
        }
        // Pointers advance with `i`: operand bytes at `a + i`, outputs at `y + i·es`.
        let advance = |kb: &mut Kb, i: Value| -> Vec<Value> {
            let mut v: Vec<Value> = ops.iter().map(|&p| offset(kb, p, i, 1)).collect();
            v.push(offset(kb, py, i, es));
            v
        };
        let stop = steps_of(kb, start, end, 8, |kb, i| {
            let p = advance(kb, i);
            for k in 0..8 {
                lookup_one(kb, pt, &p, k, es, ty);
            }
        });
        kb_loop_dyn(kb, stop, end, 1, |kb, i| {
            let p = advance(kb, i);
            lookup_one(kb, pt, &p, 0, es, ty);
        });
    })?;
    Ok(Emitted::parallel(func, aux, units_of(n, grain)))
}

/// One element of [`emit_lookup`]: `p` holds the operands' pointers then the output's, all at
/// the current step; `k` is the element within the step.
fn lookup_one(kb: &mut Kb, table: Value, p: &[Value], k: i32, es: i64, ty: types::Type) {
    let b = &mut kb.b;
    let (operands, out) = p.split_at(p.len() - 1);
    let mut idx = b.ins().uload8(types::I64, mem(), operands[0], k);
    if let Some(&p2) = operands.get(1) {
        let lo = b.ins().uload8(types::I64, mem(), p2, k);
        let hi = b.ins().ishl_imm_u(idx, 8);
        idx = b.ins().bor(hi, lo);
    }
    let at = if es == 4 { b.ins().ishl_imm_u(idx, 2) } else { idx };
    let at = b.ins().iadd(table, at);
    let v = b.ins().load(ty, mem(), at, 0);
    b.ins().store(mem(), v, out[0], k * es as i32);
}

/// Quantizes `x[i..i + 16]` (per tensor) into `y[i..i + 16]` exactly as the scalar loop: the
/// f32 quotient rounded half to even, NaN → 0, plus the zero point and clamped to `[lo, hi]`
/// in f32 (exact: the rounded quotient is an integer, and any value beyond `2²⁴` clamps anyway),
/// converted and narrowed with saturation.
///
/// Nine instructions per 4 lanes: `divps`, `roundps`, `cmpps`+`andps` (NaN → 0), `addps`, then
/// `maxps`/`minps` (the compare-and-select form Cranelift lowers to one instruction; no NaN is
/// left to need the IEEE form) and a plain `cvttps2dq`, exact on the clamped integers.
fn quantize16(kb: &mut Kb, px: Value, py: Value, i: Value, (s, z): (f32, i32), (lo, hi): (i64, i64), to: DType) {
    let base = offset(kb, px, i, 4);
    let b = &mut kb.b;
    let splat = |b: &mut FunctionBuilder, v: f32| {
        let c = b.ins().f32const(v);
        b.ins().splat(types::F32X4, c)
    };
    let (sv, zv, lov, hiv) = (splat(b, s), splat(b, z as f32), splat(b, lo as f32), splat(b, hi as f32));
    let mut ints = Vec::with_capacity(4);
    for j in 0..4 {
        let v = b.ins().load(types::F32X4, mem(), base, 16 * j);
        let q = b.ins().fdiv(v, sv);
        let r = b.ins().nearest(q);
        // NaN → +0: the lane mask of `r == r` (all ones, or zero for NaN) as f32 bits, and `r`.
        let ordered = b.ins().fcmp(FloatCC::Equal, r, r);
        let ordered = b.ins().bitcast(types::F32X4, MemFlagsData::new(), ordered);
        let r = b.ins().band(ordered, r);
        let t = b.ins().fadd(r, zv);
        // max(t, lo) then min(t, hi) as `bitselect(t ≶ k, …)`: one `maxps`/`minps` each.
        let above = b.ins().fcmp(FloatCC::LessThan, lov, t);
        let above = b.ins().bitcast(types::F32X4, MemFlagsData::new(), above);
        let t = b.ins().bitselect(above, t, lov);
        let below = b.ins().fcmp(FloatCC::LessThan, t, hiv);
        let below = b.ins().bitcast(types::F32X4, MemFlagsData::new(), below);
        let t = b.ins().bitselect(below, t, hiv);
        ints.push(b.ins().x86_cvtt2dq(types::I32X4, t));
    }
    let lo16 = b.ins().snarrow(ints[0], ints[1]);
    let hi16 = b.ins().snarrow(ints[2], ints[3]);
    let bytes = if to == DType::U8 { b.ins().unarrow(lo16, hi16) } else { b.ins().snarrow(lo16, hi16) };
    let at = offset(kb, py, i, 1);
    kb.b.ins().store(mem(), bytes, at, 0);
}

/// Dequantizes the 8-bit `x[i..i + 16]` (per tensor) into `y[i..i + 16]` exactly as the scalar
/// loop: `(q − z)` is an integer exact in f32 either way, then one f32 multiply.
fn dequantize16(kb: &mut Kb, px: Value, py: Value, i: Value, (s, z): (f32, i32), from: DType) {
    let at = offset(kb, px, i, 1);
    let out = offset(kb, py, i, 4);
    let b = &mut kb.b;
    let q = b.ins().load(types::I8X16, mem(), at, 0);
    let (sv, zv) = (b.ins().f32const(s), b.ins().f32const(z as f32));
    let (sv, zv) = (b.ins().splat(types::F32X4, sv), b.ins().splat(types::F32X4, zv));
    let unsigned = from == DType::U8;
    let widen_lo =
        |b: &mut FunctionBuilder, v: Value| if unsigned { b.ins().uwiden_low(v) } else { b.ins().swiden_low(v) };
    let widen_hi =
        |b: &mut FunctionBuilder, v: Value| if unsigned { b.ins().uwiden_high(v) } else { b.ins().swiden_high(v) };
    let halves = [widen_lo(b, q), widen_hi(b, q)];
    for (h, half) in halves.into_iter().enumerate() {
        for (k, quarter) in [widen_lo(b, half), widen_hi(b, half)].into_iter().enumerate() {
            let f = b.ins().fcvt_from_sint(types::F32X4, quarter);
            let d = b.ins().fsub(f, zv);
            let y = b.ins().fmul(d, sv);
            b.ins().store(mem(), y, out, (16 * (2 * h + k)) as i32);
        }
    }
}
