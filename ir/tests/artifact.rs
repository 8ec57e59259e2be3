//! The `.cnnc` artifact: encode/decode round trips (bit-exact, every op), and decoding hostile
//! bytes: every limit and check gives its specific error, and nothing panics.
//!
//! Corrupt artifact files (fixtures/artifacts/) are exercised through `Model::load` in
//! runtime/tests/load.rs; here the damage is made programmatically through `artifact::wire`.

mod common;
use cnnc_ir::artifact::{self, ArtifactError, ArtifactMeta, FORMAT_VERSION, Provenance, wire};
use cnnc_ir::{
    ConvAttrs, CoordTransform, Graph, NearestMode, Op, PadMode, ResizeAttrs, ResizeMode, Tensor, TensorData,
    TensorType, UnaryOp, verify,
};
use common::*;
use proptest::prelude::*;
use prost::Message;

/// Encodes a graph that must verify, with `meta`.
fn encode_with(g: &Graph, meta: &ArtifactMeta) -> Vec<u8> {
    let verified = verify(g.clone()).unwrap_or_else(|e| panic!("{e}"));
    artifact::encode(&verified, meta).unwrap_or_else(|e| panic!("encode: {e}"))
}

fn encode(g: &Graph) -> Vec<u8> {
    encode_with(g, &ArtifactMeta::default())
}

/// Encodes, decodes and re-verifies `g`; checks the decoded graph prints as the original.
fn round_trip(g: &Graph) -> Graph {
    let (decoded, _) = artifact::decode(&encode(g)).unwrap_or_else(|e| panic!("decode: {e}"));
    assert_eq!(decoded.to_string(), g.to_string());
    verify(decoded.clone()).unwrap_or_else(|e| panic!("re-verify: {e}"));
    decoded
}

fn decode_err(bytes: &[u8]) -> ArtifactError {
    match artifact::decode(bytes) {
        Err(e) => e,
        Ok((g, _)) => panic!("expected a decode error, got\n{g}"),
    }
}

/// The wire message of an encoded graph, for damaging.
fn to_message(bytes: &[u8]) -> wire::Artifact {
    let (_, payload) = wire::unframe(bytes).expect("a valid artifact");
    wire::Artifact::decode(payload).expect("a valid payload")
}

/// Frames a (damaged) message as a current-version artifact with a correct checksum.
fn frame(msg: &wire::Artifact) -> Vec<u8> {
    wire::frame(FORMAT_VERSION, &msg.encode_to_vec())
}

/// Damages the message of `g`'s artifact with `f` and returns the decode error.
fn damaged(g: &Graph, f: impl FnOnce(&mut wire::Artifact)) -> ArtifactError {
    let mut msg = to_message(&encode(g));
    f(&mut msg);
    decode_err(&frame(&msg))
}

fn node_index(msg: &wire::Artifact, name: &str) -> usize {
    msg.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node `{name}`"))
}

/// `x → conv(w, b) → relu → output`: a small graph with weights.
fn small() -> Graph {
    let mut g = Graph::new("small");
    let x = g.add_input("x", TensorType::f32([1, 2, 5, 5]));
    let w = weight(&mut g, "w", &[4, 1, 3, 3]);
    let b = weight(&mut g, "b", &[4]);
    let conv = node(&mut g, "conv", Op::Conv(ConvAttrs::new(&[3, 3]).pads(&[1; 4]).group(2)), &[x, w, b]);
    let r = node(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[conv]);
    g.add_output("y", r);
    g
}

#[test]
fn a_graph_with_every_op_round_trips() {
    let g = every_op_graph();
    let decoded = round_trip(&g);
    assert_eq!(decoded.name, "every-op");
    assert_eq!(decoded.inputs().len(), 2);
}

