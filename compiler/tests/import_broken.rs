//! Every file in `fixtures/broken/` is rejected with an error of its category that mentions
//! what `cases.json` asks for, without panicking.

use std::path::PathBuf;

use cnnc::onnx::{ImportError, ImportOptions, import_file};

fn category(e: &ImportError) -> &'static str {
    match e {
        ImportError::Io { .. } | ImportError::Decode { .. } => "parse",
        ImportError::EmptyGraph { .. }
        | ImportError::UndefinedValue { .. }
        | ImportError::UndefinedOutput { .. }
        | ImportError::DuplicateValue { .. }
        | ImportError::Cycle { .. } => "invalid-graph",
        ImportError::UnsupportedOps { .. } => "unsupported-op",
        ImportError::UnsupportedOpset { .. } => "unsupported-opset",
        ImportError::BadTensor { reason, .. } if reason.contains("external") => "unsupported-external-data",
        ImportError::BadTensor { .. } | ImportError::TensorTooLarge { .. } => "invalid-initializer",
        ImportError::BadAttribute { .. } => "invalid-attribute",
        ImportError::Shape { .. } | ImportError::Verify(_) => "shape",
        ImportError::UnboundDim { .. } => "dynamic-shape",
        _ => "other",
    }
}

#[test]
fn broken_fixtures_are_rejected_with_their_category() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/broken");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases.json")).expect("json");
    let mut failures = Vec::new();
    for case in cases.as_array().expect("a list of cases") {
        let file = case["file"].as_str().expect("file");
        let want = case["error"].as_str().expect("error");
        match import_file(&dir.join(file), &ImportOptions::default()) {
            Ok(_) => failures.push(format!("{file}: imported, expected {want}")),
            Err(e) => {
                eprintln!("{file}: {e}");
                let msg = e.to_string().to_lowercase();
                let missing: Vec<&str> = case["must_mention"]
                    .as_array()
                    .expect("must_mention")
                    .iter()
                    .filter_map(|s| s.as_str())
                    .filter(|s| !msg.contains(&s.to_lowercase()))
                    .collect();
                if category(&e) != want || !missing.is_empty() {
                    failures
                        .push(format!("{file}: got {} `{e}`, expected {want} mentioning {missing:?}", category(&e)));
                }
            }
        }
    }
    let opts = ImportOptions { input_shapes: vec![("x".into(), vec![2, 3, 8, 8])], ..Default::default() };
    match import_file(&dir.join("dynamic_input.onnx"), &opts) {
        Ok(g) => assert_eq!(g.value_type(&g.outputs()[0].value).shape, [2, 4, 8, 8]),
        Err(e) => failures.push(format!("dynamic_input.onnx with --input-shape: {e}")),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
