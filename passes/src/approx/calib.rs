//! Calibration of activation quantization (`int8` family): the range of each quantized tensor,
//! from a streaming histogram of its values on the fit split.
//!
//! Memory is bounded by the number of tensors, not by the data: each tensor keeps a
//! [`Histogram`] of [`BINS`] counts over `[−R, R)`, `R` a power of two that doubles (merging
//! bins pairwise) when a value outside it arrives, plus its exact minimum and maximum.
//!
//! [`choose`] picks one per-tensor u8 quantization (asymmetric, the zero point an integer so
//! that 0 is exact, as ONNX requires) among three kinds of range — MinMax (every value
//! representable), percentiles (the 99.9 / 99.99 / 99.999 % tails clipped) and an MSE-optimal
//! clipping (a geometric grid of ranges shrunk from MinMax) — by the quantization error it gives the
//! tensor's own histogram: `E[(DQ(Q(x)) − x)²]`, what a layer reading the tensor multiplies by
//! its squared weights (`super::int8`). The chosen one records its method, that error and the
//! mean shift `E[DQ(Q(x)) − x]` (folded into the consumer's bias: bias correction).

use cnnc_ir::{DType, QuantParams, ValueRef, VerifiedGraph};

use crate::{EvalError, Evaluator, Flow, Split};

/// Counts per histogram.
pub const BINS: usize = 1 << 13;

/// A streaming histogram of one tensor's values.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// The counts cover `[−range, range)` in [`BINS`] equal bins; 0 until a non-zero value.
    range: f64,
    counts: Vec<u64>,
    min: f32,
    max: f32,
    /// Finite values seen.
    n: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram { range: 0.0, counts: vec![0; BINS], min: f32::INFINITY, max: f32::NEG_INFINITY, n: 0 }
    }

    /// Values seen (non-finite ones are left out: a range cannot hold them).
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The smallest and largest value seen.
    pub fn min_max(&self) -> Option<(f32, f32)> {
        (self.n > 0).then_some((self.min, self.max))
    }

    /// Adds `xs`.
    pub fn add(&mut self, xs: &[f32]) {
        let mut peak = 0.0f32;
        for &x in xs.iter().filter(|x| x.is_finite()) {
            peak = peak.max(x.abs());
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        if peak > 0.0 {
            let peak = f64::from(peak);
            if self.range == 0.0 {
                self.range = 2f64.powi(peak.log2().ceil() as i32);
                // `peak` may sit exactly on a power of two: the bins are half-open.
                if peak >= self.range {
                    self.range *= 2.0;
                }
            }
            while peak >= self.range {
                self.double();
            }
        }
        let (range, width) = (self.range, self.width());
        for &x in xs.iter().filter(|x| x.is_finite()) {
            self.n += 1;
            let i = if width > 0.0 { ((f64::from(x) + range) / width) as usize } else { BINS / 2 };
            self.counts[i.min(BINS - 1)] += 1;
        }
    }

    /// Adds every count of `other` (a histogram of more values of the same tensor).
    pub fn merge(&mut self, other: &Histogram) {
        if other.n == 0 {
            return;
        }
        let mut other = other.clone();
        if self.n == 0 {
            *self = other;
            return;
        }
        while self.range < other.range {
            self.double();
        }
        while other.range < self.range {
            other.double();
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    fn width(&self) -> f64 {
        2.0 * self.range / BINS as f64
    }

    /// Doubles the range: old bin `i` falls into new bin `BINS/4 + i/2` (exactly: the new bins
    /// are twice as wide and the old range is the new one's middle half).
    fn double(&mut self) {
        let mut next = vec![0u64; BINS];
        for (i, &c) in self.counts.iter().enumerate() {
            next[BINS / 4 + i / 2] += c;
        }
        self.counts = next;
        self.range *= 2.0;
    }

    /// `(bin centre, count)` of the non-empty bins; a zero-range histogram has everything at 0.
    fn centres(&self) -> Vec<(f64, f64)> {
        let w = self.width();
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &c)| (if w > 0.0 { -self.range + (i as f64 + 0.5) * w } else { 0.0 }, c as f64))
            .collect()
    }

    /// The value below which a fraction `q` of the values lie (bin resolution).
    fn quantile(&self, q: f64) -> f64 {
        let target = q * self.n as f64;
        let mut acc = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            acc += c as f64;
            if acc >= target {
                return -self.range + (i as f64 + 1.0) * self.width();
            }
        }
        self.range
    }
}