#[test]
fn every_resize_coordinate_transform_and_rounding_round_trips() {
    let coords = [
        CoordTransform::HalfPixel,
        CoordTransform::HalfPixelSymmetric,
        CoordTransform::PytorchHalfPixel,
        CoordTransform::AlignCorners,
        CoordTransform::Asymmetric,
        CoordTransform::TfHalfPixelForNn,
        CoordTransform::TfCropAndResize { roi: vec![0.0, 0.1, 1.0, 0.9], extrapolation: 2.0 },
    ];
    let nearest = [NearestMode::RoundPreferFloor, NearestMode::RoundPreferCeil, NearestMode::Floor, NearestMode::Ceil];
    for coord in coords {
        for nearest in nearest {
            let mut g = Graph::new("resize");
            let x = g.add_input("x", TensorType::f32([2, 3]));
            let attrs = ResizeAttrs {
                mode: ResizeMode::Nearest,
                coord: coord.clone(),
                nearest,
                scales: vec![1.0, 2.0],
                out_shape: vec![2, 6],
            };
            let y = node(&mut g, "up", Op::Resize(attrs.clone()), &[x]);
            g.add_output("y", y);
            let decoded = round_trip(&g);
            let op = decoded.node_ids().map(|id| decoded.node(id).op.clone()).find(|op| !op.is_source());
            assert_eq!(op, Some(Op::Resize(attrs)));
            let text = g.to_string();
            assert_eq!(text.parse::<Graph>().unwrap_or_else(|e| panic!("{e}")).to_string(), text, "text form");
        }
    }
}

#[test]
fn f32_attributes_round_trip_bit_exactly() {
    let quiet_nan_payload = f32::from_bits(0x7fc0_1234);
    let signaling_nan = f32::from_bits(0x7f80_0001);
    let negative_nan = f32::from_bits(0xffc0_0000);
    let mut g = Graph::new("floats");
    let x = g.add_input("x", TensorType::f32([1, 2, 3, 3]));
    let ops = [
        Op::Unary(UnaryOp::LeakyRelu { alpha: quiet_nan_payload }),
        Op::Unary(UnaryOp::Clip { min: -0.0, max: f32::INFINITY }),
        Op::Unary(UnaryOp::HardSigmoid { alpha: f32::NEG_INFINITY, beta: signaling_nan }),
        Op::Unary(UnaryOp::Swish { beta: -0.0 }),
        Op::Pad { pads: vec![0, 0, 1, 1, 0, 0, 1, 1], mode: PadMode::Constant, value: negative_nan },
        Op::Resize(ResizeAttrs {
            mode: ResizeMode::Cubic { a: -0.0, exclude_outside: false },
            coord: CoordTransform::TfCropAndResize {
                roi: vec![-0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, f32::MIN_POSITIVE / 2.0],
                extrapolation: f32::from_bits(0x7fff_ffff),
            },
            nearest: NearestMode::Ceil,
            scales: vec![1.0, 1.0, 1.0, 1.0],
            out_shape: vec![1, 2, 5, 5],
        }),
    ];
    let mut h = x;
    for (i, op) in ops.into_iter().enumerate() {
        h = node(&mut g, &format!("op{i}"), op, &[h]);
    }
    let scale = weight(&mut g, "scale", &[2]);
    let params = [h, scale, scale, scale, scale];
    h = node(&mut g, "bn", Op::BatchNorm { epsilon: -0.0 }, &params);
    g.add_output("y", h);

    let decoded = round_trip(&g);
    let bits_of = |g: &Graph| -> Vec<u32> {
        let mut bits = Vec::new();
        for id in g.node_ids() {
            match &g.node(id).op {
                Op::Unary(UnaryOp::LeakyRelu { alpha }) => bits.push(alpha.to_bits()),
                Op::Unary(UnaryOp::Clip { min, max }) => bits.extend([min.to_bits(), max.to_bits()]),
                Op::Unary(UnaryOp::HardSigmoid { alpha, beta }) => bits.extend([alpha.to_bits(), beta.to_bits()]),
                Op::Unary(UnaryOp::Swish { beta }) => bits.push(beta.to_bits()),
                Op::Pad { value, .. } => bits.push(value.to_bits()),
                Op::BatchNorm { epsilon } => bits.push(epsilon.to_bits()),
                Op::Resize(r) => {
                    let ResizeMode::Cubic { a, .. } = r.mode else { panic!("cubic") };
                    let CoordTransform::TfCropAndResize { roi, extrapolation } = &r.coord else { panic!("crop") };
                    bits.push(a.to_bits());
                    bits.extend(roi.iter().map(|r| r.to_bits()));
                    bits.push(extrapolation.to_bits());
                }
                _ => {}
            }
        }
        bits
    };
    assert_eq!(bits_of(&decoded), bits_of(&g));
    assert!(bits_of(&g).contains(&0x8000_0000), "-0.0 is among the attributes");
    assert!(bits_of(&g).contains(&0x7f80_0001), "a signaling NaN is among the attributes");
}

