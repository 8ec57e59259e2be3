//! `Resize` (opset 10 on) and `Upsample` (opsets 1–9).

use cnnc_ir::{CoordTransform, NearestMode, Op, ResizeAttrs, ResizeMode, ValueRef};

use super::context::{LowerCx, Lowered, OnnxNode};
use super::error::ImportError;

pub(super) fn lower_resize(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let mode = resize_mode(node)?;
    if node.opset < 11 {
        let scales =
            cx.const_floats(node, 1, "scales")?.ok_or_else(|| node.bad_input("input 1 (scales) is required"))?;
        return lower_legacy(cx, node, x, mode, scales);
    }
    let in_shape = cx.shape(x);
    let rank = in_shape.len();
    let axes = match node.ints("axes")? {
        Some(a) => node.axes("axes", a, rank)?,
        None => (0..rank).collect(),
    };
    let coord = match node.string_or("coordinate_transformation_mode", "half_pixel")?.as_str() {
        "half_pixel" => CoordTransform::HalfPixel,
        "half_pixel_symmetric" => CoordTransform::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordTransform::PytorchHalfPixel,
        "align_corners" => CoordTransform::AlignCorners,
        "asymmetric" => CoordTransform::Asymmetric,
        "tf_crop_and_resize" => CoordTransform::TfCropAndResize {
            roi: crop_box(cx, node, &axes, rank)?,
            extrapolation: node.float_or("extrapolation_value", 0.0)?,
        },
        // Resize-11 only, but onnxruntime accepts it at every opset, and so does cnnc.
        "tf_half_pixel_for_nn" => CoordTransform::TfHalfPixelForNn,
        m => return Err(node.bad_attr("coordinate_transformation_mode", format!("unknown value `{m}`"))),
    };
    let nearest = match node.string_or("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        m => return Err(node.bad_attr("nearest_mode", format!("unknown value `{m}`"))),
    };
    if node.flag("antialias", false)? {
        return Err(node.bad_attr("antialias", "antialiased resizing is not supported"));
    }
    // Resize-18: with `sizes`, `not_larger` / `not_smaller` resize every listed axis by one scale,
    // the smallest / largest of `sizes[i] / input[i]`, to `round_half_up(scale · input[i])`.
    let keep_aspect = match node.string_or("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => None,
        "not_larger" => Some(false),
        "not_smaller" => Some(true),
        m => return Err(node.bad_attr("keep_aspect_ratio_policy", format!("unknown value `{m}`"))),
    };
    let scales = cx.const_floats(node, 2, "scales")?.filter(|s| !s.is_empty());
    let sizes = cx.const_ints(node, 3, "sizes")?.filter(|s| !s.is_empty());
    let (scales, out_shape) = match (scales, sizes) {
        (Some(s), None) => {
            if s.len() != axes.len() {
                return Err(node.bad_input(format!("scales {s:?} need one value for each of {} axes", axes.len())));
            }
            let mut full = vec![1.0; rank];
            for (&a, &v) in axes.iter().zip(&s) {
                full[a] = v;
            }
            let out = shape_from_scales(node, &in_shape, &full)?;
            (full, out)
        }
        (None, Some(sz)) => {
            if sz.len() != axes.len() {
                return Err(node.bad_input(format!("sizes {sz:?} need one value for each of {} axes", axes.len())));
            }
            let mut out = in_shape.clone();
            for (&a, &v) in axes.iter().zip(&sz) {
                // An empty axis stays empty; any other gets a positive size.
                out[a] = usize::try_from(v)
                    .ok()
                    .filter(|&v| v > 0 || in_shape[a] == 0)
                    .ok_or_else(|| node.bad_input(format!("sizes must be positive, got {sz:?}")))?;
            }
            let mut full: Vec<f32> =
                in_shape.iter().zip(&out).map(|(&i, &o)| if i == 0 { 1.0 } else { o as f32 / i as f32 }).collect();
            let ratios = axes.iter().filter(|&&a| in_shape[a] > 0).map(|&a| out[a] as f64 / in_shape[a] as f64);
            let common = match keep_aspect {
                Some(true) => ratios.reduce(f64::max),
                Some(false) => ratios.reduce(f64::min),
                None => None,
            };
            if let Some(scale) = common {
                for &a in axes.iter().filter(|&&a| in_shape[a] > 0) {
                    out[a] = (scale * in_shape[a] as f64 + 0.5) as usize;
                    full[a] = scale as f32;
                }
            }
            (full, out)
        }
        _ => return Err(node.bad_input("exactly one of the inputs scales and sizes must be given")),
    };
    Ok(vec![cx.add1(node, Op::Resize(ResizeAttrs { mode, coord, nearest, scales, out_shape }), &[x])?])
}

