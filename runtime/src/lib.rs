//! cnnc's runtime. For now: the reference interpreter, the oracle every later kernel and
//! rewrite is checked against. `runtime` never depends on `passes` or `compiler`.

mod reference;

pub use reference::{RunError, eval_op, run_reference};
