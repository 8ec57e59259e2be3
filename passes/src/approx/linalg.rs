//! The linear algebra of the lossy families, on faer (single-threaded: faer's parallelism is
//! off in this build, so every result is deterministic): second moments of a layer's inputs,
//! symmetric eigendecompositions, and the ridge least-squares refit of a last factor.
//!
//! A layer is an affine map of its input patches: `y = W̃ x̃` with `x̃ = [patch; 1]` and
//! `W̃ = [W, b]` (`m × d`). Everything the families need from calibration data is the second
//! moment `Σ = E[x̃ x̃ᵀ]` over subsampled output pixels: the output energy is `tr(W̃ Σ W̃ᵀ)`,
//! the error of a replacement `Ŵ` is `tr((W̃ − Ŵ) Σ (W̃ − Ŵ)ᵀ)`, and a least-squares fit of
//! any linear function of `x̃` needs only products with `Σ`.

use faer::{Mat, MatRef, Side};

/// Ridge added to a Gram matrix before solving, relative to its mean diagonal: it keeps the
/// Cholesky factorization of a rank-deficient Gram (few samples, dead ReLU channels) stable in
/// f64, and leaves real fits alone: at 1e-6 it shrank the weak output directions of a test
/// layer (eigenvalues ~1e-5 of the mean) enough to cost 1e-4 of relative error.
pub(crate) const RIDGE: f64 = 1e-9;

/// A second moment `Σ = E[x̃ x̃ᵀ]` of augmented rows `x̃ = [x; 1]`, accumulated from rows of
/// `x`. It keeps the (scaled) rows themselves while they are fewer than the dimension, since
/// `Σ = XᵀX` then takes less memory (a Gemm with 9,216 inputs fed 500 samples), and switches to
/// the `d × d` Gram matrix when they are not. The Gram matrix is accumulated in place, lower
/// triangle only (a symmetric rank-k update), from blocks of [`FLUSH_ROWS`] buffered rows, and
/// mirrored once in [`Moments::finish`].
#[derive(Clone, Debug)]
pub struct Moments {
    dim: usize,
    rows: Vec<f64>,
    n_rows: usize,
    gram: Option<Mat<f64>>,
    count: usize,
}

/// Rows buffered before a rank-k update of the Gram matrix: large enough that the update runs
/// at matrix-multiply speed (a 49-row update of a 2,305-wide Gram is memory-bound), small
/// enough that the buffer stays far below the Gram matrix itself.
const FLUSH_ROWS: usize = 256;

impl Moments {
    /// Moments of `dim`-wide rows (the augmented dimension is `dim + 1`).
    pub fn new(dim: usize) -> Moments {
        Moments { dim, rows: Vec::new(), n_rows: 0, gram: None, count: 0 }
    }

    /// The augmented dimension `d = dim + 1`.
    pub fn aug_dim(&self) -> usize {
        self.dim + 1
    }

    /// Rows seen so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Adds rows (`rows.len()` a multiple of `dim`).
    pub fn add_rows(&mut self, rows: &[f32]) {
        debug_assert_eq!(rows.len() % self.dim.max(1), 0);
        let n = rows.len() / self.dim.max(1);
        self.count += n;
        let d = self.aug_dim();
        for r in rows.chunks_exact(self.dim.max(1)) {
            self.rows.extend(r.iter().map(|&v| f64::from(v)));
            self.rows.push(1.0);
        }
        self.n_rows += n;
        let due = match self.gram {
            Some(_) => self.n_rows >= FLUSH_ROWS.min(d),
            None => self.n_rows >= d,
        };
        if due {
            self.flush();
        }
    }

    /// Folds the buffered rows into the Gram matrix's lower triangle.
    fn flush(&mut self) {
        let d = self.aug_dim();
        if self.n_rows == 0 {
            return;
        }
        let x = MatRef::from_row_major_slice(&self.rows, self.n_rows, d);
        let g = self.gram.get_or_insert_with(|| Mat::zeros(d, d));
        use faer::linalg::matmul::triangular::{BlockStructure, matmul};
        matmul(
            g.as_mut(),
            BlockStructure::TriangularLower,
            faer::Accum::Add,
            x.transpose(),
            BlockStructure::Rectangular,
            x,
            BlockStructure::Rectangular,
            1.0,
            faer::Par::Seq,
        );
        self.rows.clear();
        self.n_rows = 0;
    }

    /// The second moment, averaged over the rows seen (`None` before any row).
    pub fn finish(mut self) -> Option<SecondMoment> {
        if self.count == 0 {
            return None;
        }
        let scale = 1.0 / self.count as f64;
        if self.gram.is_some() {
            self.flush();
        }
        Some(match self.gram.take() {
            Some(g) => {
                let d = g.ncols();
                SecondMoment::Gram(Mat::from_fn(d, d, |i, j| if i >= j { g[(i, j)] } else { g[(j, i)] } * scale))
            }
            None => {
                let s = scale.sqrt();
                let x = Mat::from_fn(self.n_rows, self.aug_dim(), |i, j| self.rows[i * self.aug_dim() + j] * s);
                SecondMoment::Samples(x)
            }
        })
    }
}

