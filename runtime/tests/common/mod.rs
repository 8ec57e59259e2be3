//! Helpers shared by the JIT kernel tests: deterministic data and the JIT-vs-reference check.
#![allow(dead_code)] // each test binary uses a different subset

use cnnc_ir::{Graph, Tensor, verify};
use cnnc_runtime::testing;
pub use cnnc_runtime::testing::random;
use cnnc_runtime::{Model, run_reference};

/// Same shape, then [`testing::assert_close`]: rel-L2 ≤ 1e-6 and every element within
/// 1e-5·max|want| (the tolerance each test file's header justifies), naming `what` on failure.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    testing::assert_close(what, got.as_f32().expect("f32"), want.as_f32().expect("f32"));
}

/// Compiles `g`, runs it and the reference on `inputs`, and compares every output.
pub fn check_close(g: Graph, inputs: &[Tensor]) {
    let g = verify(g).unwrap_or_else(|e| panic!("{e}"));
    let model = Model::compile(&g).unwrap_or_else(|e| panic!("{e}"));
    let got = model.run(inputs).expect("runs");
    let want = run_reference(&g, inputs).expect("reference runs");
    let n = g.outputs().len();
    assert_eq!((got.len(), want.len()), (n, n), "JIT and reference output counts");
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("output {i}"), got, want);
    }
}
