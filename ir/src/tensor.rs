//! Element types, tensor types and constant tensors.

use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    I64,
    Bool,
    /// Unsigned 8-bit integer: quantized activations (ONNX `uint8`).
    U8,
    /// Signed 8-bit integer: quantized weights and activations (ONNX `int8`).
    I8,
    /// Signed 32-bit integer: quantized biases and accumulators (ONNX `int32`).
    I32,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::I64 => 8,
            DType::Bool => 1,
            DType::U8 => 1,
            DType::I8 => 1,
            DType::I32 => 4,
        }
    }

    /// Every element type, in declaration order.
    pub const ALL: [DType; 6] = [DType::F32, DType::I64, DType::Bool, DType::U8, DType::I8, DType::I32];

    /// The spelling used by the text form (`f32`, `i64`, `bool`, `u8`, `i8`, `i32`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
            DType::Bool => "bool",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::I32 => "i32",
        }
    }

    /// Inverse of [`DType::name`].
    pub fn from_name(s: &str) -> Option<DType> {
        match s {
            "f32" => Some(DType::F32),
            "i64" => Some(DType::I64),
            "bool" => Some(DType::Bool),
            "u8" => Some(DType::U8),
            "i8" => Some(DType::I8),
            "i32" => Some(DType::I32),
            _ => None,
        }
    }

    /// True for the 8-bit quantized types `u8` and `i8`.
    pub fn is_quantized(self) -> bool {
        matches!(self, DType::U8 | DType::I8)
    }

    /// The range `[min, max]` of an integer type, `None` for `f32` and `bool`.
    pub fn int_range(self) -> Option<(i64, i64)> {
        match self {
            DType::U8 => Some((0, 255)),
            DType::I8 => Some((-128, 127)),
            DType::I32 => Some((i32::MIN.into(), i32::MAX.into())),
            DType::I64 => Some((i64::MIN, i64::MAX)),
            DType::F32 | DType::Bool => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of elements of a shape, `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Number of elements of a shape. Shapes inside a verified graph never overflow.
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape).expect("shape element count overflows usize")
}

/// Static type of a value: element type and shape (NCHW for images).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> Self {
        TensorType { dtype, shape: shape.into() }
    }

    pub fn f32(shape: impl Into<Vec<usize>>) -> Self {
        Self::new(DType::F32, shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Element storage of a constant tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    I32(Vec<i32>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
            TensorData::I32(_) => DType::I32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::I32(v) => v.len(),
        }
    }

    /// The elements of an integer tensor (`u8`, `i8`, `i32`, `i64`) widened to i64; `None` for
    /// `f32` and `bool`.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match self {
            TensorData::I64(v) => Some(v.clone()),
            TensorData::U8(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            TensorData::I8(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            TensorData::I32(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            TensorData::F32(_) | TensorData::Bool(_) => None,
        }
    }

    /// Elements `range` as new data of the same dtype. Panics if `range` is out of bounds.
    pub fn slice(&self, range: std::ops::Range<usize>) -> TensorData {
        match self {
            TensorData::F32(v) => TensorData::F32(v[range].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[range].to_vec()),
            TensorData::Bool(v) => TensorData::Bool(v[range].to_vec()),
            TensorData::U8(v) => TensorData::U8(v[range].to_vec()),
            TensorData::I8(v) => TensorData::I8(v[range].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[range].to_vec()),
        }
    }

    /// Inverse of [`TensorData::to_le_bytes`] (a bool is `byte != 0`); `None` when the byte
    /// count is not a multiple of the element size.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Option<TensorData> {
        fn words<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Option<Vec<T>> {
            let chunks = bytes.chunks_exact(N);
            chunks
                .remainder()
                .is_empty()
                .then(|| chunks.map(|c| f(c.try_into().expect("chunks_exact yields N-byte chunks"))).collect())
        }
        Some(match dtype {
            DType::F32 => TensorData::F32(words(bytes, f32::from_le_bytes)?),
            DType::I64 => TensorData::I64(words(bytes, i64::from_le_bytes)?),
            DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
            DType::U8 => TensorData::U8(bytes.to_vec()),
            DType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
            DType::I32 => TensorData::I32(words(bytes, i32::from_le_bytes)?),
        })
    }

    /// The elements as raw little-endian bytes (bool: one byte, 0 or 1).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            TensorData::U8(v) => v.clone(),
            TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dense, row-major tensor whose element count always matches its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// Why a tensor cannot be cut into batches along dim 0, or batches joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("a scalar has no batch dimension")]
    Scalar,
    #[error("dim 0 of shape {shape:?} is not {count} equal batches")]
    Uneven { shape: Vec<usize>, count: usize },
    #[error("batch {index} of {count} does not exist")]
    NoSuchBatch { index: usize, count: usize },
    #[error("no batches to concatenate")]
    Empty,
    #[error("batch {index} is {got}[{got_shape:?}], batch 0 is {want}[{want_shape:?}]: only dim 0 may differ")]
    Mismatch { index: usize, want: DType, want_shape: Vec<usize>, got: DType, got_shape: Vec<usize> },
}

/// A tensor whose data length disagrees with its shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor of shape {shape:?} needs {expected} elements, got {actual}")]
pub struct ShapeMismatch {
    pub shape: Vec<usize>,
    pub expected: usize,
    pub actual: usize,
}

impl Tensor {
    /// Builds a tensor, checking that `data` holds exactly as many elements as `shape` says.
    pub fn new(shape: impl Into<Vec<usize>>, data: TensorData) -> Result<Tensor, ShapeMismatch> {
        let shape = shape.into();
        let expected = checked_numel(&shape).unwrap_or(usize::MAX);
        if expected != data.len() {
            return Err(ShapeMismatch { shape, expected, actual: data.len() });
        }
        Ok(Tensor { shape, data })
    }

    pub fn from_f32(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, TensorData::F32(data))
    }

    pub fn from_i64(shape: impl Into<Vec<usize>>, data: Vec<i64>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, TensorData::I64(data))
    }

    pub fn from_bool(shape: impl Into<Vec<usize>>, data: Vec<bool>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, TensorData::Bool(data))
    }

    pub fn from_u8(shape: impl Into<Vec<usize>>, data: Vec<u8>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, TensorData::U8(data))
    }

    pub fn from_i8(shape: impl Into<Vec<usize>>, data: Vec<i8>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, TensorData::I8(data))
    }

    pub fn from_i32(shape: impl Into<Vec<usize>>, data: Vec<i32>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, TensorData::I32(data))
    }

    /// A scalar-filled tensor of the given type.
    pub fn full_f32(shape: impl Into<Vec<usize>>, value: f32) -> Tensor {
        let shape = shape.into();
        let n = numel(&shape);
        Tensor { shape, data: TensorData::F32(vec![value; n]) }
    }

    pub fn zeros(ty: &TensorType) -> Tensor {
        let n = ty.numel();
        let data = match ty.dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
            DType::U8 => TensorData::U8(vec![0; n]),
            DType::I8 => TensorData::I8(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
        };
        Tensor { shape: ty.shape.clone(), data }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), self.shape.clone())
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_u8(&self) -> Option<&[u8]> {
        match &self.data {
            TensorData::U8(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i8(&self) -> Option<&[i8]> {
        match &self.data {
            TensorData::I8(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            _ => None,
        }
    }

    /// Same data, new shape with the same element count.
    pub fn reshaped(self, shape: impl Into<Vec<usize>>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, self.data)
    }

    /// Size of the element data in bytes.
    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype().size_bytes()
    }

    /// Batch `index` of `count` equal batches along dim 0, for any dtype: dim 0 becomes
    /// `shape[0] / count`, the other dimensions stay. Fails on a scalar, when `count` does not
    /// divide dim 0, or when `index >= count`.
    pub fn batch_slice(&self, index: usize, count: usize) -> Result<Tensor, BatchError> {
        let Some(&rows) = self.shape.first() else { return Err(BatchError::Scalar) };
        if count == 0 || rows % count != 0 {
            return Err(BatchError::Uneven { shape: self.shape.clone(), count });
        }
        if index >= count {
            return Err(BatchError::NoSuchBatch { index, count });
        }
        let mut shape = self.shape.clone();
        shape[0] = rows / count;
        let n = self.numel() / count;
        let range = index * n..(index + 1) * n;
        Ok(Tensor { shape, data: self.data.slice(range) })
    }

    /// Joins `parts` along dim 0, for any dtype: every part has the dtype and the dimensions
    /// after dim 0 of the first; dim 0 of the result is the sum of theirs.
    pub fn concat_batches(parts: &[Tensor]) -> Result<Tensor, BatchError> {
        let first = parts.first().ok_or(BatchError::Empty)?;
        if first.shape.is_empty() {
            return Err(BatchError::Scalar);
        }
        let mut data = first.data.slice(0..0);
        let mut rows = 0;
        for (index, part) in parts.iter().enumerate() {
            let mismatch = || BatchError::Mismatch {
                index,
                want: first.dtype(),
                want_shape: first.shape.clone(),
                got: part.dtype(),
                got_shape: part.shape.clone(),
            };
            if part.shape.is_empty() || part.shape[1..] != first.shape[1..] {
                return Err(mismatch());
            }
            match (&mut data, &part.data) {
                (TensorData::F32(all), TensorData::F32(v)) => all.extend_from_slice(v),
                (TensorData::I64(all), TensorData::I64(v)) => all.extend_from_slice(v),
                (TensorData::Bool(all), TensorData::Bool(v)) => all.extend_from_slice(v),
                (TensorData::U8(all), TensorData::U8(v)) => all.extend_from_slice(v),
                (TensorData::I8(all), TensorData::I8(v)) => all.extend_from_slice(v),
                (TensorData::I32(all), TensorData::I32(v)) => all.extend_from_slice(v),
                _ => return Err(mismatch()),
            }
            rows += part.shape[0];
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        Ok(Tensor { shape, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor {
        Tensor::from_i64(shape.to_vec(), (0..numel(shape) as i64).collect()).expect("sized")
    }

    #[test]
    fn batch_slices_concatenate_back_to_the_tensor_for_every_dtype() {
        let ints = iota(&[6, 2, 1]);
        let floats = Tensor::from_f32(vec![4, 3], (0..12).map(|i| i as f32 * 0.5).collect()).expect("sized");
        let bools = Tensor::from_bool(vec![2, 2], vec![true, false, false, true]).expect("sized");
        for (t, count) in [(&ints, 3), (&ints, 6), (&floats, 2), (&bools, 2), (&bools, 1)] {
            let parts: Vec<Tensor> = (0..count).map(|b| t.batch_slice(b, count).expect("divides")).collect();
            assert!(parts.iter().all(|p| p.shape()[0] == t.shape()[0] / count && p.shape()[1..] == t.shape()[1..]));
            assert_eq!(&Tensor::concat_batches(&parts).expect("same type"), t);
        }
    }

    #[test]
    fn a_batch_slice_holds_the_rows_of_its_batch() {
        let t = iota(&[4, 2]);
        assert_eq!(t.batch_slice(1, 2).expect("divides").as_i64(), Some(&[4, 5, 6, 7][..]));
    }

    #[test]
    fn batch_slice_rejects_scalars_uneven_counts_and_missing_batches() {
        assert_eq!(Tensor::full_f32(vec![], 1.0).batch_slice(0, 1), Err(BatchError::Scalar));
        assert_eq!(iota(&[3, 2]).batch_slice(0, 2), Err(BatchError::Uneven { shape: vec![3, 2], count: 2 }));
        assert_eq!(iota(&[3, 2]).batch_slice(0, 0), Err(BatchError::Uneven { shape: vec![3, 2], count: 0 }));
        assert_eq!(iota(&[4, 2]).batch_slice(2, 2), Err(BatchError::NoSuchBatch { index: 2, count: 2 }));
    }

    #[test]
    fn concat_batches_rejects_nothing_scalars_and_parts_differing_beyond_dim_0() {
        assert_eq!(Tensor::concat_batches(&[]), Err(BatchError::Empty));
        assert_eq!(Tensor::concat_batches(&[Tensor::full_f32(vec![], 1.0)]), Err(BatchError::Scalar));
        let other_width = Tensor::concat_batches(&[iota(&[1, 2]), iota(&[1, 3])]);
        assert!(matches!(other_width, Err(BatchError::Mismatch { index: 1, .. })), "{other_width:?}");
        let other_dtype = Tensor::concat_batches(&[iota(&[1, 2]), Tensor::full_f32(vec![1, 2], 0.0)]);
        assert!(matches!(other_dtype, Err(BatchError::Mismatch { index: 1, got: DType::F32, .. })), "{other_dtype:?}");
        let grown = Tensor::concat_batches(&[iota(&[1, 2]), iota(&[3, 2])]).expect("same type");
        assert_eq!(grown.shape(), &[4, 2]);
    }
}
