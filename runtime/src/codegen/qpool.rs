//! Max-pool on u8/i8 tensors (the quantized max-pool `qdq-max-pool` makes of
//! `Q(max-pool(DQ(x)))`): the maximum of each window's bytes, the type's minimum for a window
//! without input taps (the reference's `max_pool` on bytes).
//!
//! 1-D and 2-D windows. A work unit is one plane (units of single rows would have threads
//! writing the same cache lines); per output row, the valid input rows of its windows are
//! max-ed into a per-thread scratch row (16 bytes per vector, `pmaxub` /
//! `pmaxsb`) laid out with the left padding in front and the type's minimum wherever no input
//! lands, so the horizontal pass needs no edge cases: strides 1 and 2 take 16 outputs per
//! vector (stride 2 keeps the even bytes of two vectors with one shuffle), other strides one at
//! a time. Narrow rows (small maps) stay vectorized: a row's last `iw % 16` bytes are read by
//! one 16-byte load wherever it stays inside the input, and the last `ow % 16` outputs are one
//! more vector group whose store spills into the next rows' outputs (rewritten after it by the
//! same call; rows whose spill would pass the plane's end store one byte at a time).

use cnnc_ir::{DType, PoolAttrs};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{ConstantData, Immediate, InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::builder::{for_range, if_else, mem};

use super::gemm::kit::{for_dyn, offset};
use super::{Aux, CompileError, EmitCx, Emitted, Jit};

pub(crate) fn emit_max_pool(jit: &mut Jit, cx: &EmitCx, a: &PoolAttrs) -> Result<Emitted, CompileError> {
    let (xs, ys) = (&cx.inputs[0].shape, &cx.outputs[0].shape);
    let dtype = cx.inputs[0].dtype;
    let signed = match dtype {
        DType::U8 => false,
        DType::I8 => true,
        other => return Err(cx.unsupported(format!("a max-pool on {other}"))),
    };
    let ns = a.kernel.len();
    if !(1..=2).contains(&ns) || xs.len() != ns + 2 || ys.len() != ns + 2 {
        return Err(cx.unsupported(format!("a {ns}-D max-pool on {dtype}")));
    }
    let two = |v: &[usize], fill: usize| if v.len() == 2 { [v[0], v[1]] } else { [fill, v[0]] };
    let ([ih, iw], [oh, ow]) = (two(&xs[2..], 1), two(&ys[2..], 1));
    let ([kh, kw], [sh, sw], [dh, dw]) = (two(&a.kernel, 1), two(&a.strides, 1), two(&a.dilations, 1));
    let [ph, pw] = two(&a.pads[..ns], 0);
    let planes = xs[0] * xs[1];
    // Per output row: the byte offsets of its valid input rows in a plane.
    let mut row_ptr = vec![0i64];
    let mut row_list = Vec::new();
    for r in 0..oh {
        for k in 0..kh {
            let y = (r * sh + k * dh) as i64 - ph as i64;
            if (0..ih as i64).contains(&y) {
                row_list.push(y * iw as i64);
            }
        }
        row_ptr.push(row_list.len() as i64);
    }
    // The scratch row: `pw` bytes of padding, the input row, then the minimum as far as any
    // window (and the 16- or 32-byte vector reads of the last vector group) reaches.
    if row_list.is_empty() {
        // Every window is padding: the table is never read, but keep it non-empty.
        row_list.push(0);
    }
    // Room for a 16-byte tail load past the row (`pw + iw + 16`) and for a last, partial
    // 16-output group read whole.
    let width = (pw + iw + 16).max(ow.next_multiple_of(16) * sw + (kw - 1) * dw + 32).next_multiple_of(16);
    let vec_cols = if sw <= 2 { ow / 16 * 16 } else { 0 };
    // The last `ow % 16` outputs of a row as one more vector group, whose 16-byte store spills
    // into the next rows' outputs (rewritten after it by the same call); on rows whose spill
    // would pass the plane's end, one at a time.
    let partial = sw <= 2 && ow % 16 != 0;
    let spill_rows = if partial { (oh * ow).saturating_sub(vec_cols + 16) / ow.max(1) + 1 } else { 0 };
    let spill_rows = if partial && oh * ow >= vec_cols + 16 { spill_rows.min(oh) } else { 0 };
    let (full, tail) = (iw / 16 * 16, iw % 16);
    let x_bytes = (planes * ih * iw) as i64;
    let units = planes as u64;
    let aux = vec![Aux::I64(row_ptr), Aux::I64(row_list), Aux::Scratch(width)];
    let (x_arg, y_arg) = (cx.in_arg(0), cx.out_arg(0));
    let aux_args: [usize; 3] = std::array::from_fn(|i| cx.aux_arg(i));
    let min: i64 = if signed { -128 } else { 0 };
    jit.note_variant(if signed { "max-pool-i8" } else { "max-pool-u8" });
    let func = jit.kernel(cx.name, |kb| {
        if units == 0 || ow == 0 {
            return;
        }
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let [rp, rl, row] = aux_args.map(|i| kb.arg(i));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let max =
            |b: &mut FunctionBuilder, u: Value, v: Value| if signed { b.ins().smax(u, v) } else { b.ins().umax(u, v) };
        let load8 = |b: &mut FunctionBuilder, p: Value| {
            if signed { b.ins().sload8(types::I32, mem(), p, 0) } else { b.ins().uload8(types::I32, mem(), p, 0) }
        };
        let scalar_max = |b: &mut FunctionBuilder, u: Value, v: Value| {
            let cc = if signed { IntCC::SignedGreaterThan } else { IntCC::UnsignedGreaterThan };
            let gt = b.ins().icmp(cc, u, v);
            b.ins().select(gt, u, v)
        };
        let evens: Vec<u8> = (0..16).map(|i| 2 * i).collect();
        let evens: Immediate = b.func.dfg.immediates.push(ConstantData::from(evens));
        let min8 = b.ins().iconst(types::I8, min);
        let minv = b.ins().splat(types::I8X16, min8);
        for_dyn(b, lo, hi, 1, |b, plane| {
            let xp = offset(b, x, plane, (ih * iw) as i64, 0);
            let yp = offset(b, y, plane, (oh * ow) as i64, 0);
            for_range(b, 0, oh as i64, 1, |b, r| {
                let yr = offset(b, yp, r, ow as i64, 0);
                for_range(b, 0, (width / 16) as i64, 1, |b, i| {
                    let p = offset(b, row, i, 16, 0);
                    b.ins().store(mem(), minv, p, 0);
                });
                let at = offset(b, rp, r, 8, 0);
                let t0 = b.ins().load(types::I64, mem(), at, 0);
                let t1 = b.ins().load(types::I64, mem(), at, 8);
                let s0 = b.ins().iadd_imm_s(row, pw as i64);
                for_dyn(b, t0, t1, 1, |b, t| {
                    let off = offset(b, rl, t, 8, 0);
                    let off = b.ins().load(types::I64, mem(), off, 0);
                    let src = b.ins().iadd(xp, off);
                    for_range(b, 0, (iw / 16) as i64, 1, |b, i| {
                        let (p, s) = (offset(b, src, i, 16, 0), offset(b, s0, i, 16, 0));
                        let (v, w) = (b.ins().load(types::I8X16, mem(), p, 0), b.ins().load(types::I8X16, mem(), s, 0));
                        let m = max(b, v, w);
                        b.ins().store(mem(), m, s, 0);
                    });
                    if tail == 0 {
                        return;
                    }
                    // The row's last `iw % 16` bytes by one 16-byte load where it stays inside
                    // the input (the bytes past the row land in scratch past `pw + iw`, reset
                    // below), else one at a time.
                    let p = b.ins().iadd_imm_s(src, full as i64);
                    let end = b.ins().iadd_imm_s(p, 16);
                    let x_end = b.ins().iadd_imm_s(x, x_bytes);
                    let fits = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, x_end);
                    if_else(
                        b,
                        fits,
                        |b| {
                            let sp = b.ins().iadd_imm_s(s0, full as i64);
                            let (v, w) =
                                (b.ins().load(types::I8X16, mem(), p, 0), b.ins().load(types::I8X16, mem(), sp, 0));
                            let m = max(b, v, w);
                            b.ins().store(mem(), m, sp, 0);
                        },
                        |b| {
                            for_range(b, full as i64, iw as i64, 1, |b, i| {
                                let (p, s) = (b.ins().iadd(src, i), b.ins().iadd(s0, i));
                                let (v, w) = (load8(b, p), load8(b, s));
                                let m = scalar_max(b, v, w);
                                b.ins().istore8(mem(), m, s, 0);
                            });
                        },
                    );
                });
                if tail != 0 {
                    // Past the row: the type's minimum again (a tail load may have left bytes).
                    let after = b.ins().iadd_imm_s(s0, iw as i64);
                    b.ins().store(mem(), minv, after, 0);
                }
                let group = |b: &mut FunctionBuilder, g: Value| {
                    let base = offset(b, row, g, (16 * sw) as i64, 0);
                    let mut acc = minv;
                    for k in 0..kw {
                        let off = (k * dw) as i32;
                        let v = if sw == 1 {
                            b.ins().load(types::I8X16, mem(), base, off)
                        } else {
                            let lo = b.ins().load(types::I8X16, mem(), base, off);
                            let hi = b.ins().load(types::I8X16, mem(), base, off + 16);
                            b.ins().shuffle(lo, hi, evens)
                        };
                        acc = max(b, acc, v);
                    }
                    let out = offset(b, yr, g, 16, 0);
                    b.ins().store(mem(), acc, out, 0);
                };
                for_range(b, 0, (vec_cols / 16) as i64, 1, group);
                let one_at_a_time = |b: &mut FunctionBuilder| {
                    for_range(b, vec_cols as i64, ow as i64, 1, |b, c| {
                        let base = offset(b, row, c, sw as i64, 0);
                        let mut acc = b.ins().iconst(types::I32, min);
                        for k in 0..kw {
                            let p = b.ins().iadd_imm_s(base, (k * dw) as i64);
                            let v = load8(b, p);
                            acc = scalar_max(b, acc, v);
                        }
                        let out = b.ins().iadd(yr, c);
                        b.ins().istore8(mem(), acc, out, 0);
                    });
                };
                if spill_rows == 0 {
                    one_at_a_time(b);
                } else {
                    let whole = b.ins().icmp_imm_s(IntCC::SignedLessThan, r, spill_rows as i64);
                    let g = b.ins().iconst(types::I64, (vec_cols / 16) as i64);
                    if_else(b, whole, |b| group(b, g), one_at_a_time);
                }
            });
        });
    })?;
    Ok(Emitted::parallel(func, aux, units))
}
