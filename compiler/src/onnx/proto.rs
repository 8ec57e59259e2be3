//! Decoding ONNX protobuf bytes and converting `TensorProto`s into IR tensors, with every
//! size checked before anything is allocated.

use cnnc_ir::{DType, Tensor, TensorData};
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::{ModelProto, TensorProto};
use protobuf::{Enum, Message};

use super::error::ImportError;

/// Largest element count accepted for one tensor.
pub(crate) const MAX_TENSOR_ELEMENTS: usize = 1 << 31;
/// Largest size in bytes accepted for one tensor (in its IR element type).
pub(crate) const MAX_TENSOR_BYTES: usize = 4 << 30;

/// Decodes a `ModelProto`, rejecting bytes that are not an ONNX model.
pub(crate) fn decode_model(bytes: &[u8], file: &str) -> Result<ModelProto, ImportError> {
    let decode = |reason: String| ImportError::Decode { file: file.to_string(), reason };
    if bytes.starts_with(b"\x89PNG") {
        return Err(decode("this is a PNG image, not an ONNX model".into()));
    }
    if bytes.is_empty() {
        return Err(decode("the file is empty".into()));
    }
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| decode(format!("protobuf decoding failed ({e}): not an ONNX model, or a truncated one")))?;
    if model.ir_version <= 0 {
        return Err(decode("no ir_version: not an ONNX model".into()));
    }
    if model.graph.is_none() {
        return Err(decode("the model has no graph".into()));
    }
    Ok(model)
}

/// The IR element type an ONNX element type imports as: floating types become f32, integer
/// types i64, bool stays bool.
pub(crate) fn dtype_of(elem_type: i32) -> Option<DType> {
    use DataType as D;
    match D::from_i32(elem_type)? {
        D::FLOAT | D::DOUBLE | D::FLOAT16 | D::BFLOAT16 => Some(DType::F32),
        D::INT64 | D::INT32 | D::INT16 | D::INT8 | D::UINT8 | D::UINT16 | D::UINT32 | D::UINT64 => Some(DType::I64),
        D::BOOL => Some(DType::Bool),
        _ => None,
    }
}

/// The IR type of an ONNX u8, i8 or i32 element type (which [`dtype_of`] widens to i64).
pub(crate) fn narrow_int_dtype(elem_type: i32) -> Option<DType> {
    use DataType as D;
    match D::from_i32(elem_type)? {
        D::UINT8 => Some(DType::U8),
        D::INT8 => Some(DType::I8),
        D::INT32 => Some(DType::I32),
        _ => None,
    }
}

/// Spelling of an ONNX element type for messages.
pub(crate) fn elem_type_name(elem_type: i32) -> String {
    match DataType::from_i32(elem_type) {
        Some(d) => format!("{d:?}").to_lowercase(),
        None => format!("unknown element type {elem_type}"),
    }
}

/// Most bytes of a constant the importer computes rather than reads (ConstantOfShape, Range,
/// Dropout's mask): its size comes from values in the file, not from data in it, so a file of a
/// few hundred bytes could otherwise ask for gigabytes. Real models' computed constants are
/// shapes, index ranges and padding blocks, far below this.
pub(crate) const MAX_COMPUTED_BYTES: usize = 256 << 20;

/// Refuses a computed constant (see [`MAX_COMPUTED_BYTES`]) of `n` elements of `elem_bytes` each.
pub(crate) fn check_computed(name: &str, n: usize, elem_bytes: usize) -> Result<(), ImportError> {
    let bytes = n.saturating_mul(elem_bytes);
    if bytes > MAX_COMPUTED_BYTES {
        return Err(ImportError::TensorTooLarge {
            tensor: name.to_string(),
            reason: format!(
                "the importer would compute a constant of {n} elements ({bytes} bytes), more than the limit of \
                 {MAX_COMPUTED_BYTES} bytes for constants made from attributes or constant inputs"
            ),
        });
    }
    Ok(())
}

