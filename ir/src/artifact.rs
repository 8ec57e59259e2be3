//! The `.cnnc` artifact: a verified graph, its weights and how it was made, in one file that
//! loads without the ONNX model.
//!
//! # Layout
//!
//! A 20-byte header, then a protobuf payload, the [`wire::Artifact`] message:
//!
//! | bytes | contents |
//! |---|---|
//! | 0..4 | magic `CNNC` |
//! | 4..8 | format version, u32 little-endian |
//! | 8..16 | payload length in bytes, u64 LE |
//! | 16..20 | CRC-32 (IEEE) of the payload, u32 LE |
//!
//! Only the magic and the version are fixed across versions; everything after them belongs to
//! the version. The payload holds the graph name; the graph inputs (name, type); the nodes
//! other than inputs in topological order (name, op with typed attributes, input references,
//! output types); the weights (dtype, shape, raw little-endian bytes); the graph outputs; and
//! the provenance (cnnc version, optimization level, command line, cost-table hash). A value is referred to by
//! `(value, slot)`: value `k` is graph input `k` when `k < inputs.len()`, else node
//! `k − inputs.len()`. Each weight is read by exactly one `weight` node. f32 attributes are
//! stored as their IEEE bit patterns (`fixed32`) because proto3 drops a `-0.0` float as a
//! default value; NaN payloads and ±∞ survive as well.
//!
//! # Compatibility
//!
//! The format version changes whenever the payload's meaning changes. cnnc of format version N
//! reads versions N and N − 1 (never below 1, the first format) and writes N; any other version is
//! refused with "artifact format version X; this cnnc (version Y) reads versions A–B: recompile
//! the model with `cnnc opt`". Within a version, fields are only ever added, and readers skip
//! fields they do not know.
//!
//! | version | adds |
//! |---|---|
//! | 1 | the first format |
//! | 2 | dtypes u8, i8, i32 (tensor types, weights, `cast`); ops `quantize`, `dequantize`, `qlinear-*`, `lookup`; the unary (and fused activation) `swish` |
//!
//! Format 2 is still open while the int8 work (issue 13) lands unreleased: ops it adds join
//! version 2 rather than bumping again, which would drop version 1 from the read window.
//!
//! A version-1 payload is decoded with the version-2 schema after checking that it uses nothing
//! version 2 added.
//!
//! # Hostile input
//!
//! [`decode`] treats its input as hostile and never panics. Before anything is built it checks
//! the header, the payload length and checksum, and the number of top-level records (inputs,
//! nodes, weights, outputs) on the wire; then every count and size against the limits below,
//! shapes with checked arithmetic, each weight's byte length against its dtype and shape, every
//! node input against the values defined before the node (so a decoded graph has no cycle),
//! slots against the producer's outputs, and op attributes (lengths, ranges, enum values).
//! Each failure is a specific [`ArtifactError`] naming the node, weight or field.
//!
//! | limit | value |
//! |---|---|
//! | nodes, weights | 2¹⁸ each |
//! | graph inputs, graph outputs, inputs or outputs of one node | 4096 each |
//! | tensor rank | 8 |
//! | one dimension, or integer attribute magnitude | 2³¹ |
//! | elements of one tensor (weights and every declared value type) | 2³¹ |
//! | bytes of a name or provenance string | 4096 |
//!
//! Shape consistency (declared output types against inference) is left to [`crate::verify`]:
//! [`decode`] returns an unverified [`Graph`] and every caller verifies it.

use std::collections::HashMap;

use crate::graph::{Graph, NodeId, ValueRef};
use crate::op::{
    BinaryOp, ConvAlgo, ConvAttrs, ConvTransposeAttrs, CoordTransform, Fused, NearestMode, Op, PadMode, PoolAttrs,
    QLinear, QLinearOut, QuantParams, ReduceKind, ResizeAttrs, ResizeMode, SliceAxis, UnaryOp,
};
use crate::tensor::{DType, Tensor, TensorData, TensorType, checked_numel};
use crate::verify::VerifiedGraph;

/// The format version this cnnc writes.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this cnnc reads: `FORMAT_VERSION − 1`, or 1 for the first format.
pub const MIN_READ_VERSION: u32 = if FORMAT_VERSION > 1 { FORMAT_VERSION - 1 } else { 1 };

/// The first four bytes of every artifact.
pub const MAGIC: [u8; 4] = *b"CNNC";

const HEADER_LEN: usize = 20;
const MAX_NODES: usize = 1 << 18;
const MAX_WEIGHTS: usize = 1 << 18;
const MAX_GRAPH_IO: usize = 4096;
const MAX_NODE_IO: usize = 4096;
const MAX_RANK: usize = 8;
const MAX_DIM: u64 = 1 << 31;
const MAX_ELEMENTS: usize = 1 << 31;
const MAX_STRING: usize = 4096;
const MAX_ARGS: usize = 4096;

/// What an artifact records besides the graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArtifactMeta {
    /// How the artifact was made; `None` when the writer did not say.
    pub provenance: Option<Provenance>,
}

/// How an artifact was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    /// Version of the cnnc that wrote the artifact (`0.1.0`).
    pub cnnc_version: String,
    /// Optimization level as spelled on the command line (`O0`).
    pub opt_level: String,
    /// The command line that made the artifact, program name excluded.
    pub args: Vec<String>,
    /// Hash of the cost table the optimizer's choices were made with (16 hex digits), empty
    /// when no cost model was used (`-O0`).
    pub cost_table_hash: String,
    /// SHA-256 (hex) of the calibration data and the flags that made model inputs of it
    /// (`-O speed`); empty when none was used.
    pub calibration_hash: String,
}

