//! Gemm and MatMul.

use cnnc_ir::Tensor;

use super::{StridedOffsets, Sum, broadcast_shape, broadcast_strides, f32s, make};

/// A row-major matrix view, possibly transposed.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl Mat<'_> {
    /// Element `(i, j)` of the (possibly transposed) matrix.
    fn at(&self, i: usize, j: usize) -> f32 {
        if self.transposed { self.data[j * self.rows + i] } else { self.data[i * self.cols + j] }
    }
}

/// `acc[i, j] = Σ_k a[i,k]·b[k,j]` in f64, summing over `k` in increasing order; `out(i, row)`
/// receives each finished row.
fn matmul_rows(a: Mat<'_>, b: Mat<'_>, mut out: impl FnMut(usize, &[f64])) {
    let mut acc = vec![0f64; b.cols];
    for i in 0..a.rows {
        acc.fill(0.0);
        for k in 0..a.cols {
            let aik = f64::from(a.at(i, k));
            for (j, s) in acc.iter_mut().enumerate() {
                *s += aik * f64::from(b.at(k, j));
            }
        }
        out(i, &acc);
    }
}

/// ONNX `Gemm`: `alpha·op(a)·op(b) + beta·c`, `c` broadcast (unidirectionally) to `[M, N]`.
pub(super) fn gemm(alpha: f32, beta: f32, trans_a: bool, trans_b: bool, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let (at, bt) = (inputs[0], inputs[1]);
    let (&[ar, ac], &[br, bc]) = (at.shape(), bt.shape()) else {
        return Err(format!("a {:?} and b {:?} must be matrices", at.shape(), bt.shape()));
    };
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if trans_b { (bc, br) } else { (br, bc) };
    if k != kb {
        return Err(format!("inner dimensions differ: op(a) is {m}×{k}, op(b) is {kb}×{n}"));
    }
    let a = Mat { data: f32s(at, "a")?, rows: m, cols: k, transposed: trans_a };
    let b = Mat { data: f32s(bt, "b")?, rows: k, cols: n, transposed: trans_b };
    let c = match inputs.get(2) {
        Some(ct) => {
            let strides = broadcast_strides(ct.shape(), &[m, n])?;
            Some((f32s(ct, "c")?, strides))
        }
        None => None,
    };
    let (alpha, beta) = (f64::from(alpha), f64::from(beta));
    let mut y = vec![0f32; m * n];
    matmul_rows(a, b, |i, row| {
        for (j, &s) in row.iter().enumerate() {
            let bias =
                c.as_ref().map_or(0.0, |(cv, st)| f64::from(cv[(i as isize * st[0] + j as isize * st[1]) as usize]));
            y[i * n + j] = (alpha * s + beta * bias) as f32;
        }
    });
    make(vec![m, n], y)
}

/// ONNX `MatMul` (numpy `matmul`): batched over broadcast leading axes; a 1-D `a` is a row
/// vector and a 1-D `b` a column vector, their unit axis removed from the result.
pub(super) fn matmul(at: &Tensor, bt: &Tensor) -> Result<Tensor, String> {
    let (shape, y) = matmul_sums::<f32>(at, bt)?;
    make(shape, y)
}

/// [`matmul`]'s output shape and elements, each the f64 sum converted by [`Sum`].
pub(super) fn matmul_sums<T: Sum>(at: &Tensor, bt: &Tensor) -> Result<(Vec<usize>, Vec<T>), String> {
    let (a_shape, b_shape) = (at.shape(), bt.shape());
    if a_shape.is_empty() || b_shape.is_empty() {
        return Err("matmul operands must have rank ≥ 1".into());
    }
    let a_mat: [usize; 2] =
        if a_shape.len() == 1 { [1, a_shape[0]] } else { [a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]] };
    let b_mat: [usize; 2] =
        if b_shape.len() == 1 { [b_shape[0], 1] } else { [b_shape[b_shape.len() - 2], b_shape[b_shape.len() - 1]] };
    let [m, k] = a_mat;
    let [kb, n] = b_mat;
    if k != kb {
        return Err(format!("inner dimensions differ: {a_shape:?} × {b_shape:?}"));
    }
    let a_batch = &a_shape[..a_shape.len().saturating_sub(2)];
    let b_batch = &b_shape[..b_shape.len().saturating_sub(2)];
    let batch = broadcast_shape(a_batch, b_batch)?;
    // Batch strides in units of whole matrices.
    let a_offsets = StridedOffsets::new(&batch, &broadcast_strides(a_batch, &batch)?, 0);
    let b_offsets = StridedOffsets::new(&batch, &broadcast_strides(b_batch, &batch)?, 0);
    let (av, bv) = (f32s(at, "a")?, f32s(bt, "b")?);
    let mut out_shape = batch.clone();
    if a_shape.len() > 1 {
        out_shape.push(m);
    }
    if b_shape.len() > 1 {
        out_shape.push(n);
    }
    let mut y = vec![T::default(); super::count(&out_shape)?];
    for (bi, (ai, bj)) in a_offsets.zip(b_offsets).enumerate() {
        let a = Mat { data: &av[ai * m * k..][..m * k], rows: m, cols: k, transposed: false };
        let b = Mat { data: &bv[bj * k * n..][..k * n], rows: k, cols: n, transposed: false };
        let y_mat = &mut y[bi * m * n..][..m * n];
        matmul_rows(a, b, |i, row| {
            for (v, &s) in y_mat[i * n..][..n].iter_mut().zip(row) {
                *v = T::from_sum(s);
            }
        });
    }
    Ok((out_shape, y))
}
