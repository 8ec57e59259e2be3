//! Test support shared by the runtime's tests and the workspace's test crates: CPU-feature
//! skips, deterministic data and the rel-L2 error every numeric test measures.

use cnnc_ir::Tensor;

/// Skips a test whose CPU features the host lacks, loudly: prints
/// `SKIPPED: {test}: this host lacks the {tier} tier's CPU features`, and panics instead when
/// `CNNC_REQUIRE_CPU` (space-separated tiers: `avx2` = AVX2 + FMA, `avx512` = AVX2 + FMA +
/// AVX-512F (the f32 GEMM tile), `vnni` = AVX-512 F/BW/VNNI, `vbmi` = VNNI + AVX-512 VBMI,
/// `amx` = VNNI + AMX-TILE/INT8) names `tier`: `.ci/run` sets it from `/proc/cpuinfo`, so a
/// test that should run there cannot pass by skipping.
pub fn cpu_skip(test: &str, tier: &str) {
    let required = std::env::var("CNNC_REQUIRE_CPU").unwrap_or_default();
    assert!(
        !required.split_whitespace().any(|t| t == tier),
        "{test}: CNNC_REQUIRE_CPU={required:?} says this host has the {tier} tier, but its kernels are unavailable"
    );
    eprintln!("SKIPPED: {test}: this host lacks the {tier} tier's CPU features");
}

/// `n` deterministic values in `[-amplitude, amplitude)`, the same for the same `seed`: a
/// 64-bit LCG whose top 24 bits give multiples of 2⁻²³ in `[-1, 1)`, scaled (exactly, for a
/// power-of-two `amplitude`).
pub fn random_values(n: usize, seed: u64, amplitude: f32) -> Vec<f32> {
    const A: u64 = 6364136223846793005;
    const C: u64 = 1442695040888963407;
    let mut s = seed.wrapping_mul(A).wrapping_add(C);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(A).wrapping_add(C);
            (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * amplitude
        })
        .collect()
}

/// An f32 tensor of `shape` filled with [`random_values`] in `[-1, 1)`.
pub fn random(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_f32(shape.to_vec(), random_values(shape.iter().product(), seed, 1.0)).expect("shape")
}

/// Asserts rel-L2 ≤ 1e-6 and every element within 1e-5·max|want| (the kernel tests' tolerance,
/// which each test file's header justifies), naming `what` and the first element off.
pub fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: element count");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-5 * scale, "{what}: element {i}: {a} vs reference {b}");
    }
    let rel = rel_l2(got, want);
    assert!(rel <= 1e-6, "{what}: rel-L2 {rel:.3e}");
}

/// `‖got − want‖₂ / ‖want‖₂`, summed in f64 (`‖got − want‖₂` when `want` is all zeros).
pub fn rel_l2<G: Copy + Into<f64>, W: Copy + Into<f64>>(got: &[G], want: &[W]) -> f64 {
    assert_eq!(got.len(), want.len(), "element counts differ");
    let (mut diff, mut norm) = (0f64, 0f64);
    for (&a, &b) in got.iter().zip(want) {
        let (a, b): (f64, f64) = (a.into(), b.into());
        diff += (a - b).powi(2);
        norm += b * b;
    }
    if norm == 0.0 { diff.sqrt() } else { (diff / norm).sqrt() }
}
