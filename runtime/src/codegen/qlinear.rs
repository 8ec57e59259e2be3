//! Quantized conv, gemm and matmul ([`QLinear`]). When the host has an int8 tier
//! ([`int8_kernels`]), depthwise convs with a quantized output go to the depthwise kernel's
//! driver (`qdepthwise.rs`), other convs to the int8 microkernel driver (`qconv.rs`), and 2-D
//! gemms and matmuls with constant weights to the matrix-vector kernels (`qgemv.rs`); the rest
//! (depthwise convs with an i32 or f32 output, run-time weights, and everything under
//! `CNNC_KERNELS=cranelift`) to the portable Cranelift kernel here, a plain widening loop that
//! computes exactly the reference's integers (`reference/qlinear.rs`).
//!
//! Each output element sums `(x − zx) · (w − zw[c])` in i32 (wrapping, as every tier does; an
//! i32 sum is the same in any order) over its reduction, one tap at a time: the weights are
//! centred and packed at load (`[C_out][K]` i32, `K` = input channels per group × taps for a
//! conv, the inner dimension for a gemm/matmul); a conv tap outside the input (padding)
//! contributes 0, which is `x = zx` as ONNX defines it. Then the i32 bias and [`QLinearOut`]:
//! the accumulator, `acc · sx·sw[c]` in f32, or `round_half_even(clamp(acc · m[c], lo − zy,
//! hi − zy)) + zy` with `m[c] = (sx·sw[c]) / sy` ([`QLinear::requantize`]).
//!
//! Work units: output rows (a conv's `(image, channel, output row)`, a product's row), each
//! computed whole by one call, so results do not depend on the thread count.

use cnnc_ir::{DType, Op, QLinear, QLinearOut, Tensor, TensorData};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::builder::{for_range, mem};
use super::gemm::kit::{for_dyn, offset};
use super::{Aux, CompileError, EmitCx, Emitted, Jit};
use crate::microkernel::int8::{QKernels, QTier, qkernels};

/// The reduction geometry of one output element.
enum Shape {
    /// A 2-D conv (1-D embedded with a unit row axis): `[N, C, ih, iw]` → `[N, M, oh, ow]`.
    Conv {
        n: usize,
        c: usize,
        m: usize,
        group: usize,
        inp: [usize; 2],
        out: [usize; 2],
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        p: [usize; 2],
    },
    /// `rows × k` times `k × cols`; `x` element `(r, kk)` at `r·k + kk`, or `kk·rows + r` when
    /// transposed (a gemm's `trans_a`).
    Product { rows: usize, k: usize, cols: usize, trans_x: bool },
}

/// The weight's integer values as i32.
fn ints(t: &Tensor) -> Option<Vec<i32>> {
    match t.data() {
        TensorData::U8(v) => Some(v.iter().map(|&x| i32::from(x)).collect()),
        TensorData::I8(v) => Some(v.iter().map(|&x| i32::from(x)).collect()),
        _ => None,
    }
}

