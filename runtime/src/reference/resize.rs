//! Resize (and opset-9 Upsample), nearest and N-linear.

use cnnc_ir::{CoordTransform, NearestMode, ResizeAttrs, ResizeMode, Tensor};

use super::{f32s, make};

/// Input coordinate of output coordinate `x_out` on an axis resized from `len_in` to `len_out`
/// with transform scale `scale` (ONNX `coordinate_transformation_mode`). Computed in f32 like
/// onnxruntime, so that nearest-mode ties round the same way.
fn source_coord(coord: CoordTransform, x_out: usize, scale: f32, len_in: usize, len_out: usize) -> f32 {
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

/// Per output coordinate of one axis: the two neighbours and the weight of the second.
/// Coordinates are clamped to `[0, in − 1]` first, as onnxruntime does.
type LinearTaps = Vec<(usize, usize, f64)>;

/// ONNX `Resize` with modes nearest and linear. Axes whose length and scale are unchanged are
/// identities under every transform and are left alone; the others are resized one at a time
/// (N-linear interpolation is separable), in f64 for linear so only the final result rounds.
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
    let xv = f32s(x, "x")?;
    let mut shape = in_shape.to_vec();
    let mut data: Vec<f64> = xv.iter().map(|&v| f64::from(v)).collect();
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
        let taps: LinearTaps = (0..len_out)
            .map(|o| {
                let src = source_coord(a.coord, o, scale, len_in, len_out);
                match a.mode {
                    ResizeMode::Nearest => {
                        let i = clamp_coord(round_nearest(a.nearest, src), len_in) as usize;
                        (i, i, 0.0)
                    }
                    ResizeMode::Linear => {
                        let c = clamp_coord(src, len_in);
                        let i0 = c.floor() as usize;
                        let i1 = (i0 + 1).min(len_in - 1);
                        (i0, i1, f64::from(c) - i0 as f64)
                    }
                }
            })
            .collect();
        data = resize_axis(&data, &shape, axis, &taps);
        shape[axis] = len_out;
    }
    make(shape, data.into_iter().map(|v| v as f32).collect())
}

/// `out[o, j, i] = (1 − t_j)·x[o, i0_j, i] + t_j·x[o, i1_j, i]` along `axis`.
fn resize_axis(x: &[f64], shape: &[usize], axis: usize, taps: &LinearTaps) -> Vec<f64> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let len_in = shape[axis];
    let mut out = Vec::with_capacity(outer * taps.len() * inner);
    for o in 0..outer {
        let block = &x[o * len_in * inner..][..len_in * inner];
        for &(i0, i1, t) in taps {
            let (r0, r1) = (&block[i0 * inner..][..inner], &block[i1 * inner..][..inner]);
            if t == 0.0 {
                out.extend_from_slice(r0);
            } else {
                out.extend(r0.iter().zip(r1).map(|(&v0, &v1)| (1.0 - t) * v0 + t * v1));
            }
        }
    }
    out
}
