//! The AVX2 element-wise routine (`microkernel::avx2_eltwise`) against the pure-Cranelift
//! kernel, bit for bit, for every op it takes; and the vector `eˣ` forms against the scalar
//! specification `crate::expf`.

use cnnc_ir::{Op, TensorType, UnaryOp};

use super::{EmitCx, Jit, unary::emit_unary_with};
use crate::microkernel::Microkernels;

/// `op` on `x` by the unary kernel built with `mk`, computed unit by unit in reverse order
/// (a unit's bits must not depend on where it starts).
fn run(op: UnaryOp, x: &[f32], mk: Option<Microkernels>) -> Vec<f32> {
    let ty = TensorType::f32(vec![x.len()]);
    let (inputs, outputs) = ([ty.clone()], [ty]);
    let uop = Op::Unary(op);
    let cx = EmitCx { name: "u", op: &uop, inputs: &inputs, outputs: &outputs, consts: &[None] };
    let mut jit = Jit::new().expect("jit");
    let emitted = emit_unary_with(&mut jit, &cx, op, mk).expect("emits");
    let (_code, kernels) = jit.finish(&[emitted.func]).expect("finishes");
    let mut y = vec![f32::NAN; x.len()];
    let table: [*mut u8; 2] = [x.as_ptr() as *mut u8, y.as_mut_ptr().cast()];
    for u in (0..emitted.units as i64).rev() {
        // SAFETY: input and output of the length the kernel was compiled for; `_code` is alive.
        unsafe { kernels[0](table.as_ptr(), u, u + 1) };
    }
    y
}

/// Every 1999th f32 bit pattern (both signs, NaNs and infinities included) and the edges of
/// the clamps and of tanh's two branches; an odd length, so the routine's masked tail runs.
fn sweep() -> Vec<f32> {
    let mut xs: Vec<f32> = (0..=u32::MAX).step_by(1999).map(f32::from_bits).collect();
    xs.extend([0.0, -0.0, 1e-40, -1e-40, 0.625, -0.625, 0.624_999_94, 88.72, 88.73, 89.0, -87.34, -103.9, -104.0]);
    xs.extend([-105.0, 20.0, -20.0, 1.0, -1.0]);
    if xs.len().is_multiple_of(2) {
        xs.push(0.5);
    }
    xs
}

#[test]
fn avx2_elementwise_routine_gives_the_bits_of_the_cranelift_kernel() {
    let mk = microkernels_or_skip!();
    let xs = sweep();
    for op in
        [UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Sigmoid, UnaryOp::Swish { beta: 1.0 }, UnaryOp::Swish { beta: -0.75 }]
    {
        let (avx2, cranelift) = (run(op, &xs, Some(mk)), run(op, &xs, None));
        for (i, (a, c)) in avx2.iter().zip(&cranelift).enumerate() {
            assert!(
                a.to_bits() == c.to_bits() || (a.is_nan() && c.is_nan()),
                "{op:?}({}): AVX2 {a:e} vs Cranelift {c:e}",
                xs[i]
            );
        }
    }
}

#[test]
fn vector_exp_gives_the_bits_of_the_scalar_specification() {
    let xs = sweep();
    let got = run(UnaryOp::Exp, &xs, None);
    for (x, g) in xs.iter().zip(&got) {
        let want = crate::expf::exp(*x);
        assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "e^{x}: {g:e} vs {want:e}");
    }
}