/// Why bytes are not a loadable artifact. Node-level variants name the node by index and name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("not a cnnc artifact: the file starts with {found:02x?}, not the magic bytes `CNNC`")]
    NotAnArtifact { found: Vec<u8> },
    #[error("truncated artifact: {what} needs {needed} bytes, the file has {len}")]
    Truncated { what: &'static str, needed: u64, len: u64 },
    #[error("artifact has {extra} unexpected byte(s) after its {payload_len}-byte payload")]
    TrailingBytes { payload_len: u64, extra: u64 },
    #[error(
        "artifact format version {found}; this cnnc (version {cnnc}) reads versions {min}–{max}: \
         recompile the model with `cnnc opt`"
    )]
    UnsupportedVersion { found: u32, cnnc: &'static str, min: u32, max: u32 },
    #[error("corrupt artifact: the payload's CRC-32 is {computed:08x}, the header says {stored:08x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("corrupt artifact: the payload is not a valid artifact message: {0}")]
    Malformed(String),
    #[error("{what}: {count} exceed(s) the limit of {max}")]
    TooMany { what: String, count: usize, max: usize },
    #[error("{at}: missing field `{field}`")]
    Missing { at: String, field: &'static str },
    #[error("{at}: field `{field}` has unknown value {value}")]
    UnknownValue { at: String, field: &'static str, value: i32 },
    #[error("{at}: {reason}")]
    BadString { at: String, reason: String },
    #[error("{at}: shape {shape:?}: {reason}")]
    BadShape { at: String, shape: Vec<u64>, reason: String },
    #[error("weight #{index} (dtype {dtype}, shape {shape:?}) needs {expected} bytes, the artifact holds {actual}")]
    WeightSize { index: usize, dtype: DType, shape: Vec<usize>, expected: u64, actual: u64 },
    #[error("weight #{index}: {reason}")]
    BadWeight { index: usize, reason: String },
    #[error("{node}: input {input}: {reason}")]
    BadInputRef { node: String, input: usize, reason: String },
    #[error("{node} ({op}): attribute `{attr}`: {reason}")]
    BadAttribute { node: String, op: &'static str, attr: &'static str, reason: String },
    #[error("graph output #{index} `{name}`: {reason}")]
    BadOutput { index: usize, name: String, reason: String },
}

type Result<T> = std::result::Result<T, ArtifactError>;

/// True if `bytes` starts with the artifact magic (whatever follows).
pub fn is_artifact(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// Serializes a verified graph and `meta` as a format-[`FORMAT_VERSION`] artifact.
///
/// Fails only if the graph exceeds the format's limits (module docs): the bytes returned are
/// always accepted by [`decode`], which this function runs on them before returning.
pub fn encode(graph: &VerifiedGraph, meta: &ArtifactMeta) -> Result<Vec<u8>> {
    let bytes = wire::frame_message(FORMAT_VERSION, &to_wire(graph, meta));
    decode(&bytes)?;
    Ok(bytes)
}

/// Reads an artifact written by this cnnc or the previous format version. The graph is not
/// verified: pass it to [`crate::verify`] before use.
pub fn decode(bytes: &[u8]) -> Result<(Graph, ArtifactMeta)> {
    // `unframe` accepts MIN_READ_VERSION..=FORMAT_VERSION; when the format changes, the previous
    // version's differences are handled here, keyed on the version it returns.
    let (version, msg) = wire::unframe_message(bytes)?;
    if version == 1 {
        check_v1(&msg)?;
    }
    from_wire(msg)
}

/// Refuses what format version 1 could not say: the dtypes u8, i8 and i32, the ops
/// `quantize`, `dequantize`, `qlinear-*` and `lookup`, and the activation `swish`.
fn check_v1(msg: &wire::Artifact) -> Result<()> {
    let v2_only = |at: &dyn Fn() -> String, field: &'static str, dtype: i32| match wire::DType::try_from(dtype) {
        Ok(wire::DType::U8 | wire::DType::I8 | wire::DType::I32) => {
            Err(ArtifactError::UnknownValue { at: format!("{} (format version 1)", at()), field, value: dtype })
        }
        _ => Ok(()),
    };
    for (i, input) in msg.inputs.iter().enumerate() {
        if let Some(t) = &input.ty {
            v2_only(&|| format!("graph input #{i} `{}`", input.name), "dtype", t.dtype)?;
        }
    }
    for (i, node) in msg.nodes.iter().enumerate() {
        let at = || format!("node #{} `{}`", i + msg.inputs.len(), node.name);
        for t in &node.outputs {
            v2_only(&at, "dtype", t.dtype)?;
        }
        match &node.op {
            Some(wire::Op { kind: Some(wire::OpKind::Cast(c)) }) => v2_only(&at, "to", c.to)?,
            Some(wire::Op {
                kind:
                    Some(
                        k @ (wire::OpKind::Quantize(_)
                        | wire::OpKind::Dequantize(_)
                        | wire::OpKind::QLinear(_)
                        | wire::OpKind::Lookup(_)),
                    ),
            }) => {
                return Err(ArtifactError::Malformed(format!(
                    "{}: op `{}` does not exist in format version 1",
                    at(),
                    wire_op_name(k)
                )));
            }
            Some(wire::Op { kind: Some(k) }) => {
                let unary = match k {
                    wire::OpKind::Unary(u) => Some(u),
                    wire::OpKind::Fused(f) => f.act.as_ref(),
                    _ => None,
                };
                if let Some(wire::Unary { kind: Some(wire::UnaryKind::Swish(_)) }) = unary {
                    return Err(ArtifactError::Malformed(format!(
                        "{}: activation `swish` does not exist in format version 1",
                        at()
                    )));
                }
            }
            _ => {}
        }
    }
    for (i, w) in msg.weights.iter().enumerate() {
        v2_only(&|| format!("weight #{i}"), "dtype", w.dtype)?;
    }
    Ok(())
}

/// The protobuf schema of format version 2, for tools and tests that build artifacts by hand.
pub mod wire;

/// Counts the top-level records on the wire so that absurd counts are refused before prost
/// allocates a `Vec` entry per record.
fn check_top_level_counts(payload: &[u8]) -> Result<()> {
    let mut counts = [0usize; 8];
    let mut pos = 0;
    while pos < payload.len() {
        let key = read_varint(payload, &mut pos)?;
        let field = key >> 3;
        match key & 7 {
            0 => {
                read_varint(payload, &mut pos)?;
            }
            1 => pos = skip(payload, pos, 8)?,
            2 => {
                let n = read_varint(payload, &mut pos)?;
                pos = skip(payload, pos, n)?;
            }
            5 => pos = skip(payload, pos, 4)?,
            wt => return Err(ArtifactError::Malformed(format!("unsupported wire type {wt} at byte {pos}"))),
        }
        if let Some(c) = usize::try_from(field).ok().and_then(|f| counts.get_mut(f)) {
            *c += 1;
        }
    }
    for (field, what, max) in [
        (2, "graph inputs", MAX_GRAPH_IO),
        (3, "nodes", MAX_NODES),
        (4, "weights", MAX_WEIGHTS),
        (5, "graph outputs", MAX_GRAPH_IO),
    ] {
        too_many(what, counts[field], max)?;
    }
    Ok(())
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err(ArtifactError::Malformed(format!("varint runs past the end of the payload at byte {pos}")));
        };
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ArtifactError::Malformed(format!("varint longer than 10 bytes before byte {pos}")))
}

fn skip(buf: &[u8], pos: usize, n: u64) -> Result<usize> {
    usize::try_from(n).ok().and_then(|n| pos.checked_add(n)).filter(|&end| end <= buf.len()).ok_or_else(|| {
        ArtifactError::Malformed(format!("field of {n} bytes at byte {pos} runs past the end of the payload"))
    })
}

fn too_many(what: impl Into<String>, count: usize, max: usize) -> Result<()> {
    if count > max { Err(ArtifactError::TooMany { what: what.into(), count, max }) } else { Ok(()) }
}

