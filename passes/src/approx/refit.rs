//! Asymmetric refit of a chosen mix (teacher–student, Zhang et al., "Accelerating very deep
//! convolutional networks", §3.2): once the search has chosen proposals for several layers,
//! each chosen layer's input in the approximated network differs from the original network's
//! (the layers before it are approximated too), so a last factor fitted on the original inputs
//! no longer gives the original outputs. The refit solves, for each chosen proposal, its last
//! factor `(V, c)` (a 1×1 conv or a Gemm in every family) by ridge least squares so that, on the
//! fit split, `V ẑ + c` — `ẑ` the last factor's input in the *approximated* network — reproduces
//! `W̃ x̃` — the layer's output in the *original* network on the original input:
//!
//! `[V c] = W̃ E[x̃ ẑ̃ᵀ] (E[ẑ̃ ẑ̃ᵀ] + λI)⁻¹`,  `ẑ̃ = [ẑ; 1]`.
//!
//! Both networks run in one graph (the teacher's nodes and a copy of the student's sharing the
//! inputs), so the statistics pair each sample's teacher patch with the student activation at
//! the same output position. All chosen layers are refit from one pass (each sees the upstream
//! layers before their own refit). The result is validated end to end like any candidate; the
//! proposals' predicted errors are those before the refit, so the refit only makes the
//! validated drop smaller than the search expected.

use std::collections::HashMap;

use cnnc_ir::{Graph, NodeId, Op, Tensor, ValueRef, VerifiedGraph};
use egg::EGraph;
use faer::Mat;

use super::linalg::ridge_solve_right;
use super::stats::sample_patches;
use super::{LayerKind, Proposal, apply, augmented_weight, tensor_of};
use crate::analysis::CnnAnalysis;
use crate::lang::{Cnn, WeightRef};
use crate::speed::Lossless;
use crate::{EvalError, Evaluator, Flow, Split};

/// Rows (sampled positions) a refit needs per unknown of an output channel; fewer and the
/// layer keeps its proposal's fit.
pub const MIN_ROWS_PER_UNKNOWN: usize = 8;

/// New contents for a proposal weight of the e-graph's store.
#[derive(Clone, Debug)]
pub struct NewWeight {
    pub weight: WeightRef,
    pub tensor: Tensor,
}

/// How much data the refit reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefitData {
    /// Fit samples run (both networks, one graph).
    pub max_samples: usize,
    /// Output positions sampled per image of a conv layer.
    pub max_pixels: usize,
}