#[test]
fn weights_round_trip_bitwise_in_every_dtype() {
    let mut g = Graph::new("weights");
    let f = vec![f32::from_bits(0x7fc0_1234), f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-45, f32::MAX];
    let i = vec![i64::MIN, -1, 0, i64::MAX];
    let tensors = [
        Tensor::from_f32([2, 3], f).expect("shape"),
        Tensor::from_i64([4], i).expect("shape"),
        Tensor::from_bool([1, 3], vec![true, false, true]).expect("shape"),
        Tensor::from_f32(Vec::<usize>::new(), vec![2.5]).expect("scalar"),
        Tensor::from_f32([0, 7], vec![]).expect("empty"),
        Tensor::from_u8([2, 2], vec![0, 1, 128, 255]).expect("shape"),
        Tensor::from_i8([5], vec![i8::MIN, -1, 0, 1, i8::MAX]).expect("shape"),
        Tensor::from_i32([3], vec![i32::MIN, -7, i32::MAX]).expect("shape"),
    ];
    for (k, t) in tensors.iter().enumerate() {
        let v = g.add_weight(format!("w{k}"), t.clone());
        g.add_output(format!("o{k}"), v);
    }
    let decoded = round_trip(&g);
    let weights: Vec<&Tensor> = decoded.weights().iter().map(|(_, t)| t).collect();
    assert_eq!(weights.len(), tensors.len());
    for (got, want) in weights.iter().zip(&tensors) {
        assert_eq!(got.shape(), want.shape());
        match (got.data(), want.data()) {
            (TensorData::F32(a), TensorData::F32(b)) => {
                assert_eq!(
                    a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                )
            }
            (a, b) => assert_eq!(a, b),
        }
    }
}

#[test]
fn provenance_round_trips_and_is_optional() {
    let meta = ArtifactMeta {
        provenance: Some(Provenance {
            cnnc_version: "0.1.0".into(),
            opt_level: "O1".into(),
            args: vec!["opt".into(), "m.onnx".into(), "-O1".into(), "-o".into(), "m.cnnc".into()],
            cost_table_hash: "0123456789abcdef".into(),
            calibration_hash: "ab".repeat(32),
        }),
    };
    let (_, got) = artifact::decode(&encode_with(&small(), &meta)).expect("decodes");
    assert_eq!(got, meta);
    let (_, got) = artifact::decode(&encode(&small())).expect("decodes");
    assert_eq!(got.provenance, None);
}

#[test]
fn an_oversized_cost_table_hash_is_refused() {
    let err = damaged(&small(), |m| {
        m.provenance = Some(wire::Provenance { cost_table_hash: "f".repeat(5000), ..Default::default() });
    });
    assert!(matches!(&err, ArtifactError::BadString { at, .. } if at == "provenance: cost_table_hash"), "{err}");
}

#[test]
fn encoding_is_deterministic_and_starts_with_the_header() {
    let a = encode(&every_op_graph());
    assert_eq!(a, encode(&every_op_graph()));
    assert!(artifact::is_artifact(&a));
    assert_eq!(&a[..4], b"CNNC");
    assert_eq!(u32::from_le_bytes(a[4..8].try_into().expect("4 bytes")), FORMAT_VERSION);
    assert_eq!(u64::from_le_bytes(a[8..16].try_into().expect("8 bytes")), a.len() as u64 - 20);
}

