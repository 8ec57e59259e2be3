//! Reference interpreter: plain, obviously-correct loops accumulating in f64.
//!
//! Every op follows the ONNX specification (opsets 1–28) and, where the specification leaves
//! room, onnxruntime's CPU kernels. Reductions (conv, gemm, matmul, pooling averages, softmax
//! sums, means, batchnorm) accumulate in f64 and round once. Nothing here panics on a graph
//! that passed `ir::verify`: every precondition an op relies on is checked and reported.

mod conv;
mod elementwise;
pub(crate) use cnnc_ir::erf;
mod matmul;
mod pool;
mod qlinear;
mod quant;
mod reduce;
mod resize;
// The JIT's resize builds its tap tables with the very same coordinate arithmetic.
pub(crate) use resize::{source_coord as resize_source_coord, taps as resize_taps};
mod shape_ops;
mod window;

use std::borrow::Cow;
use std::collections::HashMap;

use cnnc_ir::{BinaryOp, Op, Tensor, TensorData, TensorType, ValueRef, VerifiedGraph};

/// Why a graph or op could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("expected {expected} input(s), got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("input {index} (`{name}`): expected {expected}, got {got}")]
    InputType { index: usize, name: String, expected: TensorType, got: TensorType },
    #[error("node `{node}` ({op}): {reason}")]
    Node { node: String, op: String, reason: String },
    /// The graph asks for more activation memory than the budget allows (`crate::budget`).
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
}

/// Runs `graph` on `inputs` (one per graph input, in order) and returns its outputs in order.
///
/// Nodes run in topological order; an intermediate value is dropped right after its last
/// consumer ran, so peak memory is the widest live set rather than the sum of all values.
///
/// A graph over the activation budget ([`budget`](crate::budget)) is refused before any node runs.
pub fn run_reference(graph: &VerifiedGraph, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
    crate::budget::check(graph)?;
    let input_ids = graph.inputs();
    if inputs.len() != input_ids.len() {
        return Err(RunError::InputCount { expected: input_ids.len(), got: inputs.len() });
    }
    for (index, (&id, tensor)) in input_ids.iter().zip(inputs).enumerate() {
        let node = graph.node(id);
        let got = tensor.ty();
        if node.outputs.first() != Some(&got) {
            let expected = node.outputs.first().cloned().unwrap_or(TensorType::f32(vec![]));
            return Err(RunError::InputType { index, name: node.name.clone(), expected, got });
        }
    }
    let order = graph.topo_order().map_err(|e| RunError::Node {
        node: e.node,
        op: "?".into(),
        reason: "graph has a cycle".into(),
    })?;

    // Graph outputs count as uses that are never released, so they survive to the end.
    let mut uses: HashMap<ValueRef, usize> = HashMap::new();
    for &id in &order {
        for v in graph.node_inputs(id) {
            *uses.entry(v).or_default() += 1;
        }
    }
    for o in graph.outputs() {
        *uses.entry(o.value).or_default() += 1;
    }

    let mut values: HashMap<ValueRef, Cow<'_, Tensor>> = HashMap::new();
    for id in order {
        let node = graph.node(id);
        let node_err =
            |reason: String| RunError::Node { node: node.name.clone(), op: node.op.name().to_string(), reason };
        let results: Vec<Cow<'_, Tensor>> = match &node.op {
            Op::Input { index } => {
                let t = inputs.get(*index).ok_or_else(|| node_err(format!("no graph input {index}")))?;
                vec![Cow::Borrowed(t)]
            }
            Op::Weight(wid) => {
                let t = graph.weights().get(*wid).ok_or_else(|| node_err(format!("no weight {}", wid.0)))?;
                vec![Cow::Borrowed(t)]
            }
            op => {
                let operands = graph.node_inputs(id);
                let outs = {
                    let args = operands
                        .iter()
                        .map(|v| values.get(v).map(|t| t.as_ref()))
                        .collect::<Option<Vec<&Tensor>>>()
                        .ok_or_else(|| node_err("an input was not computed before its use".into()))?;
                    eval_op(op, &args, &node.outputs).map_err(node_err)?
                };
                for v in operands {
                    if let Some(n) = uses.get_mut(&v) {
                        *n -= 1;
                        if *n == 0 {
                            values.remove(&v);
                        }
                    }
                }
                outs.into_iter().map(Cow::Owned).collect()
            }
        };
        for (slot, t) in results.into_iter().enumerate() {
            let v = ValueRef::new(id, slot);
            if uses.get(&v).is_some_and(|&n| n > 0) {
                values.insert(v, t);
            }
        }
    }

    let mut remaining: HashMap<ValueRef, usize> = HashMap::new();
    for o in graph.outputs() {
        *remaining.entry(o.value).or_default() += 1;
    }
    let mut outputs = Vec::with_capacity(graph.outputs().len());
    for o in graph.outputs() {
        let missing = || RunError::Node {
            node: o.name.clone(),
            op: "output".into(),
            reason: "graph output was never computed".into(),
        };
        let left = remaining.get_mut(&o.value).ok_or_else(missing)?;
        *left -= 1;
        let t = if *left == 0 {
            values.remove(&o.value).ok_or_else(missing)?.into_owned()
        } else {
            values.get(&o.value).ok_or_else(missing)?.as_ref().clone()
        };
        outputs.push(t);
    }
    Ok(outputs)
}

