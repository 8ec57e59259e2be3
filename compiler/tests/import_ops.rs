//! Import of tiny hand-built ONNX models: op lowering, attribute resolution, constant
//! folding, and the errors users see. Every model goes through `import` / `import_with`.

use cnnc::onnx::{ImportError, ImportOptions, import_bytes, parse_input_shape};
use cnnc_ir::{CoordTransform, DType, NearestMode, Op, QuantParams, ResizeMode, SliceAxis, VerifiedGraph};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, type_proto,
};
use protobuf::{Enum, Message};

// ---- model builder ---------------------------------------------------------------------

struct Model(ModelProto);

fn model(opset: i64) -> Model {
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.opset_import.push(OperatorSetIdProto { domain: String::new(), version: opset, ..Default::default() });
    m.graph = Some(GraphProto { name: "g".into(), ..Default::default() }).into();
    Model(m)
}

impl Model {
    fn graph(&mut self) -> &mut GraphProto {
        self.0.graph.as_mut().expect("builder sets a graph")
    }

    /// `dims` entries are numbers (static) or names (dynamic).
    fn input(self, name: &str, dims: &[&str]) -> Self {
        self.input_of(name, dims, DataType::FLOAT)
    }

    fn input_of(mut self, name: &str, dims: &[&str], elem_type: DataType) -> Self {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d.parse::<i64>() {
                    Ok(v) => dimension::Value::DimValue(v),
                    Err(_) => dimension::Value::DimParam(d.to_string()),
                }),
                ..Default::default()
            })
            .collect();
        let tt = type_proto::Tensor {
            elem_type: elem_type.value(),
            shape: Some(TensorShapeProto { dim, ..Default::default() }).into(),
            ..Default::default()
        };
        let vi = ValueInfoProto {
            name: name.into(),
            type_: Some(TypeProto { value: Some(type_proto::Value::TensorType(tt)), ..Default::default() }).into(),
            ..Default::default()
        };
        self.graph().input.push(vi);
        self
    }

    fn init(mut self, t: TensorProto) -> Self {
        self.graph().initializer.push(t);
        self
    }

    fn node(mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> Self {
        let n = NodeProto {
            op_type: op.into(),
            name: format!("{op}_{}", self.graph().node.len()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        };
        self.graph().node.push(n);
        self
    }

    fn output(mut self, name: &str) -> Self {
        self.graph().output.push(ValueInfoProto { name: name.into(), ..Default::default() });
        self
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.write_to_bytes().expect("model encodes")
    }
}

fn f32s(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::FLOAT.value(),
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn i64s(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![data.len() as i64],
        data_type: DataType::INT64.value(),
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto { name: name.into(), type_: ty.into(), ..Default::default() }
}

fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { i: v, ..attr(name, AttributeType::INT) }
}

fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { ints: v.to_vec(), ..attr(name, AttributeType::INTS) }
}

fn a_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { f: v, ..attr(name, AttributeType::FLOAT) }
}

fn a_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto { s: v.as_bytes().to_vec(), ..attr(name, AttributeType::STRING) }
}

fn a_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto { t: Some(t).into(), ..attr(name, AttributeType::TENSOR) }
}

fn import(m: &Model) -> Result<VerifiedGraph, ImportError> {
    import_bytes(&m.bytes(), "test.onnx", &ImportOptions::default())
}

fn import_with(m: &Model, shapes: &[(&str, &[usize])]) -> Result<VerifiedGraph, ImportError> {
    let opts = ImportOptions {
        input_shapes: shapes.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect(),
        ..Default::default()
    };
    import_bytes(&m.bytes(), "test.onnx", &opts)
}

/// The ops of every non-source node, in insertion order.
fn ops(g: &VerifiedGraph) -> Vec<Op> {
    g.node_ids().map(|id| g.node(id).op.clone()).filter(|op| !op.is_source()).collect()
}

fn only_op(g: &VerifiedGraph) -> Op {
    match ops(g).as_slice() {
        [op] => op.clone(),
        other => panic!("expected one op, got {other:?}"),
    }
}

fn output_shape(g: &VerifiedGraph, i: usize) -> Vec<usize> {
    g.value_type(&g.outputs()[i].value).shape.clone()
}

fn conv_model(attrs: Vec<AttributeProto>, x: &[&str], w: &[i64]) -> Model {
    let n = w.iter().product::<i64>() as usize;
    model(13).input("x", x).init(f32s("w", w, &vec![0.5; n])).node("Conv", &["x", "w"], &["y"], attrs).output("y")
}

// ---- errors ---------------------------------------------------------------------------

#[test]
fn unsupported_ops_are_all_listed_at_once() {
    let mut m = model(13)
        .input("x", &["1", "4"])
        .node("LSTM", &["x"], &["a"], vec![])
        .node("TopK", &["a"], &["b", "c"], vec![])
        .node("Relu", &["b"], &["d"], vec![])
        .node("FusedConv", &["d"], &["y"], vec![])
        .output("y");
    m.graph().node[3].domain = "com.microsoft".into();
    let err = import(&m).unwrap_err();
    let ImportError::UnsupportedOps { ops, .. } = &err else { panic!("{err}") };
    let names: Vec<&str> = ops.iter().map(|o| o.op_type.as_str()).collect();
    assert_eq!(names, ["LSTM", "TopK", "FusedConv"]);
    let msg = err.to_string();
    for s in ["LSTM", "TopK", "com.microsoft", "FusedConv", "opset 13"] {
        assert!(msg.contains(s), "{msg}");
    }
}

