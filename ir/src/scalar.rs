//! The meaning of the element-wise ops on one f32 value: the one copy the reference
//! interpreter applies element by element and the optimizer uses to tabulate element-wise
//! chains on 8-bit values (`qdq-lookup`). Transcendental functions are evaluated in f64 and
//! rounded once; the rest is plain IEEE f32 arithmetic.

use crate::{BinaryOp, DType, QuantParams, UnaryOp};

impl UnaryOp {
    /// The op on one f32 value. ReLU and Clip are written so that NaN passes through, as in
    /// PyTorch and onnxruntime's Eigen kernels.
    pub fn eval_f32(self, a: f32) -> f32 {
        match self {
            UnaryOp::Relu => {
                if a < 0.0 {
                    0.0
                } else {
                    a
                }
            }
            UnaryOp::LeakyRelu { alpha } => {
                if a < 0.0 {
                    alpha * a
                } else {
                    a
                }
            }
            UnaryOp::Clip { min, max } => {
                if a < min {
                    min
                } else if a > max {
                    max
                } else {
                    a
                }
            }
            UnaryOp::Sigmoid => (1.0 / (1.0 + (-f64::from(a)).exp())) as f32,
            UnaryOp::HardSigmoid { alpha, beta } => {
                (f64::from(alpha) * f64::from(a) + f64::from(beta)).clamp(0.0, 1.0) as f32
            }
            UnaryOp::HardSwish => {
                let a = f64::from(a);
                (a * (a / 6.0 + 0.5).clamp(0.0, 1.0)) as f32
            }
            UnaryOp::Swish { beta } => {
                let t = f64::from(beta * a);
                (f64::from(a) / (1.0 + (-t).exp())) as f32
            }
            UnaryOp::Tanh => f64::from(a).tanh() as f32,
            UnaryOp::Exp => f64::from(a).exp() as f32,
            UnaryOp::Log => f64::from(a).ln() as f32,
            UnaryOp::Erf => erf(f64::from(a)) as f32,
            UnaryOp::Sqrt => f64::from(a).sqrt() as f32,
            UnaryOp::Reciprocal => 1.0 / a,
            UnaryOp::Neg => -a,
            UnaryOp::Abs => a.abs(),
            UnaryOp::Floor => a.floor(),
            UnaryOp::Ceil => a.ceil(),
        }
    }
}

impl BinaryOp {
    /// The arithmetic op on two f32 values; `None` for comparisons (their result is bool).
    /// Max and Min propagate a NaN first operand; Pow is evaluated in f64 and rounded once.
    pub fn eval_f32(self, x: f32, y: f32) -> Option<f32> {
        Some(match self {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Max => {
                if x.is_nan() || x > y {
                    x
                } else {
                    y
                }
            }
            BinaryOp::Min => {
                if x.is_nan() || x < y {
                    x
                } else {
                    y
                }
            }
            BinaryOp::Pow => f64::from(x).powf(f64::from(y)) as f32,
            BinaryOp::PRelu => {
                if x < 0.0 {
                    y * x
                } else {
                    x
                }
            }
            BinaryOp::Equal | BinaryOp::Less | BinaryOp::Greater => return None,
        })
    }
}

impl QuantParams {
    /// ONNX `QuantizeLinear` of one value with parameter index `k`:
    /// `saturate(round_half_even(x / scale) + zero_point)`, the quotient the f32 division ONNX
    /// specifies (not a product with 1/scale, which rounds differently); NaN quantizes to the
    /// zero point, ±∞ saturate. `None` if `to` is not u8 or i8.
    pub fn quantize_one(&self, k: usize, x: f32, to: DType) -> Option<i64> {
        let (lo, hi) = to.int_range().filter(|_| to.is_quantized())?;
        let r = (x / self.scales[k]).round_ties_even();
        // `as` maps NaN to 0 and saturates ±∞; the sum then saturates to the type's range.
        Some(((r as i64).saturating_add(i64::from(self.zero_points[k]))).clamp(lo, hi))
    }

    /// ONNX `DequantizeLinear` of one value with parameter index `k`: `(q − zero_point) · scale`,
    /// the difference exact in i64 and rounded once to f32, the product in f32.
    pub fn dequantize_one(&self, k: usize, q: i64) -> f32 {
        (q - i64::from(self.zero_points[k])) as f32 * self.scales[k]
    }

    /// `quantize{self}(dequantize{pa}(a) + dequantize{pb}(b))` (per tensor) the way
    /// onnxruntime's fused QLinearAdd kernel computes it (MLAS, the kernel its QDQ fusion runs),
    /// so that -O1 agrees with onnxruntime on the integers: the sum reassociated as
    /// `a·ra + b·rb + f` with `ra = sa / sc`, `rb = sb / sc` and `f = zc − (ra·za + rb·zb)`, in
    /// f32 with fused multiply-adds, and rounded half to even once, after the output zero point
    /// is in (QuantizeLinear rounds before adding it). A float reordering of the QDQ form: the
    /// two differ by one step where the sum is within rounding of a tie (measured on
    /// ppocr_v4_det's 89 adds: up to 5 % of one add's elements, never by more than one step).
    /// `scalar` names the operand (0 = `a`, 1 = `b`) that is one value broadcast over the
    /// other, which MLAS folds into `f` first (a product, then a sum). `None` if `to` is not u8
    /// or i8.
    pub fn add_quantized(
        &self,
        (a, pa): (i64, &QuantParams),
        (b, pb): (i64, &QuantParams),
        scalar: Option<usize>,
        to: DType,
    ) -> Option<i64> {
        let (lo, hi) = to.int_range().filter(|_| to.is_quantized())?;
        let sc = self.scales[0];
        let (ra, rb) = (pa.scales[0] / sc, pb.scales[0] / sc);
        let fixed = self.zero_points[0] as f32 - (ra * pa.zero_points[0] as f32 + rb * pb.zero_points[0] as f32);
        let (a, b) = (a as f32, b as f32);
        let v = match scalar {
            Some(0) => b.mul_add(rb, fixed + a * ra),
            Some(_) => a.mul_add(ra, fixed + b * rb),
            None => a.mul_add(ra, b.mul_add(rb, fixed)),
        }
        .round_ties_even();
        // `cvtps2dq` gives i32::MIN for NaN and out-of-range values; the packs then saturate.
        let r = if v.abs() < 2_147_483_648.0 { v as i64 } else { i64::from(i32::MIN) };
        Some(r.clamp(lo, hi))
    }
}

/// The error function, accurate to a few ulp on all of f64.
///
/// For `|x| < 6` it sums the everywhere-convergent series
/// `erf(x) = 2/√π · e^{−x²} · Σ_{n≥0} 2ⁿ x^{2n+1} / (1·3·…·(2n+1))`, whose terms are all of the
/// sign of `x`, so there is no cancellation; the relative rounding error grows like
/// (number of terms)·ε ≤ 2e-14. For `|x| ≥ 6`, `1 − erf(x) < 3e-17` rounds to 1.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x.abs() >= 6.0 {
        return x.signum();
    }
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    for n in 0..200 {
        term *= 2.0 * x2 / f64::from(2 * n + 3);
        sum += term;
        if term.abs() <= sum.abs() * 1e-17 {
            break;
        }
    }
    (std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum).clamp(-1.0, 1.0)
}
