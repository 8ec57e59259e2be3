//! `Model::load` on the artifacts in `fixtures/artifacts/`: the valid ones load and run, each
//! corrupt one gets its specific error, and nothing panics.
//!
//! The corrupt fixtures are damaged copies of `tiny_conv.cnnc`, which this file builds; run
//! `CNNC_BLESS=1 cargo test -p cnnc-runtime --test load` to rewrite them (see
//! `fixtures/scripts/make_artifacts.sh`, which also makes `mnist_cnn_b1.cnnc` with `cnnc opt`).
//! Without `CNNC_BLESS`, `fixtures_match_their_generator` checks the files are current.

use std::path::PathBuf;

use cnnc_ir::artifact::{self, ArtifactError, ArtifactMeta, FORMAT_VERSION, wire};
use cnnc_ir::{ConvAttrs, Graph, Op, PoolAttrs, Tensor, TensorType, UnaryOp, verify};
use cnnc_runtime::{LoadError, Model, run_reference};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/artifacts")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run fixtures/scripts/make_artifacts.sh)", path.display()))
}

/// Loads a fixture through the public entry point; the one helper every test goes through.
fn load(name: &str) -> Result<Model, LoadError> {
    Model::load(&read(name))
}

fn load_err(name: &str) -> LoadError {
    match load(name) {
        Ok(_) => panic!("{name}: expected a load error"),
        Err(e) => e,
    }
}

/// The artifact error of a fixture, with its message checked to contain `fragment`.
fn artifact_err(name: &str, fragment: &str) -> ArtifactError {
    match load_err(name) {
        LoadError::Artifact(e) => {
            assert!(e.to_string().contains(fragment), "{name}: `{fragment}` not in: {e}");
            e
        }
        other => panic!("{name}: expected an artifact error, got: {other}"),
    }
}

/// `x[1,2,6,6] → conv(group 2, 3×3, pad 1) → relu → max-pool 2×2 → y`, with small weights.
fn tiny_conv() -> Graph {
    let mut g = Graph::new("tiny_conv");
    let x = g.add_input("x", TensorType::f32([1, 2, 6, 6]));
    let w = g.add_weight(
        "w",
        Tensor::from_f32([4, 1, 3, 3], (0..36).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect()).expect("36"),
    );
    let b = g.add_weight("b", Tensor::from_f32([4], vec![0.5, -0.25, 0.0, 1.0]).expect("4"));
    let conv = Op::Conv(ConvAttrs::new(&[3, 3]).pads(&[1; 4]).group(2));
    let conv = g.add_node("conv", conv, &[x, w, b]).expect("conv")[0];
    let relu = g.add_node("relu", Op::Unary(UnaryOp::Relu), &[conv]).expect("relu")[0];
    let pool = PoolAttrs {
        kernel: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        ceil_mode: false,
    };
    let pool = g.add_node("pool", Op::MaxPool(pool), &[relu]).expect("pool")[0];
    g.add_output("y", pool);
    g
}

/// A fuzzing seed with a wider range of ops (movement, resize, reductions, i64 values).
const OPS_MIX: &str = r#"graph "ops_mix" {
  %x = input f32[1,3,4,4]
  %idx = input i64[2]
  %s = weight f32[3] [1.0, 2.0, 0.5]
  %bias = weight f32[3] [0.0, 0.1, -0.1]
  %mean = weight f32[3] [0.0, 0.0, 0.0]
  %var = weight f32[3] [1.0, 1.0, 1.0]
  %bn = batchnorm{epsilon=1e-5}(%x, %s, %bias, %mean, %var) : f32[1,3,4,4]
  %hs = hard-swish(%bn) : f32[1,3,4,4]
  %up = resize{mode=nearest, coord=asymmetric, nearest=floor, scales=[1.0, 1.0, 2.0, 2.0], out-shape=[1, 3, 8, 8]}(%hs) : f32[1,3,8,8]
  %parts = split{axis=1, sizes=[1, 2]}(%up) : f32[1,1,8,8], f32[1,2,8,8]
  %cat = concat{axis=1}(%parts:1, %parts:0) : f32[1,3,8,8]
  %pad = pad{pads=[0, 0, 1, 1, 0, 0, 1, 1], mode=reflect, value=0.0}(%cat) : f32[1,3,10,10]
  %sl = slice{axes=[[2, 0, 10, 2]]}(%pad) : f32[1,3,5,10]
  %tr = transpose{perm=[0, 2, 3, 1]}(%sl) : f32[1,5,10,3]
  %g = gather{axis=1}(%tr, %idx) : f32[1,2,10,3]
  %r = reduce-mean{axes=[2], keepdims=false}(%g) : f32[1,2,3]
  %sm = softmax{axis=2, flatten=false}(%r) : f32[1,2,3]
  %am = arg-max{axis=2, keepdims=false, select-last-index=false}(%sm) : i64[1,2]
  output "sm" = %sm
  output "am" = %am
}"#;

