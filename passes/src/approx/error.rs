//! The error model: a proposal's predicted effect on the network's output metric.
//!
//! `predicted(p) = (s_L · e_p)²`, where `e_p` is the proposal's relative output error on the fit
//! split (exact, from the layer's input second moment) and `s_L` the layer's *sensitivity*: how
//! much the network's (continuous) metric moves per unit of relative error injected at layer
//! `L`, measured once per layer by perturbing the layer's weights with a seeded random
//! direction scaled to a relative output error `ε` on the fit split and running the network.
//! The charged quantity is the square — an energy — so that the errors of independent layers
//! add, as the squared rel-L2 of a sum of uncorrelated perturbations does; a mix's predicted
//! metric is `sqrt(Σ predicted)`. Assumptions: the metric is locally linear in each layer's
//! error (true for small errors: `ε` is picked at the scale of the proposals' errors), a
//! structured (low-rank) error propagates like a random one of the same energy, and layers'
//! errors are uncorrelated.

use cnnc_ir::{Graph, Tensor, ValueRef, VerifiedGraph};
use faer::Mat;

use super::linalg::SecondMoment;
use super::{Layer, LayerKind};

/// `W̃ + Δ` for a seeded Gaussian-like direction `Δ` scaled so that `‖Δ‖_Σ = eps · ‖W̃‖_Σ`
/// (relative output error `eps` on the fit split). The bias column stays unperturbed when the
/// layer has no bias to carry it.
pub fn perturbed(layer: &Layer, w: &Mat<f64>, sigma: &SecondMoment, eps: f64, seed: u64) -> Mat<f64> {
    let (m, d) = (w.nrows(), w.ncols());
    let has_bias = layer.bias.is_some() && !matches!(layer.kind, LayerKind::Dense { beta: 0.0, .. });
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        // Sum of four uniforms: close enough to a Gaussian for a random direction.
        let mut t = 0.0;
        for _ in 0..4 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            t += (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        }
        t
    };
    let delta = Mat::from_fn(m, d, |_, j| if j == d - 1 && !has_bias { 0.0 } else { next() });
    let (dn, wn) = (sigma.energy(delta.as_ref()).sqrt(), sigma.energy(w.as_ref()).sqrt());
    let scale = if dn > 0.0 { eps * wn / dn } else { 0.0 };
    w + delta * faer::Scale(scale)
}

/// `graph` with `layer`'s weight (the value `weight`) and bias (`bias`) replaced by the
/// augmented weight `w` (in the layer's layout; α and β of a Gemm divided back out).
pub fn with_weights(
    graph: &VerifiedGraph,
    layer: &Layer,
    weight: ValueRef,
    bias: Option<ValueRef>,
    w: &Mat<f64>,
) -> Option<VerifiedGraph> {
    let (m, d) = (w.nrows(), w.ncols() - 1);
    let mut g: Graph = (**graph).clone();
    let old_w = g.weight_of(&weight)?.clone();
    let (wt, bt) = match &layer.kind {
        LayerKind::Conv(_) => {
            let wt = Tensor::from_f32(old_w.shape().to_vec(), (0..m * d).map(|i| w[(i / d, i % d)] as f32).collect());
            let bt = bias.map(|_| Tensor::from_f32([m], (0..m).map(|o| w[(o, d)] as f32).collect()));
            (wt.ok()?, bt.transpose().ok()?)
        }
        LayerKind::Dense { alpha, beta, trans_b, .. } => {
            let (alpha, beta) = (f64::from(*alpha), f64::from(*beta));
            let data: Vec<f32> = if *trans_b {
                (0..m * d).map(|i| (w[(i / d, i % d)] / alpha) as f32).collect()
            } else {
                (0..m * d).map(|i| (w[(i % m, i / m)] / alpha) as f32).collect()
            };
            let wt = Tensor::from_f32(old_w.shape().to_vec(), data).ok()?;
            let bt = match bias {
                Some(b) if beta != 0.0 => {
                    let shape = g.weight_of(&b)?.shape().to_vec();
                    if shape.iter().product::<usize>() != m {
                        return None;
                    }
                    Some(Tensor::from_f32(shape, (0..m).map(|o| (w[(o, d)] / beta) as f32).collect()).ok()?)
                }
                _ => None,
            };
            (wt, bt)
        }
    };
    let new_w = g.add_weight(format!("{}.perturbed_w", layer.name), wt);
    g.replace_uses(weight, new_w);
    if let (Some(b), Some(bt)) = (bias, bt) {
        let new_b = g.add_weight(format!("{}.perturbed_b", layer.name), bt);
        g.replace_uses(b, new_b);
    }
    g.remove_dead_nodes();
    cnnc_ir::verify(g).ok()
}