/// The constant `roi` input, `[start…, end…]` over `axes`, widened to every axis (the others
/// span their whole extent, `[0, 1]`).
fn crop_box(cx: &LowerCx, node: &OnnxNode, axes: &[usize], rank: usize) -> Result<Vec<f32>, ImportError> {
    let roi = cx.const_floats(node, 1, "roi")?.unwrap_or_default();
    if roi.len() != 2 * axes.len() {
        return Err(node.bad_input(format!(
            "tf_crop_and_resize needs roi with a start and an end for each of {} axes, got {roi:?}",
            axes.len()
        )));
    }
    let mut full = vec![0.0; rank];
    full.resize(2 * rank, 1.0);
    for (i, &a) in axes.iter().enumerate() {
        full[a] = roi[i];
        full[rank + a] = roi[axes.len() + i];
    }
    Ok(full)
}

/// `Upsample`: scales are `height_scale` and `width_scale` of an NCHW input in opset 1, an
/// attribute from 7 and a constant input from 9 on (Resize replaces it from opset 10).
pub(super) fn lower_upsample(cx: &mut LowerCx, node: &OnnxNode) -> Result<Lowered, ImportError> {
    let x = cx.input(node, 0)?;
    let mode = resize_mode(node)?;
    let scales = if node.opset < 7 {
        let scale = |a: &str| node.float(a)?.ok_or_else(|| node.bad_attr(a, "is required"));
        let (h, w) = (scale("height_scale")?, scale("width_scale")?);
        if cx.ty(x).rank() != 4 {
            return Err(node.shape_err(format!("Upsample-1 needs an NCHW input, got shape {:?}", cx.shape(x))));
        }
        vec![1.0, 1.0, h, w]
    } else if node.opset < 9 {
        node.floats("scales")?.ok_or_else(|| node.bad_attr("scales", "is required"))?.to_vec()
    } else {
        cx.const_floats(node, 1, "scales")?.ok_or_else(|| node.bad_input("input 1 (scales) is required"))?
    };
    lower_legacy(cx, node, x, mode, scales)
}

fn resize_mode(node: &OnnxNode) -> Result<ResizeMode, ImportError> {
    match node.string_or("mode", "nearest")?.as_str() {
        "nearest" => Ok(ResizeMode::Nearest),
        "linear" | "bilinear" => Ok(ResizeMode::Linear),
        "cubic" => Ok(ResizeMode::Cubic {
            a: node.float_or("cubic_coeff_a", -0.75)?,
            exclude_outside: node.flag("exclude_outside", false)?,
        }),
        m => Err(node.bad_attr("mode", format!("unknown value `{m}`"))),
    }
}

/// `Upsample` and opset-10 `Resize`: asymmetric coordinates; nearest rounds down when
/// upsampling and up when downsampling, as onnxruntime does.
fn lower_legacy(
    cx: &mut LowerCx,
    node: &OnnxNode,
    x: ValueRef,
    mode: ResizeMode,
    scales: Vec<f32>,
) -> Result<Lowered, ImportError> {
    if let ResizeMode::Cubic { .. } = mode {
        return Err(node.bad_attr("mode", "`cubic` interpolation needs Resize from opset 11"));
    }
    let in_shape = cx.shape(x);
    if scales.len() != in_shape.len() {
        return Err(
            node.bad_input(format!("scales {scales:?} need one value per axis of the rank-{} input", in_shape.len()))
        );
    }
    let up = scales.iter().all(|&s| s >= 1.0);
    let down = scales.iter().all(|&s| s <= 1.0);
    let nearest = match (mode, up, down) {
        (ResizeMode::Linear, _, _) | (_, true, _) => NearestMode::Floor,
        (_, false, true) => NearestMode::Ceil,
        _ => {
            return Err(node.bad_input(format!(
                "nearest resizing that enlarges some axes and shrinks others ({scales:?}) is not supported before opset 11"
            )));
        }
    };
    let out_shape = shape_from_scales(node, &in_shape, &scales)?;
    let attrs = ResizeAttrs { mode, coord: CoordTransform::Asymmetric, nearest, scales, out_shape };
    Ok(vec![cx.add1(node, Op::Resize(attrs), &[x])?])
}

/// `floor(in · scale)` per axis, computed in f32 as onnxruntime does (an empty axis stays empty).
fn shape_from_scales(node: &OnnxNode, in_shape: &[usize], scales: &[f32]) -> Result<Vec<usize>, ImportError> {
    in_shape
        .iter()
        .zip(scales)
        .map(|(&d, &s)| {
            let out = (d as f32 * s).floor();
            let lowest = if d == 0 { 0.0 } else { 1.0 };
            if !(s.is_finite() && s > 0.0 && (lowest..=(1u64 << 31) as f32).contains(&out)) {
                return Err(node.bad_input(format!(
                    "scales {scales:?} must be positive and give output sizes from 1 to 2^31 for input {in_shape:?}"
                )));
            }
            Ok(out as usize)
        })
        .collect()
}
