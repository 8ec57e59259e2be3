//! Softmax, ReduceMean and BatchNormalization: ops that reduce over axes, in f64.

use cnnc_ir::Tensor;

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

/// ONNX `ReduceMean` over `axes` (empty: identity). f32 means sum in f64; i64 means divide the
/// exact sum by the count with truncation, as onnxruntime's integer kernel does.
pub(super) fn reduce_mean(axes: &[usize], keepdims: bool, x: &Tensor) -> Result<Tensor, String> {
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
    // For every input element, in row-major order, the offset of the output it adds to.
    let kept_strides = contiguous_strides(&kept);
    let strides: Vec<isize> = (0..rank).map(|i| if reduced[i] { 0 } else { kept_strides[i] as isize }).collect();
    let n_out: usize = kept.iter().product();
    let n_in: usize = xs.iter().product();
    let per_out = n_in.checked_div(n_out).unwrap_or(0);
    let targets = StridedOffsets::new(xs, &strides, 0);
    if let Some(v) = x.as_i64() {
        if per_out == 0 {
            return Err("mean over an empty i64 axis".into());
        }
        let mut sums = vec![0i128; n_out];
        for (t, &a) in targets.zip(v) {
            sums[t] += i128::from(a);
        }
        let y = sums.into_iter().map(|s| (s / per_out as i128) as i64).collect();
        return make(out_shape, y);
    }
    let v = f32s(x, "x")?;
    let mut sums = vec![0f64; n_out];
    for (t, &a) in targets.zip(v) {
        sums[t] += f64::from(a);
    }
    make(out_shape, sums.into_iter().map(|s| (s / per_out as f64) as f32).collect())
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