fn to_wire(graph: &Graph, meta: &ArtifactMeta) -> wire::Artifact {
    let inputs = graph.inputs();
    let rest = node_order(graph);
    let index: HashMap<NodeId, u32> = inputs
        .iter()
        .chain(&rest)
        .enumerate()
        .map(|(i, &id)| (id, u32::try_from(i).expect("fewer than 2^32 nodes")))
        .collect();
    let mut weights = Vec::new();
    let nodes = rest
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            wire::Node {
                name: node.name.clone(),
                op: Some(wire::Op { kind: Some(op_to_wire(graph, &node.op, &mut weights)) }),
                inputs: graph
                    .node_inputs(id)
                    .iter()
                    .map(|v| wire::ValueRef { value: index[&v.node], slot: v.slot as u32 })
                    .collect(),
                outputs: node.outputs.iter().map(type_to_wire).collect(),
            }
        })
        .collect();
    wire::Artifact {
        name: graph.name.clone(),
        inputs: inputs
            .iter()
            .map(|&id| {
                let node = graph.node(id);
                wire::Input { name: node.name.clone(), ty: Some(type_to_wire(&node.outputs[0])) }
            })
            .collect(),
        nodes,
        weights,
        outputs: graph
            .outputs()
            .iter()
            .map(|o| wire::Output {
                name: o.name.clone(),
                value: Some(wire::ValueRef { value: index[&o.value.node], slot: o.value.slot as u32 }),
            })
            .collect(),
        provenance: meta.provenance.as_ref().map(|p| wire::Provenance {
            cnnc_version: p.cnnc_version.clone(),
            opt_level: p.opt_level.clone(),
            args: p.args.clone(),
            cost_table_hash: p.cost_table_hash.clone(),
            calibration_hash: p.calibration_hash.clone(),
        }),
    }
}

/// The nodes other than graph inputs in the canonical order ([`Graph::lowest_id_order`], inputs
/// counted as placed). This is the text form's print order, so a decoded graph, whose ids
/// follow the artifact, prints exactly like the graph that was encoded.
fn node_order(graph: &Graph) -> Vec<NodeId> {
    let (order, cyclic) = graph.lowest_id_order(&graph.inputs().iter().copied().collect());
    assert!(cyclic.is_empty(), "a verified graph has no cycle");
    order
}

fn dtype_to_wire(d: DType) -> i32 {
    (match d {
        DType::F32 => wire::DType::F32,
        DType::I64 => wire::DType::I64,
        DType::Bool => wire::DType::Bool,
        DType::U8 => wire::DType::U8,
        DType::I8 => wire::DType::I8,
        DType::I32 => wire::DType::I32,
    }) as i32
}

fn type_to_wire(t: &TensorType) -> wire::TensorType {
    wire::TensorType { dtype: dtype_to_wire(t.dtype), shape: u64s(&t.shape) }
}

fn u64s(v: &[usize]) -> Vec<u64> {
    v.iter().map(|&x| x as u64).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn weight_to_wire(t: &Tensor) -> wire::Weight {
    wire::Weight { dtype: dtype_to_wire(t.dtype()), shape: u64s(t.shape()), data: t.data().to_le_bytes() }
}

fn quant_to_wire(p: &QuantParams, to: i32) -> wire::Quant {
    wire::Quant {
        to,
        per_axis: p.axis.is_some(),
        axis: p.axis.unwrap_or(0) as u64,
        scales: bits(&p.scales),
        zero_points: p.zero_points.clone(),
    }
}

fn pool_to_wire(p: &PoolAttrs) -> wire::Pool {
    wire::Pool {
        kernel: u64s(&p.kernel),
        strides: u64s(&p.strides),
        dilations: u64s(&p.dilations),
        pads: u64s(&p.pads),
        ceil_mode: p.ceil_mode,
    }
}

fn op_to_wire(graph: &Graph, op: &Op, weights: &mut Vec<wire::Weight>) -> wire::OpKind {
    use wire::OpKind as K;
    let e = wire::Empty {};
    match op {
        Op::Input { .. } => unreachable!("graph inputs are stored apart from nodes"),
        Op::Weight(id) => {
            let t = graph.weights().get(*id).expect("a verified graph's weight ids exist");
            weights.push(weight_to_wire(t));
            K::Weight(wire::WeightRef { index: (weights.len() - 1) as u32 })
        }
        Op::Conv(a) => K::Conv(wire::Conv {
            kernel: u64s(&a.kernel),
            strides: u64s(&a.strides),
            dilations: u64s(&a.dilations),
            pads: u64s(&a.pads),
            group: a.group as u64,
            algo: match a.algo {
                ConvAlgo::Direct => 0,
                ConvAlgo::Winograd2 => 1,
                ConvAlgo::Winograd4 => 2,
            },
        }),
        Op::ConvTranspose(a) => K::ConvTranspose(wire::ConvTranspose {
            kernel: u64s(&a.kernel),
            strides: u64s(&a.strides),
            dilations: u64s(&a.dilations),
            pads: u64s(&a.pads),
            output_padding: u64s(&a.output_padding),
            group: a.group as u64,
        }),
        Op::BatchNorm { epsilon } => K::BatchNorm(wire::BatchNorm { epsilon: epsilon.to_bits() }),
        Op::Unary(u) => {
            use wire::UnaryKind as U;
            K::Unary(wire::Unary {
                kind: Some(match *u {
                    UnaryOp::Relu => U::Relu(e),
                    UnaryOp::LeakyRelu { alpha } => U::LeakyRelu(wire::LeakyRelu { alpha: alpha.to_bits() }),
                    UnaryOp::Clip { min, max } => U::Clip(wire::Clip { min: min.to_bits(), max: max.to_bits() }),
                    UnaryOp::Sigmoid => U::Sigmoid(e),
                    UnaryOp::HardSigmoid { alpha, beta } => {
                        U::HardSigmoid(wire::HardSigmoid { alpha: alpha.to_bits(), beta: beta.to_bits() })
                    }
                    UnaryOp::HardSwish => U::HardSwish(e),
                    UnaryOp::Swish { beta } => U::Swish(wire::Swish { beta: beta.to_bits() }),
                    UnaryOp::Tanh => U::Tanh(e),
                    UnaryOp::Exp => U::Exp(e),
                    UnaryOp::Log => U::Log(e),
                    UnaryOp::Erf => U::Erf(e),
                    UnaryOp::Sqrt => U::Sqrt(e),
                    UnaryOp::Reciprocal => U::Reciprocal(e),
                    UnaryOp::Neg => U::Neg(e),
                    UnaryOp::Abs => U::Abs(e),
                    UnaryOp::Floor => U::Floor(e),
                    UnaryOp::Ceil => U::Ceil(e),
                }),
            })
        }
        Op::Binary(b) => {
            use wire::BinaryKind as B;
            let kind = match b {
                BinaryOp::Add => B::Add,
                BinaryOp::Sub => B::Sub,
                BinaryOp::Mul => B::Mul,
                BinaryOp::Div => B::Div,
                BinaryOp::Max => B::Max,
                BinaryOp::Min => B::Min,
                BinaryOp::Pow => B::Pow,
                BinaryOp::PRelu => B::PRelu,
                BinaryOp::Equal => B::Equal,
                BinaryOp::Less => B::Less,
                BinaryOp::Greater => B::Greater,
            };
            K::Binary(wire::Binary { kind: kind as i32 })
        }
        Op::Where => K::Where(e),
        Op::MaxPool(p) => K::MaxPool(pool_to_wire(p)),
        Op::AvgPool { pool, count_include_pad } => {
            K::AvgPool(wire::AvgPool { pool: Some(pool_to_wire(pool)), count_include_pad: *count_include_pad })
        }
        Op::GlobalAvgPool => K::GlobalAvgPool(e),
        Op::GlobalMaxPool => K::GlobalMaxPool(e),
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            K::Gemm(wire::Gemm { alpha: alpha.to_bits(), beta: beta.to_bits(), trans_a: *trans_a, trans_b: *trans_b })
        }
        Op::MatMul => K::MatMul(e),
        Op::Lookup => K::Lookup(e),
        Op::Resize(a) => K::Resize(resize_to_wire(a)),
        Op::Concat { axis } => K::Concat(wire::Axis { axis: *axis as u64 }),
        Op::Split { axis, sizes } => K::Split(wire::Split { axis: *axis as u64, sizes: u64s(sizes) }),
        Op::Reshape { shape } => K::Reshape(wire::Shape { shape: u64s(shape) }),
        Op::Transpose { perm } => K::Transpose(wire::Transpose { perm: u64s(perm) }),
        Op::Slice { axes } => K::Slice(wire::Slice {
            axes: axes
                .iter()
                .map(|a| wire::SliceAxis { axis: a.axis as u64, start: a.start, end: a.end, step: a.step })
                .collect(),
        }),
        Op::Gather { axis } => K::Gather(wire::Axis { axis: *axis as u64 }),
        Op::Expand { shape } => K::Expand(wire::Shape { shape: u64s(shape) }),
        Op::Cast { to } => K::Cast(wire::Cast { to: dtype_to_wire(*to) }),
        Op::Quantize { params, to } => K::Quantize(quant_to_wire(params, dtype_to_wire(*to))),
        Op::Dequantize(params) => K::Dequantize(quant_to_wire(params, wire::DType::Unset as i32)),
        Op::Softmax { axis, flatten } => K::Softmax(wire::Softmax { axis: *axis as u64, flatten: *flatten }),
        Op::Pad { pads, mode, value } => {
            let mode = match mode {
                PadMode::Constant => wire::PadMode::Constant,
                PadMode::Reflect => wire::PadMode::Reflect,
                PadMode::Edge => wire::PadMode::Edge,
                PadMode::Wrap => wire::PadMode::Wrap,
            };
            K::Pad(wire::Pad { pads: pads.clone(), mode: mode as i32, value: value.to_bits() })
        }
        Op::Reduce { kind, axes, keepdims } => {
            use wire::ReduceKind as R;
            let kind = match kind {
                ReduceKind::Mean => R::Mean,
                ReduceKind::Sum => R::Sum,
                ReduceKind::Max => R::Max,
                ReduceKind::Min => R::Min,
                ReduceKind::Prod => R::Prod,
                ReduceKind::L1 => R::L1,
                ReduceKind::L2 => R::L2,
                ReduceKind::SumSquare => R::SumSquare,
                ReduceKind::LogSum => R::LogSum,
                ReduceKind::LogSumExp => R::LogSumExp,
            };
            K::Reduce(wire::Reduce { kind: kind as i32, axes: u64s(axes), keepdims: *keepdims })
        }
        Op::ArgReduce { max, axis, keepdims, select_last_index } => K::ArgReduce(wire::ArgReduce {
            max: *max,
            axis: *axis as u64,
            keepdims: *keepdims,
            select_last_index: *select_last_index,
        }),
        Op::Fused(f) => {
            let act = f.act.map(|a| match op_to_wire(graph, &Op::Unary(a), weights) {
                K::Unary(u) => u,
                _ => unreachable!("a unary op encodes as a unary"),
            });
            let base = wire::Op { kind: Some(op_to_wire(graph, &f.base, weights)) };
            K::Fused(Box::new(wire::Fused { base: Some(Box::new(base)), act, residual: f.residual }))
        }
        Op::QLinear(q) => {
            let base = wire::Op { kind: Some(op_to_wire(graph, &q.base, weights)) };
            let unset = wire::DType::Unset as i32;
            let (out, out_params) = match &q.out {
                QLinearOut::I32 => (wire::DType::I32 as i32, None),
                QLinearOut::F32 => (wire::DType::F32 as i32, None),
                QLinearOut::Quantized { params, to } => (dtype_to_wire(*to), Some(quant_to_wire(params, unset))),
            };
            let (lo, hi) = q.clamp.unwrap_or_default();
            K::QLinear(Box::new(wire::QLinear {
                base: Some(Box::new(base)),
                x: Some(quant_to_wire(&q.x, unset)),
                w: Some(quant_to_wire(&q.w, unset)),
                out,
                out_params,
                has_clamp: q.clamp.is_some(),
                clamp_lo: lo,
                clamp_hi: hi,
            }))
        }
    }
}

