//! The user's accuracy metrics (`--metric`), measured as a *drop* against the original model on
//! the same samples, and accumulated batch by batch so a split never sits in memory.
//!
//! - `top1`: agreement lost — the fraction of samples whose argmax differs from the original's;
//!   with labels, accuracy lost (original's accuracy − candidate's, floored at 0).
//! - `rel-l2`: `sqrt(Σ‖c − r‖² / Σ‖r‖²)` over the split (pooled rel-L2 of the outputs).
//! - `logit-l2`: the same on logits; a probability output (rows of the last axis non-negative and
//!   summing to 1) is first mapped to centred log-probabilities per row, the log-odds for two
//!   classes.
//! - `cosine`: the mean over samples of `1 − cos(c, r)`.
//! - `mask-iou:THR`: `1 −` the minimum over samples of the IoU of `r > THR` and `c > THR`
//!   (an empty union counts as IoU 1).
//!
//! With several outputs the metric applies to each and the worst counts.

use cnnc_ir::{Tensor, TensorType};

/// A metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    Top1,
    RelL2,
    LogitL2,
    Cosine,
    MaskIou(f32),
}

impl Metric {
    /// Parses the `--metric` spelling.
    pub fn parse(s: &str) -> Result<Metric, String> {
        Ok(match s {
            "top1" => Metric::Top1,
            "rel-l2" => Metric::RelL2,
            "logit-l2" => Metric::LogitL2,
            "cosine" => Metric::Cosine,
            _ => match s.strip_prefix("mask-iou:") {
                Some(t) => match t.parse::<f32>() {
                    Ok(v) if v.is_finite() => Metric::MaskIou(v),
                    _ => return Err(format!("mask-iou:THR needs a number threshold, got `{t}`")),
                },
                None => {
                    return Err(format!(
                        "unknown metric `{s}`: expected top1, rel-l2, logit-l2, cosine or mask-iou:THR"
                    ));
                }
            },
        })
    }

    /// The `--metric` spelling.
    pub fn name(&self) -> String {
        match self {
            Metric::Top1 => "top1".into(),
            Metric::RelL2 => "rel-l2".into(),
            Metric::LogitL2 => "logit-l2".into(),
            Metric::Cosine => "cosine".into(),
            Metric::MaskIou(t) => format!("mask-iou:{t}"),
        }
    }

    /// Whether the drop is a worst case over samples (`mask-iou`: one minimum IoU), so that a
    /// small split understates it: the worst of 14 pages says little about the worst of 50. On
    /// ppocr_v4_det's 50 text pages, a mix whose worst validation page kept IoU 0.966 kept 0.932
    /// on the worst test page and 0.829 on the worst fit page. `-O speed` therefore checks such a
    /// metric on the fit split as well as on validation (fitting on a page tends to flatter it).
    pub fn worst_case(&self) -> bool {
        matches!(self, Metric::MaskIou(_))
    }

    /// The default for a model's outputs: `top1` for one output shaped `[N, classes]`, `rel-l2`
    /// otherwise.
    pub fn default_for(outputs: &[TensorType]) -> Metric {
        match outputs {
            [t] if t.rank() == 2 && t.shape[1] > 1 => Metric::Top1,
            _ => Metric::RelL2,
        }
    }
}

/// The top-1 guard's margin window: this fraction (1/N) of a split's samples.
const GUARD_WINDOW: usize = 8;

/// Per-output running sums.
#[derive(Clone, Debug, Default)]
struct OutputAcc {
    samples: usize,
    disagree: usize,
    ref_correct: usize,
    cand_correct: usize,
    labelled: usize,
    err2: f64,
    ref2: f64,
    cos_loss: f64,
    min_iou: f64,
    /// Sums over the outputs' "logits" (log-odds of a two-class probability output, centred
    /// log-probabilities of another probability output, the values themselves otherwise):
    /// reference `a`, candidate `b`.
    n: f64,
    sa: f64,
    sb: f64,
    saa: f64,
    sbb: f64,
    sab: f64,
    /// `top1`: per sample, the original's margin (its top logit over the runner-up), the change
    /// of that margin in the candidate, and whether the original was right (or no label).
    margins: Vec<(f64, f64, bool)>,
}

/// How closely a candidate follows the original on one output, whatever the budget's metric:
/// what users of a classifier ask (`cnnc opt`'s report gives it for the test split).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fidelity {
    /// Share of samples whose argmax is the original's.
    pub agreement: f64,
    /// Pearson correlation of the logits (log-odds for two-class probabilities) with the
    /// original's, and their relative L2 error.
    pub logit_pearson: f64,
    pub logit_rel_l2: f64,
}