/// The refit last factors (weight and bias) of the proposals in `chosen`, from the fit split.
/// A proposal whose last factor has no bias, or that saw fewer than
/// [`MIN_ROWS_PER_UNKNOWN`]` · (r + 1)` rows, keeps its own fit (nothing is returned for it).
/// A lone approximated layer (its input unchanged) is refit all the same: it reproduces its
/// original fit up to the ridge and the sampling of positions.
pub fn refit(
    evaluator: &mut dyn Evaluator,
    egraph: &EGraph<Cnn, CnnAnalysis>,
    lossless: &Lossless,
    chosen: &[&Proposal],
    data: RefitData,
) -> Result<Vec<NewWeight>, EvalError> {
    let fail = |m: String| EvalError::Failed(format!("refit: {m}"));
    let student = apply(egraph, lossless, chosen).map_err(|e| fail(e.to_string()))?;
    // Per chosen proposal: the teacher's layer input and the student's last-factor input.
    let mut jobs = Vec::new();
    for p in chosen {
        let (Some(last), Some(layer)) = (p.factors.last(), lossless.layers.get(p.layer)) else { continue };
        if last.bias.is_none() {
            continue;
        }
        let Some(node) = student.node_ids().find(|&n| student.node(n).name == last.name) else {
            return Err(fail(format!("the factor `{}` is not in the approximated graph", last.name)));
        };
        let Some(&z) = student.node_inputs(node).first() else { continue };
        let Some(w) = augmented_weight(egraph, layer) else { continue };
        jobs.push((*p, lossless.taps[p.layer], z, w));
    }
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let teacher_taps: Vec<ValueRef> = jobs.iter().map(|j| j.1).collect();
    let student_taps: Vec<ValueRef> = jobs.iter().map(|j| j.2).collect();
    let (both, taps) = combined(&lossless.graph, &student, &teacher_taps, &student_taps)
        .ok_or_else(|| fail("the teacher and student graphs do not combine".into()))?;
    let n_jobs = jobs.len();
    let mut cross: Vec<Mat<f64>> = jobs.iter().map(|(p, _, _, w)| Mat::zeros(w.ncols(), rank_of(p) + 1)).collect();
    let mut gram: Vec<Mat<f64>> = jobs.iter().map(|(p, ..)| Mat::zeros(rank_of(p) + 1, rank_of(p) + 1)).collect();
    let mut rows_seen = vec![0usize; n_jobs];
    let mut bad: Option<String> = None;
    evaluator.run(&both, Split::Fit, &taps, &mut |b| {
        for (k, (p, ..)) in jobs.iter().enumerate() {
            let layer = &lossless.layers[p.layer];
            let (x, z) = (&b.taps[k], &b.taps[n_jobs + k]);
            let r = rank_of(p);
            let Some((rows, at)) = sample_patches(layer, x, data.max_pixels, b.first as u64) else {
                bad = Some(format!("layer `{}`: its input is not f32", layer.name));
                return Ok(Flow::Stop);
            };
            let Some(zs) = z.as_f32() else {
                bad = Some(format!("layer `{}`: the factor input is not f32", layer.name));
                return Ok(Flow::Stop);
            };
            let d = layer.patch_len();
            let n = at.len();
            let x_mat = Mat::from_fn(n, d + 1, |i, j| if j < d { f64::from(rows[i * d + j]) } else { 1.0 });
            let z_mat = match &layer.kind {
                LayerKind::Conv(_) => {
                    let pixels: usize = layer.out_type.shape[2..].iter().product();
                    if zs.len() % (r * pixels).max(1) != 0 {
                        bad = Some(format!("layer `{}`: factor input of {} values", layer.name, zs.len()));
                        return Ok(Flow::Stop);
                    }
                    Mat::from_fn(n, r + 1, |i, j| {
                        let (img, pix) = at[i];
                        if j < r { f64::from(zs[(img * r + j) * pixels + pix]) } else { 1.0 }
                    })
                }
                LayerKind::Dense { .. } => {
                    if zs.len() != n * r {
                        bad = Some(format!("layer `{}`: factor input of {} values", layer.name, zs.len()));
                        return Ok(Flow::Stop);
                    }
                    Mat::from_fn(n, r + 1, |i, j| if j < r { f64::from(zs[i * r + j]) } else { 1.0 })
                }
            };
            rows_seen[k] += n;
            cross[k] += x_mat.transpose() * &z_mat;
            gram[k] += z_mat.transpose() * &z_mat;
        }
        let seen = b.first + b.labels.len();
        Ok(if seen >= data.max_samples { Flow::Stop } else { Flow::Continue })
    })?;
    if let Some(m) = bad {
        return Err(fail(m));
    }
    let mut out = Vec::new();
    for (k, (p, _, _, w)) in jobs.iter().enumerate() {
        let (Some(last), r) = (p.factors.last(), rank_of(p)) else { continue };
        let Some(bias) = last.bias else { continue };
        if rows_seen[k] < MIN_ROWS_PER_UNKNOWN * (r + 1) {
            // Too few rows for r + 1 unknowns per output (a dense layer sees one row per
            // sample): the solve would fit noise; the proposal keeps its own fit.
            continue;
        }
        let target = w * &cross[k];
        let vc = ridge_solve_right(target.as_ref(), gram[k].as_ref());
        let m = vc.nrows();
        let v = Mat::from_fn(m, r, |i, j| vc[(i, j)]);
        let c = Mat::from_fn(1, m, |_, j| vc[(j, r)]);
        let Some(old) = egraph.analysis.weights.get(last.weight.0 as usize) else { continue };
        out.push(NewWeight { weight: last.weight, tensor: tensor_of(v.as_ref(), old.shape().to_vec()) });
        out.push(NewWeight { weight: bias, tensor: tensor_of(c.as_ref(), vec![m]) });
    }
    Ok(out)
}

/// Channels into a proposal's last factor.
fn rank_of(p: &Proposal) -> usize {
    p.ranks.last().copied().unwrap_or(0)
}

/// The teacher graph with a copy of the student's nodes sharing its inputs; returns it and the
/// taps (`teacher_taps` as they are, then `student_taps` mapped into the copy). Nodes no
/// output or tap needs are dropped.
fn combined(
    teacher: &VerifiedGraph,
    student: &VerifiedGraph,
    teacher_taps: &[ValueRef],
    student_taps: &[ValueRef],
) -> Option<(VerifiedGraph, Vec<ValueRef>)> {
    let mut g: Graph = (**teacher).clone();
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    for n in student.topo_order().ok()? {
        let node = student.node(n);
        let to = match &node.op {
            Op::Input { index } => *teacher.inputs().get(*index)?,
            Op::Weight(_) => {
                let t = student.weight_of(&ValueRef::new(n, 0))?.clone();
                g.add_weight(format!("student/{}", node.name), t).node
            }
            op => {
                let inputs: Vec<ValueRef> = student
                    .node_inputs(n)
                    .iter()
                    .map(|v| map.get(&v.node).map(|&m| ValueRef::new(m, v.slot)))
                    .collect::<Option<_>>()?;
                g.add_node_typed(format!("student/{}", node.name), op.clone(), &inputs, node.outputs.clone())
            }
        };
        map.insert(n, to);
    }
    let mut taps = teacher_taps.to_vec();
    for v in student_taps {
        taps.push(ValueRef::new(*map.get(&v.node)?, v.slot));
    }
    let n_out = g.outputs().len();
    for (i, t) in taps.iter().enumerate() {
        g.add_output(format!("__refit{i}"), *t);
    }
    g.remove_dead_nodes();
    g.outputs_mut().truncate(n_out);
    Some((cnnc_ir::verify(g).ok()?, taps))
}