fn resize_to_wire(a: &ResizeAttrs) -> wire::Resize {
    let e = wire::Empty {};
    let mode = match a.mode {
        ResizeMode::Nearest => wire::ResizeMode::Nearest(e),
        ResizeMode::Linear => wire::ResizeMode::Linear(e),
        ResizeMode::Cubic { a, exclude_outside } => {
            wire::ResizeMode::Cubic(wire::Cubic { a: a.to_bits(), exclude_outside })
        }
    };
    let coord = match &a.coord {
        CoordTransform::HalfPixel => wire::Coord::HalfPixel(e),
        CoordTransform::HalfPixelSymmetric => wire::Coord::HalfPixelSymmetric(e),
        CoordTransform::PytorchHalfPixel => wire::Coord::PytorchHalfPixel(e),
        CoordTransform::AlignCorners => wire::Coord::AlignCorners(e),
        CoordTransform::Asymmetric => wire::Coord::Asymmetric(e),
        CoordTransform::TfHalfPixelForNn => wire::Coord::TfHalfPixelForNn(e),
        CoordTransform::TfCropAndResize { roi, extrapolation } => wire::Coord::TfCropAndResize(wire::TfCropAndResize {
            roi: bits(roi),
            extrapolation: extrapolation.to_bits(),
        }),
    };
    let nearest = match a.nearest {
        NearestMode::RoundPreferFloor => wire::NearestMode::RoundPreferFloor,
        NearestMode::RoundPreferCeil => wire::NearestMode::RoundPreferCeil,
        NearestMode::Floor => wire::NearestMode::Floor,
        NearestMode::Ceil => wire::NearestMode::Ceil,
    };
    wire::Resize {
        mode: Some(mode),
        coord: Some(coord),
        nearest: nearest as i32,
        scales: bits(&a.scales),
        out_shape: u64s(&a.out_shape),
    }
}

fn check_string(at: impl FnOnce() -> String, s: &str) -> Result<()> {
    if s.len() > MAX_STRING {
        return Err(ArtifactError::BadString {
            at: at(),
            reason: format!("string of {} bytes exceeds the limit of {MAX_STRING}", s.len()),
        });
    }
    Ok(())
}

fn dtype_from_wire(at: impl FnOnce() -> String, field: &'static str, v: i32) -> Result<DType> {
    match wire::DType::try_from(v) {
        Ok(wire::DType::F32) => Ok(DType::F32),
        Ok(wire::DType::I64) => Ok(DType::I64),
        Ok(wire::DType::Bool) => Ok(DType::Bool),
        Ok(wire::DType::U8) => Ok(DType::U8),
        Ok(wire::DType::I8) => Ok(DType::I8),
        Ok(wire::DType::I32) => Ok(DType::I32),
        _ => Err(ArtifactError::UnknownValue { at: at(), field, value: v }),
    }
}