/// A metric accumulated over batches.
#[derive(Clone, Debug)]
pub struct MetricAcc {
    metric: Metric,
    outputs: Vec<OutputAcc>,
}

impl MetricAcc {
    pub fn new(metric: Metric) -> MetricAcc {
        MetricAcc { metric, outputs: Vec::new() }
    }

    /// Adds one batch: the original model's outputs, the candidate's, each with the batch along
    /// dim 0, and the samples' labels (used by `top1` when every sample has one).
    pub fn add(&mut self, reference: &[Tensor], candidate: &[Tensor], labels: &[Option<i64>]) {
        if self.outputs.len() < reference.len() {
            self.outputs.resize(reference.len(), OutputAcc { min_iou: 1.0, ..OutputAcc::default() });
        }
        for ((acc, r), c) in self.outputs.iter_mut().zip(reference).zip(candidate) {
            let (Some(r), Some(c)) = (r.as_f32(), c.as_f32()) else { continue };
            if r.len() != c.len() || r.is_empty() {
                continue;
            }
            let n = r_batch(r.len(), reference.first().map_or(1, |t| t.shape().first().copied().unwrap_or(1)));
            let row = r.len() / n;
            for s in 0..n {
                let (rs, cs) = (&r[s * row..(s + 1) * row], &c[s * row..(s + 1) * row]);
                acc.samples += 1;
                let (ra, ca) = (argmax(rs), argmax(cs));
                acc.disagree += usize::from(ra != ca);
                if self.metric == Metric::Top1 && rs.len() > 1 {
                    let margin = |v: &[f32]| {
                        let top = f64::from(v[ra]);
                        let next = v.iter().enumerate().filter(|&(k, _)| k != ra).map(|(_, &x)| f64::from(x));
                        top - next.fold(f64::NEG_INFINITY, f64::max)
                    };
                    let (m, mc) = (margin(rs), margin(cs));
                    let right = labels.get(s).copied().flatten().is_none_or(|l| l == ra as i64);
                    acc.margins.push((m, mc - m, right));
                }
                if let Some(Some(l)) = labels.get(s) {
                    acc.labelled += 1;
                    acc.ref_correct += usize::from(ra as i64 == *l);
                    acc.cand_correct += usize::from(ca as i64 == *l);
                }
                let (rl, cl) = if self.metric == Metric::LogitL2 && is_probability(rs) {
                    (centred_log(rs), centred_log(cs))
                } else {
                    (rs.iter().map(|&v| f64::from(v)).collect(), cs.iter().map(|&v| f64::from(v)).collect())
                };
                let logits = |v: &[f32]| -> Vec<f64> {
                    if v.len() == 2 && is_probability(v) {
                        vec![f64::from(v[1]).max(1e-30).ln() - f64::from(v[0]).max(1e-30).ln()]
                    } else if is_probability(v) {
                        centred_log(v)
                    } else {
                        v.iter().map(|&x| f64::from(x)).collect()
                    }
                };
                for (a, b) in logits(rs).into_iter().zip(logits(cs)) {
                    acc.n += 1.0;
                    acc.sa += a;
                    acc.sb += b;
                    acc.saa += a * a;
                    acc.sbb += b * b;
                    acc.sab += a * b;
                }
                acc.err2 += rl.iter().zip(&cl).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
                acc.ref2 += rl.iter().map(|a| a * a).sum::<f64>();
                let dot: f64 = rl.iter().zip(&cl).map(|(a, b)| a * b).sum();
                let nc: f64 = cl.iter().map(|b| b * b).sum::<f64>().sqrt();
                let nr = rl.iter().map(|a| a * a).sum::<f64>().sqrt();
                acc.cos_loss += if nr > 0.0 && nc > 0.0 { 1.0 - dot / (nr * nc) } else { f64::from(nr != nc) };
                if let Metric::MaskIou(t) = self.metric {
                    let (mut inter, mut union) = (0usize, 0usize);
                    for (a, b) in rs.iter().zip(cs) {
                        let (x, y) = (*a > t, *b > t);
                        inter += usize::from(x && y);
                        union += usize::from(x || y);
                    }
                    let iou = if union == 0 { 1.0 } else { inter as f64 / union as f64 };
                    acc.min_iou = acc.min_iou.min(iou);
                }
            }
        }
    }

    /// The drop so far (the worst output's); 0 before any sample.
    pub fn value(&self) -> f64 {
        self.outputs.iter().map(|a| self.output_value(a)).fold(0.0, f64::max)
    }

