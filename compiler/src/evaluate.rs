//! The search's [`Evaluator`] over the runtime: a candidate graph is JIT-compiled (taps added
//! as extra outputs) and run on a calibration split, one model batch at a time, streamed from
//! the [`CalibSet`] so memory stays bounded by a batch.

use cnnc_ir::{Tensor, ValueRef, VerifiedGraph};
use cnnc_passes::{EvalBatch, EvalError, Evaluator, Flow, Split};
use cnnc_runtime::{CompileError, Model, run_reference};

use crate::calib::CalibSet;
use crate::interrupt;
use crate::progress::Progress;

/// Runs graphs on the samples of a [`CalibSet`] (single-input models).
pub struct RuntimeEvaluator<'a> {
    set: &'a CalibSet,
    threads: usize,
    /// Model batches run so far (for progress and the report).
    pub runs: usize,
    /// What the runs are for, shown with their progress; a line is printed (when stderr is not
    /// a terminal) the first time each phase runs.
    phase: String,
    announced: String,
}

impl<'a> RuntimeEvaluator<'a> {
    /// Runs on `set`'s samples with `threads` threads per run.
    pub fn new(set: &'a CalibSet, threads: usize) -> RuntimeEvaluator<'a> {
        RuntimeEvaluator { set, threads: threads.max(1), runs: 0, phase: String::new(), announced: String::new() }
    }

    /// Names the runs that follow (e.g. `-O speed: sensitivity of each layer (fit split)`).
    pub fn set_phase(&mut self, phase: impl Into<String>) {
        self.phase = phase.into();
    }
}

/// What executes a candidate: the JIT, or the reference interpreter when some op has no
/// native kernel.
enum Engine<'g> {
    Jit(Box<Model>),
    Reference(&'g VerifiedGraph),
}

impl Evaluator for RuntimeEvaluator<'_> {
    fn len(&self, split: Split) -> usize {
        self.set.samples(split).len()
    }

    fn run(
        &mut self,
        graph: &VerifiedGraph,
        split: Split,
        taps: &[ValueRef],
        sink: &mut dyn FnMut(EvalBatch<'_>) -> Result<Flow, EvalError>,
    ) -> Result<(), EvalError> {
        if self.set.samples(split).is_empty() {
            return Err(EvalError::EmptySplit(split));
        }
        let mut g: cnnc_ir::Graph = (**graph).clone();
        let n_out = g.outputs().len();
        for (i, t) in taps.iter().enumerate() {
            g.add_output(format!("__tap{i}"), *t);
        }
        let g = cnnc_ir::verify(g).map_err(|e| EvalError::Failed(format!("adding taps: {e}")))?;
        let engine = match Model::compile(&g) {
            Ok(mut m) => {
                m.set_threads(self.threads);
                Engine::Jit(Box::new(m))
            }
            Err(CompileError::Unsupported { .. }) => Engine::Reference(&g),
            Err(e) => return Err(EvalError::Failed(format!("compiling a candidate: {e}"))),
        };
        let batch = g.node(g.inputs()[0]).outputs[0].shape.first().copied().unwrap_or(1).max(1);
        let n = self.set.samples(split).len() as u64;
        let message = format!("{} ({} split, {n} samples)", self.phase, split);
        let progress = if self.announced == self.phase {
            Progress::start_quiet(n, message)
        } else {
            self.announced = self.phase.clone();
            Progress::start(n, message)
        };
        let mut first = 0;
        for item in self.set.batches(split, batch) {
            if interrupt::requested() {
                return Err(EvalError::Failed("interrupted".into()));
            }
            let (samples, x) = item.map_err(|e| EvalError::Failed(e.to_string()))?;
            if samples.len() < batch {
                // A short last batch: the model's batch is fixed, so it is left out.
                break;
            }
            let outs: Vec<Tensor> = match &engine {
                Engine::Jit(m) => m.run(std::slice::from_ref(&x)),
                Engine::Reference(g) => run_reference(g, std::slice::from_ref(&x)),
            }
            .map_err(|e| EvalError::Failed(format!("running a candidate: {e}")))?;
            self.runs += 1;
            let labels: Vec<Option<i64>> = samples.iter().map(|s| s.label).collect();
            let flow = sink(EvalBatch { first, outputs: &outs[..n_out], taps: &outs[n_out..], labels: &labels })?;
            first += samples.len();
            for _ in 0..samples.len() {
                progress.inc();
            }
            if flow == Flow::Stop {
                break;
            }
        }
        Ok(())
    }
}
