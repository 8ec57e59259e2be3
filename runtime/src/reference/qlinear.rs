//! Quantized conv, gemm and matmul ([`QLinear`]): exact integer semantics, the oracle of every
//! int8 kernel.
//!
//! The operands are centred (`x − zx`, `w − zw[c]`: integers of magnitude ≤ 255, exact in f32)
//! and summed by the f32 ops' own loops in f64, which is exact here: a sum of `K` products of
//! magnitude ≤ 255² stays below 2⁵³ for any `K < 2³⁷`. The exact sum then wraps to i32 as
//! the kernels' i32 accumulators do (real models never wrap), the i32 bias is added with
//! wrapping, and [`QLinearOut`] finishes it.

use cnnc_ir::{DType, Op, QLinear, QLinearOut, QuantParams, Tensor, TensorData};

use super::conv::conv_sums;
use super::matmul::matmul_sums;

/// `x − zero_point` for every element, per-index zero points along `p.axis` of `t`.
fn centred(t: &Tensor, p: &QuantParams, what: &str) -> Result<Tensor, String> {
    let v = match t.data() {
        TensorData::U8(v) => v.iter().map(|&q| i32::from(q)).collect::<Vec<_>>(),
        TensorData::I8(v) => v.iter().map(|&q| i32::from(q)).collect(),
        _ => return Err(format!("`{what}` must be u8 or i8, got {}", t.dtype())),
    };
    let n = p.axis.map_or(1, |a| t.shape().get(a).copied().unwrap_or(0));
    if p.zero_points.len() != n || p.scales.len() != n {
        return Err(format!(
            "`{what}`: {} zero points and {} scales for {n} index(es)",
            p.zero_points.len(),
            p.scales.len()
        ));
    }
    let c = v.iter().enumerate().map(|(i, &q)| (q - p.zero_points[p.index(t.shape(), i)]) as f32).collect();
    Tensor::from_f32(t.shape().to_vec(), c).map_err(|e| e.to_string())
}

/// `m` transposed.
fn transposed(m: &Tensor) -> Result<Tensor, String> {
    let &[r, c] = m.shape() else { return Err(format!("expected a matrix, got shape {:?}", m.shape())) };
    let v = super::f32s(m, "matrix")?;
    let t = (0..c * r).map(|i| v[(i % r) * c + i / r]).collect();
    Tensor::from_f32(vec![c, r], t).map_err(|e| e.to_string())
}

/// The output shape, the i32 accumulators `Σ (x − zx)·(w − zw[c]) + bias[c]` (wrapping) and
/// the output channel of each element.
type Accumulated = (Vec<usize>, Vec<i32>, Vec<usize>);

pub(super) fn accumulate(q: &QLinear, inputs: &[&Tensor]) -> Result<Accumulated, String> {
    let (xt, wt) = (inputs[0], inputs[1]);
    let x = centred(xt, &q.x, "x")?;
    if q.w.axis.is_some_and(|a| a != q.weight_channel_axis(wt.shape().len())) {
        return Err("the weight's quantization axis is not its output-channel axis".into());
    }
    let w = centred(wt, &q.w, "w")?;
    let (shape, sums) = match &q.base {
        Op::Conv(a) => conv_sums::<f64>(a, &[&x, &w])?,
        Op::Gemm { alpha, beta, trans_a, trans_b } if *alpha == 1.0 && *beta == 1.0 => {
            let a = if *trans_a { transposed(&x)? } else { x };
            let b = if *trans_b { transposed(&w)? } else { w };
            if a.shape().len() != 2 {
                return Err(format!("a quantized gemm's input must be a matrix, got shape {:?}", a.shape()));
            }
            matmul_sums::<f64>(&a, &b)?
        }
        Op::MatMul if w.shape().len() == 2 => matmul_sums::<f64>(&x, &w)?,
        other => return Err(format!("{} cannot be the base of a quantized op", other.name())),
    };
    let c_out = wt.shape().get(q.weight_channel_axis(wt.shape().len())).copied().unwrap_or(0);
    let channel: Vec<usize> = match &q.base {
        Op::Conv(_) => {
            let plane: usize = shape[2..].iter().product();
            (0..sums.len()).map(|i| (i / plane.max(1)) % c_out.max(1)).collect()
        }
        _ => (0..sums.len()).map(|i| i % c_out.max(1)).collect(),
    };
    let bias = match inputs.get(2) {
        Some(b) => {
            let v = b.as_i32().ok_or_else(|| format!("the bias must be i32, got {}", b.dtype()))?;
            if v.len() != c_out {
                return Err(format!("the bias has {} elements for {c_out} output channels", v.len()));
            }
            Some(v)
        }
        None => None,
    };
    let acc = sums
        .iter()
        .zip(&channel)
        .map(|(&s, &c)| {
            // Exact integer (see the module doc), so `as i64` is exact and `as i32` wraps.
            let a = s as i64 as i32;
            bias.map_or(a, |b| a.wrapping_add(b[c]))
        })
        .collect();
    Ok((shape, acc, channel))
}

/// ONNX QLinearConv / QLinearMatMul / ConvInteger / MatMulInteger and their QDQ fusions, as
/// [`QLinear`] defines them.
pub(super) fn qlinear(q: &QLinear, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let (shape, acc, channel) = accumulate(q, inputs)?;
    let data = match &q.out {
        QLinearOut::I32 => TensorData::I32(acc),
        QLinearOut::F32 => {
            TensorData::F32(acc.iter().zip(&channel).map(|(&a, &c)| a as f32 * q.acc_scale(c)).collect())
        }
        QLinearOut::Quantized { params, to } => {
            let (lo, hi) = q.out_bounds().ok_or("the output bounds are invalid")?;
            let zy = params.zero_points.first().copied().ok_or("the output has no zero point")?;
            let m: Vec<f32> = (0..q.w.scales.len().max(1)).map(|c| q.requant_scale(c)).collect();
            let mult = |c: usize| m[if q.w.axis.is_some() { c } else { 0 }];
            let y = acc.iter().zip(&channel).map(|(&a, &c)| QLinear::requantize(a, mult(c), zy, lo, hi));
            match to {
                DType::U8 => TensorData::U8(y.map(|v| v as u8).collect()),
                DType::I8 => TensorData::I8(y.map(|v| v as i8).collect()),
                other => return Err(format!("cannot requantize to {other}")),
            }
        }
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}