/// `Σ`, as the `d × d` matrix itself or as rows `X` with `Σ = XᵀX`.
#[derive(Clone, Debug)]
pub enum SecondMoment {
    Gram(Mat<f64>),
    Samples(Mat<f64>),
}

impl SecondMoment {
    /// The augmented dimension `d`.
    pub fn dim(&self) -> usize {
        match self {
            SecondMoment::Gram(g) => g.ncols(),
            SecondMoment::Samples(x) => x.ncols(),
        }
    }

    /// `A Σ Bᵀ` for `A` (`p × d`) and `B` (`q × d`).
    pub fn quad(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
        match self {
            SecondMoment::Gram(g) => a * (g * b.transpose()),
            SecondMoment::Samples(x) => (x * a.transpose()).transpose() * (x * b.transpose()),
        }
    }

    /// Column `j` of `Σ` (`E[x̃ x̃_j]`; for the augmented last column, `E[x̃]`).
    pub fn column(&self, j: usize) -> Vec<f64> {
        match self {
            SecondMoment::Gram(g) => (0..g.nrows()).map(|i| g[(i, j)]).collect(),
            SecondMoment::Samples(x) => {
                (0..x.ncols()).map(|i| (0..x.nrows()).map(|r| x[(r, i)] * x[(r, j)]).sum()).collect()
            }
        }
    }

    /// `tr(A Σ Aᵀ)`: the energy of `A x̃`.
    pub fn energy(&self, a: MatRef<'_, f64>) -> f64 {
        match self {
            SecondMoment::Gram(g) => {
                let ag = a * g;
                let mut t = 0.0;
                for i in 0..a.nrows() {
                    for j in 0..a.ncols() {
                        t += ag[(i, j)] * a[(i, j)];
                    }
                }
                t
            }
            SecondMoment::Samples(x) => {
                let p = x * a.transpose();
                p.col_iter().map(|c| c.iter().map(|v| v * v).sum::<f64>()).sum()
            }
        }
    }
}

