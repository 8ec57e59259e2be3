//! The protobuf schema of artifact format version 2 (hand-written prost messages; no protoc),
//! and the header that frames the payload. For tools and tests that build artifacts by hand.
//!
//! Field numbers are permanent. Enum value 0 means "unset" and is always rejected. Version 1 is
//! the same schema without the values and op kinds marked "format version 2 on".

use super::{ArtifactError, FORMAT_VERSION, HEADER_LEN, MAGIC, MIN_READ_VERSION};

/// The payload: a whole graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Artifact {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub inputs: Vec<Input>,
    /// Every node except graph inputs, producers before consumers.
    #[prost(message, repeated, tag = "3")]
    pub nodes: Vec<Node>,
    #[prost(message, repeated, tag = "4")]
    pub weights: Vec<Weight>,
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<Output>,
    #[prost(message, optional, tag = "6")]
    pub provenance: Option<Provenance>,
    // Field 7 is reserved for the optimization report (rules applied, cost estimates),
    // added with the optimizer.
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Input {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub ty: Option<TensorType>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorType {
    #[prost(enumeration = "DType", tag = "1")]
    pub dtype: i32,
    #[prost(uint64, repeated, tag = "2")]
    pub shape: Vec<u64>,
    // Fields 3 and 4 are reserved for symbolic dimensions (a name per dynamic axis and its
    // bound), so that one artifact can serve several batch sizes.
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DType {
    Unset = 0,
    F32 = 1,
    I64 = 2,
    Bool = 3,
    /// Format version 2 on.
    U8 = 4,
    /// Format version 2 on.
    I8 = 5,
    /// Format version 2 on.
    I32 = 6,
}

/// One output of a value: see the module docs for the numbering of values.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct ValueRef {
    #[prost(uint32, tag = "1")]
    pub value: u32,
    #[prost(uint32, tag = "2")]
    pub slot: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Node {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub op: Option<Op>,
    #[prost(message, repeated, tag = "3")]
    pub inputs: Vec<ValueRef>,
    #[prost(message, repeated, tag = "4")]
    pub outputs: Vec<TensorType>,
}

/// A constant tensor: `data` holds the elements row-major, little-endian (bool: one byte,
/// 0 or 1).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Weight {
    #[prost(enumeration = "DType", tag = "1")]
    pub dtype: i32,
    #[prost(uint64, repeated, tag = "2")]
    pub shape: Vec<u64>,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Output {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ValueRef>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Provenance {
    #[prost(string, tag = "1")]
    pub cnnc_version: String,
    #[prost(string, tag = "2")]
    pub opt_level: String,
    #[prost(string, repeated, tag = "3")]
    pub args: Vec<String>,
    /// Empty (and so absent on the wire) when no cost model was used.
    #[prost(string, tag = "4")]
    pub cost_table_hash: String,
    /// Empty (and so absent on the wire) when no calibration data was used.
    #[prost(string, tag = "5")]
    pub calibration_hash: String,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Empty {}

/// An op with its attributes; one variant per [`crate::Op`] variant except `input`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Op {
    #[prost(
        oneof = "OpKind",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31"
    )]
    pub kind: Option<OpKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OpKind {
    #[prost(message, tag = "1")]
    Weight(WeightRef),
    #[prost(message, tag = "2")]
    Conv(Conv),
    #[prost(message, tag = "3")]
    ConvTranspose(ConvTranspose),
    #[prost(message, tag = "4")]
    BatchNorm(BatchNorm),
    #[prost(message, tag = "5")]
    Unary(Unary),
    #[prost(message, tag = "6")]
    Binary(Binary),
    #[prost(message, tag = "7")]
    Where(Empty),
    #[prost(message, tag = "8")]
    MaxPool(Pool),
    #[prost(message, tag = "9")]
    AvgPool(AvgPool),
    #[prost(message, tag = "10")]
    GlobalAvgPool(Empty),
    #[prost(message, tag = "11")]
    GlobalMaxPool(Empty),
    #[prost(message, tag = "12")]
    Gemm(Gemm),
    #[prost(message, tag = "13")]
    MatMul(Empty),
    #[prost(message, tag = "14")]
    Resize(Resize),
    #[prost(message, tag = "15")]
    Concat(Axis),
    #[prost(message, tag = "16")]
    Split(Split),
    #[prost(message, tag = "17")]
    Reshape(Shape),
    #[prost(message, tag = "18")]
    Transpose(Transpose),
    #[prost(message, tag = "19")]
    Slice(Slice),
    #[prost(message, tag = "20")]
    Gather(Axis),
    #[prost(message, tag = "21")]
    Expand(Shape),
    #[prost(message, tag = "22")]
    Cast(Cast),
    #[prost(message, tag = "23")]
    Softmax(Softmax),
    #[prost(message, tag = "24")]
    Pad(Pad),
    #[prost(message, tag = "25")]
    Reduce(Reduce),
    #[prost(message, tag = "26")]
    ArgReduce(ArgReduce),
    #[prost(message, tag = "27")]
    Fused(Box<Fused>),
    /// Format version 2 on.
    #[prost(message, tag = "28")]
    Quantize(Quant),
    /// Format version 2 on.
    #[prost(message, tag = "29")]
    Dequantize(Quant),
    /// Format version 2 on.
    #[prost(message, tag = "30")]
    QLinear(Box<QLinear>),
    /// Format version 2 on.
    #[prost(message, tag = "31")]
    Lookup(Empty),
}

/// A quantized conv, gemm or matmul; the base is one of those (the decoder rejects others).
#[derive(Clone, PartialEq, prost::Message)]
pub struct QLinear {
    #[prost(message, optional, boxed, tag = "1")]
    pub base: Option<Box<Op>>,
    #[prost(message, optional, tag = "2")]
    pub x: Option<Quant>,
    #[prost(message, optional, tag = "3")]
    pub w: Option<Quant>,
    /// The output: `I32`, `F32`, or `U8`/`I8` with `out_params` (whose `to` is unused).
    #[prost(enumeration = "DType", tag = "4")]
    pub out: i32,
    #[prost(message, optional, tag = "5")]
    pub out_params: Option<Quant>,
    #[prost(bool, tag = "6")]
    pub has_clamp: bool,
    #[prost(sint32, tag = "7")]
    pub clamp_lo: i32,
    #[prost(sint32, tag = "8")]
    pub clamp_hi: i32,
}

/// Quantization parameters; `to` is used by `Quantize` only. Scales are IEEE bit patterns.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Quant {
    #[prost(enumeration = "DType", tag = "1")]
    pub to: i32,
    #[prost(bool, tag = "2")]
    pub per_axis: bool,
    #[prost(uint64, tag = "3")]
    pub axis: u64,
    #[prost(fixed32, repeated, tag = "4")]
    pub scales: Vec<u32>,
    #[prost(sint32, repeated, tag = "5")]
    pub zero_points: Vec<i32>,
}

/// `act(base + residual)`; the base is a conv, gemm or matmul (the decoder rejects others).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Fused {
    #[prost(message, optional, boxed, tag = "1")]
    pub base: Option<Box<Op>>,
    #[prost(message, optional, tag = "2")]
    pub act: Option<Unary>,
    #[prost(bool, tag = "3")]
    pub residual: bool,
}