/// A shape within the limits: rank, each dimension, and the element count.
fn shape_from_wire(at: impl Fn() -> String, shape: &[u64]) -> Result<Vec<usize>> {
    let bad = |reason: String| ArtifactError::BadShape { at: at(), shape: shape.to_vec(), reason };
    if shape.len() > MAX_RANK {
        return Err(bad(format!("rank {} exceeds the limit of {MAX_RANK}", shape.len())));
    }
    if let Some((i, d)) = shape.iter().enumerate().find(|&(_, &d)| d > MAX_DIM) {
        return Err(bad(format!("dimension {i} is {d}, more than the limit of {MAX_DIM}")));
    }
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    match checked_numel(&dims) {
        Some(n) if n <= MAX_ELEMENTS => Ok(dims),
        Some(n) => Err(bad(format!("{n} elements exceed the limit of {MAX_ELEMENTS}"))),
        None => Err(bad("the element count overflows".into())),
    }
}

fn type_from_wire(at: impl Fn() -> String, t: &wire::TensorType) -> Result<TensorType> {
    let dtype = dtype_from_wire(&at, "dtype", t.dtype)?;
    Ok(TensorType::new(dtype, shape_from_wire(at, &t.shape)?))
}

fn weight_from_wire(index: usize, w: wire::Weight) -> Result<Tensor> {
    let at = || format!("weight #{index}");
    let dtype = dtype_from_wire(at, "dtype", w.dtype)?;
    let shape = shape_from_wire(at, &w.shape)?;
    // Cannot overflow: at most 2^31 elements of at most 8 bytes.
    let expected = (checked_numel(&shape).expect("bounded above") * dtype.size_bytes()) as u64;
    if w.data.len() as u64 != expected {
        return Err(ArtifactError::WeightSize { index, dtype, shape, expected, actual: w.data.len() as u64 });
    }
    if dtype == DType::Bool
        && let Some((i, b)) = w.data.iter().enumerate().find(|&(_, &b)| b > 1)
    {
        return Err(ArtifactError::BadWeight {
            index,
            reason: format!("bool element {i} is the byte {b}, not 0 or 1"),
        });
    }
    let data = TensorData::from_le_bytes(dtype, &w.data).expect("the byte length was checked against the dtype");
    Ok(Tensor::new(shape, data).expect("the byte length was checked against the shape"))
}

fn from_wire(msg: wire::Artifact) -> Result<(Graph, ArtifactMeta)> {
    check_string(|| "graph name".into(), &msg.name)?;
    let meta = ArtifactMeta {
        provenance: match msg.provenance {
            None => None,
            Some(p) => {
                check_string(|| "provenance: cnnc_version".into(), &p.cnnc_version)?;
                check_string(|| "provenance: opt_level".into(), &p.opt_level)?;
                too_many("provenance: command-line arguments", p.args.len(), MAX_ARGS)?;
                for (i, a) in p.args.iter().enumerate() {
                    check_string(|| format!("provenance: argument {i}"), a)?;
                }
                check_string(|| "provenance: cost_table_hash".into(), &p.cost_table_hash)?;
                check_string(|| "provenance: calibration_hash".into(), &p.calibration_hash)?;
                Some(Provenance {
                    cnnc_version: p.cnnc_version,
                    opt_level: p.opt_level,
                    args: p.args,
                    cost_table_hash: p.cost_table_hash,
                    calibration_hash: p.calibration_hash,
                })
            }
        },
    };

    let mut weights: Vec<Option<Tensor>> = Vec::with_capacity(msg.weights.len());
    for (i, w) in msg.weights.into_iter().enumerate() {
        weights.push(Some(weight_from_wire(i, w)?));
    }

    let mut g = Graph::new(msg.name);
    // Per value (graph inputs, then nodes): its node and its names and output count.
    let mut values: Vec<(NodeId, usize)> = Vec::with_capacity(msg.inputs.len() + msg.nodes.len());
    let mut names: Vec<String> = Vec::with_capacity(values.capacity());
    for (i, input) in msg.inputs.into_iter().enumerate() {
        let at = || format!("graph input #{i} `{}`", input.name);
        check_string(at, &input.name)?;
        let ty = input.ty.as_ref().ok_or_else(|| ArtifactError::Missing { at: at(), field: "ty" })?;
        let ty = type_from_wire(at, ty)?;
        let v = g.add_input(input.name.clone(), ty);
        values.push((v.node, 1));
        names.push(input.name);
    }
    let n_inputs = values.len();
    let n_values = n_inputs + msg.nodes.len();

    for (k, node) in msg.nodes.into_iter().enumerate() {
        let at = || format!("node #{k} `{}`", node.name);
        check_string(at, &node.name)?;
        too_many(format!("{}: inputs", at()), node.inputs.len(), MAX_NODE_IO)?;
        too_many(format!("{}: outputs", at()), node.outputs.len(), MAX_NODE_IO)?;
        let outputs = node
            .outputs
            .iter()
            .enumerate()
            .map(|(i, t)| type_from_wire(|| format!("{}: output {i}", at()), t))
            .collect::<Result<Vec<_>>>()?;
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for (i, r) in node.inputs.iter().enumerate() {
            let bad = |reason: String| ArtifactError::BadInputRef { node: at(), input: i, reason };
            let value = r.value as usize;
            let Some(&(producer, n_out)) = values.get(value) else {
                return Err(bad(if value < n_values {
                    format!(
                        "reads value #{value} (node #{}), which is not defined before this node: nodes must be in \
                         topological order, and a reference forward (a cycle) is invalid",
                        value - n_inputs
                    )
                } else {
                    format!("reads value #{value}, but the artifact defines only {n_values} values")
                }));
            };
            if r.slot as usize >= n_out {
                return Err(bad(format!("reads output {} of `{}`, which has {n_out} output(s)", r.slot, names[value])));
            }
            inputs.push(ValueRef::new(producer, r.slot as usize));
        }
        let wire_op = node.op.as_ref().and_then(|o| o.kind.as_ref());
        let wire_op = wire_op.ok_or_else(|| ArtifactError::Missing { at: at(), field: "op" })?;
        let id = if let wire::OpKind::Weight(w) = wire_op {
            if !inputs.is_empty() {
                return Err(ArtifactError::BadInputRef {
                    node: at(),
                    input: 0,
                    reason: format!("a weight node takes no inputs, this one has {}", inputs.len()),
                });
            }
            let index = w.index as usize;
            let tensor = match weights.get_mut(index) {
                None => {
                    return Err(ArtifactError::BadAttribute {
                        node: at(),
                        op: "weight",
                        attr: "index",
                        reason: format!("weight #{index} does not exist (the artifact holds {})", weights.len()),
                    });
                }
                Some(slot) => slot.take().ok_or_else(|| ArtifactError::BadWeight {
                    index,
                    reason: format!("read by a second weight node, {}", at()),
                })?,
            };
            let id = g.add_weight(node.name.clone(), tensor).node;
            // The verifier compares the declared type with the tensor's.
            g.node_mut(id).outputs = outputs;
            id
        } else {
            let op = op_from_wire(&at, wire_op)?;
            g.add_node_typed(node.name.clone(), op, &inputs, outputs)
        };
        let n_out = g.node(id).outputs.len();
        values.push((id, n_out));
        names.push(node.name);
    }
    if let Some(index) = weights.iter().position(Option::is_some) {
        return Err(ArtifactError::BadWeight { index, reason: "no weight node reads it".into() });
    }

    for (index, out) in msg.outputs.into_iter().enumerate() {
        let bad = |reason: String| ArtifactError::BadOutput { index, name: out.name.clone(), reason };
        check_string(|| format!("graph output #{index}"), &out.name)?;
        let r = out.value.ok_or_else(|| bad("missing field `value`".into()))?;
        let Some(&(producer, n_out)) = values.get(r.value as usize) else {
            return Err(bad(format!("reads value #{}, but the artifact defines only {n_values} values", r.value)));
        };
        if r.slot as usize >= n_out {
            return Err(bad(format!(
                "reads output {} of `{}`, which has {n_out} output(s)",
                r.slot, names[r.value as usize]
            )));
        }
        g.add_output(out.name, ValueRef::new(producer, r.slot as usize));
    }
    Ok((g, meta))
}