    fn output_value(&self, a: &OutputAcc) -> f64 {
        if a.samples == 0 {
            return 0.0;
        }
        match self.metric {
            Metric::Top1 if a.labelled == a.samples => {
                ((a.ref_correct as f64 - a.cand_correct as f64) / a.samples as f64).max(0.0)
            }
            Metric::Top1 => a.disagree as f64 / a.samples as f64,
            Metric::RelL2 | Metric::LogitL2 => {
                if a.ref2 > 0.0 {
                    (a.err2 / a.ref2).sqrt()
                } else {
                    a.err2.sqrt()
                }
            }
            Metric::Cosine => a.cos_loss / a.samples as f64,
            Metric::MaskIou(_) => 1.0 - a.min_iou,
        }
    }

    /// The drop with, for `top1`, a guard against small splits: the larger of the observed drop
    /// and a smoothed estimate that pairs each sample's margin `m_i` with the margin changes
    /// `Δ_j` of the samples nearest it in margin (a window of [`GUARD_WINDOW`]-th of the split,
    /// at least 8): `(1/n) Σᵢ [right_i] · P_j(m_i + Δ_j < 0)`. It estimates the flips a larger
    /// split would show, seeing a candidate that pushes samples close to flipping before one
    /// flips (one flip in 250 samples is already 0.4 %), while pairing only like margins: large
    /// margins move more than small ones, so pairing every sample with every change would
    /// overstate the drop. Flips back to the right class are ignored (conservative). Other
    /// metrics: [`MetricAcc::value`].
    pub fn guarded_value(&self) -> f64 {
        let smooth = |a: &OutputAcc| -> f64 {
            let n = a.margins.len();
            if n == 0 {
                return 0.0;
            }
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&x, &y| a.margins[x].0.total_cmp(&a.margins[y].0).then(x.cmp(&y)));
            let w = (n / GUARD_WINDOW).max(8).min(n);
            let mut flips = 0.0;
            for (rank, &i) in order.iter().enumerate() {
                let (m, _, right) = a.margins[i];
                if !right {
                    continue;
                }
                let lo = rank.saturating_sub(w / 2).min(n - w);
                let window = &order[lo..lo + w];
                flips += window.iter().filter(|&&j| m + a.margins[j].1 < 0.0).count() as f64 / w as f64;
            }
            flips / n as f64
        };
        match self.metric {
            Metric::Top1 => self.outputs.iter().map(|a| self.output_value(a).max(smooth(a))).fold(0.0, f64::max),
            _ => self.value(),
        }
    }

    /// The first output's [`Fidelity`], once a sample was added.
    pub fn fidelity(&self) -> Option<Fidelity> {
        let a = self.outputs.first().filter(|a| a.samples > 0 && a.n > 0.0)?;
        let cov = a.sab - a.sa * a.sb / a.n;
        let (va, vb) = (a.saa - a.sa * a.sa / a.n, a.sbb - a.sb * a.sb / a.n);
        let err2 = a.saa + a.sbb - 2.0 * a.sab;
        Some(Fidelity {
            agreement: 1.0 - a.disagree as f64 / a.samples as f64,
            logit_pearson: if va > 0.0 && vb > 0.0 { cov / (va * vb).sqrt() } else { f64::NAN },
            logit_rel_l2: if a.saa > 0.0 { (err2.max(0.0) / a.saa).sqrt() } else { err2.max(0.0).sqrt() },
        })
    }

    /// The candidate's and the original's accuracy when every sample had a label (`top1`).
    pub fn accuracies(&self) -> Option<(f64, f64)> {
        let a = self.outputs.first()?;
        (a.labelled > 0 && a.labelled == a.samples)
            .then(|| (a.ref_correct as f64 / a.samples as f64, a.cand_correct as f64 / a.samples as f64))
    }
}

