//! What the search needs from execution, as a trait `compiler` implements over the runtime (as
//! it does [`crate::CostOracle`]): run a candidate graph on one split of the calibration data
//! and stream its outputs and chosen intermediate values ("taps") batch by batch. `passes`
//! never depends on the runtime.

use cnnc_ir::{Tensor, ValueRef, VerifiedGraph};

/// A split of the calibration data, decided per sample group before anything is fitted: the
/// proposals and the error model are fitted on `Fit`, budgets are checked on `Validation`, and
/// the reported numbers come from `Test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Fit,
    Validation,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Fit, Split::Validation, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Fit => "fit",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One batch of a run: the graph's outputs followed by the taps, in the order asked for, each
/// with the batch's samples along dim 0, and the samples' labels where the data have them.
#[derive(Debug)]
pub struct EvalBatch<'a> {
    /// Index of the batch's first sample within the split (samples keep their order).
    pub first: usize,
    pub outputs: &'a [Tensor],
    pub taps: &'a [Tensor],
    pub labels: &'a [Option<i64>],
}

/// What a run's sink wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Enough samples: end the run early (successfully).
    Stop,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("the {} split holds no sample", .0.name())]
    EmptySplit(Split),
    #[error("{0}")]
    Failed(String),
}

/// Runs graphs on calibration data.
pub trait Evaluator {
    /// Samples in `split`.
    fn len(&self, split: Split) -> usize;

    /// Runs `graph` on the samples of `split`, in order, and calls `sink` once per batch until
    /// it returns [`Flow::Stop`] or the split ends. `taps` name values of `graph` to stream
    /// besides its outputs.
    fn run(
        &mut self,
        graph: &VerifiedGraph,
        split: Split,
        taps: &[ValueRef],
        sink: &mut dyn FnMut(EvalBatch<'_>) -> Result<Flow, EvalError>,
    ) -> Result<(), EvalError>;
}
