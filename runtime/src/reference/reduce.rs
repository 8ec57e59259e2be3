//! Softmax, the reductions (ReduceMean, ReduceSum, …, ArgMax, ArgMin) and BatchNormalization:
//! ops that reduce over axes, in f64.

use cnnc_ir::{ReduceKind, Tensor};

use super::{StridedOffsets, contiguous_strides, f32s, make};

/// ONNX `Softmax` over `axis` (opset ≥ 13) or, with `flatten`, over all axes from `axis` on
/// (opsets < 13). Numerically stable: `exp(x − max) / Σ exp(x − max)` in f64.
pub(super) fn softmax(axis: usize, flatten: bool, x: &Tensor) -> Result<Tensor, String> {
    let xs = x.shape();
    if axis >= xs.len() {
        return Err(format!("axis {axis} is out of range for rank {}", xs.len()));
    }
    let outer: usize = xs[..axis].iter().product();
    let (len, inner) = if flatten {
        (xs[axis..].iter().product::<usize>(), 1)
    } else {
        (xs[axis], xs[axis + 1..].iter().product::<usize>())
    };
    let xv = f32s(x, "x")?;
    let mut y = vec![0f32; xv.len()];
    let mut exps = vec![0f64; len];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let max = (0..len).map(|j| f64::from(xv[at(j)])).fold(f64::NEG_INFINITY, f64::max);
            for (j, e) in exps.iter_mut().enumerate() {
                *e = (f64::from(xv[at(j)]) - max).exp();
            }
            let sum: f64 = exps.iter().sum();
            for (j, &e) in exps.iter().enumerate() {
                y[at(j)] = (e / sum) as f32;
            }
        }
    }
    make(xs.to_vec(), y)
}

/// ONNX `Reduce*` over `axes` (empty: every element is its own group). f32 accumulates in f64
/// and rounds once; i64 is exact (wrapping on overflow like onnxruntime), with the mean
/// dividing the exact sum by the count with truncation, as onnxruntime's integer kernel does.
/// An empty group gives the kind's identity, and 0 for the mean, as onnxruntime does.
pub(super) fn reduce(kind: ReduceKind, axes: &[usize], keepdims: bool, x: &Tensor) -> Result<Tensor, String> {
    let xs = x.shape();
    let rank = xs.len();
    let mut reduced = vec![false; rank];
    for &a in axes {
        if a >= rank || std::mem::replace(&mut reduced[a], true) {
            return Err(format!("reduce axes {axes:?} are out of range or repeated for rank {rank}"));
        }
    }
    let kept: Vec<usize> = (0..rank).map(|i| if reduced[i] { 1 } else { xs[i] }).collect();
    let out_shape: Vec<usize> =
        if keepdims { kept.clone() } else { (0..rank).filter(|&i| !reduced[i]).map(|i| xs[i]).collect() };
    // For every input element, in row-major order, the offset of the output it goes to.
    let kept_strides = contiguous_strides(&kept);
    let strides: Vec<isize> = (0..rank).map(|i| if reduced[i] { 0 } else { kept_strides[i] as isize }).collect();
    let n_out: usize = kept.iter().product();
    let n_in: usize = xs.iter().product();
    let per_out = n_in.checked_div(n_out).unwrap_or(0);
    let targets = || StridedOffsets::new(xs, &strides, 0);
    if let Some(v) = x.as_i64() {
        return make(out_shape, reduce_i64(kind, targets(), v, n_out, per_out)?);
    }
    let v = f32s(x, "x")?;
    let y = match kind {
        ReduceKind::Max | ReduceKind::Min => {
            let max = kind == ReduceKind::Max;
            let mut acc = vec![if max { f32::NEG_INFINITY } else { f32::INFINITY }; n_out];
            for (t, &a) in targets().zip(v) {
                // NaN propagates, as onnxruntime's Eigen-based kernels do.
                if a.is_nan() || (max && a > acc[t]) || (!max && a < acc[t]) {
                    acc[t] = a;
                }
            }
            return make(out_shape, acc);
        }
        ReduceKind::LogSumExp => {
            let mut max = vec![f64::NEG_INFINITY; n_out];
            for (t, &a) in targets().zip(v) {
                max[t] = max[t].max(f64::from(a));
            }
            let mut sums = vec![0f64; n_out];
            for (t, &a) in targets().zip(v) {
                sums[t] += (f64::from(a) - max[t]).exp();
            }
            // An infinite maximum is the result itself (and keeps ∞ − ∞ out of the sum).
            sums.iter().zip(&max).map(|(&s, &m)| if m.is_infinite() { m } else { m + s.ln() }).collect::<Vec<_>>()
        }
        ReduceKind::Prod => {
            let mut acc = vec![1f64; n_out];
            for (t, &a) in targets().zip(v) {
                acc[t] *= f64::from(a);
            }
            acc
        }
        _ => {
            let term = |a: f64| match kind {
                ReduceKind::L1 => a.abs(),
                ReduceKind::L2 | ReduceKind::SumSquare => a * a,
                _ => a,
            };
            let mut sums = vec![0f64; n_out];
            for (t, &a) in targets().zip(v) {
                sums[t] += term(f64::from(a));
            }
            let finish = |s: f64| match kind {
                ReduceKind::Mean if per_out == 0 => 0.0,
                ReduceKind::Mean => s / per_out as f64,
                ReduceKind::L2 => s.sqrt(),
                ReduceKind::LogSum => s.ln(),
                _ => s,
            };
            sums.into_iter().map(finish).collect()
        }
    };
    make(out_shape, y.into_iter().map(|s| s as f32).collect())
}