/// Evaluates one non-source op on constant inputs; `out_types` are the inferred output types.
/// The importer uses this to fold weight-only subgraphs.
///
/// The results are checked against `out_types`: a disagreement between this interpreter and
/// shape inference is reported as an error rather than silently producing another shape.
pub fn eval_op(op: &Op, inputs: &[&Tensor], out_types: &[TensorType]) -> Result<Vec<Tensor>, String> {
    let (lo, hi) = op.arity();
    if inputs.len() < lo || inputs.len() > hi {
        return Err(format!("expected {lo}..={hi} inputs, got {}", inputs.len()));
    }
    let outputs = match op {
        Op::Input { .. } | Op::Weight(_) => {
            return Err("source ops have nothing to evaluate".into());
        }
        Op::Conv(a) => vec![conv::conv(a, inputs)?],
        Op::ConvTranspose(a) => vec![conv::conv_transpose(a, inputs)?],
        Op::BatchNorm { epsilon } => vec![reduce::batch_norm(*epsilon, inputs)?],
        Op::Unary(u) => vec![elementwise::unary(*u, inputs[0])?],
        Op::Binary(b) => vec![elementwise::binary(*b, inputs[0], inputs[1])?],
        Op::Where => vec![elementwise::where_(inputs[0], inputs[1], inputs[2])?],
        Op::MaxPool(p) => vec![pool::max_pool(p, inputs[0])?],
        Op::AvgPool { pool, count_include_pad } => vec![pool::avg_pool(pool, *count_include_pad, inputs[0])?],
        Op::GlobalAvgPool => vec![pool::global_avg_pool(inputs[0])?],
        Op::GlobalMaxPool => vec![pool::global_max_pool(inputs[0])?],
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            vec![matmul::gemm(*alpha, *beta, *trans_a, *trans_b, inputs)?]
        }
        Op::MatMul => vec![matmul::matmul(inputs[0], inputs[1])?],
        Op::Resize(a) => vec![resize::resize(a, inputs[0])?],
        Op::Concat { axis } => vec![shape_ops::concat(*axis, inputs)?],
        Op::Split { axis, sizes } => shape_ops::split(*axis, sizes, inputs[0])?,
        Op::Reshape { shape } => vec![shape_ops::reshape(shape, inputs[0])?],
        Op::Transpose { perm } => vec![shape_ops::transpose(perm, inputs[0])?],
        Op::Slice { axes } => vec![shape_ops::slice(axes, inputs[0])?],
        Op::Gather { axis } => vec![shape_ops::gather(*axis, inputs[0], inputs[1])?],
        Op::Expand { shape } => vec![shape_ops::expand(shape, inputs[0])?],
        Op::Cast { to } => vec![shape_ops::cast(*to, inputs[0])?],
        Op::Quantize { params, to } => vec![quant::quantize(params, *to, inputs[0])?],
        Op::Dequantize(params) => vec![quant::dequantize(params, inputs[0])?],
        Op::QLinear(q) => vec![qlinear::qlinear(q, inputs)?],
        Op::Lookup => vec![quant::lookup(inputs)?],
        Op::Softmax { axis, flatten } => vec![reduce::softmax(*axis, *flatten, inputs[0])?],
        Op::Pad { pads, mode, value } => vec![shape_ops::pad(pads, *mode, *value, inputs[0])?],
        Op::Reduce { kind, axes, keepdims } => vec![reduce::reduce(*kind, axes, *keepdims, inputs[0])?],
        Op::ArgReduce { max, axis, keepdims, select_last_index } => {
            vec![reduce::arg_reduce(*max, *axis, *keepdims, *select_last_index, inputs[0])?]
        }
        // Exactly the unfused ops, in order: base, `+ residual`, activation.
        Op::Fused(f) => {
            let n = f.base_inputs(inputs.len());
            let mut y = eval_op(&f.base, &inputs[..n], out_types)?.remove(0);
            if f.residual {
                y = elementwise::binary(BinaryOp::Add, &y, inputs[n])?;
            }
            if let Some(act) = f.act {
                y = elementwise::unary(act, &y)?;
            }
            vec![y]
        }
    };
    if outputs.len() != out_types.len() {
        return Err(format!("produced {} output(s), but {} type(s) were inferred", outputs.len(), out_types.len()));
    }
    for (i, (t, want)) in outputs.iter().zip(out_types).enumerate() {
        let got = t.ty();
        if got != *want {
            return Err(format!("output {i}: computed {got}, but shape inference says {want}"));
        }
    }
    Ok(outputs)
}