/// The geometry and the centred weights `[C_out][K]`.
fn layout(cx: &EmitCx, q: &QLinear) -> Result<(Shape, Vec<i32>, usize), CompileError> {
    let w =
        cx.consts.get(1).copied().flatten().ok_or_else(|| cx.unsupported("a quantized op with run-time weights"))?;
    let wv = ints(w).ok_or_else(|| cx.unsupported(format!("quantized weights of type {}", w.dtype())))?;
    let ws = w.shape();
    let zw = |c: usize| if q.w.axis.is_some() { q.w.zero_points[c] } else { q.w.zero_points[0] };
    let (xs, ys) = (&cx.inputs[0].shape, &cx.outputs[0].shape);
    match &q.base {
        Op::Conv(a) if a.kernel.len() <= 2 => {
            let e = |v: &[usize], fill: usize| -> [usize; 2] { if v.len() == 2 { [v[0], v[1]] } else { [fill, v[0]] } };
            let sp = |s: &[usize]| if s.len() == 4 { [s[2], s[3]] } else { [1, s[2]] };
            let ns = a.kernel.len();
            let shape = Shape::Conv {
                n: xs[0],
                c: xs[1],
                m: ys[1],
                group: a.group,
                inp: sp(xs),
                out: sp(ys),
                k: e(&a.kernel, 1),
                s: e(&a.strides, 1),
                d: e(&a.dilations, 1),
                p: e(&a.pads[..ns], 0),
            };
            let k: usize = ws[1..].iter().product();
            let wc = (0..ws[0] * k).map(|i| wv[i] - zw(i / k.max(1))).collect();
            Ok((shape, wc, k))
        }
        Op::Conv(_) => Err(cx.unsupported("a quantized 3-D conv")),
        Op::Gemm { trans_a, trans_b, .. } => {
            let (xr, xc) = (xs[0], xs[1]);
            let (rows, k) = if *trans_a { (xc, xr) } else { (xr, xc) };
            let cols = ys[1];
            // w is [K, N], or [N, K] when transposed: pack [N][K].
            let at = |j: usize, kk: usize| if *trans_b { wv[j * k + kk] } else { wv[kk * cols + j] };
            let wc = (0..cols * k).map(|i| at(i / k.max(1), i % k.max(1)) - zw(i / k.max(1))).collect();
            Ok((Shape::Product { rows, k, cols, trans_x: *trans_a }, wc, k))
        }
        Op::MatMul if ws.len() == 2 && xs.len() >= 2 => {
            let (k, cols) = (ws[0], ws[1]);
            let rows = xs.iter().product::<usize>() / k.max(1);
            let wc = (0..cols * k).map(|i| wv[(i % k.max(1)) * cols + i / k.max(1)] - zw(i / k.max(1))).collect();
            Ok((Shape::Product { rows, k, cols, trans_x: false }, wc, k))
        }
        other => Err(cx.unsupported(format!("a quantized {}", other.name()))),
    }
}

/// The int8 microkernels of the tier `CNNC_KERNELS` forces (`amx`, `vnni`, `avx2`; `cranelift`: none,
/// the portable kernel), else of the host's best tier (read at each compile). Forcing a tier the
/// host lacks is an error, never a silent fallback.
pub(crate) fn int8_kernels() -> Result<Option<QKernels>, CompileError> {
    let forced = std::env::var("CNNC_KERNELS").map(|v| v.to_ascii_lowercase()).unwrap_or_default();
    let tier = match forced.as_str() {
        "cranelift" => return Ok(None),
        "amx" => QTier::Amx,
        "vnni" => QTier::Vnni,
        "avx2" => QTier::Avx2,
        _ => return Ok(QTier::best().and_then(qkernels)),
    };
    qkernels(tier).map(Some).ok_or_else(|| {
        CompileError::Backend(format!(
            "CNNC_KERNELS={forced}: this CPU lacks the {tier:?} tier's features ({})",
            match tier {
                QTier::Amx => "avx2, avx512f, avx512bw, avx512vnni, amx-tile, amx-int8 and Linux's AMX permission",
                QTier::Vnni => "avx2, avx512f, avx512bw, avx512vnni",
                QTier::Avx2 => "avx2",
            }
        ))
    })
}

pub(crate) fn emit(jit: &mut Jit, cx: &EmitCx, q: &QLinear) -> Result<Emitted, CompileError> {
    emit_with(jit, cx, q, int8_kernels()?)
}