/// Decodes one op, checking attribute lengths, ranges and enum values.
fn op_from_wire(at: &dyn Fn() -> String, kind: &wire::OpKind) -> Result<Op> {
    use wire::OpKind as K;
    let op_name = wire_op_name(kind);
    let cx = AttrCx { at, op: op_name };
    Ok(match kind {
        K::Weight(_) => unreachable!("weights are decoded by the caller"),
        K::Conv(c) => {
            let (kernel, strides, dilations, pads) = cx.window(&c.kernel, &c.strides, &c.dilations, &c.pads)?;
            let algo = match c.algo {
                0 => ConvAlgo::Direct,
                1 => ConvAlgo::Winograd2,
                2 => ConvAlgo::Winograd4,
                v => return Err(cx.bad("algo", format!("{v} is not 0 (direct), 1 (winograd-f2) or 2 (winograd-f4)"))),
            };
            Op::Conv(ConvAttrs { kernel, strides, dilations, pads, group: cx.group(c.group)?, algo })
        }
        K::ConvTranspose(c) => {
            let (kernel, strides, dilations, pads) = cx.window(&c.kernel, &c.strides, &c.dilations, &c.pads)?;
            let output_padding = cx.dims("output_padding", &c.output_padding, kernel.len())?;
            if output_padding.len() != kernel.len() {
                return Err(cx.bad(
                    "output_padding",
                    format!("has {} entries, kernel has {}", output_padding.len(), kernel.len()),
                ));
            }
            Op::ConvTranspose(ConvTransposeAttrs {
                kernel,
                strides,
                dilations,
                pads,
                output_padding,
                group: cx.group(c.group)?,
            })
        }
        K::BatchNorm(b) => Op::BatchNorm { epsilon: f32::from_bits(b.epsilon) },
        K::Unary(u) => {
            use wire::UnaryKind as U;
            let Some(u) = u.kind else { return Err(ArtifactError::Missing { at: at(), field: "unary kind" }) };
            Op::Unary(match u {
                U::Relu(_) => UnaryOp::Relu,
                U::LeakyRelu(l) => UnaryOp::LeakyRelu { alpha: f32::from_bits(l.alpha) },
                U::Clip(c) => UnaryOp::Clip { min: f32::from_bits(c.min), max: f32::from_bits(c.max) },
                U::Sigmoid(_) => UnaryOp::Sigmoid,
                U::HardSigmoid(h) => {
                    UnaryOp::HardSigmoid { alpha: f32::from_bits(h.alpha), beta: f32::from_bits(h.beta) }
                }
                U::HardSwish(_) => UnaryOp::HardSwish,
                U::Swish(w) => UnaryOp::Swish { beta: f32::from_bits(w.beta) },
                U::Tanh(_) => UnaryOp::Tanh,
                U::Exp(_) => UnaryOp::Exp,
                U::Log(_) => UnaryOp::Log,
                U::Erf(_) => UnaryOp::Erf,
                U::Sqrt(_) => UnaryOp::Sqrt,
                U::Reciprocal(_) => UnaryOp::Reciprocal,
                U::Neg(_) => UnaryOp::Neg,
                U::Abs(_) => UnaryOp::Abs,
                U::Floor(_) => UnaryOp::Floor,
                U::Ceil(_) => UnaryOp::Ceil,
            })
        }
        K::Binary(b) => {
            use wire::BinaryKind as B;
            Op::Binary(match B::try_from(b.kind) {
                Ok(B::Add) => BinaryOp::Add,
                Ok(B::Sub) => BinaryOp::Sub,
                Ok(B::Mul) => BinaryOp::Mul,
                Ok(B::Div) => BinaryOp::Div,
                Ok(B::Max) => BinaryOp::Max,
                Ok(B::Min) => BinaryOp::Min,
                Ok(B::Pow) => BinaryOp::Pow,
                Ok(B::PRelu) => BinaryOp::PRelu,
                Ok(B::Equal) => BinaryOp::Equal,
                Ok(B::Less) => BinaryOp::Less,
                Ok(B::Greater) => BinaryOp::Greater,
                Ok(B::Unset) | Err(_) => return Err(cx.unknown("kind", b.kind)),
            })
        }
        K::Where(_) => Op::Where,
        K::MaxPool(p) => Op::MaxPool(cx.pool(p)?),
        K::AvgPool(a) => {
            let Some(p) = &a.pool else { return Err(ArtifactError::Missing { at: at(), field: "pool" }) };
            Op::AvgPool { pool: cx.pool(p)?, count_include_pad: a.count_include_pad }
        }
        K::GlobalAvgPool(_) => Op::GlobalAvgPool,
        K::GlobalMaxPool(_) => Op::GlobalMaxPool,
        K::Gemm(g) => Op::Gemm {
            alpha: f32::from_bits(g.alpha),
            beta: f32::from_bits(g.beta),
            trans_a: g.trans_a,
            trans_b: g.trans_b,
        },
        K::MatMul(_) => Op::MatMul,
        K::Lookup(_) => Op::Lookup,
        K::Resize(r) => Op::Resize(cx.resize(r)?),
        K::Concat(a) => Op::Concat { axis: cx.axis("axis", a.axis)? },
        K::Split(s) => {
            let sizes = cx.dims("sizes", &s.sizes, MAX_NODE_IO)?;
            if sizes.is_empty() {
                return Err(cx.bad("sizes", "is empty; a split has at least one output".into()));
            }
            Op::Split { axis: cx.axis("axis", s.axis)?, sizes }
        }
        K::Reshape(s) => Op::Reshape { shape: cx.dims("shape", &s.shape, MAX_RANK)? },
        K::Transpose(t) => {
            let perm = cx.dims("perm", &t.perm, MAX_RANK)?;
            if let Some(&p) = perm.iter().find(|&&p| p >= MAX_RANK) {
                return Err(cx.bad("perm", format!("entry {p} exceeds the maximum rank {MAX_RANK}")));
            }
            Op::Transpose { perm }
        }
        K::Slice(s) => {
            if s.axes.len() > MAX_RANK {
                return Err(cx.bad("axes", format!("{} entries exceed the maximum rank {MAX_RANK}", s.axes.len())));
            }
            let axes = s
                .axes
                .iter()
                .map(|a| {
                    if a.step == 0 {
                        return Err(cx.bad("axes", format!("axis {}: step is 0", a.axis)));
                    }
                    Ok(SliceAxis {
                        axis: cx.axis("axes", a.axis)?,
                        start: cx.signed("axes", a.start)?,
                        end: cx.signed("axes", a.end)?,
                        step: cx.signed("axes", a.step)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Op::Slice { axes }
        }
        K::Gather(a) => Op::Gather { axis: cx.axis("axis", a.axis)? },
        K::Expand(s) => Op::Expand { shape: cx.dims("shape", &s.shape, MAX_RANK)? },
        K::Cast(c) => Op::Cast { to: dtype_from_wire(at, "to", c.to)? },
        K::Quantize(q) => Op::Quantize { params: cx.quant(q)?, to: dtype_from_wire(at, "to", q.to)? },
        K::Dequantize(q) => Op::Dequantize(cx.quant(q)?),
        K::Softmax(s) => Op::Softmax { axis: cx.axis("axis", s.axis)?, flatten: s.flatten },
        K::Pad(p) => {
            if p.pads.len() > 2 * MAX_RANK {
                return Err(
                    cx.bad("pads", format!("{} entries exceed twice the maximum rank {MAX_RANK}", p.pads.len()))
                );
            }
            let pads = p.pads.iter().map(|&v| cx.signed("pads", v)).collect::<Result<Vec<_>>>()?;
            let mode = match wire::PadMode::try_from(p.mode) {
                Ok(wire::PadMode::Constant) => PadMode::Constant,
                Ok(wire::PadMode::Reflect) => PadMode::Reflect,
                Ok(wire::PadMode::Edge) => PadMode::Edge,
                Ok(wire::PadMode::Wrap) => PadMode::Wrap,
                Ok(wire::PadMode::Unset) | Err(_) => return Err(cx.unknown("mode", p.mode)),
            };
            Op::Pad { pads, mode, value: f32::from_bits(p.value) }
        }
        K::Reduce(r) => {
            use wire::ReduceKind as R;
            let kind = match R::try_from(r.kind) {
                Ok(R::Mean) => ReduceKind::Mean,
                Ok(R::Sum) => ReduceKind::Sum,
                Ok(R::Max) => ReduceKind::Max,
                Ok(R::Min) => ReduceKind::Min,
                Ok(R::Prod) => ReduceKind::Prod,
                Ok(R::L1) => ReduceKind::L1,
                Ok(R::L2) => ReduceKind::L2,
                Ok(R::SumSquare) => ReduceKind::SumSquare,
                Ok(R::LogSum) => ReduceKind::LogSum,
                Ok(R::LogSumExp) => ReduceKind::LogSumExp,
                Ok(R::Unset) | Err(_) => return Err(cx.unknown("kind", r.kind)),
            };
            if r.axes.len() > MAX_RANK {
                return Err(cx.bad("axes", format!("{} entries exceed the maximum rank {MAX_RANK}", r.axes.len())));
            }
            let axes = r.axes.iter().map(|&a| cx.axis("axes", a)).collect::<Result<Vec<_>>>()?;
            Op::Reduce { kind, axes, keepdims: r.keepdims }
        }
        K::ArgReduce(a) => Op::ArgReduce {
            max: a.max,
            axis: cx.axis("axis", a.axis)?,
            keepdims: a.keepdims,
            select_last_index: a.select_last_index,
        },
        K::Fused(f) => {
            // The base must be a conv, gemm or matmul, which also bounds the nesting to one.
            let base = match f.base.as_ref().and_then(|b| b.kind.as_ref()) {
                Some(k @ (K::Conv(_) | K::Gemm(_) | K::MatMul(_))) => op_from_wire(at, k)?,
                Some(k) => {
                    let name = wire_op_name(k);
                    return Err(cx.bad("base", format!("is a {name}; a fused op's base is a conv, gemm or matmul")));
                }
                None => return Err(ArtifactError::Missing { at: at(), field: "fused base" }),
            };
            let act = match &f.act {
                Some(u) => match op_from_wire(at, &K::Unary(*u))? {
                    Op::Unary(u) => Some(u),
                    _ => unreachable!("a unary decodes as a unary"),
                },
                None => None,
            };
            Op::Fused(Box::new(Fused { base, act, residual: f.residual }))
        }
        K::QLinear(q) => {
            // The base must be a conv, gemm or matmul, which also bounds the nesting to one.
            let base = match q.base.as_ref().and_then(|b| b.kind.as_ref()) {
                Some(k @ (K::Conv(_) | K::Gemm(_) | K::MatMul(_))) => op_from_wire(at, k)?,
                Some(k) => {
                    let name = wire_op_name(k);
                    return Err(cx.bad("base", format!("is a {name}; a quantized op's base is a conv, gemm or matmul")));
                }
                None => return Err(ArtifactError::Missing { at: at(), field: "qlinear base" }),
            };
            let quant = |field: &'static str, p: &Option<wire::Quant>| match p {
                Some(p) => cx.quant(p),
                None => Err(ArtifactError::Missing { at: at(), field }),
            };
            let out = match dtype_from_wire(at, "out", q.out)? {
                DType::I32 => QLinearOut::I32,
                DType::F32 => QLinearOut::F32,
                to @ (DType::U8 | DType::I8) => {
                    QLinearOut::Quantized { params: quant("qlinear out_params", &q.out_params)?, to }
                }
                other => return Err(cx.bad("out", format!("is {other}; expected i32, f32, u8 or i8"))),
            };
            Op::QLinear(Box::new(QLinear {
                base,
                x: quant("qlinear x", &q.x)?,
                w: quant("qlinear w", &q.w)?,
                out,
                clamp: q.has_clamp.then_some((q.clamp_lo, q.clamp_hi)),
            }))
        }
    })
}

/// The IR op name of a wire op, for messages.
fn wire_op_name(kind: &wire::OpKind) -> &'static str {
    use wire::OpKind as K;
    match kind {
        K::Weight(_) => "weight",
        K::Conv(_) => "conv",
        K::ConvTranspose(_) => "conv-transpose",
        K::BatchNorm(_) => "batchnorm",
        K::Unary(_) => "unary",
        K::Binary(_) => "binary",
        K::Where(_) => "where",
        K::MaxPool(_) => "max-pool",
        K::AvgPool(_) => "avg-pool",
        K::GlobalAvgPool(_) => "global-avg-pool",
        K::GlobalMaxPool(_) => "global-max-pool",
        K::Gemm(_) => "gemm",
        K::MatMul(_) => "matmul",
        K::Resize(_) => "resize",
        K::Concat(_) => "concat",
        K::Split(_) => "split",
        K::Reshape(_) => "reshape",
        K::Transpose(_) => "transpose",
        K::Slice(_) => "slice",
        K::Gather(_) => "gather",
        K::Expand(_) => "expand",
        K::Cast(_) => "cast",
        K::Softmax(_) => "softmax",
        K::Pad(_) => "pad",
        K::Reduce(_) => "reduce",
        K::ArgReduce(_) => "arg-reduce",
        K::Fused(_) => "fused",
        K::Quantize(_) => "quantize",
        K::Dequantize(_) => "dequantize",
        K::QLinear(_) => "qlinear",
        K::Lookup(_) => "lookup",
    }
}

/// Kernel, strides, dilations and pads of a sliding window.
type WindowAttrs = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>);

/// The node whose attributes are being decoded, for errors.
struct AttrCx<'a> {
    at: &'a dyn Fn() -> String,
    op: &'static str,
}

