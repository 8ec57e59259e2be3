//! cnnc's graph optimizer. It will hold the egg language, the exact and approximate rewrite
//! families, the cost model interface (`CostOracle`) and extraction. It depends on `ir` only:
//! measurements come through traits that `compiler` implements over the runtime.
//!
//! The crate is empty until the e-graph milestone; it exists now so that the dependency
//! direction (`passes` → `ir`, never `runtime`) is fixed and tested from the start.
