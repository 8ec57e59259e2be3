//! The one f32 `eˣ` of the kernels: its constants and its exact operation sequence, which the
//! Cranelift emitters (`codegen::expf`, used by `exp`, `sigmoid`, `swish`, `tanh`, softmax and
//! every Cranelift epilogue) and the AVX2 microkernels (`microkernel::avx2::exp`, used by the
//! fused epilogues and the standalone element-wise routine) both follow, so all of them give the
//! same bits for the same input.
//!
//! Algorithm (Cephes `expf`): `x` is clamped to [[`LO`], [`HI`]]; `n = round(x·log₂e)` (adding
//! and subtracting [`SHIFTER`], 1.5·2²³, rounds to nearest even and leaves `n` in the low
//! mantissa bits of the sum); `r = x − n·ln 2` in two fused steps ([`LN2_HI`], [`LN2_LO`],
//! Cody–Waite), `|r| ≤ ln 2 / 2`; `eʳ = 1 + (r + r²·P(r))` with [`P`] by Horner's rule in
//! fused multiply-adds; then `2ⁿ` is applied as `2^⌊n/2⌋ · 2^(n−⌊n/2⌋)`, two normal powers for
//! every `n` in [−150, 128], so results come out right down through the subnormals (to 0) and
//! up to overflow (+∞). NaN passes the clamps (they keep `x` where the comparison is false)
//! and the arithmetic.
//!
//! [`exp_nonpos`] is the same function for `x ≤ 0` (sigmoid's `e^{−|x|}`, softmax's
//! `e^{x − max}`), bit for bit, in fewer operations: no upper clamp, and `2ⁿ` (`n` in
//! [−150, 0]) applied as `2^(n+25)`, a normal power that keeps `eʳ·2^(n+25)` normal, then
//! `2^−25`; both forms multiply exactly until one final rounding of the same product.
//!
//! Accuracy (checked against f64 over a dense sweep of the f32 range,
//! `runtime/tests/jit_unary_inline.rs`): within 8.3e-8 relative (≤ 1 ulp) wherever the result
//! is a normal f32; subnormal results within 2 units of the smallest subnormal.

/// Arguments below are clamped to it: `2ⁿ` is then below the smallest subnormal, the result 0.
pub(crate) const LO: f32 = -104.0;
/// Arguments above are clamped to it: the result is +∞.
pub(crate) const HI: f32 = 89.0;
/// 1.5·2²³: `(x·log₂e + SHIFTER) − SHIFTER` is `x·log₂e` rounded to an integer.
pub(crate) const SHIFTER: f32 = 12_582_912.0;
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `−ln 2` split in two: the high part has few mantissa bits, so `n·LN2_HI` is exact.
pub(crate) const LN2_HI: f32 = -0.693_359_4;
pub(crate) const LN2_LO: f32 = 2.121_944_4e-4;
/// `P(r)` of `eʳ ≈ 1 + r + r²·P(r)`, lowest degree first.
pub(crate) const P: [f32; 6] = [5e-1, 1.666_666_5e-1, 4.166_579_6e-2, 8.333_452e-3, 1.398_2e-3, 1.987_569_1e-4];

/// [`exp_nonpos`] scales by `2^(n + NONPOS_SHIFT)` first, then by `2^−NONPOS_SHIFT`.
pub(crate) const NONPOS_SHIFT: i32 = 25;
/// Added to the bits of `x·log₂e + SHIFTER` (whose low bits hold `n`) and shifted into the
/// exponent field: the bits of `2^(n + NONPOS_SHIFT)`.
pub(crate) const NONPOS_BIAS: i32 = 127 + NONPOS_SHIFT - SHIFTER.to_bits() as i32;

/// `tanh x = x + x·z·P(z)`, `z = x²`, for `|x| <` [`TANH_SMALL`] (Cephes `tanhf`), lowest
/// degree first; above it the kernels compute `1 − 2/(e^{2|x|} + 1)` with this `eˣ`.
pub(crate) const TANH_P: [f32; 5] = [-3.333_328e-1, 1.333_144_2e-1, -5.373_971_6e-2, 2.063_909e-2, -5.704_988_7e-3];
pub(crate) const TANH_SMALL: f32 = 0.625;

/// `eˣ` on one value with exactly the vector kernels' operations (`mul_add` is their fused
/// multiply-add): the specification the emitters and microkernels are tested against bit for
/// bit.
#[cfg(test)]
pub(crate) fn exp(x: f32) -> f32 {
    // The clamps keep NaN (a false comparison keeps `x`), as `maxps`/`minps` and the
    // compare-and-select of the vector forms do.
    let x = if x < LO { LO } else { x };
    let (t, y) = reduce(if x > HI { HI } else { x });
    let ni = (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let n1 = ni >> 1;
    let scale = |n: i32| f32::from_bits(((n + 127) << 23) as u32);
    y * scale(n1) * scale(ni - n1)
}

/// [`exp`] for `x ≤ 0` or NaN (any other `x` is outside its contract): the same bits, with the
/// vector kernels' `exp_nonpos` operations.
#[cfg(test)]
pub(crate) fn exp_nonpos(x: f32) -> f32 {
    let (t, y) = reduce(if x < LO { LO } else { x });
    let s = f32::from_bits(((t.to_bits() as i32).wrapping_add(NONPOS_BIAS) << 23) as u32);
    y * s * f32::from_bits(((127 - NONPOS_SHIFT) << 23) as u32)
}

/// The middle both forms share, on a clamped `x`: `t = x·log₂e + SHIFTER` (whose low bits hold
/// `n`) and `eʳ`.
#[cfg(test)]
fn reduce(x: f32) -> (f32, f32) {
    let t = x.mul_add(LOG2E, SHIFTER);
    let n = t - SHIFTER;
    let r = n.mul_add(LN2_LO, n.mul_add(LN2_HI, x));
    let p = P[..5].iter().rev().fold(P[5], |p, &k| p.mul_add(r, k));
    (t, p.mul_add(r * r, r) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest error of [`exp`] in units of the f64 result's f32 ulp, over normal results.
    #[test]
    fn scalar_exp_is_within_one_ulp_and_handles_the_ends() {
        let mut worst = 0f64;
        let n = 200_000;
        for i in 0..=n {
            let x = LO + (HI - LO) * (i as f32 / n as f32);
            let w = f64::from(x).exp();
            let wf = w as f32;
            if !wf.is_normal() {
                continue;
            }
            let ulp = f64::from(f32::from_bits(wf.to_bits() + 1) - wf);
            worst = worst.max((f64::from(exp(x)) - w).abs() / ulp);
        }
        assert!(worst <= 1.0, "worst error {worst:.3} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(200.0), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        // Subnormal results (e^-100 ≈ 3.72e-44) within two subnormal units.
        for x in [-88.0f32, -95.5, -100.0, -103.0] {
            assert!((f64::from(exp(x)) - f64::from(x).exp()).abs() <= 2.0 * 1.4e-45, "e^{x}");
        }
    }

    /// Every 101st f32 from −0 down to −110, and the ends.
    #[test]
    fn exp_nonpos_gives_the_bits_of_exp_on_non_positive_arguments() {
        let xs = ((-0f32).to_bits()..=(-110f32).to_bits()).step_by(101).map(f32::from_bits);
        let ends = [f32::NEG_INFINITY, -104.0, -103.97, -87.336, -87.34, -88.73, -1e-30, f32::NAN];
        for x in xs.chain(ends) {
            let (a, b) = (exp(x), exp_nonpos(x));
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "e^{x}: {a:e} vs {b:e}");
        }
    }
}