#[test]
fn a_graph_beyond_the_format_limits_is_not_encoded() {
    let mut g = Graph::new("rank9");
    let x = g.add_input("x", TensorType::f32([1; 9]));
    let r = node(&mut g, "relu", Op::Unary(UnaryOp::Relu), &[x]);
    g.add_output("y", r);
    let err = artifact::encode(&verify(g).expect("verifies"), &ArtifactMeta::default()).unwrap_err();
    assert!(err.to_string().contains("rank 9 exceeds the limit of 8"), "{err}");
}

#[test]
fn every_truncation_is_reported_as_truncated() {
    let bytes = encode(&small());
    for cut in 0..bytes.len() {
        let err = decode_err(&bytes[..cut]);
        assert!(matches!(err, ArtifactError::Truncated { .. }), "cut at {cut}: {err}");
        assert!(err.to_string().starts_with("truncated artifact"), "{err}");
    }
}

#[test]
fn every_flipped_payload_byte_fails_the_checksum() {
    let bytes = encode(&small());
    for i in 20..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        assert!(matches!(decode_err(&b), ArtifactError::Checksum { .. }), "byte {i}");
    }
}

#[test]
fn wrong_magic_is_not_an_artifact() {
    let mut bytes = encode(&small());
    bytes[..4].copy_from_slice(b"\x08\x07ON");
    let err = decode_err(&bytes);
    assert!(matches!(err, ArtifactError::NotAnArtifact { .. }), "{err}");
    assert!(!artifact::is_artifact(&bytes));
}

#[test]
fn unsupported_versions_say_which_versions_this_cnnc_reads() {
    for version in [0, FORMAT_VERSION + 1, u32::MAX] {
        let mut bytes = encode(&small());
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        let err = decode_err(&bytes).to_string();
        let expected = format!(
            "artifact format version {version}; this cnnc (version {}) reads versions {}–{FORMAT_VERSION}: \
             recompile the model with `cnnc opt`",
            env!("CARGO_PKG_VERSION"),
            artifact::MIN_READ_VERSION
        );
        assert_eq!(err, expected);
    }
}

/// A graph in format version 2's dtypes: a u8 input cast to i32 plus an i8 weight.
fn int_dtypes() -> Graph {
    r#"graph "ints" {
  %x = input u8[2]
  %w = weight i8[2] [-5, 7]
  %c = cast{to=i32}(%x) : i32[2]
  output "c" = %c
  output "w" = %w
}"#
    .parse()
    .expect("parses")
}

#[test]
fn a_version_1_payload_decodes_when_it_uses_only_version_1_dtypes() {
    let msg = to_message(&encode(&small()));
    let (g, _) = artifact::decode(&wire::frame_message(1, &msg)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.to_string(), small().to_string());
}