/// One tensor's chosen quantization.
#[derive(Clone, Debug, PartialEq)]
pub struct ActQuant {
    /// Per tensor, u8.
    pub params: QuantParams,
    /// `minmax`, `percentile-99.9` / `-99.99` / `-99.999` or `mse`.
    pub method: &'static str,
    /// `E[(DQ(Q(x)) − x)²]` on the histogram.
    pub mse: f64,
    /// `E[DQ(Q(x)) − x]` on the histogram.
    pub mean_shift: f64,
    /// `E[x]` and `E[x²]` of the tensor (bin centres).
    pub mean: f64,
    pub mean_square: f64,
}

/// The quantized type of activations.
pub const ACT_DTYPE: DType = DType::U8;

/// The u8 parameters of the range `[lo, hi]` (`lo ≤ 0 ≤ hi`): scale `(hi − lo)/255`, the zero
/// point the integer nearest `−lo/scale`. `None` for an empty range.
pub fn params_for(lo: f64, hi: f64) -> Option<QuantParams> {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / 255.0) as f32;
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let zp = (-lo / f64::from(scale)).round().clamp(0.0, 255.0) as i32;
    Some(QuantParams::per_tensor(scale, zp))
}

/// `(E[(DQ(Q(x)) − x)²], E[DQ(Q(x)) − x])` of `params` over the histogram's bin centres,
/// quantized as QuantizeLinear does (round half to even, saturate).
fn errors(centres: &[(f64, f64)], n: f64, params: &QuantParams) -> (f64, f64) {
    let (mut se, mut sum) = (0.0, 0.0);
    for &(v, c) in centres {
        let q = params.quantize_one(0, v as f32, ACT_DTYPE).unwrap_or(0);
        let e = f64::from(params.dequantize_one(0, q)) - v;
        se += c * e * e;
        sum += c * e;
    }
    (se / n.max(1.0), sum / n.max(1.0))
}

