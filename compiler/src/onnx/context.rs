//! The lowering context: the IR graph being built, the map from ONNX value names to IR values,
//! constant lookup, attribute accessors and the folding of weight-only nodes.

use std::collections::{HashMap, HashSet};

use cnnc_ir::{DType, Graph, Op, Tensor, TensorType, ValueRef, infer_types};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, NodeProto, TensorProto};

use super::error::ImportError;

/// Weight-only nodes whose outputs exceed this many bytes stay in the graph instead of folding.
const MAX_FOLD_BYTES: usize = 64 << 20;

/// Weight-only contractions costing more multiply-adds than this stay in the graph.
const MAX_FOLD_WORK: usize = 1 << 30;

/// Multiply-adds of evaluating a contraction (an upper bound); 0 for cheap ops.
fn fold_work(op: &Op, inputs: &[&TensorType], outputs: &[TensorType]) -> usize {
    let out = outputs.first().map_or(0, |t| cnnc_ir::checked_numel(&t.shape).unwrap_or(usize::MAX));
    let per_output = match (op, inputs) {
        (Op::Conv(_) | Op::ConvTranspose(_), [x, w, ..]) => {
            let w_numel = cnnc_ir::checked_numel(&w.shape).unwrap_or(usize::MAX);
            let per = w_numel / w.shape.first().copied().unwrap_or(1).max(1);
            // ConvTranspose scatters every input element over the kernel: bound by both sides.
            per.max(cnnc_ir::checked_numel(&x.shape).unwrap_or(usize::MAX) / out.max(1))
        }
        (Op::MatMul | Op::Gemm { .. }, [a, b, ..]) => a.shape.iter().chain(&b.shape).copied().max().unwrap_or(1),
        _ => 1,
    };
    out.saturating_mul(per_output)
}

/// One ONNX node being lowered, with its IR name and the model's opset.
pub(crate) struct OnnxNode<'m> {
    pub proto: &'m NodeProto,
    /// Unique within the IR graph.
    pub name: String,
    /// The model's ai.onnx opset.
    pub opset: i64,
}

impl<'m> OnnxNode<'m> {
    pub fn bad_attr(&self, attr: &str, reason: impl Into<String>) -> ImportError {
        ImportError::BadAttribute {
            node: self.name.clone(),
            op: self.proto.op_type.clone(),
            attr: attr.to_string(),
            reason: reason.into(),
        }
    }

    pub fn bad_input(&self, reason: impl Into<String>) -> ImportError {
        ImportError::BadInput { node: self.name.clone(), op: self.proto.op_type.clone(), reason: reason.into() }
    }

    pub fn shape_err(&self, reason: impl Into<String>) -> ImportError {
        ImportError::Shape { node: self.name.clone(), op: self.proto.op_type.clone(), reason: reason.into() }
    }

    /// Name of input `i`, `None` when absent (past the end or the empty string).
    pub fn input_name(&self, i: usize) -> Option<&'m str> {
        self.proto.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// Number of outputs the model asks for (including trailing optional ones).
    pub fn n_outputs(&self) -> usize {
        self.proto.output.len()
    }

    /// True when output `i` is present and named.
    pub fn wants_output(&self, i: usize) -> bool {
        self.proto.output.get(i).is_some_and(|s| !s.is_empty())
    }

