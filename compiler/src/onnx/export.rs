//! ONNX export: a [`VerifiedGraph`] as an ai.onnx opset-18 `ModelProto` that `onnx.checker`
//! accepts and onnxruntime runs.
//!
//! Opset 18 is the first in which every `Reduce*` op takes `axes` as an input and has
//! `noop_with_empty_axes`, which expresses the IR's empty-axes reduction exactly; it has
//! `HardSwish` (≥ 14), single-axis `Softmax` (≥ 13) and `Pad` with an `axes` input. Opset 19
//! would add `Resize`'s `half_pixel_symmetric`, `Pad`'s `wrap` mode and `AveragePool`'s
//! `dilations`; the IR nodes that use them are refused with an [`ExportError`] naming the node.
//!
//! What the IR resolved at import goes back the way ONNX wants it: Reshape's shape, Pad's pads,
//! Slice's starts/ends/axes/steps, Resize's scales or sizes, Expand's shape, Split's sizes,
//! Reduce's axes and Clip's bounds become constant initializers; pads are explicit (no
//! `auto_pad`). A `Softmax` with opset < 13 semantics (`flatten`) becomes Reshape → Softmax →
//! Reshape, and a fused op (`act(base + residual)`) its base node → `Add` → activation node.
//!
//! Names: graph inputs and outputs keep theirs; every other value is named after its IR node
//! (`conv1`, `split:0`, `conv1/base`, `reshape2/shape`), made unique with a `_N` suffix, and
//! every ONNX node after its IR node likewise, so the same graph always gives the same bytes.

use std::collections::{HashMap, HashSet};

use cnnc_ir::{
    BinaryOp, ConvAttrs, ConvTransposeAttrs, CoordTransform, DType, Fused, NearestMode, Node, NodeId, Op, PadMode,
    QLinear, QLinearOut, QuantParams, ReduceKind, ResizeAttrs, ResizeMode, Tensor, TensorData, TensorType, UnaryOp,
    ValueRef, VerifiedGraph,
};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use protobuf::{Enum, EnumOrUnknown, Message, MessageField};

/// The ai.onnx opset every exported model imports.
pub const EXPORT_OPSET: i64 = 18;

/// The ONNX IR version that goes with opset 18 (onnx 1.13).
const IR_VERSION: i64 = 8;

/// Why a graph could not be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// An op or attribute value that opset 18 cannot express.
    #[error("node `{node}` ({op}): cannot be expressed in ONNX opset {EXPORT_OPSET}: {reason}")]
    Inexpressible { node: String, op: &'static str, reason: String },
    /// The graph's inputs and outputs cannot be named as ONNX requires.
    #[error("graph output `{output}`: {reason}")]
    Output { output: String, reason: String },
    /// The graph breaks an invariant the verifier should have caught (a bug in cnnc).
    #[error("the graph is malformed: {0}")]
    Malformed(String),
}

/// Exports `graph` as an ONNX model.
pub fn export_model(graph: &VerifiedGraph) -> Result<ModelProto, ExportError> {
    let mut ex = Exporter::new(graph);
    ex.name_interface()?;
    let order = graph.topo_order().map_err(|e| ExportError::Malformed(e.to_string()))?;
    for id in order {
        ex.lower_node(id)?;
    }
    ex.finish_outputs()?;
    ex.drop_unread_initializers();
    let mut model = ModelProto::new();
    model.ir_version = IR_VERSION;
    model.producer_name = "cnnc".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    let mut opset = OperatorSetIdProto::new();
    opset.version = EXPORT_OPSET;
    model.opset_import.push(opset);
    model.graph = MessageField::some(ex.proto);
    Ok(model)
}

/// Exports `graph` as the bytes of an `.onnx` file.
pub fn export_bytes(graph: &VerifiedGraph) -> Result<Vec<u8>, ExportError> {
    export_model(graph)?.write_to_bytes().map_err(|e| ExportError::Malformed(format!("protobuf encoding failed: {e}")))
}

/// Hands out names unique within one namespace: `base`, else `base_1`, `base_2`, …
#[derive(Default)]
struct Names {
    used: HashSet<String>,
}

impl Names {
    fn fresh(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "value" } else { base };
        if self.used.insert(base.to_string()) {
            return base.to_string();
        }
        let name = (1usize..).map(|i| format!("{base}_{i}")).find(|n| !self.used.contains(n)).expect("unbounded");
        self.used.insert(name.clone());
        name
    }

    /// Claims `name` exactly; false if it is taken.
    fn claim(&mut self, name: &str) -> bool {
        self.used.insert(name.to_string())
    }
}

struct Exporter<'g> {
    graph: &'g VerifiedGraph,
    proto: GraphProto,
    /// ONNX value name of each IR value named so far.
    values: HashMap<ValueRef, String>,
    value_names: Names,
    node_names: Names,
    /// Graph outputs that need an `Identity` (a graph input, a weight, or a value that is
    /// already another output): (output name, value).
    aliased_outputs: Vec<(String, ValueRef)>,
}

impl<'g> Exporter<'g> {
    fn new(graph: &'g VerifiedGraph) -> Self {
        let mut proto = GraphProto::new();
        proto.name = if graph.name.is_empty() { "cnnc".into() } else { graph.name.clone() };
        Exporter {
            graph,
            proto,
            values: HashMap::new(),
            value_names: Names::default(),
            node_names: Names::default(),
            aliased_outputs: Vec::new(),
        }
    }

    /// Names graph inputs and outputs exactly as the IR does, and declares them.
    fn name_interface(&mut self) -> Result<(), ExportError> {
        let g = self.graph;
        for &id in g.inputs() {
            let node = g.node(id);
            if !self.value_names.claim(&node.name) {
                return Err(ExportError::Malformed(format!("two graph inputs are named `{}`", node.name)));
            }
            self.values.insert(ValueRef::new(id, 0), node.name.clone());
            self.proto.input.push(value_info(&node.name, &node.outputs[0]));
        }
        let mut output_names = HashSet::new();
        for o in g.outputs() {
            if !output_names.insert(o.name.as_str()) {
                return Err(ExportError::Output { output: o.name.clone(), reason: "the name is used twice".into() });
            }
            let ty = g.try_value_type(&o.value).ok_or_else(|| ExportError::Output {
                output: o.name.clone(),
                reason: "refers to a missing value".into(),
            })?;
            self.proto.output.push(value_info(&o.name, ty));
            let producer = &g.node(o.value.node);
            if matches!(producer.op, Op::Input { .. }) {
                if producer.name != o.name {
                    if !self.value_names.claim(&o.name) {
                        return Err(input_name_clash(&o.name));
                    }
                    self.aliased_outputs.push((o.name.clone(), o.value));
                }
                continue;
            }
            if !self.value_names.claim(&o.name) {
                return Err(input_name_clash(&o.name));
            }
            if matches!(producer.op, Op::Weight(_)) || self.values.contains_key(&o.value) {
                self.aliased_outputs.push((o.name.clone(), o.value));
            } else {
                self.values.insert(o.value, o.name.clone());
            }
        }
        Ok(())
    }

    /// Adds `Identity` nodes for outputs that are inputs, weights or repeated values.
    fn finish_outputs(&mut self) -> Result<(), ExportError> {
        for (name, v) in std::mem::take(&mut self.aliased_outputs) {
            let src = self.value_name(v)?;
            let node_name = self.node_names.fresh(&format!("{name}/identity"));
            self.push_node("Identity", node_name, vec![src], vec![name], vec![]);
        }
        Ok(())
    }