fn reduce_i64(
    kind: ReduceKind,
    targets: StridedOffsets,
    v: &[i64],
    n_out: usize,
    per_out: usize,
) -> Result<Vec<i64>, String> {
    let (init, step): (i64, fn(i64, i64) -> i64) = match kind {
        ReduceKind::Sum | ReduceKind::Mean => (0, i64::wrapping_add),
        ReduceKind::Max => (i64::MIN, i64::max),
        ReduceKind::Min => (i64::MAX, i64::min),
        ReduceKind::Prod => (1, i64::wrapping_mul),
        ReduceKind::L1 => (0, |acc, a| acc.wrapping_add(a.wrapping_abs())),
        ReduceKind::SumSquare => (0, |acc, a| acc.wrapping_add(a.wrapping_mul(a))),
        ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp => {
            return Err(format!("{} does not take i64 input", kind.name()));
        }
    };
    let mut acc = vec![init; n_out];
    for (t, &a) in targets.zip(v) {
        acc[t] = step(acc[t], a);
    }
    if kind == ReduceKind::Mean {
        let n = i64::try_from(per_out).map_err(|_| "too many elements to average".to_string())?;
        for s in &mut acc {
            *s = s.checked_div(n).unwrap_or(0);
        }
    }
    Ok(acc)
}

/// ONNX `ArgMax` / `ArgMin` along `axis`: the first index of the extremum, or the last with
/// `select_last_index`.
pub(super) fn arg_reduce(
    max: bool,
    axis: usize,
    keepdims: bool,
    select_last_index: bool,
    x: &Tensor,
) -> Result<Tensor, String> {
    let xs = x.shape();
    let Some(&len) = xs.get(axis) else {
        return Err(format!("axis {axis} is out of range for rank {}", xs.len()));
    };
    if len == 0 {
        return Err(format!("axis {axis} is empty"));
    }
    let outer: usize = xs[..axis].iter().product();
    let inner: usize = xs[axis + 1..].iter().product();
    fn beats<T: PartialOrd>(max: bool, last: bool, a: T, b: T) -> bool {
        (if max { a > b } else { a < b }) || (last && a == b)
    }
    let y = match (x.as_f32(), x.as_i64()) {
        (Some(v), _) => extremum_indices(outer, len, inner, |i, j| beats(max, select_last_index, v[i], v[j])),
        (_, Some(v)) => extremum_indices(outer, len, inner, |i, j| beats(max, select_last_index, v[i], v[j])),
        _ => return Err(format!("`x` must be f32 or i64, got {}", x.dtype())),
    };
    let mut shape = xs.to_vec();
    if keepdims {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    make(shape, y)
}

/// For each `(outer, inner)` position, the index along the middle axis that no later index
/// `better`s (`better(candidate, best)` on flat offsets).
fn extremum_indices(outer: usize, len: usize, inner: usize, better: impl Fn(usize, usize) -> bool) -> Vec<i64> {
    let mut y = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let best = (1..len).fold(0, |best, j| if better(at(j), at(best)) { j } else { best });
            y.push(best as i64);
        }
    }
    y
}

/// ONNX `BatchNormalization` (inference): `(x − mean) / √(var + ε) · scale + bias` over axis 1,
/// in f64.
pub(super) fn batch_norm(epsilon: f32, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let x = inputs[0];
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(format!("x has rank {}, expected at least 2", xs.len()));
    }
    let channels = xs[1];
    let mut params = Vec::with_capacity(4);
    for (t, name) in inputs[1..].iter().zip(["scale", "bias", "mean", "var"]) {
        if t.shape() != [channels] {
            return Err(format!("{name} has shape {:?}, expected [{channels}]", t.shape()));
        }
        params.push(f32s(t, name)?);
    }
    let [scale, bias, mean, var] = params[..] else {
        return Err(format!("batchnorm takes 5 inputs, got {}", inputs.len()));
    };
    let plane: usize = xs[2..].iter().product();
    let xv = f32s(x, "x")?;
    let eps = f64::from(epsilon);
    let mut y = Vec::with_capacity(xv.len());
    for (p, chunk) in xv.chunks(plane.max(1)).enumerate() {
        let c = p % channels.max(1);
        let std = (f64::from(var[c]) + eps).sqrt();
        let (m, s, b) = (f64::from(mean[c]), f64::from(scale[c]), f64::from(bias[c]));
        y.extend(chunk.iter().map(|&v| ((f64::from(v) - m) / std * s + b) as f32));
    }
    make(xs.to_vec(), y)
}