#[test]
fn a_version_1_payload_with_a_version_2_dtype_is_refused_by_name() {
    let msg = to_message(&encode(&int_dtypes()));
    let err = decode_err(&wire::frame_message(1, &msg)).to_string();
    assert_eq!(err, "graph input #0 `x` (format version 1): field `dtype` has unknown value 4");
    let mut only_weight = msg.clone();
    only_weight.inputs[0].ty.as_mut().expect("typed").dtype = wire::DType::F32 as i32;
    only_weight.nodes.retain(|n| n.name == "w");
    only_weight.outputs.retain(|o| o.name == "w");
    let err = decode_err(&wire::frame_message(1, &only_weight)).to_string();
    assert!(err.contains("(format version 1): field `dtype` has unknown value 5"), "{err}");
    // The same payload as version 2 decodes.
    artifact::decode(&wire::frame_message(FORMAT_VERSION, &msg)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_version_1_payload_with_a_quantize_op_is_refused_by_name() {
    let g: Graph = r#"graph "q" {
  %x = input f32[2]
  %q = quantize{to=u8, scales=[0.5], zero-points=[3]}(%x) : u8[2]
  %d = dequantize{scales=[0.5], zero-points=[3]}(%q) : f32[2]
  output "d" = %d
}"#
    .parse()
    .expect("parses");
    let mut msg = to_message(&encode(&g));
    // Only the op is new: give the quantized value a version-1 dtype.
    msg.nodes[0].outputs[0].dtype = wire::DType::F32 as i32;
    let err = decode_err(&wire::frame_message(1, &msg)).to_string();
    assert!(err.contains("node #1 `q`: op `quantize` does not exist in format version 1"), "{err}");
}

#[test]
fn a_version_1_payload_with_a_swish_is_refused_by_name_and_a_version_2_one_reads() {
    let g: Graph = r#"graph "s" {
  %x = input f32[1,2,3,3]
  %w = weight f32[2,2,1,1] [0.5, -1.0, 2.0, 0.25]
  %s = swish{beta=1.702}(%x) : f32[1,2,3,3]
  %c = fused-conv{kernel=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1, act=swish, act-beta=1.0}(%s, %w) : f32[1,2,3,3]
  output "y" = %c
}"#
    .parse()
    .expect("parses");
    assert_eq!(round_trip(&g).to_string(), g.to_string());
    let msg = to_message(&encode(&g));
    let err = decode_err(&wire::frame_message(1, &msg)).to_string();
    assert!(err.contains("`s`: activation `swish` does not exist in format version 1"), "{err}");
    // The fused activation alone is refused too.
    let fused_only: Graph = g
        .to_string()
        .replace("  %s = swish{beta=1.702}(%x) : f32[1,2,3,3]\n", "")
        .replace("(%s, %w)", "(%x, %w)")
        .parse()
        .expect("parses");
    let err = decode_err(&wire::frame_message(1, &to_message(&encode(&fused_only)))).to_string();
    assert!(err.contains("`c`: activation `swish` does not exist in format version 1"), "{err}");
}

#[test]
fn lookups_round_trip_with_their_tables_bit_exact() {
    let g = lookup_graph();
    let decoded = round_trip(&g);
    let ops = |g: &Graph| -> Vec<(String, Op)> {
        g.node_ids()
            .map(|id| (g.node(id).name.clone(), g.node(id).op.clone()))
            .filter(|(_, op)| *op == Op::Lookup)
            .collect()
    };
    assert_eq!(ops(&decoded).len(), 3, "{decoded}");
    assert_eq!(ops(&decoded), ops(&g));
    // The text comparison of `round_trip` prints every NaN alike: compare the tables by bits.
    let tables = |g: &Graph| -> Vec<Vec<u8>> { g.weights().iter().map(|(_, t)| t.data().to_le_bytes()).collect() };
    assert_eq!(tables(&decoded), tables(&g));
}

#[test]
fn a_version_1_payload_with_a_lookup_is_refused_by_name() {
    let mut msg = to_message(&encode(&lookup_graph()));
    // Only the op is new: give every value a version-1 dtype.
    for input in &mut msg.inputs {
        input.ty.as_mut().expect("typed").dtype = wire::DType::F32 as i32;
    }
    for t in msg.nodes.iter_mut().flat_map(|n| &mut n.outputs) {
        t.dtype = wire::DType::F32 as i32;
    }
    let err = decode_err(&wire::frame_message(1, &msg)).to_string();
    assert!(err.contains("`y1`: op `lookup` does not exist in format version 1"), "{err}");
}

#[test]
fn trailing_bytes_are_reported() {
    let mut bytes = encode(&small());
    bytes.extend_from_slice(b"junk");
    assert!(matches!(decode_err(&bytes), ArtifactError::TrailingBytes { extra: 4, .. }));
}

#[test]
fn a_payload_that_is_not_protobuf_is_malformed() {
    let err = decode_err(&wire::frame(FORMAT_VERSION, &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]));
    assert!(matches!(err, ArtifactError::Malformed(_)), "{err}");
}

#[test]
fn a_weight_whose_bytes_disagree_with_its_shape_is_named() {
    let err = damaged(&small(), |m| m.weights[0].data.pop().map(drop).unwrap_or(()));
    assert_eq!(err.to_string(), "weight #0 (dtype f32, shape [4, 1, 3, 3]) needs 144 bytes, the artifact holds 143");
}