/// A conv or matmul result element: the f64 sum rounded once to f32, or kept as the f64 sum (exact for
/// the integer-valued operands of the quantized reference, whose sums stay far below 2⁵³).
pub(crate) trait Sum: Copy + Default + Send + Sync {
    fn from_sum(s: f64) -> Self;
}

impl Sum for f32 {
    fn from_sum(s: f64) -> f32 {
        s as f32
    }
}

impl Sum for f64 {
    fn from_sum(s: f64) -> f64 {
        s
    }
}

/// An element type a tensor can hold, for ops that only move data around.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    fn slice(t: &Tensor) -> Option<&[Self]>;
    fn into_data(v: Vec<Self>) -> TensorData;
}

impl Elem for f32 {
    fn slice(t: &Tensor) -> Option<&[f32]> {
        t.as_f32()
    }
    fn into_data(v: Vec<f32>) -> TensorData {
        TensorData::F32(v)
    }
}

impl Elem for i64 {
    fn slice(t: &Tensor) -> Option<&[i64]> {
        t.as_i64()
    }
    fn into_data(v: Vec<i64>) -> TensorData {
        TensorData::I64(v)
    }
}

impl Elem for bool {
    fn slice(t: &Tensor) -> Option<&[bool]> {
        t.as_bool()
    }
    fn into_data(v: Vec<bool>) -> TensorData {
        TensorData::Bool(v)
    }
}

impl Elem for u8 {
    fn slice(t: &Tensor) -> Option<&[u8]> {
        t.as_u8()
    }
    fn into_data(v: Vec<u8>) -> TensorData {
        TensorData::U8(v)
    }
}

impl Elem for i8 {
    fn slice(t: &Tensor) -> Option<&[i8]> {
        t.as_i8()
    }
    fn into_data(v: Vec<i8>) -> TensorData {
        TensorData::I8(v)
    }
}

