//! Inference-mode batch normalization (scale/shift folded at load).

use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::builder::mem;
use super::index_map::{Cols, GRAIN, Nest, kb_loop};
use super::{Aux, CompileError, EmitCx, Emitted, Jit, Kb};

/// `y = x·a[c] + b[c]` with `a = scale / √(var + ε)` and `b = bias − mean·a`. When the four
/// parameters are weights, `a` and `b` are computed in f64 at load and rounded once (one aux
/// buffer `[a…, b…]`); otherwise the kernel computes them per channel, also in f64. Work units
/// take whole `[N, C]` planes, or cut long planes at multiples of 4 elements.
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
    // Iterate `[N, C, plane]`: x and y contiguous, the parameters (the folded table, or the
    // four inputs) one value per channel. With `plane == 1` the rows run over channels.
    let (nu, cu, pu) = (n as usize, c as usize, plane as usize);
    let x_strides = vec![c * plane * 4, plane * 4, 4];
    let n_params = if folded { 1 } else { 4 };
    let mut strides = vec![x_strides.clone(), x_strides];
    strides.extend(std::iter::repeat_n(vec![0, 4, 0], n_params));
    let nest = Nest::new(&[nu, cu, pu], strides);
    let cut = nest.cut(GRAIN, 4);
    let (x_arg, y_arg, tbl_arg) = (cx.in_arg(0), cx.out_arg(0), cx.aux_arg(0));
    let param_args = [cx.in_arg(1), cx.in_arg(2), cx.in_arg(3), cx.in_arg(4)];
    let func = jit.kernel(cx.name, |kb| {
        let mut bases = vec![kb.arg(x_arg), kb.arg(y_arg)];
        if folded {
            bases.push(kb.arg(tbl_arg));
        } else {
            bases.extend(param_args.map(|i| kb.arg(i)));
        }
        let (lo, hi) = (kb.lo, kb.hi);
        let (len, s) = nest.inner();
        nest.for_units(kb, cut, lo, hi, &bases, &mut |kb, p, cols| {
            let (x, y) = (p[0], p[1]);
            let b = &mut kb.b;
            match (s[2], folded) {
                (0, _) => {
                    // One channel per row: its coefficients, splatted.
                    let (sa, sb) = if folded {
                        let sa = b.ins().load(types::F32, mem(), p[2], 0);
                        let sb = b.ins().load(types::F32, mem(), p[2], (c * 4) as i32);
                        (sa, sb)
                    } else {
                        compute_folded(b, [p[2], p[3], p[4], p[5]], epsilon)
                    };
                    let (va, vb) = (b.ins().splat(types::F32X4, sa), b.ins().splat(types::F32X4, sb));
                    affine_run(kb, x, y, len, cols, |_, _, ty| if ty == types::F32X4 { (va, vb) } else { (sa, sb) });
                }
                (_, true) => {
                    // Rows over channels: `a` and `b` read as vectors.
                    let tbl = p[2];
                    affine_run(kb, x, y, len, cols, |b, off, ty| {
                        let pa = b.ins().iadd(tbl, off);
                        let va = b.ins().load(ty, mem(), pa, 0);
                        let vb = b.ins().load(ty, mem(), pa, (c * 4) as i32);
                        (va, vb)
                    });
                }
                (_, false) => {
                    // Rows over channels, coefficients computed per element.
                    cols.run(
                        kb,
                        len,
                        1,
                        |kb, i| {
                            let b = &mut kb.b;
                            let off = b.ins().ishl_imm_u(i, 2);
                            let at = |b: &mut FunctionBuilder, q: Value| b.ins().iadd(q, off);
                            let params = [at(b, p[2]), at(b, p[3]), at(b, p[4]), at(b, p[5])];
                            let (sa, sb) = compute_folded(b, params, epsilon);
                            let (px, py) = (at(b, x), at(b, y));
                            let v = b.ins().load(types::F32, mem(), px, 0);
                            let r = b.ins().fma(v, sa, sb);
                            b.ins().store(mem(), r, py, 0);
                        },
                        |_| {},
                    );
                }
            }
        });
    })?;
    Ok(Emitted::parallel(func, aux.map(Aux::F32).into_iter().collect(), nest.units(cut)))
}

/// `y[i] = fma(x[i], a, b)` for the columns `cols` of a row of `len`, 4 lanes at a time then
/// one at a time; `coef` gives `(a, b)` for the byte offset of the element and the access type.
fn affine_run(
    kb: &mut Kb,
    x: Value,
    y: Value,
    len: i64,
    cols: Cols,
    coef: impl Fn(&mut FunctionBuilder, Value, types::Type) -> (Value, Value),
) {
    let main = len - len % 4;
    let elem = |kb: &mut Kb, i: Value, ty: types::Type| {
        let b = &mut kb.b;
        let off = b.ins().ishl_imm_u(i, 2);
        let (px, py) = (b.ins().iadd(x, off), b.ins().iadd(y, off));
        let v = b.ins().load(ty, mem(), px, 0);
        let (a, s) = coef(b, off, ty);
        let r = b.ins().fma(v, a, s);
        b.ins().store(mem(), r, py, 0);
    };
    cols.run(
        kb,
        main,
        4,
        |kb, i| elem(kb, i, types::F32X4),
        |kb| kb_loop(kb, main, len, 1, |kb, i| elem(kb, i, types::F32)),
    );
}

/// `a = scale / √(var + ε)`, `b = bias − mean·a` from the parameters at `params`, in f64,
/// rounded to f32.
fn compute_folded(b: &mut FunctionBuilder, params: [Value; 4], epsilon: f32) -> (Value, Value) {
    let [scale, bias, mean, var] = params.map(|p| {
        let v = b.ins().load(types::F32, mem(), p, 0);
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
