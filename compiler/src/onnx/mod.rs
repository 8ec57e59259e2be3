//! ONNX import and export. Import decodes a `ModelProto`, binds dynamic input dimensions,
//! lowers every node through the op table below into [`cnnc_ir`] ops (resolving constant
//! parameter inputs into attributes), folds weight-only subgraphs, and verifies the result.
//! Export (`export.rs`) writes a verified graph back as an opset-18 `ModelProto`.
//!
//! Only this module names onnx-protobuf types.

mod activation;
mod context;
mod conv;
mod elementwise;
mod error;
mod export;
mod matmul;
mod norm;
mod pool;
mod proto;
mod qoperator;
mod quantize;
mod reduce;
mod resize;
mod shape;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;

use cnnc_ir::{BinaryOp, DType, ReduceKind, TensorType, UnaryOp, VerifiedGraph};
use onnx_protobuf::tensor_shape_proto::dimension;
use onnx_protobuf::{GraphProto, ModelProto, ValueInfoProto, type_proto};

use context::{LowerCx, Lowered, OnnxNode};
pub use error::{ImportError, UnsupportedOp};
pub use export::{EXPORT_OPSET, ExportError, export_bytes, export_model};

/// The newest ai.onnx opset the importer knows (onnx 1.23's). Every op in [`LOWERINGS`] was
/// checked against each of its versions up to this one; a newer opset may change any op's
/// meaning, so a model importing it is refused.
pub(crate) const MAX_OPSET: i64 = 28;

/// The model opsets at which an op's lowering implements the op's meaning: from the op's first
/// version whose semantics the lowering follows to the last before a version it does not
/// (or before the op was removed). Opsets between two versions of an op mean its earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Opsets {
    first: i64,
    last: i64,
}

impl Opsets {
    const fn from(first: i64) -> Opsets {
        Opsets { first, last: MAX_OPSET }
    }

    const fn range(first: i64, last: i64) -> Opsets {
        Opsets { first, last }
    }

    fn contains(self, opset: i64) -> bool {
        (self.first..=self.last).contains(&opset)
    }
}

/// Options of an import.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Shapes for graph inputs (from `--input-shape name=1x3x640x640`): binds dynamic
    /// dimensions, and must agree with dimensions the model declares.
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// Shapes of the arrays the caller will feed (`cnnc run`'s `.npy` files). They bind the
    /// dynamic dimensions of same-named inputs that `input_shapes` leaves unbound; names the
    /// model lacks and disagreeing static dimensions are left for the caller's own input check.
    pub input_shape_hints: Vec<(String, Vec<usize>)>,
}

/// Imports the ONNX model at `path`.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<VerifiedGraph, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
    import_bytes(&bytes, &path.display().to_string(), opts)
}

/// Imports an ONNX model from its bytes; `file_name` names it in errors.
pub fn import_bytes(bytes: &[u8], file_name: &str, opts: &ImportOptions) -> Result<VerifiedGraph, ImportError> {
    let model = proto::decode_model(bytes, file_name)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Decode { file: file_name.to_string(), reason: "the model has no graph".into() })?;
    let opset = default_opset(&model, file_name)?;
    if graph.output.is_empty() {
        return Err(ImportError::EmptyGraph { file: file_name.to_string() });
    }
    check_supported(&model, graph, opset, file_name)?;
    if let Some(t) = graph.sparse_initializer.first() {
        let name = t.values.as_ref().map_or("", |v| v.name.as_str());
        return Err(ImportError::BadTensor {
            tensor: name.to_string(),
            reason: "sparse initializers are not supported".into(),
        });
    }
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let names = node_names(graph);
    let order = topo_order(graph, &initializers, &names)?;

    let mut cx = LowerCx::new(&graph.name);
    bind_inputs(&mut cx, graph, &initializers, opts)?;
    for t in &graph.initializer {
        let tensor = proto::tensor_from_proto(t, &t.name)?;
        let v = cx.add_onnx_const(&t.name, tensor, t.data_type);
        cx.bind(&t.name, v);
    }
    for i in order {
        let node_proto = &graph.node[i];
        let node = OnnxNode { proto: node_proto, name: names[i].clone(), opset };
        let lower = lowering(&node_proto.domain, &node_proto.op_type, opset).map_err(|missing| {
            ImportError::UnsupportedOps { file: file_name.to_string(), ops: vec![unsupported(&model, &node, missing)] }
        })?;
        let outputs = lower(&mut cx, &node)?;
        for (slot, out) in node_proto.output.iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            match outputs.get(slot) {
                Some(&v) => cx.bind(out, v),
                None => cx.mark_uncomputed(out, &node),
            }
        }
    }
    for out in &graph.output {
        let v = cx.resolve_output(&out.name)?;
        cx.graph.add_output(out.name.clone(), v);
    }
    let mut g = cx.graph;
    g.remove_dead_nodes();
    Ok(cnnc_ir::verify(g)?)
}