#[test]
fn unbound_dynamic_dim_names_input_and_flag() {
    let m = model(13).input("x", &["N", "3", "8", "8"]).node("Relu", &["x"], &["y"], vec![]).output("y");
    let err = import(&m).unwrap_err();
    assert!(matches!(err, ImportError::UnboundDim { dim_index: 0, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("`x`") && msg.contains("`N`") && msg.contains("--input-shape x=?x3x8x8"), "{msg}");
    let g = import_with(&m, &[("x", &[2, 3, 8, 8])]).unwrap();
    assert_eq!(output_shape(&g, 0), [2, 3, 8, 8]);
}

#[test]
fn input_shape_flag_must_agree_with_declared_dims_and_name_an_input() {
    let m = model(13).input("x", &["N", "3", "8", "8"]).node("Relu", &["x"], &["y"], vec![]).output("y");
    let err = import_with(&m, &[("x", &[1, 4, 8, 8])]).unwrap_err();
    assert!(matches!(err, ImportError::InputShapeFlag { .. }) && err.to_string().contains("declared as 3"), "{err}");
    let err = import_with(&m, &[("x", &[1, 3, 8])]).unwrap_err();
    assert!(err.to_string().contains("rank 4"), "{err}");
    let err = import_with(&m, &[("x", &[1, 3, 8, 8]), ("z", &[1])]).unwrap_err();
    assert!(err.to_string().contains("no input `z`"), "{err}");
}

#[test]
fn parse_input_shape_splits_at_the_last_equals_sign() {
    assert_eq!(parse_input_shape("x=1x3x640x640").unwrap(), ("x".to_string(), vec![1, 3, 640, 640]));
    assert_eq!(parse_input_shape("input:0=1x224x224x3").unwrap().0, "input:0");
    assert_eq!(parse_input_shape("a=b=2x2").unwrap(), ("a=b".to_string(), vec![2, 2]));
    for bad in ["x", "=1x2", "x=", "x=1xq", "x=-1x3"] {
        assert!(parse_input_shape(bad).is_err(), "{bad}");
    }
}

#[test]
fn initializer_claiming_more_elements_than_bytes_is_rejected() {
    let w = TensorProto {
        name: "w".into(),
        dims: vec![4, 3, 3, 3],
        data_type: DataType::FLOAT.value(),
        raw_data: vec![0; 40],
        ..Default::default()
    };
    let m = model(13).input("x", &["1", "3", "8", "8"]).init(w).node("Conv", &["x", "w"], &["y"], vec![]).output("y");
    let err = import(&m).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImportError::BadTensor { .. }), "{msg}");
    assert!(msg.contains("`w`") && msg.contains("432") && msg.contains("40 bytes"), "{msg}");
}

#[test]
fn absurd_tensor_size_is_rejected_before_allocating() {
    for dims in [vec![1 << 40, 1 << 30], vec![1 << 20, 1 << 20], vec![-1, 4]] {
        let big = TensorProto {
            name: "big".into(),
            dims,
            data_type: DataType::FLOAT.value(),
            raw_data: vec![0; 16],
            ..Default::default()
        };
        let m = model(13).input("x", &["1"]).init(big).node("Add", &["x", "big"], &["y"], vec![]).output("y");
        let err = import(&m).unwrap_err();
        assert!(
            matches!(&err, ImportError::TensorTooLarge { tensor, .. } | ImportError::BadTensor { tensor, .. } if tensor == "big"),
            "{err}"
        );
    }
}

#[test]
fn external_data_is_rejected_naming_the_tensor() {
    let mut w = f32s("w", &[1], &[]);
    w.data_location = onnx_protobuf::tensor_proto::DataLocation::EXTERNAL.into();
    let m = model(13).input("x", &["1"]).init(w).node("Add", &["x", "w"], &["y"], vec![]).output("y");
    let msg = import(&m).unwrap_err().to_string();
    assert!(msg.contains("`w`") && msg.contains("external"), "{msg}");
}

/// Constants the importer computes from values rather than reads (Range, ConstantOfShape,
/// Dropout's mask) are bounded (256 MiB) before anything is allocated, with an error naming the
/// node. The import fuzz target found a 200-byte file whose Range asked for 8.5 GB (the second
/// case below is that file, kept verbatim).
#[test]
fn computed_constants_are_bounded_before_allocating() {
    let too_large = |err: &ImportError, node: &str| {
        let msg = err.to_string();
        assert!(
            matches!(err, ImportError::TensorTooLarge { tensor, .. } if tensor == node)
                && msg.contains("268435456 bytes"),
            "{msg}"
        );
    };
    // Range 0..2³⁰ of i64: 8 GiB.
    let m = model(13)
        .input("x", &["1"])
        .init(i64s("start", &[0]))
        .init(i64s("limit", &[1 << 30]))
        .init(i64s("delta", &[1]))
        .node("Range", &["start", "limit", "delta"], &["r"], vec![])
        .node("Cast", &["r"], &["rf"], vec![a_int("to", 1)])
        .node("Add", &["x", "rf"], &["y"], vec![])
        .output("y");
    too_large(&import(&m).unwrap_err(), "Range_0");
    // The fuzzer's file (base64 of the bytes libFuzzer wrote).
    let fuzz = "CAcSDWNubmMtZml4dHVyZXM63wEKIAoFc3RhcnQKBWxpbWl0CgVkZWx0YRICcmciBVJhbmdlChoKAnJnEgNyZ2YiBENhc3QqCQoCdG8YAaABAgoQCgF4CgNyZ2YSAXkiA0FkZBIScmFuZ2VfaW50X2Nhc3RfYWRkKhMQB0IFc3RhcnRKCP//////////KhMQB0IFbGltaXRKCACYln8AAAAAKhMQB0IFZGVsdGFKCAIAAAAAAAAAWhMKAXgSDgoMCAESCAoCCAIKAggFYhMKAXkSDgoMCAESCAoCCAIKAggFYhAKAnJnEgoKCAgHEgQKAggFQgQKABAN";
    let bytes = base64_decode(fuzz);
    let err = import_bytes(&bytes, "fuzz.onnx", &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, ImportError::TensorTooLarge { .. }), "{err}");
    // ConstantOfShape of 2¹⁴ × 2¹⁴ f32: 1 GiB (under the per-tensor element limit).
    let m = model(13)
        .input("x", &["1"])
        .init(i64s("shape", &[1 << 14, 1 << 14]))
        .node("ConstantOfShape", &["shape"], &["c"], vec![])
        .node("Add", &["x", "c"], &["y"], vec![])
        .output("y");
    too_large(&import(&m).unwrap_err(), "ConstantOfShape_0");
    // Dropout's mask for a declared 2¹⁵ × 2¹⁵ input: 1 GiB of bools.
    let m = model(13).input("x", &["32768", "32768"]).node("Dropout", &["x"], &["y", "mask"], vec![]).output("mask");
    too_large(&import(&m).unwrap_err(), "Dropout_0.mask");
}

