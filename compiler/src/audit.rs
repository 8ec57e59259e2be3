//! `--audit-error-model N`: how well the error model predicts, on this model and data.
//!
//! The budgeted search trusts the predicted error of a mix (`sqrt(Σ (s_L·e_p)²)` in the
//! surrogate metric's units) to order and to size candidates. The audit measures it: it builds
//! up to `N` single-proposal graphs (spread over layers and ranks) and `N` seeded random
//! multi-layer mixes (each filled up to a target error drawn log-uniformly, so the mixes span
//! the errors budgets ask for) with [`cnnc_passes::approx::apply`], runs each on the validation
//! split (where the search decides) and on the test split (which nothing was fitted or probed
//! on), and reports predicted against measured surrogate metric, Spearman's ρ and the share
//! whose measured/predicted ratio lies in [0.5, 2], per split. Each layer's sensitivity probe
//! is left out of the singles: on the validation split it is exact by construction. It changes
//! nothing the search chooses.

use cnnc_ir::{Tensor, VerifiedGraph};
use cnnc_passes::ProposalId;
use cnnc_passes::approx::{Proposal, apply};
use cnnc_passes::{EvalError, Evaluator, Flow, Metric, MetricAcc, Split};
use serde::Serialize;

/// Smallest and largest target error (surrogate metric units) of a random mix.
const MIX_TARGETS: (f64, f64) = (0.01, 0.3);

/// The audit's findings.
#[derive(Clone, Debug, Serialize)]
pub struct Audit {
    /// The continuous metric predicted and measured.
    pub metric: String,
    pub singles: Vec<AuditRow>,
    pub mixes: Vec<AuditRow>,
    /// Predicted against measured on the validation split.
    pub validation: AuditStats,
    /// Predicted against measured on the test split (`None` when it is empty).
    pub test: Option<AuditStats>,
    /// Layers the singles cover.
    pub single_layers: usize,
}

/// Rank correlation and ratio share of the singles and of the mixes on one split.
#[derive(Clone, Debug, Serialize)]
pub struct AuditStats {
    pub singles_spearman: f64,
    pub mixes_spearman: f64,
    /// Share of rows whose measured/predicted ratio is in [0.5, 2].
    pub singles_within_2x: f64,
    pub mixes_within_2x: f64,
}

/// One audited choice.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRow {
    /// `layer:family:ranks` of each proposal chosen.
    pub choice: Vec<String>,
    pub predicted: f64,
    /// Measured on the validation split.
    pub measured: f64,
    /// Measured on the test split.
    pub measured_test: Option<f64>,
}

/// A metric value predicted from an error energy (the inverse of the budget's conversion).
pub fn predicted_value(metric: Metric, energy: f64) -> f64 {
    match metric {
        Metric::Cosine => energy / 2.0,
        _ => energy.sqrt(),
    }
}

/// Spearman's rank correlation (ties share their mean rank); NaN below two points.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    if a.len() < 2 || a.len() != b.len() {
        return f64::NAN;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let mean = (a.len() - 1) as f64 / 2.0;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - mean) * (y - mean);
        saa += (x - mean) * (x - mean);
        sbb += (y - mean) * (y - mean);
    }
    sab / (saa * sbb).sqrt()
}

/// `count` proposals spread over layers and ranks: every candidate (each family, each rank of
/// the energy grid) of layers taken evenly over the network, so that the singles span each
/// layer's whole error range and the network's depth; proposals in `skip` are left out.
pub fn spread<'p>(proposals: &'p [Proposal], count: usize, skip: &[ProposalId]) -> Vec<&'p Proposal> {
    let mut by_layer: std::collections::BTreeMap<usize, Vec<&Proposal>> = Default::default();
    for p in proposals.iter().filter(|p| !skip.contains(&p.id)) {
        by_layer.entry(p.layer).or_default().push(p);
    }
    let layers: Vec<&Vec<&Proposal>> = by_layer.values().collect();
    if layers.is_empty() {
        return Vec::new();
    }
    // The fewest evenly spread layers whose candidates fill `count`.
    let pick = |wanted: usize| -> Vec<&Proposal> {
        (0..wanted).flat_map(|k| layers[k * layers.len() / wanted].iter().copied()).take(count).collect()
    };
    let wanted = (1..=layers.len()).find(|&w| pick(w).len() >= count).unwrap_or(layers.len());
    pick(wanted)
}

