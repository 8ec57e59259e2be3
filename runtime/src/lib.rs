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
mod cache;
mod codegen;
mod expf;
mod load;
mod microkernel;
mod model;
mod plan;
mod profile;
mod reference;
#[doc(hidden)]
pub mod testing;
mod threads;

pub use codegen::CompileError;
pub use load::LoadError;
pub use model::Model;
pub use profile::{LayerTime, Profile};
pub use reference::{RunError, eval_op, run_reference};