/// Standard base64 (with padding), for the fuzzer's reproducers.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &d)| n | (u32::from(d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn bytes_that_are_not_a_model_never_panic() {
    let valid = conv_model(vec![], &["1", "1", "4", "4"], &[1, 1, 3, 3]).bytes();
    assert!(import_bytes(&valid, "ok.onnx", &ImportOptions::default()).is_ok());
    for len in 0..valid.len() {
        let _ = import_bytes(&valid[..len], "cut.onnx", &ImportOptions::default());
    }
    for i in 0..valid.len() {
        let mut b = valid.clone();
        b[i] ^= 0xa5;
        let _ = import_bytes(&b, "flip.onnx", &ImportOptions::default());
    }
    for junk in [&b""[..], b"\x89PNG\r\n\x1a\n0000", b"hello, this is text", &valid[..valid.len() / 2]] {
        let err = import_bytes(junk, "junk.onnx", &ImportOptions::default()).unwrap_err();
        assert!(matches!(err, ImportError::Decode { .. }) && err.to_string().contains("parse"), "{err}");
    }
}

#[test]
fn opsets_outside_1_to_28_are_rejected() {
    for v in [0, 29, 99] {
        let m = model(v).input("x", &["1"]).node("Relu", &["x"], &["y"], vec![]).output("y");
        let err = import(&m).unwrap_err();
        assert!(matches!(err, ImportError::UnsupportedOpset { version, .. } if version == v), "{err}");
    }
    for v in [1, 6, 22, 28] {
        let m = model(v).input("x", &["1", "2", "3"]).node("GlobalAveragePool", &["x"], &["y"], vec![]).output("y");
        assert_eq!(only_op(&import(&m).unwrap()), Op::GlobalAvgPool, "opset {v}");
    }
}

#[test]
fn an_op_is_refused_by_name_at_opsets_whose_meaning_cnnc_does_not_implement() {
    // PRelu-6 leaves slopes of more than one element undefined; Upsample is gone from opset 10;
    // HardSwish does not exist before opset 14.
    let prelu = model(6)
        .input("x", &["1", "2"])
        .init(f32s("s", &[2], &[0.1, 0.2]))
        .node("PRelu", &["x", "s"], &["a"], vec![])
        .node("HardSwish", &["a"], &["y"], vec![])
        .output("y");
    let err = import(&prelu).unwrap_err();
    let ImportError::UnsupportedOps { ops, .. } = &err else { panic!("{err}") };
    let found: Vec<_> = ops.iter().map(|o| (o.op_type.as_str(), o.opset, o.implemented)).collect();
    assert_eq!(found, [("PRelu", 6, Some((7, 28))), ("HardSwish", 6, Some((14, 28)))]);
    let msg = err.to_string();
    assert!(msg.contains("ai.onnx:PRelu, opset 6): cnnc implements PRelu at opsets 7 to 28"), "{msg}");
    let upsample = model(10)
        .input("x", &["1", "1", "2", "2"])
        .init(f32s("scales", &[4], &[1.0, 1.0, 2.0, 2.0]))
        .node("Upsample", &["x", "scales"], &["y"], vec![])
        .output("y");
    let err = import(&upsample).unwrap_err().to_string();
    assert!(err.contains("Upsample") && err.contains("opsets 1 to 9"), "{err}");
}

/// The reference outputs of `m` on `inputs` (one per graph input, in order).
fn run(m: &Model, inputs: &[cnnc_ir::Tensor]) -> Vec<cnnc_ir::Tensor> {
    cnnc_runtime::run_reference(&import(m).unwrap(), inputs).unwrap()
}