/// Seeded random mixes of at least two layers, each filled up to a log-uniform target error.
pub fn mixes<'p>(proposals: &'p [Proposal], energies: &[f64], metric: Metric, count: usize) -> Vec<Vec<&'p Proposal>> {
    let mut state: u64 = 0x5EED_A0D1;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut layers: Vec<usize> = proposals.iter().map(|p| p.layer).collect();
    layers.sort_unstable();
    layers.dedup();
    if layers.len() < 2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let (lo, hi) = MIX_TARGETS;
        let target = (lo.ln() + next() * (hi / lo).ln()).exp();
        // Layers in a random order; each gets a random candidate that keeps the mix under target.
        let mut order = layers.clone();
        for i in (1..order.len()).rev() {
            order.swap(i, (next() * (i + 1) as f64) as usize % (i + 1));
        }
        let mut mix: Vec<&Proposal> = Vec::new();
        let mut energy = 0.0;
        for l in order {
            let cands: Vec<&Proposal> = proposals.iter().filter(|p| p.layer == l).collect();
            let p = cands[(next() * cands.len() as f64) as usize % cands.len()];
            let e = energies[p.id.0 as usize];
            if !e.is_finite() || (predicted_value(metric, energy + e) > target && mix.len() >= 2) {
                continue;
            }
            mix.push(p);
            energy += e;
        }
        mix.sort_by_key(|p| p.layer);
        out.push(mix);
    }
    out
}

fn label(p: &Proposal, lossless: &cnnc_passes::Lossless) -> String {
    let ranks: Vec<String> = p.ranks.iter().map(ToString::to_string).collect();
    format!("{}:{}:{}", lossless.layers[p.layer].name, p.family.name(), ranks.join("x"))
}

/// The original model's outputs on one split, the reference the audit measures against.
pub struct SplitRef<'r> {
    pub split: Split,
    pub outputs: &'r [Vec<Tensor>],
}

/// Runs the audit: `count` singles (leaving out `probes`) and `count` mixes, measured with
/// `metric` on the validation split and, when given, the test split.
#[allow(clippy::too_many_arguments)]
pub fn audit(
    ev: &mut dyn Evaluator,
    search: &cnnc_passes::SpeedSearch,
    lossless: &cnnc_passes::Lossless,
    proposals: &[Proposal],
    energies: &[f64],
    metric: Metric,
    probes: &[ProposalId],
    validation: SplitRef<'_>,
    test: Option<SplitRef<'_>>,
    count: usize,
) -> Result<Audit, EvalError> {
    let mut measure = |choice: &[&Proposal]| -> Result<AuditRow, EvalError> {
        let g: VerifiedGraph = apply(&search.loaded.egraph, lossless, choice)
            .map_err(|e| EvalError::Failed(format!("audit: building {:?}: {e}", choice.len())))?;
        let mut on = |r: &SplitRef<'_>| -> Result<f64, EvalError> {
            let mut acc = MetricAcc::new(metric);
            let mut i = 0;
            ev.run(&g, r.split, &[], &mut |b| {
                if let Some(o) = r.outputs.get(i) {
                    acc.add(o, b.outputs, b.labels);
                }
                i += 1;
                Ok(Flow::Continue)
            })?;
            Ok(acc.value())
        };
        let measured = on(&validation)?;
        let measured_test = test.as_ref().map(&mut on).transpose()?;
        let energy: f64 = choice.iter().map(|p| energies[p.id.0 as usize]).sum();
        Ok(AuditRow {
            choice: choice.iter().map(|p| label(p, lossless)).collect(),
            predicted: predicted_value(metric, energy),
            measured,
            measured_test,
        })
    };
    let singles_chosen = spread(proposals, count, probes);
    let mut singles = Vec::new();
    for p in &singles_chosen {
        singles.push(measure(&[p])?);
    }
    let mut mix_rows = Vec::new();
    for m in mixes(proposals, energies, metric, count) {
        mix_rows.push(measure(&m)?);
    }
    let stats = |rows: &[AuditRow], on_test: bool| {
        let pairs: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.predicted, if on_test { r.measured_test.unwrap_or(f64::NAN) } else { r.measured }))
            .collect();
        let (p, m): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
        let within = pairs.iter().filter(|(p, m)| (0.5..=2.0).contains(&(m / p))).count();
        (spearman(&p, &m), if rows.is_empty() { f64::NAN } else { within as f64 / rows.len() as f64 })
    };
    let split_stats = |on_test: bool| {
        let (singles_spearman, singles_within_2x) = stats(&singles, on_test);
        let (mixes_spearman, mixes_within_2x) = stats(&mix_rows, on_test);
        AuditStats { singles_spearman, mixes_spearman, singles_within_2x, mixes_within_2x }
    };
    let validation_stats = split_stats(false);
    let test_stats = test.is_some().then(|| split_stats(true));
    let mut layers: Vec<usize> = singles_chosen.iter().map(|p| p.layer).collect();
    layers.sort_unstable();
    layers.dedup();
    Ok(Audit {
        metric: metric.name(),
        singles,
        mixes: mix_rows,
        validation: validation_stats,
        test: test_stats,
        single_layers: layers.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_monotone_and_reversed_orders() {
        let a = [1.0, 2.0, 3.0, 10.0];
        assert!((spearman(&a, &[0.1, 0.5, 0.6, 9.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ties share their mean rank: [1, 1, 2] ranks as [0.5, 0.5, 2].
        let r = spearman(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]);
        assert!((r - 0.866_025_403_784_438_6).abs() < 1e-12, "{r}");
        assert!(spearman(&[1.0], &[1.0]).is_nan());
    }
}
