//! `tucker2`: Tucker-2 decomposition of a k×k conv (Kim et al., "Compression of deep
//! convolutional neural networks for fast and low power mobile applications"): a 1×1 conv from
//! `C` to `r_in` channels, the k×k core from `r_in` to `r_out` (the layer's kernel, stride,
//! pads and dilations), and a 1×1 conv from `r_out` back to `m`.
//!
//! When: a 2-D conv with one group and a kernel larger than 1×1 (a 1×1 conv is `svd`'s), with
//! constant weights; never on depthwise or grouped convs. Ranks: for each energy threshold,
//! `r_in` from the input-channel spectrum of the weights and `r_out` from the output spectrum
//! on calibration data, each rounded up to [`super::RANK_QUANTUM`] and capped at the layer's
//! channels; kept if the three factors do at most `max_mac_fraction` of the layer's MACs.
//!
//! Numerics: the input projection `U` starts from the HOSVD of the weights and takes two HOOI
//! iterations (alternating `U` and the output basis on the weight tensor). Given `U`, the core
//! and the last factor are the reduced-rank regression of the original outputs on the
//! projected patches — ridge least squares on the fit split's second moment, then the top-`r_out`
//! output directions of that fit — and the last factor `(V, c)` is refit by ridge least squares.
//! The relative output error is exact on the fit split.
//!
//! ```text
//! before: %y = conv{kernel=[3,3], pads=[1,1,1,1]}(%x, %w : f32[64,64,3,3], %b) : f32[1,64,28,28]
//! after:  %p = conv{kernel=[1,1]}(%x, %u : f32[16,64,1,1]) : f32[1,16,28,28]
//!         %q = conv{kernel=[3,3], pads=[1,1,1,1]}(%p, %core : f32[24,16,3,3], %cb) : f32[1,24,28,28]
//!         %y = conv{kernel=[1,1]}(%q, %v : f32[64,24,1,1], %c : f32[64]) : f32[1,64,28,28]
//! ```

use cnnc_ir::{ConvAttrs, Op};
use faer::Mat;

use super::linalg::{SecondMoment, augment_ones, eig_desc, leading_cols, refit_last, rel_error, ridge_solve_right};
use super::{Factor, Form, Layer, LayerKind, ProposalConfig, rank_for, tensor_of};

/// HOOI iterations after the HOSVD start.
const HOOI_ITERATIONS: usize = 2;

/// The Tucker-2 forms of `layer`, one per distinct `(r_in, r_out)` of the energy grid.
pub fn forms(layer: &Layer, w: &Mat<f64>, sigma: &SecondMoment, config: &ProposalConfig) -> Vec<Form> {
    let LayerKind::Conv(_) = &layer.kind else { return Vec::new() };
    let (kh, kw) = layer.kernel();
    if kh * kw <= 1 || sigma.dim() != w.ncols() {
        return Vec::new();
    }
    let (m, c) = (layer.n_out(), layer.n_in());
    let (in_spectrum, _) = eig_desc(input_mode(w, c, kh * kw, None).as_ref());
    let (out_spectrum, _) = eig_desc(sigma.quad(w.as_ref(), w.as_ref()).as_ref());
    let mut pairs: Vec<(usize, usize)> = config
        .energies
        .iter()
        .map(|&e| {
            let r_in = rank_for(&in_spectrum, e, config.rank_quantum).min(c);
            let r_out = rank_for(&out_spectrum, e, config.rank_quantum).min(m);
            (r_in, r_out)
        })
        .filter(|&(r_in, r_out)| r_in < c || r_out < m)
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
        .into_iter()
        .filter_map(|(r_in, r_out)| {
            let macs = factor_macs(layer, r_in, r_out);
            (macs as f64 <= config.max_mac_fraction * layer.macs() as f64)
                .then(|| form_at(layer, w, sigma, r_in, r_out))
        })
        .collect()
}

/// MACs of the three factors, per batch.
pub fn factor_macs(layer: &Layer, r_in: usize, r_out: usize) -> u64 {
    let (kh, kw) = layer.kernel();
    let n = layer.out_type.shape[0];
    let in_pixels = layer.in_type.shape[2] * layer.in_type.shape[3];
    let out_pixels = layer.out_pixels();
    (n * (in_pixels * r_in * layer.n_in() + out_pixels * r_out * r_in * kh * kw + out_pixels * layer.n_out() * r_out))
        as u64
}