impl AttrCx<'_> {
    fn bad(&self, attr: &'static str, reason: String) -> ArtifactError {
        ArtifactError::BadAttribute { node: (self.at)(), op: self.op, attr, reason }
    }

    fn unknown(&self, field: &'static str, value: i32) -> ArtifactError {
        ArtifactError::UnknownValue { at: format!("{} ({})", (self.at)(), self.op), field, value }
    }

    /// Non-negative integers, at most `max_len` of them, each at most [`MAX_DIM`].
    fn dims(&self, attr: &'static str, v: &[u64], max_len: usize) -> Result<Vec<usize>> {
        if v.len() > max_len {
            return Err(self.bad(attr, format!("{} entries exceed the limit of {max_len}", v.len())));
        }
        if let Some((i, x)) = v.iter().enumerate().find(|&(_, &x)| x > MAX_DIM) {
            return Err(self.bad(attr, format!("entry {i} is {x}, more than the limit of {MAX_DIM}")));
        }
        Ok(v.iter().map(|&x| x as usize).collect())
    }

    fn axis(&self, attr: &'static str, a: u64) -> Result<usize> {
        if a >= MAX_RANK as u64 {
            return Err(self.bad(attr, format!("axis {a} is out of range for the maximum rank {MAX_RANK}")));
        }
        Ok(a as usize)
    }

    /// Axis, and scales and zero points of equal length within [`MAX_DIM`] entries; their
    /// values are checked by inference.
    fn quant(&self, q: &wire::Quant) -> Result<QuantParams> {
        let axis = if q.per_axis { Some(self.axis("axis", q.axis)?) } else { None };
        if q.scales.len() as u64 > MAX_DIM || q.scales.len() != q.zero_points.len() {
            return Err(
                self.bad("scales", format!("{} scales and {} zero points", q.scales.len(), q.zero_points.len()))
            );
        }
        Ok(QuantParams {
            axis,
            scales: q.scales.iter().map(|&b| f32::from_bits(b)).collect(),
            zero_points: q.zero_points.clone(),
        })
    }

    fn signed(&self, attr: &'static str, v: i64) -> Result<i64> {
        if v.unsigned_abs() > MAX_DIM {
            return Err(self.bad(attr, format!("{v} is outside ±{MAX_DIM}")));
        }
        Ok(v)
    }

    fn group(&self, g: u64) -> Result<usize> {
        if g == 0 {
            return Err(self.bad("group", "is 0, must be ≥ 1".into()));
        }
        Ok(self.dims("group", &[g], 1)?[0])
    }

    /// Kernel, strides and dilations with one entry per spatial axis, each ≥ 1; pads with two.
    fn window(&self, kernel: &[u64], strides: &[u64], dilations: &[u64], pads: &[u64]) -> Result<WindowAttrs> {
        let ns = kernel.len();
        if ns > MAX_RANK - 2 {
            return Err(self.bad("kernel", format!("{ns} spatial axes exceed the limit of {}", MAX_RANK - 2)));
        }
        for (attr, v, len) in [("strides", strides, ns), ("dilations", dilations, ns), ("pads", pads, 2 * ns)] {
            if v.len() != len {
                return Err(self.bad(attr, format!("has {} entries, expected {len} for a {ns}-entry kernel", v.len())));
            }
        }
        for (attr, v) in [("kernel", kernel), ("strides", strides), ("dilations", dilations)] {
            if let Some(i) = v.iter().position(|&x| x == 0) {
                return Err(self.bad(attr, format!("entry {i} is 0, must be ≥ 1")));
            }
        }
        Ok((
            self.dims("kernel", kernel, ns)?,
            self.dims("strides", strides, ns)?,
            self.dims("dilations", dilations, ns)?,
            self.dims("pads", pads, 2 * ns)?,
        ))
    }

    fn pool(&self, p: &wire::Pool) -> Result<PoolAttrs> {
        let (kernel, strides, dilations, pads) = self.window(&p.kernel, &p.strides, &p.dilations, &p.pads)?;
        Ok(PoolAttrs { kernel, strides, dilations, pads, ceil_mode: p.ceil_mode })
    }

    fn resize(&self, r: &wire::Resize) -> Result<ResizeAttrs> {
        let at = self.at;
        let mode = match r.mode {
            None => return Err(ArtifactError::Missing { at: at(), field: "mode" }),
            Some(wire::ResizeMode::Nearest(_)) => ResizeMode::Nearest,
            Some(wire::ResizeMode::Linear(_)) => ResizeMode::Linear,
            Some(wire::ResizeMode::Cubic(c)) => {
                ResizeMode::Cubic { a: f32::from_bits(c.a), exclude_outside: c.exclude_outside }
            }
        };
        let coord = match &r.coord {
            None => return Err(ArtifactError::Missing { at: at(), field: "coord" }),
            Some(wire::Coord::HalfPixel(_)) => CoordTransform::HalfPixel,
            Some(wire::Coord::HalfPixelSymmetric(_)) => CoordTransform::HalfPixelSymmetric,
            Some(wire::Coord::PytorchHalfPixel(_)) => CoordTransform::PytorchHalfPixel,
            Some(wire::Coord::AlignCorners(_)) => CoordTransform::AlignCorners,
            Some(wire::Coord::Asymmetric(_)) => CoordTransform::Asymmetric,
            Some(wire::Coord::TfHalfPixelForNn(_)) => CoordTransform::TfHalfPixelForNn,
            Some(wire::Coord::TfCropAndResize(t)) => {
                if t.roi.len() > 2 * MAX_RANK {
                    return Err(self.bad("roi", format!("{} entries exceed twice the maximum rank", t.roi.len())));
                }
                CoordTransform::TfCropAndResize {
                    roi: t.roi.iter().map(|&b| f32::from_bits(b)).collect(),
                    extrapolation: f32::from_bits(t.extrapolation),
                }
            }
        };
        let nearest = match wire::NearestMode::try_from(r.nearest) {
            Ok(wire::NearestMode::RoundPreferFloor) => NearestMode::RoundPreferFloor,
            Ok(wire::NearestMode::RoundPreferCeil) => NearestMode::RoundPreferCeil,
            Ok(wire::NearestMode::Floor) => NearestMode::Floor,
            Ok(wire::NearestMode::Ceil) => NearestMode::Ceil,
            Ok(wire::NearestMode::Unset) | Err(_) => return Err(self.unknown("nearest", r.nearest)),
        };
        if r.scales.len() > MAX_RANK {
            return Err(self.bad("scales", format!("{} entries exceed the maximum rank {MAX_RANK}", r.scales.len())));
        }
        Ok(ResizeAttrs {
            mode,
            coord,
            nearest,
            scales: r.scales.iter().map(|&b| f32::from_bits(b)).collect(),
            out_shape: self.dims("out_shape", &r.out_shape, MAX_RANK)?,
        })
    }
}