    /// Drops initializers no node reads (the constant branches of a `Where` that became a logic
    /// op), which onnxruntime would warn about.
    fn drop_unread_initializers(&mut self) {
        let read: HashSet<&str> = self.proto.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
        let unread: HashSet<String> =
            self.proto.initializer.iter().filter(|t| !read.contains(t.name.as_str())).map(|t| t.name.clone()).collect();
        self.proto.initializer.retain(|t| !unread.contains(&t.name));
    }

    fn value_name(&self, v: ValueRef) -> Result<String, ExportError> {
        self.values.get(&v).cloned().ok_or_else(|| {
            ExportError::Malformed(format!("value {}:{} is read before it is produced", v.node.index(), v.slot))
        })
    }

    /// The ONNX name of output `slot` of `id`, naming it after the node when it has none yet.
    fn output_name(&mut self, id: NodeId, slot: usize) -> String {
        let v = ValueRef::new(id, slot);
        if let Some(n) = self.values.get(&v) {
            return n.clone();
        }
        let node = self.graph.node(id);
        let base = if node.outputs.len() == 1 { node.name.clone() } else { format!("{}:{slot}", node.name) };
        let name = self.value_names.fresh(&base);
        self.values.insert(v, name.clone());
        name
    }

    fn push_node(
        &mut self,
        op_type: &str,
        name: String,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) {
        let mut n = NodeProto::new();
        n.op_type = op_type.into();
        n.name = name;
        n.input = inputs;
        n.output = outputs;
        n.attribute = attrs;
        self.proto.node.push(n);
    }

    /// Adds a constant initializer named after `base`; returns its value name.
    fn constant(&mut self, base: &str, t: &Tensor) -> String {
        let name = self.value_names.fresh(base);
        self.proto.initializer.push(tensor_proto(&name, t));
        name
    }

    /// The `axis` attribute (per-axis only) and the inputs `(x, scale, zero_point)` of a
    /// QuantizeLinear/DequantizeLinear whose zero point has dtype `q`.
    fn quant_inputs(&mut self, name: &str, p: &QuantParams, q: DType, x: String) -> (Vec<AttributeProto>, Vec<String>) {
        let shape: Vec<usize> = if p.axis.is_some() { vec![p.scales.len()] } else { vec![] };
        let scale = Tensor::from_f32(shape.clone(), p.scales.clone()).expect("one scale per index");
        let zps = &p.zero_points;
        let zp = match q {
            DType::U8 => Tensor::from_u8(shape, zps.iter().map(|&z| z as u8).collect()),
            DType::I8 => Tensor::from_i8(shape, zps.iter().map(|&z| z as i8).collect()),
            _ => Tensor::from_i32(shape, zps.clone()),
        }
        .expect("one zero point per index");
        let ins =
            vec![x, self.constant(&format!("{name}/scale"), &scale), self.constant(&format!("{name}/zero_point"), &zp)];
        (p.axis.map(|a| int("axis", a as i64)).into_iter().collect(), ins)
    }

    fn const_i64(&mut self, base: &str, v: &[i64]) -> String {
        self.constant(base, &Tensor::from_i64([v.len()], v.to_vec()).expect("length matches"))
    }

    fn lower_node(&mut self, id: NodeId) -> Result<(), ExportError> {
        let g = self.graph;
        let node = g.node(id);
        match &node.op {
            Op::Input { .. } => return Ok(()),
            Op::Weight(w) => {
                let t = g.weights().get(*w).ok_or_else(|| {
                    ExportError::Malformed(format!("weight node `{}` refers to a missing weight", node.name))
                })?;
                // A weight that is a graph output is read through an `Identity`, so it is unnamed here.
                let name = self.constant(&node.name, t);
                self.values.insert(ValueRef::new(id, 0), name);
                return Ok(());
            }
            _ => {}
        }
        let inputs = g.node_inputs(id).into_iter().map(|v| self.value_name(v)).collect::<Result<Vec<_>, _>>()?;
        let outputs: Vec<String> = (0..node.outputs.len()).map(|slot| self.output_name(id, slot)).collect();
        let in_values = g.node_inputs(id);
        let in_types: Vec<TensorType> = in_values.iter().map(|v| g.value_type(v).clone()).collect();
        let cx = NodeCx { node, in_types, in_values };
        self.lower_op(&cx, &node.op, inputs, outputs)
    }