/// The quantization of the tensor `h` describes with the least error among MinMax, the
/// percentile ranges and the MSE grid (ties go to the earlier, less clipped one). `None` when
/// `h` saw nothing or only zeros.
pub fn choose(h: &Histogram) -> Option<ActQuant> {
    let (min, max) = h.min_max()?;
    let (lo, hi) = (f64::from(min).min(0.0), f64::from(max).max(0.0));
    let mut candidates: Vec<(&'static str, f64, f64)> = vec![("minmax", lo, hi)];
    for (name, q) in [("percentile-99.999", 1e-5), ("percentile-99.99", 1e-4), ("percentile-99.9", 1e-3)] {
        let (a, b) = (h.quantile(q).clamp(lo, 0.0), h.quantile(1.0 - q).clamp(0.0, hi));
        candidates.push((name, a, b));
    }
    // The MSE grid: MinMax shrunk by factors of 0.95, down to 1/60 of its width.
    for k in 1..=80 {
        let f = 0.95f64.powi(k);
        candidates.push(("mse", lo * f, hi * f));
    }
    let centres = h.centres();
    let n = h.count() as f64;
    let mean = centres.iter().map(|(v, c)| v * c).sum::<f64>() / n.max(1.0);
    let mean_square = centres.iter().map(|(v, c)| v * v * c).sum::<f64>() / n.max(1.0);
    let mut best: Option<ActQuant> = None;
    for (method, a, b) in candidates {
        let Some(params) = params_for(a, b) else { continue };
        let (mse, mean_shift) = errors(&centres, n, &params);
        if best.as_ref().is_none_or(|q| mse < q.mse) {
            best = Some(ActQuant { params, method, mse, mean_shift, mean, mean_square });
        }
    }
    best
}

/// Histograms of `values` of `graph` on `split`, one per value, streamed a batch at a time
/// through `evaluator` (a value asked for twice gets the same histogram twice).
pub fn collect_histograms(
    evaluator: &mut dyn Evaluator,
    graph: &VerifiedGraph,
    values: &[ValueRef],
    split: Split,
) -> Result<Vec<Histogram>, EvalError> {
    let mut unique: Vec<ValueRef> = Vec::new();
    let slot: Vec<usize> = values
        .iter()
        .map(|v| match unique.iter().position(|u| u == v) {
            Some(i) => i,
            None => {
                unique.push(*v);
                unique.len() - 1
            }
        })
        .collect();
    let mut hists = vec![Histogram::new(); unique.len()];
    evaluator.run(graph, split, &unique, &mut |batch| {
        for (h, t) in hists.iter_mut().zip(batch.taps) {
            if let Some(xs) = t.as_f32() {
                h.add(xs);
            }
        }
        Ok(Flow::Continue)
    })?;
    Ok(slot.into_iter().map(|s| hists[s].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_keeps_every_count_in_the_bin_of_its_value() {
        // Values added before and after two doublings land where one pass over all of them puts
        // them: merging bins pairwise is exact.
        let early: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 0.9).collect();
        let late: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.11).cos() * 3.5).collect();
        let mut streamed = Histogram::new();
        streamed.add(&early);
        streamed.add(&late);
        let mut once = Histogram::new();
        once.add(&[early.clone(), late.clone()].concat());
        assert_eq!(streamed, once);
        let mut merged = Histogram::new();
        let mut other = Histogram::new();
        merged.add(&early);
        other.add(&late);
        merged.merge(&other);
        assert_eq!(merged, once);
    }

    #[test]
    fn a_long_tail_is_clipped_and_a_uniform_range_is_not() {
        // Uniform values on [0, 4]: MinMax is optimal (clipping only adds error).
        let uniform: Vec<f32> = (0..100_000).map(|i| 4.0 * i as f32 / 99_999.0).collect();
        let mut h = Histogram::new();
        h.add(&uniform);
        let q = choose(&h).expect("a range");
        assert_eq!(q.params.zero_points, [0]);
        // Within 1 % of 4/255 (a percentile range may end a bin short of the maximum).
        assert!((f64::from(q.params.scales[0]) * 255.0 / 4.0 - 1.0).abs() < 0.01, "{q:?}");
        // Exponential quantiles (a post-ReLU activation's shape; maximum ≈ 13.8): the step
        // MinMax gives is coarser than the error of clipping the rare large values is worth
        // (for 8 bits the optimum is near 11).
        let n = 1_000_000;
        let tail: Vec<f32> = (0..n).map(|i| -(1.0 - (i as f64 + 0.5) / n as f64).ln() as f32).collect();
        let mut h2 = Histogram::new();
        h2.add(&tail);
        let q2 = choose(&h2).expect("a range");
        let (_, max) = h2.min_max().expect("values");
        let minmax = params_for(0.0, f64::from(max)).expect("a range");
        let (minmax_mse, _) = errors(&h2.centres(), n as f64, &minmax);
        assert_ne!(q2.method, "minmax");
        assert!(q2.mse < 0.9 * minmax_mse, "{q2:?} vs MinMax {minmax_mse}");
        assert!(q2.params.scales[0] * 255.0 < 0.9 * max, "{q2:?}");
    }

    #[test]
    fn signed_ranges_get_an_exact_zero() {
        let xs: Vec<f32> = (0..10_000).map(|i| (i as f32 / 9_999.0) * 3.0 - 1.0).collect();
        let mut h = Histogram::new();
        h.add(&xs);
        let q = choose(&h).expect("a range");
        let zp = q.params.zero_points[0];
        assert!((0..=255).contains(&zp) && zp > 0, "{q:?}");
        assert_eq!(q.params.dequantize_one(0, i64::from(zp)), 0.0);
        // Quantization error of a uniform grid: step²/12 (within 20 % for bin-centre sums).
        let step = f64::from(q.params.scales[0]);
        assert!((q.mse / (step * step / 12.0) - 1.0).abs() < 0.2, "{q:?}");
    }
}