/// Eigenvalues (descending, clamped at 0) and eigenvectors (columns, in the same order) of a
/// symmetric positive semi-definite matrix.
pub fn eig_desc(m: MatRef<'_, f64>) -> (Vec<f64>, Mat<f64>) {
    let n = m.nrows();
    // Symmetrize: products like `W Σ Wᵀ` are symmetric only up to rounding.
    let sym = Mat::from_fn(n, n, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    match sym.self_adjoint_eigen(Side::Lower) {
        Ok(e) => {
            let (s, u) = (e.S(), e.U());
            let vals: Vec<f64> = (0..n).rev().map(|i| s[i].max(0.0)).collect();
            let vecs = Mat::from_fn(n, n, |i, j| u[(i, n - 1 - j)]);
            (vals, vecs)
        }
        // The eigensolver converges on every finite symmetric matrix; a NaN from the data
        // (non-finite activations) gives the identity basis with zero energy.
        Err(_) => (vec![0.0; n], Mat::identity(n, n)),
    }
}

/// The first `k` columns of `m`.
pub fn leading_cols(m: MatRef<'_, f64>, k: usize) -> Mat<f64> {
    Mat::from_fn(m.nrows(), k, |i, j| m[(i, j)])
}

/// Solves `X (G + ridge·mean(diag G)·I) = C` for `X` (`G` symmetric PSD, `q × q`; `C` `p × q`).
pub fn ridge_solve_right(c: MatRef<'_, f64>, g: MatRef<'_, f64>) -> Mat<f64> {
    let q = g.nrows();
    let mean_diag = (0..q).map(|i| g[(i, i)]).sum::<f64>() / q.max(1) as f64;
    let lambda = RIDGE * mean_diag.max(f64::MIN_POSITIVE);
    let reg = Mat::from_fn(q, q, |i, j| 0.5 * (g[(i, j)] + g[(j, i)]) + if i == j { lambda } else { 0.0 });
    // X Gʳ = C ⇔ Gʳ Xᵀ = Cᵀ (Gʳ symmetric).
    let rhs = c.transpose().to_owned();
    let xt = match reg.llt(Side::Lower) {
        Ok(llt) => {
            use faer::linalg::solvers::Solve;
            llt.solve(&rhs)
        }
        Err(_) => {
            use faer::linalg::solvers::Solve;
            reg.as_ref().lblt(Side::Lower).solve(&rhs)
        }
    };
    xt.transpose().to_owned()
}

/// Refits the last factor of `y ≈ V (A x̃) + c` by ridge least squares against the original
/// layer `W̃` on `Σ`: the `(V, c)` minimizing `E‖W̃ x̃ − V A x̃ − c‖²`. Returns `[V, c]`
/// (`m × (r + 1)`).
pub fn refit_last(sigma: &SecondMoment, a: MatRef<'_, f64>, w: MatRef<'_, f64>) -> Mat<f64> {
    let aug = augment_ones(a);
    let g = sigma.quad(aug.as_ref(), aug.as_ref());
    let c = sigma.quad(w, aug.as_ref());
    ridge_solve_right(c.as_ref(), g.as_ref())
}

/// `[A; e_dᵀ]`: `A` (`r × d`) with a last row selecting the constant 1 of `x̃`.
pub fn augment_ones(a: MatRef<'_, f64>) -> Mat<f64> {
    let (r, d) = (a.nrows(), a.ncols());
    Mat::from_fn(r + 1, d, |i, j| {
        if i < r {
            a[(i, j)]
        } else if j == d - 1 {
            1.0
        } else {
            0.0
        }
    })
}

/// The relative output error `sqrt(tr(ΔΣΔᵀ) / tr(W̃ΣW̃ᵀ))` of replacing `W̃` by `approx`.
pub fn rel_error(sigma: &SecondMoment, w: MatRef<'_, f64>, approx: MatRef<'_, f64>) -> f64 {
    let delta = w - approx;
    let num = sigma.energy(delta.as_ref());
    let den = sigma.energy(w);
    if den > 0.0 { (num / den).max(0.0).sqrt() } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn samples_and_gram_moments_agree() {
        let mut seed = 7;
        let rows: Vec<f32> = (0..5 * 4).map(|_| lcg(&mut seed) as f32).collect();
        let few = {
            let mut m = Moments::new(4);
            m.add_rows(&rows[..8]);
            m.finish().expect("rows")
        };
        assert!(matches!(few, SecondMoment::Samples(_)));
        let mut many = Moments::new(4);
        many.add_rows(&rows[..8]);
        many.add_rows(&rows[8..]);
        let many = many.finish().expect("rows");
        assert!(matches!(many, SecondMoment::Gram(_)));
        let a = Mat::from_fn(2, 5, |i, j| (i + j) as f64);
        // Σ over the first two rows (scaled by 1/2) vs by hand.
        let q = few.quad(a.as_ref(), a.as_ref());
        let mut by_hand = Mat::<f64>::zeros(2, 2);
        for r in rows[..8].chunks(4) {
            let x: Vec<f64> = r.iter().map(|&v| f64::from(v)).chain([1.0]).collect();
            let ax: Vec<f64> = (0..2).map(|i| (0..5).map(|j| a[(i, j)] * x[j]).sum()).collect();
            for i in 0..2 {
                for j in 0..2 {
                    by_hand[(i, j)] += ax[i] * ax[j] / 2.0;
                }
            }
        }
        // f64 sums of a few terms: agreement to rounding.
        assert!((&q - &by_hand).norm_max() < 1e-12, "{q:?} vs {by_hand:?}");
        assert!((few.energy(a.as_ref()) - (by_hand[(0, 0)] + by_hand[(1, 1)])).abs() < 1e-12);
    }

    #[test]
    fn the_gram_accumulated_in_blocks_is_the_full_symmetric_product() {
        // 700 rows of width 9 (d = 10): the first 10 rows switch to the Gram matrix, the rest
        // arrive 7 at a time and are folded in blocks; compared with XᵀX/n computed at once
        // (f64 sums of 700 terms of order 1: agreement to 1e-12).
        let mut seed = 11;
        let rows: Vec<f32> = (0..700 * 9).map(|_| lcg(&mut seed) as f32).collect();
        let mut m = Moments::new(9);
        for chunk in rows.chunks(7 * 9) {
            m.add_rows(chunk);
        }
        let SecondMoment::Gram(g) = m.finish().expect("rows") else { panic!("expected a Gram matrix") };
        let x = Mat::from_fn(700, 10, |i, j| if j < 9 { f64::from(rows[i * 9 + j]) } else { 1.0 });
        let want = (x.transpose() * &x) * faer::Scale(1.0 / 700.0);
        assert!((&g - &want).norm_max() < 1e-12, "{:?}", (&g - &want).norm_max());
    }

    #[test]
    fn refit_recovers_an_exact_factorization() {
        let mut seed = 3;
        let d = 6;
        let rows: Vec<f32> = (0..40 * (d - 1)).map(|_| lcg(&mut seed) as f32).collect();
        let mut m = Moments::new(d - 1);
        m.add_rows(&rows);
        let sigma = m.finish().expect("rows");
        let a = Mat::from_fn(3, d, |_, _| lcg(&mut seed));
        let v = Mat::from_fn(4, 3, |_, _| lcg(&mut seed));
        let w = &v * &a;
        let vc = refit_last(&sigma, a.as_ref(), w.as_ref());
        let approx = &vc * augment_ones(a.as_ref());
        // The ridge (1e-9 of the mean diagonal) is the only perturbation of an exact fit.
        assert!(rel_error(&sigma, w.as_ref(), approx.as_ref()) < 1e-5);
    }

    #[test]
    fn eigenvalues_come_out_descending() {
        let m = Mat::from_fn(3, 3, |i, j| if i == j { [1.0, 3.0, 2.0][i] } else { 0.0 });
        let (vals, vecs) = eig_desc(m.as_ref());
        assert_eq!(vals, vec![3.0, 2.0, 1.0]);
        assert!((vecs[(1, 0)].abs() - 1.0).abs() < 1e-12);
    }
}
