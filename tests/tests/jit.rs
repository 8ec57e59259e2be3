//! The JIT against the reference interpreter: every op case in `fixtures/ops/` and every shared
//! model on its real-data golden input.
//!
//! Tolerance: rel-L2 ≤ 1e-5 per output (f32 kernels that reorder sums vs the f64 reference),
//! or the golden's onnxruntime-self-consistency bound where that is larger (ppocr_v4_det);
//! integer and bool outputs, and the op cases marked `exact` (nearest-neighbour, data movement),
//! must match exactly. Every model also runs at 1, 2 and 3 threads: bit-identical outputs.

use cnnc_ir::{Tensor, TensorData};
use cnnc_runtime::{Model, run_reference};
use cnnc_tests::{fixtures_dir, import_with_inputs, load_golden, model_path, ordered_inputs, rel_l2};

fn check(got: &Tensor, want: &Tensor, exact: bool, tol: f64) -> Result<(), String> {
    if got.shape() != want.shape() || got.dtype() != want.dtype() {
        return Err(format!("type {} vs reference {}", got.ty(), want.ty()));
    }
    match (got.data(), want.data(), exact) {
        (TensorData::F32(_), TensorData::F32(_), false) => {
            let e = rel_l2(got, want);
            if e <= tol { Ok(()) } else { Err(format!("rel-L2 {e:.3e} > {tol:.1e}")) }
        }
        _ if got == want => Ok(()),
        (TensorData::F32(g), TensorData::F32(w), true)
            if g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())) =>
        {
            Ok(())
        }
        _ => Err("values differ (exact comparison)".into()),
    }
}

fn run_case(case: &serde_json::Value) -> Result<(), String> {
    let dir = fixtures_dir().join("ops");
    let model = dir.join(case["model"].as_str().ok_or("model")?);
    let data = cnnc::npy::read_npz(&dir.join(case["data"].as_str().ok_or("data")?)).map_err(|e| e.to_string())?;
    let inputs: Vec<(String, Tensor)> =
        data.iter().filter_map(|(k, t)| k.strip_prefix("in.").map(|n| (n.to_owned(), t.clone()))).collect();
    let graph = import_with_inputs(&model, &inputs);
    let ordered = ordered_inputs(&graph, &inputs);
    let want = run_reference(&graph, &ordered).map_err(|e| format!("reference: {e}"))?;
    let jit = Model::compile(&graph).map_err(|e| format!("compile: {e}"))?;
    let got = jit.run(&ordered).map_err(|e| format!("run: {e}"))?;
    let exact = case["compare"] == "exact";
    let n = graph.outputs().len();
    if (got.len(), want.len()) != (n, n) {
        return Err(format!("{} JIT and {} reference outputs for {n} graph outputs", got.len(), want.len()));
    }
    for ((o, g), w) in graph.outputs().iter().zip(&got).zip(&want) {
        check(g, w, exact, 1e-5).map_err(|e| format!("output `{}`: {e}", o.name))?;
    }
    Ok(())
}

#[test]
fn jit_matches_reference_on_every_op_case() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("ops/cases.json")).expect("cases.json"))
            .expect("json");
    let cases = cases["cases"].as_array().expect("cases");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(c).err().map(|e| format!("{}: {e}", c["name"].as_str().unwrap_or("?"))))
        .collect();
    assert!(failures.is_empty(), "{} of {} op cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

fn check_model(stem: &str) {
    let Some(path) = model_path(stem) else { return };
    let golden = load_golden(stem);
    let graph = import_with_inputs(&path, &golden.inputs);
    let inputs = ordered_inputs(&graph, &golden.inputs);
    let want = run_reference(&graph, &inputs).expect("reference runs");
    let mut model = Model::compile(&graph).unwrap_or_else(|e| panic!("{stem}: {e}"));
    model.set_threads(1);
    let got = model.run(&inputs).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let n = graph.outputs().len();
    assert_eq!((got.len(), want.len()), (n, n), "{stem}: JIT and reference output counts");
    // Threads share kernels' work units, never a reduction: the same bits for any count.
    for threads in [2, 3] {
        model.set_threads(threads);
        let again = model.run(&inputs).unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(again.len(), n, "{stem}: {threads} threads: output count");
        for ((o, a), b) in graph.outputs().iter().zip(&again).zip(&got) {
            check(a, b, true, 0.0).unwrap_or_else(|e| panic!("{stem} `{}`, {threads} threads vs 1: {e}", o.name));
        }
    }
    for ((o, g), w) in graph.outputs().iter().zip(&got).zip(&want) {
        let tol = golden.tolerance[&o.name].max(1e-5);
        eprintln!("{stem} `{}`: JIT vs reference rel-L2 {:.3e} (bound {tol:.1e})", o.name, rel_l2(g, w));
        check(g, w, false, tol).unwrap_or_else(|e| panic!("{stem} output `{}`: {e}", o.name));
    }
}

cnnc_tests::shared_model_tests!(models, check_model);