/// Parses `--input-shape` text: `NAME=D0xD1x…` (split at the last `=`, so names may contain `=`).
pub fn parse_input_shape(arg: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) =
        arg.rsplit_once('=').ok_or_else(|| format!("expected NAME=DIMS such as x=1x3x224x224, got `{arg}`"))?;
    if name.is_empty() {
        return Err(format!("`{arg}` has an empty input name"));
    }
    if dims.trim().is_empty() {
        return Err(format!("`{arg}` gives no dimensions"));
    }
    let dims = dims
        .split(['x', 'X', ','])
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .ok()
                .ok_or_else(|| format!("`{arg}`: dimension `{d}` is not a non-negative integer"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

type LowerFn = fn(&mut LowerCx, &OnnxNode) -> Result<Lowered, ImportError>;

/// The op table: ONNX op type (default domain), the model opsets whose meaning of the op its
/// lowering implements (a node outside them is refused by name), and the lowering. The
/// versions below an op's first opset differ in meaning from the one implemented: PRelu
/// before 7 leaves a slope that is not of size 1 undefined; the others are versions before the
/// op existed. Upsample was deprecated in favour of Resize at opset 10. Changes of meaning
/// inside a range (attributes that became inputs, legacy broadcasting, test-mode flags) are
/// handled by the lowerings, which read `OnnxNode::opset`.
#[rustfmt::skip]
const LOWERINGS: &[(&str, Opsets, LowerFn)] = &[
    ("Conv",               Opsets::from(1),        conv::lower_conv),
    ("ConvTranspose",      Opsets::from(1),        conv::lower_conv_transpose),
    ("MaxPool",            Opsets::from(1),        pool::lower_max_pool),
    ("AveragePool",        Opsets::from(1),        pool::lower_avg_pool),
    ("GlobalAveragePool",  Opsets::from(1),        pool::lower_global_avg_pool),
    ("GlobalMaxPool",      Opsets::from(1),        pool::lower_global_max_pool),
    ("BatchNormalization", Opsets::from(1),        norm::lower_batch_norm),
    ("Relu",               Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Relu)),
    ("Sigmoid",            Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Sigmoid)),
    ("Tanh",               Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Tanh)),
    ("HardSwish",          Opsets::from(14),       |cx, n| activation::lower_unary(cx, n, UnaryOp::HardSwish)),
    ("LeakyRelu",          Opsets::from(1),        activation::lower_leaky_relu),
    ("HardSigmoid",        Opsets::from(1),        activation::lower_hard_sigmoid),
    ("Clip",               Opsets::from(1),        activation::lower_clip),
    ("PRelu",              Opsets::from(7),        activation::lower_prelu),
    ("Exp",                Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Exp)),
    ("Log",                Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Log)),
    ("Erf",                Opsets::from(9),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Erf)),
    ("Sqrt",               Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Sqrt)),
    ("Reciprocal",         Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Reciprocal)),
    ("Neg",                Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Neg)),
    ("Abs",                Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Abs)),
    ("Floor",              Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Floor)),
    ("Ceil",               Opsets::from(1),        |cx, n| activation::lower_unary(cx, n, UnaryOp::Ceil)),
    ("Add",                Opsets::from(1),        |cx, n| elementwise::lower_binary(cx, n, BinaryOp::Add)),
    ("Sub",                Opsets::from(1),        |cx, n| elementwise::lower_binary(cx, n, BinaryOp::Sub)),
    ("Mul",                Opsets::from(1),        |cx, n| elementwise::lower_binary(cx, n, BinaryOp::Mul)),
    ("Div",                Opsets::from(1),        |cx, n| elementwise::lower_binary(cx, n, BinaryOp::Div)),
    ("Pow",                Opsets::from(1),        |cx, n| elementwise::lower_binary(cx, n, BinaryOp::Pow)),
    ("Equal",              Opsets::from(1),        |cx, n| elementwise::lower_binary(cx, n, BinaryOp::Equal)),
    ("Less",               Opsets::from(1),        |cx, n| elementwise::lower_binary(cx, n, BinaryOp::Less)),
    ("Greater",            Opsets::from(1),        |cx, n| elementwise::lower_binary(cx, n, BinaryOp::Greater)),
    ("LessOrEqual",        Opsets::from(12),       |cx, n| elementwise::lower_negated_comparison(cx, n, BinaryOp::Greater)),
    ("GreaterOrEqual",     Opsets::from(12),       |cx, n| elementwise::lower_negated_comparison(cx, n, BinaryOp::Less)),
    ("Not",                Opsets::from(1),        elementwise::lower_not),
    ("And",                Opsets::from(1),        elementwise::lower_and),
    ("Or",                 Opsets::from(1),        elementwise::lower_or),
    ("Where",              Opsets::from(9),        elementwise::lower_where),
    ("Sum",                Opsets::from(1),        |cx, n| elementwise::lower_variadic(cx, n, BinaryOp::Add)),
    ("Max",                Opsets::from(1),        |cx, n| elementwise::lower_variadic(cx, n, BinaryOp::Max)),
    ("Min",                Opsets::from(1),        |cx, n| elementwise::lower_variadic(cx, n, BinaryOp::Min)),
    ("Mean",               Opsets::from(1),        elementwise::lower_mean),
    ("MatMul",             Opsets::from(1),        matmul::lower_matmul),
    ("Gemm",               Opsets::from(1),        matmul::lower_gemm),
    ("Resize",             Opsets::from(10),       resize::lower_resize),
    ("Upsample",           Opsets::range(1, 9),    resize::lower_upsample),
    ("Reshape",            Opsets::from(1),        shape::lower_reshape),
    ("Flatten",            Opsets::from(1),        shape::lower_flatten),
    ("Squeeze",            Opsets::from(1),        shape::lower_squeeze),
    ("Unsqueeze",          Opsets::from(1),        shape::lower_unsqueeze),
    ("Transpose",          Opsets::from(1),        shape::lower_transpose),
    ("Slice",              Opsets::from(1),        shape::lower_slice),
    ("Gather",             Opsets::from(1),        shape::lower_gather),
    ("Expand",             Opsets::from(8),        shape::lower_expand),
    ("Concat",             Opsets::from(1),        shape::lower_concat),
    ("Split",              Opsets::from(1),        shape::lower_split),
    ("Pad",                Opsets::from(1),        shape::lower_pad),
    ("Shape",              Opsets::from(1),        shape::lower_shape),
    ("Size",               Opsets::from(1),        shape::lower_size),
    ("ConstantOfShape",    Opsets::from(9),        shape::lower_constant_of_shape),
    ("Range",              Opsets::from(11),       shape::lower_range),
    ("Cast",               Opsets::from(1),        shape::lower_cast),
    ("QuantizeLinear",     Opsets::from(10),       quantize::lower_quantize_linear),
    ("DequantizeLinear",   Opsets::from(10),       quantize::lower_dequantize_linear),
    ("QLinearConv",        Opsets::from(10),       qoperator::lower_qlinear_conv),
    ("QLinearMatMul",      Opsets::from(10),       qoperator::lower_qlinear_matmul),
    ("ConvInteger",        Opsets::from(10),       qoperator::lower_conv_integer),
    ("MatMulInteger",      Opsets::from(10),       qoperator::lower_matmul_integer),
    ("Identity",           Opsets::from(1),        shape::lower_identity),
    ("Dropout",            Opsets::from(1),        shape::lower_dropout),
    ("Constant",           Opsets::from(1),        shape::lower_constant),
    ("Softmax",            Opsets::from(1),        reduce::lower_softmax),
    ("ReduceMean",         Opsets::from(1),        |cx, n| reduce::lower_reduce(cx, n, ReduceKind::Mean)),
    ("ReduceSum",          Opsets::from(1),        |cx, n| reduce::lower_reduce(cx, n, ReduceKind::Sum)),
    ("ReduceMax",          Opsets::from(1),        |cx, n| reduce::lower_reduce(cx, n, ReduceKind::Max)),
    ("ReduceMin",          Opsets::from(1),        |cx, n| reduce::lower_reduce(cx, n, ReduceKind::Min)),
    ("ReduceProd",         Opsets::from(1),        |cx, n| reduce::lower_reduce(cx, n, ReduceKind::Prod)),
    ("ReduceL1",           Opsets::from(1),        |cx, n| reduce::lower_reduce(cx, n, ReduceKind::L1)),
    ("ReduceL2",           Opsets::from(1),        |cx, n| reduce::lower_reduce(cx, n, ReduceKind::L2)),
    ("ReduceSumSquare",    Opsets::from(1),        |cx, n| reduce::lower_reduce(cx, n, ReduceKind::SumSquare)),
    ("ReduceLogSum",       Opsets::from(1),        |cx, n| reduce::lower_reduce(cx, n, ReduceKind::LogSum)),
    ("ReduceLogSumExp",    Opsets::from(1),        |cx, n| reduce::lower_reduce(cx, n, ReduceKind::LogSumExp)),
    ("ArgMax",             Opsets::from(1),        |cx, n| reduce::lower_arg_reduce(cx, n, true)),
    ("ArgMin",             Opsets::from(1),        |cx, n| reduce::lower_arg_reduce(cx, n, false)),
];