impl Elem for i32 {
    fn slice(t: &Tensor) -> Option<&[i32]> {
        t.as_i32()
    }
    fn into_data(v: Vec<i32>) -> TensorData {
        TensorData::I32(v)
    }
}

/// Runs `$body` with the type alias `$t` bound to the element type of `$dtype`.
macro_rules! with_elem {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            cnnc_ir::DType::F32 => {
                type $t = f32;
                $body
            }
            cnnc_ir::DType::I64 => {
                type $t = i64;
                $body
            }
            cnnc_ir::DType::Bool => {
                type $t = bool;
                $body
            }
            cnnc_ir::DType::U8 => {
                type $t = u8;
                $body
            }
            cnnc_ir::DType::I8 => {
                type $t = i8;
                $body
            }
            cnnc_ir::DType::I32 => {
                type $t = i32;
                $body
            }
        }
    };
}
pub(crate) use with_elem;

/// The elements of `t` as `T`, or an error naming the operand.
pub(crate) fn elems<'a, T: Elem>(t: &'a Tensor, what: &str) -> Result<&'a [T], String> {
    T::slice(t).ok_or_else(|| format!("`{what}` has dtype {}", t.dtype()))
}

/// The elements of an f32 operand.
pub(crate) fn f32s<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], String> {
    t.as_f32().ok_or_else(|| format!("`{what}` must be f32, got {}", t.dtype()))
}

/// Builds a tensor of element type `T`.
pub(crate) fn make<T: Elem>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor, String> {
    Tensor::new(shape, T::into_data(data)).map_err(|e| e.to_string())
}

/// Element count of a shape, or an error if it overflows.
pub(crate) fn count(shape: &[usize]) -> Result<usize, String> {
    cnnc_ir::checked_numel(shape).ok_or_else(|| format!("shape {shape:?} has too many elements"))
}

/// Row-major strides of a contiguous tensor of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Numpy multidirectional broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// Strides that read a contiguous tensor of `shape` broadcast (right-aligned) to `out`:
/// stretched axes get stride 0.
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Result<Vec<isize>, String> {
    if shape.len() > out.len() {
        return Err(format!("shape {shape:?} cannot broadcast to {out:?}"));
    }
    let lead = out.len() - shape.len();
    let own = contiguous_strides(shape);
    let mut strides = vec![0isize; out.len()];
    for (i, (&d, &s)) in shape.iter().zip(&own).enumerate() {
        if d == out[lead + i] {
            strides[lead + i] = if d == 1 { 0 } else { s as isize };
        } else if d != 1 {
            return Err(format!("shape {shape:?} cannot broadcast to {out:?}"));
        }
    }
    Ok(strides)
}

/// Offsets `base + Σ idx[i]·strides[i]` for every multi-index `idx` of `shape`, row-major.
pub(crate) struct StridedOffsets {
    shape: Vec<usize>,
    strides: Vec<isize>,
    idx: Vec<usize>,
    offset: isize,
    remaining: usize,
}

impl StridedOffsets {
    /// The caller guarantees every produced offset is non-negative and in bounds.
    pub(crate) fn new(shape: &[usize], strides: &[isize], base: usize) -> StridedOffsets {
        debug_assert_eq!(shape.len(), strides.len());
        StridedOffsets {
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            idx: vec![0; shape.len()],
            offset: base as isize,
            remaining: cnnc_ir::checked_numel(shape).unwrap_or(0),
        }
    }
}

impl Iterator for StridedOffsets {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        let current = self.offset as usize;
        self.remaining -= 1;
        if self.remaining > 0 {
            for ax in (0..self.shape.len()).rev() {
                self.idx[ax] += 1;
                self.offset += self.strides[ax];
                if self.idx[ax] < self.shape[ax] {
                    break;
                }
                self.offset -= self.strides[ax] * self.shape[ax] as isize;
                self.idx[ax] = 0;
            }
        }
        Some(current)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}
