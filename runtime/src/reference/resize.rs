//! Resize (and opset-9 Upsample): nearest, N-linear and cubic, under every coordinate transform.

use cnnc_ir::{CoordTransform, NearestMode, ResizeAttrs, ResizeMode, Tensor};

use super::{f32s, make};

/// Input coordinate of output coordinate `x_out` on `axis`, resized from `len_in` to `len_out`
/// with transform scale `scale` (ONNX `coordinate_transformation_mode`). Computed in f32 like
/// onnxruntime, so that nearest-mode ties round the same way.
pub(crate) fn source_coord(
    coord: &CoordTransform,
    axis: usize,
    x_out: usize,
    scale: f32,
    len_in: usize,
    len_out: usize,
) -> f32 {
    let x = x_out as f32;
    match coord {
        CoordTransform::HalfPixel => (x + 0.5) / scale - 0.5,
        CoordTransform::HalfPixelSymmetric => {
            let adjustment = len_out as f32 / (scale * len_in as f32);
            let center = len_in as f32 / 2.0;
            let offset = center * (1.0 - adjustment);
            offset + (x + 0.5) / scale - 0.5
        }
        CoordTransform::PytorchHalfPixel => {
            if len_out > 1 {
                (x + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        CoordTransform::AlignCorners => {
            if len_out == 1 {
                0.0
            } else {
                x * (len_in - 1) as f32 / (len_out - 1) as f32
            }
        }
        CoordTransform::Asymmetric => x / scale,
        CoordTransform::TfHalfPixelForNn => (x + 0.5) / scale,
        CoordTransform::TfCropAndResize { roi, .. } => {
            let (start, end) = (roi[axis], roi[roi.len() / 2 + axis]);
            let (len_in, len_out) = (len_in as f32, len_out as f32);
            if len_out > 1.0 {
                start * (len_in - 1.0) + x * (end - start) * (len_in - 1.0) / (len_out - 1.0)
            } else {
                // onnxruntime evaluates this branch in f64 (a double literal) and rounds to f32.
                (0.5 * f64::from(start + end) * f64::from(len_in - 1.0)) as f32
            }
        }
    }
}

/// Rounds a source coordinate per ONNX `nearest_mode`.
fn round_nearest(mode: NearestMode, x: f32) -> f32 {
    let tie = x == x.floor() + 0.5;
    match mode {
        NearestMode::RoundPreferFloor if tie => x.floor(),
        NearestMode::RoundPreferCeil if tie => x.ceil(),
        NearestMode::RoundPreferFloor | NearestMode::RoundPreferCeil => x.round(),
        NearestMode::Floor => x.floor(),
        NearestMode::Ceil => x.ceil(),
    }
}

/// Clamps a coordinate to `[0, len − 1]` (NaN goes to 0).
fn clamp_coord(x: f32, len_in: usize) -> f32 {
    let hi = (len_in - 1) as f32;
    if x > 0.0 { x.min(hi) } else { 0.0 }
}

/// The input samples one output coordinate of one axis reads: `(index, weight)` pairs.
pub(crate) type Taps = Vec<(usize, f64)>;

/// Samples of source coordinate `src` on an axis of length `len_in` (≥ 1).
pub(crate) fn taps(mode: ResizeMode, nearest: NearestMode, src: f32, len_in: usize) -> Taps {
    match mode {
        ResizeMode::Nearest => vec![(clamp_coord(round_nearest(nearest, src), len_in) as usize, 1.0)],
        ResizeMode::Linear => {
            // Clamped to `[0, in − 1]` first, as onnxruntime does.
            let c = clamp_coord(src, len_in);
            let i0 = c.floor() as usize;
            let t = f64::from(c) - i0 as f64;
            if t == 0.0 { vec![(i0, 1.0)] } else { vec![(i0, 1.0 - t), ((i0 + 1).min(len_in - 1), t)] }
        }
        ResizeMode::Cubic { a, exclude_outside } => cubic_taps(a, exclude_outside, src, len_in),
    }
}

/// Keys cubic convolution weights of the samples at offsets −1, 0, 1, 2 from `⌊x⌋`, for a
/// fractional part `s`. Evaluated in f32 exactly as onnxruntime does.
fn cubic_coeffs(s: f32, a: f32) -> [f32; 4] {
    let s = s.abs();
    let far = |d: f32| ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
    let near = |d: f32| ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
    [far(s + 1.0), near(s), near(1.0 - s), far(2.0 - s)]
}

/// The four samples around `src`: indices clamped to the input (its edge repeats), or, with
/// `exclude_outside`, weight 0 outside it and the other weights renormalized to sum to 1.
fn cubic_taps(a: f32, exclude_outside: bool, src: f32, len_in: usize) -> Taps {
    let floor = src.floor();
    let coeffs = cubic_coeffs(src - floor, a);
    let len = len_in as i64;
    let first = (floor as i64).saturating_sub(1);
    let index = |k: usize| first.saturating_add(k as i64);
    let weight = |k: usize| if exclude_outside && !(0..len).contains(&index(k)) { 0.0 } else { coeffs[k] };
    let sum: f32 = if exclude_outside { (0..4).map(weight).sum() } else { 1.0 };
    (0..4).map(|k| (index(k).clamp(0, len - 1) as usize, f64::from(weight(k)) / f64::from(sum))).collect()
}

/// ONNX `Resize`. A resize to the input's own shape is a copy and axes whose length and scale
/// are unchanged are left alone, as in onnxruntime (even under tf-crop-and-resize, whose box is
/// then ignored); the others are resized one at a time (every mode is separable), summing the
/// weighted samples in f64 so only the final result rounds.
pub(super) fn resize(a: &ResizeAttrs, x: &Tensor) -> Result<Tensor, String> {
    let in_shape = x.shape();
    let rank = in_shape.len();
    if a.out_shape.len() != rank || a.scales.len() != rank {
        return Err(format!(
            "x has rank {rank}, but out_shape has {} axes and scales {}",
            a.out_shape.len(),
            a.scales.len()
        ));
    }
    let extrapolation = match &a.coord {
        CoordTransform::TfCropAndResize { roi, .. } if roi.len() != 2 * rank => {
            return Err(format!("roi has {} entries, expected {} for rank {rank}", roi.len(), 2 * rank));
        }
        CoordTransform::TfCropAndResize { extrapolation, .. } => Some(*extrapolation),
        _ => None,
    };
    let xv = f32s(x, "x")?;
    if a.out_shape == in_shape {
        return make(in_shape.to_vec(), xv.to_vec());
    }
    let mut shape = in_shape.to_vec();
    let mut data: Vec<f64> = xv.iter().map(|&v| f64::from(v)).collect();
    // Per resized axis, the output coordinates that lie outside the crop box.
    let mut outside: Vec<(usize, Vec<bool>)> = Vec::new();
    for axis in 0..rank {
        let (len_in, len_out, scale) = (in_shape[axis], a.out_shape[axis], a.scales[axis]);
        if len_in == len_out && scale == 1.0 {
            continue;
        }
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(format!("axis {axis}: scale {scale} is not a positive number"));
        }
        if len_in == 0 && len_out > 0 {
            return Err(format!("axis {axis}: cannot resize an empty axis to {len_out}"));
        }
        let mut flags = vec![false; len_out];
        let mut axis_taps = Vec::with_capacity(len_out);
        for (o, flag) in flags.iter_mut().enumerate() {
            let src = source_coord(&a.coord, axis, o, scale, len_in, len_out);
            if extrapolation.is_some() && (src < 0.0 || src > (len_in - 1) as f32) {
                *flag = true;
                axis_taps.push(Vec::new());
            } else {
                axis_taps.push(taps(a.mode, a.nearest, src, len_in));
            }
        }
        data = resize_axis(&data, &shape, axis, &axis_taps);
        shape[axis] = len_out;
        if flags.contains(&true) {
            outside.push((axis, flags));
        }
    }
    let mut y: Vec<f32> = data.into_iter().map(|v| v as f32).collect();
    if let Some(value) = extrapolation {
        for (axis, flags) in &outside {
            fill_along(&mut y, &shape, *axis, flags, value);
        }
    }
    make(shape, y)
}

/// `out[o, j, i] = Σ w·x[o, k, i]` over the taps `(k, w)` of output index `j` along `axis`.
fn resize_axis(x: &[f64], shape: &[usize], axis: usize, taps: &[Taps]) -> Vec<f64> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let len_in = shape[axis];
    let mut out = Vec::with_capacity(outer * taps.len() * inner);
    for o in 0..outer {
        let block = &x[o * len_in * inner..][..len_in * inner];
        for t in taps {
            match t[..] {
                [(k, 1.0)] => out.extend_from_slice(&block[k * inner..][..inner]),
                _ => out.extend((0..inner).map(|i| t.iter().map(|&(k, w)| w * block[k * inner + i]).sum::<f64>())),
            }
        }
    }
    out
}

/// Sets `y[o, j, i] = value` for every `j` flagged along `axis`.
fn fill_along(y: &mut [f32], shape: &[usize], axis: usize, flags: &[bool], value: f32) {
    let inner: usize = shape[axis + 1..].iter().product();
    let len = shape[axis];
    for (j, block) in y.chunks_mut(inner.max(1)).enumerate() {
        if flags[j % len.max(1)] {
            block.fill(value);
        }
    }
}