/// The ops of the `com.microsoft` domain that onnxruntime's quantizer writes (QOperator format),
/// each with a single version.
#[rustfmt::skip]
const MS_LOWERINGS: &[(&str, LowerFn)] = &[
    ("QGemm",                     qoperator::lower_qgemm),
    ("QLinearAdd",                qoperator::lower_qlinear_add),
    ("QLinearGlobalAveragePool",  qoperator::lower_qlinear_global_avg_pool),
];

/// The lowering of `op_type` in `domain` for a model of ai.onnx opset `opset`; the error holds
/// the opsets a default-domain op is implemented at, `None` for an op cnnc does not know.
fn lowering(domain: &str, op_type: &str, opset: i64) -> Result<LowerFn, Option<Opsets>> {
    if domain == "com.microsoft" {
        return MS_LOWERINGS.iter().find(|(name, _)| *name == op_type).map(|&(_, f)| f).ok_or(None);
    }
    if !is_default_domain(domain) {
        return Err(None);
    }
    let &(_, opsets, f) = LOWERINGS.iter().find(|(name, ..)| *name == op_type).ok_or(None)?;
    if opsets.contains(opset) { Ok(f) } else { Err(Some(opsets)) }
}

fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

fn default_opset(model: &ModelProto, file: &str) -> Result<i64, ImportError> {
    let version =
        model.opset_import.iter().filter(|o| is_default_domain(&o.domain)).map(|o| o.version).max().ok_or_else(
            || ImportError::Decode { file: file.to_string(), reason: "the model imports no ai.onnx opset".into() },
        )?;
    if !(1..=MAX_OPSET).contains(&version) {
        return Err(ImportError::UnsupportedOpset { file: file.to_string(), domain: "ai.onnx".into(), version });
    }
    Ok(version)
}

