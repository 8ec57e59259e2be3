//! cnnc's graph IR: typed ops with attributes over static shapes, a weight store, shape
//! inference, a verifier that reports every problem at once, and a text form that
//! round-trips (the currency of snapshot tests).
//!
//! `ir` knows nothing of ONNX, egg or Cranelift.

mod graph;
mod infer;
mod macs;
mod op;
mod scalar;
mod tensor;
mod text;
mod verify;

// The artifact is a namespace of its own (`artifact::encode`, `artifact::decode`, `artifact::wire`).
pub mod artifact;

pub use graph::{CycleError, Edge, Graph, GraphOutput, Node, NodeId, ValueRef, WeightStore};
pub use infer::{InferError, broadcast_shapes, infer_types};
pub use macs::{node_macs, node_multiplies};
pub use op::{
    BinaryOp, ConvAlgo, ConvAttrs, ConvTransposeAttrs, CoordTransform, Fused, NearestMode, Op, PadMode, PoolAttrs,
    QLinear, QLinearOut, QuantParams, ReduceKind, ResizeAttrs, ResizeMode, SliceAxis, UnaryOp, WeightId,
};
pub use scalar::erf;
pub use tensor::{BatchError, DType, ShapeMismatch, Tensor, TensorData, TensorType, checked_numel, numel};
pub use text::ParseError;
pub use verify::{VerifiedGraph, VerifyError, VerifyErrors, check, verify};