    fn attr_typed(&self, name: &str, ty: AttributeType) -> Result<Option<&'m AttributeProto>, ImportError> {
        let Some(a) = self.proto.attribute.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        match a.type_.enum_value() {
            Ok(t) if t == ty => Ok(Some(a)),
            // Old exporters leave the type unset; accept the field the caller expects.
            Ok(AttributeType::UNDEFINED) => Ok(Some(a)),
            other => Err(self.bad_attr(
                name,
                format!("expected {}, found {}", type_name(ty), other.map_or("an unknown type", type_name)),
            )),
        }
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.proto.attribute.iter().any(|a| a.name == name)
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ImportError> {
        Ok(self.attr_typed(name, AttributeType::INT)?.map(|a| a.i))
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, ImportError> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// An int attribute that must be 0 or 1.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ImportError> {
        match self.int(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => Err(self.bad_attr(name, format!("must be 0 or 1, got {v}"))),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Option<&'m [i64]>, ImportError> {
        Ok(self.attr_typed(name, AttributeType::INTS)?.map(|a| a.ints.as_slice()))
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>, ImportError> {
        Ok(self.attr_typed(name, AttributeType::FLOAT)?.map(|a| a.f))
    }

    pub fn float_or(&self, name: &str, default: f32) -> Result<f32, ImportError> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    pub fn floats(&self, name: &str) -> Result<Option<&'m [f32]>, ImportError> {
        Ok(self.attr_typed(name, AttributeType::FLOATS)?.map(|a| a.floats.as_slice()))
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, ImportError> {
        match self.attr_typed(name, AttributeType::STRING)? {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s.clone()).map(Some).map_err(|_| self.bad_attr(name, "is not valid UTF-8")),
        }
    }

    pub fn string_or(&self, name: &str, default: &str) -> Result<String, ImportError> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_string()))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&'m TensorProto>, ImportError> {
        match self.attr_typed(name, AttributeType::TENSOR)? {
            None => Ok(None),
            Some(a) => a.t.as_ref().map(Some).ok_or_else(|| self.bad_attr(name, "holds no tensor")),
        }
    }

    /// A list of non-negative ints (sizes, strides, …), each at least `min`.
    pub fn usizes(&self, name: &str, min: usize) -> Result<Option<Vec<usize>>, ImportError> {
        let Some(v) = self.ints(name)? else { return Ok(None) };
        v.iter()
            .map(|&x| {
                usize::try_from(x)
                    .ok()
                    .filter(|&u| u >= min)
                    .ok_or_else(|| self.bad_attr(name, format!("values must be at least {min}, got {v:?}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Normalizes a possibly negative `axis` attribute or input value against `rank`.
    pub fn axis(&self, what: &str, axis: i64, rank: usize) -> Result<usize, ImportError> {
        let r = rank as i64;
        if axis < -r || axis >= r {
            return Err(self.bad_attr(what, format!("axis {axis} is out of range for rank {rank}")));
        }
        Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
    }

    /// Normalizes a list of axes against `rank`, rejecting duplicates.
    pub fn axes(&self, what: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>, ImportError> {
        let mut out = Vec::with_capacity(axes.len());
        for &a in axes {
            let a = self.axis(what, a, rank)?;
            if out.contains(&a) {
                return Err(self.bad_attr(what, format!("axis {a} is repeated in {axes:?}")));
            }
            out.push(a);
        }
        Ok(out)
    }
}

fn type_name(t: AttributeType) -> &'static str {
    match t {
        AttributeType::FLOAT => "a float",
        AttributeType::INT => "an int",
        AttributeType::STRING => "a string",
        AttributeType::TENSOR => "a tensor",
        AttributeType::FLOATS => "a list of floats",
        AttributeType::INTS => "a list of ints",
        AttributeType::STRINGS => "a list of strings",
        _ => "another attribute type",
    }
}

/// What lowering a node produced for each of its outputs, in order (shorter than the node's
/// outputs when trailing optional outputs are not computed).
pub(crate) type Lowered = Vec<ValueRef>;

/// The IR graph under construction and the ONNX value names bound so far.
pub(crate) struct LowerCx {
    pub graph: Graph,
    values: HashMap<String, ValueRef>,
    used_names: HashSet<String>,
    /// Optional outputs nodes declare but cnnc does not compute: value → (node, op type).
    uncomputed: HashMap<String, (String, String)>,
    /// Constants read from u8, i8 or i32 ONNX tensors (stored widened to i64): their ONNX type.
    narrow_ints: HashMap<ValueRef, DType>,
}

impl LowerCx {
    pub fn new(graph_name: &str) -> LowerCx {
        LowerCx {
            graph: Graph::new(graph_name),
            values: HashMap::new(),
            used_names: HashSet::new(),
            uncomputed: HashMap::new(),
            narrow_ints: HashMap::new(),
        }
    }

    /// `base`, or `base_1`, `base_2`, … if already taken.
    pub fn unique_name(&mut self, base: &str) -> String {
        if self.used_names.insert(base.to_string()) {
            return base.to_string();
        }
        (1usize..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.used_names.contains(n))
            .inspect(|n| {
                self.used_names.insert(n.clone());
            })
            .expect("an unused suffix exists")
    }

    pub fn bind(&mut self, onnx_name: &str, v: ValueRef) {
        self.values.insert(onnx_name.to_string(), v);
    }

    pub fn lookup(&self, onnx_name: &str) -> Option<ValueRef> {
        self.values.get(onnx_name).copied()
    }

    /// Adds a graph input named `name`.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> ValueRef {
        let n = self.unique_name(name);
        let v = self.graph.add_input(n, ty);
        self.bind(name, v);
        v
    }

    /// Adds a constant called (a unique version of) `name`.
    pub fn add_const(&mut self, name: &str, t: Tensor) -> ValueRef {
        let n = self.unique_name(name);
        self.graph.add_weight(n, t)
    }

    /// Adds a constant read from an ONNX tensor of element type `elem_type`, remembering a u8,
    /// i8 or i32 type that the import widened to i64.
    pub fn add_onnx_const(&mut self, name: &str, t: Tensor, elem_type: i32) -> ValueRef {
        let v = self.add_const(name, t);
        if let Some(d) = super::proto::narrow_int_dtype(elem_type) {
            self.narrow_ints.insert(v, d);
        }
        v
    }

    /// The ONNX integer type (u8, i8, i32) of a constant the import widened to i64.
    pub fn narrow_int_dtype(&self, v: ValueRef) -> Option<DType> {
        self.narrow_ints.get(&v).copied()
    }

    /// Input `i` of `node`, which must be present.
    pub fn input(&self, node: &OnnxNode, i: usize) -> Result<ValueRef, ImportError> {
        match node.input_name(i) {
            None => Err(node.bad_input(format!("input {i} is required"))),
            Some(name) => self.resolve(node, name),
        }
    }

    /// Input `i` of `node`, `None` when absent.
    pub fn opt_input(&self, node: &OnnxNode, i: usize) -> Result<Option<ValueRef>, ImportError> {
        node.input_name(i).map(|name| self.resolve(node, name)).transpose()
    }

    /// Every present input of `node`, in order.
    pub fn inputs(&self, node: &OnnxNode) -> Result<Vec<ValueRef>, ImportError> {
        (0..node.proto.input.len()).filter_map(|i| self.opt_input(node, i).transpose()).collect()
    }

    /// Records that output `value` of `node` is declared but not computed.
    pub fn mark_uncomputed(&mut self, value: &str, node: &OnnxNode) {
        self.uncomputed.insert(value.to_string(), (node.name.clone(), node.proto.op_type.clone()));
    }

    fn resolve(&self, node: &OnnxNode, name: &str) -> Result<ValueRef, ImportError> {
        if let Some(v) = self.lookup(name) {
            return Ok(v);
        }
        Err(match self.uncomputed.get(name) {
            Some((producer, op)) => node.bad_input(format!(
                "reads `{name}`, an optional output of node `{producer}` ({op}) that cnnc does not compute"
            )),
            None => ImportError::UndefinedValue { node: node.name.clone(), value: name.to_string() },
        })
    }

    /// The value behind graph output `name`.
    pub fn resolve_output(&self, name: &str) -> Result<ValueRef, ImportError> {
        if let Some(v) = self.lookup(name) {
            return Ok(v);
        }
        Err(match self.uncomputed.get(name) {
            Some((producer, op)) => ImportError::BadInput {
                node: producer.clone(),
                op: op.clone(),
                reason: format!("graph output `{name}` is an optional output that cnnc does not compute"),
            },
            None => ImportError::UndefinedOutput { value: name.to_string() },
        })
    }

    pub fn ty(&self, v: ValueRef) -> &TensorType {
        self.graph.value_type(&v)
    }

    pub fn shape(&self, v: ValueRef) -> Vec<usize> {
        self.graph.value_type(&v).shape.clone()
    }

    pub fn constant(&self, v: ValueRef) -> Option<&Tensor> {
        self.graph.weight_of(&v)
    }

    /// Input `i` as a constant tensor; `None` when absent, `BadInput` when computed at run time.
    pub fn const_input(&self, node: &OnnxNode, i: usize, what: &str) -> Result<Option<&Tensor>, ImportError> {
        let Some(v) = self.opt_input(node, i)? else { return Ok(None) };
        self.constant(v).map(Some).ok_or_else(|| {
            node.bad_input(format!(
                "input {i} ({what}) must be a constant (an initializer, a Constant node or foldable from them)"
            ))
        })
    }

    /// Input `i` as constant integers (i64 data; an empty tensor gives an empty list).
    pub fn const_ints(&self, node: &OnnxNode, i: usize, what: &str) -> Result<Option<Vec<i64>>, ImportError> {
        let Some(t) = self.const_input(node, i, what)? else { return Ok(None) };
        match t.as_i64() {
            Some(v) => Ok(Some(v.to_vec())),
            None if t.numel() == 0 => Ok(Some(Vec::new())),
            None => Err(node.bad_input(format!("input {i} ({what}) must hold integers, got {}", t.dtype()))),
        }
    }

    /// Input `i` as constant floats (f32 data, integers converted).
    pub fn const_floats(&self, node: &OnnxNode, i: usize, what: &str) -> Result<Option<Vec<f32>>, ImportError> {
        let Some(t) = self.const_input(node, i, what)? else { return Ok(None) };
        match (t.as_f32(), t.as_i64()) {
            (Some(v), _) => Ok(Some(v.to_vec())),
            (_, Some(v)) => Ok(Some(v.iter().map(|&x| x as f32).collect())),
            _ => Err(node.bad_input(format!("input {i} ({what}) must hold numbers, got {}", t.dtype()))),
        }
    }

    /// Input `i` as a constant scalar (one element of any shape) converted to f32.
    pub fn const_scalar(&self, node: &OnnxNode, i: usize, what: &str) -> Result<Option<f32>, ImportError> {
        let Some(v) = self.const_floats(node, i, what)? else { return Ok(None) };
        match v.as_slice() {
            [x] => Ok(Some(*x)),
            _ => Err(node.bad_input(format!("input {i} ({what}) must hold one value, got {}", v.len()))),
        }
    }

    /// Adds an IR node for `node`, inferring its output types. When every input is a constant,
    /// the node is evaluated and replaced by weights (up to [`MAX_FOLD_BYTES`]), except a
    /// DequantizeLinear.
    pub fn add(&mut self, node: &OnnxNode, op: Op, inputs: &[ValueRef]) -> Result<Lowered, ImportError> {
        let types: Vec<&TensorType> = inputs.iter().map(|v| self.graph.value_type(v)).collect();
        let out_types = infer_types(&op, &types).map_err(|e| node.shape_err(e.reason))?;
        let out_bytes = out_types.iter().try_fold(0usize, |acc, t| {
            cnnc_ir::checked_numel(&t.shape)
                .and_then(|n| n.checked_mul(t.dtype.size_bytes()))
                .and_then(|b| acc.checked_add(b))
        });
        let consts: Option<Vec<&Tensor>> = inputs.iter().map(|v| self.graph.weight_of(v)).collect();
        // A DequantizeLinear stays, even of a constant: `-O1`'s QDQ rules turn the
        // DequantizeLinear → conv → QuantizeLinear chains it starts into integer ops, and fold
        // the rest (`qdq-fold-weight`).
        if let (Some(consts), Some(bytes)) = (consts, out_bytes)
            && !inputs.is_empty()
            && !matches!(op, Op::Dequantize(_))
            && bytes <= MAX_FOLD_BYTES
            && fold_work(&op, &types, &out_types) <= MAX_FOLD_WORK
        {
            let results = cnnc_runtime::eval_op(&op, &consts, &out_types)
                .map_err(|e| node.bad_input(format!("evaluating on constant inputs failed: {e}")))?;
            if results.len() != out_types.len() || results.iter().zip(&out_types).any(|(t, ty)| &t.ty() != ty) {
                return Err(node.bad_input("constant folding produced tensors of unexpected types"));
            }
            let many = results.len() > 1;
            return Ok(results
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    let base = if many { format!("{}:{i}", node.name) } else { node.name.clone() };
                    self.add_const(&base, t)
                })
                .collect());
        }
        let name = self.unique_name(&node.name);
        let n = out_types.len();
        let id = self.graph.add_node_typed(name, op, inputs, out_types);
        Ok((0..n).map(|slot| ValueRef::new(id, slot)).collect())
    }

    /// Adds one node with one output; see [`LowerCx::add`].
    pub fn add1(&mut self, node: &OnnxNode, op: Op, inputs: &[ValueRef]) -> Result<ValueRef, ImportError> {
        let outs = self.add(node, op, inputs)?;
        outs.into_iter().next().ok_or_else(|| node.shape_err("op produced no output"))
    }

    /// A scalar f32 constant owned by `node`.
    pub fn scalar_f32(&mut self, node: &OnnxNode, what: &str, x: f32) -> ValueRef {
        let t = Tensor::from_f32(Vec::<usize>::new(), vec![x]).expect("one element for a scalar");
        self.add_const(&format!("{}/{what}", node.name), t)
    }

    /// A scalar bool constant owned by `node`.
    pub fn scalar_bool(&mut self, node: &OnnxNode, what: &str, x: bool) -> ValueRef {
        let t = Tensor::from_bool(Vec::<usize>::new(), vec![x]).expect("one element for a scalar");
        self.add_const(&format!("{}/{what}", node.name), t)
    }
}