fn unsupported(model: &ModelProto, node: &OnnxNode, implemented: Option<Opsets>) -> UnsupportedOp {
    let domain = &node.proto.domain;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain == *domain || (is_default_domain(domain) && is_default_domain(&o.domain)))
        .map_or(0, |o| o.version);
    UnsupportedOp {
        node: node.name.clone(),
        op_type: node.proto.op_type.clone(),
        domain: if is_default_domain(domain) { "ai.onnx".into() } else { domain.clone() },
        opset,
        implemented: implemented.map(|o| (o.first, o.last)),
    }
}

/// Lists every node the importer cannot lower, all at once.
fn check_supported(model: &ModelProto, graph: &GraphProto, opset: i64, file: &str) -> Result<(), ImportError> {
    let names = node_names(graph);
    let ops: Vec<UnsupportedOp> = graph
        .node
        .iter()
        .zip(names)
        .filter_map(|(proto, name)| {
            let missing = lowering(&proto.domain, &proto.op_type, opset).err()?;
            Some(unsupported(model, &OnnxNode { proto, name, opset }, missing))
        })
        .collect();
    if ops.is_empty() { Ok(()) } else { Err(ImportError::UnsupportedOps { file: file.to_string(), ops }) }
}

/// The ONNX node name, or `<op_type>_<index>` when empty.
fn node_names(graph: &GraphProto) -> Vec<String> {
    graph
        .node
        .iter()
        .enumerate()
        .map(|(i, n)| if n.name.is_empty() { format!("{}_{i}", n.op_type) } else { n.name.clone() })
        .collect()
}