#[test]
fn binary_ops_before_opset_7_broadcast_b_from_axis() {
    let x = cnnc_ir::Tensor::from_f32([1, 2, 2, 3], (0..12).map(|v| v as f32).collect()).unwrap();
    let add = |opset: i64, b: TensorProto, attrs: Vec<AttributeProto>| {
        model(opset).input("x", &["1", "2", "2", "3"]).init(b).node("Add", &["x", "b"], &["y"], attrs).output("y")
    };
    // Per-channel B [2] at axis 1, as Caffe2-converted models add biases, is B [2, 1, 1] today.
    let legacy = add(6, f32s("b", &[2], &[10.0, 20.0]), vec![a_int("broadcast", 1), a_int("axis", 1)]);
    let today = add(7, f32s("b", &[2, 1, 1], &[10.0, 20.0]), vec![]);
    assert_eq!(run(&legacy, std::slice::from_ref(&x)), run(&today, std::slice::from_ref(&x)));
    // Without `axis`, B's shape matches A's last axes.
    let suffix = add(1, f32s("b", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), vec![a_int("broadcast", 1)]);
    let today = add(13, f32s("b", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), vec![]);
    assert_eq!(run(&suffix, std::slice::from_ref(&x)), run(&today, std::slice::from_ref(&x)));
    // A B that is not a run of A's axes, or a broadcast without the flag, is an error.
    let err = import(&add(6, f32s("b", &[3], &[1.0; 3]), vec![a_int("broadcast", 1), a_int("axis", 1)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("axis") && err.contains("[3]"), "{err}");
    let err = import(&add(6, f32s("b", &[3], &[1.0; 3]), vec![])).unwrap_err().to_string();
    assert!(err.contains("broadcast = 1"), "{err}");
}

#[test]
fn batch_norm_and_dropout_before_opset_7_need_test_mode() {
    let bn = |is_test: i64| {
        let p = |n: &str| f32s(n, &[2], &[1.0, 2.0]);
        model(6)
            .input("x", &["1", "2", "3"])
            .init(p("s"))
            .init(p("b"))
            .init(p("m"))
            .init(p("v"))
            .node("BatchNormalization", &["x", "s", "b", "m", "v"], &["y"], vec![a_int("is_test", is_test)])
            .output("y")
    };
    assert!(matches!(only_op(&import(&bn(1)).unwrap()), Op::BatchNorm { .. }));
    let err = import(&bn(0)).unwrap_err().to_string();
    assert!(err.contains("is_test") && err.contains("training"), "{err}");
    let dropout = |attrs| model(6).input("x", &["2"]).node("Dropout", &["x"], &["y"], attrs).output("y");
    assert!(ops(&import(&dropout(vec![a_int("is_test", 1)])).unwrap()).is_empty());
    assert!(import(&dropout(vec![])).unwrap_err().to_string().contains("is_test"));
}

#[test]
fn opset_1_attribute_forms_of_reshape_concat_split_cast_and_upsample() {
    let m = model(1).input("x", &["2", "3"]).node("Reshape", &["x"], &["y"], vec![a_ints("shape", &[3, -1])]);
    assert_eq!(only_op(&import(&m.output("y")).unwrap()), Op::Reshape { shape: vec![3, 2] });
    // Concat-1's axis defaults to 1.
    let m = model(3).input("a", &["2", "1"]).input("b", &["2", "2"]).node("Concat", &["a", "b"], &["y"], vec![]);
    assert_eq!(output_shape(&import(&m.output("y")).unwrap(), 0), [2, 3]);
    // Split-1 may take its sizes from a second input.
    let m = model(1)
        .input("x", &["5"])
        .init(i64s("sizes", &[2, 3]))
        .node("Split", &["x", "sizes"], &["a", "b"], vec![])
        .output("a")
        .output("b");
    assert_eq!(only_op(&import(&m).unwrap()), Op::Split { axis: 0, sizes: vec![2, 3] });
    // Cast-1 names the type.
    let m = model(5).input("x", &["2"]).node("Cast", &["x"], &["y"], vec![a_str("to", "INT64")]).output("y");
    assert_eq!(only_op(&import(&m).unwrap()), Op::Cast { to: DType::I64 });
    let m = model(5).input("x", &["2"]).node("Cast", &["x"], &["y"], vec![a_str("to", "COMPLEX9")]).output("y");
    assert!(import(&m).unwrap_err().to_string().contains("COMPLEX9"));
    // Upsample-1 scales H and W of an NCHW input.
    let attrs = vec![a_float("height_scale", 2.0), a_float("width_scale", 3.0)];
    let m = model(1).input("x", &["1", "1", "2", "2"]).node("Upsample", &["x"], &["y"], attrs).output("y");
    assert_eq!(output_shape(&import(&m).unwrap(), 0), [1, 1, 4, 6]);
}

#[test]
fn pow_takes_an_integer_exponent_of_any_width() {
    let exponent = |data_type: DataType, data: TensorProto| {
        let t = TensorProto { data_type: data_type.value(), ..data };
        model(15).input("x", &["3"]).init(t).node("Pow", &["x", "e"], &["y"], vec![]).output("y")
    };
    let x = cnnc_ir::Tensor::from_f32([3], vec![2.0, -3.0, 0.5]).unwrap();
    let want = cnnc_ir::Tensor::from_f32([3], vec![8.0, -27.0, 0.125]).unwrap();
    let uint = |v: u64| TensorProto { name: "e".into(), dims: vec![1], uint64_data: vec![v], ..Default::default() };
    let int = |v: i64| TensorProto { name: "e".into(), dims: vec![1], int64_data: vec![v], ..Default::default() };
    let int32 = |v: i32| TensorProto { name: "e".into(), dims: vec![1], int32_data: vec![v], ..Default::default() };
    for m in [
        exponent(DataType::INT64, int(3)),
        exponent(DataType::INT32, int32(3)),
        exponent(DataType::UINT32, uint(3)),
        exponent(DataType::UINT64, uint(3)),
    ] {
        assert_eq!(run(&m, std::slice::from_ref(&x)), std::slice::from_ref(&want));
    }
    // An exponent computed at run time is cast in the graph.
    let m = model(15)
        .input("x", &["3"])
        .input_of("e", &["3"], DataType::INT32)
        .node("Pow", &["x", "e"], &["y"], vec![])
        .output("y");
    let e = cnnc_ir::Tensor::from_i32([3], vec![3, 3, 3]).unwrap();
    assert_eq!(run(&m, &[x, e]), [want]);
    let m = model(15)
        .input_of("x", &["3"], DataType::INT64)
        .input("e", &["3"])
        .node("Pow", &["x", "e"], &["y"], vec![])
        .output("y");
    let err = import(&m).unwrap_err().to_string();
    assert!(err.contains("Pow") && err.contains("base type i64") && err.contains("exponent type f32"), "{err}");
}

#[test]
fn a_declared_dimension_of_0_is_a_size() {
    let m = model(13).input("x", &["2", "0", "3"]).node("Relu", &["x"], &["y"], vec![]).output("y");
    assert_eq!(output_shape(&import(&m).unwrap(), 0), [2, 0, 3]);
    let m = model(13).input("x", &["N", "3"]).node("Relu", &["x"], &["y"], vec![]).output("y");
    assert_eq!(output_shape(&import_with(&m, &[("x", &[0, 3])]).unwrap(), 0), [0, 3]);
    assert_eq!(parse_input_shape("x=0x3").unwrap(), ("x".to_string(), vec![0, 3]));
    assert!(parse_input_shape("x=-1x3").is_err());
}

#[test]
fn graph_structure_errors_name_the_value() {
    let m = model(13).input("x", &["1"]).node("Add", &["x", "ghost"], &["y"], vec![]).output("y");
    assert!(matches!(import(&m).unwrap_err(), ImportError::UndefinedValue { value, .. } if value == "ghost"));
    let m = model(13).input("x", &["1"]).node("Relu", &["x"], &["y"], vec![]).output("nope");
    assert!(import(&m).unwrap_err().to_string().contains("nope"));
    let m = model(13)
        .input("x", &["1"])
        .node("Add", &["x", "b"], &["a"], vec![])
        .node("Relu", &["a"], &["b"], vec![])
        .output("a");
    assert!(import(&m).unwrap_err().to_string().contains("cycle"));
    let m = model(13)
        .input("x", &["1"])
        .node("Relu", &["x"], &["y"], vec![])
        .node("Sigmoid", &["x"], &["y"], vec![])
        .output("y");
    assert!(matches!(import(&m).unwrap_err(), ImportError::DuplicateValue { value, .. } if value == "y"));
    let m = model(13).input("x", &["1"]);
    assert!(import(&m).unwrap_err().to_string().contains("no outputs"));
}

#[test]
fn attribute_errors_name_node_op_and_attribute() {
    let err = import(&conv_model(vec![a_int("group", 0)], &["1", "1", "4", "4"], &[1, 1, 3, 3])).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImportError::BadAttribute { .. }) && msg.contains("Conv") && msg.contains("group"), "{msg}");
    let err =
        import(&conv_model(vec![a_ints("strides", &[1, 1, 1])], &["1", "1", "4", "4"], &[1, 1, 3, 3])).unwrap_err();
    assert!(err.to_string().contains("strides"), "{err}");
    let err =
        import(&conv_model(vec![a_ints("pads", &[-1, 0, 0, 0])], &["1", "1", "4", "4"], &[1, 1, 3, 3])).unwrap_err();
    assert!(err.to_string().contains("pads"), "{err}");
    let err = import(&conv_model(vec![a_float("group", 1.0)], &["1", "1", "4", "4"], &[1, 1, 3, 3])).unwrap_err();
    assert!(err.to_string().contains("expected an int"), "{err}");
}

