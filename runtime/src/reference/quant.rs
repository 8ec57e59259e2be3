//! QuantizeLinear and DequantizeLinear, exactly as ONNX defines them.

use cnnc_ir::{DType, QuantParams, Tensor, TensorData};

use super::f32s;

/// Checks `p` against a tensor of `shape` (as inference does), so indexing cannot fail.
fn check(p: &QuantParams, shape: &[usize]) -> Result<(), String> {
    let n = match p.axis {
        None => 1,
        Some(a) => *shape.get(a).ok_or_else(|| format!("quantization axis {a} is out of range for {shape:?}"))?,
    };
    if p.scales.len() != n || p.zero_points.len() != n {
        return Err(format!("{} scales and {} zero points for {n} index(es)", p.scales.len(), p.zero_points.len()));
    }
    Ok(())
}

/// ONNX `QuantizeLinear`: `saturate(round_half_even(x / scale) + zero_point)`. The quotient
/// is the f32 division ONNX specifies (not a product with 1/scale, which rounds differently);
/// NaN quantizes to the zero point, ±∞ saturate.
pub(super) fn quantize(p: &QuantParams, to: DType, x: &Tensor) -> Result<Tensor, String> {
    let v = f32s(x, "x")?;
    check(p, x.shape())?;
    let (lo, hi) = to.int_range().filter(|_| to.is_quantized()).ok_or_else(|| format!("cannot quantize to {to}"))?;
    let q = v.iter().enumerate().map(|(i, &f)| {
        let k = p.index(x.shape(), i);
        let r = (f / p.scales[k]).round_ties_even();
        // `as` maps NaN to 0 and saturates ±∞; the sum then saturates to the type's range.
        ((r as i64).saturating_add(i64::from(p.zero_points[k]))).clamp(lo, hi)
    });
    let data = match to {
        DType::U8 => TensorData::U8(q.map(|v| v as u8).collect()),
        _ => TensorData::I8(q.map(|v| v as i8).collect()),
    };
    Tensor::new(x.shape().to_vec(), data).map_err(|e| e.to_string())
}

/// ONNX `DequantizeLinear`: `(x − zero_point) · scale`, the difference exact in i64 and
/// rounded once to f32, the product in f32.
pub(super) fn dequantize(p: &QuantParams, x: &Tensor) -> Result<Tensor, String> {
    let v = x
        .data()
        .to_i64_vec()
        .filter(|_| x.dtype() != DType::I64)
        .ok_or_else(|| format!("cannot dequantize {}, expected u8, i8 or i32", x.dtype()))?;
    check(p, x.shape())?;
    let out = v
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let k = p.index(x.shape(), i);
            (q - i64::from(p.zero_points[k])) as f32 * p.scales[k]
        })
        .collect();
    Tensor::from_f32(x.shape().to_vec(), out).map_err(|e| e.to_string())
}
