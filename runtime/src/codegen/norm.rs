//! Inference-mode batch normalization (scale/shift folded at load).

use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::builder::{for_range, mem};
use super::{Aux, CompileError, EmitCx, Emitted, Jit};

/// `y = x·a[c] + b[c]` with `a = scale / √(var + ε)` and `b = bias − mean·a`. When the four
/// parameters are weights, `a` and `b` are computed in f64 at load and rounded once (one aux
/// buffer `[a…, b…]`); otherwise the kernel computes them per channel, also in f64.
pub(crate) fn emit_batchnorm(jit: &mut Jit, cx: &EmitCx, epsilon: f32) -> Result<Emitted, CompileError> {
    let shape = &cx.inputs[0].shape;
    let (n, c) = (shape[0] as i64, shape[1] as i64);
    let plane: i64 = shape[2..].iter().product::<usize>() as i64;
    let params: Option<Vec<&[f32]>> = cx.consts[1..5].iter().map(|t| t.and_then(|t| t.as_f32())).collect();
    let aux = params.map(|p| {
        let eps = f64::from(epsilon);
        let a: Vec<f64> = (0..c as usize).map(|i| f64::from(p[0][i]) / (f64::from(p[3][i]) + eps).sqrt()).collect();
        let mut folded: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        folded.extend((0..c as usize).map(|i| (f64::from(p[1][i]) - f64::from(p[2][i]) * a[i]) as f32));
        folded
    });
    let folded = aux.is_some();
    let (x_arg, y_arg, tbl_arg) = (cx.in_arg(0), cx.out_arg(0), cx.aux_arg(0));
    let param_args = [cx.in_arg(1), cx.in_arg(2), cx.in_arg(3), cx.in_arg(4)];
    let func = jit.kernel(cx.name, |kb| {
        if n * c * plane == 0 {
            return;
        }
        let x = kb.arg(x_arg);
        let y = kb.arg(y_arg);
        let params = if folded { [kb.arg(tbl_arg); 4] } else { param_args.map(|i| kb.arg(i)) };
        let b = &mut kb.b;
        if folded && plane == 1 {
            // `[N, C]`: vectorize over channels, reading `a` and `b` as vectors.
            let tbl = params[0];
            for_range(b, 0, n, 1, |b, ni| {
                let row = b.ins().imul_imm_s(ni, c * 4);
                let (xr, yr) = (b.ins().iadd(x, row), b.ins().iadd(y, row));
                affine_run(b, xr, yr, c, |b, off, ty| {
                    let pa = b.ins().iadd(tbl, off);
                    let va = b.ins().load(ty, mem(), pa, 0);
                    let vb = b.ins().load(ty, mem(), pa, (c * 4) as i32);
                    (va, vb)
                });
            });
            return;
        }
        for_range(b, 0, n, 1, |b, ni| {
            for_range(b, 0, c, 1, |b, ci| {
                let (sa, sb) =
                    if folded { load_folded(b, params[0], ci, c) } else { compute_folded(b, params, ci, epsilon) };
                let p = b.ins().imul_imm_s(ni, c);
                let p = b.ins().iadd(p, ci);
                let off = b.ins().imul_imm_s(p, plane * 4);
                let (xp, yp) = (b.ins().iadd(x, off), b.ins().iadd(y, off));
                let (va, vb) = (b.ins().splat(types::F32X4, sa), b.ins().splat(types::F32X4, sb));
                affine_run(b, xp, yp, plane, |_, _, ty| if ty == types::F32X4 { (va, vb) } else { (sa, sb) });
            });
        });
    })?;
    Ok(Emitted { func, aux: aux.map(Aux::F32).into_iter().collect() })
}

/// `y[i] = fma(x[i], a, b)` for `i < len`, 4 lanes at a time then one at a time; `coef`
/// gives `(a, b)` for the byte offset of the element and the access type.
fn affine_run(
    b: &mut FunctionBuilder,
    x: Value,
    y: Value,
    len: i64,
    mut coef: impl FnMut(&mut FunctionBuilder, Value, types::Type) -> (Value, Value),
) {
    let main = len - len % 4;
    for (start, end, step, ty) in [(0, main, 4, types::F32X4), (main, len, 1, types::F32)] {
        for_range(b, start, end, step, |b, i| {
            let off = b.ins().ishl_imm_u(i, 2);
            let (px, py) = (b.ins().iadd(x, off), b.ins().iadd(y, off));
            let v = b.ins().load(ty, mem(), px, 0);
            let (a, s) = coef(b, off, ty);
            let r = b.ins().fma(v, a, s);
            b.ins().store(mem(), r, py, 0);
        });
    }
}

fn load_folded(b: &mut FunctionBuilder, tbl: Value, ci: Value, c: i64) -> (Value, Value) {
    let off = b.ins().ishl_imm_u(ci, 2);
    let p = b.ins().iadd(tbl, off);
    let a = b.ins().load(types::F32, mem(), p, 0);
    let s = b.ins().load(types::F32, mem(), p, (c * 4) as i32);
    (a, s)
}

/// `a = scale / √(var + ε)`, `b = bias − mean·a` for channel `ci`, in f64, rounded to f32.
fn compute_folded(b: &mut FunctionBuilder, params: [Value; 4], ci: Value, epsilon: f32) -> (Value, Value) {
    let off = b.ins().ishl_imm_u(ci, 2);
    let [scale, bias, mean, var] = params.map(|p| {
        let at = b.ins().iadd(p, off);
        let v = b.ins().load(types::F32, mem(), at, 0);
        b.ins().fpromote(types::F64, v)
    });
    let eps = b.ins().f64const(f64::from(epsilon));
    let ve = b.ins().fadd(var, eps);
    let std = b.ins().sqrt(ve);
    let a = b.ins().fdiv(scale, std);
    let ma = b.ins().fmul(mean, a);
    let s = b.ins().fsub(bias, ma);
    (b.ins().fdemote(types::F32, a), b.ins().fdemote(types::F32, s))
}