    /// Emits `op` reading `inputs` and writing `outputs` (already named).
    fn lower_op(&mut self, cx: &NodeCx, op: &Op, inputs: Vec<String>, outputs: Vec<String>) -> Result<(), ExportError> {
        let name = cx.node.name.as_str();
        let (op_type, attrs, inputs): (&str, Vec<AttributeProto>, Vec<String>) = match op {
            Op::Input { .. } | Op::Weight(_) => return Err(ExportError::Malformed(format!("`{name}` is a source"))),
            Op::Conv(a) => ("Conv", conv_attrs(a), self.requantized_weight(cx, 0, inputs)),
            Op::ConvTranspose(a) => return self.lower_conv_transpose(cx, a, inputs, outputs),
            Op::QLinear(q) => return self.lower_qlinear(cx, q, inputs, outputs),
            Op::Lookup => return self.lower_lookup(cx, inputs, outputs),
            Op::BatchNorm { epsilon } => ("BatchNormalization", vec![float("epsilon", *epsilon)], inputs),
            Op::Unary(u) => return self.lower_unary(name, u, inputs, outputs),
            Op::Binary(b) => (binary_op_type(*b), vec![], inputs),
            Op::Where if cx.node.outputs.first().is_some_and(|t| t.dtype == DType::Bool) => {
                return self.lower_bool_where(cx, inputs, outputs);
            }
            Op::Where => ("Where", vec![], inputs),
            Op::MaxPool(p) => (
                "MaxPool",
                vec![
                    ints("kernel_shape", &p.kernel),
                    ints("strides", &p.strides),
                    ints("dilations", &p.dilations),
                    ints("pads", &p.pads),
                    int("ceil_mode", i64::from(p.ceil_mode)),
                ],
                inputs,
            ),
            Op::AvgPool { pool: p, count_include_pad } => {
                if p.dilations.iter().any(|&d| d != 1) {
                    return Err(cx.inexpressible(format!(
                        "AveragePool has dilations only from opset 19 (dilations {:?})",
                        p.dilations
                    )));
                }
                (
                    "AveragePool",
                    vec![
                        ints("kernel_shape", &p.kernel),
                        ints("strides", &p.strides),
                        ints("pads", &p.pads),
                        int("ceil_mode", i64::from(p.ceil_mode)),
                        int("count_include_pad", i64::from(*count_include_pad)),
                    ],
                    inputs,
                )
            }
            Op::GlobalAvgPool => ("GlobalAveragePool", vec![], inputs),
            Op::GlobalMaxPool => ("GlobalMaxPool", vec![], inputs),
            Op::Gemm { alpha, beta, trans_a, trans_b } => (
                "Gemm",
                vec![
                    float("alpha", *alpha),
                    float("beta", *beta),
                    int("transA", i64::from(*trans_a)),
                    int("transB", i64::from(*trans_b)),
                ],
                self.requantized_weight(cx, if *trans_b { 0 } else { 1 }, inputs),
            ),
            Op::MatMul => ("MatMul", vec![], inputs),
            Op::Resize(a) => return self.lower_resize(cx, a, inputs, outputs),
            Op::Concat { axis } => ("Concat", vec![int("axis", *axis as i64)], inputs),
            Op::Split { axis, sizes } => {
                let split = self.const_i64(&format!("{name}/split"), &to_i64(sizes));
                ("Split", vec![int("axis", *axis as i64)], vec![first(&inputs)?, split])
            }
            Op::Reshape { shape } => {
                let target = self.const_i64(&format!("{name}/shape"), &to_i64(shape));
                // With allowzero = 0 a 0 in the target copies the input's dimension.
                let attrs = if shape.contains(&0) { vec![int("allowzero", 1)] } else { vec![] };
                ("Reshape", attrs, vec![first(&inputs)?, target])
            }
            Op::Transpose { perm } => ("Transpose", vec![ints("perm", perm)], inputs),
            Op::Slice { axes } => {
                // The IR's end of -1 with a negative step runs through index 0; ONNX would read
                // -1 as the last index, so it becomes INT64_MIN, which ONNX clamps to -1.
                let ends: Vec<i64> =
                    axes.iter().map(|a| if a.step < 0 && a.end < 0 { i64::MIN } else { a.end }).collect();
                let starts: Vec<i64> = axes.iter().map(|a| a.start).collect();
                let axis_list: Vec<i64> = axes.iter().map(|a| a.axis as i64).collect();
                let steps: Vec<i64> = axes.iter().map(|a| a.step).collect();
                let x = first(&inputs)?;
                let starts = self.const_i64(&format!("{name}/starts"), &starts);
                let ends = self.const_i64(&format!("{name}/ends"), &ends);
                let axis_list = self.const_i64(&format!("{name}/axes"), &axis_list);
                let steps = self.const_i64(&format!("{name}/steps"), &steps);
                ("Slice", vec![], vec![x, starts, ends, axis_list, steps])
            }
            Op::Gather { axis } => ("Gather", vec![int("axis", *axis as i64)], inputs),
            Op::Expand { shape } => {
                let target = self.const_i64(&format!("{name}/shape"), &to_i64(shape));
                ("Expand", vec![], vec![first(&inputs)?, target])
            }
            Op::Cast { to } => ("Cast", vec![int("to", i64::from(data_type(*to).value()))], inputs),
            Op::Quantize { params, to } => {
                let (attrs, ins) = self.quant_inputs(name, params, *to, first(&inputs)?);
                ("QuantizeLinear", attrs, ins)
            }
            Op::Dequantize(params) => {
                let from = cx.in_types.first().map_or(DType::U8, |t| t.dtype);
                if from == DType::I32 && params.zero_points.iter().any(|&z| z != 0) {
                    return Err(cx.inexpressible("DequantizeLinear of int32 takes no zero point other than 0"));
                }
                let (attrs, ins) = self.quant_inputs(name, params, from, first(&inputs)?);
                ("DequantizeLinear", attrs, ins)
            }
            Op::Softmax { axis, flatten: false } => ("Softmax", vec![int("axis", *axis as i64)], inputs),
            Op::Softmax { axis, flatten: true } => return self.lower_flat_softmax(cx, *axis, inputs, outputs),
            Op::Pad { pads, mode, value } => {
                let mode = match mode {
                    PadMode::Constant => "constant",
                    PadMode::Reflect => "reflect",
                    PadMode::Edge => "edge",
                    PadMode::Wrap => return Err(cx.inexpressible("Pad's `wrap` mode exists only from opset 19")),
                };
                let x = first(&inputs)?;
                let pads = self.const_i64(&format!("{name}/pads"), pads);
                let mut ins = vec![x, pads];
                if mode == "constant" {
                    let dtype = cx.in_types.first().map_or(DType::F32, |t| t.dtype);
                    let v = match dtype {
                        DType::F32 => Tensor::from_f32(Vec::<usize>::new(), vec![*value]),
                        DType::I64 => Tensor::from_i64(Vec::<usize>::new(), vec![*value as i64]),
                        DType::Bool => Tensor::from_bool(Vec::<usize>::new(), vec![*value != 0.0]),
                        DType::U8 => Tensor::from_u8(Vec::<usize>::new(), vec![*value as u8]),
                        DType::I8 => Tensor::from_i8(Vec::<usize>::new(), vec![*value as i8]),
                        DType::I32 => Tensor::from_i32(Vec::<usize>::new(), vec![*value as i32]),
                    }
                    .expect("scalar");
                    ins.push(self.constant(&format!("{name}/value"), &v));
                }
                ("Pad", vec![string("mode", mode)], ins)
            }
            Op::Reduce { kind, axes, keepdims } => {
                let x = first(&inputs)?;
                let mut attrs = vec![int("keepdims", i64::from(*keepdims))];
                let ins = if axes.is_empty() {
                    // Empty axes reduce nothing in the IR (each element is its own group).
                    attrs.push(int("noop_with_empty_axes", 1));
                    vec![x]
                } else {
                    vec![x, self.const_i64(&format!("{name}/axes"), &to_i64(axes))]
                };
                (reduce_op_type(*kind), attrs, ins)
            }
            Op::ArgReduce { max, axis, keepdims, select_last_index } => (
                if *max { "ArgMax" } else { "ArgMin" },
                vec![
                    int("axis", *axis as i64),
                    int("keepdims", i64::from(*keepdims)),
                    int("select_last_index", i64::from(*select_last_index)),
                ],
                inputs,
            ),
            Op::Fused(f) => return self.lower_fused(cx, f, inputs, outputs),
        };
        let node_name = self.node_names.fresh(name);
        self.push_node(op_type, node_name, inputs, outputs, attrs);
        Ok(())
    }

