//! `svd`: response-based truncated SVD of a layer (Zhang et al., "Accelerating very deep
//! convolutional networks"): the layer's outputs on calibration data mostly lie in a few
//! directions, so `y = W̃ x̃` becomes `y ≈ V (Vᵀ W̃ x̃) + c` — the layer itself with `r` output
//! channels (same kernel, stride, pads), then a 1×1 conv (or a Gemm) from `r` back to `m`.
//!
//! When: a 2-D conv with one group, a Gemm without `trans_a` (bias per column or none) or a 2-D
//! MatMul, with constant weights; for each energy threshold, the smallest rank (rounded up to
//! [`super::RANK_QUANTUM`]) keeping that fraction of the output energy `tr(W̃ΣW̃ᵀ)`, if the
//! two factors do at most `max_mac_fraction` of the layer's MACs. So it never fires where no
//! rank saves MACs (`m·d ≤ r·(d + m)` for every useful `r`).
//!
//! Numerics: `V` holds the top-`r` eigenvectors of the output second moment `W̃ΣW̃ᵀ`, the
//! optimal rank-`r` approximation in output error on the fit split; the last factor `(V, c)` is
//! then refit by ridge least squares against the original outputs (a no-op up to the ridge
//! for the pure form, kept so every family ends the same way). The relative output error is
//! exact on the fit split (`linalg::rel_error`).
//!
//! ```text
//! before: %y = conv{kernel=[3,3], pads=[1,1,1,1]}(%x, %w : f32[64,32,3,3], %b : f32[64]) : f32[1,64,56,56]
//! after:  %t = conv{kernel=[3,3], pads=[1,1,1,1]}(%x, %a : f32[16,32,3,3], %ab : f32[16]) : f32[1,16,56,56]
//!         %y = conv{kernel=[1,1]}(%t, %v : f32[64,16,1,1], %c : f32[64]) : f32[1,64,56,56]
//! ```

use cnnc_ir::{ConvAttrs, Op, TensorType};
use faer::Mat;

use super::linalg::{SecondMoment, augment_ones, eig_desc, leading_cols, refit_last, rel_error};
use super::{Factor, Form, Layer, LayerKind, ProposalConfig, rank_for, tensor_of};

/// The SVD forms of `layer` (augmented weight `w`, input second moment `sigma`), one per
/// distinct rank of the energy grid.
pub fn forms(layer: &Layer, w: &Mat<f64>, sigma: &SecondMoment, config: &ProposalConfig) -> Vec<Form> {
    let (m, d) = (w.nrows(), w.ncols());
    if sigma.dim() != d {
        return Vec::new();
    }
    let out_moment = sigma.quad(w.as_ref(), w.as_ref());
    let (spectrum, _) = eig_desc(out_moment.as_ref());
    let mut ranks: Vec<usize> =
        config.energies.iter().map(|&e| rank_for(&spectrum, e, config.rank_quantum)).filter(|&r| r < m).collect();
    ranks.sort_unstable();
    ranks.dedup();
    ranks
        .into_iter()
        .filter_map(|r| {
            let macs = factor_macs(layer, r);
            (macs as f64 <= config.max_mac_fraction * layer.macs() as f64).then(|| form_at(layer, w, sigma, r))
        })
        .collect()
}

/// MACs of the rank-`r` factors, per batch.
pub fn factor_macs(layer: &Layer, r: usize) -> u64 {
    let first = layer.out_pixels() * r * layer.patch_len();
    let second = layer.out_pixels() * layer.n_out() * r;
    let batch = match layer.kind {
        LayerKind::Conv(_) => layer.out_type.shape[0],
        LayerKind::Dense { .. } => 1,
    };
    (batch * (first + second)) as u64
}

/// The rank-`r` form of `layer` (`r ≤ m`), whatever it saves.
pub fn form_at(layer: &Layer, w: &Mat<f64>, sigma: &SecondMoment, r: usize) -> Form {
    let (m, d) = (w.nrows(), w.ncols());
    let macs = factor_macs(layer, r);
    let (_, vecs) = eig_desc(sigma.quad(w.as_ref(), w.as_ref()).as_ref());
    let v = leading_cols(vecs.as_ref(), r);
    // First factor: the layer with r outputs, A = Vᵀ W̃ (its last column is the bias).
    let a = v.transpose() * w;
    let vc = refit_last(sigma, a.as_ref(), w.as_ref());
    let approx = &vc * augment_ones(a.as_ref());
    let rel_error = rel_error(sigma, w.as_ref(), approx.as_ref());
    let a_w = Mat::from_fn(r, d - 1, |i, j| a[(i, j)]);
    let a_b = Mat::from_fn(1, r, |_, j| a[(j, d - 1)]);
    let v_w = Mat::from_fn(m, r, |i, j| vc[(i, j)]);
    let c = Mat::from_fn(1, m, |_, j| vc[(j, r)]);
    let factors = match &layer.kind {
        LayerKind::Conv(attrs) => {
            let (kh, kw) = layer.kernel();
            let mut mid = layer.out_type.clone();
            mid.shape[1] = r;
            vec![
                Factor {
                    op: Op::Conv(attrs.clone()),
                    weight: tensor_of(a_w.as_ref(), vec![r, layer.n_in(), kh, kw]),
                    bias: Some(tensor_of(a_b.as_ref(), vec![r])),
                    out: mid,
                },
                Factor {
                    op: Op::Conv(ConvAttrs::new(&[1, 1])),
                    weight: tensor_of(v_w.as_ref(), vec![m, r, 1, 1]),
                    bias: Some(tensor_of(c.as_ref(), vec![m])),
                    out: layer.out_type.clone(),
                },
            ]
        }
        LayerKind::Dense { .. } => {
            let gemm = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true };
            let mid = TensorType::f32(vec![layer.out_type.shape[0], r]);
            vec![
                Factor {
                    op: gemm.clone(),
                    weight: tensor_of(a_w.as_ref(), vec![r, d - 1]),
                    bias: Some(tensor_of(a_b.as_ref(), vec![r])),
                    out: mid,
                },
                Factor {
                    op: gemm,
                    weight: tensor_of(v_w.as_ref(), vec![m, r]),
                    bias: Some(tensor_of(c.as_ref(), vec![m])),
                    out: layer.out_type.clone(),
                },
            ]
        }
    };
    Form { ranks: vec![r], factors, rel_error, macs, approx }
}