/// Index into [`Artifact::weights`].
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct WeightRef {
    #[prost(uint32, tag = "1")]
    pub index: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Conv {
    #[prost(uint64, repeated, tag = "1")]
    pub kernel: Vec<u64>,
    #[prost(uint64, repeated, tag = "2")]
    pub strides: Vec<u64>,
    #[prost(uint64, repeated, tag = "3")]
    pub dilations: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    pub pads: Vec<u64>,
    #[prost(uint64, tag = "5")]
    pub group: u64,
    /// `ConvAlgo`: 0 direct, 1 Winograd F(2×2,3×3), 2 Winograd F(4×4,3×3).
    #[prost(uint32, tag = "6")]
    pub algo: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConvTranspose {
    #[prost(uint64, repeated, tag = "1")]
    pub kernel: Vec<u64>,
    #[prost(uint64, repeated, tag = "2")]
    pub strides: Vec<u64>,
    #[prost(uint64, repeated, tag = "3")]
    pub dilations: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    pub pads: Vec<u64>,
    #[prost(uint64, repeated, tag = "5")]
    pub output_padding: Vec<u64>,
    #[prost(uint64, tag = "6")]
    pub group: u64,
}

/// f32 attributes are IEEE bit patterns (`f32::to_bits`).
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BatchNorm {
    #[prost(fixed32, tag = "1")]
    pub epsilon: u32,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Unary {
    #[prost(oneof = "UnaryKind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17")]
    pub kind: Option<UnaryKind>,
}

#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum UnaryKind {
    #[prost(message, tag = "1")]
    Relu(Empty),
    #[prost(message, tag = "2")]
    LeakyRelu(LeakyRelu),
    #[prost(message, tag = "3")]
    Clip(Clip),
    #[prost(message, tag = "4")]
    Sigmoid(Empty),
    #[prost(message, tag = "5")]
    HardSigmoid(HardSigmoid),
    #[prost(message, tag = "6")]
    HardSwish(Empty),
    #[prost(message, tag = "7")]
    Tanh(Empty),
    #[prost(message, tag = "8")]
    Exp(Empty),
    #[prost(message, tag = "9")]
    Log(Empty),
    #[prost(message, tag = "10")]
    Erf(Empty),
    #[prost(message, tag = "11")]
    Sqrt(Empty),
    #[prost(message, tag = "12")]
    Reciprocal(Empty),
    #[prost(message, tag = "13")]
    Neg(Empty),
    #[prost(message, tag = "14")]
    Abs(Empty),
    #[prost(message, tag = "15")]
    Floor(Empty),
    #[prost(message, tag = "16")]
    Ceil(Empty),
    /// Format version 2 on (added while version 2 was open).
    #[prost(message, tag = "17")]
    Swish(Swish),
}

/// `x · σ(β·x)`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Swish {
    #[prost(fixed32, tag = "1")]
    pub beta: u32,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct LeakyRelu {
    #[prost(fixed32, tag = "1")]
    pub alpha: u32,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Clip {
    #[prost(fixed32, tag = "1")]
    pub min: u32,
    #[prost(fixed32, tag = "2")]
    pub max: u32,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct HardSigmoid {
    #[prost(fixed32, tag = "1")]
    pub alpha: u32,
    #[prost(fixed32, tag = "2")]
    pub beta: u32,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Binary {
    #[prost(enumeration = "BinaryKind", tag = "1")]
    pub kind: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum BinaryKind {
    Unset = 0,
    Add = 1,
    Sub = 2,
    Mul = 3,
    Div = 4,
    Max = 5,
    Min = 6,
    Pow = 7,
    PRelu = 8,
    Equal = 9,
    Less = 10,
    Greater = 11,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Pool {
    #[prost(uint64, repeated, tag = "1")]
    pub kernel: Vec<u64>,
    #[prost(uint64, repeated, tag = "2")]
    pub strides: Vec<u64>,
    #[prost(uint64, repeated, tag = "3")]
    pub dilations: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    pub pads: Vec<u64>,
    #[prost(bool, tag = "5")]
    pub ceil_mode: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AvgPool {
    #[prost(message, optional, tag = "1")]
    pub pool: Option<Pool>,
    #[prost(bool, tag = "2")]
    pub count_include_pad: bool,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Gemm {
    #[prost(fixed32, tag = "1")]
    pub alpha: u32,
    #[prost(fixed32, tag = "2")]
    pub beta: u32,
    #[prost(bool, tag = "3")]
    pub trans_a: bool,
    #[prost(bool, tag = "4")]
    pub trans_b: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resize {
    #[prost(oneof = "ResizeMode", tags = "1, 2, 3")]
    pub mode: Option<ResizeMode>,
    #[prost(oneof = "Coord", tags = "4, 5, 6, 7, 8, 9, 13")]
    pub coord: Option<Coord>,
    #[prost(enumeration = "NearestMode", tag = "10")]
    pub nearest: i32,
    #[prost(fixed32, repeated, tag = "11")]
    pub scales: Vec<u32>,
    #[prost(uint64, repeated, tag = "12")]
    pub out_shape: Vec<u64>,
}

#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum ResizeMode {
    #[prost(message, tag = "1")]
    Nearest(Empty),
    #[prost(message, tag = "2")]
    Linear(Empty),
    #[prost(message, tag = "3")]
    Cubic(Cubic),
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Cubic {
    #[prost(fixed32, tag = "1")]
    pub a: u32,
    #[prost(bool, tag = "2")]
    pub exclude_outside: bool,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Coord {
    #[prost(message, tag = "4")]
    HalfPixel(Empty),
    #[prost(message, tag = "5")]
    HalfPixelSymmetric(Empty),
    #[prost(message, tag = "6")]
    PytorchHalfPixel(Empty),
    #[prost(message, tag = "7")]
    AlignCorners(Empty),
    #[prost(message, tag = "8")]
    Asymmetric(Empty),
    #[prost(message, tag = "9")]
    TfCropAndResize(TfCropAndResize),
    // Tags 10 to 12 are `Resize`'s own fields.
    #[prost(message, tag = "13")]
    TfHalfPixelForNn(Empty),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TfCropAndResize {
    #[prost(fixed32, repeated, tag = "1")]
    pub roi: Vec<u32>,
    #[prost(fixed32, tag = "2")]
    pub extrapolation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NearestMode {
    Unset = 0,
    RoundPreferFloor = 1,
    RoundPreferCeil = 2,
    Floor = 3,
    Ceil = 4,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Axis {
    #[prost(uint64, tag = "1")]
    pub axis: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Split {
    #[prost(uint64, tag = "1")]
    pub axis: u64,
    #[prost(uint64, repeated, tag = "2")]
    pub sizes: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Shape {
    #[prost(uint64, repeated, tag = "1")]
    pub shape: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Transpose {
    #[prost(uint64, repeated, tag = "1")]
    pub perm: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Slice {
    #[prost(message, repeated, tag = "1")]
    pub axes: Vec<SliceAxis>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct SliceAxis {
    #[prost(uint64, tag = "1")]
    pub axis: u64,
    #[prost(sint64, tag = "2")]
    pub start: i64,
    #[prost(sint64, tag = "3")]
    pub end: i64,
    #[prost(sint64, tag = "4")]
    pub step: i64,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Cast {
    #[prost(enumeration = "DType", tag = "1")]
    pub to: i32,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Softmax {
    #[prost(uint64, tag = "1")]
    pub axis: u64,
    #[prost(bool, tag = "2")]
    pub flatten: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Pad {
    #[prost(sint64, repeated, tag = "1")]
    pub pads: Vec<i64>,
    #[prost(enumeration = "PadMode", tag = "2")]
    pub mode: i32,
    #[prost(fixed32, tag = "3")]
    pub value: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PadMode {
    Unset = 0,
    Constant = 1,
    Reflect = 2,
    Edge = 3,
    Wrap = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reduce {
    #[prost(enumeration = "ReduceKind", tag = "1")]
    pub kind: i32,
    #[prost(uint64, repeated, tag = "2")]
    pub axes: Vec<u64>,
    #[prost(bool, tag = "3")]
    pub keepdims: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ReduceKind {
    Unset = 0,
    Mean = 1,
    Sum = 2,
    Max = 3,
    Min = 4,
    Prod = 5,
    L1 = 6,
    L2 = 7,
    SumSquare = 8,
    LogSum = 9,
    LogSumExp = 10,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct ArgReduce {
    #[prost(bool, tag = "1")]
    pub max: bool,
    #[prost(uint64, tag = "2")]
    pub axis: u64,
    #[prost(bool, tag = "3")]
    pub keepdims: bool,
    #[prost(bool, tag = "4")]
    pub select_last_index: bool,
}

/// Prepends the header (magic, `version`, payload length, CRC-32) to an encoded payload.
pub fn frame(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the header (magic, a readable version, length, checksum); returns the version and
/// the payload.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), ArtifactError> {
    let len = bytes.len() as u64;
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(ArtifactError::NotAnArtifact { found: bytes[..magic_len].to_vec() });
    }
    let Some(version) = bytes.get(4..8) else {
        return Err(ArtifactError::Truncated { what: "the header", needed: HEADER_LEN as u64, len });
    };
    let version = u32::from_le_bytes(version.try_into().expect("a 4-byte slice"));
    if !(MIN_READ_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(ArtifactError::UnsupportedVersion {
            found: version,
            cnnc: env!("CARGO_PKG_VERSION"),
            min: MIN_READ_VERSION,
            max: FORMAT_VERSION,
        });
    }
    let (Some(payload_len), Some(stored)) = (bytes.get(8..16), bytes.get(16..20)) else {
        return Err(ArtifactError::Truncated { what: "the header", needed: HEADER_LEN as u64, len });
    };
    let payload_len = u64::from_le_bytes(payload_len.try_into().expect("an 8-byte slice"));
    let stored = u32::from_le_bytes(stored.try_into().expect("a 4-byte slice"));
    let available = len - HEADER_LEN as u64;
    if payload_len > available {
        let needed = payload_len.saturating_add(HEADER_LEN as u64);
        return Err(ArtifactError::Truncated { what: "the header and payload", needed, len });
    }
    if payload_len < available {
        return Err(ArtifactError::TrailingBytes { payload_len, extra: available - payload_len });
    }
    let payload = &bytes[HEADER_LEN..];
    let computed = crc32fast::hash(payload);
    // Fuzzing skips the checksum so that mutated payloads reach the decoder.
    if computed != stored && !cfg!(fuzzing) {
        return Err(ArtifactError::Checksum { stored, computed });
    }
    Ok((version, payload))
}

/// A message framed as an artifact of `version` with a correct checksum (for tools and tests
/// that write artifacts by hand).
pub fn frame_message(version: u32, msg: &Artifact) -> Vec<u8> {
    frame(version, &prost::Message::encode_to_vec(msg))
}

/// The message inside a framed artifact, with the header and top-level counts checked but
/// nothing else: the graph may be arbitrarily invalid.
pub fn unframe_message(bytes: &[u8]) -> Result<(u32, Artifact), ArtifactError> {
    let (version, payload) = unframe(bytes)?;
    super::check_top_level_counts(payload)?;
    let msg =
        prost::Message::decode(payload).map_err(|e: prost::DecodeError| ArtifactError::Malformed(e.to_string()))?;
    Ok((version, msg))
}