/// Checks dims and size bounds of a tensor of `dtype`; returns the shape and element count.
pub(crate) fn checked_shape(name: &str, dims: &[i64], dtype: DType) -> Result<(Vec<usize>, usize), ImportError> {
    let mut shape = Vec::with_capacity(dims.len());
    for &d in dims {
        let d = usize::try_from(d).map_err(|_| ImportError::BadTensor {
            tensor: name.to_string(),
            reason: format!("negative dimension {d} in dims {dims:?}"),
        })?;
        shape.push(d);
    }
    let too_large = |reason: String| ImportError::TensorTooLarge { tensor: name.to_string(), reason };
    let n =
        cnnc_ir::checked_numel(&shape).ok_or_else(|| too_large(format!("dims {dims:?} overflow the element count")))?;
    if n > MAX_TENSOR_ELEMENTS {
        return Err(too_large(format!(
            "dims {dims:?} hold {n} elements, more than the limit of {MAX_TENSOR_ELEMENTS}"
        )));
    }
    if n * dtype.size_bytes() > MAX_TENSOR_BYTES {
        return Err(too_large(format!(
            "dims {dims:?} need {} bytes, more than the limit of {MAX_TENSOR_BYTES}",
            n * dtype.size_bytes()
        )));
    }
    Ok((shape, n))
}

/// Converts an initializer or constant attribute into an IR tensor. `name` is used in errors.
pub(crate) fn tensor_from_proto(t: &TensorProto, name: &str) -> Result<Tensor, ImportError> {
    let bad = |reason: String| ImportError::BadTensor { tensor: name.to_string(), reason };
    if t.data_location.enum_value() != Ok(DataLocation::DEFAULT) || !t.external_data.is_empty() {
        let location = t
            .external_data
            .iter()
            .find(|e| e.key == "location")
            .map(|e| format!(" (location `{}`)", e.value))
            .unwrap_or_default();
        return Err(bad(format!(
            "external data{location} is not supported; save the model with its weights inside the file"
        )));
    }
    if t.segment.is_some() {
        return Err(bad("segmented tensors are not supported".into()));
    }
    let data_type = DataType::from_i32(t.data_type).ok_or_else(|| bad(format!("unknown data type {}", t.data_type)))?;
    let dtype = dtype_of(t.data_type)
        .ok_or_else(|| bad(format!("data type {} is not supported", elem_type_name(t.data_type))))?;
    let (shape, n) = checked_shape(name, &t.dims, dtype)?;
    let data = if !t.raw_data.is_empty() || typed_len(t, data_type) == 0 {
        decode_raw(&t.raw_data, data_type, n, name)?
    } else {
        decode_typed(t, data_type, n, name)?
    };
    Tensor::new(shape, data).map_err(|e| bad(e.to_string()))
}

fn typed_len(t: &TensorProto, data_type: DataType) -> usize {
    use DataType as D;
    match data_type {
        D::FLOAT => t.float_data.len(),
        D::DOUBLE => t.double_data.len(),
        D::INT64 => t.int64_data.len(),
        D::UINT32 | D::UINT64 => t.uint64_data.len(),
        _ => t.int32_data.len(),
    }
}

/// Size in bytes of one element of `data_type` in `raw_data`.
fn raw_size(data_type: DataType) -> usize {
    use DataType as D;
    match data_type {
        D::DOUBLE | D::INT64 | D::UINT64 => 8,
        D::FLOAT | D::INT32 | D::UINT32 => 4,
        D::FLOAT16 | D::BFLOAT16 | D::INT16 | D::UINT16 => 2,
        _ => 1,
    }
}