/// Format version 2's dtypes: u8, i8 and i32 values and weights through movement ops and casts.
const INT_DTYPES: &str = r#"graph "int_dtypes" {
  %x = input u8[1,2,3]
  %w = weight i8[1,3,2] [-128, -1, 0, 1, 64, 127]
  %b = weight i32[3] [-2147483648, 0, 2147483647]
  %t = transpose{perm=[0, 2, 1]}(%x) : u8[1,3,2]
  %xi = cast{to=i8}(%t) : i8[1,3,2]
  %cat = concat{axis=0}(%xi, %w) : i8[2,3,2]
  %c32 = cast{to=i32}(%cat) : i32[2,3,2]
  %p = pad{pads=[0, 0, 0, 0, 0, 1], mode=constant, value=-3.0}(%c32) : i32[2,3,3]
  %f = cast{to=f32}(%b) : f32[3]
  output "p" = %p
  output "f" = %f
}"#;

fn int_dtypes_bytes() -> Vec<u8> {
    let g = verify(INT_DTYPES.parse::<Graph>().expect("parses")).unwrap_or_else(|e| panic!("{e}"));
    artifact::encode(&g, &ArtifactMeta::default()).expect("encodes")
}

fn ops_mix_bytes() -> Vec<u8> {
    let g = verify(OPS_MIX.parse::<Graph>().expect("parses")).unwrap_or_else(|e| panic!("{e}"));
    artifact::encode(&g, &ArtifactMeta::default()).expect("encodes")
}

fn tiny_conv_bytes() -> Vec<u8> {
    artifact::encode(&verify(tiny_conv()).expect("verifies"), &ArtifactMeta::default()).expect("encodes")
}

/// `tiny_conv.cnnc` with its message changed by `f`, framed with a correct checksum.
fn damaged(f: impl FnOnce(&mut wire::Artifact)) -> Vec<u8> {
    let (_, mut msg) = wire::unframe_message(&tiny_conv_bytes()).expect("valid");
    f(&mut msg);
    wire::frame_message(FORMAT_VERSION, &msg)
}

fn node_mut<'a>(msg: &'a mut wire::Artifact, name: &str) -> &'a mut wire::Node {
    msg.nodes.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no node `{name}`"))
}

fn with_version(mut bytes: Vec<u8>, version: u32) -> Vec<u8> {
    bytes[4..8].copy_from_slice(&version.to_le_bytes());
    bytes
}

/// Every generated fixture: file name and bytes. `mnist_cnn_b1.cnnc` is made by `cnnc opt`.
fn generated() -> Vec<(&'static str, Vec<u8>)> {
    let valid = tiny_conv_bytes();
    let mut flipped = valid.clone();
    for i in [30, 31, 60] {
        flipped[i] ^= 0xff;
    }
    vec![
        ("tiny_conv.cnnc", valid.clone()),
        ("ops_mix.cnnc", ops_mix_bytes()),
        ("int_dtypes.cnnc", int_dtypes_bytes()),
        ("truncated_magic.cnnc", valid[..2].to_vec()),
        ("truncated_header.cnnc", valid[..12].to_vec()),
        ("truncated_payload.cnnc", valid[..valid.len() / 2].to_vec()),
        ("truncated_last_byte.cnnc", valid[..valid.len() - 1].to_vec()),
        ("wrong_magic.cnnc", [b"CNNX".as_slice(), &valid[4..]].concat()),
        ("version_future.cnnc", with_version(valid.clone(), FORMAT_VERSION + 1)),
        ("version_too_old.cnnc", with_version(valid.clone(), artifact::MIN_READ_VERSION - 1)),
        ("flipped_bytes.cnnc", flipped),
        ("weight_size_mismatch.cnnc", damaged(|m| m.weights[0].data.truncate(140))),
        ("absurd_shape.cnnc", damaged(|m| m.weights[0].shape = vec![1 << 31, 1 << 31, 1 << 31, 4])),
        ("forward_ref_cycle.cnnc", damaged(|m| node_mut(m, "conv").inputs[0] = wire::ValueRef { value: 5, slot: 0 })),
        (
            "conv_group_zero.cnnc",
            damaged(|m| match node_mut(m, "conv").op.as_mut().and_then(|o| o.kind.as_mut()) {
                Some(wire::OpKind::Conv(c)) => c.group = 0,
                _ => panic!("conv"),
            }),
        ),
        ("type_mismatch.cnnc", damaged(|m| node_mut(m, "relu").outputs[0].shape = vec![1, 4, 6, 5])),
    ]
}

