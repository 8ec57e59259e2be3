//! cnnc's runtime: compiles a verified graph to native kernels with Cranelift and runs it
//! ([`Model`]), plus the reference interpreter ([`run_reference`]), the oracle every kernel and
//! rewrite is checked against. `runtime` never depends on `passes` or `compiler`.

/// In a test: the host's f32 microkernels, or (on a host without AVX2 and FMA) a skip that says
/// so, which [`testing::cpu_skip`] turns into a failure where the environment says the host has
/// them.
#[cfg(test)]
macro_rules! microkernels_or_skip {
    () => {
        match crate::microkernel::select(crate::microkernel::Choice::Auto) {
            Some(mk) => mk,
            None => {
                crate::testing::cpu_skip(concat!(module_path!(), ":", line!()), "avx2");
                return;
            }
        }
    };
}

/// In a test: the host's f32 microkernels once per GEMM tile it has, with a skip for each tile
/// it lacks (`microkernel::each_tile_or_skip`: a failure where `CNNC_REQUIRE_CPU` names it).
#[cfg(test)]
macro_rules! each_f32_tile {
    () => {
        crate::microkernel::each_tile_or_skip(concat!(module_path!(), ":", line!()))
    };
}

pub mod budget;
mod codegen;
mod expf;
mod load;
mod microkernel;
mod model;
mod plan;
mod profile;
mod reference;
mod threads;

/// Test support shared by the runtime's tests and the workspace's test crates.
#[doc(hidden)]
pub mod testing {
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
}

pub use codegen::CompileError;
pub use load::LoadError;
pub use model::Model;
pub use profile::{LayerTime, Profile};
pub use reference::{RunError, eval_op, run_reference};