/// Predicted errors of the proposals: `(sensitivity[layer] · rel_error)²`. A proposal with any
/// layer error is charged at least the smallest positive f64, even on a layer whose measured
/// sensitivity is 0: budgeted extraction treats an error of exactly 0 as lossless (free at
/// λ = ∞), which only an exact factorization is.
pub fn predicted_errors(proposals: &[super::Proposal], sensitivity: &[f64]) -> Vec<f64> {
    proposals
        .iter()
        .map(|p| {
            let s = sensitivity.get(p.layer).copied().unwrap_or(f64::INFINITY);
            let e = s * p.rel_error;
            let floor = if p.rel_error > 0.0 { f64::MIN_POSITIVE } else { 0.0 };
            (e * e).max(floor)
        })
        .collect()
}

/// How sensitivities are measured: the change of `metric` (a continuous one: `rel-l2`,
/// `logit-l2`, `cosine`) on the first `max_samples` samples of `split` when a layer's weights
/// are perturbed to relative output error `eps`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probe {
    pub metric: crate::Metric,
    pub eps: f64,
    pub split: crate::Split,
    pub max_samples: usize,
}

/// Each layer's sensitivity: the metric's change under `probe`'s perturbation, divided by its
/// `eps`. Runs the lossless graph once and each perturbed graph once.
pub fn sensitivities(
    evaluator: &mut dyn crate::Evaluator,
    egraph: &egg::EGraph<crate::Cnn, crate::CnnAnalysis>,
    lossless: &crate::Lossless,
    moments: &[Option<SecondMoment>],
    probe: Probe,
) -> Result<Vec<f64>, crate::EvalError> {
    let Probe { metric, eps, split, max_samples } = probe;
    let enough = |b: &crate::EvalBatch<'_>| {
        let seen = b.first + b.outputs.first().and_then(|t| t.shape().first().copied()).unwrap_or(1);
        if seen >= max_samples { crate::Flow::Stop } else { crate::Flow::Continue }
    };
    let mut reference: Vec<Vec<Tensor>> = Vec::new();
    evaluator.run(&lossless.graph, split, &[], &mut |b| {
        reference.push(b.outputs.to_vec());
        Ok(enough(&b))
    })?;
    let mut out = Vec::with_capacity(lossless.layers.len());
    for (i, layer) in lossless.layers.iter().enumerate() {
        let (Some(Some(sigma)), Some(w)) = (moments.get(i), super::augmented_weight(egraph, layer)) else {
            out.push(f64::INFINITY);
            continue;
        };
        let (wv, bv) = lossless.params[i];
        let Some(g) = with_weights(&lossless.graph, layer, wv, bv, &perturbed(layer, &w, sigma, eps, i as u64)) else {
            out.push(f64::INFINITY);
            continue;
        };
        let mut acc = crate::MetricAcc::new(metric);
        let mut batch = 0;
        evaluator.run(&g, split, &[], &mut |b| {
            if let Some(r) = reference.get(batch) {
                acc.add(r, b.outputs, b.labels);
            }
            batch += 1;
            Ok(enough(&b))
        })?;
        out.push(acc.value() / eps);
    }
    Ok(out)
}
