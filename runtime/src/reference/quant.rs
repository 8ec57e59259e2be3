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
    let (lo, _) = to.int_range().filter(|_| to.is_quantized()).ok_or_else(|| format!("cannot quantize to {to}"))?;
    // `to` is u8 or i8, so `quantize_one` is always `Some`.
    let q = v.iter().enumerate().map(|(i, &f)| p.quantize_one(p.index(x.shape(), i), f, to).unwrap_or(lo));
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
    let out = v.iter().enumerate().map(|(i, &q)| p.dequantize_one(p.index(x.shape(), i), q)).collect();
    Tensor::from_f32(x.shape().to_vec(), out).map_err(|e| e.to_string())
}

/// The bytes of an 8-bit tensor as table indices (`byte(v)`: u8 as is, i8 by its bit pattern).
fn index_bytes<'a>(t: &'a Tensor, what: &str) -> Result<Box<dyn Iterator<Item = usize> + 'a>, String> {
    match t.data() {
        TensorData::U8(v) => Ok(Box::new(v.iter().map(|&b| usize::from(b)))),
        TensorData::I8(v) => Ok(Box::new(v.iter().map(|&b| usize::from(b as u8)))),
        _ => Err(format!("{what} has dtype {}, expected u8 or i8", t.dtype())),
    }
}

/// `Op::Lookup`: `table[byte(a)]`, or `table[256·byte(a) + byte(b)]` with two operands.
pub(super) fn lookup(inputs: &[&Tensor]) -> Result<Tensor, String> {
    let (table, a) = (inputs[0], inputs[1]);
    let want = 256usize.pow(inputs.len() as u32 - 1);
    if table.shape() != [want] {
        return Err(format!("table has shape {:?}, expected [{want}]", table.shape()));
    }
    let idx: Vec<usize> = match inputs.get(2) {
        None => index_bytes(a, "a")?.collect(),
        Some(b) => {
            if b.shape() != a.shape() {
                return Err(format!("operands have shapes {:?} and {:?}", a.shape(), b.shape()));
            }
            index_bytes(a, "a")?.zip(index_bytes(b, "b")?).map(|(i, j)| 256 * i + j).collect()
        }
    };
    let data = match table.data() {
        TensorData::F32(t) => TensorData::F32(idx.iter().map(|&i| t[i]).collect()),
        TensorData::U8(t) => TensorData::U8(idx.iter().map(|&i| t[i]).collect()),
        TensorData::I8(t) => TensorData::I8(idx.iter().map(|&i| t[i]).collect()),
        _ => return Err(format!("table has dtype {}, expected f32, u8 or i8", table.dtype())),
    };
    Tensor::new(a.shape().to_vec(), data).map_err(|e| e.to_string())
}