#[test]
fn an_absurd_shape_is_refused_before_allocation() {
    let err = damaged(&small(), |m| m.weights[0].shape = vec![1 << 31, 1 << 31, 1 << 31]);
    assert!(matches!(err, ArtifactError::BadShape { .. }), "{err}");
    assert!(err.to_string().ends_with("the element count overflows"), "{err}");
    let err = damaged(&small(), |m| m.weights[0].shape = vec![1 << 20, 1 << 20]);
    assert!(err.to_string().ends_with("1099511627776 elements exceed the limit of 2147483648"), "{err}");
    let err = damaged(&small(), |m| m.weights[0].shape = vec![0, u64::MAX]);
    assert!(err.to_string().contains("more than the limit"), "{err}");
    let err = damaged(&small(), |m| m.inputs[0].ty.as_mut().expect("ty").shape = vec![1; 9]);
    assert!(err.to_string().contains("graph input #0 `x`: shape [1, 1, 1, 1, 1, 1, 1, 1, 1]: rank 9"), "{err}");
}

#[test]
fn a_node_reading_a_later_node_is_a_cycle() {
    let err = damaged(&small(), |m| {
        let conv = node_index(m, "conv");
        let relu = node_index(m, "relu");
        m.nodes[conv].inputs[0] = wire::ValueRef { value: (m.inputs.len() + relu) as u32, slot: 0 };
    });
    assert!(matches!(err, ArtifactError::BadInputRef { input: 0, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("`conv`") && msg.contains("not defined before this node"), "{msg}");
}

#[test]
fn out_of_range_refs_and_slots_are_named() {
    let err = damaged(&small(), |m| m.nodes.last_mut().expect("relu").inputs[0].value = 1000);
    assert!(err.to_string().contains("reads value #1000, but the artifact defines only"), "{err}");
    let err = damaged(&small(), |m| m.nodes.last_mut().expect("relu").inputs[0].slot = 1);
    assert!(err.to_string().contains("reads output 1 of `conv`, which has 1 output(s)"), "{err}");
    let err = damaged(&small(), |m| m.outputs[0].value.as_mut().expect("value").slot = 3);
    assert!(matches!(err, ArtifactError::BadOutput { .. }), "{err}");
}

#[test]
fn bad_op_attributes_name_the_node_and_attribute() {
    fn conv(m: &mut wire::Artifact) -> &mut wire::Conv {
        let i = node_index(m, "conv");
        match m.nodes[i].op.as_mut().and_then(|o| o.kind.as_mut()) {
            Some(wire::OpKind::Conv(c)) => c,
            _ => panic!("conv"),
        }
    }
    let err = damaged(&small(), |m| conv(m).group = 0);
    assert_eq!(err.to_string(), "node #2 `conv` (conv): attribute `group`: is 0, must be ≥ 1");
    let err = damaged(&small(), |m| conv(m).strides.push(1));
    assert!(err.to_string().contains("attribute `strides`: has 3 entries, expected 2"), "{err}");
    let err = damaged(&small(), |m| conv(m).kernel[1] = 0);
    assert!(err.to_string().contains("attribute `kernel`: entry 1 is 0"), "{err}");
    let err = damaged(&small(), |m| conv(m).algo = 7);
    assert_eq!(
        err.to_string(),
        "node #2 `conv` (conv): attribute `algo`: 7 is not 0 (direct), 1 (winograd-f2) or 2 (winograd-f4)"
    );
}

#[test]
fn unknown_enum_values_and_missing_ops_are_named() {
    let err = damaged(&small(), |m| m.weights[1].dtype = 9);
    assert_eq!(err.to_string(), "weight #1: field `dtype` has unknown value 9");
    let err = damaged(&small(), |m| m.nodes.last_mut().expect("relu").op = None);
    assert_eq!(err.to_string(), "node #3 `relu`: missing field `op`");
    let err = damaged(&small(), |m| {
        let op = m.nodes.last_mut().expect("relu").op.as_mut().expect("op");
        op.kind = Some(wire::OpKind::Binary(wire::Binary { kind: 0 }));
    });
    assert!(err.to_string().contains("field `kind` has unknown value 0"), "{err}");
}

#[test]
fn each_weight_is_read_by_exactly_one_node() {
    let err = damaged(&small(), |m| {
        let b = node_index(m, "b");
        m.nodes[b].op = Some(wire::Op { kind: Some(wire::OpKind::Weight(wire::WeightRef { index: 0 })) });
    });
    assert!(err.to_string().contains("read by a second weight node"), "{err}");
    let err = damaged(&small(), |m| m.weights.push(m.weights[0].clone()));
    assert_eq!(err.to_string(), "weight #2: no weight node reads it");
    let err = damaged(&small(), |m| m.weights[1] = wire::Weight { dtype: 3, shape: vec![4], data: vec![0, 1, 2, 1] });
    assert!(err.to_string().contains("bool element 2 is the byte 2"), "{err}");
}

#[test]
fn counts_beyond_the_limits_are_refused_from_the_wire() {
    // 2^18 + 1 empty node records: 2 bytes each on the wire, refused before prost decodes them.
    let mut payload = wire::Artifact { name: "big".into(), ..Default::default() }.encode_to_vec();
    for _ in 0..(1 << 18) + 1 {
        payload.extend_from_slice(&[0x1a, 0x00]);
    }
    let err = decode_err(&wire::frame(FORMAT_VERSION, &payload));
    assert_eq!(err.to_string(), "nodes: 262145 exceed(s) the limit of 262144");
}

#[test]
fn a_declared_type_that_disagrees_with_inference_decodes_and_fails_verification() {
    let mut msg = to_message(&encode(&small()));
    let relu = node_index(&msg, "relu");
    msg.nodes[relu].outputs[0].shape = vec![1, 4, 5, 6];
    let (g, _) = artifact::decode(&frame(&msg)).expect("structurally valid");
    let err = verify(g).unwrap_err().to_string();
    assert!(
        err.contains("node `relu` (relu): stored output type f32[1,4,5,6] differs from inferred f32[1,4,5,5]"),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random damage to a valid payload (re-framed with a correct checksum) decodes to an
    /// error or to a graph that verification judges; nothing panics.
    #[test]
    fn damaged_payloads_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let bytes = encode(&every_op_graph());
        let (_, payload) = wire::unframe(&bytes).expect("valid");
        let mut payload = payload.to_vec();
        for (i, b) in edits {
            let i = i.index(payload.len());
            payload[i] = b;
        }
        if truncate {
            payload.truncate(cut.index(payload.len()));
        }
        if let Ok((g, _)) = artifact::decode(&wire::frame(FORMAT_VERSION, &payload)) {
            let _ = verify(g);
        }
    }
}

#[test]
fn a_fused_op_whose_base_is_not_a_conv_gemm_or_matmul_is_rejected() {
    let err = damaged(&every_op_graph(), |m| {
        let i = node_index(m, "fused_conv");
        let relu = wire::Op {
            kind: Some(wire::OpKind::Unary(wire::Unary { kind: Some(wire::UnaryKind::Relu(wire::Empty {})) })),
        };
        match m.nodes[i].op.as_mut().and_then(|o| o.kind.as_mut()) {
            Some(wire::OpKind::Fused(f)) => f.base = Some(Box::new(relu)),
            other => panic!("fused_conv is {other:?}"),
        }
    });
    assert!(err.to_string().contains("a fused op's base is a conv, gemm or matmul"), "{err}");
    let err = damaged(&every_op_graph(), |m| {
        let i = node_index(m, "fused_conv");
        if let Some(wire::OpKind::Fused(f)) = m.nodes[i].op.as_mut().and_then(|o| o.kind.as_mut()) {
            f.base = None;
        }
    });
    assert!(err.to_string().contains("fused base"), "{err}");
}
