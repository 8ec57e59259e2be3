//! ONNX operator semantics, op by op: tiny models in `fixtures/ops/` (made by
//! `fixtures/scripts/make_op_cases.py`) cover the attributes and forms the real models do not
//! (auto_pad, ceil_mode, every Resize coordinate transform, negative Slice steps, …). Each is
//! imported and run by the reference interpreter and compared with onnxruntime's output.

use cnnc_ir::{Tensor, TensorData};
use cnnc_tests::{fixtures_dir, ordered_inputs};

/// How an output is compared with onnxruntime's.
#[derive(Clone, Copy)]
enum Compare {
    /// Bit for bit (nearest-neighbour and integer cases).
    Exact,
    /// |got − want| ≤ 1e-5 + 1e-5·|want|: onnxruntime computes in f32 and the reference in f64,
    /// so the two differ by f32 rounding of the (tiny) sums in these cases.
    Float,
    /// Within one quantization step (`quant_step`, in the output's units): a QDQ graph rounds
    /// once more in f32 in cnnc's unfused form than in onnxruntime's integer kernels, and
    /// QLinearAdd rounds before adding the zero point here, after it in onnxruntime (ties).
    Quantized(f64),
}

fn compare(got: &Tensor, want: &Tensor, how: Compare) -> Result<(), String> {
    if let Compare::Quantized(step) = how {
        let (g, w) = (cnnc_tests::values_f64(got), cnnc_tests::values_f64(want));
        if got.shape() != want.shape() || got.dtype() != want.dtype() {
            return Err(format!("got {}, want {}", got.ty(), want.ty()));
        }
        // The step plus f32 rounding of the value itself.
        return match g.iter().zip(&w).position(|(a, b)| (a - b).abs() > step * (1.0 + 1e-6) + 1e-6 * b.abs()) {
            Some(i) => Err(format!("element {i}: got {}, want {} (more than one step of {step})", g[i], w[i])),
            None => Ok(()),
        };
    }
    let exact = matches!(how, Compare::Exact);
    if got.shape() != want.shape() {
        return Err(format!("shape {:?}, want {:?}", got.shape(), want.shape()));
    }
    match (got.data(), want.data()) {
        (TensorData::F32(g), TensorData::F32(w)) => {
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                let ok =
                    if exact { a.to_bits() == b.to_bits() || a == b } else { (a - b).abs() <= 1e-5 + 1e-5 * b.abs() };
                if !(ok || a.is_nan() && b.is_nan()) {
                    return Err(format!("element {i}: got {a}, want {b}"));
                }
            }
            Ok(())
        }
        (TensorData::I64(g), TensorData::I64(w)) if g == w => Ok(()),
        (TensorData::Bool(g), TensorData::Bool(w)) if g == w => Ok(()),
        (TensorData::U8(g), TensorData::U8(w)) if g == w => Ok(()),
        (TensorData::I8(g), TensorData::I8(w)) if g == w => Ok(()),
        (TensorData::I32(g), TensorData::I32(w)) if g == w => Ok(()),
        (g, w) => Err(format!("got {:?} data, want {:?}", g.dtype(), w.dtype())),
    }
}

fn run_case(case: &serde_json::Value) -> Result<(), String> {
    let dir = fixtures_dir().join("ops");
    let model = dir.join(case["model"].as_str().ok_or("model")?);
    let data = cnnc::npy::read_npz(&dir.join(case["data"].as_str().ok_or("data")?)).map_err(|e| e.to_string())?;
    let inputs: Vec<(String, Tensor)> =
        data.iter().filter_map(|(k, t)| k.strip_prefix("in.").map(|n| (n.to_owned(), t.clone()))).collect();
    let input_shapes = inputs.iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect();
    let graph = cnnc::onnx::import_file(&model, &cnnc::onnx::ImportOptions { input_shapes, ..Default::default() })
        .map_err(|e| format!("import: {e}"))?;
    let got = cnnc_runtime::run_reference(&graph, &ordered_inputs(&graph, &inputs)).map_err(|e| format!("run: {e}"))?;
    for (o, t) in graph.outputs().iter().zip(&got) {
        let how = match case["compare"].as_str() {
            Some("exact") => Compare::Exact,
            Some("quantized") => Compare::Quantized(
                case["quant_step"][&o.name].as_f64().ok_or(format!("no quant_step for output `{}`", o.name))?,
            ),
            _ => Compare::Float,
        };
        let key = format!("out.{}", o.name);
        let want = &data.iter().find(|(k, _)| *k == key).ok_or(format!("no expected `{key}`"))?.1;
        compare(t, want, how).map_err(|e| format!("output `{}`: {e}", o.name))?;
    }
    Ok(())
}

#[test]
fn every_op_case_matches_onnxruntime() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("ops/cases.json")).expect("cases.json"))
            .expect("json");
    let cases = cases["cases"].as_array().expect("cases");
    assert!(cases.len() > 150, "the op case set is complete");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(c).err().map(|e| format!("{}: {e}", c["name"].as_str().unwrap_or("?"))))
        .collect();
    assert!(failures.is_empty(), "{} of {} op cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
