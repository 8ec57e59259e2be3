//! Helpers shared by the JIT kernel tests: deterministic data and the JIT-vs-reference check.
#![allow(dead_code)] // each test binary uses a different subset

use cnnc_ir::{Graph, Tensor, verify};
use cnnc_runtime::{Model, run_reference};

/// Deterministic values in [-1, 1).
pub fn random(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let data = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_f32(shape.to_vec(), data).expect("shape")
}

/// rel-L2 ≤ 1e-6 and every element within 1e-5·max|want| (the tolerance each test file's
/// header justifies), naming `what` on failure.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let (g, w) = (got.as_f32().expect("f32"), want.as_f32().expect("f32"));
    assert_eq!(g.len(), w.len(), "{what}: element count");
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let (mut diff, mut norm) = (0f64, 0f64);
    for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
        assert!((a - b).abs() <= 1e-5 * scale, "{what}: element {i}: {a} vs reference {b}");
        diff += f64::from(a - b).powi(2);
        norm += f64::from(b).powi(2);
    }
    let rel = if norm == 0.0 { diff.sqrt() } else { (diff / norm).sqrt() };
    assert!(rel <= 1e-6, "{what}: rel-L2 {rel:.3e}");
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