/// The input-channel Gram `Σ_{o,s} W'[o,c,s] W'[o,c',s]` (`C × C`) of the weights `w`
/// (`m × (C·taps + 1)`), with the outputs first projected on `v` (`m × r`) when given.
fn input_mode(w: &Mat<f64>, c: usize, taps: usize, v: Option<&Mat<f64>>) -> Mat<f64> {
    let projected;
    let wm = match v {
        Some(v) => {
            projected = v.transpose() * w;
            &projected
        }
        None => w,
    };
    let rows = wm.nrows();
    Mat::from_fn(c, c, |a, b| {
        let mut t = 0.0;
        for o in 0..rows {
            for s in 0..taps {
                t += wm[(o, a * taps + s)] * wm[(o, b * taps + s)];
            }
        }
        t
    })
}

/// `Ũ` (`(r·taps + 1) × (C·taps + 1)`): `U` (`r × C`) applied per tap, the constant kept.
fn expand(u: &Mat<f64>, taps: usize) -> Mat<f64> {
    let (r, c) = (u.nrows(), u.ncols());
    let (rows, cols) = (r * taps + 1, c * taps + 1);
    let mut e = Mat::zeros(rows, cols);
    for j in 0..r {
        for ch in 0..c {
            for s in 0..taps {
                e[(j * taps + s, ch * taps + s)] = u[(j, ch)];
            }
        }
    }
    e[(rows - 1, cols - 1)] = 1.0;
    e
}

/// The `(r_in, r_out)` form of a k×k conv `layer` (`r_in ≤ C`, `r_out ≤ m`), whatever it saves.
pub fn form_at(layer: &Layer, w: &Mat<f64>, sigma: &SecondMoment, r_in: usize, r_out: usize) -> Form {
    let macs = factor_macs(layer, r_in, r_out);
    let (kh, kw) = layer.kernel();
    let taps = kh * kw;
    let (m, c) = (layer.n_out(), layer.n_in());
    // HOSVD start, then HOOI on the weight tensor.
    let (_, in_vecs) = eig_desc(input_mode(w, c, taps, None).as_ref());
    let mut u = leading_cols(in_vecs.as_ref(), r_in).transpose().to_owned();
    for _ in 0..HOOI_ITERATIONS {
        let wu = w * expand(&u, taps).transpose();
        let (_, out_vecs) = eig_desc((&wu * wu.transpose()).as_ref());
        let v = leading_cols(out_vecs.as_ref(), r_out);
        let (_, in_vecs) = eig_desc(input_mode(w, c, taps, Some(&v)).as_ref());
        u = leading_cols(in_vecs.as_ref(), r_in).transpose().to_owned();
    }
    // Reduced-rank regression of the outputs on the projected patches.
    let ue = expand(&u, taps);
    let g = sigma.quad(ue.as_ref(), ue.as_ref());
    let cross = sigma.quad(w.as_ref(), ue.as_ref());
    let b = ridge_solve_right(cross.as_ref(), g.as_ref());
    let (_, out_vecs) = eig_desc((&b * &g * b.transpose()).as_ref());
    let v = leading_cols(out_vecs.as_ref(), r_out);
    let core = v.transpose() * &b;
    let a = &core * &ue;
    let vc = refit_last(sigma, a.as_ref(), w.as_ref());
    let approx = &vc * augment_ones(a.as_ref());
    let rel_error = rel_error(sigma, w.as_ref(), approx.as_ref());

    let LayerKind::Conv(attrs) = &layer.kind else { unreachable!("forms() takes convs only") };
    let mut first = layer.in_type.clone();
    first.shape[1] = r_in;
    let mut second = layer.out_type.clone();
    second.shape[1] = r_out;
    let core_w = Mat::from_fn(r_out, r_in * taps, |i, j| core[(i, j)]);
    let core_b = Mat::from_fn(1, r_out, |_, j| core[(j, r_in * taps)]);
    let v_w = Mat::from_fn(m, r_out, |i, j| vc[(i, j)]);
    let bias = Mat::from_fn(1, m, |_, j| vc[(j, r_out)]);
    let factors = vec![
        Factor {
            op: Op::Conv(ConvAttrs::new(&[1, 1])),
            weight: tensor_of(u.as_ref(), vec![r_in, c, 1, 1]),
            bias: None,
            out: first,
        },
        Factor {
            op: Op::Conv(attrs.clone()),
            weight: tensor_of(core_w.as_ref(), vec![r_out, r_in, kh, kw]),
            bias: Some(tensor_of(core_b.as_ref(), vec![r_out])),
            out: second,
        },
        Factor {
            op: Op::Conv(ConvAttrs::new(&[1, 1])),
            weight: tensor_of(v_w.as_ref(), vec![m, r_out, 1, 1]),
            bias: Some(tensor_of(bias.as_ref(), vec![m])),
            out: layer.out_type.clone(),
        },
    ];
    Form { ranks: vec![r_in, r_out], factors, rel_error, macs, approx }
}