/// [`emit`] with the int8 microkernels `mk` (`None`: the portable kernel only).
pub(crate) fn emit_with(
    jit: &mut Jit,
    cx: &EmitCx,
    q: &QLinear,
    mk: Option<QKernels>,
) -> Result<Emitted, CompileError> {
    if let (Op::Conv(a), Some(mk)) = (&q.base, mk) {
        if super::qdepthwise::supports(cx, q) {
            return super::qdepthwise::emit(jit, cx, q, a, mk);
        }
        if super::qwinograd::supports(cx, q) {
            return super::qwinograd::emit(jit, cx, q, a, mk);
        }
        if super::qconv::supports(cx, q) {
            return super::qconv::emit(jit, cx, q, a, mk);
        }
    }
    if let Some(mk) = mk
        && super::qgemv::supports(cx, q)
    {
        return super::qgemv::emit(jit, cx, q, mk);
    }
    let x_ty = cx.inputs[0].dtype;
    if !x_ty.is_quantized() {
        return Err(cx.unsupported(format!("a quantized op on {x_ty} input")));
    }
    let (shape, wc, k) = layout(cx, q)?;
    let c_out = wc.len() / k.max(1);
    // Per-channel multipliers (f32 and requantized outputs).
    let mult: Vec<f32> = (0..c_out)
        .map(|c| match q.out {
            QLinearOut::Quantized { .. } => q.requant_scale(c),
            _ => q.acc_scale(c),
        })
        .collect();
    let bounds = q.out_bounds();
    let zy = match &q.out {
        QLinearOut::Quantized { params, .. } => params.zero_points[0],
        _ => 0,
    };
    let out_ty = cx.outputs[0].dtype;
    let zx = i64::from(q.x.zero_points[0]);
    let has_bias = cx.inputs.len() > 2;
    let (x_arg, y_arg, b_arg) = (cx.in_arg(0), cx.out_arg(0), cx.in_arg(2));
    let (w_arg, m_arg) = (cx.aux_arg(0), cx.aux_arg(1));
    let rows = match shape {
        Shape::Conv { n, m, out, .. } => n * m * out[0],
        Shape::Product { rows, .. } => rows,
    } as i64;
    let func = jit.kernel(cx.name, |kb| {
        let (x, y, w, mt) = (kb.arg(x_arg), kb.arg(y_arg), kb.arg(w_arg), kb.arg(m_arg));
        let bias = has_bias.then(|| kb.arg(b_arg));
        let (lo, hi) = (kb.lo, kb.hi);
        let b = &mut kb.b;
        let acc = b.declare_var(types::I32);
        let load_x = |b: &mut FunctionBuilder, at: Value| -> Value {
            let v = match x_ty {
                DType::U8 => b.ins().uload8(types::I32, mem(), at, 0),
                _ => b.ins().sload8(types::I32, mem(), at, 0),
            };
            b.ins().iadd_imm_s(v, -zx)
        };
        // acc += v · w[at]
        let mac = |b: &mut FunctionBuilder, v: Value, wp: Value| {
            let wv = b.ins().load(types::I32, mem(), wp, 0);
            let p = b.ins().imul(v, wv);
            let a = b.use_var(acc);
            let s = b.ins().iadd(a, p);
            b.def_var(acc, s);
        };
        // Bias and output of channel `ch` at element offset `at`.
        let finish = |b: &mut FunctionBuilder, ch: Value, at: Value| {
            let mut a = b.use_var(acc);
            if let Some(bp) = bias {
                let p = offset(b, bp, ch, 4, 0);
                let bv = b.ins().load(types::I32, mem(), p, 0);
                a = b.ins().iadd(a, bv);
            }
            let pm = offset(b, mt, ch, 4, 0);
            match out_ty {
                DType::I32 => {
                    let p = offset(b, y, at, 4, 0);
                    b.ins().store(mem(), a, p, 0);
                }
                DType::F32 => {
                    let f = b.ins().fcvt_from_sint(types::F32, a);
                    let m = b.ins().load(types::F32, mem(), pm, 0);
                    let r = b.ins().fmul(f, m);
                    let p = offset(b, y, at, 4, 0);
                    b.ins().store(mem(), r, p, 0);
                }
                _ => {
                    let (lo, hi) = bounds.unwrap_or((0, 255));
                    let f = b.ins().fcvt_from_sint(types::F32, a);
                    let m = b.ins().load(types::F32, mem(), pm, 0);
                    let v = b.ins().fmul(f, m);
                    let (l, h) = (b.ins().f32const((lo - zy) as f32), b.ins().f32const((hi - zy) as f32));
                    // max then min, as `QLinear::requantize` (no NaN can occur).
                    let below = b.ins().fcmp(FloatCC::LessThan, v, l);
                    let v = b.ins().select(below, l, v);
                    let above = b.ins().fcmp(FloatCC::GreaterThan, v, h);
                    let v = b.ins().select(above, h, v);
                    let r = b.ins().nearest(v);
                    let i = b.ins().fcvt_to_sint(types::I32, r);
                    let i = b.ins().iadd_imm_s(i, i64::from(zy));
                    let i = b.ins().ireduce(types::I8, i);
                    let p = offset(b, y, at, 1, 0);
                    b.ins().store(mem(), i, p, 0);
                }
            }
        };
        let cap = b.ins().iconst(types::I64, rows);
        let hi = b.ins().smin(hi, cap);
        for_dyn(b, lo, hi, 1, |b, r| match shape {
            Shape::Conv { c, m, group, inp, out, k: kk, s, d, p, .. } => {
                let (cg, mg) = (c / group, m / group);
                let kvol = (kk[0] * kk[1]) as i64;
                let oy = b.ins().urem_imm_u(r, out[0] as i64);
                let rest = b.ins().udiv_imm_u(r, out[0] as i64);
                let mm = b.ins().urem_imm_u(rest, m as i64);
                let n = b.ins().udiv_imm_u(rest, m as i64);
                let g = b.ins().udiv_imm_u(mm, mg as i64);
                // First input channel plane of this image and group.
                let nc = b.ins().imul_imm_s(n, c as i64);
                let gc = b.ins().imul_imm_s(g, cg as i64);
                let plane0 = b.ins().iadd(nc, gc);
                let plane_len = (inp[0] * inp[1]) as i64;
                let x0 = b.ins().imul_imm_s(plane0, plane_len);
                let x0 = b.ins().iadd(x, x0);
                let w0 = b.ins().imul_imm_s(mm, 4 * k as i64);
                let w0 = b.ins().iadd(w, w0);
                let y_row = b.ins().imul_imm_s(r, out[1] as i64);
                let iy0 = b.ins().imul_imm_s(oy, s[0] as i64);
                let iy0 = b.ins().iadd_imm_s(iy0, -(p[0] as i64));
                for_range(b, 0, out[1] as i64, 1, |b, ox| {
                    let z = b.ins().iconst(types::I32, 0);
                    b.def_var(acc, z);
                    let ix0 = b.ins().imul_imm_s(ox, s[1] as i64);
                    let ix0 = b.ins().iadd_imm_s(ix0, -(p[1] as i64));
                    for_range(b, 0, cg as i64, 1, |b, ci| {
                        let xc = b.ins().imul_imm_s(ci, plane_len);
                        let xc = b.ins().iadd(x0, xc);
                        let wci = b.ins().imul_imm_s(ci, 4 * kvol);
                        let wci = b.ins().iadd(w0, wci);
                        for ky in 0..kk[0] {
                            let iy = b.ins().iadd_imm_s(iy0, (ky * d[0]) as i64);
                            let y_ok = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, iy, inp[0] as i64);
                            for kx in 0..kk[1] {
                                let ix = b.ins().iadd_imm_s(ix0, (kx * d[1]) as i64);
                                let x_ok = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, ix, inp[1] as i64);
                                let ok = b.ins().band(y_ok, x_ok);
                                // Read a valid address either way; a padded tap adds 0.
                                let row = b.ins().imul_imm_s(iy, inp[1] as i64);
                                let off = b.ins().iadd(row, ix);
                                let zero = b.ins().iconst(types::I64, 0);
                                let off = b.ins().select(ok, off, zero);
                                let at = b.ins().iadd(xc, off);
                                let v = load_x(b, at);
                                let z = b.ins().iconst(types::I32, 0);
                                let v = b.ins().select(ok, v, z);
                                let wp = b.ins().iadd_imm_s(wci, 4 * (ky * kk[1] + kx) as i64);
                                mac(b, v, wp);
                            }
                        }
                    });
                    let at = b.ins().iadd(y_row, ox);
                    finish(b, mm, at);
                });
            }
            Shape::Product { rows, k, cols, trans_x } => {
                let (x_row, x_step) = if trans_x { (r, rows as i64) } else { (b.ins().imul_imm_s(r, k as i64), 1) };
                let y_row = b.ins().imul_imm_s(r, cols as i64);
                for_range(b, 0, cols as i64, 1, |b, j| {
                    let z = b.ins().iconst(types::I32, 0);
                    b.def_var(acc, z);
                    let wj = b.ins().imul_imm_s(j, 4 * k as i64);
                    let wj = b.ins().iadd(w, wj);
                    for_range(b, 0, k as i64, 1, |b, kk| {
                        let xo = b.ins().imul_imm_s(kk, x_step);
                        let xo = b.ins().iadd(x_row, xo);
                        let at = b.ins().iadd(x, xo);
                        let v = load_x(b, at);
                        let wp = offset(b, wj, kk, 4, 0);
                        mac(b, v, wp);
                    });
                    let at = b.ins().iadd(y_row, j);
                    finish(b, j, at);
                });
            }
        });
    })?;
    let w_bits = wc.iter().map(|&v| v as u32).collect();
    Ok(Emitted::parallel(func, vec![Aux::U32(w_bits), Aux::F32(mult)], rows.max(1) as u64))
}