/// Orders nodes so producers come first (file order where free), rejecting undefined values,
/// values defined twice and cycles.
fn topo_order(graph: &GraphProto, initializers: &HashSet<&str>, names: &[String]) -> Result<Vec<usize>, ImportError> {
    let mut defined: HashMap<&str, String> = HashMap::new();
    for i in &graph.input {
        defined.insert(i.name.as_str(), "<graph input>".into());
    }
    for &i in initializers {
        defined.insert(i, "<initializer>".into());
    }
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (idx, n) in graph.node.iter().enumerate() {
        for out in n.output.iter().filter(|o| !o.is_empty()) {
            let first =
                producer.get(out.as_str()).map(|&p| names[p].clone()).or_else(|| defined.get(out.as_str()).cloned());
            if let Some(first) = first {
                return Err(ImportError::DuplicateValue { value: out.clone(), first, second: names[idx].clone() });
            }
            producer.insert(out.as_str(), idx);
        }
    }
    let n = graph.node.len();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (idx, node) in graph.node.iter().enumerate() {
        for input in node.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(input.as_str()) {
                consumers[p].push(idx);
                indegree[idx] += 1;
            } else if !defined.contains_key(input.as_str()) {
                return Err(ImportError::UndefinedValue { node: names[idx].clone(), value: input.clone() });
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &c in &consumers[i] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(Reverse(c));
            }
        }
    }
    if let Some(stuck) = (0..n).find(|&i| indegree[i] > 0) {
        return Err(ImportError::Cycle { node: names[stuck].clone() });
    }
    Ok(order)
}

/// A declared input dimension.
enum Dim {
    Static(usize),
    Dynamic(String),
}

fn declared_dims(vi: &ValueInfoProto) -> Result<(DType, Option<Vec<Dim>>), ImportError> {
    let input_err = |reason: String| ImportError::InputType { input: vi.name.clone(), reason };
    let Some(type_proto::Value::TensorType(tt)) = vi.type_.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(input_err("is not a tensor (sequences, maps and optionals are not supported)".into()));
    };
    use onnx_protobuf::tensor_proto::DataType as D;
    let dtype = match <D as protobuf::Enum>::from_i32(tt.elem_type) {
        Some(D::FLOAT) => DType::F32,
        Some(D::INT64) => DType::I64,
        Some(D::BOOL) => DType::Bool,
        Some(D::UINT8) => DType::U8,
        Some(D::INT8) => DType::I8,
        Some(D::INT32) => DType::I32,
        _ => {
            return Err(input_err(format!(
                "element type {} is not supported (float, int64, bool, uint8, int8 and int32 are)",
                proto::elem_type_name(tt.elem_type)
            )));
        }
    };
    let dims = tt.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                // 0 is a size (an empty tensor), not an unknown dimension.
                Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Static(*v as usize),
                Some(dimension::Value::DimValue(v)) => Dim::Dynamic(v.to_string()),
                Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Dynamic(p.clone()),
                _ => Dim::Dynamic("?".into()),
            })
            .collect()
    });
    Ok((dtype, dims))
}