// ---- lowering -------------------------------------------------------------------------

#[test]
fn auto_pad_same_upper_resolves_asymmetric_pads() {
    for (mode, pads) in [("SAME_UPPER", [0, 0, 1, 1]), ("SAME_LOWER", [1, 1, 0, 0])] {
        let attrs = vec![a_str("auto_pad", mode), a_ints("strides", &[2, 2])];
        let g = import(&conv_model(attrs, &["1", "1", "6", "6"], &[1, 1, 3, 3])).unwrap();
        let Op::Conv(c) = only_op(&g) else { panic!() };
        assert_eq!((c.pads.as_slice(), c.kernel.as_slice()), (&pads[..], &[3, 3][..]), "{mode}");
        assert_eq!(output_shape(&g, 0), [1, 1, 3, 3]);
    }
}

#[test]
fn conv_transpose_output_shape_resolves_pads() {
    let m = model(13)
        .input("x", &["1", "2", "4", "4"])
        .init(f32s("w", &[2, 3, 3, 3], &[0.1; 54]))
        .node("ConvTranspose", &["x", "w"], &["y"], vec![a_ints("strides", &[2, 2]), a_ints("output_shape", &[8, 8])])
        .output("y");
    let g = import(&m).unwrap();
    let Op::ConvTranspose(c) = only_op(&g) else { panic!() };
    // full size 2·3 + 3 = 9, target 8: one row of padding, at the head without auto_pad
    // (ONNX rule; onnxruntime 1.32 agrees, checked when the fixture was made).
    assert_eq!(c.pads, [1, 1, 0, 0]);
    assert_eq!(output_shape(&g, 0), [1, 3, 8, 8]);
}

