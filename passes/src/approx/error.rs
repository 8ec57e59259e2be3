//! The error model: a proposal's predicted effect on the network's output metric.
//!
//! `predicted(p) = (s_L · e_p)²`, where `e_p` is the proposal's relative output error on
//! held-out data (exact, from the layer's input second moment there: `held_out_error`; a fit
//! looks better on the data it was fitted on, the more so the fewer distinct inputs the fit
//! split has) and `s_L` the layer's *sensitivity*: how much the network's (continuous) metric
//! moves per unit of relative error at layer `L`, measured once per layer by running the
//! network with one of the layer's own proposals in place (the one whose error is closest to
//! the probe's `ε`) on the same held-out data and dividing the metric's change by that
//! proposal's `e_p`. The charged quantity is the square — an energy — so that
//! the errors of independent layers add, as the squared rel-L2 of a sum of uncorrelated
//! perturbations does; a mix's predicted metric is `sqrt(Σ predicted)`.
//!
//! Assumptions: the metric is locally linear in each layer's error (true for small errors: the
//! reference proposal is picked at the scale budgets ask for); the layer's other proposals
//! (other ranks, other families) propagate like the reference one per unit of error — they are
//! all truncations of the same layer's weak output directions, and a structured error of this
//! kind can move the output several times more, or less, than a random one of the same energy,
//! which is why the probe is a real proposal and not a random perturbation; and layers' errors
//! are uncorrelated. `cnnc opt --audit-error-model` measures how far each holds on a model.

use cnnc_ir::Tensor;

use super::Proposal;

/// Predicted errors of the proposals: `(sensitivity[layer] · held_out_error)²`. A proposal with any
/// layer error is charged at least the smallest positive f64, even on a layer whose measured
/// sensitivity is 0: budgeted extraction treats an error of exactly 0 as lossless (free at
/// λ = ∞), which only an exact factorization is.
pub fn predicted_errors(proposals: &[Proposal], sensitivity: &[f64]) -> Vec<f64> {
    predicted_errors_with(proposals, sensitivity, sensitivity)
}

/// [`predicted_errors`] with the sensitivities of the low-rank families' probes (`sensitivity`)
/// and of the int8 forms (`int8`, see [`int8_probe_of`]) apart: a quantized layer's error is
/// noise spread over every output direction, a truncation's is structured, and one moves the
/// network's output differently from the other per unit of layer error.
pub fn predicted_errors_with(proposals: &[Proposal], sensitivity: &[f64], int8: &[f64]) -> Vec<f64> {
    proposals
        .iter()
        .map(|p| {
            let table = if p.family == super::Family::Int8 { int8 } else { sensitivity };
            let s = table.get(p.layer).copied().unwrap_or(f64::INFINITY);
            let e = s * p.held_out_error;
            let floor = if p.rel_error > 0.0 || p.held_out_error > 0.0 { f64::MIN_POSITIVE } else { 0.0 };
            (e * e).max(floor)
        })
        .collect()
}

/// How sensitivities are measured: the change of `metric` (a continuous one: `rel-l2`,
/// `logit-l2`, `cosine`) on the first `max_samples` samples of `split` with a proposal of
/// relative layer error close to `eps` in place.
/// The proposal that probes `layer`'s sensitivity to the low-rank families: the one whose
/// held-out error is closest to `eps` in ratio (`None` when the layer has no low-rank proposal
/// with an error).
pub fn probe_of(proposals: &[Proposal], layer: usize, eps: f64) -> Option<&Proposal> {
    let distance = |p: &&Proposal| (p.held_out_error / eps).ln().abs();
    proposals
        .iter()
        .filter(|p| p.layer == layer && p.held_out_error > 0.0 && p.family != super::Family::Int8)
        .min_by(|a, b| distance(a).total_cmp(&distance(b)))
}

/// The int8 form of `layer`, its own sensitivity probe (one per layer).
pub fn int8_probe_of(proposals: &[Proposal], layer: usize) -> Option<&Proposal> {
    proposals.iter().find(|p| p.layer == layer && p.held_out_error > 0.0 && p.family == super::Family::Int8)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probe {
    pub metric: crate::Metric,
    pub eps: f64,
    pub split: crate::Split,
    pub max_samples: usize,
}

/// Each layer's sensitivity: the metric's change on `probe.split` (the held-out data the
/// proposals' `held_out_error` was measured on) when the layer's proposal with the error
/// closest to `probe.eps` is in place, divided by that error. Runs the lossless
/// graph once and one graph per layer that has a proposal with a non-zero error; other layers
/// get NaN (nothing charges them), a layer whose probe graph cannot be built infinity.
pub fn sensitivities(
    evaluator: &mut dyn crate::Evaluator,
    egraph: &egg::EGraph<crate::Cnn, crate::CnnAnalysis>,
    lossless: &crate::Lossless,
    proposals: &[Proposal],
    probe: Probe,
) -> Result<Vec<f64>, crate::EvalError> {
    let probes: Vec<Option<&Proposal>> =
        (0..lossless.layers.len()).map(|i| probe_of(proposals, i, probe.eps)).collect();
    sensitivities_of(evaluator, egraph, lossless, &probes, probe)
}

/// Each layer's sensitivity to its int8 form ([`int8_probe_of`]), measured as
/// [`sensitivities`] measures the low-rank one (NaN for a layer without an int8 form).
pub fn int8_sensitivities(
    evaluator: &mut dyn crate::Evaluator,
    egraph: &egg::EGraph<crate::Cnn, crate::CnnAnalysis>,
    lossless: &crate::Lossless,
    proposals: &[Proposal],
    probe: Probe,
) -> Result<Vec<f64>, crate::EvalError> {
    let probes: Vec<Option<&Proposal>> = (0..lossless.layers.len()).map(|i| int8_probe_of(proposals, i)).collect();
    sensitivities_of(evaluator, egraph, lossless, &probes, probe)
}

/// The sensitivity of each layer `i` with `probes[i]` in place (see [`sensitivities`]).
fn sensitivities_of(
    evaluator: &mut dyn crate::Evaluator,
    egraph: &egg::EGraph<crate::Cnn, crate::CnnAnalysis>,
    lossless: &crate::Lossless,
    probes: &[Option<&Proposal>],
    probe: Probe,
) -> Result<Vec<f64>, crate::EvalError> {
    let Probe { metric, split, max_samples, .. } = probe;
    if probes.iter().all(Option::is_none) {
        return Ok(vec![f64::NAN; probes.len()]);
    }
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
    for p in probes {
        let Some(p) = *p else {
            out.push(f64::NAN);
            continue;
        };
        let Ok(g) = super::apply(egraph, lossless, &[p]) else {
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
        out.push(acc.value() / p.held_out_error);
    }
    Ok(out)
}