#[test]
fn fixtures_match_their_generator() {
    let bless = std::env::var("CNNC_BLESS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, bytes) in generated() {
        let path = fixtures().join(name);
        if bless {
            std::fs::create_dir_all(fixtures()).expect("create fixtures/artifacts");
            std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(name);
        }
    }
    assert!(stale.is_empty(), "stale fixtures {stale:?}: run CNNC_BLESS=1 cargo test -p cnnc-runtime --test load");
}

#[test]
fn mnist_artifact_loads_with_its_compiled_types() {
    let model = load("mnist_cnn_b1.cnnc").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.inputs(), &[("input".to_owned(), TensorType::f32([1, 1, 28, 28]))]);
    assert_eq!(model.outputs(), &[("logits".to_owned(), TensorType::f32([1, 10]))]);
}

#[test]
fn tiny_conv_artifact_runs_like_the_reference() {
    let model = load("tiny_conv.cnnc").unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::from_f32([1, 2, 6, 6], (0..72).map(|i| (i as f32 - 36.0) * 0.1).collect()).expect("72");
    let got = model.run(std::slice::from_ref(&x)).expect("runs");
    let want = run_reference(&verify(tiny_conv()).expect("verifies"), &[x]).expect("reference runs");
    let (got, want) = (got[0].as_f32().expect("f32"), want[0].as_f32().expect("f32"));
    for (a, b) in got.iter().zip(want) {
        // f32 accumulation of 9 products vs the f64 reference.
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn a_format_version_1_artifact_still_loads_and_runs() {
    // Written by the last format-1 cnnc (before u8/i8/i32) and never regenerated.
    let bytes = read("format_v1_tiny_conv.cnnc");
    assert_eq!(bytes[4..8], 1u32.to_le_bytes());
    let model = load("format_v1_tiny_conv.cnnc").unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::from_f32([1, 2, 6, 6], (0..72).map(|i| (i as f32 * 0.37).sin()).collect()).expect("72");
    let got = model.run(std::slice::from_ref(&x)).expect("runs");
    let want = run_reference(&verify(tiny_conv()).expect("verifies"), &[x]).expect("reference runs");
    let (got, want) = (got[0].as_f32().expect("f32"), want[0].as_f32().expect("f32"));
    for (a, b) in got.iter().zip(want) {
        // f32 accumulation of 9 products vs the f64 reference.
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn int_dtypes_artifact_runs_exactly_like_the_reference() {
    let model = load("int_dtypes.cnnc").unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::from_u8([1, 2, 3], vec![0, 1, 127, 128, 200, 255]).expect("6");
    let got = model.run(std::slice::from_ref(&x)).expect("runs");
    let graph = verify(INT_DTYPES.parse::<Graph>().expect("parses")).expect("verifies");
    let want = run_reference(&graph, &[x]).expect("reference runs");
    assert_eq!(got, want);
    // u8 → i8 keeps the low bits; the pad constant −3 fills the new last column.
    assert_eq!(
        want[0].as_i32().expect("i32")[..9],
        [0, -128, -3, 1, -56, -3, 127, -1, -3],
        "x transposed, cast to i8 and padded"
    );
}

#[test]
fn ops_mix_artifact_loads_or_names_a_missing_kernel() {
    // Decoding and re-verification must succeed; the JIT may still lack a kernel for some op.
    match load("ops_mix.cnnc") {
        Ok(_) | Err(LoadError::Compile(cnnc_runtime::CompileError::Unsupported { .. })) => {}
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn truncated_artifacts_are_reported_as_truncated() {
    for name in ["truncated_magic.cnnc", "truncated_header.cnnc", "truncated_payload.cnnc", "truncated_last_byte.cnnc"]
    {
        let e = artifact_err(name, "truncated artifact");
        assert!(matches!(e, ArtifactError::Truncated { .. }), "{name}: {e}");
    }
}

#[test]
fn wrong_magic_is_not_an_artifact() {
    let e = artifact_err("wrong_magic.cnnc", "not a cnnc artifact");
    assert!(matches!(e, ArtifactError::NotAnArtifact { .. }));
}

#[test]
fn a_future_version_asks_for_recompilation() {
    let e = artifact_err("version_future.cnnc", "recompile the model with `cnnc opt`");
    assert_eq!(
        e.to_string(),
        format!(
            "artifact format version {}; this cnnc (version {}) reads versions {}–{FORMAT_VERSION}: recompile the \
             model with `cnnc opt`",
            FORMAT_VERSION + 1,
            env!("CARGO_PKG_VERSION"),
            artifact::MIN_READ_VERSION
        )
    );
}

#[test]
fn a_version_older_than_supported_asks_for_recompilation() {
    let e = artifact_err("version_too_old.cnnc", "recompile the model with `cnnc opt`");
    assert!(matches!(e, ArtifactError::UnsupportedVersion { found, .. } if found == artifact::MIN_READ_VERSION - 1));
}

#[test]
fn flipped_bytes_fail_the_checksum() {
    let e = artifact_err("flipped_bytes.cnnc", "corrupt artifact: the payload's CRC-32");
    assert!(matches!(e, ArtifactError::Checksum { .. }));
}

#[test]
fn a_weight_shorter_than_its_shape_is_named() {
    let e = artifact_err("weight_size_mismatch.cnnc", "weight #0");
    assert_eq!(e.to_string(), "weight #0 (dtype f32, shape [4, 1, 3, 3]) needs 144 bytes, the artifact holds 140");
}

#[test]
fn an_absurd_shape_is_refused_before_allocating() {
    let e = artifact_err("absurd_shape.cnnc", "the element count overflows");
    assert!(matches!(e, ArtifactError::BadShape { ref at, .. } if at == "weight #0"), "{e}");
}

#[test]
fn a_reference_to_a_later_node_is_refused_as_a_cycle() {
    let e = artifact_err("forward_ref_cycle.cnnc", "node #2 `conv`: input 0: reads value #5 (node #4)");
    assert!(e.to_string().contains("a reference forward (a cycle) is invalid"), "{e}");
}

#[test]
fn a_group_of_zero_is_a_bad_attribute() {
    let e = artifact_err("conv_group_zero.cnnc", "");
    assert_eq!(e.to_string(), "node #2 `conv` (conv): attribute `group`: is 0, must be ≥ 1");
}

#[test]
fn a_declared_type_that_disagrees_with_inference_fails_reverification() {
    match load_err("type_mismatch.cnnc") {
        LoadError::Verify(e) => {
            let msg = LoadError::Verify(e).to_string();
            assert!(
                msg.contains("node `relu` (relu): stored output type f32[1,4,6,5] differs from inferred f32[1,4,6,6]"),
                "{msg}"
            );
        }
        other => panic!("expected a verification error, got: {other}"),
    }
}

#[test]
fn every_fixture_prefix_and_byte_flip_fails_cleanly() {
    // No panic on any truncation or single-byte flip of every fixture (outcomes are errors or,
    // for bytes the checksum skips, a successful load).
    for (name, bytes) in generated() {
        for cut in (0..bytes.len()).step_by(7) {
            assert!(Model::load(&bytes[..cut]).is_err(), "{name} cut at {cut}");
        }
        for i in 0..bytes.len().min(64) {
            let mut b = bytes.clone();
            b[i] ^= 0x41;
            let _ = Model::load(&b);
        }
    }
    assert!(matches!(Model::load(&[]), Err(LoadError::Artifact(ArtifactError::Truncated { .. }))));
}