fn flag_text(name: &str, dims: &[usize]) -> String {
    let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("{name}={}", dims.join("x"))
}

/// Adds the graph inputs (those that are not initializers) with their bound shapes.
fn bind_inputs(
    cx: &mut LowerCx,
    graph: &GraphProto,
    initializers: &HashSet<&str>,
    opts: &ImportOptions,
) -> Result<(), ImportError> {
    let inputs: Vec<&ValueInfoProto> = graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).collect();
    let mut seen = HashSet::new();
    for (name, dims) in &opts.input_shapes {
        let flag_err = |reason: String| ImportError::InputShapeFlag { arg: flag_text(name, dims), reason };
        if !seen.insert(name.as_str()) {
            return Err(flag_err(format!("input `{name}` is given more than once")));
        }
        if !inputs.iter().any(|i| i.name == *name) {
            let names: Vec<String> = inputs.iter().map(|i| format!("`{}`", i.name)).collect();
            return Err(flag_err(format!("the model has no input `{name}` (its inputs: {})", names.join(", "))));
        }
        if dims.is_empty() {
            return Err(flag_err("no dimensions given".into()));
        }
    }
    for vi in inputs {
        let (dtype, declared) = declared_dims(vi)?;
        let flag = opts.input_shapes.iter().find(|(n, _)| *n == vi.name).map(|(_, d)| d);
        let hint = opts.input_shape_hints.iter().find(|(n, _)| *n == vi.name).map(|(_, d)| d);
        let shape = match (declared, flag) {
            (None, None) => {
                return Err(ImportError::InputType {
                    input: vi.name.clone(),
                    reason: format!("declares no shape; give one with --input-shape {}=…", vi.name),
                });
            }
            (None, Some(f)) => f.clone(),
            (Some(decl), None) => {
                let mut shape = Vec::with_capacity(decl.len());
                for (i, d) in decl.iter().enumerate() {
                    match d {
                        Dim::Static(v) => shape.push(*v),
                        Dim::Dynamic(_) if hint.is_some_and(|h| h.len() == decl.len()) => {
                            shape.push(hint.expect("checked by the guard")[i]);
                        }
                        Dim::Dynamic(name) => {
                            let template: Vec<String> = decl
                                .iter()
                                .map(|d| match d {
                                    Dim::Static(v) => v.to_string(),
                                    Dim::Dynamic(_) => "?".into(),
                                })
                                .collect();
                            return Err(ImportError::UnboundDim {
                                input: vi.name.clone(),
                                dim_index: i,
                                dim_name: name.clone(),
                                template: template.join("x"),
                            });
                        }
                    }
                }
                shape
            }
            (Some(decl), Some(f)) => {
                let flag_err = |reason: String| ImportError::InputShapeFlag { arg: flag_text(&vi.name, f), reason };
                if decl.len() != f.len() {
                    return Err(flag_err(format!(
                        "input `{}` has rank {}, the flag gives {} dimension(s)",
                        vi.name,
                        decl.len(),
                        f.len()
                    )));
                }
                for (i, (d, &v)) in decl.iter().zip(f).enumerate() {
                    if let Dim::Static(s) = d
                        && *s != v
                    {
                        return Err(flag_err(format!(
                            "dimension {i} of input `{}` is declared as {s}, the flag gives {v}",
                            vi.name
                        )));
                    }
                }
                f.clone()
            }
        };
        let dims: Vec<i64> = shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect();
        proto::checked_shape(&vi.name, &dims, dtype)?;
        cx.add_input(&vi.name, TensorType::new(dtype, shape));
    }
    Ok(())
}