/// Samples in an output of `len` elements whose tensor has `batch` rows along dim 0.
fn r_batch(len: usize, batch: usize) -> usize {
    if batch > 0 && len.is_multiple_of(batch) { batch } else { 1 }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Non-negative and summing to 1 within 1e-3 (softmax outputs in f32).
fn is_probability(v: &[f32]) -> bool {
    v.len() > 1 && v.iter().all(|&x| x >= 0.0) && (v.iter().map(|&x| f64::from(x)).sum::<f64>() - 1.0).abs() < 1e-3
}

/// `log p − mean(log p)`, with p floored at 1e-30 (f32 softmax underflow).
fn centred_log(v: &[f32]) -> Vec<f64> {
    let l: Vec<f64> = v.iter().map(|&x| f64::from(x).max(1e-30).ln()).collect();
    let mean = l.iter().sum::<f64>() / l.len() as f64;
    l.into_iter().map(|x| x - mean).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).expect("shape")
    }

    #[test]
    fn only_mask_iou_is_a_worst_case_metric() {
        assert!(Metric::MaskIou(0.3).worst_case());
        for m in [Metric::Top1, Metric::RelL2, Metric::LogitL2, Metric::Cosine] {
            assert!(!m.worst_case(), "{m:?}");
        }
    }

    #[test]
    fn top1_counts_disagreement_or_accuracy_lost_with_labels() {
        let r = t(&[2, 3], &[1.0, 2.0, 0.0, 5.0, 1.0, 0.0]);
        let c = t(&[2, 3], &[1.0, 2.0, 3.0, 5.0, 1.0, 0.0]);
        let mut m = MetricAcc::new(Metric::Top1);
        m.add(std::slice::from_ref(&r), std::slice::from_ref(&c), &[None, None]);
        assert_eq!(m.value(), 0.5);
        // Labels 2 and 0: the original gets 1 of 2, the candidate 2 of 2: nothing lost.
        let mut m = MetricAcc::new(Metric::Top1);
        m.add(std::slice::from_ref(&r), std::slice::from_ref(&c), &[Some(2), Some(0)]);
        assert_eq!(m.value(), 0.0);
        assert_eq!(m.accuracies(), Some((0.5, 1.0)));
    }

    #[test]
    fn the_top1_guard_sees_margins_eaten_before_a_flip() {
        // Four samples, margins 4, 4, 4 and 1; the candidate eats 2 of the first three margins
        // and 0.5 of the last: no argmax changes (observed drop 0), but a margin change of −2
        // would flip the sample of margin 1.
        let r = t(&[4, 2], &[4.0, 0.0, 4.0, 0.0, 4.0, 0.0, 1.0, 0.0]);
        let c = t(&[4, 2], &[3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 0.5, 0.0]);
        let mut m = MetricAcc::new(Metric::Top1);
        m.add(std::slice::from_ref(&r), std::slice::from_ref(&c), &[None; 4]);
        assert_eq!(m.value(), 0.0);
        // Margin changes: −2, −2, −2, −0.5; sample 3 (margin 1) flips with j = 0, 1, 2: 3/16.
        assert!((m.guarded_value() - 3.0 / 16.0).abs() < 1e-12, "{}", m.guarded_value());
        // A sample the original got wrong cannot be lost: labels 0, 0, 0, 1.
        let mut m = MetricAcc::new(Metric::Top1);
        m.add(std::slice::from_ref(&r), std::slice::from_ref(&c), &[Some(0), Some(0), Some(0), Some(1)]);
        assert_eq!(m.guarded_value(), 0.0);
        // Other metrics are unguarded.
        let mut m = MetricAcc::new(Metric::RelL2);
        m.add(std::slice::from_ref(&r), std::slice::from_ref(&c), &[None; 4]);
        assert_eq!(m.guarded_value(), m.value());
    }

    #[test]
    fn the_top1_guard_pairs_only_like_margins() {
        // 32 samples, margins 1.25^k, each halved by the candidate: nothing flips, and a change
        // of −m/2 only flips margins below m/2. Pairing every margin with every change would
        // estimate 406/1024 ≈ 0.40 (margin i flips with the changes of k ≥ i + 4); the window
        // of 8 nearest margins only sees that at the low end, where the window cannot be
        // centred: ranks 0..3 flip with 4, 3, 2, 1 of their 8 neighbours, (10/8)/32.
        let n = 32;
        let m: Vec<f32> = (0..n).map(|k| 1.25f32.powi(k)).collect();
        let r = t(&[n as usize, 2], &m.iter().flat_map(|&v| [v, 0.0]).collect::<Vec<_>>());
        let c = t(&[n as usize, 2], &m.iter().flat_map(|&v| [0.5 * v, 0.0]).collect::<Vec<_>>());
        let mut acc = MetricAcc::new(Metric::Top1);
        acc.add(std::slice::from_ref(&r), std::slice::from_ref(&c), &[None; 32]);
        assert_eq!(acc.value(), 0.0);
        assert!((acc.guarded_value() - 1.25 / 32.0).abs() < 1e-12, "{}", acc.guarded_value());
    }

    #[test]
    fn fidelity_reads_log_odds_of_two_class_probabilities() {
        // Log-odds ln(0.8/0.2) = ln 4, ln(0.5/0.5) = 0, ln(0.1/0.9) = −ln 9 against the candidate's
        // ln 3, 0, −ln 9 (every argmax kept: 0.5/0.5 ties resolve to class 0 on both sides).
        // Pearson of the two and rel-L2 (ln4 − ln3)/‖(ln4, 0, ln9)‖; 1e-6: f32 inputs.
        let r = t(&[3, 2], &[0.2, 0.8, 0.5, 0.5, 0.9, 0.1]);
        let c = t(&[3, 2], &[0.25, 0.75, 0.5, 0.5, 0.9, 0.1]);
        let mut m = MetricAcc::new(Metric::Top1);
        m.add(std::slice::from_ref(&r), std::slice::from_ref(&c), &[None, None, None]);
        let f = m.fidelity().expect("samples");
        assert_eq!(f.agreement, 1.0);
        let (a, b) = ([4f64.ln(), 0.0, -(9f64.ln())], [3f64.ln(), 0.0, -(9f64.ln())]);
        let mean = |v: &[f64; 3]| v.iter().sum::<f64>() / 3.0;
        let (ma, mb) = (mean(&a), mean(&b));
        let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let var = |v: &[f64; 3], m: f64| v.iter().map(|x| (x - m) * (x - m)).sum::<f64>();
        let pearson = cov / (var(&a, ma) * var(&b, mb)).sqrt();
        assert!((f.logit_pearson - pearson).abs() < 1e-6, "{f:?} vs {pearson}");
        let rel = (4f64.ln() - 3f64.ln()) / (4f64.ln().powi(2) + 9f64.ln().powi(2)).sqrt();
        assert!((f.logit_rel_l2 - rel).abs() < 1e-6, "{f:?} vs {rel}");
    }

    #[test]
    fn logit_l2_of_probabilities_compares_log_odds() {
        // Two classes: p = (0.5, 0.5) vs (0.25, 0.75): log-odds 0 vs ln 3, centred ±ln3/2.
        let r = t(&[1, 2], &[0.5, 0.5]);
        let c = t(&[1, 2], &[0.25, 0.75]);
        let mut m = MetricAcc::new(Metric::LogitL2);
        m.add(std::slice::from_ref(&r), std::slice::from_ref(&c), &[None]);
        // ‖r‖ = 0 after centring: the pooled error is reported unnormalised, sqrt(2)·ln3/2.
        assert!((m.value() - std::f64::consts::SQRT_2 * 3f64.ln() / 2.0).abs() < 1e-6, "{}", m.value());
        let r = t(&[1, 2], &[0.2, 0.8]);
        let mut m = MetricAcc::new(Metric::LogitL2);
        m.add(std::slice::from_ref(&r), std::slice::from_ref(&c), &[None]);
        // Centred log-odds ±ln4/2 vs ±ln3/2: rel-L2 = (ln4 − ln3)/ln4 (f32 inputs: 1e-6).
        let want = (4f64.ln() - 3f64.ln()) / 4f64.ln();
        assert!((m.value() - want).abs() < 1e-6, "{} vs {want}", m.value());
    }

    #[test]
    fn mask_iou_takes_the_worst_sample_and_cosine_the_mean() {
        let r = t(&[2, 4], &[0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1]);
        let c = t(&[2, 4], &[0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1]);
        let mut m = MetricAcc::new(Metric::MaskIou(0.5));
        m.add(std::slice::from_ref(&r), std::slice::from_ref(&c), &[None, None]);
        assert_eq!(m.value(), 0.5);
        let mut m = MetricAcc::new(Metric::Cosine);
        m.add(std::slice::from_ref(&r), std::slice::from_ref(&r), &[None, None]);
        assert!(m.value().abs() < 1e-12);
        assert_eq!(Metric::parse("mask-iou:0.3"), Ok(Metric::MaskIou(0.3)));
        assert!(Metric::parse("iou").unwrap_err().contains("unknown metric `iou`"));
    }

    #[test]
    fn rel_l2_pools_over_the_split_and_the_worst_output_counts() {
        let r = [t(&[1, 2], &[3.0, 4.0]), t(&[1, 1], &[1.0])];
        let c = [t(&[1, 2], &[3.0, 4.0]), t(&[1, 1], &[1.5])];
        let mut m = MetricAcc::new(Metric::RelL2);
        m.add(&r, &c, &[None]);
        assert!((m.value() - 0.5).abs() < 1e-12);
        assert_eq!(Metric::default_for(&[TensorType::f32(vec![1, 10])]), Metric::Top1);
        assert_eq!(Metric::default_for(&[TensorType::f32(vec![1, 1, 8, 8])]), Metric::RelL2);
    }
}
