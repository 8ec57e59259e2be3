//! `cnnc opt`/`cnnc run` up to the optimizer: import an ONNX model from arbitrary bytes (decode,
//! lower every node, fold constants, infer types, verify), then the activation budget check
//! that guards planning. None of it may panic, hang or allocate without bound on any input.
//!
//! Seeds: the bundled models (`fixtures/models/*.onnx`) and the ONNX op cases
//! (`fixtures/ops/**/*.onnx`); see the README for the command.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let opts = cnnc::onnx::ImportOptions::default();
    if let Ok(graph) = cnnc::onnx::import_bytes(bytes, "fuzz.onnx", &opts) {
        let _ = cnnc_runtime::budget::check(&graph);
    }
});