    fn lower_unary(
        &mut self,
        name: &str,
        u: &UnaryOp,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Result<(), ExportError> {
        let x = first(&inputs)?;
        let (op_type, attrs, ins) = match *u {
            UnaryOp::Relu => ("Relu", vec![], vec![x]),
            UnaryOp::LeakyRelu { alpha } => ("LeakyRelu", vec![float("alpha", alpha)], vec![x]),
            UnaryOp::Clip { min, max } => {
                // Absent bounds are ±∞: an empty input name (min) or a missing trailing input (max).
                let scalar = |v: f32| Tensor::from_f32(Vec::<usize>::new(), vec![v]).expect("scalar");
                let min = if min == f32::NEG_INFINITY {
                    String::new()
                } else {
                    self.constant(&format!("{name}/min"), &scalar(min))
                };
                let mut ins = vec![x, min];
                if max != f32::INFINITY {
                    ins.push(self.constant(&format!("{name}/max"), &scalar(max)));
                }
                while ins.last().is_some_and(String::is_empty) {
                    ins.pop();
                }
                ("Clip", vec![], ins)
            }
            UnaryOp::Sigmoid => ("Sigmoid", vec![], vec![x]),
            UnaryOp::HardSigmoid { alpha, beta } => {
                ("HardSigmoid", vec![float("alpha", alpha), float("beta", beta)], vec![x])
            }
            UnaryOp::HardSwish => ("HardSwish", vec![], vec![x]),
            UnaryOp::Swish { beta } => {
                // Opset 18 has no Swish: `x · Sigmoid(x)`, or `x · Sigmoid(x · β)`, the spelled-out
                // form onnxruntime runs and cnnc's `silu` rules recognize again.
                let mut arg = x.clone();
                if beta != 1.0 {
                    let b = self.constant(
                        &format!("{name}/beta"),
                        &Tensor::from_f32(Vec::<usize>::new(), vec![beta]).expect("scalar"),
                    );
                    let scaled = self.value_names.fresh(&format!("{name}/scaled"));
                    let node_name = self.node_names.fresh(&format!("{name}/scale"));
                    self.push_node("Mul", node_name, vec![x.clone(), b], vec![scaled.clone()], vec![]);
                    arg = scaled;
                }
                let s = self.value_names.fresh(&format!("{name}/sigmoid"));
                let node_name = self.node_names.fresh(&format!("{name}/sigmoid"));
                self.push_node("Sigmoid", node_name, vec![arg], vec![s.clone()], vec![]);
                ("Mul", vec![], vec![x, s])
            }
            UnaryOp::Tanh => ("Tanh", vec![], vec![x]),
            UnaryOp::Exp => ("Exp", vec![], vec![x]),
            UnaryOp::Log => ("Log", vec![], vec![x]),
            UnaryOp::Erf => ("Erf", vec![], vec![x]),
            UnaryOp::Sqrt => ("Sqrt", vec![], vec![x]),
            UnaryOp::Reciprocal => ("Reciprocal", vec![], vec![x]),
            UnaryOp::Neg => ("Neg", vec![], vec![x]),
            UnaryOp::Abs => ("Abs", vec![], vec![x]),
            UnaryOp::Floor => ("Floor", vec![], vec![x]),
            UnaryOp::Ceil => ("Ceil", vec![], vec![x]),
        };
        let node_name = self.node_names.fresh(name);
        self.push_node(op_type, node_name, ins, outputs, attrs);
        Ok(())
    }

    /// `ConvTranspose`. onnxruntime requires output_padding < max(stride, dilation), which an
    /// `output_shape` resolved at import may exceed. Output row `o` is row `o + pad_begin` of the
    /// full result whatever the end pad, so output padding and end pad trade one for one; what
    /// still exceeds the limit is rows past the full result, which are bias alone: the conv
    /// writes fewer, a `Pad` adds zeros and an `Add` the bias.
    fn lower_conv_transpose(
        &mut self,
        cx: &NodeCx,
        a: &ConvTransposeAttrs,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Result<(), ExportError> {
        // The weight's output-channel axis is 1 ([C_in, C_out/group, k…]).
        let inputs = self.requantized_weight(cx, 1, inputs);
        let name = cx.node.name.as_str();
        let n = a.kernel.len();
        if a.pads.len() != 2 * n || a.output_padding.len() != n || a.strides.len() != n || a.dilations.len() != n {
            return Err(ExportError::Malformed(format!("`{name}`: conv-transpose attributes disagree in length")));
        }
        let (mut pads, mut output_padding) = (a.pads.clone(), a.output_padding.clone());
        let mut extra = vec![0usize; n];
        for i in 0..n {
            let k = output_padding[i].min(pads[n + i]);
            output_padding[i] -= k;
            pads[n + i] -= k;
            let limit = a.strides[i].max(a.dilations[i]).saturating_sub(1);
            extra[i] = output_padding[i].saturating_sub(limit);
            output_padding[i] -= extra[i];
        }
        let attrs = |pads: &[usize], output_padding: &[usize]| {
            vec![
                ints("kernel_shape", &a.kernel),
                ints("strides", &a.strides),
                ints("dilations", &a.dilations),
                ints("pads", pads),
                ints("output_padding", output_padding),
                int("group", a.group as i64),
            ]
        };
        if extra.iter().all(|&e| e == 0) {
            let node_name = self.node_names.fresh(name);
            self.push_node("ConvTranspose", node_name, inputs, outputs, attrs(&pads, &output_padding));
            return Ok(());
        }
        let out = first(&outputs)?;
        let bias = inputs.get(2).cloned();
        let conv = self.value_names.fresh(&format!("{name}/conv"));
        let node_name = self.node_names.fresh(name);
        self.push_node(
            "ConvTranspose",
            node_name,
            inputs[..2.min(inputs.len())].to_vec(),
            vec![conv.clone()],
            attrs(&pads, &output_padding),
        );
        let mut pad_amounts = vec![0i64; 2 * (n + 2)];
        for i in 0..n {
            pad_amounts[n + 2 + 2 + i] = extra[i] as i64;
        }
        let pads_name = self.const_i64(&format!("{name}/pad_rows"), &pad_amounts);
        let padded = if bias.is_some() { self.value_names.fresh(&format!("{name}/padded")) } else { out.clone() };
        let node_name = self.node_names.fresh(&format!("{name}/pad_rows"));
        self.push_node("Pad", node_name, vec![conv, pads_name], vec![padded.clone()], vec![string("mode", "constant")]);
        if let Some(bias) = bias {
            let mut shape = vec![1usize; n + 1];
            shape[0] = cx.node.outputs[0].shape.get(1).copied().unwrap_or(1);
            let shape_name = self.const_i64(&format!("{name}/bias_shape"), &to_i64(&shape));
            let column = self.value_names.fresh(&format!("{name}/bias_column"));
            let node_name = self.node_names.fresh(&format!("{name}/bias_column"));
            self.push_node("Reshape", node_name, vec![bias, shape_name], vec![column.clone()], vec![]);
            let node_name = self.node_names.fresh(&format!("{name}/bias"));
            self.push_node("Add", node_name, vec![padded, column], vec![out], vec![]);
        }
        Ok(())
    }

    /// `Where` choosing between bools, which onnxruntime does not implement, in logic ops: `Not c`,
    /// `c And b`, `c Or b` when a branch is a constant scalar (as the importer lowers those ops),
    /// else `(c And a) Or (Not c And b)`.
    fn lower_bool_where(&mut self, cx: &NodeCx, inputs: Vec<String>, outputs: Vec<String>) -> Result<(), ExportError> {
        let name = cx.node.name.as_str();
        let [c, a, b] = inputs.as_slice() else {
            return Err(ExportError::Malformed(format!("`{name}`: where needs 3 inputs")));
        };
        let out_shape = &cx.node.outputs[0].shape;
        let scalar = |i: usize| -> Option<bool> {
            let t = self.graph.weight_of(cx.in_values.get(i)?)?;
            t.as_bool().filter(|v| v.len() == 1 && t.shape().is_empty()).map(|v| v[0])
        };
        let shape = |i: usize| cx.in_types.get(i).map(|t| t.shape.clone()).unwrap_or_default();
        let same_shape =
            |x: usize, y: usize| cnnc_ir::broadcast_shapes(&shape(x), &shape(y)).as_ref() == Some(out_shape);
        let simple = match (scalar(1), scalar(2)) {
            (Some(false), Some(true)) if shape(0) == *out_shape => Some(("Not", vec![c.clone()])),
            (_, Some(false)) if same_shape(0, 1) => Some(("And", vec![c.clone(), a.clone()])),
            (Some(true), _) if same_shape(0, 2) => Some(("Or", vec![c.clone(), b.clone()])),
            _ => None,
        };
        if let Some((op_type, ins)) = simple {
            let n = self.node_names.fresh(name);
            self.push_node(op_type, n, ins, outputs, vec![]);
            return Ok(());
        }
        let then = self.value_names.fresh(&format!("{name}/then"));
        let n = self.node_names.fresh(&format!("{name}/then"));
        self.push_node("And", n, vec![c.clone(), a.clone()], vec![then.clone()], vec![]);
        let not_c = self.value_names.fresh(&format!("{name}/not"));
        let n = self.node_names.fresh(&format!("{name}/not"));
        self.push_node("Not", n, vec![c.clone()], vec![not_c.clone()], vec![]);
        let otherwise = self.value_names.fresh(&format!("{name}/else"));
        let n = self.node_names.fresh(&format!("{name}/else"));
        self.push_node("And", n, vec![not_c, b.clone()], vec![otherwise.clone()], vec![]);
        let n = self.node_names.fresh(name);
        self.push_node("Or", n, vec![then, otherwise], outputs, vec![]);
        Ok(())
    }

    /// `Softmax` over all axes from `axis` on (opset < 13): Reshape to 2-D at `axis`, Softmax
    /// over the last axis, Reshape back.
    fn lower_flat_softmax(
        &mut self,
        cx: &NodeCx,
        axis: usize,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Result<(), ExportError> {
        let name = cx.node.name.as_str();
        let shape = &cx.node.outputs[0].shape;
        if axis > shape.len() {
            return Err(ExportError::Malformed(format!("`{name}`: softmax axis {axis} exceeds the rank")));
        }
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis..].iter().product();
        let x = first(&inputs)?;
        let flat_shape = self.const_i64(&format!("{name}/flat_shape"), &to_i64(&[outer, inner]));
        let flat = self.value_names.fresh(&format!("{name}/flat"));
        let n = self.node_names.fresh(&format!("{name}/flatten"));
        let zero = if outer == 0 || inner == 0 { vec![int("allowzero", 1)] } else { vec![] };
        self.push_node("Reshape", n, vec![x, flat_shape], vec![flat.clone()], zero.clone());
        let soft = self.value_names.fresh(&format!("{name}/softmax"));
        let n = self.node_names.fresh(name);
        self.push_node("Softmax", n, vec![flat], vec![soft.clone()], vec![int("axis", 1)]);
        let back = self.const_i64(&format!("{name}/shape"), &to_i64(shape));
        let n = self.node_names.fresh(&format!("{name}/unflatten"));
        let zero = if shape.contains(&0) { vec![int("allowzero", 1)] } else { vec![] };
        self.push_node("Reshape", n, vec![soft, back], outputs, zero);
        Ok(())
    }

    /// `act(base(inputs) + residual)` as the base node, `Add`, the activation node.
    fn lower_fused(
        &mut self,
        cx: &NodeCx,
        f: &Fused,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Result<(), ExportError> {
        if !Fused::fusible_base(&f.base) {
            return Err(
                cx.inexpressible(format!("a fused op's base must be conv, gemm or matmul, not {}", f.base.name()))
            );
        }
        let name = cx.node.name.clone();
        let out = first(&outputs)?;
        let n = f.base_inputs(inputs.len());
        let base_inputs = inputs[..n].to_vec();
        let mut value =
            if f.residual || f.act.is_some() { self.value_names.fresh(&format!("{name}/base")) } else { out.clone() };
        let n_base = n.min(cx.in_types.len());
        let base_cx = NodeCx {
            node: cx.node,
            in_types: cx.in_types[..n_base].to_vec(),
            in_values: cx.in_values[..n_base].to_vec(),
        };
        self.lower_op(&base_cx, &f.base, base_inputs, vec![value.clone()])?;
        if f.residual {
            let residual = inputs.get(n).cloned().ok_or_else(|| {
                ExportError::Malformed(format!("`{name}`: a fused op with a residual has no residual input"))
            })?;
            let sum = if f.act.is_some() { self.value_names.fresh(&format!("{name}/sum")) } else { out.clone() };
            let node_name = self.node_names.fresh(&format!("{name}/residual"));
            self.push_node("Add", node_name, vec![value, residual], vec![sum.clone()], vec![]);
            value = sum;
        }
        if let Some(act) = &f.act {
            self.lower_unary(&format!("{name}/{}", act.name()), act, vec![value], vec![out])?;
        }
        Ok(())
    }

    /// A quantized conv, gemm or matmul. A requantized output becomes the QDQ form
    /// onnxruntime's quantizer writes (and fuses back into its integer kernels):
    /// `DequantizeLinear` of x, of w and of the i32 bias (scale `sx·sw[c]`), the f32 base op,
    /// the clamp as `Relu`/`Clip`, then `QuantizeLinear`. An i32 output becomes `ConvInteger` /
    /// `MatMulInteger` (+ the bias as an i32 `Add`); an f32 output that, `Cast` and a `Mul` by
    /// `sx·sw[c]`.
    fn lower_qlinear(
        &mut self,
        cx: &NodeCx,
        q: &QLinear,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Result<(), ExportError> {
        let name = cx.node.name.clone();
        let out = first(&outputs)?;
        let (x, w) = (first(&inputs)?, inputs.get(1).cloned().ok_or_else(|| cx.inexpressible("no weight input"))?);
        let (xt, wt) = match &cx.in_types[..] {
            [x, w, ..] => (x.dtype, w.dtype),
            _ => return Err(cx.inexpressible("a quantized op has x and w")),
        };
        let c_out = cx.in_types[1].shape.get(q.weight_channel_axis(cx.in_types[1].rank())).copied().unwrap_or(0);
        let QLinearOut::Quantized { params: yp, to } = &q.out else {
            return self.lower_integer(cx, q, inputs, outputs, c_out);
        };
        let dq = |this: &mut Self, what: &str, v: String, p: &QuantParams, dtype: DType| {
            let (attrs, ins) = this.quant_inputs(&format!("{name}/{what}_dq"), p, dtype, v);
            let value = this.value_names.fresh(&format!("{name}/{what}_f32"));
            let node_name = this.node_names.fresh(&format!("{name}/{what}_dq"));
            this.push_node("DequantizeLinear", node_name, ins, vec![value.clone()], attrs);
            value
        };
        let xf = dq(self, "x", x, &q.x, xt);
        let wf = dq(self, "w", w, &q.w, wt);
        let mut base_ins = vec![xf, wf];
        let mut bias_after = None;
        if let Some(b) = inputs.get(2).cloned() {
            let scales: Vec<f32> = (0..c_out).map(|c| q.acc_scale(c)).collect();
            let bp = QuantParams { axis: Some(0), scales, zero_points: vec![0; c_out] };
            let bf = dq(self, "bias", b, &bp, DType::I32);
            match q.base {
                Op::MatMul => bias_after = Some(bf),
                _ => base_ins.push(bf),
            }
        }
        let mut value = self.value_names.fresh(&format!("{name}/acc"));
        let base_cx = NodeCx { node: cx.node, in_types: vec![], in_values: vec![] };
        self.lower_op(&base_cx, &q.base, base_ins, vec![value.clone()])?;
        if let Some(bf) = bias_after {
            let sum = self.value_names.fresh(&format!("{name}/biased"));
            let node_name = self.node_names.fresh(&format!("{name}/bias"));
            self.push_node("Add", node_name, vec![value, bf], vec![sum.clone()], vec![]);
            value = sum;
        }
        if let (Some((lo, hi)), Some((tmin, tmax))) = (q.clamp, to.int_range()) {
            let (sy, zy) = (yp.scales[0], yp.zero_points[0]);
            let real = |v: i32| (v - zy) as f32 * sy;
            let act = if lo == zy && i64::from(hi) == tmax {
                UnaryOp::Relu
            } else {
                let min = if i64::from(lo) == tmin { f32::NEG_INFINITY } else { real(lo) };
                let max = if i64::from(hi) == tmax { f32::INFINITY } else { real(hi) };
                UnaryOp::Clip { min, max }
            };
            let clamped = self.value_names.fresh(&format!("{name}/clamped"));
            self.lower_unary(&format!("{name}/{}", act.name()), &act, vec![value], vec![clamped.clone()])?;
            value = clamped;
        }
        let (attrs, ins) = self.quant_inputs(&format!("{name}/y_q"), yp, *to, value);
        let node_name = self.node_names.fresh(&format!("{name}/y_q"));
        self.push_node("QuantizeLinear", node_name, ins, vec![out], attrs);
        Ok(())
    }

    /// `inputs` with the weight (input 1) written as `DequantizeLinear(q, scales, 0, axis)` when
    /// the op reads a DequantizeLinear (a QDQ graph) and its constant f32 weight is exactly
    /// `q · s[c]` for int8 `q` in [−127, 127] along the output-channel `axis`, which is what
    /// `-O1` leaves of a per-channel symmetric DequantizeLinear it folded (`qdq-fold-weight`)
    /// where it chose the f32 kernel. onnxruntime then fuses the op into its integer kernel with
    /// those int8 weights (a ConvTranspose stays f32 on exactly these weights) instead of
    /// quantizing the f32 weights again itself, per tensor (its weight-and-bias quantization),
    /// which would change the results. Exact: the scale is the
    /// one that reproduces every f32 weight bit for bit, or the weight stays f32.
    fn requantized_weight(&mut self, cx: &NodeCx, axis: usize, mut inputs: Vec<String>) -> Vec<String> {
        let reads_dq = cx.in_values.first().is_some_and(|x| matches!(self.graph.node(x.node).op, Op::Dequantize(_)));
        let Some(w) = cx.in_values.get(1).and_then(|v| self.graph.weight_of(v)).filter(|_| reads_dq) else {
            return inputs;
        };
        let (Some(v), Some(&c_n)) = (w.as_f32(), w.shape().get(axis)) else { return inputs };
        let inner: usize = w.shape()[axis + 1..].iter().product();
        let channel = |i: usize| (i / inner.max(1)) % c_n.max(1);
        let mut max = vec![0f32; c_n];
        for (i, x) in v.iter().enumerate() {
            max[channel(i)] = max[channel(i)].max(x.abs());
        }
        // Per channel, the scale among the few f32 values next to max/127 that gives back every
        // weight of the channel exactly as `q · s`.
        let exact = |c: usize, s: f32| {
            v.iter().enumerate().filter(|&(i, _)| channel(i) == c).all(|(_, &x)| {
                let q = (x / s).round_ties_even();
                q.abs() <= 127.0 && q * s == x
            })
        };
        let mut scales = Vec::with_capacity(c_n);
        for (c, &m) in max.iter().enumerate() {
            if !m.is_finite() {
                return inputs;
            }
            let s0 = if m == 0.0 { 1.0 } else { m / 127.0 };
            let candidates = [s0, s0.next_up(), s0.next_down(), s0.next_up().next_up(), s0.next_down().next_down()];
            match candidates.into_iter().find(|&s| s > 0.0 && exact(c, s)) {
                Some(s) => scales.push(s),
                None => return inputs,
            }
        }
        let q: Vec<i8> = v.iter().enumerate().map(|(i, &x)| (x / scales[channel(i)]).round_ties_even() as i8).collect();
        let name = self.graph.node(cx.in_values[1].node).name.clone();
        let Ok(qt) = Tensor::from_i8(w.shape().to_vec(), q) else { return inputs };
        let q_name = self.constant(&format!("{name}/int8"), &qt);
        let p = QuantParams { axis: Some(axis), scales, zero_points: vec![0; c_n] };
        let (attrs, ins) = self.quant_inputs(&format!("{name}/dq"), &p, DType::I8, q_name);
        let value = self.value_names.fresh(&format!("{name}/dq"));
        let node_name = self.node_names.fresh(&format!("{name}/dq"));
        self.push_node("DequantizeLinear", node_name, ins, vec![value.clone()], attrs);
        inputs[1] = value;
        inputs
    }

    /// `Op::Lookup` as `Gather(table, index)`: an operand's byte is the operand cast to int64,
    /// an i8 operand cast to uint8 first (Cast between 8-bit integers keeps the bit pattern);
    /// two operands' index is `256·byte(a) + byte(b)`.
    fn lower_lookup(&mut self, cx: &NodeCx, inputs: Vec<String>, outputs: Vec<String>) -> Result<(), ExportError> {
        let name = cx.node.name.clone();
        let out = first(&outputs)?;
        let (table, operands) = inputs.split_first().ok_or_else(|| cx.inexpressible("a lookup has a table"))?;
        let to = |d: DType| int("to", i64::from(data_type(d).value()));
        let mut bytes = Vec::new();
        for (i, v) in operands.iter().enumerate() {
            let mut v = v.clone();
            if cx.in_types.get(i + 1).is_some_and(|t| t.dtype == DType::I8) {
                let unsigned = self.value_names.fresh(&format!("{name}/byte{i}"));
                let node_name = self.node_names.fresh(&format!("{name}/byte{i}"));
                self.push_node("Cast", node_name, vec![v], vec![unsigned.clone()], vec![to(DType::U8)]);
                v = unsigned;
            }
            let wide = self.value_names.fresh(&format!("{name}/index{i}"));
            let node_name = self.node_names.fresh(&format!("{name}/index{i}"));
            self.push_node("Cast", node_name, vec![v], vec![wide.clone()], vec![to(DType::I64)]);
            bytes.push(wide);
        }
        let index = match &bytes[..] {
            [a] => a.clone(),
            [a, b] => {
                let m = self.constant(&format!("{name}/256"), &Tensor::from_i64(vec![], vec![256]).expect("a scalar"));
                let hi = self.value_names.fresh(&format!("{name}/row"));
                let node_name = self.node_names.fresh(&format!("{name}/row"));
                self.push_node("Mul", node_name, vec![a.clone(), m], vec![hi.clone()], vec![]);
                let idx = self.value_names.fresh(&format!("{name}/index"));
                let node_name = self.node_names.fresh(&format!("{name}/index"));
                self.push_node("Add", node_name, vec![hi, b.clone()], vec![idx.clone()], vec![]);
                idx
            }
            _ => return Err(cx.inexpressible(format!("a lookup of {} operands", bytes.len()))),
        };
        let node_name = self.node_names.fresh(&name);
        self.push_node("Gather", node_name, vec![table.clone(), index], vec![out], vec![int("axis", 0)]);
        Ok(())
    }

    /// [`Self::lower_qlinear`] for an i32 or f32 output: `ConvInteger` / `MatMulInteger` (a
    /// gemm's transposed operands through `Transpose` nodes), which take a per-tensor weight
    /// zero point only.
    fn lower_integer(
        &mut self,
        cx: &NodeCx,
        q: &QLinear,
        inputs: Vec<String>,
        outputs: Vec<String>,
        c_out: usize,
    ) -> Result<(), ExportError> {
        let name = cx.node.name.clone();
        let out = first(&outputs)?;
        let per_channel = q.w.axis.is_some() && q.w.zero_points.iter().any(|&z| z != q.w.zero_points[0]);
        if per_channel && matches!(q.base, Op::Conv(_)) {
            return Err(cx.inexpressible("ConvInteger takes one weight zero point"));
        }
        // A scalar zero point, or (MatMulInteger) one per output column.
        let zp = |this: &mut Self, what: &str, z: &[i32], dtype: DType| {
            let shape: Vec<usize> = if z.len() == 1 { vec![] } else { vec![z.len()] };
            let t = match dtype {
                DType::U8 => Tensor::from_u8(shape, z.iter().map(|&v| v as u8).collect()),
                _ => Tensor::from_i8(shape, z.iter().map(|&v| v as i8).collect()),
            }
            .expect("one zero point per element");
            this.constant(&format!("{name}/{what}_zero_point"), &t)
        };
        let w_zps = if per_channel { &q.w.zero_points[..] } else { &q.w.zero_points[..1] };
        let (xt, wt) = (cx.in_types[0].dtype, cx.in_types[1].dtype);
        // A gemm's transposed operands become Transpose nodes in front of MatMulInteger.
        let operand = |this: &mut Self, what: &str, v: String, transposed: bool| {
            if !transposed {
                return v;
            }
            let t = this.value_names.fresh(&format!("{name}/{what}_t"));
            let node_name = this.node_names.fresh(&format!("{name}/{what}_t"));
            this.push_node("Transpose", node_name, vec![v], vec![t.clone()], vec![ints("perm", &[1, 0])]);
            t
        };
        let (ta, tb) = match q.base {
            Op::Gemm { trans_a, trans_b, .. } => (trans_a, trans_b),
            _ => (false, false),
        };
        let x = operand(self, "x", first(&inputs)?, ta);
        // A constant weight is transposed here: a Transpose node would be folded at import into
        // a widened constant that loses its 8-bit type.
        let w_const = cx.in_values.get(1).and_then(|v| self.graph.weight_of(v)).filter(|_| tb);
        let w = match w_const.map(transpose_2d) {
            Some(Some(t)) => self.constant(&format!("{name}/w_t"), &t),
            _ => operand(self, "w", inputs[1].clone(), tb),
        };
        let ins = vec![x, w, zp(self, "x", &q.x.zero_points[..1], xt), zp(self, "w", w_zps, wt)];
        let (op_type, attrs) = match &q.base {
            Op::Conv(a) => ("ConvInteger", conv_attrs(a)),
            Op::MatMul | Op::Gemm { .. } => ("MatMulInteger", vec![]),
            other => {
                return Err(
                    cx.inexpressible(format!("an integer-output quantized {} (only conv and matmul)", other.name()))
                );
            }
        };
        let has_bias = inputs.len() > 2;
        let to_f32 = matches!(q.out, QLinearOut::F32);
        let mut value = if has_bias || to_f32 { self.value_names.fresh(&format!("{name}/acc")) } else { out.clone() };
        let node_name = self.node_names.fresh(&name);
        self.push_node(op_type, node_name, ins, vec![value.clone()], attrs);
        // Per-channel vectors broadcast along the channel axis: [C, 1, …] for a conv, [C] for a matmul.
        let rank = cx.node.outputs.first().map_or(2, |t| t.rank());
        let channel_shape: Vec<usize> = if matches!(q.base, Op::Conv(_)) {
            [c_out].into_iter().chain(std::iter::repeat_n(1, rank.saturating_sub(2))).collect()
        } else {
            vec![c_out]
        };
        if has_bias {
            // A constant bias is reshaped here (a Reshape node of it would be folded at import
            // into a widened i64 constant).
            let b_const = cx.in_values.get(2).and_then(|v| self.graph.weight_of(v));
            let b = match b_const.and_then(|t| Tensor::new(channel_shape.clone(), t.data().clone()).ok()) {
                Some(t) => self.constant(&format!("{name}/bias"), &t),
                None => {
                    let b = self.value_names.fresh(&format!("{name}/bias_b"));
                    let shape = self.const_i64(&format!("{name}/bias_shape"), &to_i64(&channel_shape));
                    let node_name = self.node_names.fresh(&format!("{name}/bias_shape"));
                    self.push_node("Reshape", node_name, vec![inputs[2].clone(), shape], vec![b.clone()], vec![]);
                    b
                }
            };
            let sum = if to_f32 { self.value_names.fresh(&format!("{name}/biased")) } else { out.clone() };
            let node_name = self.node_names.fresh(&format!("{name}/bias"));
            self.push_node("Add", node_name, vec![value, b], vec![sum.clone()], vec![]);
            value = sum;
        }
        if to_f32 {
            let f = self.value_names.fresh(&format!("{name}/acc_f32"));
            let node_name = self.node_names.fresh(&format!("{name}/cast"));
            self.push_node(
                "Cast",
                node_name,
                vec![value],
                vec![f.clone()],
                vec![int("to", i64::from(data_type(DType::F32).value()))],
            );
            let scales: Vec<f32> = (0..c_out).map(|c| q.acc_scale(c)).collect();
            let s = self
                .constant(&format!("{name}/scale"), &Tensor::from_f32(channel_shape, scales).expect("one per channel"));
            let node_name = self.node_names.fresh(&format!("{name}/scale"));
            self.push_node("Mul", node_name, vec![f, s], vec![out], vec![]);
        }
        Ok(())
    }

    fn lower_resize(
        &mut self,
        cx: &NodeCx,
        a: &ResizeAttrs,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Result<(), ExportError> {
        let name = cx.node.name.as_str();
        let in_shape = cx.in_types.first().map(|t| t.shape.clone()).unwrap_or_default();
        let mut attrs = Vec::new();
        attrs.push(string(
            "mode",
            match a.mode {
                ResizeMode::Nearest => "nearest",
                ResizeMode::Linear => "linear",
                ResizeMode::Cubic { .. } => "cubic",
            },
        ));
        if let ResizeMode::Cubic { a: coeff, exclude_outside } = a.mode {
            attrs.push(float("cubic_coeff_a", coeff));
            attrs.push(int("exclude_outside", i64::from(exclude_outside)));
        }
        let mut roi = String::new();
        let coord = match &a.coord {
            CoordTransform::HalfPixel => "half_pixel",
            CoordTransform::HalfPixelSymmetric => {
                return Err(cx.inexpressible("Resize's `half_pixel_symmetric` exists only from opset 19"));
            }
            CoordTransform::PytorchHalfPixel => "pytorch_half_pixel",
            CoordTransform::AlignCorners => "align_corners",
            CoordTransform::Asymmetric => "asymmetric",
            CoordTransform::TfHalfPixelForNn => {
                return Err(cx.inexpressible("Resize's `tf_half_pixel_for_nn` exists only in opsets 11 and 12"));
            }
            CoordTransform::TfCropAndResize { roi: r, extrapolation } => {
                attrs.push(float("extrapolation_value", *extrapolation));
                let t = Tensor::from_f32([r.len()], r.clone()).expect("length matches");
                roi = self.constant(&format!("{name}/roi"), &t);
                "tf_crop_and_resize"
            }
        };
        attrs.push(string("coordinate_transformation_mode", coord));
        if a.mode == ResizeMode::Nearest {
            attrs.push(string(
                "nearest_mode",
                match a.nearest {
                    NearestMode::RoundPreferFloor => "round_prefer_floor",
                    NearestMode::RoundPreferCeil => "round_prefer_ceil",
                    NearestMode::Floor => "floor",
                    NearestMode::Ceil => "ceil",
                },
            ));
        }
        if in_shape.len() != a.scales.len() || in_shape.len() != a.out_shape.len() {
            return Err(ExportError::Malformed(format!("`{name}`: resize scales, sizes and rank disagree")));
        }
        // onnxruntime derives the scale of a `sizes` input as out / in in f32 (as the importer
        // does), and the size of a `scales` input as floor(in · scale) in f32, while ONNX's shape
        // inference takes the product in f64. Sizes are exact whenever the IR's scales are
        // out / in; otherwise the scales must give the IR's sizes both ways (a scale of 5/6 on
        // 6 gives 5 in f32 but 4 in f64: inexpressible).
        let from_sizes = in_shape.iter().zip(&a.out_shape).map(|(&i, &o)| o as f32 / i.max(1) as f32);
        let x = first(&inputs)?;
        let ins = if from_sizes.zip(&a.scales).all(|(s, &t)| s.to_bits() == t.to_bits()) {
            let sizes = self.const_i64(&format!("{name}/sizes"), &to_i64(&a.out_shape));
            vec![x, roi, String::new(), sizes]
        } else {
            let agrees = in_shape.iter().zip(&a.scales).zip(&a.out_shape).all(|((&i, &s), &o)| {
                (i as f32 * s).floor() == o as f32 && (i as f64 * f64::from(s)).floor() == o as f64
            });
            if !agrees {
                return Err(cx.inexpressible(format!(
                    "scales {:?} of input {in_shape:?} give neither output {:?} (as floor(in · scale)) nor are they \
                     output / input",
                    a.scales, a.out_shape
                )));
            }
            let t = Tensor::from_f32([a.scales.len()], a.scales.clone()).expect("length matches");
            vec![x, roi, self.constant(&format!("{name}/scales"), &t)]
        };
        let node_name = self.node_names.fresh(name);
        self.push_node("Resize", node_name, ins, outputs, attrs);
        Ok(())
    }
}

/// The IR node being lowered and its input types.
struct NodeCx<'a> {
    node: &'a Node,
    in_types: Vec<TensorType>,
    in_values: Vec<ValueRef>,
}

impl NodeCx<'_> {
    fn inexpressible(&self, reason: impl Into<String>) -> ExportError {
        ExportError::Inexpressible { node: self.node.name.clone(), op: self.node.op.name(), reason: reason.into() }
    }
}

fn input_name_clash(output: &str) -> ExportError {
    ExportError::Output {
        output: output.to_string(),
        reason: "the name is also a graph input's, and ONNX names each value once".into(),
    }
}

/// The attributes of Conv and ConvInteger.
fn conv_attrs(a: &ConvAttrs) -> Vec<AttributeProto> {
    vec![
        ints("kernel_shape", &a.kernel),
        ints("strides", &a.strides),
        ints("dilations", &a.dilations),
        ints("pads", &a.pads),
        int("group", a.group as i64),
    ]
}

/// A matrix transposed (any element type); `None` for other ranks.
fn transpose_2d(t: &Tensor) -> Option<Tensor> {
    let &[r, c] = t.shape() else { return None };
    let idx = |i: usize| (i % r) * c + i / r;
    let data = match t.data() {
        TensorData::U8(v) => TensorData::U8((0..r * c).map(|i| v[idx(i)]).collect()),
        TensorData::I8(v) => TensorData::I8((0..r * c).map(|i| v[idx(i)]).collect()),
        _ => return None,
    };
    Tensor::new(vec![c, r], data).ok()
}

fn first(names: &[String]) -> Result<String, ExportError> {
    names.first().cloned().ok_or_else(|| ExportError::Malformed("an op has no input or output".into()))
}

fn to_i64(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect()
}

fn binary_op_type(b: BinaryOp) -> &'static str {
    match b {
        BinaryOp::Add => "Add",
        BinaryOp::Sub => "Sub",
        BinaryOp::Mul => "Mul",
        BinaryOp::Div => "Div",
        BinaryOp::Max => "Max",
        BinaryOp::Min => "Min",
        BinaryOp::Pow => "Pow",
        BinaryOp::PRelu => "PRelu",
        BinaryOp::Equal => "Equal",
        BinaryOp::Less => "Less",
        BinaryOp::Greater => "Greater",
    }
}

fn reduce_op_type(k: ReduceKind) -> &'static str {
    match k {
        ReduceKind::Mean => "ReduceMean",
        ReduceKind::Sum => "ReduceSum",
        ReduceKind::Max => "ReduceMax",
        ReduceKind::Min => "ReduceMin",
        ReduceKind::Prod => "ReduceProd",
        ReduceKind::L1 => "ReduceL1",
        ReduceKind::L2 => "ReduceL2",
        ReduceKind::SumSquare => "ReduceSumSquare",
        ReduceKind::LogSum => "ReduceLogSum",
        ReduceKind::LogSumExp => "ReduceLogSumExp",
    }
}

fn data_type(d: DType) -> DataType {
    match d {
        DType::F32 => DataType::FLOAT,
        DType::I64 => DataType::INT64,
        DType::Bool => DataType::BOOL,
        DType::U8 => DataType::UINT8,
        DType::I8 => DataType::INT8,
        DType::I32 => DataType::INT32,
    }
}

/// An initializer holding `t` as little-endian `raw_data`.
fn tensor_proto(name: &str, t: &Tensor) -> TensorProto {
    let mut p = TensorProto::new();
    p.name = name.to_string();
    p.dims = to_i64(t.shape());
    p.data_type = data_type(t.dtype()).value();
    p.raw_data = t.data().to_le_bytes();
    p
}

fn value_info(name: &str, ty: &TensorType) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = ty
        .shape
        .iter()
        .map(|&d| {
            let mut dim = Dimension::new();
            dim.value = Some(dimension::Value::DimValue(i64::try_from(d).unwrap_or(i64::MAX)));
            dim
        })
        .collect();
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = data_type(ty.dtype).value();
    tensor.shape = MessageField::some(shape);
    let mut tp = TypeProto::new();
    tp.value = Some(type_proto::Value::TensorType(tensor));
    let mut vi = ValueInfoProto::new();
    vi.name = name.to_string();
    vi.type_ = MessageField::some(tp);
    vi
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = EnumOrUnknown::new(ty);
    a
}

fn int(name: &str, v: i64) -> AttributeProto {
    let mut a = attr(name, AttributeType::INT);
    a.i = v;
    a
}

fn ints(name: &str, v: &[usize]) -> AttributeProto {
    let mut a = attr(name, AttributeType::INTS);
    a.ints = to_i64(v);
    a
}

fn float(name: &str, v: f32) -> AttributeProto {
    let mut a = attr(name, AttributeType::FLOAT);
    a.f = v;
    a
}

fn string(name: &str, v: &str) -> AttributeProto {
    let mut a = attr(name, AttributeType::STRING);
    a.s = v.as_bytes().to_vec();
    a
}