#[test]
fn slice_negative_step_is_normalized() {
    let m = model(13)
        .input("x", &["1", "10"])
        .init(i64s("starts", &[-1]))
        .init(i64s("ends", &[i64::MIN]))
        .init(i64s("axes", &[-1]))
        .init(i64s("steps", &[-2]))
        .node("Slice", &["x", "starts", "ends", "axes", "steps"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap();
    assert_eq!(only_op(&g), Op::Slice { axes: vec![SliceAxis { axis: 1, start: 9, end: -1, step: -2 }] });
    assert_eq!(output_shape(&g, 0), [1, 5]);
}

#[test]
fn slice_opset_9_attributes_clamp_int_max_ends() {
    let attrs = vec![a_ints("starts", &[1, 0]), a_ints("ends", &[i64::MAX, 2]), a_ints("axes", &[2, 1])];
    let m = model(9).input("x", &["1", "4", "6"]).node("Slice", &["x"], &["y"], attrs).output("y");
    let g = import(&m).unwrap();
    let want = vec![SliceAxis { axis: 1, start: 0, end: 2, step: 1 }, SliceAxis { axis: 2, start: 1, end: 6, step: 1 }];
    assert_eq!(only_op(&g), Op::Slice { axes: want });
    assert_eq!(output_shape(&g, 0), [1, 2, 5]);
}

#[test]
fn reshape_zero_and_minus_one() {
    let m = model(13)
        .input("x", &["2", "3", "4"])
        .init(i64s("s", &[0, -1]))
        .node("Reshape", &["x", "s"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap();
    assert_eq!(only_op(&g), Op::Reshape { shape: vec![2, 12] });
}

#[test]
fn reshape_of_a_computed_shape_is_rejected() {
    let m =
        model(13).input("x", &["2", "3"]).input("s", &["2"]).node("Reshape", &["x", "s"], &["y"], vec![]).output("y");
    let err = import_with(&m, &[]).unwrap_err();
    assert!(matches!(err, ImportError::InputType { .. } | ImportError::BadInput { .. }), "{err}");
}

#[test]
fn shape_arithmetic_folds_into_reshape() {
    let m = model(13)
        .input("x", &["1", "3", "4", "4"])
        .init(i64s("zero", &[0]))
        .init(i64s("minus_one", &[-1]))
        .node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "zero"], &["n"], vec![a_int("axis", 0)])
        .node("Concat", &["n", "minus_one"], &["target"], vec![a_int("axis", 0)])
        .node("Reshape", &["x", "target"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap();
    assert_eq!(only_op(&g), Op::Reshape { shape: vec![1, 48] });
    assert_eq!(g.weights().len(), 0, "folded shape constants are dead after the reshape");
}

#[test]
fn constant_nodes_become_named_weights() {
    let w = f32s("", &[1, 1, 1, 1], &[2.0]);
    let m = model(12)
        .input("x", &["1", "1", "2", "2"])
        .node("Constant", &[], &["w"], vec![a_tensor("value", w)])
        .node("Constant", &[], &["k"], vec![a_float("value_float", 3.0)])
        .node("Conv", &["x", "w"], &["c"], vec![])
        .node("Mul", &["c", "k"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap();
    let mut names: Vec<&str> =
        g.node_ids().filter(|&id| matches!(g.node(id).op, Op::Weight(_))).map(|id| g.node(id).name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["k", "w"]);
}

#[test]
fn constant_of_shape_folds_into_concat_operand() {
    let value = TensorProto { dims: vec![1], ..f32s("", &[1], &[0.0]) };
    let m = model(12)
        .input("x", &["1", "2", "2", "2"])
        .init(i64s("shape", &[1, 2, 2, 2]))
        .node("ConstantOfShape", &["shape"], &["zeros"], vec![a_tensor("value", value)])
        .node("Concat", &["x", "zeros"], &["y"], vec![a_int("axis", 1)])
        .output("y");
    let g = import(&m).unwrap();
    assert_eq!(only_op(&g), Op::Concat { axis: 1 });
    assert_eq!(output_shape(&g, 0), [1, 4, 2, 2]);
}

#[test]
fn softmax_before_opset_13_flattens_from_axis_1() {
    let m = |v| model(v).input("x", &["1", "2", "3"]).node("Softmax", &["x"], &["y"], vec![]).output("y");
    assert_eq!(only_op(&import(&m(11)).unwrap()), Op::Softmax { axis: 1, flatten: true });
    assert_eq!(only_op(&import(&m(13)).unwrap()), Op::Softmax { axis: 2, flatten: false });
}

#[test]
fn split_into_uneven_parts_uses_ceil_chunks_from_opset_18() {
    let m = model(18)
        .input("x", &["5", "2"])
        .node("Split", &["x"], &["a", "b", "c"], vec![a_int("num_outputs", 3)])
        .output("a")
        .output("c");
    let g = import(&m).unwrap();
    assert_eq!(only_op(&g), Op::Split { axis: 0, sizes: vec![2, 2, 1] });
    assert_eq!(output_shape(&g, 1), [1, 2]);
    let m = model(13).input("x", &["5", "2"]).node("Split", &["x"], &["a", "b", "c"], vec![]).output("a");
    assert!(matches!(import(&m).unwrap_err(), ImportError::Shape { .. }));
}

#[test]
fn resize_with_sizes_sets_scales_out_over_in() {
    let m = model(13)
        .input("x", &["1", "1", "4", "4"])
        .init(f32s("roi", &[0], &[]))
        .init(f32s("scales", &[0], &[]))
        .init(i64s("sizes", &[1, 1, 8, 6]))
        .node("Resize", &["x", "roi", "scales", "sizes"], &["y"], vec![a_str("mode", "linear")])
        .output("y");
    let Op::Resize(r) = only_op(&import(&m).unwrap()) else { panic!() };
    assert_eq!(
        (r.mode, r.coord, r.out_shape.as_slice()),
        (ResizeMode::Linear, CoordTransform::HalfPixel, &[1, 1, 8, 6][..])
    );
    assert_eq!(r.scales, [1.0, 1.0, 2.0, 1.5]);
}

#[test]
fn resize_cubic_reads_its_coefficient_and_exclude_outside() {
    let m = model(13)
        .input("x", &["1", "1", "4", "4"])
        .init(f32s("scales", &[4], &[1.0, 1.0, 2.0, 2.0]))
        .node(
            "Resize",
            &["x", "", "scales"],
            &["y"],
            vec![a_str("mode", "cubic"), a_float("cubic_coeff_a", -0.5), a_int("exclude_outside", 1)],
        )
        .output("y");
    let Op::Resize(r) = only_op(&import(&m).unwrap()) else { panic!() };
    assert_eq!(r.mode, ResizeMode::Cubic { a: -0.5, exclude_outside: true });
    let m = model(10)
        .input("x", &["1", "1", "4", "4"])
        .init(f32s("scales", &[4], &[1.0, 1.0, 2.0, 2.0]))
        .node("Resize", &["x", "scales"], &["y"], vec![a_str("mode", "cubic")])
        .output("y");
    assert!(matches!(import(&m).unwrap_err(), ImportError::BadAttribute { .. }));
}

#[test]
fn resize_crop_widens_roi_over_axes_to_every_axis() {
    let crop = |roi: &[f32]| {
        model(18)
            .input("x", &["1", "1", "4", "4"])
            .init(f32s("roi", &[roi.len() as i64], roi))
            .init(i64s("sizes", &[3, 5]))
            .node(
                "Resize",
                &["x", "roi", "", "sizes"],
                &["y"],
                vec![
                    a_str("coordinate_transformation_mode", "tf_crop_and_resize"),
                    a_ints("axes", &[3, 2]),
                    a_float("extrapolation_value", 2.5),
                ],
            )
            .output("y")
    };
    let Op::Resize(r) = only_op(&import(&crop(&[0.1, 0.2, 0.9, 0.8])).unwrap()) else { panic!() };
    let roi = vec![0.0, 0.0, 0.2, 0.1, 1.0, 1.0, 0.8, 0.9];
    assert_eq!(r.coord, CoordTransform::TfCropAndResize { roi, extrapolation: 2.5 });
    assert_eq!(r.out_shape, [1, 1, 5, 3]);
    assert!(matches!(import(&crop(&[0.1, 0.9])).unwrap_err(), ImportError::BadInput { .. }));
}

#[test]
fn upsample_is_asymmetric_nearest_floor() {
    let m = model(9)
        .input("x", &["1", "1", "2", "2"])
        .init(f32s("scales", &[4], &[1.0, 1.0, 2.0, 2.0]))
        .node("Upsample", &["x", "scales"], &["y"], vec![])
        .output("y");
    let Op::Resize(r) = only_op(&import(&m).unwrap()) else { panic!() };
    assert_eq!(
        (r.coord, r.nearest, r.out_shape.as_slice()),
        (CoordTransform::Asymmetric, NearestMode::Floor, &[1, 1, 4, 4][..])
    );
}

#[test]
fn clip_bounds_must_be_constant_from_opset_11() {
    let m = model(11)
        .input("x", &["1", "4"])
        .init(f32s("lo", &[], &[0.0]))
        .init(f32s("hi", &[], &[6.0]))
        .node("Clip", &["x", "lo", "hi"], &["y"], vec![])
        .output("y");
    assert_eq!(only_op(&import(&m).unwrap()), Op::Unary(cnnc_ir::UnaryOp::Clip { min: 0.0, max: 6.0 }));
    let m = model(11).input("x", &["1", "4"]).input("lo", &[]).node("Clip", &["x", "lo"], &["y"], vec![]).output("y");
    assert!(matches!(import(&m).unwrap_err(), ImportError::BadInput { .. }));
}

#[test]
fn gemm_without_c_needs_opset_11() {
    let m = |v| {
        model(v)
            .input("a", &["2", "3"])
            .init(f32s("b", &[4, 3], &[1.0; 12]))
            .node("Gemm", &["a", "b"], &["y"], vec![a_int("transB", 1), a_float("alpha", 0.5)])
            .output("y")
    };
    assert!(matches!(import(&m(9)).unwrap_err(), ImportError::BadInput { .. }));
    let g = import(&m(11)).unwrap();
    assert_eq!(only_op(&g), Op::Gemm { alpha: 0.5, beta: 1.0, trans_a: false, trans_b: true });
    assert_eq!(output_shape(&g, 0), [2, 4]);
}

#[test]
fn pad_inputs_expand_to_all_axes() {
    let m = model(18)
        .input("x", &["1", "1", "4", "4"])
        .init(i64s("pads", &[1, 2, 3, 4]))
        .init(i64s("axes", &[-1, 2]))
        .node("Pad", &["x", "pads", "", "axes"], &["y"], vec![a_str("mode", "edge")])
        .output("y");
    let Op::Pad { pads, mode, .. } = only_op(&import(&m).unwrap()) else { panic!() };
    assert_eq!((pads, mode), (vec![0, 0, 2, 1, 0, 0, 4, 3], cnnc_ir::PadMode::Edge));
}

#[test]
fn mean_is_sum_divided_by_count() {
    let m = model(13)
        .input("a", &["2"])
        .input("b", &["2"])
        .input("c", &["2"])
        .node("Mean", &["a", "b", "c"], &["y"], vec![])
        .output("y");
    let names: Vec<&str> = ops(&import(&m).unwrap()).iter().map(|o| o.name()).collect();
    assert_eq!(names, ["add", "add", "div"]);
}

#[test]
fn identity_and_dropout_alias_their_input() {
    let m = model(13)
        .input("x", &["1", "3"])
        .node("Identity", &["x"], &["a"], vec![])
        .node("Dropout", &["a"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap();
    assert!(ops(&g).is_empty());
    assert_eq!(g.outputs()[0].name, "y");
    assert_eq!(g.outputs()[0].value.node, g.inputs()[0]);
}

#[test]
fn squeeze_and_unsqueeze_become_reshapes() {
    let m = model(13)
        .input("x", &["1", "3", "1"])
        .init(i64s("ax", &[-1]))
        .init(i64s("ax0", &[0, 3]))
        .node("Squeeze", &["x", "ax"], &["s"], vec![])
        .node("Unsqueeze", &["s", "ax0"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap();
    assert_eq!(output_shape(&g, 0), [1, 1, 3, 1]);
    assert!(ops(&g).iter().all(|o| matches!(o, Op::Reshape { .. })));
}

#[test]
fn duplicate_node_names_are_made_unique() {
    let mut m = model(13)
        .input("x", &["2"])
        .node("Relu", &["x"], &["a"], vec![])
        .node("Relu", &["a"], &["y"], vec![])
        .output("y");
    for n in &mut m.graph().node {
        n.name = "same".into();
    }
    let g = import(&m).unwrap();
    let mut names: Vec<&str> = g.node_ids().map(|id| g.node(id).name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["same", "same_1", "x"]);
}

// ---- QuantizeLinear / DequantizeLinear -----------------------------------------------------

/// A u8, i8 or i32 tensor (`int32_data`, as ONNX stores them).
fn ints(name: &str, dims: &[i64], data_type: DataType, data: &[i32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type.value(),
        int32_data: data.to_vec(),
        ..Default::default()
    }
}

/// x[1,3,2] → QuantizeLinear → DequantizeLinear, per tensor or per channel.
fn qdq_model(
    opset: i64,
    scale_dims: &[i64],
    scales: &[f32],
    zp: Option<TensorProto>,
    attrs: Vec<AttributeProto>,
) -> Model {
    let mut m = model(opset).input("x", &["1", "3", "2"]).init(f32s("s", scale_dims, scales));
    let q_inputs: &[&str] = if let Some(zp) = zp {
        m = m.init(zp);
        &["x", "s", "zp"]
    } else {
        &["x", "s"]
    };
    m.node("QuantizeLinear", q_inputs, &["q"], attrs.clone())
        .node("DequantizeLinear", &[&["q"], &q_inputs[1..]].concat(), &["y"], attrs)
        .output("y")
}

#[test]
fn quantize_linear_per_tensor_takes_its_type_from_the_zero_point() {
    for (data_type, dtype) in [(DataType::UINT8, DType::U8), (DataType::INT8, DType::I8)] {
        let g = import(&qdq_model(10, &[], &[0.5], Some(ints("zp", &[], data_type, &[7])), vec![])).expect("imports");
        let q = QuantParams::per_tensor(0.5, 7);
        assert_eq!(ops(&g), [Op::Quantize { params: q.clone(), to: dtype }, Op::Dequantize(q)]);
    }
    // Without a zero point: u8 and zero point 0 (before opset 21 there is no output_dtype).
    let g = import(&qdq_model(13, &[], &[2.0], None, vec![])).expect("imports");
    assert_eq!(ops(&g)[0], Op::Quantize { params: QuantParams::per_tensor(2.0, 0), to: DType::U8 });
}

#[test]
fn quantize_linear_per_axis_uses_the_axis_attribute_from_opset_13() {
    let zp = ints("zp", &[2], DataType::INT8, &[-1, 3]);
    let g = import(&qdq_model(13, &[2], &[0.5, 0.25], Some(zp), vec![a_int("axis", -1)])).expect("imports");
    let q = QuantParams { axis: Some(2), scales: vec![0.5, 0.25], zero_points: vec![-1, 3] };
    assert_eq!(ops(&g), [Op::Quantize { params: q.clone(), to: DType::I8 }, Op::Dequantize(q)]);
    // The default axis is 1.
    let zp = ints("zp", &[3], DataType::UINT8, &[0, 1, 2]);
    let g = import(&qdq_model(13, &[3], &[1.0, 2.0, 4.0], Some(zp), vec![])).expect("imports");
    assert!(matches!(&ops(&g)[0], Op::Quantize { params: QuantParams { axis: Some(1), .. }, .. }));
}

#[test]
fn quantize_linear_output_dtype_chooses_the_type_without_a_zero_point() {
    let attrs = vec![a_int("output_dtype", DataType::INT8.value() as i64)];
    let m = model(21)
        .input("x", &["4"])
        .init(f32s("s", &[], &[0.5]))
        .node("QuantizeLinear", &["x", "s"], &["q"], attrs)
        .output("q");
    assert_eq!(
        only_op(&import(&m).expect("imports")),
        Op::Quantize { params: QuantParams::per_tensor(0.5, 0), to: DType::I8 }
    );
}

#[test]
fn dequantize_linear_of_quantized_weights_stays_at_import_and_folds_at_o1() {
    // w = (q − zp) · scale per output channel: [(−128 − 0)·0.5, (5 − 0)·0.5, (0 − 1)·2, (9 − 1)·2].
    let m = model(13)
        .init(ints("w", &[2, 2], DataType::INT8, &[-128, 5, 0, 9]))
        .init(f32s("s", &[2], &[0.5, 2.0]))
        .init(ints("zp", &[2], DataType::INT8, &[0, 1]))
        .node("DequantizeLinear", &["w", "s", "zp"], &["y"], vec![a_int("axis", 0)])
        .output("y");
    let g = import(&m).expect("imports");
    // Kept (with its i8 weight) so that -O1's QDQ rules can see the chains it starts.
    let params = QuantParams { axis: Some(0), scales: vec![0.5, 2.0], zero_points: vec![0, 1] };
    assert_eq!(only_op(&g), Op::Dequantize(params));
    let want = [-64.0, 2.5, -2.0, 16.0];
    let got = cnnc_runtime::run_reference(&g, &[]).expect("runs").remove(0);
    assert_eq!(got.as_f32().expect("f32"), want);
    let mut table = cnnc_passes::TableCost::new(1);
    let (o1, _) = cnnc_passes::optimize_exact(
        &g,
        &cnnc_passes::OptConfig::lossless(),
        &mut table,
        &mut cnnc_passes::mac_estimate,
    )
    .expect("optimizes");
    assert!(ops(&cnnc_ir::verify(o1.clone()).expect("verifies")).is_empty(), "folded at -O1:\n{o1}");
    let y = o1.weight_of(&o1.outputs()[0].value).expect("a constant");
    assert_eq!(y.as_f32().expect("f32"), want);
}

#[test]
fn unsupported_quantization_forms_are_named() {
    let blocked = qdq_model(21, &[], &[0.5], None, vec![a_int("block_size", 2)]);
    let e = import(&blocked).expect_err("blocked").to_string();
    assert!(e.contains("attribute `block_size`") && e.contains("blocked quantization is not supported"), "{e}");
    let wide = qdq_model(13, &[], &[0.5], Some(ints("zp", &[], DataType::INT32, &[0])), vec![]);
    let e = import(&wide).expect_err("int32").to_string();
    assert!(e.contains("quantizing to i32 is not supported"), "{e}");
    let opset10_axis = qdq_model(10, &[3], &[1.0, 2.0, 4.0], None, vec![]);
    let e = import(&opset10_axis).expect_err("per-axis at opset 10").to_string();
    assert!(e.contains("a scale of shape [3] is not supported"), "{e}");
}
