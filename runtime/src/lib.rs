//! cnnc's runtime: compiles a verified graph to native kernels with Cranelift and runs it
//! ([`Model`]), plus the reference interpreter ([`run_reference`]), the oracle every kernel and
//! rewrite is checked against. `runtime` never depends on `passes` or `compiler`.

mod codegen;
mod load;
mod microkernel;
mod model;
mod plan;
mod profile;
mod reference;
mod threads;

pub use codegen::CompileError;
pub use load::LoadError;
pub use model::Model;
pub use profile::{LayerTime, Profile};
pub use reference::{RunError, eval_op, run_reference};