fn decode_raw(raw: &[u8], data_type: DataType, n: usize, name: &str) -> Result<TensorData, ImportError> {
    use DataType as D;
    let size = raw_size(data_type);
    let expected = n * size;
    if raw.len() != expected {
        return Err(ImportError::BadTensor {
            tensor: name.to_string(),
            reason: format!("dims claim {n} elements ({expected} bytes) but raw_data holds {} bytes", raw.len()),
        });
    }
    let words = raw.chunks_exact(size);
    let le = |c: &[u8]| -> u64 { c.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) };
    Ok(match data_type {
        D::FLOAT => TensorData::F32(words.map(|c| f32::from_bits(le(c) as u32)).collect()),
        D::DOUBLE => TensorData::F32(words.map(|c| f64::from_bits(le(c)) as f32).collect()),
        D::FLOAT16 => TensorData::F32(words.map(|c| f16_to_f32(le(c) as u16)).collect()),
        D::BFLOAT16 => TensorData::F32(words.map(|c| f32::from_bits((le(c) as u32) << 16)).collect()),
        D::INT64 => TensorData::I64(words.map(|c| le(c) as i64).collect()),
        D::INT32 => TensorData::I64(words.map(|c| i64::from(le(c) as u32 as i32)).collect()),
        D::INT16 => TensorData::I64(words.map(|c| i64::from(le(c) as u16 as i16)).collect()),
        D::INT8 => TensorData::I64(words.map(|c| i64::from(c[0] as i8)).collect()),
        D::UINT8 | D::UINT16 | D::UINT32 => TensorData::I64(words.map(|c| le(c) as i64).collect()),
        D::UINT64 => TensorData::I64(
            words.map(|c| i64::try_from(le(c)).map_err(|_| uint64_overflow(name))).collect::<Result<_, _>>()?,
        ),
        D::BOOL => TensorData::Bool(words.map(|c| c[0] != 0).collect()),
        other => return Err(unsupported_type(name, other)),
    })
}

fn decode_typed(t: &TensorProto, data_type: DataType, n: usize, name: &str) -> Result<TensorData, ImportError> {
    use DataType as D;
    let held = typed_len(t, data_type);
    if held != n {
        return Err(ImportError::BadTensor {
            tensor: name.to_string(),
            reason: format!("dims claim {n} elements but the tensor holds {held}"),
        });
    }
    Ok(match data_type {
        D::FLOAT => TensorData::F32(t.float_data.clone()),
        D::DOUBLE => TensorData::F32(t.double_data.iter().map(|&x| x as f32).collect()),
        D::FLOAT16 => TensorData::F32(t.int32_data.iter().map(|&x| f16_to_f32(x as u16)).collect()),
        D::BFLOAT16 => TensorData::F32(t.int32_data.iter().map(|&x| f32::from_bits((x as u32) << 16)).collect()),
        D::INT64 => TensorData::I64(t.int64_data.clone()),
        D::INT32 | D::INT16 | D::INT8 | D::UINT8 | D::UINT16 => {
            TensorData::I64(t.int32_data.iter().map(|&x| i64::from(x)).collect())
        }
        D::UINT32 => TensorData::I64(t.uint64_data.iter().map(|&x| (x & 0xffff_ffff) as i64).collect()),
        D::UINT64 => TensorData::I64(
            t.uint64_data
                .iter()
                .map(|&x| i64::try_from(x).map_err(|_| uint64_overflow(name)))
                .collect::<Result<_, _>>()?,
        ),
        D::BOOL => TensorData::Bool(t.int32_data.iter().map(|&x| x != 0).collect()),
        other => return Err(unsupported_type(name, other)),
    })
}

fn uint64_overflow(name: &str) -> ImportError {
    ImportError::BadTensor { tensor: name.to_string(), reason: "uint64 value does not fit in i64".into() }
}

fn unsupported_type(name: &str, d: DataType) -> ImportError {
    ImportError::BadTensor {
        tensor: name.to_string(),
        reason: format!("data type {} is not supported", format!("{d:?}").to_lowercase()),
    }
}

/// IEEE 754 binary16 to f32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac · 2^-24.
            let v = frac as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_is_exact_on_samples() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
